"""The bug zoo: each quirk makes a checker fail, and the same run passes with it off.

The races are driven by the seeded scheduler.  Each test searches a fixed, small range of
seeds for one whose interleaving hits the race with the quirk on (deterministic: same range,
same result), then runs the very same seed with the quirk off and expects every checker to
pass.  Failures print the seed.
"""

import pytest

from pyrmap import quirk_races
from pyrmap.checkers import InvariantViolation
from pyrmap.mm_types import PG
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.quirk_races import VA, lockless_race, release_race, split_race, zap_race

SEEDS = range(40)


def Rig(seed: int, quirk: str, on: bool, **kw) -> quirk_races.Rig:
    """The quirk races' machine, its violation reports naming this file and the seed."""
    return quirk_races.Rig(seed, quirk, on, command=f"pytest tests/test_quirks.py  # seed {seed}",
                           **kw)


def _search(make, check_off=True):
    """The first seed in SEEDS whose run violates an invariant with the quirk on; then the
    same seed with the quirk off must pass.  Returns (seed, violation)."""
    for seed in SEEDS:
        try:
            make(seed, True)
        except InvariantViolation as exc:
            if check_off:
                try:
                    make(seed, False)
                except InvariantViolation as off:    # pragma: no cover - a real failure
                    pytest.fail(f"seed {seed}: fails with the quirk off too:\n{off}")
            return seed, exc
    pytest.fail(f"no seed in {SEEDS} hit the race with the quirk on")


# --- 479db0bf408e: page_check_address lock-free pre-check ------------------------------------

def test_page_check_address_lockless_loses_dirty():
    seed, exc = _search(lockless_race)
    # Caught when page_mkclean returns with core0's writable entry alive (a), or when the
    # clean page goes to disk with it (c).
    assert exc.checker in ("tlb", "shadow"), exc
    assert ("page_mkclean of" in exc.message and "returned while core0 TLB still holds"
            in exc.message) or "writeback of clean" in exc.message
    assert exc.seed == seed
    assert "lockless" not in exc.message


def _store_then_msync(rig: quirk_races.Rig) -> None:
    """A CPU store (faulting as needed), then msync's writeback: the backing store must hold
    the store."""
    from pyrmap.filemap import do_writepages
    from pyrmap.workload import CpuWorkload
    wl = CpuWorkload(rig.kernel, 0, rig.mm, [("store", VA + 8, 0x5555)], checkers=rig.chk)
    rig.sched.spawn("cpu0-late", wl.run)
    rig.run()
    rig.sched.spawn("msync", do_writepages, rig.file)
    rig.run()
    rig.chk.shadow.check_backing(rig.file, [0])


def test_page_check_address_lockless_write_after_writeback_is_lost():
    seed, _ = _search(lockless_race)
    rig = lockless_race(seed, True, raise_on_violation=False)
    _store_then_msync(rig)
    lost = [v for v in rig.chk.violations if "lost write" in v.message]
    assert lost, f"seed {seed}: the write after writeback reached the file"
    assert "word 1" in lost[0].message and "0x5555" in lost[0].message
    rig = lockless_race(seed, False, raise_on_violation=False)
    _store_then_msync(rig)
    assert rig.chk.violations == []


def test_page_check_address_locked_is_safe_on_every_seed():
    for seed in range(10):
        rig = lockless_race(seed, False)
        assert rig.kernel.stats["rmap_lockless_skip"] == 0


# --- nonatomic ptep_get_and_clear: a D bit set by a walker in the window is lost ---------------

def nonatomic_race(seed: int, on: bool) -> quirk_races.Rig:
    # The pte is writable but clean and not young: a store must walk and CAS D in.
    rig = Rig(seed, "nonatomic_ptep_get_and_clear", on, pte_bits=0)
    mm, arch, page, k = rig.mm, rig.arch, rig.page, rig.kernel

    def cpu():
        # Spin a seed-dependent while before the store, so that the seeds cover every
        # position of the store relative to reclaim's steps.
        for _ in range(seed % 16):
            arch.yield_point("spin")
        rig.store(0, 0x2222)

    def reclaim():
        from pyrmap.filemap import write_one_page
        from pyrmap.rmap import SWAP_SUCCESS, try_to_unmap
        from pyrmap.vmscan import remove_mapping
        k.get_page(page)
        lock_page(page)
        rc = try_to_unmap(page, 0)
        if rc == SWAP_SUCCESS and page.test(PG.dirty):
            write_one_page(page)                # unlocks
            lock_page(page)
        if rc == SWAP_SUCCESS and remove_mapping(page):
            pass
        unlock_page(page)
        k.put_page(page)

    rig.sched.spawn("cpu0", cpu)
    rig.sched.spawn("reclaim", reclaim)
    rig.run()
    if 0 not in rig.file.page_tree:
        # The page left the cache: the file's backing store must hold every write.
        rig.chk.shadow.check_backing(rig.file, [0])
    rig.chk.check_all()
    return rig


def test_nonatomic_ptep_get_and_clear_loses_a_write():
    seed, exc = _search(nonatomic_race)
    assert exc.checker == "shadow" and "lost write" in exc.message
    assert exc.seed == seed


# --- split_vma must advance the upper half's vm_pgoff ------------------------------------------

def test_split_vma_keeping_pgoff_leaves_ptes_rmap_cannot_find():
    """Checker (e) from outside: mprotect of the upper half of an anonymous mapping splits
    its VMA; a split that keeps the old vm_pgoff leaves the upper pages' PTEs unreachable by
    their rmap walk.  Off, every check of (e) passes."""
    with pytest.raises(InvariantViolation) as ei:
        split_race(1, True)
    assert ei.value.checker == "rmap", ei.value
    assert "is not reachable from page->mapping <AnonVma" in ei.value.message
    s = split_race(1, False)
    assert s.checkers.rmap.checks > 0 and s.checkers.rmap.violations == 0
    assert s.kernel.stats["vma_split"] == 1


# --- 3ad3d901bbcf: mmu_notifier_release unlinks before ->release -------------------------------

def test_notifier_release_unlink_first_leaves_secondary_to_freed_page():
    seed, exc = _search(release_race)
    # try_to_unmap returns with the device's entry alive (a), or the frame is freed with it
    # (b).
    assert exc.checker in ("tlb", "frame"), exc
    assert ("try_to_unmap of" in exc.message or "freed while" in exc.message) and \
        ("device TLB" in exc.message or "secondary MMU" in exc.message)


def test_notifier_release_fixed_order_on_every_seed():
    for seed in range(10):
        rig = release_race(seed, False)
        assert rig.chk.frame.violations == 0


# --- 1cf35d47712d: zap flushes the TLB only after dropping the pte lock -------------------------

def test_zap_flush_after_pte_unlock_loses_a_write():
    seed, exc = _search(zap_race)
    assert exc.checker in ("tlb", "shadow"), exc
    assert ("page_mkclean of" in exc.message and "returned while core0 TLB still holds"
            in exc.message) or "writeback of clean" in exc.message \
        or "lost write" in exc.message


def test_zap_flush_under_pte_lock_on_every_seed():
    for seed in range(10):
        rig = zap_race(seed, False)
        assert rig.chk.shadow.violations == 0


# --- the same races found by the random programs ---------------------------------------------

RACE_OPS = ["mmap_file", "access", "dontneed_race", "msync"]


def _program(seed, quirks):
    from pyrmap.scenario import run_program
    return run_program(seed, 30, nframes=64, quirks=quirks, ops=RACE_OPS)


def _find_with_programs(quirk, message_has):
    """Some seed of 1..40 fails with ``quirk`` on (reproducible by its printed command) and
    the same seed passes on the fixed kernel."""
    for seed in range(1, 41):
        try:
            _program(seed, [quirk])
        except InvariantViolation as exc:
            assert "reproduce: python -m pyrmap fuzz --seed" in str(exc)
            assert f"--quirk {quirk}" in str(exc)
            assert exc.checker in ("tlb", "shadow"), exc
            assert message_has in exc.message, exc
            _program(seed, None)
            return seed
    pytest.fail(f"no seed in 1..40 found {quirk}")


def test_random_programs_find_the_zap_quirk():
    """MADV_DONTNEED racing the CPUs and writeback: with 1cf35d47712d undone some seed loses
    a write, and that same seed passes on the fixed kernel."""
    _find_with_programs("zap_flush_after_pte_unlock", "")


def test_random_programs_find_the_zap_rmap_quirk():
    """With 5df397dec7c4 undone (zap_pte_range removes the rmap before its TLB flush), a
    concurrent page_mkclean sees an unmapped page (map=0), skips it, and returns -- or
    writeback starts -- while a dirty, writable TLB entry is still live; the same seed passes
    on the fixed kernel."""
    _find_with_programs("zap_rmap_before_flush", "map=0")


def test_dontneed_race_is_in_the_default_programs():
    from pyrmap.scenario import PROGRAM_OPS, run_program
    assert PROGRAM_OPS["dontneed_race"] > 0
    names: list = []
    for seed in range(40):
        names.clear()
        run_program(seed, 12, nframes=64, windows=False,
                    on_step=lambda i, name: names.append(name))
        if any("racing CPUs and writeback" in name for name in names):
            return
    pytest.fail("no default program of seeds 0..39 drew madvise(DONTNEED) against writeback")
