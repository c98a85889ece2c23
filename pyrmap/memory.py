"""The fault handler, zap with an mmu_gather, and fork's page-table copy (mm/memory.c, 2008).

These are rmap's callers: every present PTE of a user page is created here (anonymous fault,
file fault, COW, swap-in) or in :mod:`pyrmap.mmap` (mremap moves it), and destroyed here (zap)
or by rmap itself (try_to_unmap).  The contracts that make rmap's guarantees hold:

* A PTE is installed, and its page's mapcount raised, under the pte lock
  (``mm.page_table_lock``); the page is reachable from ``page->mapping`` before the PTE is
  visible to a walker.
* **zap** (:func:`zap_pte_range`) clears PTEs with an atomic exchange, moves a dirty shared
  PTE's D into ``set_page_dirty``, drops the rmap, and defers both the TLB flush and the page
  free into an :class:`MmuGather`: :func:`tlb_finish_mmu` flushes *then* frees, so no frame is
  freed while a TLB may still reach it.  With ``kernel.quirks.zap_flush_after_pte_unlock`` off
  (the fix of 1cf35d47712d), a zap that cleared a dirty shared PTE flushes before dropping the
  pte lock; on, it flushes only in tlb_finish_mmu, after a yield point (the 2008 order).
  With ``kernel.quirks.zap_rmap_before_flush`` off (the fix of 5df397dec7c4), the rmap of such
  a dirty file page is removed only after that flush, still under the pte lock, so a
  concurrent page_mkclean either waits for the pte lock or finds the page unmapped *and* no
  TLB entry left; on, ``page_remove_rmap`` comes before the flush (the 2008 order).
* **do_wp_page** (COW) orders ``ptep_clear_flush_notify(old)`` → ``set_pte_at(new)`` →
  ``page_remove_rmap(old)``, and drops the old page only after all three.
* **fork** (:func:`copy_page_range`) write-protects every writable PTE of a COW mapping in
  the parent inside ``invalidate_range_start/end``; ``dup_mm`` flushes the parent's TLBs.

Every PTE store goes through ``kernel.arch``.  Counters go to ``kernel.stats``:
``pgfault``, ``pgmajfault``, ``fault_anon``, ``fault_file``, ``fault_file_write_shared``,
``fault_private_file_cow``, ``fault_cow``, ``fault_wp_reuse``, ``fault_wp_shared``,
``fault_swapin``, ``fault_migration_wait``, ``fault_nonlinear``, ``fault_svade_a``,
``fault_svade_d``, ``fault_spurious``, ``cow_copies``, ``zap_ptes``, ``zap_swap_entries``,
``tlb_gather_flushes``, ``pagetables_freed``, ``fork_ptes_copied``.  Events for checkers
(``arch.notify``): ``cow_copy`` (mm, address, old_pfn, new_pfn) at the instant a private copy
is taken, under the pte lock.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .mm_types import (PG, VM_EXEC, VM_MAYWRITE, VM_NONLINEAR, VM_READ, VM_SHARED,
                       VM_WRITE, AddressSpace, MmStruct, Page, PageAnon, Vma, page_mapcount,
                       page_mapped)
from .pagemap import lock_page, trylock_page, unlock_page
from .pagetable import pte_alloc, pte_lockptr, pte_offset, pte_range
from .physmem import OutOfMemory
from .pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X,
                  LEVEL_SHIFT, PAGE_SHIFT, PAGE_SIZE, PPN_MASK, PTE_SIZE, PTRS_PER_PTE,
                  AccessType, SWP_MIGRATION_READ, is_migration_entry, is_write_migration_entry,
                  pfn_pte, pgoff_to_pte, pte_dirty, pte_file, pte_is_swap, pte_leaf, pte_none,
                  pte_pfn, pte_present, pte_to_pgoff, pte_to_swp_entry, pte_write, pte_young,
                  swp_entry, swp_entry_to_pte)

__all__ = [
    "VM_FAULT_MINOR", "VM_FAULT_OOM", "VM_FAULT_SIGBUS", "VM_FAULT_MAJOR", "VM_FAULT_WRITE",
    "TASK_SIZE", "vm_get_page_prot", "vma_page_prot", "page_prot", "vma_wants_writenotify",
    "mapping_cap_account_dirty", "mk_pte", "maybe_mkwrite", "pte_modify",
    "vm_normal_page", "do_page_fault", "handle_mm_fault", "handle_pte_fault",
    "do_anonymous_page", "do_linear_fault", "do_nonlinear_fault", "__do_fault", "do_wp_page",
    "do_swap_page", "can_share_swap_page", "MmuGather", "tlb_gather_mmu", "tlb_remove_page",
    "tlb_flush_mmu", "tlb_flush_rmaps", "tlb_finish_mmu", "zap_pte_range", "unmap_vmas", "zap_page_range",
    "free_pgtables", "free_pgd_range", "copy_page_range", "copy_one_pte", "follow_pte",
    "make_pages_present", "lock_nested", "is_cow_mapping",
]

VM_FAULT_MINOR = 0
VM_FAULT_OOM = 0x0001
VM_FAULT_SIGBUS = 0x0002
VM_FAULT_MAJOR = 0x0004
VM_FAULT_WRITE = 0x0008
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS

#: The Sv39 user address range is [0, TASK_SIZE): the lower half of the 39-bit space.
TASK_SIZE = 1 << 38

#: Pages an mmu_gather batches before it flushes and frees on its own (FREE_PTE_NR).
MMU_GATHER_BATCH = 506

_PMD_SIZE = 1 << LEVEL_SHIFT[1]
_PUD_SIZE = 1 << LEVEL_SHIFT[2]
_PERM_BITS = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_X | _PAGE_U


# ---------------------------------------------------------------------------------------------
# Lazily imported collaborators (other modules of the engine).

def _rmap():
    from . import rmap
    return rmap


def _notify():
    from . import mmu_notifier
    return mmu_notifier


def _pgtable():
    from . import pgtable_generic
    return pgtable_generic


def _alloc_page(kernel) -> Page:
    """A zeroed frame, reclaiming when memory is short (raises OutOfMemory)."""
    try:
        from .vmscan import alloc_page_reclaim
    except ImportError:  # pragma: no cover - reclaim not built
        return kernel.alloc_page()
    return alloc_page_reclaim(kernel)


def _lru_add_active(page: Page) -> None:
    from .vmscan import lru_cache_add_active
    lru_cache_add_active(page)


def _set_page_dirty(page: Page) -> None:
    from .filemap import set_page_dirty
    set_page_dirty(page)


def _mark_page_accessed(page: Page) -> None:
    try:
        from .vmscan import mark_page_accessed
    except ImportError:  # pragma: no cover
        page.set(PG.referenced)
        return
    mark_page_accessed(page)


def _free_page_and_swap_cache(page: Page) -> None:
    """free_pages_and_swap_cache for one page: drop it from the swap cache if nothing maps it
    and its lock is free, then drop the reference the gather held."""
    kernel = page.kernel
    if page.test(PG.pagetable):
        page.clear(PG.pagetable)
        kernel.put_page(page)
        return
    if page.test(PG.swapcache) and not page_mapped(page) and trylock_page(page):
        try:
            from .swap import try_to_free_swap
            if page.test(PG.swapcache) and not page_mapped(page):
                if try_to_free_swap(page):
                    # The data lived only for the mappings that are now gone.
                    page.clear(PG.dirty)
        finally:
            unlock_page(page)
    kernel.put_page(page)


# ---------------------------------------------------------------------------------------------
# Protections.

def vm_get_page_prot(vm_flags: int) -> int:
    """The PTE protection bits for a VMA's flags (the kernel's ``protection_map``).

    Private mappings never get W: a write fault makes the PTE writable (``maybe_mkwrite``),
    which gives them copy-on-write.  A shared writable mapping gets W (``PAGE_SHARED``);
    :func:`vma_page_prot` drops it again for a mapping that wants write notification (a file
    with dirty accounting), so that the first store to a clean page faults and runs
    ``set_page_dirty``.  D is never set: a PTE made from a protection is clean, and a store
    through a writable clean PTE makes the MMU set D (Svadu) or fault (Svade).  A (the x86
    ``_PAGE_ACCESSED`` in every protection) is set, because installing a PTE is an access.
    Write permission implies read (Sv39 reserves W without R).  ``PROT_NONE`` cannot be a
    valid Sv39 user PTE: it maps to a present, supervisor-only PTE (V R, no U), so the page
    stays mapped (rmap, mapcount) while every user access faults.
    """
    prot = 0
    if vm_flags & (VM_READ | VM_WRITE):
        prot |= _PAGE_R
    if vm_flags & VM_EXEC:
        prot |= _PAGE_X
    if not prot:
        return _PAGE_V | _PAGE_R | _PAGE_A
    if (vm_flags & (VM_SHARED | VM_WRITE)) == (VM_SHARED | VM_WRITE):
        prot |= _PAGE_W
    return _PAGE_V | _PAGE_U | _PAGE_A | prot


def mapping_cap_account_dirty(mapping: AddressSpace) -> bool:
    """The file counts and writes back dirty pages (shmem, anonymous shared memory, does not:
    its pages go to swap, never to a backing file through writeback)."""
    return mapping.account_dirty


def vma_wants_writenotify(vm_flags: int, mapping: Optional[AddressSpace]) -> bool:
    """A shared writable mapping of a dirty-accounting file wants to hear of the first write
    to each clean page: its PTEs are installed read-only (mm/mmap.c of 2008)."""
    if (vm_flags & (VM_WRITE | VM_SHARED)) != (VM_WRITE | VM_SHARED):
        return False
    return mapping is not None and mapping_cap_account_dirty(mapping)


def page_prot(vm_flags: int, mapping: Optional[AddressSpace]) -> int:
    """``vma->vm_page_prot`` of a VMA with ``vm_flags`` mapping ``mapping``: the protection
    of the flags, without W when the mapping wants write notification."""
    if vma_wants_writenotify(vm_flags, mapping):
        vm_flags &= ~VM_SHARED
    return vm_get_page_prot(vm_flags)


def vma_page_prot(vma: Vma) -> int:
    """``vma->vm_page_prot``: read-only for a dirty-accounted shared file mapping, writable
    (and clean) for a shared writable shmem mapping, read-only for every private one."""
    return page_prot(vma.vm_flags, vma.vm_file)


def mk_pte(page: Page, prot: int) -> int:
    return pfn_pte(page.pfn, prot)


def maybe_mkwrite(pte: int, vma: Vma) -> int:
    """Add W when the VMA allows writes."""
    if vma.vm_flags & VM_WRITE:
        pte |= _PAGE_W
    return pte


def pte_modify(pte: int, prot: int) -> int:
    """Keep the frame and A/D of ``pte``, take V R W X U from ``prot``."""
    return (pte & (PPN_MASK | _PAGE_A | _PAGE_D)) | (prot & _PERM_BITS)


def lock_nested(method) -> None:
    """Call a lock's ``acquire``/``down_write`` as ``spin_lock_nested``/``down_write_nested``
    (a second lock of the same class, e.g. fork's two pte locks), if the lock implementation
    knows the ``nested`` hint (the :class:`pyrmap.arch.Lock` protocol does not require it)."""
    import inspect
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        params = {}
    if "nested" in params:
        method(nested=True)
    else:
        method()


def vm_normal_page(vma: Vma, addr: int, pte: int) -> Page:
    """The struct page a present user PTE maps (every user PTE maps a normal page here)."""
    kernel = vma.vm_mm.kernel
    pfn = pte_pfn(pte)
    if not 0 <= pfn < len(kernel.pages):
        raise AssertionError(f"PTE for 0x{addr:x} in {vma!r} maps pfn {pfn:#x} beyond "
                             f"memory ({pte:#x})")
    return kernel.pages[pfn]


def _check_fault_args(mm, vma, address):
    if not isinstance(mm, MmStruct):
        raise TypeError(f"mm must be an MmStruct, not {mm!r}")
    if vma.vm_mm is not mm or not vma.contains(address):
        raise AssertionError(f"fault at 0x{address:x} handled in {vma!r}, which does not "
                             f"cover it in {mm!r}")


# ---------------------------------------------------------------------------------------------
# The fault handler.

def do_access_fault(mm: MmStruct, address: int, access: AccessType) -> None:
    """A user access at ``address`` got an access fault: the MMU's walk (a page-table read or
    its A/D compare-and-swap) hit a bus error, and wrote nothing.

    The kernel reads the page-table path of ``address`` itself (under ``mmap_sem`` for read,
    through the arch, as the walkers read it).  When it reads, the error was transient: the
    fault is counted (``kernel.stats["access_faults"]``) and, on a normal return, the access
    can be retried.

    Raises
    ------
    BusErrorSignal
        The path cannot be read: the page tables themselves are lost (SIGBUS).
    """
    from .errors import BusErrorSignal
    from .pagetable import pte_offset
    from .physmem import BusError
    kernel = mm.kernel
    kernel.stats["access_faults"] += 1
    mm.mmap_sem.down_read()
    try:
        pte_offset(mm, address)
    except BusError as exc:
        raise BusErrorSignal(f"{AccessType(access).name.lower()} at 0x{address:x}: the page "
                             f"tables of {mm!r} cannot be read ({exc})", address,
                             access) from exc
    finally:
        mm.mmap_sem.up_read()


def do_page_fault(mm: MmStruct, address: int, access: AccessType) -> int:
    """A user access faulted at ``address``: the arch's page-fault entry.

    Takes ``mm.mmap_sem`` for read, finds the VMA, checks that it allows ``access``, and runs
    :func:`handle_mm_fault`.  On a normal return the faulting access can be retried (it may
    fault again if the PTE changed meanwhile; the handler then runs again).

    Returns
    -------
    int
        The VM_FAULT_* bits of :func:`handle_mm_fault` (never an error bit).

    Raises
    ------
    SegmentationFault
        No VMA covers ``address`` or the VMA forbids the access (SIGSEGV).
    BusErrorSignal
        The access is beyond the end of a mapped file (SIGBUS).
    OutOfMemoryError
        No frame for the page even after reclaim.
    """
    from .errors import BusErrorSignal, OutOfMemoryError, SegmentationFault

    if not isinstance(address, int) or isinstance(address, bool):
        raise TypeError(f"Fault address must be an integer, not {address!r}")
    access = AccessType(access)
    kernel = mm.kernel
    mm.mmap_sem.down_read()
    try:
        vma = mm.find_vma(address) if 0 <= address < TASK_SIZE else None
        if vma is None or vma.vm_start > address:
            kernel.stats["segv_maperr"] += 1
            raise SegmentationFault(
                f"{access.name.lower()} at 0x{address:x}: no mapping covers this address "
                f"in {mm!r}", address, access, "no vma")
        # Write permission implies read (Sv39 has no write-only PTE; x86 did the same).
        need = {AccessType.LOAD: VM_READ | VM_WRITE, AccessType.STORE: VM_WRITE,
                AccessType.FETCH: VM_EXEC}[access]
        if not vma.vm_flags & need:
            kernel.stats["segv_accerr"] += 1
            what = {VM_READ | VM_WRITE: "readable", VM_WRITE: "writable",
                    VM_EXEC: "executable"}[need]
            raise SegmentationFault(
                f"{access.name.lower()} at 0x{address:x}: {vma!r} is not {what}",
                address, access, "access")
        ret = handle_mm_fault(mm, vma, address & ~(PAGE_SIZE - 1),
                              access == AccessType.STORE)
    finally:
        mm.mmap_sem.up_read()
    if ret & VM_FAULT_OOM:
        raise OutOfMemoryError(f"{access.name.lower()} at 0x{address:x} in {mm!r}: out of "
                               "memory")
    if ret & VM_FAULT_SIGBUS:
        raise BusErrorSignal(f"{access.name.lower()} at 0x{address:x} in {vma!r}: beyond "
                             "the end of the file or a bad page", address, access)
    return ret


def handle_mm_fault(mm: MmStruct, vma: Vma, address: int, write_access: bool) -> int:
    """Resolve a fault at ``address`` (page aligned or not) inside ``vma``.

    Caller holds ``mm.mmap_sem`` (read suffices) and checked the VMA's permissions.  Allocates
    the page table if needed and dispatches on the PTE (:func:`handle_pte_fault`).

    Returns
    -------
    int
        VM_FAULT_* bits: 0 (minor), MAJOR (read from disk/swap), WRITE (a write fault made
        the PTE writable), OOM or SIGBUS.
    """
    _check_fault_args(mm, vma, address)
    address &= ~(PAGE_SIZE - 1)
    kernel = mm.kernel
    kernel.stats["pgfault"] += 1
    try:
        ptep = pte_alloc(mm, address)
    except OutOfMemory:
        return VM_FAULT_OOM
    ret = handle_pte_fault(mm, vma, address, ptep, bool(write_access))
    if ret & VM_FAULT_MAJOR:
        kernel.stats["pgmajfault"] += 1
    return ret


def handle_pte_fault(mm: MmStruct, vma: Vma, address: int, ptep: int,
                     write_access: bool) -> int:
    """Dispatch on the PTE the fault found (no lock held on entry; none on return).

    * none: :func:`do_linear_fault` (file VMA) or :func:`do_anonymous_page`;
    * a file PTE: :func:`do_nonlinear_fault`;
    * a swap or migration entry: :func:`do_swap_page`;
    * present, write to a read-only PTE: :func:`do_wp_page`;
    * present otherwise: in Svade mode (``arch.svadu`` false) set A (and D for a write) with
      a compare-and-swap under the pte lock and flush the page on a write; in Svadu mode the
      fault was spurious (a stale TLB entry): a write flushes the page, nothing else.
    """
    kernel = mm.kernel
    arch = kernel.arch
    entry = arch.pte_load(ptep)
    if not pte_present(entry):
        if pte_none(entry):
            if vma.vm_file is not None:
                return do_linear_fault(mm, vma, address, ptep, write_access, entry)
            return do_anonymous_page(mm, vma, address, ptep, write_access, entry)
        if pte_file(entry):
            return do_nonlinear_fault(mm, vma, address, ptep, write_access, entry)
        if pte_is_swap(entry):
            return do_swap_page(mm, vma, address, ptep, write_access, entry)
        raise AssertionError(f"bad pte {entry:#x} at 0x{address:x} in {vma!r}")
    ptl = pte_lockptr(mm, address)
    ptl.acquire()
    try:
        if arch.pte_load(ptep) != entry:
            kernel.stats["fault_pte_changed"] += 1
            return 0
        new = entry
        if write_access:
            if not pte_write(entry):
                held = ptl
                ptl = None          # do_wp_page releases it
                return do_wp_page(mm, vma, address, ptep, held, entry)
            new |= _PAGE_D
        new |= _PAGE_A
        if not arch.svadu:
            if new != entry:
                found = arch.cmpxchg(ptep, entry, new)
                if found == entry:
                    if not entry & _PAGE_A:
                        kernel.stats["fault_svade_a"] += 1
                    if (new & ~entry) & _PAGE_D:
                        kernel.stats["fault_svade_d"] += 1
                if write_access:
                    arch.flush_tlb_page(vma, address)
            else:
                kernel.stats["fault_spurious"] += 1
                if write_access:
                    arch.flush_tlb_page(vma, address)
            return 0
        changed = _pgtable().ptep_set_access_flags(vma, address, ptep, new, write_access)
        if not changed:
            kernel.stats["fault_spurious"] += 1
            if write_access:
                arch.flush_tlb_page(vma, address)
        return 0
    finally:
        if ptl is not None:
            ptl.release()


def do_anonymous_page(mm: MmStruct, vma: Vma, address: int, ptep: int, write_access: bool,
                      orig_pte: int = 0) -> int:
    """First touch of an anonymous page: a new zeroed page, mapped writable and dirty when
    the VMA is writable (2008 had no zero page here).

    No lock held on entry.  ``anon_vma_prepare`` gives the VMA an anon_vma; under the pte
    lock the page is counted (``anon_rss``), put on the LRU, given its anon rmap
    (``page_add_new_anon_rmap``) and only then made visible by ``set_pte_at``.  If another
    thread installed a PTE meanwhile, the page is dropped and 0 returned.
    """
    kernel = mm.kernel
    arch = kernel.arch
    if _rmap().anon_vma_prepare(vma):
        return VM_FAULT_OOM
    try:
        page = _alloc_page(kernel)
    except OutOfMemory:
        return VM_FAULT_OOM
    entry = maybe_mkwrite(mk_pte(page, vma_page_prot(vma)) | _PAGE_D, vma)
    with pte_lockptr(mm, address):
        if arch.pte_load(ptep) != orig_pte:
            kernel.stats["fault_pte_changed"] += 1
            kernel.put_page(page)
            return 0
        mm.anon_rss += 1
        _lru_add_active(page)
        _rmap().page_add_new_anon_rmap(page, vma, address)
        arch.set_pte_at(mm, address, ptep, entry)
    kernel.stats["fault_anon"] += 1
    return 0


def do_linear_fault(mm: MmStruct, vma: Vma, address: int, ptep: int, write_access: bool,
                    orig_pte: int = 0) -> int:
    """A file VMA's empty PTE: fault in the page at the VMA's linear offset."""
    pgoff = vma.linear_page_index(address)
    return __do_fault(mm, vma, address, ptep, pgoff, write_access, orig_pte)


def do_nonlinear_fault(mm: MmStruct, vma: Vma, address: int, ptep: int, write_access: bool,
                       orig_pte: int) -> int:
    """A file PTE (left by remap_file_pages or by reclaim of a nonlinear VMA): fault in the
    page at the offset the PTE names.  A file PTE in a VMA that is not VM_NONLINEAR is a bad
    PTE: SIGBUS."""
    kernel = mm.kernel
    if not vma.vm_flags & VM_NONLINEAR or vma.vm_file is None:
        kernel.stats["bad_pte"] += 1
        return VM_FAULT_SIGBUS
    kernel.stats["fault_nonlinear"] += 1
    return __do_fault(mm, vma, address, ptep, pte_to_pgoff(orig_pte), write_access, orig_pte)


def _filemap_fault(mapping: AddressSpace, pgoff: int) -> tuple[Page, bool]:
    """The page-cache page at ``pgoff`` with a reference, locked, still in ``mapping``;
    and whether it had to be read (a major fault)."""
    from .filemap import find_get_page, read_file_page

    major = False
    while True:
        page = find_get_page(mapping, pgoff)
        if page is None:
            major = True
            page = read_file_page(mapping, pgoff)
        lock_page(page)
        if page.mapping is mapping and page.index == pgoff:
            return page, major
        # Truncated or reclaimed while we slept on the lock: look again.
        unlock_page(page)
        mapping.kernel.put_page(page)


def __do_fault(mm: MmStruct, vma: Vma, address: int, ptep: int, pgoff: int,
               write_access: bool, orig_pte: int) -> int:
    """Map file page ``pgoff`` of the VMA's file at ``address``.

    No lock held on entry.  The page-cache page is found or read and *locked* (so writeback's
    ``page_mkclean`` cannot run between the PTE going in and the page being dirtied).  A write
    to a private mapping copies it into a new anonymous page (COW at fault time).  Under the
    pte lock, if the PTE is still ``orig_pte``: the rmap is added and the PTE set (writable and
    dirty for a write).  A write to a shared mapping dirties the page (``set_page_dirty``)
    before the page lock is dropped.  Beyond the end of the file: SIGBUS.
    """
    kernel = mm.kernel
    arch = kernel.arch
    mapping = vma.vm_file
    if not 0 <= pgoff < mapping.npages:
        kernel.stats["fault_sigbus"] += 1
        return VM_FAULT_SIGBUS
    try:
        page, major = _filemap_fault(mapping, pgoff)
    except OutOfMemory:
        return VM_FAULT_OOM
    ret = VM_FAULT_MAJOR if major else 0
    fault_page = page
    anon = False
    pte_took_fault_ref = False
    try:
        if write_access and not vma.vm_flags & VM_SHARED:
            if _rmap().anon_vma_prepare(vma):
                return VM_FAULT_OOM
            try:
                page = _alloc_page(kernel)
            except OutOfMemory:
                return VM_FAULT_OOM
            anon = True
        installed = False
        with pte_lockptr(mm, address):
            if arch.pte_load(ptep) == orig_pte:
                if anon:
                    _cow_copy(mm, address, page, fault_page)
                entry = mk_pte(page, vma_page_prot(vma))
                if write_access:
                    entry = maybe_mkwrite(entry | _PAGE_D, vma)
                if anon:
                    mm.anon_rss += 1
                    _lru_add_active(page)
                    _rmap().page_add_new_anon_rmap(page, vma, address)
                else:
                    mm.file_rss += 1
                    _rmap().page_add_file_rmap(page)
                    pte_took_fault_ref = True
                arch.set_pte_at(mm, address, ptep, entry)
                installed = True
            else:
                kernel.stats["fault_pte_changed"] += 1
        if not installed:
            if anon:
                kernel.put_page(page)
            return ret
        if anon:
            kernel.stats["fault_private_file_cow"] += 1
        elif write_access:
            # Dirty it before the page lock goes: writeback cannot clean it in between.
            _set_page_dirty(page)
            kernel.stats["fault_file_write_shared"] += 1
        else:
            kernel.stats["fault_file"] += 1
        return ret
    finally:
        unlock_page(fault_page)
        if not pte_took_fault_ref:
            kernel.put_page(fault_page)


def _cow_copy(mm: MmStruct, address: int, new: Page, old: Page) -> None:
    """Copy ``old`` into ``new`` for a COW at ``address``.  Called under the pte lock right
    before the new PTE goes in, so the copy's instant is the instant the private page is
    born; checkers hear it as the ``cow_copy`` event (a shared writer may change ``old``
    just before or after: MAP_PRIVATE leaves that unspecified)."""
    kernel = mm.kernel
    kernel.mem.copy_frame(new.pfn, old.pfn)
    kernel.stats["cow_copies"] += 1
    kernel.arch.notify("cow_copy", mm=mm, address=address, old_pfn=old.pfn, new_pfn=new.pfn)


def can_share_swap_page(page: Page) -> bool:
    """The page (locked) is mapped once and nobody else holds its swap slot: a write may
    reuse it instead of copying."""
    count = page_mapcount(page)
    if count <= 1 and page.test(PG.swapcache):
        from .swap import page_swapcount
        count += page_swapcount(page)
    return count == 1


def do_wp_page(mm: MmStruct, vma: Vma, address: int, ptep: int, ptl, orig_pte: int) -> int:
    """A write to a present, read-only PTE.

    Caller holds the pte lock ``ptl``; it is released on return.

    * Anonymous page mapped only here (``can_share_swap_page``, page lock taken with trylock):
      *reuse*: the PTE is made young, dirty and writable in place.
    * Page of a shared writable file mapping (after ``page_mkclean`` or a read fault): the PTE
      is made writable and dirty in place, then, with the pte lock dropped, the page is dirtied
      (``set_page_dirty``) under the page lock.
    * Otherwise *copy*: with the pte lock dropped a new anonymous page is allocated;
      under the lock again, if the PTE is unchanged: the contents are copied (``cow_copy``
      event), ``ptep_clear_flush_notify`` (no TLB or
      secondary MMU maps the old page), ``set_pte_at`` of the new page, then
      ``page_remove_rmap`` of the old one; the old page's references are dropped last.

    Returns
    -------
    int
        VM_FAULT_WRITE when the PTE became writable, 0 when it changed under us, or OOM.
    """
    kernel = mm.kernel
    arch = kernel.arch
    rmap = _rmap()
    old_page = vm_normal_page(vma, address, orig_pte)
    reuse = False
    dirty_page = None
    try:
        if PageAnon(old_page):
            if trylock_page(old_page):
                reuse = can_share_swap_page(old_page)
                unlock_page(old_page)
        elif (vma.vm_flags & (VM_WRITE | VM_SHARED)) == (VM_WRITE | VM_SHARED):
            dirty_page = old_page
            kernel.get_page(dirty_page)
            reuse = True
        if reuse:
            entry = maybe_mkwrite(orig_pte | _PAGE_A | _PAGE_D, vma)
            _pgtable().ptep_set_access_flags(vma, address, ptep, entry, True)
            kernel.stats["fault_wp_shared" if dirty_page is not None else "fault_wp_reuse"] += 1
            ptl.release()
            ptl = None
            return VM_FAULT_WRITE
        # Copy on write.
        kernel.get_page(old_page)
        ptl.release()
        ptl = None
        try:
            if rmap.anon_vma_prepare(vma):
                return VM_FAULT_OOM
            try:
                new_page = _alloc_page(kernel)
            except OutOfMemory:
                return VM_FAULT_OOM
            ret = 0
            with pte_lockptr(mm, address):
                if arch.pte_load(ptep) == orig_pte:
                    _cow_copy(mm, address, new_page, old_page)
                    if not PageAnon(old_page):
                        mm.file_rss -= 1
                        mm.anon_rss += 1
                    entry = maybe_mkwrite(mk_pte(new_page, vma_page_prot(vma)) | _PAGE_D, vma)
                    _notify().ptep_clear_flush_notify(vma, address, ptep)
                    _lru_add_active(new_page)
                    rmap.page_add_new_anon_rmap(new_page, vma, address)
                    arch.set_pte_at(mm, address, ptep, entry)
                    # Only now may the old page lose this mapping: another process must not
                    # see the mapcount drop (and reuse the page) while our PTE still maps it.
                    rmap.page_remove_rmap(old_page, vma)
                    kernel.stats["fault_cow"] += 1
                    release = old_page          # the reference the PTE held
                    ret = VM_FAULT_WRITE
                else:
                    kernel.stats["fault_pte_changed"] += 1
                    release = new_page
            kernel.put_page(release)
            return ret
        finally:
            kernel.put_page(old_page)
    finally:
        if ptl is not None:
            ptl.release()
        if dirty_page is not None:
            lock_page(dirty_page)
            try:
                _set_page_dirty(dirty_page)
            finally:
                unlock_page(dirty_page)
                kernel.put_page(dirty_page)


def do_swap_page(mm: MmStruct, vma: Vma, address: int, ptep: int, write_access: bool,
                 orig_pte: int) -> int:
    """A swap or migration entry: swap the page in, or wait for the migration to finish.

    No lock held on entry.  A migration entry waits on the migrating page's lock
    (``migration_entry_wait``) and returns 0 so the access is retried.  A swap entry finds
    the page in the swap cache or reads it (a major fault), locks it, and under the pte lock,
    if the PTE still holds the entry: maps it (writable and dirty for a write when the page
    is exclusively ours), ``page_add_anon_rmap`` with the page lock held, ``swap_free`` of
    the PTE's slot reference.  A write to a page still shared goes on to :func:`do_wp_page`.
    """
    from . import swap as swp

    kernel = mm.kernel
    arch = kernel.arch
    with pte_lockptr(mm, address):
        if arch.pte_load(ptep) != orig_pte:
            return 0
    entry = pte_to_swp_entry(orig_pte)
    if is_migration_entry(entry):
        from .migrate import migration_entry_wait
        kernel.stats["fault_migration_wait"] += 1
        migration_entry_wait(mm, ptep, address)
        return 0
    ret = 0
    page = swp.lookup_swap_cache(kernel, entry)
    if page is None:
        swp.grab_swap_token(mm)
        try:
            page = swp.read_swap_page(kernel, entry)
        except (ValueError, OutOfMemory) as exc:
            # The slot may have been freed because the PTE changed meanwhile.
            with pte_lockptr(mm, address):
                same = arch.pte_load(ptep) == orig_pte
            if not same:
                return 0
            return VM_FAULT_OOM if isinstance(exc, OutOfMemory) else VM_FAULT_SIGBUS
        ret = VM_FAULT_MAJOR
    _mark_page_accessed(page)
    lock_page(page)
    ptl = pte_lockptr(mm, address)
    ptl.acquire()
    try:
        if arch.pte_load(ptep) != orig_pte:
            kernel.stats["fault_pte_changed"] += 1
            ptl.release()
            ptl = None
            unlock_page(page)
            kernel.put_page(page)
            return ret
        if not page.test(PG.uptodate):
            ptl.release()
            ptl = None
            unlock_page(page)
            kernel.put_page(page)
            return VM_FAULT_SIGBUS
        mm.anon_rss += 1
        pte = mk_pte(page, vma_page_prot(vma))
        if write_access and can_share_swap_page(page):
            pte = maybe_mkwrite(pte | _PAGE_D, vma)
            write_access = False
            ret |= VM_FAULT_WRITE
        _rmap().page_add_anon_rmap(page, vma, address)
        arch.set_pte_at(mm, address, ptep, pte)
        swp.swap_free(kernel, entry)
        si = kernel.swap
        if si is not None and si.nr_free * 2 < si.nslots and page.test(PG.swapcache):
            swp.try_to_free_swap(page)          # vm_swap_full(): give the slot back
        unlock_page(page)
        kernel.stats["fault_swapin"] += 1
        if write_access:
            held, ptl = ptl, None
            ret |= do_wp_page(mm, vma, address, ptep, held, pte)
        return ret
    finally:
        if ptl is not None:
            ptl.release()


# ---------------------------------------------------------------------------------------------
# mmu_gather: deferred TLB flush and page free.

class MmuGather:
    """``struct mmu_gather``: pages whose PTEs were cleared, waiting for the TLB flush.

    Members
    -------
    mm : MmStruct
    fullmm : bool
        The whole address space is going (exit).
    pages : list of Page
        Pages to free (drop one reference each) after the flush; page-table pages too.
    need_flush : bool
        A PTE was cleared since the last flush.
    delayed_rmap : list of (Page, Vma)
        Pages whose ``page_remove_rmap`` waits for the flush (5df397dec7c4).
    """

    def __init__(self, mm: MmStruct, fullmm: bool):
        self.mm = mm
        self.fullmm = bool(fullmm)
        self.pages: list[Page] = []
        self.need_flush = False
        self.delayed_rmap: list = []
        self.finished = False

    def __repr__(self) -> str:
        return (f"<MmuGather mm={self.mm.asid} pages={len(self.pages)} "
                f"need_flush={self.need_flush}{' full' if self.fullmm else ''}>")


def tlb_gather_mmu(mm: MmStruct, full_mm_flush: bool) -> MmuGather:
    return MmuGather(mm, full_mm_flush)


def tlb_flush_mmu_tlbonly(tlb: MmuGather) -> None:
    """Flush every TLB that may hold a translation of ``tlb.mm`` (x86 2008: the whole mm)."""
    if tlb.need_flush:
        tlb.need_flush = False
        tlb.mm.kernel.stats["tlb_gather_flushes"] += 1
        tlb.mm.kernel.arch.flush_tlb_mm(tlb.mm)


def tlb_flush_rmaps(tlb: MmuGather) -> None:
    """``page_remove_rmap`` of every page whose removal waited for the flush (5df397dec7c4).
    Only after :func:`tlb_flush_mmu_tlbonly`; caller holds the pte lock of those pages."""
    if tlb.need_flush and tlb.delayed_rmap:
        raise AssertionError(f"{tlb!r}: removing delayed rmaps before the TLB flush")
    delayed, tlb.delayed_rmap = tlb.delayed_rmap, []
    rmap = _rmap()
    for page, vma in delayed:
        rmap.page_remove_rmap(page, vma)


def tlb_flush_mmu_free(tlb: MmuGather) -> None:
    """Free the gathered pages.  Only after :func:`tlb_flush_mmu_tlbonly` and
    :func:`tlb_flush_rmaps`."""
    if tlb.need_flush:
        raise AssertionError(f"{tlb!r}: freeing pages before the TLB flush")
    if tlb.delayed_rmap:
        raise AssertionError(f"{tlb!r}: freeing pages whose rmap is still to be removed")
    pages, tlb.pages = tlb.pages, []
    for page in pages:
        _free_page_and_swap_cache(page)


def tlb_flush_mmu(tlb: MmuGather, start: int = 0, end: int = 0) -> None:
    """Flush, remove the delayed rmaps, *then* free: on return no TLB reaches a gathered page,
    and they are freed."""
    tlb_flush_mmu_tlbonly(tlb)
    tlb_flush_rmaps(tlb)
    tlb_flush_mmu_free(tlb)


def tlb_remove_page(tlb: MmuGather, page: Page) -> None:
    """Queue the PTE's page reference to be dropped after the flush.  A full batch flushes
    and frees at once (under the caller's pte lock, as in 2008)."""
    tlb.need_flush = True
    tlb.pages.append(page)
    if len(tlb.pages) >= MMU_GATHER_BATCH:
        tlb_flush_mmu(tlb)


def tlb_finish_mmu(tlb: MmuGather, start: int = 0, end: int = 0) -> None:
    """End of an unmap: flush the TLBs, then free every gathered page."""
    if tlb.finished:
        raise AssertionError(f"{tlb!r} finished twice")
    tlb_flush_mmu(tlb, start, end)
    tlb.finished = True


# ---------------------------------------------------------------------------------------------
# zap

def _detail(details, key: str, default=None):
    if details is None:
        return default
    if isinstance(details, dict):
        return details.get(key, default)
    return getattr(details, key, default)


def zap_pte_range(tlb: MmuGather, vma: Vma, addr: int, end: int, details=None) -> int:
    """Clear the PTEs of [addr, end) in ``vma`` (all within one page table or not).

    Takes the pte lock.  For each present PTE: atomic clear (``ptep_get_and_clear``), D of a
    file page moved to ``set_page_dirty``, A to PG_referenced, ``page_remove_rmap``, the page
    queued in the gather (freed after the flush).  Swap entries lose their slot reference
    (``free_swap_and_cache``); file PTEs are cleared.  ``details`` (``check_mapping``,
    ``nonlinear_vma``, ``first_index``/``last_index``) restricts the zap to pages of one file
    (truncate leaves private COW copies and swap entries alone) and, for a nonlinear VMA,
    leaves a file PTE where a page was.  Returns the number of PTEs cleared.

    With ``kernel.quirks.zap_flush_after_pte_unlock`` off, when a dirty PTE of a file page
    was cleared the TLB is flushed before the pte lock is dropped (then the pages freed);
    with it on, the flush waits for :func:`tlb_finish_mmu`.  With
    ``kernel.quirks.zap_rmap_before_flush`` off (and the flush under the lock), such a page's
    ``page_remove_rmap`` waits for that flush (:func:`tlb_flush_rmaps`); with it on, the rmap
    goes before the flush and a concurrent page_mkclean can skip a page that a live, dirty
    TLB entry still writes.
    """
    mm = vma.vm_mm
    kernel = mm.kernel
    arch = kernel.arch
    rmap = _rmap()
    get_and_clear = _pgtable().ptep_get_and_clear
    check_mapping = _detail(details, "check_mapping")
    nonlinear_vma = _detail(details, "nonlinear_vma")
    if nonlinear_vma is None and _detail(details, "nonlinear") is True:
        nonlinear_vma = vma
    first_index = _detail(details, "first_index", 0) or 0
    last_index = _detail(details, "last_index")
    if last_index is None:
        last_index = 1 << 64
    quirks = kernel.quirks
    may_delay_rmap = not (quirks.zap_rmap_before_flush or quirks.zap_flush_after_pte_unlock)
    force_flush = False
    cleared = 0
    anon_rss = file_rss = 0
    ptl = pte_lockptr(mm, addr)
    ptl.acquire()
    try:
        for a, ptep in pte_range(mm, addr, end):
            ptent = arch.pte_load(ptep)
            if pte_none(ptent):
                continue
            if pte_present(ptent):
                page = vm_normal_page(vma, a, ptent)
                if details is not None:
                    if check_mapping is not None and page.mapping is not check_mapping:
                        continue
                    if nonlinear_vma is not None and not first_index <= page.index <= last_index:
                        continue
                ptent = get_and_clear(mm, a, ptep)
                tlb.need_flush = True
                cleared += 1
                if (nonlinear_vma is not None
                        and nonlinear_vma.linear_page_index(a) != page.index):
                    arch.set_pte_at(mm, a, ptep, pgoff_to_pte(page.index))
                delay_rmap = False
                if PageAnon(page):
                    anon_rss -= 1
                else:
                    if pte_dirty(ptent):
                        _set_page_dirty(page)
                        force_flush = True
                        delay_rmap = may_delay_rmap
                    if pte_young(ptent):
                        page.set(PG.referenced)
                    file_rss -= 1
                if delay_rmap:
                    tlb.delayed_rmap.append((page, vma))
                else:
                    rmap.page_remove_rmap(page, vma)
                tlb_remove_page(tlb, page)
                continue
            if details is not None:
                continue
            if pte_is_swap(ptent):
                from .swap import free_swap_and_cache
                sentry = pte_to_swp_entry(ptent)
                if not is_migration_entry(sentry):
                    free_swap_and_cache(kernel, sentry)
                    kernel.stats["zap_swap_entries"] += 1
            arch.set_pte_at(mm, a, ptep, 0)
            cleared += 1
        mm.anon_rss += anon_rss
        mm.file_rss += file_rss
        if force_flush and not quirks.zap_flush_after_pte_unlock:
            tlb_flush_mmu_tlbonly(tlb)
            tlb_flush_rmaps(tlb)
    finally:
        ptl.release()
    if force_flush:
        if kernel.quirks.zap_flush_after_pte_unlock:
            arch.yield_point("zap_pte_range: pte lock dropped before the TLB flush (quirk)")
        else:
            tlb_flush_mmu_free(tlb)
    kernel.stats["zap_ptes"] += cleared
    return cleared


def unmap_vmas(tlb: MmuGather, vmas: Iterable[Vma], start_addr: int, end_addr: int,
               details=None) -> int:
    """Zap [start_addr, end_addr) in each of ``vmas`` (all of one mm), inside
    ``invalidate_range_start/end`` of the whole range.  Caller holds mmap_sem (read for
    madvise, write for munmap/exit).  Returns ``end_addr``."""
    vmas = list(vmas)
    if not vmas or start_addr >= end_addr:
        return end_addr
    mm = vmas[0].vm_mm
    mm.hiwater_rss = max(mm.hiwater_rss, mm.anon_rss + mm.file_rss)     # update_hiwater_rss
    with _notify().mmu_notifier_range(mm, start_addr, end_addr):
        for vma in vmas:
            start = max(vma.vm_start, start_addr)
            end = min(vma.vm_end, end_addr)
            if start >= end:
                continue
            zap_pte_range(tlb, vma, start, end, details)
    return end_addr


def zap_page_range(vma: Vma, address: int, size: int, details=None) -> int:
    """Remove user pages in [address, address+size) of ``vma`` (madvise(MADV_DONTNEED),
    truncation).  Caller holds mmap_sem (read suffices).  On return no TLB maps the range and
    the pages are freed (if that was their last reference)."""
    mm = vma.vm_mm
    end = address + size
    tlb = tlb_gather_mmu(mm, False)
    try:
        unmap_vmas(tlb, [vma], address, end, details)
    finally:
        tlb_finish_mmu(tlb, address, end)
    mm.kernel.arch.notify("returned", op="zap_page_range", kind="unmap", mm=mm,
                          start=address, end=end, page=None)
    return end


def _table_is_empty(kernel, pfn: int) -> bool:
    words = kernel.mem.frame(pfn)
    return not (words & np.uint64(~(_PAGE_A | _PAGE_D) & 0xFFFF_FFFF_FFFF_FFFF)).any()


def _free_table(tlb: MmuGather, mm: MmStruct, slot: int, addr: int, what: str) -> None:
    kernel = mm.kernel
    entry = kernel.arch.ptep_get_and_clear(mm, addr, slot)
    pfn = pte_pfn(entry)
    if not _table_is_empty(kernel, pfn):
        raise AssertionError(f"freeing a {what} of {mm!r} at 0x{addr:x} that still maps "
                             "something")
    tlb.need_flush = True
    tlb.pages.append(kernel.pages[pfn])
    kernel.stats["pagetable_pages"] -= 1
    kernel.stats["pagetables_freed"] += 1


def free_pgd_range(tlb: MmuGather, addr: int, end: int, floor: int, ceiling: int) -> None:
    """Free the page-table pages that cover only [floor, ceiling) and meet [addr, end).

    Caller holds mmap_sem for write and zapped every PTE of the range.  The pages go into the
    gather, so they are freed after the TLB flush (a walker may still be reading them)."""
    mm = tlb.mm
    arch = mm.kernel.arch
    if ceiling == 0 or ceiling > TASK_SIZE:
        ceiling = TASK_SIZE
    lo2 = -(-floor // _PMD_SIZE) * _PMD_SIZE          # first whole 2 MiB region
    hi2 = (ceiling // _PMD_SIZE) * _PMD_SIZE
    lo1 = -(-floor // _PUD_SIZE) * _PUD_SIZE
    hi1 = (ceiling // _PUD_SIZE) * _PUD_SIZE
    if end <= addr:
        return
    for i2 in range(addr >> LEVEL_SHIFT[2], ((end - 1) >> LEVEL_SHIFT[2]) + 1):
        slot2 = (mm.pgd << PAGE_SHIFT) + i2 * PTE_SIZE
        e2 = arch.pte_load(slot2)
        if not pte_present(e2) or pte_leaf(e2):
            continue
        base2 = i2 << LEVEL_SHIFT[2]
        table1 = pte_pfn(e2)
        whole = lo1 <= base2 and base2 + _PUD_SIZE <= hi1
        for i1 in range(PTRS_PER_PTE):
            base1 = base2 + (i1 << LEVEL_SHIFT[1])
            if not whole and not (base1 + _PMD_SIZE > addr and base1 < end
                                  and lo2 <= base1 and base1 + _PMD_SIZE <= hi2):
                continue
            slot1 = (table1 << PAGE_SHIFT) + i1 * PTE_SIZE
            e1 = arch.pte_load(slot1)
            if not pte_present(e1) or pte_leaf(e1):
                continue
            _free_table(tlb, mm, slot1, base1, "page table")
        if whole:
            _free_table(tlb, mm, slot2, base2, "page middle directory")


def free_pgtables(tlb: MmuGather, vmas: Iterable[Vma], floor: int, ceiling: int) -> None:
    """Take the (already zapped and detached) VMAs off the rmap (``anon_vma_unlink``,
    ``unlink_file_vma``) and free their page tables between ``floor`` and ``ceiling`` (the
    neighbouring VMAs' edges; 0 = the top).  As in 2008 this runs *before* the gather's
    final flush in :func:`tlb_finish_mmu`."""
    from .mmap import unlink_file_vma

    vmas = list(vmas)
    rmap = _rmap()
    for vma in vmas:
        rmap.anon_vma_unlink(vma)
        unlink_file_vma(vma)
    if vmas:
        free_pgd_range(tlb, min(v.vm_start for v in vmas), max(v.vm_end for v in vmas),
                       floor, ceiling)


# ---------------------------------------------------------------------------------------------
# fork

def is_cow_mapping(flags: int) -> bool:
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def copy_one_pte(dst_mm: MmStruct, src_mm: MmStruct, dst_ptep: int, src_ptep: int,
                 vma: Vma, addr: int, rss: list) -> None:
    """Copy one PTE from parent to child.  Caller holds both pte locks.

    Swap entries get a slot reference (``swap_duplicate``); a write migration entry of a COW
    mapping becomes a read one in both.  A writable PTE of a COW mapping is write-protected
    in the parent (atomically; the caller's flush makes it effective); the child's copy is
    read-only and old, clean for shared mappings; the page gets ``get_page`` and
    ``page_dup_rmap``."""
    kernel = src_mm.kernel
    arch = kernel.arch
    pte = arch.pte_load(src_ptep)
    if pte_none(pte):
        return
    flags = vma.vm_flags
    if not pte_present(pte):
        pte &= ~(_PAGE_A | _PAGE_D)
        if pte_is_swap(pte):
            sentry = pte_to_swp_entry(pte)
            if not is_migration_entry(sentry):
                from .swap import mmlist_add, swap_duplicate
                swap_duplicate(kernel, sentry)
                mmlist_add(dst_mm)
            elif is_write_migration_entry(sentry) and is_cow_mapping(flags):
                pte = swp_entry_to_pte(swp_entry(SWP_MIGRATION_READ, sentry.offset))
                arch.set_pte_at(src_mm, addr, src_ptep, pte)
        arch.set_pte_at(dst_mm, addr, dst_ptep, pte)
        return
    if is_cow_mapping(flags) and pte_write(pte):
        _pgtable().ptep_set_wrprotect(src_mm, addr, src_ptep)
        pte = arch.pte_load(src_ptep) & ~_PAGE_W
    if flags & VM_SHARED:
        pte &= ~_PAGE_D
    pte &= ~_PAGE_A
    page = vm_normal_page(vma, addr, pte)
    kernel.get_page(page)
    _rmap().page_dup_rmap(page, vma, addr)
    rss[1 if PageAnon(page) else 0] += 1
    arch.set_pte_at(dst_mm, addr, dst_ptep, pte)
    kernel.stats["fork_ptes_copied"] += 1


def copy_page_range(dst_mm: MmStruct, src_mm: MmStruct, vma: Vma) -> int:
    """Copy the PTEs of parent VMA ``vma`` into ``dst_mm`` at the same addresses.

    Caller holds both mmap_sems for write.  A VMA without anonymous pages (and not nonlinear)
    copies nothing: the child faults its pages in.  A COW mapping's copy runs inside
    ``invalidate_range_start/end`` on the parent (its PTEs lose W).  Returns 0, or -ENOMEM."""
    if not vma.vm_flags & VM_NONLINEAR and vma.anon_vma is None:
        return 0
    cow = is_cow_mapping(vma.vm_flags)
    notify = _notify()
    if cow:
        notify.mmu_notifier_invalidate_range_start(src_mm, vma.vm_start, vma.vm_end)
    try:
        addr = vma.vm_start
        while addr < vma.vm_end:
            next_table = min(((addr >> LEVEL_SHIFT[1]) + 1) << LEVEL_SHIFT[1], vma.vm_end)
            if pte_offset(src_mm, addr) is not None:
                try:
                    pte_alloc(dst_mm, addr)
                except OutOfMemory:
                    return -12
                dst_ptl = pte_lockptr(dst_mm, addr)
                src_ptl = pte_lockptr(src_mm, addr)
                rss = [0, 0]
                dst_ptl.acquire()
                try:
                    lock_nested(src_ptl.acquire)
                    try:
                        for a, src_ptep in pte_range(src_mm, addr, next_table):
                            dst_ptep = pte_offset(dst_mm, a)
                            copy_one_pte(dst_mm, src_mm, dst_ptep, src_ptep, vma, a, rss)
                    finally:
                        src_ptl.release()
                    dst_mm.file_rss += rss[0]
                    dst_mm.anon_rss += rss[1]
                finally:
                    dst_ptl.release()
            addr = next_table
        return 0
    finally:
        if cow:
            notify.mmu_notifier_invalidate_range_end(src_mm, vma.vm_start, vma.vm_end)


# ---------------------------------------------------------------------------------------------
# get_user_pages, reduced to what mlock and remap_file_pages need.

def follow_pte(mm: MmStruct, addr: int) -> int:
    """The PTE value mapping ``addr`` (0 when no page table covers it).  No lock taken."""
    ptep = pte_offset(mm, addr)
    return 0 if ptep is None else mm.kernel.arch.pte_load(ptep)


def make_pages_present(vma: Vma, start: int, end: int, write: Optional[bool] = None) -> int:
    """Fault in every page of [start, end) in ``vma`` (mlock, MAP_POPULATE,
    remap_file_pages).  Caller holds mmap_sem.  ``write`` defaults to "private and writable"
    (break COW now, as mlock does).  A VMA without access rights is skipped.  Returns the
    number of pages that could not be made present (beyond the end of a file, OOM)."""
    mm = vma.vm_mm
    if not vma.vm_flags & (VM_READ | VM_WRITE | VM_EXEC):
        return 0
    if write is None:
        write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    missing = 0
    for addr in range(start & ~(PAGE_SIZE - 1), end, PAGE_SIZE):
        for _ in range(4):
            pte = follow_pte(mm, addr)
            if pte_present(pte) and (not write or pte_write(pte)):
                break
            ret = handle_mm_fault(mm, vma, addr, write)
            if ret & VM_FAULT_ERROR:
                missing += 1
                mm.kernel.stats["populate_failed"] += 1
                break
    return missing
