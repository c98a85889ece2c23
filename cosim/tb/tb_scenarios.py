"""cocotb scenarios of issue 4 on the RTL: the engine (pyrmap) runs as host threads against
``hdl.top.Top`` while CPU workloads run through the RTL TLBs and walkers, every checker on.

One cocotb test, :func:`test_scenario`, runs the scenario named by ``COSIM_SCENARIO`` with the
knobs of :func:`cosim.tb.tb_cosim.scenario_params` and writes the same JSON report as
``cosim.tb.tb_cosim`` (the CLI and the tests read it).  The scenarios (their parameters and
the quirk table live in :mod:`cosim.scenarios`):

``writeback``
    Shared file pages written by every core while a writeback thread keeps syncing them
    (msync -> page_mkclean); the backing store must hold every write at the end.
``migrate_fork``
    Anonymous pages shared across a fork tree (the shape of the kernel's
    ``tools/testing/selftests/mm/rmap.c``: a parent, children, grandchildren), read and
    copied-on-write by the cores while a migration thread moves the shared pages.
``mprotect``, ``munmap``, ``mremap``
    The layout of the very mm the cores are using changes under them: write-protect while
    they write, unmap while they read, move while they write.  An access that loses the race
    gets SIGSEGV (counted, not an error); one that completes must be legal (checker (a)).
``nonlinear``
    A shared anonymous (shmem) object remapped nonlinearly with remap_file_pages while kswapd
    reclaims (try_to_unmap_cluster) under memory pressure.
``svade``
    The writeback and reclaim shapes on a Svade MMU (``svadu=False``): the walkers never set
    A/D, the engine's fault handler does.

and the quirk races (one page, swept over start offsets; one fresh kernel per iteration):

``lockless_race``
    writeback's page_mkclean against a clear-then-set rewrite of the PTE under the PTE lock
    (Linux 479db0bf408e: ``page_check_address`` without the lock).
``zap_race``
    MADV_DONTNEED's zap against writeback and a CPU that keeps writing through its TLB
    (Linux 1cf35d47712d: the zap flushed after dropping the PTE lock).
``release_race``
    exit's ``mmu_notifier_release`` against reclaim of a page the device TLB maps
    (Linux 3ad3d901bbcf: the notifier unlinked before ``->release``).
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb

from cosim.tb.tb_cosim import (SCENARIOS as _BASE_SCENARIOS, CosimViolation, Progress,
                               _RaceRun, bench_config, report, scenario_params, start_bench,
                               start_system)
from pyrmap.checkers import InvariantViolation
from pyrmap.pte import PAGE_SIZE
from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pyrmap.workload import CpuWorkload, WorkloadError, random_accesses

SEED = int(os.environ.get("COSIM_SEED", "1"))
RW = PROT_READ | PROT_WRITE


# --- helpers -------------------------------------------------------------------------------

async def _system(dut, seed: int, p: dict):
    """Start the bench and a CosimSystem on it.

    The engine's fault handler sets A/D itself when ``arch.svadu`` is False; CosimArch
    takes it from the configuration the RTL was built with, and this checks they agree
    (a Svade RTL under an engine that believes in hardware A/D faults forever)."""
    s = await start_system(dut, seed, nframes=p["nframes"], quirks=p["quirks"] or None,
                           command=p["command"])
    want = bool(bench_config().get("svadu", True))
    if bool(getattr(s.arch, "svadu", True)) != want:
        raise RuntimeError(f"CosimArch.svadu is {s.arch.svadu!r} but the RTL was built with "
                           f"svadu={want!r}")
    return s


class RacingWorkload(CpuWorkload):
    """A CPU workload on an mm whose layout another thread changes under it.

    An access that loses the race against munmap / mprotect / mremap faults, and the fault
    handler says SIGSEGV: the access is dropped and counted in ``stats["segv"]``, as a
    program with a SIGSEGV handler that skips the access would.  A SIGSEGV at an address
    the shadow still maps with the access's permission is an engine bug and stays an error,
    as does anything else (a wrong value, an access fault, a fault that never resolves)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.stats["segv"] = 0

    def access(self, acc):
        from pyrmap.pte import AccessType
        try:
            return super().access(acc)
        except WorkloadError as exc:
            if type(exc.__cause__).__name__ != "SegmentationFault":
                raise
            need = PROT_WRITE if acc.op == AccessType.STORE else PROT_READ
            if self.checkers is not None and any(
                    lo <= acc.vaddr < hi and prot & need
                    for lo, hi, prot, _ in self.checkers.shadow.regions(self.mm)):
                raise WorkloadError(f"{self.name}: SIGSEGV on {acc.op.name} at "
                                    f"0x{acc.vaddr:x}, which the program still maps with "
                                    f"that permission") from exc
            self.stats["segv"] += 1
            return None


def _racing(s, core: int, mm, count: int, rng: random.Random, store_ratio: float,
            lo: int = 0, hi: int = 1 << 64) -> RacingWorkload:
    """Queue a random racing workload on ``core`` in ``mm``'s regions within [lo, hi)."""
    from pyrmap.scenario import _offset

    def regions():
        return [r for r in s.shadow.regions(mm) if r[0] >= lo and r[1] <= hi]
    src = _offset(random_accesses(rng, regions, count, store_ratio=store_ratio, words=2),
                  s.agent_offset(mm, core))
    wl = RacingWorkload(s.kernel, core, mm, src, checkers=s.checkers,
                        value_base=s._value_base(core))
    s.workloads.append(wl)
    s.spawn(s._name(wl.name), wl.run, mm=mm)
    return wl


def _workloads(s, procs, p, rng, phase: int, store_ratio: float):
    for core in range(s.arch.ncores):
        mm = procs[(phase + core) % len(procs)]
        s.random_workload(core, mm, p["accesses"], store_ratio=store_ratio,
                          rng=random.Random(rng.randrange(1 << 30)))


def _sleep(s, lo: int, hi: int) -> None:
    s.arch.env.wait_cycles(s.arch.env.rng.randint(lo, hi))


def _kswapd(s, rounds: int = 6, force: int = 0):
    """kswapd's loop: balance to the watermarks, or with ``force`` reclaim that many pages
    every round whatever is free (direct reclaim's pressure)."""
    from pyrmap.vmscan import balance

    def body():
        for _ in range(rounds):
            if force:
                s.reclaim(force)
            else:
                balance(s.kernel, 8, 14)
            _sleep(s, 50, 150)
    return body


def _segv(s) -> int:
    return sum(getattr(w, "stats", {}).get("segv", 0) for w in s.workloads)


def _spawn_pressure(s, rng) -> None:
    """Queue aging (A cleared: the next access faults on Svade), kswapd, and migration of
    anonymous pages (remove_migration_pte maps the new page writable but clean: the next
    store needs D, which on Svade is the engine's job)."""
    from pyrmap.mm_types import PageAnon
    s.spawn("kswapd", _kswapd(s, 3, force=3))

    def aging():
        for _ in range(3):
            _sleep(s, 60, 200)
            s.age(16)

    def migration():
        for _ in range(3):
            _sleep(s, 40, 200)
            pages = [pg for pg in s.mapped_user_pages() if PageAnon(pg)]
            if pages:
                s.migrate(rng.choice(pages))
    s.spawn("aging", aging)
    s.spawn("migration", migration)


async def _migrate_then_store(s, mm, start: int, npages: int) -> int:
    """Quiescent: store to each of ``npages`` anonymous pages at ``start`` (present, dirty),
    migrate every mapped anonymous page (their PTEs come back writable and clean), store
    again (on Svade: one D fault per migrated page).  Returns the pages migrated."""
    from pyrmap.mm_types import PageAnon

    def stores(name):
        s.workload(0, mm, [("store", start + i * PAGE_SIZE + 8) for i in range(npages)])
        s.spawn(name, s.workloads[-1].run, mm=mm)

    def migrate_all():
        pages = [pg for pg in s.mapped_user_pages() if PageAnon(pg)]
        return sum(s.migrate(pg) == 0 for pg in pages)

    stores("store before migration")
    await s.run_async()
    moved = await s.call("migrate", migrate_all)
    stores("store after migration")
    await s.run_async()
    return moved


# --- scenarios -----------------------------------------------------------------------------

async def writeback_scenario(dut, seed: int, p: dict, progress, out: dict, *,
                             pressure: bool = False):
    """Shared file pages written by every core while writeback keeps cleaning them.

    Two processes map one file shared (the second at an offset, so pages are mapped twice
    at different addresses); the cores store to it; a writeback thread runs msync
    (``page_mkclean`` of every dirty page, then ``writepage``) several times per phase.  On
    return of every ``page_mkclean`` no TLB may still hold a writable or dirty entry the PTE
    lacks (checker (a)); a write that lands after it must fault and dirty the page again, so
    the final msync's backing store holds every write (checker (c)).

    With ``pressure`` (the svade scenario), aging, kswapd and migration threads run next to
    them, and at the end the anonymous pages are migrated and stored to again."""
    s = out["system"] = await _system(dut, seed, p)
    rng = random.Random(seed)
    npages = 6

    def setup():
        f = s.create_file("shared.bin", npages)
        a = s.new_process()
        b = s.new_process()
        fa = s.mmap(a, 0, npages * PAGE_SIZE, RW, MAP_SHARED, file=f)
        fb = s.mmap(b, 0, 4 * PAGE_SIZE, RW, MAP_SHARED, file=f, pgoff=2)
        anon = s.mmap(a, 0, 3 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        return f, a, b, fa, fb, anon

    s.checkers.step("setup")
    f, a, b, fa, fb, anon = await s.call("setup", setup)
    maps = [(a, fa, npages * PAGE_SIZE), (b, fb, 4 * PAGE_SIZE)]
    progress(f"seed {seed}: a file of {npages} pages mapped shared by 2 processes, "
             f"{s.arch.ncores} cores writing, writeback syncing"
             f"{', aging, kswapd and migration' if pressure else ''}; svadu={s.arch.svadu}")
    for phase in range(p["phases"]):
        s.checkers.step(f"phase {phase}")
        _workloads(s, [a, b], p, rng, phase, 0.7)

        def writeback(phase=phase):
            for i in range(3):
                mm, addr, length = maps[(phase + i) % len(maps)]
                s.msync(mm, addr, length, check_backing=False)
                _sleep(s, 20, 80)
        s.spawn("writeback", writeback)
        if pressure:
            _spawn_pressure(s, rng)
        await s.run_async()
        k = s.kernel
        progress(f"phase {phase + 1}/{p['phases']}: cycle {s.arch.cycle()}, cleaned "
                 f"{k.stats['rmap_ptes_cleaned']}, written {k.stats['pages_written']}, "
                 f"accesses {s.shadow.loads + s.shadow.stores}")

    if pressure:
        s.checkers.step("migrate the anonymous pages")
        out.setdefault("extra", {})["migrated_quiescent"] = \
            await _migrate_then_store(s, a, anon, 3)

    def finish():
        for mm, addr, length in maps:
            s.msync(mm, addr, length)       # cores are idle: the file must hold every write
        for mm in (a, b):
            s.exit(mm)
    s.checkers.step("final msync and exit")
    await s.call("finish", finish)
    s.checkers.check_all()
    return s


async def migrate_fork_scenario(dut, seed: int, p: dict, progress, out: dict):
    """Migration of pages mapped across a fork tree (selftests/mm/rmap.c's shape).

    A parent writes an anonymous region, a shared anonymous (shmem) region and a shared
    file region, and forks two children; each child forks a grandchild, so every page is
    mapped by five processes (the anonymous ones through one anon_vma, the others through
    their i_mmap).  The cores read (and now and then copy-on-write or write) in all five
    while a migration thread moves the pages with the most mappings, each ``try_to_unmap``
    leaving migration entries in all of them; a CPU that faults on one waits for the
    migration to end."""
    from pyrmap.mm_types import PageAnon, page_mapcount
    s = out["system"] = await _system(dut, seed, p)
    rng = random.Random(seed)
    npages = 4

    def setup():
        f = s.create_file("tree.bin", 2)
        parent = s.new_process()
        anon = s.mmap(parent, 0, npages * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        shm = s.mmap(parent, 0, 2 * PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
        fsh = s.mmap(parent, 0, 2 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        return parent, [(anon, npages), (shm, 2), (fsh, 2)]

    s.checkers.step("setup")
    parent, regions = await s.call("setup", setup)
    s.workload(0, parent, [("store", start + i * PAGE_SIZE + 8 * w)
                           for start, n in regions for i in range(n) for w in range(4)])
    s.spawn("populate", s.workloads[-1].run, mm=parent)
    await s.run_async()

    def fork_tree():
        c1, c2 = s.fork(parent), s.fork(parent)
        return [parent, c1, c2, s.fork(c1), s.fork(c2)]

    s.checkers.step("fork tree")
    procs = await s.call("fork", fork_tree)
    extra = out.setdefault("extra", {"processes": len(procs), "migrated_mapcounts": [],
                                     "migrated_kinds": []})
    progress(f"seed {seed}: {npages} anonymous, 2 shmem and 2 file pages mapped by a fork "
             f"tree of {len(procs)} processes; {s.arch.ncores} cores reading, migration "
             f"moving")

    def kind(pg):
        if PageAnon(pg):
            return "anon"
        return "file" if pg.mapping in s.files else "shmem"

    for phase in range(p["phases"]):
        s.checkers.step(f"phase {phase}")
        _workloads(s, procs, p, rng, phase, 0.15)

        def migration():
            # Each kind in turn, its page with the most mappings (shared mappings are not
            # copied at fork: the children fault those pages in as they read them).
            for i in range(6):
                k = ("anon", "shmem", "file")[(i + phase) % 3]
                pages = [pg for pg in s.mapped_user_pages() if kind(pg) == k]
                if pages:
                    best = max(page_mapcount(pg) for pg in pages)
                    pg = rng.choice([pg for pg in pages if page_mapcount(pg) == best])
                    if s.migrate(pg) == 0:
                        extra["migrated_mapcounts"].append(best)
                        extra["migrated_kinds"].append(k)
                _sleep(s, 10, 60)
        s.spawn("migration", migration)
        await s.run_async()
        progress(f"phase {phase + 1}/{p['phases']}: cycle {s.arch.cycle()}, migrated "
                 f"{s.kernel.stats['migrate_success']}, accesses "
                 f"{s.shadow.loads + s.shadow.stores}")
    s.checkers.step("exit")
    await s.call("exit", lambda: [s.exit(mm) for mm in list(procs)])
    s.checkers.check_all()
    return s


async def _layout_race(dut, seed: int, p: dict, progress, out: dict, *, what: str,
                       store_ratio: float, change, post=None):
    """Common shape of mprotect / munmap / mremap while the cores use the same mm.

    Each phase maps a fresh anonymous and a fresh shared file region in one process, lets
    every core use them (the first accesses fault them in), and after a random delay runs
    ``change(s, mm, region, length)`` in a thread while the cores go on; then, the cores
    idle, ``post(s, mm, region, length)`` checks what must hold after the change."""
    s = out["system"] = await _system(dut, seed, p)
    rng = random.Random(seed)
    npages = 4

    def setup():
        # 12 pages: a 4-page mapping at pgoff <= 3 grown by mremap by 2 pages stays
        # inside the file (an access beyond its end would be SIGBUS, a program bug).
        f = s.create_file("data.bin", 12)
        mm = s.new_process()
        return f, mm

    s.checkers.step("setup")
    f, mm = await s.call("setup", setup)
    extra = s.extra = out.setdefault("extra", {"changes": [], "faulted_after": 0})
    progress(f"seed {seed}: {what} while {s.arch.ncores} cores use the same mm")
    for phase in range(p["phases"]):
        s.checkers.step(f"phase {phase}")

        def maps():
            anon = s.mmap(mm, 0, npages * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
            fsh = s.mmap(mm, 0, npages * PAGE_SIZE, RW, MAP_SHARED, file=f, pgoff=phase % 4)
            return anon, fsh
        regions = await s.call("mmap", maps)
        for core in range(s.arch.ncores):
            _racing(s, core, mm, p["accesses"], random.Random(rng.randrange(1 << 30)),
                    store_ratio)
        target = regions[phase % 2]
        delay = rng.randrange(20, 40 * p["accesses"])

        def changer(target=target, delay=delay):
            s.arch.env.wait_cycles(delay)
            got = change(s, mm, target, npages * PAGE_SIZE)
            extra["changes"].append([target, got, s.arch.cycle()])
        s.spawn(what.split()[0], changer)
        await s.run_async()
        if post is not None:
            await s.call("post", post, s, mm, target, npages * PAGE_SIZE)

        def cleanup():
            for r in s.shadow.regions(mm):
                s.munmap(mm, r[0], r[1] - r[0])
        await s.call("munmap", cleanup)
        progress(f"phase {phase + 1}/{p['phases']}: cycle {s.arch.cycle()}, accesses "
                 f"{s.shadow.loads + s.shadow.stores}, lost the race (SIGSEGV) {_segv(s)}")

    def finish():
        from pyrmap.filemap import do_writepages
        s.exit(mm)
        do_writepages(f)
        # Every write to the file, racing or not, reached its backing store.
        s.shadow.check_backing(f, range(f.npages))
    s.checkers.step("exit and writeback")
    await s.call("exit", finish)
    s.checkers.check_all()
    return s


def _mprotect(s, mm, start, length):
    s.mprotect(mm, start, length, PROT_READ)
    return start


def _mprotect_post(s, mm, start, length):
    """After mprotect(PROT_READ) returned, a store anywhere in the range faults on every
    core (the cores' TLBs may still hold the region's entries)."""
    from pyrmap.pte import AccessType, FaultKind
    for core in range(s.arch.ncores):
        for va in range(start, start + length, PAGE_SIZE):
            r = s.arch.cpu_access(core, va + 8 * (8 + core), AccessType.STORE, user=True,
                                  data=0xBAD0_0000 | core)
            if r.fault != FaultKind.NONE:
                s.extra["faulted_after"] += 1
            else:
                s.checkers.report("tlb", f"core {core}: a store to 0x{va:x} completed after "
                                         f"mprotect(PROT_READ) of it returned")


def _munmap(s, mm, start, length):
    s.munmap(mm, start + PAGE_SIZE, length - PAGE_SIZE)
    return start


def _mremap(s, mm, start, length):
    # Grow by two pages with MREMAP_MAYMOVE: it moves when the next region is in the way.
    return s.mremap(mm, start, length, length + 2 * PAGE_SIZE, 1)


async def mprotect_scenario(dut, seed, p, progress, out):
    """mprotect(PROT_READ) of a region while the cores write to it."""
    return await _layout_race(dut, seed, p, progress, out, what="mprotect to read-only",
                              store_ratio=0.8, change=_mprotect, post=_mprotect_post)


async def munmap_scenario(dut, seed, p, progress, out):
    """munmap of most of a region while the cores read it."""
    return await _layout_race(dut, seed, p, progress, out, what="munmap while reading",
                              store_ratio=0.1, change=_munmap)


async def mremap_scenario(dut, seed, p, progress, out):
    """mremap (growing, so the region moves) while the cores write to it."""
    return await _layout_race(dut, seed, p, progress, out, what="mremap while writing",
                              store_ratio=0.7, change=_mremap)


async def nonlinear_scenario(dut, seed: int, p: dict, progress, out: dict):
    """remap_file_pages of a shared anonymous object under reclaim.

    Two processes map one shmem object of 8 pages; one of them keeps permuting its view with
    remap_file_pages (its vma becomes VM_NONLINEAR, its PTEs file PTEs when unmapped) while
    the cores use both views and kswapd reclaims with few frames, so try_to_unmap walks the
    nonlinear list (try_to_unmap_cluster) and swaps the object's pages."""
    s = out["system"] = await _system(dut, seed, p)
    rng = random.Random(seed)
    npages = 8

    def setup():
        a = s.new_process()
        shm = s.mmap(a, 0, npages * PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
        b = s.fork(a)
        priv = s.mmap(b, 0, 4 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        return a, b, shm, priv

    s.checkers.step("setup")
    a, b, shm, priv = await s.call("setup", setup)
    progress(f"seed {seed}: a shmem object of {npages} pages shared by 2 processes, one "
             f"view remapped nonlinearly; kswapd under {p['nframes']} frames")
    for phase in range(p["phases"]):
        s.checkers.step(f"phase {phase}")
        _workloads(s, [a, b], p, rng, phase, 0.5)

        def remapper():
            for _ in range(2):
                n = rng.randrange(1, 4)
                start = shm + rng.randrange(npages - n + 1) * PAGE_SIZE
                s.remap_file_pages(a, start, n * PAGE_SIZE, rng.randrange(npages - n + 1))
                _sleep(s, 20, 100)
        s.spawn("remap_file_pages", remapper, mm=a)
        s.spawn("kswapd", _kswapd(s, 4, force=4))
        await s.run_async()
        k = s.kernel
        progress(f"phase {phase + 1}/{p['phases']}: cycle {s.arch.cycle()}, free frames "
                 f"{k.frames.nr_free}, swapped out {k.stats['pswpout']}, swapped in "
                 f"{k.stats['pswpin']}, accesses {s.shadow.loads + s.shadow.stores}")
    s.checkers.step("exit")
    await s.call("exit", lambda: [s.exit(mm) for mm in (a, b)])
    s.checkers.check_all()
    return s


async def svade_scenario(dut, seed: int, p: dict, progress, out: dict):
    """Writeback, aging, reclaim and migration on a Svade MMU (build with ``svadu=False``):
    an access to a PTE whose A aging cleared, and a store to a clean writable PTE (left by
    migration), fault, and the engine's fault handler sets A and D by cmpxchg and flushes;
    aging and page_mkclean must still see every reference and write."""
    if bench_config().get("svadu", True):
        raise ValueError("The svade scenario needs an RTL built with svadu=False")
    return await writeback_scenario(dut, seed, p, progress, out, pressure=True)


# --- quirk races (one page, swept over timings) --------------------------------------------

VA = 0x4000_0000


class _Rig:
    """One iteration of a race: a fresh kernel with the quirks, the checkers, one mm and
    one shared file page mapped writable at :data:`VA` (on the bench's arch and memory)."""

    def __init__(self, arch, seed: int, p: dict, it: int, pte_bits: int):
        from pyrmap.checkers import Checkers
        from pyrmap.kernel import Kernel, Quirks
        from pyrmap.mm_types import (PG, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ,
                                     VM_SHARED, VM_WRITE, AddressSpace, MmStruct, Vma)
        from pyrmap.pagetable import pgd_alloc, pte_alloc
        from pyrmap.pte import PAGE_SHARED, pfn_pte
        from pyrmap.rmap import page_add_file_rmap
        arch.mem.words[:] = 0
        self.arch = arch
        self.kernel = k = Kernel(arch, Quirks(**{q: True for q in p["quirks"]}))
        arch.kernel = k
        self.chk = chk = Checkers(k, seed=seed, command=p["command"]).install()
        chk.step(f"iteration {it}")
        arch.access_checker = chk.tlb
        if getattr(arch, "device", None) is not None:
            arch.device.checker = chk.tlb
        arch.flush_tlb_all()
        self.file = f = AddressSpace(k, "f", 1)
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
        self.mm = mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
        k.mms.append(mm)
        self.vma = Vma(mm, VA, VA + PAGE_SIZE, flags, 0, f)
        mm.mmap.append(self.vma)
        f.i_mmap.insert(0, 0, self.vma)
        self.page = page = k.alloc_page()
        page.mapping, page.index = f, 0
        page.set(PG.uptodate)
        f.page_tree[0] = page
        k.get_page(page)
        self.ptep = pte_alloc(mm, VA)
        arch.set_pte_at(mm, VA, self.ptep, pfn_pte(page.pfn, PAGE_SHARED | pte_bits))
        page_add_file_rmap(page)
        mm.file_rss += 1
        chk.shadow.register_file(f)
        chk.shadow.on_mmap(mm, VA, PAGE_SIZE, 3, True, f, 0)
        arch.switch_mm(0, mm)
        self.values = 0

    def store(self, core: int = 0, word: int = 0) -> bool:
        """One CPU store of a fresh value; False when it faults (the rig has no fault
        handler: a fault means the translation is gone, and nothing was stored)."""
        from pyrmap.pte import AccessType, FaultKind
        self.values += 1
        value = 0x5EED_0000 + self.values
        r = self.arch.cpu_access(core, VA + 8 * word, AccessType.STORE, data=value)
        if r.fault != FaultKind.NONE:
            return False
        self.chk.shadow.store(self.mm, VA + 8 * word, value)
        return True

    def msync(self) -> None:
        """Fault a last store in, write the file back; the backing store must hold it all."""
        from pyrmap.filemap import do_writepages
        from pyrmap.workload import CpuWorkload
        CpuWorkload(self.kernel, 0, self.mm, [("store", VA + 8)], checkers=self.chk,
                    value_base=0x7777_0000).run()
        do_writepages(self.file)
        self.chk.shadow.check_backing(self.file, [0])


def _lockless_race(rig: _Rig, delay: int):
    """479db0bf408e: a clear-then-set rewrite of the live PTE under its lock, against
    writeback's page_mkclean.  With ``page_check_address_lockless`` page_mkclean peeks at the
    PTE without the lock, sees it none in the window, and skips it: the page is written back
    and marked clean while core0 still holds a writable, dirty TLB entry."""
    from pyrmap.mm_types import PG
    from pyrmap.pagemap import lock_page
    env = rig.arch.env
    assert rig.store(), "the first store faulted"
    rig.page.set(PG.dirty)

    def rewriter():
        env.wait_cycles(max(-delay, 0))
        with rig.mm.page_table_lock:
            old = rig.arch.ptep_get_and_clear(rig.mm, VA, rig.ptep)
            env.wait_cycles(12)
            rig.arch.set_pte_at(rig.mm, VA, rig.ptep, old)

    def writeback():
        from pyrmap.filemap import write_one_page
        env.wait_cycles(max(delay, 0))
        lock_page(rig.page)
        write_one_page(rig.page)
        # page_mkclean returned: no TLB may still write the page unseen.
        rig.chk.tlb.after_page(rig.page, "wrprotect", "writeback (page_mkclean)")

    return [("rewriter", rewriter), ("writeback", writeback)], rig.msync


def _zap_race(rig: _Rig, delay: int):
    """1cf35d47712d: MADV_DONTNEED's zap against writeback while core0 keeps writing through
    its TLB entry.  Writeback starts first and is inside page_mkclean's rmap walk when the
    zap (``delay`` + 16 cycles later) clears the dirty PTE under the PTE lock.  Fixed, the
    zap flushes before dropping the lock, so page_mkclean finds no PTE and no TLB entry.
    With ``zap_flush_after_pte_unlock`` page_mkclean gets the lock between the unlock and the
    flush: it finds no PTE, the page is cleaned and written back, and core0's next store
    lands through the still-valid entry, dirty nowhere.  (Writeback starting after the
    zap's page_remove_rmap is the deeper race Linux fixed only in 5df397dec7c4; the sweep
    stays clear of it.)"""
    from pyrmap.mm_types import PG
    from pyrmap.pagemap import lock_page
    env = rig.arch.env
    assert rig.store(), "the first store faulted"
    rig.page.set(PG.dirty)
    lead = delay + 16

    def cpu():
        for _ in range(40):
            if not rig.store(word=2):
                break                   # the translation is gone: nothing more to write
            env.wait_cycles(2)

    def zap():
        from pyrmap.memory import zap_page_range
        env.wait_cycles(lead)
        rig.mm.mmap_sem.down_read()
        try:
            zap_page_range(rig.vma, VA, PAGE_SIZE)
        finally:
            rig.mm.mmap_sem.up_read()

    def writeback():
        from pyrmap.filemap import write_one_page
        lock_page(rig.page)
        write_one_page(rig.page)

    def after():
        if not rig.page.test(PG.dirty):
            rig.chk.shadow.check_backing(rig.file, [0])
    return [("cpu0", cpu), ("writeback", writeback), ("zap", zap)], after


def _release_race(rig: _Rig, delay: int):
    """3ad3d901bbcf: exit's mmu_notifier_release against reclaim of a page the device TLB
    maps.  With ``notifier_release_unlink_first`` the notifier is unlinked before its
    ``->release`` ran: reclaim's try_to_unmap calls no invalidate, frees the frame, and the
    device TLB still reaches it (checker (b))."""
    from pyrmap.pagemap import lock_page, unlock_page
    env = rig.arch.env
    k, page = rig.kernel, rig.page
    sec = rig.chk.add_secondary(rig.mm)
    if not sec.fault(VA):
        raise RuntimeError("the device could not map the page")

    def exiting():
        from pyrmap.mmu_notifier import mmu_notifier_release
        env.wait_cycles(max(-delay, 0))
        mmu_notifier_release(rig.mm)

    def reclaim():
        from pyrmap.rmap import SWAP_SUCCESS, try_to_unmap
        from pyrmap.vmscan import remove_mapping
        env.wait_cycles(max(delay, 0))
        k.get_page(page)
        lock_page(page)
        if try_to_unmap(page, 0) == SWAP_SUCCESS:
            remove_mapping(page)
        unlock_page(page)
        k.put_page(page)

    return [("exit", exiting), ("reclaim", reclaim)], None


# name -> (race, PTE bits of the page at the start, sweep width in cycles)
RACES = {
    "lockless_race": (_lockless_race, "AD", 32),
    "zap_race": (_zap_race, "AD", 32),
    "release_race": (_release_race, "", 32),
}


async def _race_scenario(dut, seed: int, p: dict, progress, out: dict, *, race: str):
    """Sweep one race over thread start offsets: iteration ``it`` starts the second thread
    ``it % width - width // 2`` cycles after the first (the seed shifts the sweep), each
    iteration on a fresh kernel; stops at the first violation."""
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import _PAGE_A, _PAGE_D
    fn, bits, width = RACES[race]
    pte_bits = (_PAGE_A if "A" in bits else 0) | (_PAGE_D if "D" in bits else 0)
    mem = PhysMem(max(p["nframes"], 16))
    env, arch, memory = await start_bench(dut, mem, seed, yield_cycles=(0, 3))
    run = out["system"] = _RaceRun(arch, env, memory)
    shift = random.Random(seed).randrange(width)
    progress(f"seed {seed}: up to {p['steps']} iterations of {race}, quirks "
             f"{','.join(p['quirks']) or 'none'}")
    for it in range(p["steps"]):
        delay = (it + shift) % width - width // 2
        state = {}

        def setup():
            rig = state["rig"] = _Rig(arch, seed, p, it, pte_bits)
            state["threads"], state["after"] = fn(rig, delay)

        if run.checkers is not None:
            run.checkers.uninstall()
        arch.history_from_seq = len(memory.log)
        where = f"iteration {it}, start offset {delay} cycles"
        try:
            await env.run("setup", setup)
            rig = state["rig"]
            run.kernel, run.checkers, run.shadow = rig.kernel, rig.chk, rig.chk.shadow
            run.iterations = it + 1
            threads = [env.spawn(name, body) for name, body in state["threads"]]
            for t in threads:
                await t.join()
            if state["after"] is not None:
                await env.run("after", state["after"])
            rig.chk.check_all()
        except InvariantViolation as exc:
            hist = "\n".join(f"    {h}" for h in arch.pte_history(state["rig"].ptep))
            raise CosimViolation(f"at cycle {arch.cycle()} ({where}):\n{exc}\n  PTE history "
                                 f"of 0x{VA:x} (oldest first):\n{hist}")
        if it % 8 == 7:
            progress(f"iteration {it + 1}/{p['steps']}: cycle {arch.cycle()}, no violation")
    return run


def _race(name):
    async def scenario(dut, seed, p, progress, out):
        return await _race_scenario(dut, seed, p, progress, out, race=name)
    scenario.__name__ = f"{name}_scenario"
    scenario.__doc__ = RACES[name][0].__doc__
    return scenario


SCENARIOS = {
    "writeback": writeback_scenario,
    "migrate_fork": migrate_fork_scenario,
    "mprotect": mprotect_scenario,
    "munmap": munmap_scenario,
    "mremap": mremap_scenario,
    "nonlinear": nonlinear_scenario,
    "svade": svade_scenario,
    **{name: _race(name) for name in RACES},
    # tb_cosim's dirty-race (store whose walker CASes D vs try_to_unmap), run from here too
    # so that every quirk of the table runs from one test module.
    "dirty_race": _BASE_SCENARIOS["dirty_race"],
}


@cocotb.test()
async def test_scenario(dut):
    """The scenario named by COSIM_SCENARIO; writes its report to COSIM_REPORT."""
    p = scenario_params()
    if p["scenario"] not in SCENARIOS:
        raise ValueError(f"Unknown scenario {p['scenario']!r}; known: {', '.join(SCENARIOS)}")
    progress = Progress()
    t0 = time.monotonic()
    out: dict = {}
    error = None
    try:
        await SCENARIOS[p["scenario"]](dut, SEED, p, progress, out)
    except (CosimViolation, InvariantViolation) as exc:
        error = str(exc)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if "system" not in out or out["system"].checkers is None:
            raise
    s = out["system"]
    rep = report(s, SEED, p, time.monotonic() - t0, error)
    rep["segv"] = _segv(s) if hasattr(s, "workloads") else 0
    rep["extra"] = out.get("extra", {})
    rep["kernel_stats"] = {k: v for k, v in dict(getattr(s.kernel, "stats", {})).items()
                           if isinstance(v, int) and v}
    path = os.environ.get("COSIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(rep, fh, indent=2, default=str)
    progress("violation:\n" + error if error else "passed")
    if error:
        raise CosimViolation(error)
