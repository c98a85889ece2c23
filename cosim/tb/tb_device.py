"""cocotb tests: the secondary MMU (DeviceMmu) kept coherent through mmu notifiers, on the RTL.

Each test builds the co-simulated system of :mod:`cosim.system` (Top, memory model, host
threads, CosimArch, every checker), a process with anonymous and shared-file memory, and its
device: a :class:`pyrmap.devdriver.DeviceMmuDriver` registered on the mm, whose device
operations go through the RTL (:class:`cosim.devarch.DevArch`), and a device workload on
``dev__req`` (:class:`cosim.device.DeviceRequester`).  The VM operation under test runs as host
threads next to the device; the checkers (a) (cycle-level, and after every invalidating
operation), (b), (c) and (d) run all the time.  Each test writes one line of figures to
``COSIM_REPORT`` (JSON lines) for tests/test_device_cosim.py.
"""

from __future__ import annotations

import json
import os
import random

import cocotb

from cosim.device import DeviceRequester
from cosim.devarch import DevArch
from pyrmap.checkers import InvariantViolation
from pyrmap.devdriver import EFAULT, EINTR, DevDriverConfig, DeviceMmuDriver
from pyrmap.pte import PAGE_SIZE, AccessType
from pyrmap.quirk_races import RaceDriver
from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE, _offset
from pyrmap.workload import random_accesses

from cosim.system import CosimViolation, start_system

SEED = int(os.environ.get("COSIM_SEED", "1"))

RW = PROT_READ | PROT_WRITE


class DevBench:
    """The bench of one test: the system, the process, its memory, the device."""

    @classmethod
    async def start(cls, dut, name: str, *, pages: int = 4, nframes: int = 32, config=None,
                    quirks=None, driver_cls=DeviceMmuDriver, register: bool = True):
        self = cls()
        self.name = name
        self.seed = SEED
        self.rng = random.Random(SEED)
        self.s = s = await start_system(
            dut, SEED, nframes=nframes, quirks=quirks,
            command=f"pytest tests/test_device_cosim.py  # cocotb test {name}, seed {SEED}")
        self.arch = s.arch
        self.env = s.env
        self.devarch = DevArch(s.arch)
        self.devarch.checker = s.checkers.tlb
        self.pages = pages
        self.offset = 16 * s.arch.ncores             # the device's own words of each page

        def setup():
            p = s.new_process()
            f = s.create_file("f", pages)
            anon = s.mmap(p, 0, pages * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
            fsh = s.mmap(p, 0, pages * PAGE_SIZE, RW, MAP_SHARED, file=f)
            drv = driver_cls(p, dev=self.devarch, config=config, checkers=s.checkers)
            if register:
                assert drv.register() == 0
                s.checkers.secondaries.append(drv)
            return p, f, anon, fsh, drv

        s.checkers.step(f"{name}: setup")
        self.p, self.file, self.anon, self.fsh, self.drv = await s.call("setup", setup)
        self.dev = DeviceRequester(self.devarch, self.drv, shadow=s.shadow)
        return self

    def accesses(self, count: int, store_ratio: float = 0.4):
        rng = random.Random(self.rng.randrange(1 << 30))
        return list(_offset(random_accesses(rng, lambda: self.s.shadow.regions(self.p), count,
                                            store_ratio=store_ratio, words=2), self.offset))

    async def touch_all(self):
        """The device stores to every page (each faults, is resolved and filled)."""
        for base in (self.anon, self.fsh):
            for i in range(self.pages):
                await self.dev.access(base + i * PAGE_SIZE + self.offset, AccessType.STORE,
                                      0x5000 + i)

    async def run(self, count: int, store_ratio: float = 0.4):
        """The device workload next to every queued host thread; then the quiescent checks
        and the device's own: every device entry backed by its current PTE."""
        await self.s.run_with_device(self.dev, self.accesses(count, store_ratio), self.p)

    def check(self):
        self.s.check_device_entries(self.drv, self.p)

    def kswapd(self, rounds: int = 6, nr: int = 4):
        s, env = self.s, self.env

        def body():
            for _ in range(rounds):
                s.reclaim(nr)
                env.wait_cycles(env.rng.randint(20, 80))
        return body

    def report(self, **extra):
        fig = self.dev.figures()
        fig.update(test=self.name, seed=self.seed, cycles=self.arch.cycle(),
                   kernel={k: self.s.kernel.stats.get(k, 0)
                           for k in ("vmscan_unmapped", "pswpout", "pswpin", "migrate_success",
                                     "pgfault")},
                   driver=dict(self.drv.stats), min_count=self.drv.min_count,
                   count=self.drv.count,
                   checkers=[list(v) for v in self.s.checkers.verdicts()],
                   record_checks=self.dev.stats["record_checks"], **extra)
        path = os.environ.get("COSIM_REPORT")
        if path:
            with open(path + ".device.jsonl", "a") as fh:
                fh.write(json.dumps(fig, default=str) + "\n")
        self.s.memory.stop()
        return fig


def _passed(b: DevBench) -> None:
    bad = [v for v in b.s.checkers.verdicts() if v[3] == "FAIL"]
    assert not bad, f"seed {b.seed}: {bad}"


# =============================================================================================
# Scenarios.

@cocotb.test()
async def test_dev_reclaim(dut):
    """Reclaim swaps and drops pages the device uses; the device faults them back."""
    b = await DevBench.start(dut, "reclaim", nframes=30)
    await b.touch_all()
    b.s.spawn("kswapd", b.kswapd())
    await b.run(60)
    st = b.drv.stats
    fig = b.report()
    assert fig["kernel"]["vmscan_unmapped"] > 0, fig
    assert st["invalidate_page"] > 0 and st["young_tests"] > 0, st
    assert st["fills"] > 2 * b.pages and b.dev.stats["misses"] > 2 * b.pages, (st, b.dev.stats)
    assert b.devarch.checks > 0 and b.dev.stats["record_checks"] > 0
    _passed(b)


@cocotb.test()
async def test_dev_with_cpus(dut):
    """The device next to both cores on the same process, with kswapd and migration: CPU
    shootdowns and device invalidations interleave at cycle level; every access of every
    agent is checked against the shadow."""
    b = await DevBench.start(dut, "with_cpus", nframes=32)
    await b.touch_all()
    s, p = b.s, b.p
    for core in range(b.arch.ncores):
        s.random_workload(core, p, 30, store_ratio=0.5,
                          rng=random.Random(b.rng.randrange(1 << 30)))
    s.spawn("kswapd", b.kswapd(rounds=4))

    def migrator():
        rng = random.Random(SEED + 1)
        for _ in range(3):
            b.env.wait_cycles(60)
            pages = s.mapped_user_pages()
            if pages:
                s.migrate(rng.choice(pages))

    s.spawn("migrate", migrator)
    await b.run(40)
    fig = b.report()
    assert fig["accesses"] >= 40 and s.shadow.loads + s.shadow.stores > 100, fig
    assert b.arch.figures()["flush_count"] > 0 and fig["dev_invals"] > 0, fig
    _passed(b)


@cocotb.test()
async def test_dev_munmap_mprotect_mremap(dut):
    """munmap, mprotect and mremap while the device accesses the range."""
    b = await DevBench.start(dut, "vm_ops")
    await b.touch_all()
    s, p = b.s, b.p

    def vm():
        s.mprotect(p, b.anon, 2 * PAGE_SIZE, PROT_READ)
        b.env.wait_cycles(30)
        s.mprotect(p, b.anon, 2 * PAGE_SIZE, RW)
        new = s.mremap(p, b.anon + 2 * PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE, 1)
        b.env.wait_cycles(30)
        s.munmap(p, b.fsh + PAGE_SIZE, 2 * PAGE_SIZE)
        s.munmap(p, new, PAGE_SIZE)

    s.spawn("vm", vm)
    await b.run(50)
    st = b.drv.stats
    b.report()
    assert st["range_start"] >= 4 and st["range_end"] == st["range_start"], st
    assert b.drv.count == 0 and b.drv.min_count == 0
    _passed(b)


@cocotb.test()
async def test_dev_fork_cow(dut):
    """fork write-protects the parent while the device maps it (the device keeps loading);
    the device's later stores to the parent copy on write, and the child still reads what
    the device wrote before the fork."""
    b = await DevBench.start(dut, "fork")
    await b.touch_all()
    s, p = b.s, b.p
    child = []
    words = [b.anon + i * PAGE_SIZE + b.offset for i in range(b.pages)]

    def forker():
        c = s.fork(p)
        child.append(c)
        s.workload(0, c, [("load", va) for va in words]).run()

    s.spawn("fork", forker)
    # Loads only while the fork runs: a device store between fork's window and the shadow's
    # copy of the parent would be in the shadow's child but not in the child's page.
    await b.run(40, store_ratio=0.0)
    fills = b.drv.stats["fills"]
    for i, va in enumerate(words):                       # copy on write in the parent
        await b.dev.access(va, AccessType.STORE, 0x6000 + i)
    c = child[0]
    s.spawn("child", s.workload(0, c, [("load", va, 0x5000 + i)
                                       for i, va in enumerate(words)]).run, mm=c)
    await s.run_async()
    for i, va in enumerate(words):
        out = await b.dev.access(va, AccessType.LOAD)
        assert out.value == 0x6000 + i, (hex(va), out)
    st = b.drv.stats
    b.report()
    assert st["range_start"] >= 1 and st["fills"] >= fills + b.pages, st
    assert s.kernel.stats["pgfault"] > 0
    _passed(b)


@cocotb.test()
async def test_dev_migration(dut):
    """Pages the device maps are migrated; the device follows them to their new frames."""
    b = await DevBench.start(dut, "migration")
    await b.touch_all()
    s = b.s
    moved = []

    def migrator():
        rng = random.Random(SEED)
        for _ in range(4):
            pages = [s.kernel.pages[e.ppn] for e in b.drv.device_entries()]
            if pages:
                moved.append(s.migrate(rng.choice(pages)))
            b.env.wait_cycles(40)

    s.spawn("migrate", migrator)
    await b.run(40)
    b.report(moved=moved)
    assert moved.count(0) >= 1, moved
    assert b.drv.stats["invalidate_page"] >= 1
    _passed(b)


@cocotb.test()
async def test_dev_exit_racing_reclaim(dut):
    """The process exits while the device is active and reclaim runs: release stops the
    device and drops every entry before any page is freed."""
    b = await DevBench.start(dut, "exit", nframes=30)
    await b.touch_all()
    s, p = b.s, b.p
    s.spawn("kswapd", b.kswapd(rounds=4))

    def exiter():
        b.env.wait_cycles(200)
        s.exit(p)

    s.spawn("exit", exiter)
    await b.run(200)
    b.report()
    assert b.drv.stopped and b.drv.stats["releases"] >= 1, b.drv.stats
    assert p.dead and b.drv.sptes == {}
    assert not any(e.asid == p.asid for e in b.arch.dev_entries()), b.arch.dev_entries()
    _passed(b)


@cocotb.test()
async def test_dev_register_races(dut):
    """mmu_notifier_register racing munmap, truncate and try_to_unmap: the driver's counter
    never goes negative and never sees an end without its start."""
    from pyrmap.filemap import vmtruncate
    b = await DevBench.start(dut, "register_race", nframes=30, register=False)
    s, p = b.s, b.p
    for base in (b.anon, b.fsh):
        s.workload(0, p, [("store", base + i * PAGE_SIZE) for i in range(b.pages)])
        s.spawn("touch", s.workloads[-1].run, mm=p)
    await s.run_async()
    drv = b.drv
    got = []

    def register():
        b.env.wait_cycles(10)
        got.append(drv.register())
        s.checkers.secondaries.append(drv)

    s.spawn("register", register)
    s.spawn("munmap", lambda: s.munmap(p, b.anon, 2 * PAGE_SIZE))
    s.spawn("truncate", lambda: vmtruncate(b.file, 3 * PAGE_SIZE))
    s.spawn("kswapd", b.kswapd(rounds=3))
    await s.run_async()
    await b.run(20)
    b.report()
    assert got == [0], got
    assert drv.min_count == 0 and drv.count == 0 and drv.stats["violations"] == 0, drv.stats
    depth = 0
    for kind, _, _ in drv.events:
        depth += {"range_start": 1, "range_end": -1}.get(kind, 0)
        assert depth >= 0, drv.events
    _passed(b)


@cocotb.test()
async def test_dev_register_eintr(dut):
    """Registration interrupted by a signal returns -EINTR and leaves everything as it was;
    the retry succeeds and the device works."""
    b = await DevBench.start(dut, "register_eintr", register=False)
    s, p, drv = b.s, b.p, b.drv
    seen = {}

    def body():
        before = (list(p.mmu_notifier_mm.list), p.mm_count, drv.seq, drv.count)
        b.env.current().signal_pending = True
        seen["rc"] = drv.register()
        b.env.current().signal_pending = False
        seen["same"] = before == (list(p.mmu_notifier_mm.list), p.mm_count, drv.seq, drv.count)
        seen["unlocked"] = not p.mmap_sem.is_locked() and not b.file.i_mmap_lock.is_locked()
        s.munmap(p, b.anon + 3 * PAGE_SIZE, PAGE_SIZE)       # not heard
        seen["events"] = list(drv.events)
        seen["rc2"] = drv.register()
        s.checkers.secondaries.append(drv)

    await s.call("register", body)
    await b.run(16)
    b.report()
    assert seen["rc"] == -EINTR and seen["same"] and seen["unlocked"], seen
    assert seen["events"] == [] and seen["rc2"] == 0, seen
    assert b.dev.stats["accesses"] > 0
    _passed(b)


# =============================================================================================
# Quirks: each caught by a checker with it on; the same run passes with it off.

async def _seq_race(dut, on: bool):
    b = await DevBench.start(dut, f"no_seq_retry_{'on' if on else 'off'}", driver_cls=RaceDriver,
                             config=DevDriverConfig(no_seq_retry=on))
    s, p = b.s, b.p
    s.workload(0, p, [("store", b.anon)])
    s.spawn("touch", s.workloads[-1].run, mm=p)
    await s.run_async()
    b.drv.race = lambda: s.munmap(p, b.anon, PAGE_SIZE)     # frees the page just resolved
    error = None
    rc = None
    try:
        rc = await s.call("devfault", b.drv.device_fault, b.anon, AccessType.LOAD)
    except CosimViolation as exc:
        error = str(exc)
    b.report(violation=error, rc=rc)
    return b, rc, error


@cocotb.test()
async def test_dev_quirk_no_seq_retry_on(dut):
    b, rc, error = await _seq_race(dut, True)
    assert error is not None, "the fill of a freed page went unnoticed"
    assert "which is free" in error or "inside the open" in error, error
    assert "at cycle" in error and f"seed={SEED}" in error, error


@cocotb.test()
async def test_dev_quirk_no_seq_retry_off(dut):
    b, rc, error = await _seq_race(dut, False)
    assert error is None, error
    assert rc == -EFAULT and b.drv.stats["fills_refused"] >= 1, (rc, b.drv.stats)
    b.check()
    _passed(b)


async def _count_race(dut, on: bool):
    """A device fault resolved before an operation opened its invalidate window on the page
    (invalidate_range_start, as mprotect, munmap's zap or migration do first) and filled
    while the window is open; ``seq`` moves only at its end."""
    from pyrmap.mmu_notifier import (mmu_notifier_invalidate_range_end,
                                     mmu_notifier_invalidate_range_start)
    b = await DevBench.start(dut, f"no_count_check_{'on' if on else 'off'}",
                             driver_cls=RaceDriver, config=DevDriverConfig(no_count_check=on))
    s, p = b.s, b.p
    s.workload(0, p, [("store", b.anon)])
    s.spawn("touch", s.workloads[-1].run, mm=p)
    await s.run_async()
    lo, hi = b.anon, b.anon + PAGE_SIZE
    b.drv.race = lambda: mmu_notifier_invalidate_range_start(p, lo, hi)
    error = None
    inside = after = None
    try:
        inside = await s.call("devfault", b.drv.fault, b.anon)
        await s.call("range_end", mmu_notifier_invalidate_range_end, p, lo, hi)
        after = await s.call("devfault", b.drv.fault, b.anon)
    except CosimViolation as exc:
        error = str(exc)
    b.report(violation=error, filled_inside=inside, filled_after=after)
    return b, inside, after, error


@cocotb.test()
async def test_dev_quirk_no_count_check_on(dut):
    b, inside, after, error = await _count_race(dut, True)
    assert error is not None, "a device fill inside an open invalidate window went unnoticed"
    assert "[notifier]" in error and "inside the open invalidate window" in error, error
    assert "at cycle" in error and f"seed={SEED}" in error, error


@cocotb.test()
async def test_dev_quirk_no_count_check_off(dut):
    b, inside, after, error = await _count_race(dut, False)
    assert error is None, error
    assert inside is False and after is True, (inside, after)
    assert b.drv.stats["fills_refused"] == 1 and b.s.checkers.notifier.checks > 0
    b.check()
    _passed(b)


async def _defer_migrate(dut, on: bool):
    b = await DevBench.start(dut, f"defer_{'on' if on else 'off'}",
                             config=DevDriverConfig(defer_inval_to_range_end=on))
    await b.touch_all()
    page = b.s.kernel.pages[b.drv.device_entries()[0].ppn]
    error = None
    try:
        rc = await b.s.call("migrate", b.s.migrate, page)
    except CosimViolation as exc:
        error, rc = str(exc), None
    if error is None:
        await b.run(16)
    b.report(violation=error, rc=rc)
    return b, rc, error


@cocotb.test()
async def test_dev_quirk_defer_inval_on(dut):
    b, rc, error = await _defer_migrate(dut, True)
    assert error is not None, "the deferred device invalidation went unnoticed"
    assert "device TLB" in error or "secondary MMU" in error, error


@cocotb.test()
async def test_dev_quirk_defer_inval_off(dut):
    b, rc, error = await _defer_migrate(dut, False)
    assert error is None and rc == 0, (rc, error)
    _passed(b)


class SlowReleaseDriver(DeviceMmuDriver):
    """``release`` takes a while before it reaches the device (a driver tearing down other
    state first): the window in which exit's unlinked notifier misses an invalidation."""

    def release(self, mm):
        self.kernel.arch.env.wait_cycles(200)
        super().release(mm)


async def _release_race(dut, on: bool):
    from pyrmap.mmu_notifier import mmu_notifier_release
    from pyrmap.pagemap import lock_page, unlock_page
    from pyrmap.rmap import SWAP_SUCCESS, try_to_unmap
    from pyrmap.vmscan import remove_mapping
    from pyrmap.filemap import write_one_page
    b = await DevBench.start(dut, f"release_unlink_first_{'on' if on else 'off'}",
                             driver_cls=SlowReleaseDriver,
                             quirks=["notifier_release_unlink_first"] if on else None)
    await b.touch_all()
    s, p, k = b.s, b.p, b.s.kernel
    page = k.pages[next(e.ppn for e in b.drv.device_entries()
                        if b.fsh <= e.vpn << 12 < b.fsh + b.pages * PAGE_SIZE)]

    def exiting():
        mmu_notifier_release(p)                 # exit_mmap's first step

    def reclaim():
        b.env.wait_cycles(40)                   # while release tears down
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
    error = None
    try:
        await s.run_async()
    except CosimViolation as exc:
        error = str(exc)
    b.report(violation=error)
    return b, error


@cocotb.test()
async def test_dev_quirk_release_unlink_first_on(dut):
    b, error = await _release_race(dut, True)
    assert error is not None, "the release/try_to_unmap race went unnoticed"
    assert "device TLB" in error or "secondary MMU" in error, error


@cocotb.test()
async def test_dev_quirk_release_unlink_first_off(dut):
    b, error = await _release_race(dut, False)
    assert error is None, error
    assert b.drv.stopped and b.drv.stats["invalidate_page"] >= 1, b.drv.stats
    _passed(b)


# =============================================================================================
# The device checks, each fed a bad input.

@cocotb.test()
async def test_dev_stale_access_is_caught(dut):
    """Checker (a) at cycle level for the device: fed an invalidation recorded as
    acknowledged that never reached the RTL, an access through the stale entry fires it;
    after a real invalidation the access misses.  A fault record that does not name the
    access is a DeviceError."""
    from cosim.accesscheck import Inval
    from cosim.device import DeviceError
    from pyrmap.pte import FaultKind
    b = await DevBench.start(dut, "stale_access")
    va = b.anon + b.offset
    await b.dev.access(va, AccessType.STORE, 0x77)
    p, arch, s = b.p, b.arch, b.s
    seen = {}

    def clear():
        from pyrmap.pagetable import pte_offset
        ptep = pte_offset(p, b.anon)
        arch.ptep_get_and_clear(p, b.anon, ptep)       # behind the notifiers' back

    await s.call("clear", clear)
    # Stale but legal: no device invalidation yet.
    fault, paddr, start = await b.devarch.access_async(va, AccessType.LOAD, p.asid)
    b.devarch.check_access(p.asid, p.pgd, va, start, paddr, op=AccessType.LOAD)
    seen["legal"] = fault
    b.devarch.inval_log.append(Inval(arch.cycle(), arch.cycle(), p.asid, b.anon,
                                     b.anon + PAGE_SIZE))
    await cocotb.triggers.ClockCycles(dut.clk, 2)
    fault, paddr, start = await b.devarch.access_async(va, AccessType.LOAD, p.asid)
    try:
        b.devarch.check_access(p.asid, p.pgd, va, start, paddr, op=AccessType.LOAD)
    except InvariantViolation as exc:
        seen["caught"] = str(exc)
    await s.call("inval", b.devarch.dev_inval, 3, b.anon, p.asid)
    fault, paddr, start = await b.devarch.access_async(va, AccessType.LOAD, p.asid)
    seen["after"] = fault
    try:
        await b.dev._take_record(va + PAGE_SIZE, AccessType.LOAD)
    except DeviceError as exc:
        seen["record"] = str(exc)
    b.report()
    assert seen["legal"] == FaultKind.NONE, seen
    assert "which no translation still legal at its start allows" in seen.get("caught", ""), seen
    assert "the PTE was only none" in seen["caught"], seen
    assert seen["after"] == FaultKind.MISS, seen
    assert "expected" in seen.get("record", ""), seen


# =============================================================================================
# The seq race without a directed hook: the seeded timing alone opens the window.

async def _seq_sweep(dut, on: bool, rounds: int = 10):
    """``rounds`` fresh processes, each with a device working on it while madvise(DONTNEED)
    and reclaim run next to it; stops at the first violation.  Returns (bench, round or
    None, violation or None)."""
    b = await DevBench.start(dut, f"seq_sweep_{'on' if on else 'off'}", nframes=40,
                             config=DevDriverConfig(no_seq_retry=on))
    s = b.s
    hit = error = None
    for r in range(rounds):
        if r:
            def fresh():
                p = s.new_process()
                anon = s.mmap(p, 0, b.pages * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
                drv = DeviceMmuDriver(p, dev=b.devarch, config=b.drv.config,
                                      checkers=s.checkers, name=f"dev{r}")
                assert drv.register() == 0
                s.checkers.secondaries.append(drv)
                return p, anon, drv
            b.p, b.anon, b.drv = await s.call("fresh", fresh)
            b.fsh = b.anon
            b.dev = DeviceRequester(b.devarch, b.drv)
        # madvise zeroes the very words the device uses, and the shadow learns it only when
        # madvise returns: the device's loads are not compared here (the other scenarios do).
        b.dev.shadow = None
        p, anon = b.p, b.anon

        def vm(p=p, anon=anon):
            for i in range(6):
                s.madvise_dontneed(p, anon + (i % b.pages) * PAGE_SIZE, PAGE_SIZE)
                b.env.wait_cycles(b.env.rng.randint(0, 12))

        s.spawn("vm", vm)
        s.spawn("kswapd", b.kswapd(rounds=2, nr=2))
        try:
            await b.run(30)
        except (CosimViolation, InvariantViolation) as exc:
            hit, error = r, str(exc)
            break
        s.checkers.step(f"round {r + 1}")
    b.report(violation=error, round=hit)
    return b, hit, error


@cocotb.test()
async def test_dev_quirk_no_seq_retry_sweep_on(dut):
    b, hit, error = await _seq_sweep(dut, True)
    assert error is not None, "no round hit the seq race with no_seq_retry on"
    assert "inside the open" in error or "which is free" in error or "device" in error, error


@cocotb.test()
async def test_dev_quirk_no_seq_retry_sweep_off(dut):
    b, hit, error = await _seq_sweep(dut, False)
    assert error is None, error
    assert sum(d.stats["fills_refused"] for d in b.s.checkers.secondaries) >= 1
    _passed(b)


@cocotb.test()
async def test_dev_register_unlocked_sees_unmatched_end(dut):
    """Bad input for the driver's counter check: registration without mmap_sem and
    mm_take_all_locks lets the driver join in the middle of a window (mprotect looping next
    to it); the check reports the end without its start."""
    from pyrmap import mmu_notifier as mn
    b = await DevBench.start(dut, "register_unlocked", register=False)
    s, p, drv = b.s, b.p, b.drv
    saved = mn.mm_take_all_locks, mn.mm_drop_all_locks
    mn.mm_take_all_locks, mn.mm_drop_all_locks = (lambda mm: 0), (lambda mm: None)
    error = None
    vm_done = False
    try:
        def vm():
            nonlocal vm_done
            for _ in range(24):
                s.mprotect(p, b.anon, PAGE_SIZE, PROT_READ)
                s.mprotect(p, b.anon, PAGE_SIZE, RW)
            vm_done = True

        def register():
            # Join, and if the first callback seen was a start (no race this time), leave
            # and join again a little later.
            for i in range(20):
                b.env.wait_cycles(b.env.rng.randint(1, 15))
                mn.__mmu_notifier_register(drv, p)
                while not drv.events and not vm_done:
                    b.env.wait_cycles(2)
                if drv.stats["violations"] or vm_done:
                    return
                mn.mmu_notifier_unregister(drv, p)
                drv.stopped = False                          # a fresh driver, as it were
                drv.events.clear()
                drv.count = 0
        s.spawn("vm", vm)
        s.spawn("register", register)
        try:
            await s.run_async(check=False)
        except CosimViolation as exc:
            error = str(exc)
    finally:
        mn.mm_take_all_locks, mn.mm_drop_all_locks = saved
    b.report(violation=error)
    assert error is not None and "without its start" in error, error
