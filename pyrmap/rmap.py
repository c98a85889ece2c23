"""mm/rmap.c - physical to virtual reverse mappings (Linux, July 2008, with mmu notifiers).

A port of the 2008 file, function by function: same names, arguments, return values and
locking contracts.  Given a page, rmap finds every pte that maps it (anonymous pages through
their anon_vma's VMA list, file pages through ``mapping.i_mmap``) to age, clean or unmap it.

Lock ordering in mm (the seed's comment; kept as data in :data:`LOCK_ORDER` and checked by
:class:`pyrmap.locking.LockDep`)::

    inode->i_mutex          (while writing or truncating, not reading or faulting)
      inode->i_alloc_sem    (vmtruncate_range)
        mm->mmap_sem
          page->flags PG_locked (lock_page)
            mapping->i_mmap_lock
              anon_vma->lock
                mm->page_table_lock or pte_lock
                  zone->lru_lock (in mark_page_accessed, isolate_lru_page)
                  swap_lock (in swap_duplicate, swap_info_get)
                    mmlist_lock (in mmput, drain_mmlist and others)
                    mapping->private_lock (in __set_page_dirty_buffers)
                    inode_lock (in set_page_dirty's __mark_inode_dirty)
                      sb_lock (within inode_lock in fs/fs-writeback.c)
                      mapping->tree_lock (widely used, in set_page_dirty,
                                in arch-dependent flush_dcache_mmap_lock,
                                within inode_lock in __sync_single_inode)

Python conventions of this port:

* The seed's return codes stay where they are its API: ``SWAP_SUCCESS``/``SWAP_AGAIN``/
  ``SWAP_FAIL`` and ``-EFAULT`` (a negative int, where the kernel returns ``(unsigned) -EFAULT``).
* An out-parameter (``unsigned int *mapcount``) is a :class:`Ref` cell.
* ``page_check_address`` returns ``(ptep, ptl)`` with the pte lock held, or None.
* A kernel ``BUG()`` on a violated precondition raises :class:`KernelBug` (an
  ``AssertionError``) with a message saying what was violated; the mapcount underflow raises
  :class:`BadPageState` carrying the seed's diagnostics.
* The anon, file and nonlinear walks share one loop each (:func:`rmap_walk_anon`,
  :func:`rmap_walk_file`) driven by a :class:`RmapWalkControl` saying what to do per VMA and
  when to stop, instead of near-copies per operation.
* Events are counted in ``kernel.stats`` under ``rmap_*`` names.
"""

from __future__ import annotations

import errno
from typing import Callable, Optional

from . import locking as _locking
from .mm_types import (PG, VM_LOCKED, VM_MAYSHARE, VM_NONLINEAR, VM_SHARED, AddressSpace,
                       AnonVma, Page, PageAnon, Vma, page_mapcount, page_mapped)
from .mmu_notifier import (allocation_fails, ptep_clear_flush_notify,
                           ptep_clear_flush_young_notify)
from .pagemap import PageLocked, page_cache_release, trylock_page, unlock_page
from .pagetable import pte_lockptr, pte_offset
from .pte import (PAGE_SHIFT, PAGE_SIZE, PTE_SIZE, make_migration_entry, pgoff_to_pte,
                  pte_dirty, pte_file, pte_mkclean, pte_pfn, pte_present, pte_write,
                  pte_wrprotect, swp_entry_to_pte)

__all__ = [
    "SWAP_SUCCESS", "SWAP_AGAIN", "SWAP_FAIL", "EFAULT", "ENOMEM", "CLUSTER_SIZE",
    "CLUSTER_MASK", "LOCK_ORDER", "KernelBug", "BadPageState", "Ref",
    "RmapWalkControl", "rmap_walk_anon", "rmap_walk_file",
    "anon_vma_alloc", "anon_vma_free", "anon_vma_prepare", "__anon_vma_merge",
    "__anon_vma_link", "anon_vma_link", "anon_vma_unlink", "page_lock_anon_vma",
    "page_unlock_anon_vma", "vma_address", "page_address_in_vma", "page_check_address",
    "pte_unmap_unlock", "page_referenced_one", "page_referenced_anon", "page_referenced_file",
    "page_referenced", "page_mkclean_one", "page_mkclean_file", "page_mkclean",
    "page_add_anon_rmap", "page_add_new_anon_rmap", "page_add_file_rmap", "page_dup_rmap",
    "page_remove_rmap", "try_to_unmap_one", "try_to_unmap_cluster", "try_to_unmap_anon",
    "try_to_unmap_file", "try_to_unmap", "page_mapping", "mm_match_cgroup",
]

SWAP_SUCCESS = 0
SWAP_AGAIN = 1
SWAP_FAIL = 2
EFAULT = errno.EFAULT
ENOMEM = errno.ENOMEM

PMD_SIZE = 1 << 21
#: Nonlinear scan unit: min(32 pages, PMD_SIZE), so a cluster never crosses a pte table.
CLUSTER_SIZE = min(32 * PAGE_SIZE, PMD_SIZE)
CLUSTER_MASK = ~(CLUSTER_SIZE - 1)

#: The lock-order tree above as data (``(lock class, depth)``, outermost first), shared with
#: the debug lock wrapper :class:`pyrmap.locking.LockDep` that checks it on every acquisition.
LOCK_ORDER = _locking.LOCK_ORDER


class KernelBug(AssertionError):
    """A ``BUG()``/``VM_BUG_ON()`` of the engine: a caller broke a documented precondition."""


class BadPageState(KernelBug):
    """``page_remove_rmap`` found the mapcount going negative ("Eeek!").

    Members
    -------
    page, mapcount, mapping, index, vma
        The seed's diagnostics: the page, its (negative) ``page_mapcount``, ``page->mapping``,
        ``page->index`` and the VMA the caller was unmapping from.
    pfn, flags, count
        ``page_to_pfn``, ``page->flags``, ``page_count``.
    """

    def __init__(self, page: Page, vma: Vma):
        self.page = page
        self.vma = vma
        self.mapcount = page_mapcount(page)
        self.mapping = page.mapping
        self.index = page.index
        self.pfn = page.pfn
        self.flags = page.flags
        self.count = page._count
        super().__init__(
            f"Eeek! page_mapcount(page) went negative! ({self.mapcount}): pfn={self.pfn:#x} "
            f"flags={self.flags!s} count={self.count} mapping={self.mapping!r} "
            f"index={self.index} vma={vma!r}")


class Ref:
    """A mutable int cell: the port of an ``unsigned int *`` out-parameter."""
    __slots__ = ("value",)

    def __init__(self, value: int = 0):
        self.value = value

    def __repr__(self) -> str:
        return f"Ref({self.value})"


# ---------------------------------------------------------------------------------------------
# Helpers from the surrounding mm, used lazily so this module loads on its own.

def page_mapping(page: Page) -> Optional[AddressSpace]:
    """The page's address_space for file pages; None for anonymous pages (the swap cache's
    ``swapper_space`` is not an AddressSpace here and never reaches page_mkclean)."""
    mapping = page.mapping
    return mapping if isinstance(mapping, AddressSpace) else None


def mm_match_cgroup(mm, mem_cont) -> bool:
    return mm.mem_cgroup is mem_cont


def _current_mm(kernel):
    return kernel.arch.current_task().mm


def _has_swap_token(mm) -> bool:
    return mm.kernel.swap_token_mm is mm


def _set_page_dirty(page: Page) -> None:
    try:
        from .filemap import set_page_dirty
    except ImportError:
        page.set(PG.dirty)
        return
    set_page_dirty(page)


def _PageSwapCache(page: Page) -> bool:
    return page.test(PG.swapcache)


def _swap_duplicate(kernel, entry) -> None:
    from .swap import swap_duplicate
    swap_duplicate(kernel, entry)


def _mmlist_add(mm) -> None:
    from .swap import mmlist_add
    mmlist_add(mm)


def _update_hiwater_rss(mm) -> None:
    rss = mm.file_rss + mm.anon_rss
    if mm.hiwater_rss < rss:
        mm.hiwater_rss = rss


def _vm_normal_page(vma: Vma, address: int, pte: int) -> Optional[Page]:
    pfn = pte_pfn(pte)
    pages = vma.kernel.pages
    if pfn >= len(pages):
        return None
    return pages[pfn]


def cond_resched_lock(lock, arch) -> None:
    """Drop ``lock``, let other threads run, take it again."""
    lock.release()
    arch.yield_point("cond_resched_lock")
    lock.acquire()


def _find_mergeable_anon_vma(vma: Vma) -> Optional[AnonVma]:
    from .mmap import find_mergeable_anon_vma
    return find_mergeable_anon_vma(vma)


# ---------------------------------------------------------------------------------------------
# anon_vma lifetime and linking.

def anon_vma_alloc(kernel) -> Optional[AnonVma]:
    """A new, empty anon_vma; None when allocation fails
    (:func:`pyrmap.mmu_notifier.fail_allocations` is the test hook)."""
    if allocation_fails(kernel):
        return None
    kernel.stats["rmap_anon_vma_alloc"] += 1
    return AnonVma(kernel)


def anon_vma_free(anon_vma: AnonVma) -> None:
    if anon_vma.head:
        raise KernelBug(f"freeing {anon_vma!r} whose VMA list is not empty")
    anon_vma.freed = True
    anon_vma.kernel.stats["rmap_anon_vma_free"] += 1


def anon_vma_prepare(vma: Vma) -> int:
    """Make sure ``vma`` has an anon_vma before an anonymous page is mapped in it.

    Caller holds ``mmap_sem`` (read suffices).  Fast path: ``vma.anon_vma`` is set, nothing
    is locked.  Otherwise an adjacent VMA's anon_vma is reused or a new one allocated, and
    installed under ``mm.page_table_lock`` (two threads faulting the same VMA install one).
    The chosen anon_vma's lock is held while the VMA is added to its list, for a new anon_vma
    too (d9d332e0874f); with ``kernel.quirks.anon_vma_prepare_unlocked`` only a reused one is
    locked, as in the 2008 text.

    Returns
    -------
    int
        0, or ``-ENOMEM`` if no anon_vma could be allocated.
    """
    anon_vma = vma.anon_vma
    if anon_vma is not None:
        return 0
    mm = vma.vm_mm
    kernel = mm.kernel
    allocated = None
    anon_vma = _find_mergeable_anon_vma(vma)
    if anon_vma is None:
        anon_vma = anon_vma_alloc(kernel)
        if anon_vma is None:
            return -ENOMEM
        allocated = anon_vma
    # With the quirk (2008) a newly allocated anon_vma is linked without its lock.
    unlocked = allocated is not None and kernel.quirks.anon_vma_prepare_unlocked
    if not unlocked:
        anon_vma.lock.acquire()
    try:
        with mm.page_table_lock:
            if vma.anon_vma is None:
                vma.anon_vma = anon_vma
                anon_vma.head.append(vma)
                allocated = None
    finally:
        if not unlocked:
            anon_vma.lock.release()
    if allocated is not None:
        anon_vma_free(allocated)
    return 0


def __anon_vma_merge(vma: Vma, next: Vma) -> None:
    """``next`` is being swallowed by ``vma`` (vma_adjust): take it off the anon_vma list.

    Caller holds mmap_sem for write and the anon_vma lock.  Both VMAs must share one
    anon_vma."""
    if vma.anon_vma is not next.anon_vma:
        raise KernelBug(f"__anon_vma_merge of {next!r} into {vma!r}: anon_vma "
                        f"{next.anon_vma!r} is not {vma.anon_vma!r}")
    next.anon_vma.head.remove(next)


def __anon_vma_link(vma: Vma) -> None:
    """Add ``vma`` to its anon_vma's list (if it has one).  Caller holds ``anon_vma->lock``."""
    anon_vma = vma.anon_vma
    if anon_vma is not None:
        if not anon_vma.lock.held_by_me():
            raise KernelBug(f"__anon_vma_link({vma!r}) without {anon_vma!r}'s lock")
        anon_vma.head.append(vma)


def anon_vma_link(vma: Vma) -> None:
    """Add ``vma`` to its anon_vma's list under the anon_vma lock (fork, split)."""
    anon_vma = vma.anon_vma
    if anon_vma is not None:
        with anon_vma.lock:
            anon_vma.head.append(vma)


def anon_vma_unlink(vma: Vma) -> None:
    """Take ``vma`` off its anon_vma's list; free the anon_vma when the list becomes empty
    (no mapped page can point to an anon_vma without VMAs).  Takes ``anon_vma->lock``."""
    anon_vma = vma.anon_vma
    if anon_vma is None:
        return
    with anon_vma.lock:
        anon_vma.head.remove(vma)
        empty = not anon_vma.head
    if empty:
        anon_vma_free(anon_vma)


def page_lock_anon_vma(page: Page) -> Optional[AnonVma]:
    """Lock the anon_vma of a mapped anonymous page, or return None.

    Reads ``page.mapping`` once; returns None for a file page or an unmapped page.  The page
    was mapped when checked, so its anon_vma's list was not empty and it cannot have been
    freed before the lock is taken; it may have been emptied since, so callers must tolerate
    VMAs that no longer map the page.  Release with :func:`page_unlock_anon_vma`.
    """
    anon_mapping = page.mapping
    if not isinstance(anon_mapping, AnonVma):
        return None
    if not page_mapped(page):
        return None
    anon_mapping.lock.acquire()
    return anon_mapping


def page_unlock_anon_vma(anon_vma: AnonVma) -> None:
    anon_vma.lock.release()


# ---------------------------------------------------------------------------------------------
# Addresses and ptes.

def vma_address(page: Page, vma: Vma) -> int:
    """User virtual address of ``page`` in ``vma``, or ``-EFAULT`` if its index falls outside
    the VMA.  Pure."""
    address = vma.vm_start + ((page.index - vma.vm_pgoff) << PAGE_SHIFT)
    if address < vma.vm_start or address >= vma.vm_end:
        return -EFAULT
    return address


def page_address_in_vma(page: Page, vma: Vma) -> int:
    """:func:`vma_address` after checking that ``vma`` maps ``page``'s object: the same
    anon_vma for an anonymous page, the same file (and a linear VMA) for a file page.

    Returns the address or ``-EFAULT``."""
    if PageAnon(page):
        if vma.anon_vma is not page.mapping:
            return -EFAULT
    elif page.mapping is not None and not vma.vm_flags & VM_NONLINEAR:
        if vma.vm_file is None or vma.vm_file is not page.mapping:
            return -EFAULT
    else:
        return -EFAULT
    return vma_address(page, vma)


def page_check_address(page: Page, mm, address: int):
    """Check that ``page`` is mapped at ``address`` in ``mm``.

    Walks the upper levels (None if one is not present), takes the pte lock and checks that
    the pte is present and maps ``page``.  With ``kernel.quirks.page_check_address_lockless``
    a pte that looks not-present *before* the lock is taken is skipped without the lock (the
    2008 fast path, bug 479db0bf408e): a pte transiently cleared under the lock is missed.

    Returns
    -------
    (int, Lock) or None
        ``(ptep, ptl)`` with ``ptl`` held: release it with :func:`pte_unmap_unlock`.
    """
    kernel = mm.kernel
    arch = kernel.arch
    ptep = pte_offset(mm, address)
    if ptep is None:
        return None
    if kernel.quirks.page_check_address_lockless:
        if not pte_present(arch.pte_load(ptep)):
            kernel.stats["rmap_lockless_skip"] += 1
            return None
    ptl = pte_lockptr(mm, address)
    ptl.acquire()
    pte = arch.pte_load(ptep)
    if pte_present(pte) and pte_pfn(pte) == page.pfn:
        return ptep, ptl
    ptl.release()
    return None


def pte_unmap_unlock(ptep: int, ptl) -> None:
    ptl.release()


# ---------------------------------------------------------------------------------------------
# The walks.

class RmapWalkControl:
    """What an rmap walk does at each VMA and when it stops (one object per walk).

    Subclass it, or pass callables.

    Parameters
    ----------
    rmap_one : callable(page, vma) -> bool
        Called for each VMA that passes ``skip``, with the rmap lock held; returns True to
        stop the walk.
    skip : callable(vma) -> bool, optional
        True to pass a VMA by (the memory-cgroup filter, page_mkclean's VM_SHARED test).
    locked : callable(page), optional
        Called once the rmap lock is taken, before the first VMA (snapshot of the mapcount).
    nonlinear : callable(page, mapping), optional
        File walks only: called with ``i_mmap_lock`` held after the linear VMAs, when the
        walk was not stopped and ``mapping.i_mmap_nonlinear`` is not empty.
    """

    def __init__(self, rmap_one: Callable[[Page, Vma], bool],
                 skip: Optional[Callable[[Vma], bool]] = None,
                 locked: Optional[Callable[[Page], None]] = None,
                 nonlinear: Optional[Callable[[Page, AddressSpace], None]] = None):
        self.rmap_one = rmap_one
        self.skip = skip
        self.locked = locked
        self.nonlinear = nonlinear


def rmap_walk_anon(page: Page, rwc: RmapWalkControl) -> bool:
    """Walk the VMAs of ``page``'s anon_vma under ``anon_vma->lock``.

    Returns False (and calls nothing) when the page is not a mapped anonymous page."""
    anon_vma = page_lock_anon_vma(page)
    if anon_vma is None:
        return False
    try:
        if rwc.locked is not None:
            rwc.locked(page)
        for vma in list(anon_vma.head):
            if rwc.skip is not None and rwc.skip(vma):
                continue
            if rwc.rmap_one(page, vma):
                break
    finally:
        page_unlock_anon_vma(anon_vma)
    return True


def rmap_walk_file(page: Page, rwc: RmapWalkControl) -> bool:
    """Walk the linear VMAs of ``page.mapping`` that cover ``page.index`` (the i_mmap
    interval index), then the nonlinear ones through ``rwc.nonlinear``, under
    ``mapping.i_mmap_lock``.  Caller keeps ``page.mapping`` stable (holds the page lock).

    Returns True when a ``rmap_one`` stopped the walk."""
    mapping = page.mapping
    pgoff = page.index
    stopped = False
    with mapping.i_mmap_lock:
        if rwc.locked is not None:
            rwc.locked(page)
        for vma in mapping.i_mmap.stab(pgoff):
            if rwc.skip is not None and rwc.skip(vma):
                continue
            if rwc.rmap_one(page, vma):
                stopped = True
                break
        if not stopped and rwc.nonlinear is not None and mapping.i_mmap_nonlinear:
            rwc.nonlinear(page, mapping)
    return stopped


def _memcg_skip(mem_cont):
    if mem_cont is None:
        return None
    return lambda vma: not mm_match_cgroup(vma.vm_mm, mem_cont)


# ---------------------------------------------------------------------------------------------
# page_referenced

def page_referenced_one(page: Page, vma: Vma, mapcount: Ref) -> int:
    """Age the pte mapping ``page`` in ``vma``; returns 1 or 2 if referenced, else 0.

    Caller holds the rmap lock (anon_vma->lock or i_mmap_lock).  Takes the pte lock.  In a
    VM_LOCKED VMA the page counts as referenced and ``mapcount`` is set to 1 so the caller
    stops, without touching A.  Otherwise A is test-and-cleared with
    ``ptep_clear_flush_young_notify`` (CPU TLB flushed if A was set, every secondary MMU's
    ``clear_flush_young`` OR-ed in).  A task holding the swap token whose mmap_sem is held (a
    fault in progress) counts one more, unless it is the current task's mm.  ``mapcount`` is
    decremented for every pte found.
    """
    mm = vma.vm_mm
    stats = mm.kernel.stats
    referenced = 0
    address = vma_address(page, vma)
    if address == -EFAULT:
        return 0
    found = page_check_address(page, mm, address)
    if found is None:
        return 0
    ptep, ptl = found
    try:
        stats["rmap_ptes_aged"] += 1
        if vma.vm_flags & VM_LOCKED:
            referenced += 1
            mapcount.value = 1          # break early from the loop
            stats["rmap_referenced_locked"] += 1
        elif ptep_clear_flush_young_notify(vma, address, ptep):
            referenced += 1
            stats["rmap_young_found"] += 1
        if (mm is not _current_mm(mm.kernel) and _has_swap_token(mm)
                and mm.mmap_sem.is_locked()):
            referenced += 1
            stats["rmap_swap_token_refs"] += 1
        mapcount.value -= 1
    finally:
        pte_unmap_unlock(ptep, ptl)
    return referenced


def page_referenced_anon(page: Page, mem_cont) -> int:
    """Referenced ptes of an anonymous page over its anon_vma (memcg-filtered); stops when
    every mapping was found.  Takes ``anon_vma->lock``."""
    referenced = 0
    mapcount = Ref()

    def locked(page):
        mapcount.value = page_mapcount(page)

    def one(page, vma):
        nonlocal referenced
        referenced += page_referenced_one(page, vma, mapcount)
        return mapcount.value == 0

    rmap_walk_anon(page, RmapWalkControl(one, _memcg_skip(mem_cont), locked))
    return referenced


def page_referenced_file(page: Page, mem_cont) -> int:
    """Referenced ptes of a file page over ``mapping.i_mmap`` (memcg-filtered).

    Caller holds the page lock (:class:`KernelBug` otherwise), which keeps ``page.mapping``
    alive; takes ``i_mmap_lock``.  A VM_LOCKED shared VMA counts once and stops the walk.
    Nonlinear VMAs are not searched."""
    if PageAnon(page):
        raise KernelBug(f"page_referenced_file on anonymous {page!r}")
    if not PageLocked(page):
        raise KernelBug(f"page_referenced_file on unlocked {page!r}")
    referenced = 0
    mapcount = Ref()

    def locked(page):
        mapcount.value = page_mapcount(page)

    def one(page, vma):
        nonlocal referenced
        if vma.vm_flags & (VM_LOCKED | VM_MAYSHARE) == VM_LOCKED | VM_MAYSHARE:
            referenced += 1
            return True
        referenced += page_referenced_one(page, vma, mapcount)
        return mapcount.value == 0

    rmap_walk_file(page, RmapWalkControl(one, _memcg_skip(mem_cont), locked))
    return referenced


def page_referenced(page: Page, is_locked: int, mem_cont) -> int:
    """Test and clear the referenced state of ``page`` over all its mappings.

    ``is_locked``: the caller holds the page lock (shrink_page_list); otherwise a file page is
    trylocked for the walk, and a page someone else holds locked counts as referenced.
    ``mem_cont``: only ptes of mms in that memory cgroup are examined (None: all).

    Returns
    -------
    int
        Number of references found (PG_referenced, young ptes, locked VMAs, swap token).
    """
    kernel = page.kernel
    kernel.stats["rmap_page_referenced"] += 1
    kernel.arch.notify("page_referenced_start", page=page, mapped=page_mapped(page))
    referenced = 0
    if page.test_and_clear(PG.referenced):
        referenced += 1
    if page_mapped(page) and page.mapping is not None:
        if PageAnon(page):
            referenced += page_referenced_anon(page, mem_cont)
        elif is_locked:
            referenced += page_referenced_file(page, mem_cont)
        elif not trylock_page(page):
            referenced += 1
        else:
            try:
                if page.mapping is not None:
                    referenced += page_referenced_file(page, mem_cont)
            finally:
                unlock_page(page)
    # page_test_and_clear_young: s390 storage keys only, 0 here.
    kernel.arch.notify("page_referenced_end", page=page, referenced=referenced)
    return referenced


# ---------------------------------------------------------------------------------------------
# page_mkclean

def page_mkclean_one(page: Page, vma: Vma) -> int:
    """Write-protect and clean the pte mapping ``page`` in ``vma``; 1 if it was dirty or
    writable.

    Caller holds ``i_mmap_lock``; takes the pte lock.  The pte is cleared atomically, the CPU
    TLBs flushed and secondary MMUs invalidated (``ptep_clear_flush_notify``), and only then
    the read-only clean value stored, so no D bit set meanwhile can be lost and the next
    write from anywhere faults."""
    mm = vma.vm_mm
    kernel = mm.kernel
    ret = 0
    address = vma_address(page, vma)
    if address == -EFAULT:
        return 0
    found = page_check_address(page, mm, address)
    if found is None:
        return 0
    ptep, ptl = found
    try:
        pte = kernel.arch.pte_load(ptep)
        if pte_dirty(pte) or pte_write(pte):
            entry = ptep_clear_flush_notify(vma, address, ptep)
            entry = pte_wrprotect(entry)
            entry = pte_mkclean(entry)
            kernel.arch.set_pte_at(mm, address, ptep, entry)
            kernel.stats["rmap_ptes_cleaned"] += 1
            ret = 1
    finally:
        pte_unmap_unlock(ptep, ptl)
    return ret


def page_mkclean_file(mapping: AddressSpace, page: Page) -> int:
    """:func:`page_mkclean_one` over the shared (VM_SHARED) linear VMAs of ``mapping`` at
    ``page.index``; takes ``i_mmap_lock``.  Returns the number of ptes cleaned."""
    if PageAnon(page):
        raise KernelBug(f"page_mkclean_file on anonymous {page!r}")
    ret = 0

    def one(page, vma):
        nonlocal ret
        ret += page_mkclean_one(page, vma)
        return False

    rmap_walk_file(page, RmapWalkControl(one, skip=lambda vma: not vma.vm_flags & VM_SHARED))
    return ret


def page_mkclean(page: Page) -> int:
    """Make every shared mapping of a file page clean and read-only (writeback).

    Caller holds the page lock (:class:`KernelBug` otherwise).  On return every VM_SHARED pte
    of the page is clean and write-protected in memory, no CPU TLB holds a writable or dirty
    translation of it and secondary MMUs dropped theirs, so the next write faults.

    Returns
    -------
    int
        Nonzero if any pte was dirty or writable (the caller then calls set_page_dirty).
    """
    if not PageLocked(page):
        raise KernelBug(f"page_mkclean on unlocked {page!r}")
    page.kernel.stats["rmap_page_mkclean"] += 1
    ret = 0
    if page_mapped(page):
        mapping = page_mapping(page)
        if mapping is not None:
            ret = page_mkclean_file(mapping, page)
    page.kernel.arch.notify("returned", op="page_mkclean", kind="wrprotect", mm=None, start=0,
                            end=0, page=page)
    return ret


# ---------------------------------------------------------------------------------------------
# Adding and removing mappings.

def __page_set_anon_rmap(page: Page, vma: Vma, address: int) -> None:
    anon_vma = vma.anon_vma
    if anon_vma is None:
        raise KernelBug(f"anonymous rmap for {page!r} in {vma!r}, which has no anon_vma "
                        "(anon_vma_prepare not called)")
    page.mapping = anon_vma
    page.index = vma.linear_page_index(address)
    page.kernel.stats["NR_ANON_PAGES"] += 1


def __page_check_anon_rmap(page: Page, vma: Vma, address: int) -> None:
    if page.mapping is not vma.anon_vma:
        raise KernelBug(f"{page!r} maps anon_vma {page.mapping!r}, not {vma!r}'s "
                        f"{vma.anon_vma!r}")
    if page.index != vma.linear_page_index(address):
        raise KernelBug(f"{page!r} has index {page.index}, but 0x{address:x} in {vma!r} is "
                        f"index {vma.linear_page_index(address)}")


def _check_address(fn: str, vma: Vma, address: int) -> None:
    if not vma.contains(address):
        raise KernelBug(f"{fn}: address 0x{address:x} is outside {vma!r}")


def page_add_anon_rmap(page: Page, vma: Vma, address: int) -> None:
    """Account one more pte mapping an anonymous page (swap-in, swapoff, migration).

    Caller holds the pte lock and the page lock (:class:`KernelBug` without it).  On the
    first mapping the page gets ``vma``'s anon_vma and its linear index."""
    if not PageLocked(page):
        raise KernelBug(f"page_add_anon_rmap without the page lock: {page!r}")
    _check_address("page_add_anon_rmap", vma, address)
    page._mapcount += 1
    if page._mapcount == 0:
        __page_set_anon_rmap(page, vma, address)
    else:
        __page_check_anon_rmap(page, vma, address)


def page_add_new_anon_rmap(page: Page, vma: Vma, address: int) -> None:
    """First mapping of a brand-new anonymous page nobody else can see yet (anonymous fault,
    COW).  Caller holds the pte lock and called :func:`anon_vma_prepare`; the page need not
    be locked."""
    _check_address("page_add_new_anon_rmap", vma, address)
    page._mapcount = 0
    __page_set_anon_rmap(page, vma, address)


def page_add_file_rmap(page: Page) -> None:
    """Account one more pte mapping a file page.  Caller holds the pte lock."""
    page._mapcount += 1
    if page._mapcount == 0:
        page.kernel.stats["NR_FILE_MAPPED"] += 1


def page_dup_rmap(page: Page, vma: Vma, address: int) -> None:
    """fork (copy_one_pte): one more pte for a page that is already mapped.

    Caller holds both pte locks.  :class:`KernelBug` if the page is not mapped."""
    if page_mapcount(page) == 0:
        raise KernelBug(f"page_dup_rmap of an unmapped page: {page!r}")
    if PageAnon(page):
        __page_check_anon_rmap(page, vma, address)
    page._mapcount += 1


def page_remove_rmap(page: Page, vma: Vma) -> None:
    """Account one pte fewer mapping ``page`` (the caller already cleared that pte).

    Caller holds the pte lock.  Flushes nothing and frees nothing: the caller flushes the TLB
    before dropping the page reference.  ``page.mapping`` is left as it is.

    Raises
    ------
    BadPageState
        The mapcount went negative (more unmaps than maps).
    """
    page._mapcount -= 1
    if page._mapcount < 0:
        if page_mapcount(page) < 0:
            page.kernel.stats["rmap_bad_page_state"] += 1
            raise BadPageState(page, vma)
        page.kernel.stats["NR_ANON_PAGES" if PageAnon(page) else "NR_FILE_MAPPED"] -= 1


# ---------------------------------------------------------------------------------------------
# try_to_unmap

def try_to_unmap_one(page: Page, vma: Vma, migration: int) -> int:
    """Unmap ``page`` from ``vma``.

    Caller holds the rmap lock; takes the pte lock.  Unless migrating, a VM_LOCKED VMA or a
    young pte (A cleared here, secondary MMUs asked too) fails.  Otherwise the pte is cleared
    with ``ptep_clear_flush_notify`` (every CPU TLB flushed, then ``invalidate_page``, still
    under the pte lock); a dirty bit in the value the atomic clear returned moves to the page
    (set_page_dirty).  An anonymous page in the swap cache leaves a swap entry (the slot gains
    a user, the mm goes on the mmlist, ``anon_rss`` drops); any other anonymous page must be
    migrating and leaves a migration entry; a file page leaves a migration entry when
    migrating, else an empty pte (``file_rss`` drops).  Then the mapcount and the pte's page
    reference are dropped.

    Returns
    -------
    int
        ``SWAP_AGAIN`` (also when the VMA does not map the page) or ``SWAP_FAIL``.
    """
    mm = vma.vm_mm
    kernel = mm.kernel
    arch = kernel.arch
    stats = kernel.stats
    ret = SWAP_AGAIN
    address = vma_address(page, vma)
    if address == -EFAULT:
        return ret
    found = page_check_address(page, mm, address)
    if found is None:
        return ret
    ptep, ptl = found
    try:
        if not migration and (vma.vm_flags & VM_LOCKED
                              or ptep_clear_flush_young_notify(vma, address, ptep)):
            stats["rmap_unmap_fail_locked" if vma.vm_flags & VM_LOCKED
                  else "rmap_unmap_fail_young"] += 1
            return SWAP_FAIL
        pteval = ptep_clear_flush_notify(vma, address, ptep)
        if pte_dirty(pteval):
            _set_page_dirty(page)
            stats["rmap_dirty_transferred"] += 1
        _update_hiwater_rss(mm)
        if PageAnon(page):
            if _PageSwapCache(page):
                entry = page.private
                _swap_duplicate(kernel, entry)
                _mmlist_add(mm)
                mm.anon_rss -= 1
                stats["rmap_swap_ptes"] += 1
            else:
                if not migration:
                    raise KernelBug(f"try_to_unmap of anonymous {page!r} that is neither in "
                                    "the swap cache nor being migrated")
                entry = make_migration_entry(page.pfn, pte_write(pteval))
                stats["rmap_migration_ptes"] += 1
            swp_pte = swp_entry_to_pte(entry)
            if pte_file(swp_pte):
                raise KernelBug(f"swap entry {entry} at 0x{address:x} encodes as a file pte")
            arch.set_pte_at(mm, address, ptep, swp_pte)
        elif migration:
            entry = make_migration_entry(page.pfn, pte_write(pteval))
            arch.set_pte_at(mm, address, ptep, swp_entry_to_pte(entry))
            stats["rmap_migration_ptes"] += 1
        else:
            mm.file_rss -= 1
        page_remove_rmap(page, vma)
        page_cache_release(page)
        stats["rmap_unmapped"] += 1
    finally:
        pte_unmap_unlock(ptep, ptl)
    return ret


def try_to_unmap_cluster(cursor: int, mapcount: Ref, vma: Vma) -> None:
    """Age and unmap every present pte in one CLUSTER_SIZE chunk of a nonlinear VMA.

    ``cursor`` is an offset from ``vma.vm_start``; the chunk is the CLUSTER_SIZE-aligned one
    containing it, clipped to the VMA.  Caller holds ``i_mmap_lock``; takes the pte lock for
    the chunk.  Young ptes are spared (A cleared); the others are cleared with a flush and
    ``invalidate_page``, a file pte recording the page's offset is left where the page is not
    at its linear index, the dirty bit moves to the page, and ``mapcount`` drops for each.
    Pages other than the one reclaim came for are unmapped too.
    """
    mm = vma.vm_mm
    kernel = mm.kernel
    arch = kernel.arch
    stats = kernel.stats
    address = (vma.vm_start + cursor) & CLUSTER_MASK
    end = address + CLUSTER_SIZE
    if address < vma.vm_start:
        address = vma.vm_start
    if end > vma.vm_end:
        end = vma.vm_end
    ptep = pte_offset(mm, address)
    if ptep is None:
        return
    ptl = pte_lockptr(mm, address)
    ptl.acquire()
    try:
        _update_hiwater_rss(mm)
        stats["rmap_clusters_scanned"] += 1
        while address < end:
            pte = arch.pte_load(ptep)
            if pte_present(pte):
                page = _vm_normal_page(vma, address, pte)
                if page is None or PageAnon(page):
                    raise KernelBug(f"try_to_unmap_cluster: pte {pte:#x} at 0x{address:x} in "
                                    f"nonlinear {vma!r} does not map a file page ({page!r})")
                if ptep_clear_flush_young_notify(vma, address, ptep):
                    stats["rmap_cluster_young"] += 1
                else:
                    pteval = ptep_clear_flush_notify(vma, address, ptep)
                    if page.index != vma.linear_page_index(address):
                        arch.set_pte_at(mm, address, ptep, pgoff_to_pte(page.index))
                    if pte_dirty(pteval):
                        _set_page_dirty(page)
                        stats["rmap_dirty_transferred"] += 1
                    page_remove_rmap(page, vma)
                    page_cache_release(page)
                    mm.file_rss -= 1
                    mapcount.value -= 1
                    stats["rmap_unmapped"] += 1
                    stats["rmap_cluster_unmapped"] += 1
            ptep += PTE_SIZE
            address += PAGE_SIZE
    finally:
        ptl.release()


def try_to_unmap_anon(page: Page, migration: int) -> int:
    """:func:`try_to_unmap_one` over the anon_vma's VMAs until one fails or the page is no
    longer mapped.  Takes ``anon_vma->lock``.  Returns the last VMA's result (SWAP_AGAIN if
    the anon_vma could not be locked)."""
    ret = SWAP_AGAIN

    def one(page, vma):
        nonlocal ret
        ret = try_to_unmap_one(page, vma, migration)
        return ret == SWAP_FAIL or not page_mapped(page)

    rmap_walk_anon(page, RmapWalkControl(one))
    return ret


def _try_to_unmap_nonlinear(page: Page, mapping: AddressSpace, migration: int) -> int:
    """The nonlinear part of try_to_unmap_file (i_mmap_lock held): scan every unlocked
    nonlinear VMA in CLUSTER_SIZE steps, advancing each VMA's cursor (``vm_private_data``) up
    to a common bound that grows by one cluster per round, until the page's mapcount budget is
    spent or every VMA was scanned to its end; then reset every cursor."""
    kernel = mapping.kernel
    arch = kernel.arch

    def eligible(vma):
        return migration or not vma.vm_flags & VM_LOCKED

    max_nl_cursor = 0
    max_nl_size = 0
    for vma in mapping.i_mmap_nonlinear:
        if not eligible(vma):
            continue
        max_nl_cursor = max(max_nl_cursor, vma.vm_private_data)
        max_nl_size = max(max_nl_size, vma.vm_end - vma.vm_start)
    if max_nl_size == 0:                # every nonlinear VMA is locked
        return SWAP_FAIL

    mapcount = Ref(page_mapcount(page))
    if not mapcount.value:
        return SWAP_AGAIN
    cond_resched_lock(mapping.i_mmap_lock, arch)
    max_nl_size = (max_nl_size + CLUSTER_SIZE - 1) & CLUSTER_MASK
    if max_nl_cursor == 0:
        max_nl_cursor = CLUSTER_SIZE

    while True:
        for vma in list(mapping.i_mmap_nonlinear):
            if not eligible(vma):
                continue
            cursor = vma.vm_private_data
            while cursor < max_nl_cursor and cursor < vma.vm_end - vma.vm_start:
                try_to_unmap_cluster(cursor, mapcount, vma)
                cursor += CLUSTER_SIZE
                vma.vm_private_data = cursor
                if mapcount.value <= 0:
                    return SWAP_AGAIN
            vma.vm_private_data = max_nl_cursor
        cond_resched_lock(mapping.i_mmap_lock, arch)
        max_nl_cursor += CLUSTER_SIZE
        if max_nl_cursor > max_nl_size:
            break
    # Don't loop forever (the remaining pages may be in locked VMAs): forget the cursors.
    for vma in mapping.i_mmap_nonlinear:
        vma.vm_private_data = 0
    return SWAP_AGAIN


def try_to_unmap_file(page: Page, migration: int) -> int:
    """:func:`try_to_unmap_one` over the linear VMAs of ``page.mapping`` at ``page.index``,
    then a cluster scan of the nonlinear VMAs.  Takes ``i_mmap_lock``.

    Returns ``SWAP_FAIL`` when a linear VMA failed or every nonlinear VMA is locked, else
    ``SWAP_AGAIN`` (try_to_unmap turns it into SWAP_SUCCESS if the page ended up unmapped)."""
    ret = SWAP_AGAIN

    def one(page, vma):
        nonlocal ret
        ret = try_to_unmap_one(page, vma, migration)
        return ret == SWAP_FAIL or not page_mapped(page)

    def nonlinear(page, mapping):
        nonlocal ret
        ret = _try_to_unmap_nonlinear(page, mapping, migration)

    rmap_walk_file(page, RmapWalkControl(one, nonlinear=nonlinear))
    return ret


def try_to_unmap(page: Page, migration: int) -> int:
    """Try to remove every pte mapping ``page`` (reclaim, or migration when ``migration``).

    Caller holds the page lock (:class:`KernelBug` otherwise).  Every pte removed was cleared
    atomically, flushed from every CPU TLB and invalidated in every secondary MMU before its
    page reference was dropped.

    Returns
    -------
    int
        ``SWAP_SUCCESS``: the page is no longer mapped; ``SWAP_AGAIN``: a mapping could not
        be removed now; ``SWAP_FAIL``: the page is unswappable (mlocked or recently used).
    """
    if not PageLocked(page):
        raise KernelBug(f"try_to_unmap on unlocked {page!r}")
    kernel = page.kernel
    kernel.stats["rmap_try_to_unmap"] += 1
    kernel.arch.notify("try_to_unmap_start", page=page, migration=migration)
    if PageAnon(page):
        ret = try_to_unmap_anon(page, migration)
    else:
        ret = try_to_unmap_file(page, migration)
    if not page_mapped(page):
        ret = SWAP_SUCCESS
    kernel.arch.notify("try_to_unmap_end", page=page, migration=migration, result=ret)
    kernel.arch.notify("returned", op="try_to_unmap", kind="unmap", mm=None, start=0, end=0,
                       page=page)
    return ret

