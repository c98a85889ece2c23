"""Injected faults (pyrmap.faults): swap write failures, allocation failures under reclaim,
-EINTR from mm_take_all_locks.  Each is survived with nothing lost: on SoftArch (the random
programs with every checker) and on the RTL (the reclaim scenario on Icarus)."""

from __future__ import annotations

import numpy as np
import pytest

from pyrmap import swap as sw
from pyrmap.faults import FaultInjector, FaultPlan
from pyrmap.filemap import writepage
from pyrmap.mm_types import PG, AnonVma
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.scenario import run_program

from test_mmu_notifier import nothing_locked, setup
from test_swap import make_kernel, pattern


@pytest.mark.parametrize("text, message", [
    ("nope=0.1", "Unknown fault 'nope'; known: swap_write, alloc, eintr, bus_error"),
    ("alloc", "Fault 'alloc' has no probability (write alloc=0.1)"),
    ("swap_write=x", "swap_write must be a probability in [0, 1], not 'x'"),
    ("swap_write=1.5", "swap_write must be a probability in [0, 1], not 1.5"),
    ("eintr=1", "eintr must be below 1: a certain failure is never survived, not 1.0"),
])
def test_plan_errors_are_named(text, message):
    with pytest.raises(ValueError) as info:
        FaultPlan.parse(text)
    assert str(info.value) == message


def test_plan_text_round_trips_and_draws_are_seeded():
    plan = FaultPlan.parse("swap_write=0.5, eintr=0.25")
    assert plan.text() == "swap_write=0.5,eintr=0.25" and FaultPlan.parse(plan.text()) == plan
    assert not FaultPlan() and plan
    a, b = FaultInjector(plan, 3), FaultInjector(plan, 3)
    assert [a.fail("swap_write") for _ in range(50)] == [b.fail("swap_write") for _ in range(50)]
    assert 0 < a.injected["swap_write"] < 50 and not a.fail("alloc")


def test_swap_write_failure_keeps_the_page_dirty_in_the_swap_cache():
    k = make_kernel()
    sw.swapon(k, 8)
    k.faults = FaultInjector(FaultPlan(swap_write=0.999999), seed=1)
    page = k.alloc_page()
    page.mapping = AnonVma(k)
    k.mem.frame(page.pfn)[:] = pattern(5)
    lock_page(page)
    assert sw.add_to_swap(page)
    page.clear(PG.dirty)
    assert writepage(page) == -5                       # -EIO
    assert page.test(PG.dirty) and page.test(PG.swapcache) and not page.test(PG.writeback)
    assert k.stats["pswpout"] == 0 and k.stats["swap_write_errors"] == 1
    assert np.array_equal(k.mem.frame(page.pfn), pattern(5)), "the data is still in the frame"
    k.faults = FaultInjector()
    page.clear(PG.dirty)
    assert writepage(page) == 0 and k.stats["pswpout"] == 1
    unlock_page(page)


def test_interrupted_registration_restarts_but_a_pending_signal_ends_it():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register_restarting
    k, mm, a, b, f = setup()
    k.faults = FaultInjector(FaultPlan(eintr=0.5), seed=3)
    rec = RecordingNotifier()
    assert mmu_notifier_register_restarting(rec, mm) == 0 and rec.registered
    assert k.faults.injected["eintr"] >= 1
    assert k.stats["mmu_notifier_register_restarts"] == k.faults.injected["eintr"]
    k2, mm2, a2, b2, f2 = setup()
    k2.arch.current_task().signal_pending = True
    try:
        assert mmu_notifier_register_restarting(RecordingNotifier(), mm2) == -4     # -EINTR
    finally:
        k2.arch.current_task().signal_pending = False
    assert k2.stats["mmu_notifier_register_restarts"] == 0
    assert nothing_locked(mm2, a2.anon_vma, f2)


@pytest.mark.parametrize("seed", [1, 2, 3, 5])
def test_random_programs_survive_every_fault(seed):
    """Short of memory (48 frames), with swap writes, allocations and registrations failing
    often: every checker passes (no lost write, rmap complete, notifier pairs...), and every
    kind of fault was injected.  (Swap writes that keep failing under heavier pressure end in
    an out-of-memory error, as they did in the 2008 kernel: reclaim made no progress.)"""
    plan = FaultPlan(swap_write=0.3, alloc=0.3, eintr=0.3)
    s = run_program(seed, 60, nframes=48, faults=plan)
    assert "--faults swap_write=0.3,alloc=0.3,eintr=0.3" in s.checkers.ctx.command
    verdicts = {name: (checks, violations) for name, checks, violations, _ in
                s.checkers.verdicts()}
    assert all(v == 0 for _, v in verdicts.values()), verdicts
    injected = s.kernel.faults.injected
    assert injected["alloc"] > 0 and injected["eintr"] > 0, (seed, injected)
    assert s.kernel.stats["mmu_notifier_register_restarts"] == injected["eintr"]


def test_swap_write_failures_are_survived_under_pressure():
    """Across seeds, with the race operations on, reclaim hits injected swap write failures
    and nothing is lost."""
    total = 0
    for seed in (1, 2, 3, 4, 5, 6, 7, 8):
        s = run_program(seed, 60, nframes=48, faults=FaultPlan(swap_write=0.3))
        assert all(v == 0 for _, _, v, _ in s.checkers.verdicts()), seed
        total += s.kernel.faults.injected["swap_write"]
        assert s.kernel.stats["swap_write_errors"] == s.kernel.faults.injected["swap_write"]
    assert total > 0, "no swap write was ever attempted: the test exercised nothing"


def test_two_dontneeds_racing_under_swap_write_failures():
    """Seed 1 with swap writes failing: DONTNEEDs of one page race while a fault refills
    the page between them.  The first zap returns while the core's TLB holds the refill and
    the second has cleared the pte but not flushed yet; that entry is the second zap's to
    end, so the first's return check is left to it (counted), and every checker passes."""
    s = run_program(1, 60, nframes=48, faults=FaultPlan(swap_write=0.3))
    assert all(v == 0 for _, _, v, _ in s.checkers.verdicts()), s.checkers.verdicts()
    assert s.kernel.faults.injected["swap_write"] > 0
    assert s.checkers.tlb.deferred > 0, "the racing zaps never overlapped: nothing exercised"


@pytest.mark.parametrize("seed", [1, 2])
def test_walk_bus_errors_are_access_faults_the_kernel_retries(seed):
    """SoftArch: bus errors under the walks (reads and A/D CASes) come back as access faults;
    the kernel reads its page tables, finds them readable and the access is retried -- one
    handled access fault per injected error (SoftArch's walk is atomic, nothing restarts it),
    and every checker passes (no write lost to a CAS that failed)."""
    s = run_program(seed, 60, nframes=48, faults=FaultPlan(bus_error=0.05))
    assert all(v == 0 for _, _, v, _ in s.checkers.verdicts()), s.checkers.verdicts()
    injected = s.kernel.faults.injected["bus_error"]
    assert injected > 0
    assert s.kernel.stats["access_faults"] == injected


def test_an_unreadable_page_table_is_sigbus():
    """do_access_fault reads the page-table path: a root outside memory is SIGBUS (the access
    is not retried forever)."""
    from pyrmap.errors import BusErrorSignal
    from pyrmap.memory import do_access_fault
    from pyrmap.pte import AccessType
    k, mm, *_ = setup()
    mm.pgd = k.mem.nframes + 5
    with pytest.raises(BusErrorSignal, match="cannot be read"):
        do_access_fault(mm, 0x1000, AccessType.LOAD)
    assert k.stats["access_faults"] == 1


@pytest.mark.sim
def test_rtl_bus_errors_on_the_memory_port():
    """The reclaim scenario on the RTL (Icarus) with random bus errors on the memory port:
    every injected error is met by a walk the golden-walk scoreboard replayed (a walk that
    answered an access fault, or one an invalidation restarted); every access fault the RTL
    answered was handled by the kernel and the access retried; every checker passes."""
    from cosim.build import make_config, run
    from cosim.scenarios import TB_MODULE
    r = run(make_config(), "icarus", TB_MODULE, seed=2, testcase="test_scenario",
            env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 2, "COSIM_ACCESSES": 30,
                 "COSIM_FAULTS": "bus_error=0.05", "COCOTB_TEST_FILTER": "test_scenario"})
    rep = r.report
    assert rep is not None, (r.failures, r.log_tail())
    assert rep["passed"] and r.passed, (rep.get("violation"), r.failures)
    injected = rep["faults_injected"]["bus_error"]
    sb = rep["scoreboard"]
    assert injected > 0 and sb["bus_errors"] == injected, (injected, sb)
    assert 0 < sb["access_faults"] == rep["kernel"]["access_faults"] <= injected, sb
    verdicts = {c["name"]: (c["checks"], c["verdict"]) for c in rep["checkers"]}
    assert all(v == "PASS" and n > 0 for n, v in verdicts.values()), verdicts


@pytest.mark.sim
def test_rtl_reclaim_survives_injected_faults():
    """The reclaim scenario on the RTL (Icarus) with every kernel fault injected: every
    checker passes and the report counts what was injected."""
    from cosim.build import make_config, run
    r = run(make_config(), "icarus", "cosim.tb.tb_scenarios", seed=3,
            testcase="test_scenario",
            env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 3, "COSIM_ACCESSES": 30,
                 "COSIM_FAULTS": "swap_write=0.5,alloc=0.3,eintr=0.3",
                 "COCOTB_TEST_FILTER": "test_scenario"})
    rep = r.report
    assert rep is not None, (r.failures, r.log_tail())
    assert rep["passed"] and r.passed, (rep.get("violation"), r.failures)
    injected = rep["faults_injected"]
    assert sum(injected.values()) > 0, injected
    assert all(c["verdict"] != "FAIL" for c in rep["checkers"]), rep["checkers"]
