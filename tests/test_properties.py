"""Property tests: random sequences of mm operations, CPU accesses and thread interleavings,
every invariant checked after every step; and bad input leaves a consistent state.

Hypothesis draws seeds (derandomized, so a run is reproducible); each seed drives
:func:`pyrmap.scenario.random_program`.  A violation raises InvariantViolation, whose message
holds the seed, the step, the operation, the PTE history and the command that replays it
(``python -m pyrmap fuzz --seed N --steps K``).
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrmap.checkers import InvariantViolation
from pyrmap.mm_types import page_mapcount
from pyrmap.pte import PAGE_SIZE, AccessType, pte_pfn, pte_present
from pyrmap.scenario import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE,
                             System, random_program, reproduce_command, run_program)
from pyrmap.workload import WorkloadError

FAST = settings(derandomize=True, max_examples=12, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
ALL_OPS = ["mmap_anon", "mmap_file", "access", "munmap", "mprotect", "mremap", "fork", "exit",
           "madvise", "msync", "reclaim", "migrate", "remap_file_pages"]


def _run(seed, steps, **kw):
    """run_program; any failure names the seed and the command that replays it."""
    cmd = reproduce_command(seed, steps, nframes=kw.get("nframes", 64),
                            sequential=not kw.get("concurrency", True),
                            svade=not kw.get("svadu", True), ops=kw.get("ops"))
    try:
        return run_program(seed, steps, **kw)
    except InvariantViolation as exc:
        pytest.fail(f"seed {seed}:\n{exc}")
    except Exception as exc:
        raise AssertionError(f"seed {seed} ({cmd}): {type(exc).__name__}: {exc}") from exc


def _ran_every_checker(system):
    for name, checks, violations, verdict in system.checkers.verdicts():
        assert verdict == "PASS", name
    checks = {name: n for name, n, _, _ in system.checkers.verdicts()}
    assert checks["rmap"] > 0 and checks["tlb"] > 0 and checks["notifier"] > 0


@FAST
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_random_programs_with_threads(seed):
    system = _run(seed, 25, nframes=64)
    _ran_every_checker(system)


@FAST
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_random_programs_sequential(seed):
    system = _run(seed, 25, nframes=96, concurrency=False)
    _ran_every_checker(system)


@settings(derandomize=True, max_examples=8, deadline=None, database=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_random_programs_on_a_svade_mmu(seed):
    """Svade: the MMU faults when A is clear or a store finds D clear, and the engine's
    fault handler sets the bits (every aging and cleaning path then goes through faults)."""
    system = _run(seed, 25, nframes=64, svadu=False)
    _ran_every_checker(system)
    assert not system.arch.svadu


@settings(derandomize=True, max_examples=10, deadline=None, database=None)
@given(seed=st.integers(0, 2 ** 31 - 1),
       ops=st.sets(st.sampled_from(ALL_OPS), min_size=2, max_size=5))
def test_random_programs_on_operation_subsets(seed, ops):
    """Few kinds of operation at a time reach deeper states of each (e.g. fork + access +
    reclaim only)."""
    ops = set(ops) | {"mmap_anon", "access"}
    system = _run(seed, 20, nframes=48, ops=sorted(ops))
    _ran_every_checker(system)


def test_memory_pressure_exercises_reclaim_swap_writeback():
    """The random programs really reach what they are meant to test (not vacuous)."""
    total = {}
    for seed in range(4):
        system = _run(seed, 40, nframes=40)
        for key, val in system.kernel.stats.items():
            total[key] = total.get(key, 0) + val
        assert system.shadow.loads > 0 and system.shadow.stores > 0
    for key in ("rmap_try_to_unmap", "rmap_ptes_aged", "pages_written", "pswpout"):
        assert total.get(key, 0) > 0, key


def test_fork_tree_migration_keeps_every_pte_on_the_new_page():
    """kselftests mm/rmap.c: migrate a page shared by a fork tree; every process maps the new
    frame, the mapcount is restored, no migration entry is left, contents intact."""
    s = System(seed=5, nframes=96)
    root = s.new_process()
    a = s.mmap(root, 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    s.spawn_workload(0, root, [("store", a, 0x5A), ("store", a + PAGE_SIZE, 0x5B)])
    s.run()
    procs = [root]
    for _ in range(3):
        procs.append(s.fork(procs[len(procs) // 2]))
    from pyrmap.checkers import lookup_pte
    _, val, _ = lookup_pte(s.kernel.mem, root.pgd, a)
    old = s.kernel.pages[pte_pfn(val)]
    assert page_mapcount(old) == len(procs)
    assert s.migrate(old) == 0
    s.checkers.check_all()
    pfns = set()
    for mm in procs:
        _, val, _ = lookup_pte(s.kernel.mem, mm.pgd, a)
        assert pte_present(val), f"{mm!r} has no present pte after migration"
        pfns.add(pte_pfn(val))
    assert len(pfns) == 1 and old.pfn not in pfns
    assert page_mapcount(s.kernel.pages[pfns.pop()]) == len(procs)
    for core, mm in enumerate(procs[:2]):
        s.spawn_workload(core, mm, [("load", a, 0x5A), ("load", a + PAGE_SIZE, 0x5B)])
    s.run()


def test_shared_file_writes_reach_the_backing_store_through_reclaim():
    s = System(seed=9, nframes=40)
    f = s.create_file("f", 8)
    p = s.new_process()
    q = s.new_process()
    a = s.mmap(p, 0, 8 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, file=f)
    b = s.mmap(q, 0, 8 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, file=f)
    s.random_workload(0, p, 80, store_ratio=0.7)
    s.random_workload(1, q, 80, store_ratio=0.7)
    s.spawn("kswapd", s.reclaim, 8)
    s.run()
    s.msync(p, a, 8 * PAGE_SIZE)     # checks the backing store against the shadow
    s.msync(q, b, 8 * PAGE_SIZE)
    s.exit(p)
    s.exit(q)
    s.checkers.check_all()


# --- bad input: a clear error, and the checkers still pass afterwards ---------------------------

@pytest.fixture
def small():
    s = System(seed=2, nframes=64)
    p = s.new_process()
    a = s.mmap(p, 0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    s.spawn_workload(0, p, [("store", a + i * PAGE_SIZE) for i in range(4)])
    s.run()
    return s, p, a


def _vmas(mm):
    return [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.mmap]


def test_access_outside_any_vma_is_a_workload_bug(small):
    s, p, a = small
    before = _vmas(p)
    s.spawn_workload(0, p, [("load", a + 64 * PAGE_SIZE)])
    with pytest.raises(WorkloadError, match=r"workload bug: LOAD at 0x[0-9a-f]+ .* segmentation "
                                            r"fault .*no mapping covers this address"):
        s.run()
    assert _vmas(p) == before
    s.checkers.check_all()


def test_munmap_of_unmapped_range_is_a_no_op(small):
    s, p, a = small
    before = _vmas(p)
    s.munmap(p, a + 32 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert _vmas(p) == before
    s.checkers.check_all()


def test_munmap_unaligned_is_einval_and_changes_nothing(small):
    from pyrmap.errors import EINVAL
    s, p, a = small
    before = _vmas(p)
    with pytest.raises(EINVAL, match="align"):
        s.munmap(p, a + 8, PAGE_SIZE)
    assert _vmas(p) == before
    s.checkers.check_all()


def test_mprotect_beyond_a_vma_is_enomem_and_changes_nothing(small):
    from pyrmap.errors import ENOMEM
    s, p, a = small
    before = _vmas(p)
    with pytest.raises(ENOMEM):
        s.mprotect(p, a, 8 * PAGE_SIZE, PROT_READ)
    assert _vmas(p) == before
    # The pages are still writable: no stale downgrade either.
    s.spawn_workload(0, p, [("store", a, 1), ("load", a, 1)])
    s.run()


def test_try_to_unmap_on_an_unlocked_page_refuses(small):
    from pyrmap.rmap import KernelBug, try_to_unmap
    s, p, a = small
    page = s.mapped_user_pages()[0]
    with pytest.raises(KernelBug, match="try_to_unmap on unlocked"):
        try_to_unmap(page, 0)
    assert page_mapcount(page) == 1
    s.checkers.check_all()


def test_mapcount_underflow_is_reported_with_diagnostics(small):
    from pyrmap.rmap import BadPageState, page_remove_rmap
    s, p, a = small
    page = s.mapped_user_pages()[0]
    vma = p.mmap[0]
    page._mapcount = -1      # as if a pte had been unmapped twice
    with pytest.raises(BadPageState, match=rf"went negative! \(-1\): pfn={page.pfn:#x} .*vma=<Vma"):
        page_remove_rmap(page, vma)
    # The kernel BUGs here; the state is corrupt and the rmap checker says so.
    with pytest.raises(InvariantViolation, match=r"\[rmap\] .*mapcount went negative \(-1\)"):
        s.checkers.rmap.check()


# --- workloads: scripted, trace files, random with locality -------------------------------------

def test_trace_file_workload(tmp_path, small):
    from pyrmap.workload import parse_trace
    s, p, a = small
    trace = tmp_path / "t.trace"
    trace.write_text(f"# core op vaddr [value]\n"
                     f"0 store {a:#x} 0x77\n"
                     f"1 load {a:#x} 0x77   # core1 sees core0's store\n"
                     f"0 s {a + PAGE_SIZE + 8:#x} 5\n"
                     f"0 l {a + PAGE_SIZE + 8:#x}\n")
    per_core = parse_trace(str(trace))
    assert sorted(per_core) == [0, 1] and len(per_core[0]) == 3
    s.spawn_workload(0, p, per_core[0])
    s.run()
    s.spawn_workload(1, p, per_core[1])
    s.run()
    assert s.shadow.expected(p, a) == 0x77 and s.shadow.expected(p, a + PAGE_SIZE + 8) == 5


@pytest.mark.parametrize("line, message", [
    ("0 store", r"line 1: expected 'core op vaddr \[value\]'"),
    ("0 jump 0x1000", r"line 1: unknown op 'jump'"),
    ("x load 0x1000", r"line 1: bad number"),
    ("-1 load 0x1000", r"line 1: core -1 is negative"),
])
def test_trace_errors(line, message):
    from pyrmap.workload import parse_trace
    with pytest.raises(ValueError, match=message):
        parse_trace([line])


def test_scripted_load_expectation_and_bad_core(small):
    s, p, a = small
    with pytest.raises(ValueError, match=r"Core 5 does not exist; the MMU has 2 cores"):
        s.workload(5, p, [])
    with pytest.raises(TypeError, match=r"An access must be \(op, vaddr\)"):
        from pyrmap.workload import _coerce
        _coerce(("load",))
    s.spawn_workload(0, p, [("store", a, 9), ("load", a, 10)])
    with pytest.raises(WorkloadError, match=r"returned 0x9, the trace expects 0xa"):
        s.run()


def test_random_accesses_are_seeded_and_local():
    from pyrmap.workload import random_accesses
    regions = lambda: [(0x1000, 0x1000 + 32 * PAGE_SIZE, 3, False)]
    a = list(random_accesses(random.Random(4), regions, 200, redraw=0.0, hot_pages=3))
    b = list(random_accesses(random.Random(4), regions, 200, redraw=0.0, hot_pages=3))
    c = list(random_accesses(random.Random(5), regions, 200, redraw=0.0, hot_pages=3))
    assert a == b and a != c
    assert len({acc.vaddr & ~(PAGE_SIZE - 1) for acc in a}) == 3       # locality
    assert {acc.op for acc in a} == {AccessType.LOAD, AccessType.STORE}
    ro = list(random_accesses(random.Random(4), lambda: [(0x1000, 0x3000, 1, False)], 50))
    assert {acc.op for acc in ro} == {AccessType.LOAD}                  # read-only: no stores


# --- the fuzz command line and the long runs -----------------------------------------------------

def test_fuzz_command_line_replays_a_program(capsys):
    from pyrmap.__main__ import main
    assert main(["fuzz", "--seed", "3", "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "step 0:" in out and "step 5:" in out and "every check passed" in out
    assert main(["fuzz", "--seed", "3", "--steps", "6"]) == 0
    assert capsys.readouterr().out == out                 # deterministic per seed


def test_violation_names_the_replay_command():
    """A violation raised inside a random program carries the fuzz command and the step."""
    system = System(seed=8, nframes=64, command=reproduce_command(8, 5, nframes=64))
    random_program(system, 3)
    p = system.processes[0]
    a = system.mmap(p, 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    system.spawn_workload(0, p, [("store", a, 1)])
    system.run()
    system.shadow._mm(p).private[a >> 12][0] = 2            # corrupt the model on purpose
    system.checkers.step("load")
    system.spawn_workload(0, p, [("load", a)])
    with pytest.raises(InvariantViolation) as exc:
        system.run()
    v = exc.value
    assert v.seed == 8 and v.step == 4 and v.operation == "load"
    assert "python -m pyrmap fuzz --seed 8 --steps 5 --nframes 64" in str(v)


@pytest.mark.slow
@settings(derandomize=True, max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 31 - 1), nframes=st.sampled_from([56, 64, 96]))
def test_stress_long_random_programs(seed, nframes):
    system = _run(seed, 60, nframes=nframes)
    _ran_every_checker(system)


@pytest.mark.parametrize("kw, error, message", [
    (dict(seed="1"), TypeError, r"Seed must be an integer, not '1'"),
    (dict(nframes=8), ValueError, r"A system needs at least 16 frames, not 8"),
    (dict(ncores=0), ValueError, r"Core count must be a positive integer, not 0"),
    (dict(quirks=["lost_writes_please"]), ValueError, r"Unknown quirk 'lost_writes_please'; "
                                                      r"known: page_check_address_lockless"),
])
def test_system_rejects_bad_parameters(kw, error, message):
    with pytest.raises(error, match=message):
        System(**kw)


def test_device_workload_without_an_arch_is_refused(small):
    from pyrmap.workload import DeviceWorkload
    s, p, a = small

    class NoDevice:
        arch = object()
    with pytest.raises(TypeError, match="runs on an Arch .its device port., not object"):
        DeviceWorkload(NoDevice(), s.secondary(p), [])
