"""Scenarios of the mm around rmap on the RTL: the engine runs as host threads against
``hdl.top.Top`` while CPU workloads run through the RTL TLBs and walkers, every checker on.

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
"""

from __future__ import annotations

import random

from cosim.scenarios import scenario
from cosim.system import system_for, top_config
from pyrmap.pte import PAGE_SIZE
from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pyrmap.workload import CpuWorkload, WorkloadError, random_accesses

RW = PROT_READ | PROT_WRITE


# --- helpers -------------------------------------------------------------------------------

async def _system(dut, seed: int, p: dict):
    """Start the bench and a CosimSystem on it.

    The engine's fault handler sets A/D itself when ``arch.svadu`` is False; CosimArch
    takes it from the configuration the RTL was built with, and this checks they agree
    (a Svade RTL under an engine that believes in hardware A/D faults forever)."""
    s = await system_for(dut, seed, p)
    want = bool(top_config().get("svadu", True))
    if s.arch.svadu != want:
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

@scenario("writeback", """shared file pages written by every core while writeback keeps
          cleaning them (msync -> page_mkclean)""",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 30})
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


@scenario("migrate_fork", """anonymous, shmem and file pages mapped across a fork tree
          (selftests/mm/rmap.c) migrated while the cores read and write them""",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 25, "COSIM_NFRAMES": 48})
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


@scenario("mprotect", "mprotect(PROT_READ) while the cores write the region",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 25})
async def mprotect_scenario(dut, seed, p, progress, out):
    """mprotect(PROT_READ) of a region while the cores write to it."""
    return await _layout_race(dut, seed, p, progress, out, what="mprotect to read-only",
                              store_ratio=0.8, change=_mprotect, post=_mprotect_post)


@scenario("munmap", "munmap while the cores read the region",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 25})
async def munmap_scenario(dut, seed, p, progress, out):
    """munmap of most of a region while the cores read it."""
    return await _layout_race(dut, seed, p, progress, out, what="munmap while reading",
                              store_ratio=0.1, change=_munmap)


@scenario("mremap", "mremap (moving) while the cores write the region",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 25})
async def mremap_scenario(dut, seed, p, progress, out):
    """mremap (growing, so the region moves) while the cores write to it."""
    return await _layout_race(dut, seed, p, progress, out, what="mremap while writing",
                              store_ratio=0.7, change=_mremap)


@scenario("nonlinear", "remap_file_pages of a shmem object under reclaim",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 25, "COSIM_NFRAMES": 24})
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


@scenario("svade", "writeback and reclaim on a Svade MMU: the engine sets A/D on faults",
          env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 25, "COSIM_NFRAMES": 28},
          hdl={"svadu": False})
async def svade_scenario(dut, seed: int, p: dict, progress, out: dict):
    """Writeback, aging, reclaim and migration on a Svade MMU (build with ``svadu=False``):
    an access to a PTE whose A aging cleared, and a store to a clean writable PTE (left by
    migration), fault, and the engine's fault handler sets A and D by cmpxchg and flushes;
    aging and page_mkclean must still see every reference and write."""
    if top_config().get("svadu", True):
        raise ValueError("The svade scenario needs an RTL built with svadu=False")
    return await writeback_scenario(dut, seed, p, progress, out, pressure=True)
