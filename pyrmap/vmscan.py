"""Page reclaim: the LRU lists, aging with page_referenced, and pageout (mm/vmscan.c, swap.c).

The 2008 two-list LRU: every user page (anonymous or page cache) is on the *active* or the
*inactive* list (``kernel.lru``, created on first use).  Aging (:func:`shrink_active_list`)
moves the oldest active pages that no PTE referenced since the last scan to the inactive list;
``page_referenced`` clears the A bit of every PTE mapping the page *through the MMU* (and, with
``clear_flush_young_notify``, flushes the TLBs and asks the secondary MMUs), so a page that a
CPU touches between two scans is found referenced again.  Reclaim (:func:`shrink_page_list`)
takes the oldest inactive pages: a referenced one is activated, an anonymous one gets a swap
slot, ``try_to_unmap`` removes every PTE (installing swap entries), a dirty page is written
back, and the page leaves the swap or page cache and is freed.

Lists are ordered oldest first.  The LRU holds no page reference (as in the kernel); a page
that was freed while on a list (its ``PG.lru`` bit is cleared with all flags when the frame is
freed) is dropped from the list lazily when a scan or an add meets it.

Every step is counted in ``kernel.stats`` under ``vmscan_*`` names: scanned, aged, referenced,
deactivated, activated, unmapped, written, swapped_out, freed, kept, unmap_again, unmap_fail,
no_swap.

Locking: ``lru.lru_lock`` (class "lru_lock") protects the lists and is held only for list
operations, never across rmap calls.  Reclaim takes page locks with trylock, so it may run while
another thread holds any page lock; it must be entered with no spinlock held (no pte lock,
anon_vma lock or i_mmap_lock): :func:`alloc_page_reclaim` is to be called where the kernel
calls ``alloc_page``, before the pte lock is taken.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from .mm_types import PG, Page, PageAnon, page_mapped
from .pagemap import trylock_page, unlock_page
from .physmem import OutOfMemory

__all__ = [
    "Lru", "get_lru", "lru_cache_add", "lru_cache_add_active", "mark_page_accessed",
    "activate_page", "isolate_lru_page", "putback_lru_page", "del_page_from_lru",
    "shrink_active_list", "shrink_inactive_list", "shrink_page_list", "shrink_zone",
    "try_to_free_pages", "balance", "alloc_page_reclaim", "remove_mapping",
    "SWAP_CLUSTER_MAX", "DEF_PRIORITY",
]

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12


class Lru:
    """The active and inactive lists of one kernel (one zone).

    Members
    -------
    active, inactive : OrderedDict[int, Page]
        pfn -> page, oldest first.
    lru_lock : Lock
        Protects both lists and the ``PG.lru``/``PG.active`` bits of pages on them.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.active: OrderedDict[int, Page] = OrderedDict()
        self.inactive: OrderedDict[int, Page] = OrderedDict()
        self.lru_lock = kernel.arch.new_lock("lru_lock")

    def _list(self, page: Page) -> OrderedDict:
        return self.active if page.test(PG.active) else self.inactive

    def _valid(self, page: Page) -> bool:
        return page.test(PG.lru) and page._count > 0

    def _drop_stale(self, pfn: int) -> None:
        self.active.pop(pfn, None)
        self.inactive.pop(pfn, None)

    def nr_active(self) -> int:
        return sum(1 for p in self.active.values() if self._valid(p))

    def nr_inactive(self) -> int:
        return sum(1 for p in self.inactive.values() if self._valid(p))

    def contents(self) -> tuple[list[int], list[int]]:
        """(active pfns, inactive pfns), oldest first, stale entries left out."""
        with self.lru_lock:
            return ([pfn for pfn, p in self.active.items() if self._valid(p)],
                    [pfn for pfn, p in self.inactive.items() if self._valid(p)])

    def __repr__(self) -> str:
        return f"<Lru active={self.nr_active()} inactive={self.nr_inactive()}>"


def get_lru(kernel) -> Lru:
    if kernel.lru is None:
        kernel.lru = Lru(kernel)
    return kernel.lru


# ---------------------------------------------------------------------------------------------
# Adding, activating, isolating

def _add(page: Page, active: bool) -> None:
    lru = get_lru(page.kernel)
    if page._count <= 0:
        raise AssertionError(f"LRU add of a free page: {page!r}")
    if page.test(PG.pagetable):
        raise AssertionError(f"LRU add of a page-table page: {page!r}")
    with lru.lru_lock:
        if page.test(PG.lru):
            raise AssertionError(f"LRU add of a page already on the LRU: {page!r}")
        lru._drop_stale(page.pfn)
        page.set(PG.lru)
        if active:
            page.set(PG.active)
        else:
            page.clear(PG.active)
        lru._list(page)[page.pfn] = page


def lru_cache_add(page: Page) -> None:
    """Put a new page on the inactive list (page-cache pages, at read)."""
    _add(page, False)


def lru_cache_add_active(page: Page) -> None:
    """Put a new page on the active list (anonymous pages, at fault and swap-in)."""
    _add(page, True)


def activate_page(page: Page) -> None:
    """Move a page that is on the inactive list to the head of the active list."""
    lru = get_lru(page.kernel)
    with lru.lru_lock:
        if page.test(PG.lru) and not page.test(PG.active):
            lru.inactive.pop(page.pfn, None)
            page.set(PG.active)
            lru.active[page.pfn] = page
            page.kernel.stats["vmscan_activated"] += 1


def mark_page_accessed(page: Page) -> None:
    """A use not seen by the A bit (read(), a page-cache lookup): inactive,unreferenced ->
    inactive,referenced -> active,unreferenced."""
    if not page.test(PG.active) and page.test(PG.referenced) and page.test(PG.lru):
        activate_page(page)
        page.clear(PG.referenced)
    elif not page.test(PG.referenced):
        page.set(PG.referenced)


def isolate_lru_page(page: Page) -> int:
    """Take a page off the LRU for reclaim or migration; the caller gets a page reference.
    Returns 0, or -EBUSY (-16) when the page is not on the LRU."""
    lru = get_lru(page.kernel)
    with lru.lru_lock:
        if not lru._valid(page):
            lru._drop_stale(page.pfn)
            return -16
        lru._list(page).pop(page.pfn, None)
        page.clear(PG.lru)
        page.kernel.get_page(page)
    return 0


def putback_lru_page(page: Page) -> None:
    """Return an isolated page to the list its ``PG.active`` bit names, and drop the reference
    :func:`isolate_lru_page` gave."""
    lru = get_lru(page.kernel)
    with lru.lru_lock:
        if page.test(PG.lru):
            raise AssertionError(f"putback of a page already on the LRU: {page!r}")
        lru._drop_stale(page.pfn)
        page.set(PG.lru)
        lru._list(page)[page.pfn] = page
    page.kernel.put_page(page)


def del_page_from_lru(page: Page) -> None:
    """Take a page off the LRU for good (no reference change)."""
    lru = get_lru(page.kernel)
    with lru.lru_lock:
        lru._drop_stale(page.pfn)
        page.clear(PG.lru)
        page.clear(PG.active)


def _isolate_lru_pages(kernel, nr: int, active: bool) -> tuple[list[Page], int]:
    """Take up to ``nr`` pages from the old end of a list (each with a reference).  Returns the
    pages and the number of entries scanned."""
    lru = get_lru(kernel)
    src = lru.active if active else lru.inactive
    taken: list[Page] = []
    scanned = 0
    with lru.lru_lock:
        for pfn in list(src.keys()):
            if len(taken) >= nr:
                break
            page = src[pfn]
            if not lru._valid(page):
                del src[pfn]
                continue
            if page.test(PG.active) != active:     # on the wrong list: move it where it says
                del src[pfn]
                lru._list(page)[pfn] = page
                continue
            scanned += 1
            del src[pfn]
            page.clear(PG.lru)
            kernel.get_page(page)
            taken.append(page)
    return taken, scanned


# ---------------------------------------------------------------------------------------------
# Aging

def shrink_active_list(kernel, nr_to_scan: int) -> int:
    """Age up to ``nr_to_scan`` of the oldest active pages.  A mapped page that
    ``page_referenced(page, 0, None)`` finds referenced (any PTE had A set; A is cleared and
    the TLBs flushed as it checks) goes back to the head of the active list; every other page
    moves to the inactive list -- except anonymous pages while no swap slot is free, which
    cannot be reclaimed and stay active.  Returns the number deactivated."""
    from .rmap import page_referenced
    from .swap import nr_swap_pages

    pages, scanned = _isolate_lru_pages(kernel, nr_to_scan, True)
    kernel.stats["vmscan_aged"] += scanned
    deactivated = 0
    for page in pages:
        keep_active = False
        if page_mapped(page):
            if PageAnon(page) and not page.test(PG.swapcache) and nr_swap_pages(kernel) == 0:
                keep_active = True
                kernel.stats["vmscan_no_swap"] += 1
            elif page_referenced(page, 0, None):
                keep_active = True
                kernel.stats["vmscan_referenced"] += 1
        if not keep_active:
            page.clear(PG.active)
            page.clear(PG.referenced)
            deactivated += 1
            kernel.stats["vmscan_deactivated"] += 1
        putback_lru_page(page)
    return deactivated


# ---------------------------------------------------------------------------------------------
# Reclaim

def remove_mapping(page: Page) -> bool:
    """Detach a locked, clean, unmapped page from the swap or page cache if nobody but the
    cache and the caller holds a reference.  On success the cache's reference is dropped
    (the caller's remains) and True is returned."""
    from .filemap import page_mapping, remove_from_page_cache
    from .swap import delete_from_swap_cache

    if page.test(PG.dirty) or page.test(PG.writeback) or page_mapped(page):
        return False
    if page._count != 2:
        return False
    if page.test(PG.swapcache):
        delete_from_swap_cache(page)
        return True
    mapping = page_mapping(page)
    if mapping is None or PageAnon(page):
        return False
    remove_from_page_cache(page)
    page.kernel.put_page(page)
    return True


def is_page_cache_freeable(page: Page) -> bool:
    """Only the page (or swap) cache and the isolating reclaim hold the page (2008 pageout's
    test before it writes a page out)."""
    return page._count == 2


def shrink_page_list(kernel, pages: Iterable[Page]) -> tuple[int, list[Page]]:
    """Try to free each isolated page (the caller holds the isolation reference of each).

    Per page, with the page lock taken by trylock (contended -> kept):

    * ``page_referenced(page, 1, None)`` nonzero -> activated;
    * anonymous and not in the swap cache -> ``add_to_swap`` (no slot -> activated);
    * mapped -> ``try_to_unmap(page, 0)``: SWAP_FAIL -> activated, SWAP_AGAIN -> kept,
      SWAP_SUCCESS -> go on (every PTE now a swap entry or gone, every TLB flushed, and every
      dirty PTE's D bit moved into ``PG.dirty``);
    * dirty -> ``clear_page_dirty_for_io`` + ``writepage`` (file pages to the file, swap-cache
      pages to their slot);
    * ``remove_mapping`` -> unlocked and freed; otherwise kept.

    Returns (number freed, pages not freed).  The pages not freed still carry the isolation
    reference and their ``PG.active`` bit says where they go back; the freed ones' references
    are dropped (their frames are free on return)."""
    stats = kernel.stats
    freed = 0
    ret: list[Page] = []
    for page in pages:
        stats["vmscan_scanned"] += 1
        if not trylock_page(page):
            stats["vmscan_kept"] += 1
            ret.append(page)
            continue
        mapped = page_mapped(page)
        verdict = _shrink_one(kernel, page)
        if mapped and not page_mapped(page):
            kernel.arch.notify("reclaim_unmapped", page=page)
        if verdict == "free":
            unlock_page(page)
            kernel.put_page(page)          # the isolation reference: the frame is free now
            freed += 1
            stats["vmscan_freed"] += 1
            continue
        if verdict == "activate":
            page.set(PG.active)
            stats["vmscan_activated"] += 1
        else:
            stats["vmscan_kept"] += 1
        unlock_page(page)
        ret.append(page)
    return freed, ret


def _shrink_one(kernel, page: Page) -> str:
    """One page of shrink_page_list, page locked: 'free', 'activate' or 'keep'."""
    from . import rmap
    from .filemap import clear_page_dirty_for_io, page_mapping, writepage
    from .swap import add_to_swap

    stats = kernel.stats
    if page.test(PG.writeback):
        return "keep"
    referenced = rmap.page_referenced(page, 1, None)
    if referenced and (page_mapped(page) or page.test(PG.swapcache) or not PageAnon(page)):
        stats["vmscan_referenced"] += 1
        return "activate"
    if PageAnon(page) and not page.test(PG.swapcache):
        if not add_to_swap(page):
            stats["vmscan_no_swap"] += 1
            return "activate"
        stats["vmscan_swapped_out"] += 1
    if page_mapped(page) and page_mapping(page) is not None:
        rc = rmap.try_to_unmap(page, 0)
        if rc == rmap.SWAP_FAIL:
            stats["vmscan_unmap_fail"] += 1
            return "activate"
        if rc == rmap.SWAP_AGAIN:
            stats["vmscan_unmap_again"] += 1
            return "keep"
        if rc != rmap.SWAP_SUCCESS:
            raise AssertionError(f"try_to_unmap returned {rc!r}")
        stats["vmscan_unmapped"] += 1
    if page_mapped(page):
        return "keep"
    if page.test(PG.dirty):
        if page_mapping(page) is None:
            return "keep"
        if not is_page_cache_freeable(page):
            # pageout(): someone else holds a reference (a zap's mmu_gather until its TLB
            # flush, a fault, the device): a store may still reach the page unseen.
            stats["vmscan_pageout_busy"] += 1
            return "keep"
        if clear_page_dirty_for_io(page):
            writepage(page)
            stats["vmscan_written"] += 1
        if page.test(PG.dirty):
            return "keep"
    if page_mapping(page) is None:
        # An anonymous page out of every cache and no longer mapped: only our reference.
        return "free" if page._count == 1 else "keep"
    if remove_mapping(page):
        return "free"
    return "keep"


def shrink_inactive_list(kernel, nr_to_scan: int) -> int:
    """Isolate up to ``nr_to_scan`` of the oldest inactive pages, run
    :func:`shrink_page_list` on them and put the survivors back.  Returns pages freed."""
    pages, scanned = _isolate_lru_pages(kernel, nr_to_scan, False)
    freed, survivors = shrink_page_list(kernel, pages)
    for page in survivors:
        putback_lru_page(page)
    return freed


def shrink_zone(kernel, priority: int) -> int:
    """One pass at ``priority`` (DEF_PRIORITY = gentlest): age ``len/2**priority`` (at least
    SWAP_CLUSTER_MAX) active pages, then reclaim as many inactive ones.  Returns pages freed."""
    lru = get_lru(kernel)
    nr_active = max(SWAP_CLUSTER_MAX, lru.nr_active() >> priority)
    nr_inactive = max(SWAP_CLUSTER_MAX, lru.nr_inactive() >> priority)
    shrink_active_list(kernel, nr_active)
    return shrink_inactive_list(kernel, nr_inactive)


def try_to_free_pages(kernel, nr: int = SWAP_CLUSTER_MAX) -> int:
    """Direct reclaim: passes at rising priority until ``nr`` pages are freed or every
    priority was tried.  Returns pages freed (possibly fewer than ``nr``)."""
    if not isinstance(nr, int) or nr <= 0:
        raise ValueError(f"Pages to free must be a positive integer, not {nr!r}")
    kernel.stats["vmscan_try_to_free_pages"] += 1
    freed = 0
    for priority in range(DEF_PRIORITY, -1, -1):
        freed += shrink_zone(kernel, priority)
        if freed >= nr:
            break
    return freed


def balance(kernel, low: int, high: int) -> int:
    """kswapd's balance_pgdat: when fewer than ``low`` frames are free, reclaim until at least
    ``high`` are free or a full pass frees nothing.  Returns pages freed."""
    if not (isinstance(low, int) and isinstance(high, int)) or low < 0 or high < low:
        raise ValueError(f"Watermarks must satisfy 0 <= low <= high, not low={low!r} "
                         f"high={high!r}")
    frames = kernel.frames
    if frames.nr_free >= low:
        return 0
    kernel.stats["vmscan_kswapd_wakeups"] += 1
    freed = 0
    while frames.nr_free < high:
        got = try_to_free_pages(kernel, max(1, high - frames.nr_free))
        freed += got
        if got == 0:
            break
    return freed


def alloc_page_reclaim(kernel, retries: int = 4) -> Page:
    """``kernel.alloc_page()``, reclaiming and retrying when no frame is free.  The fault paths
    and swap-in call this instead of ``alloc_page``.  Call it with no spinlock held (reclaim
    takes pte, anon_vma and i_mmap locks).

    Raises
    ------
    pyrmap.physmem.OutOfMemory
        Still no frame after ``retries`` reclaim passes (or one that freed nothing).
    """
    for attempt in range(retries + 1):
        try:
            if attempt < retries and kernel.faults.fail("alloc"):
                kernel.stats["alloc_failures_injected"] += 1
                raise OutOfMemory("injected allocation failure")
            return kernel.alloc_page()
        except OutOfMemory:
            if attempt == retries:
                break
            kernel.stats["vmscan_direct_reclaim"] += 1
            if try_to_free_pages(kernel, SWAP_CLUSTER_MAX) == 0 and kernel.frames.nr_free == 0:
                break
    kernel.stats["vmscan_oom"] += 1
    raise OutOfMemory(f"no free frame after reclaim ({kernel.frames.nr_free} free, "
                      f"{get_lru(kernel)!r})")
