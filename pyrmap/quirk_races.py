"""The races that expose the scheduler-level quirks, staged on SoftArch.

Each race builds a small machine, switches one quirk on or off, runs the interleaving that the
historical bug needs and lets the checkers (:mod:`pyrmap.checkers`) judge.  With the quirk on,
some seed makes a checker raise :class:`~pyrmap.checkers.InvariantViolation`; with it off, the
very same seed passes.  The quirk tests (``tests/test_quirks.py``, ``tests/test_devdriver.py``)
search their seeds with these functions and assert on the violation; ``make bugzoo`` runs them
as the scheduler rows of its table.

Every race has the signature ``race(seed, on, *, observe=None)`` and returns the machine it ran
(:class:`Rig` or :class:`DevSys`).  ``observe`` is called with that machine as soon as it is
built, before anything runs, so a caller can read its scheduler's decision count
(``machine.sched.steps``) also when the race raises.

Kernel races (:class:`Rig`: one mm, one shared file page, two CPUs)

* :func:`lockless_race` -- 479db0bf408e (``page_check_address_lockless``).
* :func:`zap_race` -- 1cf35d47712d (``zap_flush_after_pte_unlock``).
* :func:`zap_rmap_race` -- 5df397dec7c4 (``zap_rmap_before_flush``).
* :func:`release_race` -- 3ad3d901bbcf (``notifier_release_unlink_first``).
* :func:`split_race` -- split_vma's vm_pgoff (``split_vma_keeps_pgoff``).

Device-driver races (:class:`DevSys`: one process and its device behind a
:class:`~pyrmap.devdriver.DeviceMmuDriver`)

* :func:`seq_race` -- e930bffe95e1 (``no_seq_retry``).
* :func:`defer_migrate` -- the device twin of CVE-2018-18281 (``defer_inval_to_range_end``).
* :func:`count_race` -- e930bffe95e1's ``mmu_notifier_count`` (``no_count_check``).
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from .checkers import Checkers
from .devdriver import DevDriverConfig, DeviceMmuDriver, register_device, run_device
from .kernel import Kernel
from .mm_types import (PG, AddressSpace, MmStruct, Vma, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE,
                       VM_READ, VM_SHARED, VM_WRITE)
from .pagemap import lock_page
from .pagetable import pgd_alloc, pte_alloc
from .physmem import PhysMem
from .profiles import DEFAULT_PROFILE, kernel_quirks
from .pte import PAGE_SHARED, PAGE_SIZE, AccessType, FaultKind, _PAGE_A, _PAGE_D, pfn_pte
from .scenario import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE, System,
                       _offset)
from .sched import Scheduler
from .softarch import SoftArch
from .workload import random_accesses

__all__ = ["VA", "DEV_OFFSET", "RaceSetupError", "Rig", "DevSys", "RaceDriver", "lockless_race", "zap_race",
           "zap_rmap_race", "release_race", "split_race", "seq_race", "defer_migrate",
           "count_race"]

#: The virtual address of the :class:`Rig`'s one file page.
VA = 0x40000000
#: The device's own words of every page (``System.agent_offset(mm, 2)``).
DEV_OFFSET = 32

_RW = PROT_READ | PROT_WRITE

#: A race's ``observe``: called with the machine once it is built, before anything runs.
Observe = Optional[Callable[[object], None]]


class RaceSetupError(RuntimeError):
    """A race could not stage its starting state (not a verdict on the quirk)."""


def _reproduce(race: str, seed: int, on: bool) -> str:
    return f"python -c 'from pyrmap.quirk_races import {race}; {race}({seed}, {on})'"


# --- the kernel races ----------------------------------------------------------------------------

class Rig:
    """A kernel on SoftArch with a scheduler, checkers, one mm and one shared file page.

    The page is mapped at :data:`VA` in a shared, writable file VMA, with a pte whose A/D bits
    are ``pte_bits``; the checkers are installed and know the mapping.

    Parameters
    ----------
    seed : int
        Seeds the scheduler, the MMU and the checkers' reports.
    quirk : str
        A field of :class:`pyrmap.kernel.Quirks`, set to ``on``.
    on : bool
    profile : str
        The kernel profile under the quirk (:mod:`pyrmap.profiles`); default ``fixed``.
    pte_bits : int
        The A/D bits of the initial pte.
    raise_on_violation : bool
        Checkers raise at once (default) or only collect.
    command : str
        Printed in violation reports.

    Members
    -------
    sched, arch, kernel, chk :
        The scheduler, the SoftArch, the kernel and its checkers.
    mm, file, vma, page, ptep :
        The one process, the file, its VMA, the page and its pte.
    """

    def __init__(self, seed: int, quirk: str, on: bool, pte_bits: int = _PAGE_A | _PAGE_D,
                 raise_on_violation: bool = True, command: str = "",
                 profile: str = DEFAULT_PROFILE):
        self.seed = seed
        self.sched = Scheduler(seed)
        self.arch = SoftArch(PhysMem(32), 2, seed=seed, sched=self.sched, history=True)
        quirks = kernel_quirks(profile, [quirk] if on else [])
        self.kernel = Kernel(self.arch, quirks)
        self.chk = Checkers(self.kernel, seed=seed, command=command,
                            raise_on_violation=raise_on_violation).install()
        k = self.kernel
        self.mm = mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
        k.mms.append(mm)
        self.arch.switch_mm(0, mm)
        self.file = f = AddressSpace(k, "f", 1)
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
        self.vma = Vma(mm, VA, VA + PAGE_SIZE, flags, 0, f)
        mm.mmap.append(self.vma)
        f.i_mmap.insert(0, 0, self.vma)
        self.page = page = k.alloc_page()            # the page cache's reference
        page.mapping, page.index = f, 0
        page.set(PG.uptodate)
        f.page_tree[0] = page
        k.get_page(page)                             # the pte's reference
        self.ptep = pte_alloc(mm, VA)
        self.arch.set_pte_at(mm, VA, self.ptep, pfn_pte(page.pfn, PAGE_SHARED | pte_bits))
        from .rmap import page_add_file_rmap
        page_add_file_rmap(page)
        mm.file_rss += 1
        self.chk.shadow.register_file(f)
        self.chk.shadow.on_mmap(mm, VA, PAGE_SIZE, 3, True, f, 0)

    def store(self, core: int, value: int) -> bool:
        """A CPU store; False (nothing stored) when it faults: the page is gone, and the
        rig has no fault handler to bring it back."""
        res = self.arch.cpu_access(core, VA, AccessType.STORE, data=value)
        if res.fault != FaultKind.NONE:
            if res.fault != FaultKind.PAGE:
                raise RaceSetupError(f"Store to {VA:#x} on core {core} faulted with "
                                     f"{res.fault!r}, not a page fault")
            return False
        self.chk.shadow.store(self.mm, VA, value)
        return True

    def first_store(self, core: int, value: int) -> None:
        """The store that caches a writable, dirty translation before the race starts."""
        if not self.store(core, value):
            raise RaceSetupError(f"seed {self.seed}: the first store to {VA:#x} faulted")

    def run(self):
        self.sched.run()


def lockless_race(seed: int, on: bool, *, raise_on_violation: bool = True,
                  observe: Observe = None, profile: str = DEFAULT_PROFILE) -> Rig:
    """479db0bf408e: ``page_check_address`` tests the pte without the pte lock.

    Stages: core 0 holds a writable, dirty TLB entry of a dirty file page; a ``rewriter``
    thread rewrites the live pte as "clear; set" under the pte lock while a ``writeback``
    thread runs ``write_one_page`` (``clear_page_dirty_for_io`` -> ``page_mkclean``).  With the
    quirk on, ``page_mkclean`` peeks at the cleared pte without the lock, skips it, and the
    page is written back clean while the dirty, writable translation lives on.

    Caught by: the ``shadow`` checker ("writeback of clean" page with a live writable
    mapping).  With ``raise_on_violation`` false the violations are only collected, and a
    later store is lost at the next writeback ("lost write", also ``shadow``).  With the quirk
    off, a store after the writeback must fault (``page_mkclean`` write-protected the pte).
    """
    rig = Rig(seed, "page_check_address_lockless", on, raise_on_violation=raise_on_violation,
              command=_reproduce("lockless_race", seed, on), profile=profile)
    if observe is not None:
        observe(rig)
    mm, arch, page = rig.mm, rig.arch, rig.page
    rig.first_store(0, 0x1111)          # core0 caches a writable, dirty translation
    page.set(PG.dirty)                  # the write fault dirtied the page

    def rewriter():
        # A clear-then-set rewrite of a live pte under the pte lock (powerpc's set_pte_at,
        # any update done as "clear; set").
        with mm.page_table_lock:
            old = arch.ptep_get_and_clear(mm, VA, rig.ptep)
            arch.set_pte_at(mm, VA, rig.ptep, old)

    def writeback():
        from .filemap import write_one_page
        lock_page(page)
        write_one_page(page)            # clear_page_dirty_for_io -> page_mkclean, writepage

    rig.sched.spawn("rewriter", rewriter)
    rig.sched.spawn("writeback", writeback)
    rig.run()
    rig.chk.check_all()
    if raise_on_violation:
        # page_mkclean made the pte clean and read-only everywhere: the next write faults.
        res = arch.translate(0, VA, AccessType.STORE)
        if res.fault != FaultKind.PAGE:
            raise AssertionError(f"seed {seed}: a store after writeback did not fault "
                                 f"({res!r})")
    return rig


def release_race(seed: int, on: bool, *, observe: Observe = None,
                 profile: str = DEFAULT_PROFILE) -> Rig:
    """3ad3d901bbcf: ``mmu_notifier_release`` unlinks a notifier before calling ``->release``.

    Stages: a secondary MMU has faulted the page in; an ``exit`` thread runs
    ``mmu_notifier_release`` while a ``reclaim`` thread unmaps the page, removes it from the
    page cache and drops the last reference.  With the quirk on, reclaim's notifiers miss the
    already-unlinked secondary, which still maps the frame when it is freed.

    Caught by: the ``frame`` checker ("freed while" mapped by a device TLB / secondary MMU).
    """
    # Not young, so try_to_unmap does not refuse the page.
    rig = Rig(seed, "notifier_release_unlink_first", on, pte_bits=0,
              command=_reproduce("release_race", seed, on), profile=profile)
    if observe is not None:
        observe(rig)
    mm, page, k = rig.mm, rig.page, rig.kernel
    sec = rig.chk.add_secondary(mm)
    if not sec.fault(VA):
        raise RaceSetupError(f"seed {seed}: the secondary MMU could not fault {VA:#x} in")

    def exiting():
        from .mmu_notifier import mmu_notifier_release
        mmu_notifier_release(mm)            # exit_mmap's first step

    def reclaim():
        from .pagemap import unlock_page
        from .rmap import SWAP_SUCCESS, try_to_unmap
        from .vmscan import remove_mapping
        k.get_page(page)
        lock_page(page)
        if try_to_unmap(page, 0) == SWAP_SUCCESS:
            remove_mapping(page)
        unlock_page(page)
        k.put_page(page)                    # the last reference: the frame is freed

    rig.sched.spawn("exit", exiting)
    rig.sched.spawn("reclaim", reclaim)
    rig.run()
    return rig


def zap_race(seed: int, on: bool, *, observe: Observe = None,
             profile: str = DEFAULT_PROFILE) -> Rig:
    """1cf35d47712d: ``zap_pte_range`` flushes the TLB only after dropping the pte lock.

    Stages: CPU ``A`` holds a dirty, writable TLB entry and keeps storing through it (after a
    seed-dependent spin); ``B`` zaps the page (``MADV_DONTNEED``); ``C`` writes the page
    back.  With the quirk on, ``C``'s ``page_mkclean`` runs between the zap's pte clear and its
    flush, so ``A``'s store lands in a page already cleaned (or written back and dropped).

    Caught by: the ``shadow`` checker ("writeback of clean" page, or "lost write" in the
    backing store when nothing dirty is left).
    """
    return _zap(seed, on, "zap_flush_after_pte_unlock", "zap_race", observe, profile)


def zap_rmap_race(seed: int, on: bool, *, observe: Observe = None,
                  profile: str = DEFAULT_PROFILE) -> Rig:
    """5df397dec7c4: ``zap_pte_range`` removes the rmap before its TLB flush.

    The stage of :func:`zap_race`.  With the quirk on, ``C``'s ``page_mkclean`` runs after the
    zap's ``page_remove_rmap`` and before its flush (under the pte lock): it sees an unmapped
    page and returns without waiting for the lock, the page is cleaned and written back, and
    ``A``'s store lands through the still-valid entry.  Fixed, the rmap stays until the
    flush, so page_mkclean waits for the pte lock and finds no pte *and* no TLB entry.

    Caught by: the ``tlb`` checker (page_mkclean returned while a TLB still holds a writable
    entry) or ``shadow`` ("writeback of clean" page, "lost write").
    """
    return _zap(seed, on, "zap_rmap_before_flush", "zap_rmap_race", observe, profile)


def _zap(seed: int, on: bool, quirk: str, name: str, observe: Observe, profile: str) -> Rig:
    rig = Rig(seed, quirk, on, command=_reproduce(name, seed, on), profile=profile)
    if observe is not None:
        observe(rig)
    mm, arch, page = rig.mm, rig.arch, rig.page
    rig.first_store(0, 0x3333)          # CPU A holds a dirty, writable TLB entry
    page.set(PG.dirty)

    def cpu_a():
        # A keeps writing through its TLB entry (no fault while the entry is live).
        for _ in range(seed % 8):
            arch.yield_point("spin")
        rig.store(0, 0x4444)

    def cpu_b():
        from .memory import zap_page_range
        mm.mmap_sem.down_read()                            # MADV_DONTNEED
        try:
            zap_page_range(rig.vma, VA, PAGE_SIZE)
        finally:
            mm.mmap_sem.up_read()

    def writeback_c():
        from .filemap import write_one_page
        lock_page(page)
        write_one_page(page)

    rig.sched.spawn("A", cpu_a)
    rig.sched.spawn("B", cpu_b)
    rig.sched.spawn("C", writeback_c)
    rig.run()
    if not page.test(PG.dirty):
        # Nothing left to write back: the file must hold every write.
        rig.chk.shadow.check_backing(rig.file, [0])
    rig.chk.check_all()
    return rig


def split_race(seed: int, on: bool, *, observe: Observe = None) -> System:
    """split_vma must advance the upper half's ``vm_pgoff`` by the pages below the split.

    Stages (sequential, no scheduler decisions): a process stores to every page of a
    four-page anonymous mapping, then mprotects its upper half read-only, which splits the
    VMA.  With the quirk on (``split_vma_keeps_pgoff``) the upper half keeps the old
    ``vm_pgoff``: the linear index rmap computes for its pages no longer lands on their
    PTEs, so try_to_unmap and page_mkclean would miss them.

    Caught by: the ``rmap`` checker (a present PTE "not reachable" from its page's
    anon_vma) at the quiescent check after the mprotect.

    Returns
    -------
    System
        The machine (its ``sched`` made no decision).
    """
    s = System(seed=seed, nframes=24, quirks=["split_vma_keeps_pgoff"] if on else None,
               command=_reproduce("split_race", seed, on))
    if observe is not None:
        observe(s)
    p = s.new_process()
    anon = s.mmap(p, 0, 4 * PAGE_SIZE, _RW, MAP_PRIVATE | MAP_ANONYMOUS)
    s.workload(0, p, [("store", anon + i * PAGE_SIZE) for i in range(4)]).run()
    s.checkers.check_all()
    s.mprotect(p, anon + 2 * PAGE_SIZE, 2 * PAGE_SIZE, PROT_READ)
    s.checkers.check_all()
    return s


# --- the device-driver races ---------------------------------------------------------------------

class DevSys:
    """A :class:`~pyrmap.scenario.System` with one process (anonymous and shared-file memory)
    and its device.

    Parameters
    ----------
    seed : int
    nframes : int
        Physical memory in frames.
    config : DevDriverConfig, optional
        The driver's configuration (its quirks).
    quirks : iterable of str, optional
        Kernel quirks to switch on.
    pages : int
        Pages of each of the two mappings.
    register : bool
        Register the device driver on the process now (default).
    svadu : bool
        Hardware A/D updates (default); False: Svade.
    dev_entries : int
        Device TLB entries.
    command : str
        Printed in violation reports.

    Members
    -------
    s : System
    sched : Scheduler
        The system's scheduler.
    p : MmStruct
        The process.
    file, anon, fsh :
        The shared file, the anonymous mapping and the shared file mapping.
    drv : DeviceMmuDriver or None
        The registered driver.
    """

    def __init__(self, seed: int, *, nframes: int = 40, config=None, quirks=None,
                 pages: int = 6, register: bool = True, svadu: bool = True,
                 dev_entries: int = 8, command: str = ""):
        self.seed = seed
        def own_arch(mem, ncores, seed_, sched):
            return SoftArch(mem, ncores, seed=seed_, sched=sched, svadu=svadu,
                            dev_entries=dev_entries, history=True)
        arch = own_arch if not svadu or dev_entries != 8 else None
        self.s = s = System(seed=seed, nframes=nframes, quirks=quirks, arch=arch,
                            command=command + ("" if svadu else " (Svade)"))
        self.sched = s.sched
        self.rng = random.Random(seed)
        self.p = s.new_process()
        self.file = s.create_file("f", pages)
        self.anon = s.mmap(self.p, 0, pages * PAGE_SIZE, _RW, MAP_PRIVATE | MAP_ANONYMOUS)
        self.fsh = s.mmap(self.p, 0, pages * PAGE_SIZE, _RW, MAP_SHARED, file=self.file)
        self.pages = pages
        self.drv = None
        if register:
            self.drv = register_device(self.p, checkers=s.checkers, config=config)

    def accesses(self, count: int, store_ratio: float = 0.4, mm=None):
        """``count`` seeded device accesses to the device's words of ``mm``'s regions."""
        mm = mm or self.p
        rng = random.Random(self.rng.randrange(1 << 30))
        return _offset(random_accesses(rng, lambda: self.s.shadow.regions(mm), count,
                                       store_ratio=store_ratio, words=2), DEV_OFFSET)

    def spawn_device(self, count: int, store_ratio: float = 0.4, *, shadow: bool = True,
                     gate=None):
        """A device thread.  ``shadow=False``: loads are not compared (a scenario whose VM
        thread changes the device's own words, e.g. madvise, without a ``gate``).  ``gate``:
        a lock held across each access, which a VM thread holds across an operation and its
        shadow update, so the shadow never sees the device between the two."""
        src = self.accesses(count, store_ratio)
        sh = self.s.shadow if shadow else None
        if sh is None and store_ratio > 0:
            self.s.shadow.writes_untracked()
        if gate is None:
            self.s.spawn("device", lambda: run_device(self.drv, src, shadow=sh))
            return

        def gated():
            for acc in src:
                with gate:
                    run_device(self.drv, [acc], shadow=sh)
        self.s.spawn("device", gated)

    def touch_all(self):
        """The device stores to every page (faulting each in), before the scenario."""
        for base in (self.anon, self.fsh):
            for i in range(self.pages):
                self.drv.access(base + i * PAGE_SIZE + DEV_OFFSET, AccessType.STORE,
                                0x1000 + i, shadow=self.s.shadow)

    def run(self):
        self.s.run()

    def check_device(self):
        """Quiescent: every device entry of the mm backed by its current PTE (checker (a)).

        Raises
        ------
        AssertionError
            A device entry is not backed by its PTE.
        """
        chk = self.s.checkers
        for entry in self.drv.device_entries():
            problem, ptep, val = chk.tlb._problem("device TLB", entry, self.p)
            if problem is not None:
                raise AssertionError(f"seed {self.seed}: device holds {entry}: {problem}")


class RaceDriver(DeviceMmuDriver):
    """A device driver that runs ``race()`` once, between resolving a translation and
    filling it (settable :attr:`race`)."""

    race = None

    def _resolved(self, vaddr, op, pfn):
        fn, self.race = self.race, None
        if fn is not None:
            fn()
        super()._resolved(vaddr, op, pfn)


def _stored_page_and_race_driver(race: str, seed: int, on: bool, observe: Observe,
                                 config: DevDriverConfig) -> tuple[DevSys, RaceDriver]:
    """A :class:`DevSys` whose CPU stored to its anonymous page, and a registered
    :class:`RaceDriver` with ``config`` (no race set yet)."""
    ds = DevSys(seed, register=False, command=_reproduce(race, seed, on))
    if observe is not None:
        observe(ds)
    s, p = ds.s, ds.p
    s.workload(0, p, [("store", ds.anon)]).run()
    drv = RaceDriver(p, checkers=s.checkers, config=config)
    rc = drv.register()
    if rc != 0:
        raise RaceSetupError(f"seed {seed}: the device driver's register returned {rc}")
    s.checkers.secondaries.append(drv)
    return ds, drv


def seq_race(seed: int, on: bool, *, observe: Observe = None) -> tuple[DevSys, int]:
    """e930bffe95e1 (KVM's ``mmu_notifier_seq``): a device fault that does not retry when an
    invalidation ran between resolving the translation and filling it.

    Stages (sequential, no scheduler decisions): the CPU stores to an anonymous page; the
    device faults on it, and between resolving the pfn and filling the device TLB the page is
    unmapped and freed (``munmap``).  With the quirk on (``no_seq_retry``) the driver fills
    the stale pfn; with it off it sees the sequence count move, retries, and finds the mapping
    gone (``-EFAULT``).

    Caught by: the ``frame`` checker (a device entry to a frame "which is free") or the
    ``notifier`` checker (a fill "inside the open" invalidation range).

    Returns
    -------
    (DevSys, int)
        The machine and the device fault's return code.
    """
    ds, drv = _stored_page_and_race_driver("seq_race", seed, on, observe,
                                           DevDriverConfig(no_seq_retry=on))
    s, p = ds.s, ds.p
    drv.race = lambda: s.munmap(p, ds.anon, PAGE_SIZE)      # frees the page just resolved
    return ds, drv.device_fault(ds.anon, AccessType.LOAD)


def defer_migrate(seed: int, on: bool, *, observe: Observe = None) -> tuple[DevSys, int]:
    """The device twin of CVE-2018-18281: the driver defers its invalidation to
    ``invalidate_range_end``.

    Stages (sequential, no scheduler decisions): the device stores to every page; then the
    page of its first TLB entry is migrated.  With the quirk on
    (``defer_inval_to_range_end``), the old frame is freed while the device TLB still maps
    it; with it off, the device entry is gone before the frame is.

    Caught by: the ``frame`` checker (freed while a device TLB / secondary MMU maps it) or the
    ``tlb`` checker.

    Returns
    -------
    (DevSys, int)
        The machine and ``migrate``'s return code.
    """
    ds = DevSys(seed, config=DevDriverConfig(defer_inval_to_range_end=on),
                command=_reproduce("defer_migrate", seed, on))
    if observe is not None:
        observe(ds)
    ds.touch_all()
    entry = ds.drv.device_entries()[0]
    page = ds.s.kernel.pages[entry.ppn]
    rc = ds.s.migrate(page)
    return ds, rc


def count_race(seed: int, on: bool, *, observe: Observe = None) -> tuple[DevSys, bool]:
    """e930bffe95e1 (KVM's ``mmu_notifier_count``): a device fault must not fill while an
    invalidate_range_start window is open, although ``seq`` moves only at its end.

    Stages (sequential, no scheduler decisions): the CPU stores to an anonymous page; the
    device faults on it, and between resolving the pfn and filling the device TLB an
    operation opens its window on the page (``invalidate_range_start``, as mprotect,
    munmap's zap or migration do first).  With the quirk on (``no_count_check``) the driver
    fills inside the window; with it off it refuses the fill, and once the window closed the
    next attempt fills.

    Caught by: the ``notifier`` checker (a device fill "inside the open invalidate window"),
    from outside the driver: the arch's ``dev_fill`` event against the windows the checker's
    own notifier client saw open.

    Returns
    -------
    (DevSys, bool)
        The machine and whether the attempt inside the window filled.
    """
    from .mmu_notifier import mmu_notifier_invalidate_range_end, \
        mmu_notifier_invalidate_range_start
    ds, drv = _stored_page_and_race_driver("count_race", seed, on, observe,
                                           DevDriverConfig(no_count_check=on))
    s, p = ds.s, ds.p
    lo, hi = ds.anon, ds.anon + PAGE_SIZE
    drv.race = lambda: mmu_notifier_invalidate_range_start(p, lo, hi)
    filled = drv.fault(ds.anon)
    mmu_notifier_invalidate_range_end(p, lo, hi)
    if not filled and not drv.fault(ds.anon):
        raise AssertionError(f"seed {seed}: the device fault was refused with no window open")
    s.checkers.check_all()
    return ds, filled
