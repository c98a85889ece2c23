"""pyrmap.devdriver on SoftArch: the secondary-MMU driver kept coherent by mmu notifiers.

Every scenario runs a device thread (accesses through the device TLB, faults resolved by the
driver, loads compared with the shadow memory) next to the VM operation under test, on a
seeded scheduler, with every checker on; the quirks are each caught by a checker.  Failures
print the seed.
"""

import random

import pytest

from pyrmap import mmu_notifier as mn
from pyrmap import quirk_races
from pyrmap.checkers import InvariantViolation
from pyrmap.devdriver import (EFAULT, EINTR, FIGURE_LABELS, DevDriverConfig, DeviceMmuDriver,
                              device_figures, register_device, run_device)
from pyrmap.mmu_notifier import mmu_notifier_release
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pte import PAGE_SIZE, AccessType
from pyrmap.rmap import KernelBug
from pyrmap.quirk_races import DEV_OFFSET, count_race, defer_migrate, seq_race
from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

RW = PROT_READ | PROT_WRITE


def DevSys(seed: int, **kw) -> quirk_races.DevSys:
    """The quirk races' machine, its violation reports naming this file and the seed."""
    return quirk_races.DevSys(seed, command=f"pytest tests/test_devdriver.py  # seed {seed}",
                              **kw)


def _verdicts_pass(ds):
    """At the end (a quiescent point) no checker fails (some have nothing to look at in a
    given test: "not exercised" is not a failure here)."""
    ds.s.checkers.check_all()
    bad = [v for v in ds.s.checkers.verdicts() if v[3] == "FAIL"]
    assert not bad, f"seed {ds.seed}: {bad}"


# ---------------------------------------------------------------------------------------------
# Construction and the single-threaded paths.

def test_config_and_constructor_errors():
    with pytest.raises(TypeError, match="Range pages must be a positive integer, not 0"):
        DevDriverConfig(range_pages=0)
    with pytest.raises(TypeError, match="Max retries must be a positive integer, not 'x'"):
        DevDriverConfig(max_retries="x")
    ds = DevSys(0, register=False)
    with pytest.raises(TypeError, match="Config must be a DevDriverConfig, not 3"):
        DeviceMmuDriver(ds.p, config=3)
    with pytest.raises(TypeError,
                       match=r"Device operations must be a pyrmap.arch.DevicePort, not 5"):
        DeviceMmuDriver(ds.p, dev=5)
    assert DevDriverConfig(no_seq_retry=True).quirks() == ["no_seq_retry"]


def test_fault_fills_from_the_primary_pte_without_pinning():
    ds = DevSys(1)
    drv, s = ds.drv, ds.s
    va = ds.anon + DEV_OFFSET
    assert drv.access(va, AccessType.STORE, 0xAB, shadow=s.shadow) is None
    assert drv.access(va, AccessType.LOAD, shadow=s.shadow) == 0xAB
    st = drv.stats
    assert st["faults"] == 1 and st["fills"] == 1 and st["gup_faults"] == 1, st
    assert st["accesses"] == 2
    ent = drv.device_entries()
    assert len(ent) == 1 and ent[0].vpn == ds.anon >> 12 and ent[0].perm & 0x4  # W
    page = s.kernel.pages[ent[0].ppn]
    # Not pinned: the PTE's reference and the LRU's are all there is (no extra get_page).
    assert page._count == 1, page
    assert page.test(page.flags.__class__.dirty), "a write fill must dirty the page"


def test_fault_outside_any_mapping_is_efault_and_stopped_device_refuses():
    ds = DevSys(2)
    assert ds.drv.device_fault(0x10_0000_0000, AccessType.LOAD) == -EFAULT
    with pytest.raises(OSError) as ei:
        ds.drv.access(0x10_0000_0000, AccessType.LOAD)
    assert ei.value.errno == EFAULT
    ds.drv.release(ds.p)
    assert ds.drv.stopped and ds.drv.device_entries() == []
    assert ds.drv.device_fault(ds.anon, AccessType.LOAD) == -EFAULT


def test_invalidate_page_range_and_young_drive_the_device():
    ds = DevSys(3)
    ds.touch_all()
    drv, p = ds.drv, ds.p
    n = len(drv.device_entries())
    assert n == 8, drv.device_entries()            # 12 pages through an 8-entry device TLB
    seq = drv.seq
    va = next(e.vpn << 12 for e in drv.device_entries())
    drv.invalidate_page(p, va)
    assert drv.seq == seq + 1
    assert not any(e.vpn << 12 == va for e in drv.device_entries())
    drv.invalidate_range_start(p, ds.fsh, ds.fsh + 6 * PAGE_SIZE)
    assert drv.count == 1
    assert not any(ds.fsh <= e.vpn << 12 < ds.fsh + 6 * PAGE_SIZE
                   for e in drv.device_entries())
    # Inside the window the fault path refuses to fill (and the device waits).
    assert drv.fault(ds.fsh, write=False) is False and drv.stats["fills_refused"] == 1
    drv.invalidate_range_end(p, ds.fsh, ds.fsh + 6 * PAGE_SIZE)
    assert drv.count == 0 and drv.seq == seq + 2
    assert drv.fault(ds.fsh, write=False) is True
    # young: a hit sets it, clear_flush_young harvests it once and flushes the entry.
    drv.access(ds.fsh + DEV_OFFSET, AccessType.LOAD)
    assert drv.clear_flush_young(p, ds.fsh) == 1
    assert drv.clear_flush_young(p, ds.fsh) == 0
    assert not any(e.vpn << 12 == ds.fsh for e in drv.device_entries())
    assert drv.stats["young_harvested"] == 1
    fig = device_figures(ds.s)
    assert set(k for k, _ in FIGURE_LABELS) <= set(fig) and fig["drivers"] == 1
    assert fig["invalidations"] == 2 and fig["young_harvested"] == 1, fig


def test_end_without_start_is_reported():
    ds = DevSys(4)
    with pytest.raises(InvariantViolation, match="without its start"):
        ds.drv.invalidate_range_end(ds.p, ds.anon, ds.anon + PAGE_SIZE)
    assert ds.drv.count == 0 and ds.drv.min_count == -1


def test_register_with_signal_pending_returns_eintr_and_leaves_everything():
    ds = DevSys(5, register=False)
    s, p = ds.s, ds.p
    drv = DeviceMmuDriver(p, checkers=s.checkers)
    before = (list(p.mmu_notifier_mm.list), p.mm_count, dict(drv.stats), drv.seq)
    task = s.arch.current_task()
    task.signal_pending = True
    try:
        assert drv.register() == -EINTR
        with pytest.raises(OSError) as ei:
            register_device(p, checkers=s.checkers)
        assert ei.value.errno == EINTR
    finally:
        task.signal_pending = False
    assert (list(p.mmu_notifier_mm.list), p.mm_count, dict(drv.stats), drv.seq) == before
    assert not drv.registered and not p.mmap_sem.is_locked()
    assert not ds.file.i_mmap_lock.is_locked()
    mn.mmu_notifier_invalidate_page(p, ds.anon)          # not heard
    assert drv.events == []
    assert drv.register() == 0 and drv.registered


@pytest.mark.parametrize("seed", range(4))
def test_register_interrupted_inside_a_scenario(seed):
    """A signal arrives while the driver registers next to munmap and reclaim: -EINTR, and
    the driver heard nothing; the retry succeeds and sees only paired windows."""
    ds = DevSys(seed, register=False, nframes=32)
    s, p = ds.s, ds.p
    drv = DeviceMmuDriver(p, checkers=s.checkers)
    got = []

    def driver():
        s.arch.current_task().signal_pending = True
        got.append(drv.register())
        s.arch.current_task().signal_pending = False
        got.append(list(drv.events))
        got.append(drv.register())

    def vm():
        s.munmap(p, ds.anon, PAGE_SIZE)
        s.reclaim(4)
        s.mprotect(p, ds.fsh, PAGE_SIZE, PROT_READ)

    s.spawn("driver", driver)
    s.spawn("vm", vm)
    ds.run()
    assert got[0] == -EINTR and got[1] == [] and got[2] == 0, (seed, got)
    assert drv.count == 0 and drv.min_count == 0


# ---------------------------------------------------------------------------------------------
# Scenarios.

def kswapd(ds, rounds=10, nr=4):
    def body():
        for _ in range(rounds):
            ds.s.reclaim(nr)
            for _ in range(10):
                ds.s.arch.yield_point("kswapd sleeps")
    return body


@pytest.mark.parametrize("svadu", [True, False], ids=["Svadu", "Svade"])
@pytest.mark.parametrize("seed", range(6))
def test_reclaim_swaps_device_pages_and_the_device_faults_them_back(seed, svadu):
    ds = DevSys(seed, nframes=30, svadu=svadu)
    ds.touch_all()
    ds.spawn_device(160)
    ds.s.spawn("kswapd", kswapd(ds))
    ds.run()
    k, st = ds.s.kernel, ds.drv.stats
    assert k.stats["vmscan_unmapped"] > 0, f"seed {seed}: reclaim unmapped nothing"
    assert k.stats["pswpout"] > 0, f"seed {seed}: nothing the device used was swapped"
    assert st["invalidate_page"] > 0 and st["young_tests"] > 0, (seed, st)
    assert st["fills"] > 12, (seed, st)              # refaults after the touch
    # The device reads every word it wrote: swapped and dropped pages fault back in through
    # the driver, with their contents (the shadow compares every load).
    loads = ds.s.shadow.loads
    for base in (ds.anon, ds.fsh):
        for i in range(ds.pages):
            ds.drv.access(base + i * PAGE_SIZE + DEV_OFFSET, AccessType.LOAD,
                          shadow=ds.s.shadow)
    assert ds.s.shadow.loads == loads + 2 * ds.pages
    assert k.stats["pswpin"] > 0, f"seed {seed}: the device faulted no swapped page back"
    ds.check_device()
    _verdicts_pass(ds)


@pytest.mark.parametrize("seed", range(6))
def test_munmap_mprotect_mremap_while_the_device_accesses(seed):
    ds = DevSys(seed)
    ds.touch_all()
    s, p = ds.s, ds.p
    ds.spawn_device(120)

    def vm():
        s.mprotect(p, ds.anon, 2 * PAGE_SIZE, PROT_READ)
        s.arch.yield_point("vm")
        s.mprotect(p, ds.anon, 2 * PAGE_SIZE, RW)
        new = s.mremap(p, ds.anon + 2 * PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE, 1)
        s.arch.yield_point("vm")
        s.munmap(p, ds.fsh + PAGE_SIZE, 2 * PAGE_SIZE)
        s.munmap(p, new, PAGE_SIZE)

    s.spawn("vm", vm)
    ds.run()
    st = ds.drv.stats
    assert st["range_start"] >= 4 and st["range_end"] == st["range_start"], (seed, st)
    assert ds.drv.count == 0
    ds.check_device()
    _verdicts_pass(ds)


@pytest.mark.parametrize("seed", range(6))
def test_fork_cow_while_the_device_maps_the_parent(seed):
    """fork write-protects the parent while the device maps it (the device stores to the
    file pages and loads the anonymous ones meanwhile); its later stores to the parent's
    anonymous pages copy on write, and the child still reads the values from before."""
    ds = DevSys(seed)
    ds.touch_all()
    s, p = ds.s, ds.p
    words = [ds.anon + i * PAGE_SIZE + DEV_OFFSET for i in range(ds.pages)]
    shared = [ds.fsh + i * PAGE_SIZE + DEV_OFFSET for i in range(ds.pages)]
    rng = random.Random(seed)
    src = [("load", rng.choice(words)) if rng.random() < 0.5 else ("store", rng.choice(shared))
           for _ in range(60)]
    s.spawn("device", lambda: run_device(ds.drv, src, shadow=s.shadow))
    child = []

    def forker():
        c = s.fork(p)
        child.append(c)
        s.random_workload(0, c, 30, store_ratio=0.3)

    s.spawn("fork", forker)
    ds.run()
    st = ds.drv.stats
    assert st["range_start"] >= 1, (seed, st)       # copy_page_range write-protected the parent
    fills = st["fills"]
    for i, va in enumerate(words):                  # copy on write in the parent
        ds.drv.access(va, AccessType.STORE, 0x6000 + i, shadow=s.shadow)
    assert st["fills"] >= fills + ds.pages, (seed, st)
    c = child[0]
    s.workload(1, c, [("load", va, 0x1000 + i) for i, va in enumerate(words)]).run()
    assert [ds.drv.access(va, AccessType.LOAD) for va in words] == \
        [0x6000 + i for i in range(ds.pages)]
    ds.check_device()
    _verdicts_pass(ds)


@pytest.mark.parametrize("seed", range(6))
def test_migration_of_device_mapped_pages(seed):
    ds = DevSys(seed)
    ds.touch_all()
    s = ds.s
    ds.spawn_device(100)
    moved = []

    def migrator():
        rng = random.Random(seed)
        for _ in range(8):
            devpages = [s.kernel.pages[e.ppn] for e in ds.drv.device_entries()]
            if devpages:
                moved.append(s.migrate(rng.choice(devpages)))
            s.arch.yield_point("migrator")

    s.spawn("migrate", migrator)
    ds.run()
    assert moved.count(0) >= 1, f"seed {seed}: no device-mapped page migrated: {moved}"
    assert ds.drv.stats["invalidate_page"] >= 1
    ds.check_device()
    _verdicts_pass(ds)


@pytest.mark.parametrize("seed", range(6))
def test_exit_while_the_device_is_active_racing_reclaim(seed):
    ds = DevSys(seed, nframes=30)
    ds.touch_all()
    s, p = ds.s, ds.p
    ds.spawn_device(200)
    s.spawn("kswapd", kswapd(ds, rounds=6))

    def exiter():
        for _ in range(seed * 7):
            s.arch.yield_point("exit later")
        s.exit(p)

    s.spawn("exit", exiter)
    ds.run()
    drv = ds.drv
    assert drv.stopped and drv.stats["releases"] >= 1, (seed, drv.stats)
    assert p.dead and drv.sptes == {}
    assert not any(e.asid == p.asid for e in s.arch.dev_entries()), s.arch.dev_entries()
    _verdicts_pass(ds)


@pytest.mark.parametrize("seed", range(8))
def test_register_racing_munmap_truncate_and_try_to_unmap(seed):
    """The driver registers while munmap, truncate and reclaim (try_to_unmap) run on the mm:
    its start/end counter never goes negative and it never sees an end without its start."""
    from pyrmap.filemap import vmtruncate
    ds = DevSys(seed, nframes=30, register=False)
    s, p = ds.s, ds.p
    for base in (ds.anon, ds.fsh):
        s.workload(0, p, [("store", base + i * PAGE_SIZE) for i in range(ds.pages)]).run()
    drv = DeviceMmuDriver(p, checkers=s.checkers)

    def driver():
        for _ in range(seed * 3):
            s.arch.yield_point("register later")
        assert drv.register() == 0
        s.checkers.secondaries.append(drv)
        run_device(drv, ds.accesses(40), shadow=s.shadow)

    def munmapper():
        s.munmap(p, ds.anon, 2 * PAGE_SIZE)
        s.munmap(p, ds.anon + 3 * PAGE_SIZE, PAGE_SIZE)

    def truncater():
        vmtruncate(ds.file, 3 * PAGE_SIZE)
        s.shadow.on_truncate(ds.file, 3) if hasattr(s.shadow, "on_truncate") else None

    s.spawn("driver", driver)
    s.spawn("munmap", munmapper)
    s.spawn("truncate", truncater)
    s.spawn("kswapd", kswapd(ds, rounds=3))
    ds.run()
    assert drv.min_count == 0 and drv.count == 0, (seed, drv.min_count, drv.count)
    kinds = [e[0] for e in drv.events]
    depth = 0
    for k in kinds:
        depth += {"range_start": 1, "range_end": -1}.get(k, 0)
        assert depth >= 0, f"seed {seed}: an end without its start: {kinds}"
    assert drv.stats["violations"] == 0


def test_register_without_the_locks_sees_an_unmatched_end(monkeypatch):
    """Mutation: registration without mmap_sem and mm_take_all_locks lets the driver join in
    the middle of a window; its counter check reports the end without a start."""
    monkeypatch.setattr(mn, "mm_take_all_locks", lambda mm: 0)
    monkeypatch.setattr(mn, "mm_drop_all_locks", lambda mm: None)
    caught = 0
    for seed in range(12):
        ds = DevSys(seed, register=False)
        s, p = ds.s, ds.p
        drv = DeviceMmuDriver(p, checkers=s.checkers)

        def vm():
            for _ in range(4):
                s.mprotect(p, ds.anon, PAGE_SIZE, PROT_READ)
                s.mprotect(p, ds.anon, PAGE_SIZE, RW)

        def driver():
            for _ in range(seed):
                s.arch.yield_point("later")
            mn.__mmu_notifier_register(drv, p)

        s.spawn("vm", vm)
        s.spawn("driver", driver)
        try:
            ds.run()
        except InvariantViolation as exc:
            assert "without its start" in str(exc), exc
            caught += 1
    assert caught, "no seed let the unlocked registration land inside a window"


# ---------------------------------------------------------------------------------------------
# Quirks.

def test_no_seq_retry_fills_a_freed_page():
    with pytest.raises(InvariantViolation) as ei:
        seq_race(7, True)
    assert ei.value.checker in ("frame", "notifier")
    assert "which is free" in ei.value.message or "inside the open" in ei.value.message
    ds, rc = seq_race(7, False)
    assert rc == -EFAULT                     # refused, retried, found the mapping gone
    _verdicts_pass(ds)


def test_no_count_check_fills_inside_an_open_window_caught_from_outside_the_driver():
    """A fill that checks the sequence count but not the open windows lands inside an
    invalidate_range_start window (seq moves only at its end): checker (d) sees it on the
    arch's dev_fill event, not through the driver's own report.  Off, the fill in the window
    is refused and the one after the window's end lands."""
    with pytest.raises(InvariantViolation) as ei:
        count_race(3, True)
    assert ei.value.checker == "notifier"
    assert "inside the open invalidate window" in ei.value.message, ei.value.message
    ds, filled = count_race(3, False)
    assert not filled and ds.s.checkers.notifier.checks > 0
    assert ds.s.checkers.secondaries[-1].stats["fills_refused"] == 1
    _verdicts_pass(ds)


def _concurrent_seq_race(seed: int, on: bool):
    ds = DevSys(seed, nframes=30, config=DevDriverConfig(no_seq_retry=on))
    ds.touch_all()
    s, p = ds.s, ds.p
    ds.spawn_device(120, shadow=False)          # madvise zeroes the device's words
    s.spawn("kswapd", kswapd(ds, rounds=8))

    def vm():
        for i in range(3):
            s.madvise_dontneed(p, ds.anon + 2 * i * PAGE_SIZE, PAGE_SIZE)
            s.arch.yield_point("vm")
    s.spawn("vm", vm)
    ds.run()
    return ds


def test_no_seq_retry_caught_under_concurrency():
    """The same quirk hit by the seeded scheduler alone (reclaim and madvise next to the
    device); the same seed passes without it."""
    for seed in range(40):
        try:
            _concurrent_seq_race(seed, True)
        except InvariantViolation as exc:
            assert exc.checker in ("frame", "notifier", "tlb", "dirt"), exc
            assert exc.seed == seed
            _verdicts_pass(_concurrent_seq_race(seed, False))
            return
    pytest.fail("no seed in range(40) hit the seq race with no_seq_retry on")


def test_defer_inval_to_range_end_leaves_the_device_on_a_freed_page():
    with pytest.raises(InvariantViolation) as ei:
        defer_migrate(8, True)
    assert ei.value.checker in ("frame", "tlb"), ei.value
    assert "device TLB" in ei.value.message or "secondary MMU" in ei.value.message
    ds, rc = defer_migrate(8, False)
    assert rc == 0
    ds.check_device()
    _verdicts_pass(ds)


def _defer_mremap_race(seed: int, on: bool):
    """CVE-2018-18281's device twin under concurrency: mremap moves PTEs while the device
    keeps old translations until a range_end, and reclaim's try_to_unmap (whose
    invalidate_page is deferred too) frees pages the device still maps."""
    ds = DevSys(seed, nframes=30, config=DevDriverConfig(defer_inval_to_range_end=on))
    ds.touch_all()
    s, p = ds.s, ds.p

    def mover():
        s.mremap(p, ds.fsh, 3 * PAGE_SIZE, 4 * PAGE_SIZE, 1)

    s.spawn("mremap", mover)
    s.spawn("kswapd", kswapd(ds, rounds=6, nr=8))
    ds.run()
    return ds


def test_defer_inval_to_range_end_mremap_and_reclaim_race():
    for seed in range(40):
        try:
            _defer_mremap_race(seed, True)
        except InvariantViolation as exc:
            assert exc.checker in ("frame", "tlb", "shadow"), exc
            assert exc.seed == seed
            _verdicts_pass(_defer_mremap_race(seed, False))
            return
    pytest.fail("no seed in range(40) hit the mremap/reclaim race with the deferral on")


def _release_race(seed: int, on: bool):
    ds = DevSys(seed, quirks=["notifier_release_unlink_first"] if on else None)
    ds.touch_all()
    s, p, k = ds.s, ds.p, ds.s.kernel
    page = k.pages[next(e.ppn for e in ds.drv.device_entries()
                        if ds.fsh <= e.vpn << 12 < ds.fsh + ds.pages * PAGE_SIZE)]

    def exiting():
        mmu_notifier_release(p)                # exit_mmap's first step

    def reclaim():
        from pyrmap.rmap import SWAP_SUCCESS, try_to_unmap
        from pyrmap.filemap import write_one_page
        from pyrmap.vmscan import remove_mapping
        k.get_page(page)
        lock_page(page)
        if page.test(page.flags.__class__.dirty):
            write_one_page(page)
            lock_page(page)
        if try_to_unmap(page, 0) == SWAP_SUCCESS:
            remove_mapping(page)
        unlock_page(page)
        k.put_page(page)

    s.spawn("exit", exiting)
    s.spawn("reclaim", reclaim)
    ds.run()
    return ds


def test_notifier_release_unlink_first_with_a_real_device():
    for seed in range(40):
        try:
            _release_race(seed, True)
        except InvariantViolation as exc:
            # The page is freed (b) or written back clean (c) while the device still maps it,
            # or page_mkclean / try_to_unmap returned while it did (a, at the return).
            assert exc.checker in ("frame", "shadow", "tlb"), exc
            assert "device TLB" in exc.message or "secondary MMU" in exc.message, exc
            ds = _release_race(seed, False)
            assert ds.drv.stopped
            _verdicts_pass(ds)
            return
    pytest.fail("no seed in range(40) hit the release/try_to_unmap race")


# ---------------------------------------------------------------------------------------------
# The driver's own checks, each fed a bad input.

def test_access_through_a_free_frame_is_reported():
    ds = DevSys(9)
    k = ds.s.kernel
    free_pfn = next(p for p in range(1, k.mem.nframes) if k.frames.is_free(p))
    with pytest.raises(InvariantViolation) as ei:
        ds.drv.completed(ds.anon, AccessType.LOAD, free_pfn << 12)
    assert ei.value.checker == "frame" and "which is free" in ei.value.message


def test_a_fill_inside_a_window_is_caught_from_outside_the_driver():
    """Checker (d) judges every device fill (the arch's ``dev_fill`` event) against the
    windows its own notifier client saw open: a driver without the sequence-count retry that
    fills inside a window is caught, though the driver checks nothing of the kind itself."""
    ds = DevSys(10, register=False)
    s, p = ds.s, ds.p
    s.workload(0, p, [("store", ds.anon)]).run()
    drv = DeviceMmuDriver(p, checkers=s.checkers, config=DevDriverConfig(no_seq_retry=True))
    assert drv.register() == 0
    with pytest.raises(InvariantViolation, match=r"device fill of .* inside the open "
                                                 r"invalidate window") as ei:
        with mn.mmu_notifier_range(p, ds.anon, ds.anon + PAGE_SIZE):
            drv.device_fault(ds.anon, AccessType.LOAD)
    assert ei.value.checker == "notifier"
    # Outside the window the same fill is legal.
    ds2 = DevSys(10, register=False)
    ds2.s.workload(0, ds2.p, [("store", ds2.anon)]).run()
    ok = DeviceMmuDriver(ds2.p, checkers=ds2.s.checkers,
                         config=DevDriverConfig(no_seq_retry=True))
    assert ok.register() == 0
    before = ds2.s.checkers.notifier.checks
    assert ok.device_fault(ds2.anon, AccessType.LOAD) == 0
    assert ds2.s.checkers.notifier.checks > before and not ds2.s.checkers.notifier.violations


def test_compat_views_and_figures():
    ds = DevSys(11)
    drv = ds.drv
    drv.access(ds.fsh + DEV_OFFSET, AccessType.STORE, 5)
    assert drv.map == {ds.fsh >> 12: (drv.device_entries()[0].ppn, True)}
    assert drv.reaches(drv.device_entries()[0].ppn) == ds.fsh
    with mn.mmu_notifier_range(ds.p, ds.fsh, ds.fsh + PAGE_SIZE):
        pass
    drv.clear_flush_young(ds.p, ds.fsh)
    assert drv.calls == [("invalidate_range_start", ds.fsh, ds.fsh + PAGE_SIZE),
                         ("invalidate_range_end", ds.fsh, ds.fsh + PAGE_SIZE),
                         ("clear_flush_young", ds.fsh)]
    assert drv.map == {} and drv.reaches(1) is None
    fig = device_figures([drv])
    assert fig["accesses"] == 1 and fig["fills"] == 1 and fig["faults"] == 1, fig
    assert fig["invalidations"] == 1 and fig["drivers"] == 1


def test_zapping_a_writable_entry_dirties_the_page():
    """The device never sets D: dropping an entry it could write marks the page dirty
    (the contract of invalidate_page), so reclaim writes the device's stores back."""
    from pyrmap.mm_types import PG
    ds = DevSys(12)
    drv = ds.drv
    drv.access(ds.fsh + DEV_OFFSET, AccessType.LOAD)        # a read fault: read-only
    assert drv.map[ds.fsh >> 12][1] is False                # (the file pte is clean)
    drv.access(ds.fsh + DEV_OFFSET, AccessType.STORE, 1, shadow=ds.s.shadow)   # PAGE fault
    pfn = drv.device_entries()[0].ppn
    page = ds.s.kernel.pages[pfn]
    assert drv.map[ds.fsh >> 12] == (pfn, True)
    page.clear(PG.dirty)
    drv.access(ds.fsh + DEV_OFFSET, AccessType.STORE, 77, shadow=ds.s.shadow)   # a hit
    assert not page.test(PG.dirty)
    drv.invalidate_page(ds.p, ds.fsh)
    assert page.test(PG.dirty)


# ---------------------------------------------------------------------------------------------
# Random mixes: every VM operation next to the device, many seeds.

def _random_mix(seed: int, steps: int = 8, quirks=None, config=None, svadu: bool = True,
                dev_entries: int = 8):
    ds = DevSys(seed, nframes=36, quirks=quirks, config=config, svadu=svadu,
                dev_entries=dev_entries)
    s, p = ds.s, ds.p
    rng = random.Random(seed)
    gate = s.arch.new_lock("test gate")
    ds.spawn_device(40 + 15 * steps, gate=gate)
    s.spawn("kswapd", kswapd(ds, rounds=steps))

    def ops():
        for _ in range(steps):
            regs = [r for r in s.shadow.regions(p)]
            if not regs:
                break
            start, end, prot, shared = rng.choice(regs)
            npages = (end - start) // PAGE_SIZE
            op = rng.choice(["mprotect", "munmap", "mremap", "fork", "migrate", "madvise",
                             "msync", "mmap"])
            if op == "mprotect":
                s.mprotect(p, start, PAGE_SIZE, PROT_READ if prot & PROT_WRITE else RW)
            elif op == "munmap" and len(regs) > 1:
                with gate:                      # a later mmap may reuse the hole
                    s.munmap(p, start, PAGE_SIZE * rng.randint(1, npages))
            elif op == "mremap" and not shared:          # a file mapping would pass EOF
                s.mremap(p, start, npages * PAGE_SIZE, (npages + 1) * PAGE_SIZE, 1)
            elif op == "fork" and len(s.processes) == 1:   # one workload per core
                c = s.fork(p)
                s.random_workload(0, c, 10, store_ratio=0.3)
            elif op == "migrate":
                pages = [s.kernel.pages[e.ppn] for e in ds.drv.device_entries()]
                if pages:
                    s.migrate(rng.choice(pages))
            elif op == "madvise" and not shared:
                with gate:                      # zeroes the device's words
                    s.madvise_dontneed(p, start, PAGE_SIZE)
            elif op == "msync" and shared:
                s.msync(p, start, end - start, check_backing=False)   # writers run
            elif op == "mmap":
                with gate:
                    s.mmap(p, 0, 2 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
            for _ in range(rng.randrange(1, 30)):
                s.arch.yield_point("ops think")

    s.spawn("ops", ops)
    ds.run()
    ds.check_device()
    return ds


@pytest.mark.parametrize("dev_entries", [8, 2])
@pytest.mark.parametrize("seed", range(8))
def test_random_vm_operations_next_to_the_device(seed, dev_entries):
    """dev_entries=2: the device TLB evicts all the time (the driver's sptes outlive
    entries; invalidations of evicted entries are harmless)."""
    ds = _random_mix(seed, dev_entries=dev_entries)
    assert ds.drv.stats["accesses"] > 0 and ds.drv.count == 0
    _verdicts_pass(ds)


@pytest.mark.slow
@pytest.mark.parametrize("svadu", [True, False], ids=["Svadu", "Svade"])
@pytest.mark.parametrize("seed", range(8, 108))
def test_random_vm_operations_next_to_the_device_stress(seed, svadu):
    ds = _random_mix(seed, steps=16, svadu=svadu)
    _verdicts_pass(ds)


@pytest.mark.parametrize("seed", range(4))
def test_unregister_while_the_device_works(seed):
    """mmu_notifier_unregister runs release (the device stops, every entry of the ASID is
    dropped); on return no callback runs any more and later faults answer -EFAULT."""
    ds = DevSys(seed, nframes=30)
    ds.touch_all()
    s = ds.s
    ds.spawn_device(80)
    s.spawn("kswapd", kswapd(ds, rounds=4))

    def unregister():
        for _ in range(seed * 5):
            s.arch.yield_point("later")
        ds.drv.unregister()

    s.spawn("unregister", unregister)
    ds.run()
    drv = ds.drv
    assert drv.stopped and not drv.registered and drv.stats["releases"] == 1, drv.stats
    assert drv.device_entries() == [] and drv.sptes == {}
    n = len(drv.events)
    s.munmap(ds.p, ds.anon, PAGE_SIZE)
    assert len(drv.events) == n, "a callback ran after unregister returned"
    assert drv.device_fault(ds.fsh, AccessType.LOAD) == -EFAULT
    _verdicts_pass(ds)
