"""The swap device, the swap cache, the mmlist and the swap token (mm/swapfile.c, swap_state.c).

One swap device per kernel (``swapon(kernel, nslots)`` sets ``kernel.swap``), swap type 0.
Every slot has a ``swap_map`` count: one for the swap cache while a page for the slot is in it,
plus one for every non-present PTE holding the entry (``swap_duplicate`` adds them,
``swap_free`` drops them).  A slot whose count reaches 0 is free again.  The "disk" is a numpy
array of ``nslots`` pages; ``swap_writepage`` and ``read_swap_page`` copy between it and frames.

The swap cache maps a slot to the page holding its data (the kernel's ``swapper_space``).  A page
in it has ``PG.swapcache`` set, ``page.private`` = its :class:`~pyrmap.pte.SwpEntry`, and one
page reference held by the cache.

Locking: ``swap_lock`` (from the arch, lock class "swap_lock") protects ``swap_map`` and the swap
cache; it nests inside the pte lock and is never held while another lock is taken.  Adding a page
to or removing it from the swap cache needs the page lock, like the kernel's.  ``mmlist_lock``
protects the mmlist (every mm that may hold swap entries).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .mm_types import PG, MmStruct, Page, PageAnon
from .pagemap import PageLocked
from .physmem import WORDS_PER_PAGE
from .pte import SwpEntry, is_migration_entry, swp_entry

__all__ = [
    "SwapInfo", "SwapFull", "swapon", "get_swap_page", "swap_duplicate", "swap_free",
    "swap_count", "page_swapcount", "add_to_swap", "add_to_swap_cache", "delete_from_swap_cache",
    "lookup_swap_cache", "read_swap_page", "swap_writepage", "free_swap_and_cache",
    "try_to_free_swap", "vm_swap_full", "PageSwapCache", "mmlist_add", "mmlist_del", "grab_swap_token",
    "has_swap_token", "put_swap_token", "nr_swap_pages", "swapoff", "unuse_pte",
]

SWAP_TYPE = 0


class SwapFull(Exception):
    """Every swap slot is in use (raised by :func:`get_swap_page` when asked to)."""


class SwapInfo:
    """struct swap_info_struct of the one swap device, and its swap cache.

    Parameters
    ----------
    kernel : pyrmap.kernel.Kernel
    nslots : int
        Number of 4 KiB slots.

    Members
    -------
    swap_map : numpy.ndarray of int32
        Per-slot use count (0 = free).
    data : numpy.ndarray of uint64, shape (nslots, 512)
        The device's contents.
    cache : dict[int, Page]
        The swap cache: slot offset -> page.
    mmlist : list[MmStruct]
        Every mm that had a swap entry installed (the kernel's ``init_mm.mmlist``).
    """

    def __init__(self, kernel, nslots: int):
        if not isinstance(nslots, int) or isinstance(nslots, bool) or nslots <= 0:
            raise TypeError(f"Swap slot count must be a positive integer, not {nslots!r}")
        self.kernel = kernel
        self.type = SWAP_TYPE
        self.nslots = nslots
        self.swap_map = np.zeros(nslots, dtype=np.int32)
        self.data = np.zeros((nslots, WORDS_PER_PAGE), dtype=np.uint64)
        self.cache: dict[int, Page] = {}
        self.swap_lock = kernel.arch.new_lock("swap_lock")
        self.mmlist_lock = kernel.arch.new_lock("mmlist_lock")
        self.mmlist: list[MmStruct] = []
        self.inuse_pages = 0
        self.cursor = 0

    @property
    def nr_free(self) -> int:
        return self.nslots - self.inuse_pages

    def __repr__(self) -> str:
        return (f"<SwapInfo slots={self.nslots} inuse={self.inuse_pages} "
                f"cached={len(self.cache)}>")


def swapon(kernel, nslots: Optional[int] = None) -> SwapInfo:
    """Create the swap device (``kernel.config.swap_slots`` slots unless given) and return it.

    Raises
    ------
    ValueError
        A swap device is already on.
    """
    if kernel.swap is not None:
        raise ValueError(f"Swap is already on ({kernel.swap!r})")
    if nslots is None:
        nslots = kernel.config.swap_slots
    kernel.swap = SwapInfo(kernel, nslots)
    return kernel.swap


def nr_swap_pages(kernel) -> int:
    """Free swap slots (0 when swap is off)."""
    return 0 if kernel.swap is None else kernel.swap.nr_free


def _si(kernel, entry: Optional[SwpEntry] = None, what: str = "") -> SwapInfo:
    si = kernel.swap
    if si is None:
        raise ValueError(f"{what}: no swap device (call pyrmap.swap.swapon first)")
    if entry is not None:
        if not isinstance(entry, SwpEntry):
            raise TypeError(f"{what}: swap entry must be a SwpEntry, not {entry!r}")
        if entry.type != si.type:
            raise ValueError(f"{what}: bad swap file entry {entry} (type {entry.type}, "
                             f"the device is type {si.type})")
        if not 0 <= entry.offset < si.nslots:
            raise ValueError(f"{what}: bad swap offset entry {entry} (device has "
                             f"{si.nslots} slots)")
    return si


# ---------------------------------------------------------------------------------------------
# swap_map

def get_swap_page(kernel, *, must: bool = False) -> Optional[SwpEntry]:
    """Allocate a slot with count 1; returns its entry, or None when every slot is in use
    (raises :class:`SwapFull` instead when ``must``).  Takes swap_lock."""
    si = _si(kernel, what="get_swap_page")
    with si.swap_lock:
        if si.inuse_pages < si.nslots:
            for i in range(si.nslots):
                off = (si.cursor + i) % si.nslots
                if si.swap_map[off] == 0:
                    si.swap_map[off] = 1
                    si.inuse_pages += 1
                    si.cursor = (off + 1) % si.nslots
                    kernel.stats["swap_slots_allocated"] += 1
                    return swp_entry(si.type, off)
    kernel.stats["swap_full"] += 1
    if must:
        raise SwapFull(f"All {si.nslots} swap slots are in use")
    return None


def swap_duplicate(kernel, entry: SwpEntry) -> int:
    """Add one user to ``entry``'s slot (a PTE that now holds it).  Returns 1.

    Migration entries are not slots: they are ignored (returns 1), as in the kernel.
    Takes swap_lock; the caller typically holds the pte lock.

    Raises
    ------
    ValueError
        The slot is free (a use-after-free of a swap entry) or the entry is not this device's.
    """
    if isinstance(entry, SwpEntry) and is_migration_entry(entry):
        return 1
    si = _si(kernel, entry, "swap_duplicate")
    with si.swap_lock:
        if si.swap_map[entry.offset] <= 0:
            raise ValueError(f"swap_duplicate of free swap slot {entry}")
        si.swap_map[entry.offset] += 1
    return 1


def _swap_entry_free(kernel, si: SwapInfo, entry: SwpEntry, what: str) -> int:
    # Caller holds swap_lock.
    count = int(si.swap_map[entry.offset])
    if count <= 0:
        raise ValueError(f"{what} of free swap slot {entry}")
    count -= 1
    si.swap_map[entry.offset] = count
    if count == 0:
        si.inuse_pages -= 1
        kernel.stats["swap_slots_freed"] += 1
    return count


def swap_free(kernel, entry: SwpEntry) -> None:
    """Drop one user of ``entry``'s slot; at 0 the slot is free.  Takes swap_lock.

    Raises
    ------
    ValueError
        The slot is already free, or ``entry`` is a migration entry or not this device's.
    """
    if isinstance(entry, SwpEntry) and is_migration_entry(entry):
        raise ValueError(f"swap_free of migration entry {entry}")
    si = _si(kernel, entry, "swap_free")
    with si.swap_lock:
        _swap_entry_free(kernel, si, entry, "swap_free")


def swap_count(kernel, entry: SwpEntry) -> int:
    """The slot's current count (swap cache + PTEs)."""
    si = _si(kernel, entry, "swap_count")
    return int(si.swap_map[entry.offset])


def page_swapcount(page: Page) -> int:
    """Users of the page's slot other than the swap cache (0 if not in the swap cache)."""
    if not PageSwapCache(page):
        return 0
    return swap_count(page.kernel, page.private) - 1


# ---------------------------------------------------------------------------------------------
# The swap cache

def PageSwapCache(page: Page) -> bool:
    return page.test(PG.swapcache)


def add_to_swap_cache(page: Page, entry: SwpEntry) -> int:
    """Insert a locked page into the swap cache at ``entry`` (the caller owns the slot's count
    of 1 for the cache).  Returns 0, or -EEXIST (-17) when another page is there already.

    On success the cache holds a page reference, ``PG.swapcache`` is set and ``page.private``
    is ``entry``."""
    kernel = page.kernel
    si = _si(kernel, entry, "add_to_swap_cache")
    if not PageLocked(page):
        raise AssertionError(f"add_to_swap_cache of an unlocked page: {page!r}")
    if PageSwapCache(page):
        raise AssertionError(f"add_to_swap_cache of a page already in it: {page!r}")
    with si.swap_lock:
        if entry.offset in si.cache:
            return -17
        kernel.get_page(page)
        page.set(PG.swapcache)
        page.private = entry
        si.cache[entry.offset] = page
    kernel.stats["swapcache_add"] += 1
    return 0


def __delete_from_swap_cache(page: Page) -> SwpEntry:
    # Caller holds swap_lock and the page lock.
    si = page.kernel.swap
    entry = page.private
    if si.cache.get(entry.offset) is not page:
        raise AssertionError(f"page not in the swap cache at {entry}: {page!r}")
    del si.cache[entry.offset]
    page.clear(PG.swapcache)
    page.private = None
    return entry


def delete_from_swap_cache(page: Page) -> None:
    """Remove a locked page from the swap cache: its slot loses the cache's count and the page
    loses the cache's reference.  The page's data is only in the frame afterwards (and on the
    slot, while PTEs still hold the entry)."""
    if not PageLocked(page):
        raise AssertionError(f"delete_from_swap_cache of an unlocked page: {page!r}")
    if not PageSwapCache(page):
        raise AssertionError(f"delete_from_swap_cache of a page not in it: {page!r}")
    kernel = page.kernel
    si = kernel.swap
    with si.swap_lock:
        entry = __delete_from_swap_cache(page)
        _swap_entry_free(kernel, si, entry, "delete_from_swap_cache")
    kernel.stats["swapcache_delete"] += 1
    kernel.put_page(page)


def lookup_swap_cache(kernel, entry: SwpEntry) -> Optional[Page]:
    """The page in the swap cache for ``entry`` with a new reference, or None."""
    si = _si(kernel, entry, "lookup_swap_cache")
    with si.swap_lock:
        page = si.cache.get(entry.offset)
        if page is not None:
            kernel.get_page(page)
    kernel.stats["swapcache_find" if page is not None else "swapcache_miss"] += 1
    return page


def add_to_swap(page: Page) -> bool:
    """Give a locked anonymous page a swap slot: allocate one, add the page to the swap cache
    and mark it dirty (the slot holds nothing yet).  Returns False when no slot is free (or
    swap is off); the page is then unchanged."""
    kernel = page.kernel
    if not PageLocked(page):
        raise AssertionError(f"add_to_swap of an unlocked page: {page!r}")
    if not PageAnon(page):
        raise AssertionError(f"add_to_swap of a page that is not anonymous: {page!r}")
    if kernel.swap is None:
        return False
    entry = get_swap_page(kernel)
    if entry is None:
        return False
    if add_to_swap_cache(page, entry) != 0:       # cannot happen: the slot was free
        swap_free(kernel, entry)
        return False
    page.set(PG.dirty)
    page.set(PG.uptodate)
    kernel.stats["add_to_swap"] += 1
    return True


def swap_writepage(page: Page) -> None:
    """Write a locked swap-cache page's frame to its slot (synchronous I/O)."""
    if not PageSwapCache(page):
        raise AssertionError(f"swap_writepage of a page not in the swap cache: {page!r}")
    kernel = page.kernel
    si = _si(kernel, page.private, "swap_writepage")
    si.data[page.private.offset, :] = kernel.mem.frame(page.pfn)
    kernel.stats["pswpout"] += 1
    kernel.arch.notify("swap_writepage", pfn=page.pfn, entry=page.private)


def read_swap_page(kernel, entry: SwpEntry) -> Page:
    """Swap-in: the page for ``entry`` with a reference for the caller, unlocked and up to
    date.  From the swap cache if it is there; otherwise a new frame (reclaiming if memory is
    short) is filled from the slot and added to the swap cache and the LRU.

    Raises
    ------
    ValueError
        The slot is free (a stale swap entry).
    pyrmap.physmem.OutOfMemory
        No frame even after reclaim.
    """
    from .pagemap import trylock_page, unlock_page
    from .vmscan import alloc_page_reclaim, lru_cache_add_active

    si = _si(kernel, entry, "read_swap_page")
    while True:
        page = lookup_swap_cache(kernel, entry)
        if page is not None:
            return page
        if si.swap_map[entry.offset] <= 0:
            raise ValueError(f"read_swap_page of free swap slot {entry}")
        new = alloc_page_reclaim(kernel)
        # The page is new and invisible: the lock is free.
        if not trylock_page(new):
            raise AssertionError(f"new page already locked: {new!r}")
        with si.swap_lock:
            if si.swap_map[entry.offset] <= 0:
                gone = True
            else:
                gone = False
                # Take a count for the cache while the slot is known to be in use.
                si.swap_map[entry.offset] += 1
        if gone:
            unlock_page(new)
            kernel.put_page(new)
            raise ValueError(f"read_swap_page of free swap slot {entry}")
        if add_to_swap_cache(new, entry) != 0:
            # Lost the race with another swap-in: drop our count and use theirs.
            swap_free(kernel, entry)
            unlock_page(new)
            kernel.put_page(new)
            continue
        kernel.mem.frame(new.pfn)[:] = si.data[entry.offset]
        new.set(PG.uptodate)
        kernel.stats["pswpin"] += 1
        lru_cache_add_active(new)
        unlock_page(new)
        return new


def vm_swap_full(kernel) -> bool:
    """More than half the swap slots are in use: swap-in and zap give slots back eagerly."""
    si = kernel.swap
    return si is not None and si.nr_free * 2 < si.nslots


def free_swap_and_cache(kernel, entry: SwpEntry) -> None:
    """A PTE holding ``entry`` went away (zap): drop its count.  If only the swap cache still
    holds the slot and its page can be locked now, and either nobody else holds the page
    (only the cache and us) or swap is more than half full, the page leaves the swap cache
    and is marked dirty (its data now lives only in the frame).  Migration entries are
    ignored."""
    from .pagemap import trylock_page, unlock_page

    if isinstance(entry, SwpEntry) and is_migration_entry(entry):
        return
    si = _si(kernel, entry, "free_swap_and_cache")
    page = None
    with si.swap_lock:
        count = _swap_entry_free(kernel, si, entry, "free_swap_and_cache")
        if count == 1:
            page = si.cache.get(entry.offset)
            if page is not None:
                kernel.get_page(page)
    if page is None:
        return
    if trylock_page(page):
        one_user = page._count == 2
        if (PageSwapCache(page) and page.private == entry and not page.test(PG.writeback)
                and (one_user or vm_swap_full(kernel))):
            delete_from_swap_cache(page)
            page.set(PG.dirty)
        unlock_page(page)
    kernel.put_page(page)


def try_to_free_swap(page: Page) -> bool:
    """For a locked page in the swap cache whose slot no PTE holds any more: release the slot
    and keep the data only in the page (marked dirty, so reclaim writes it to a new slot).
    Returns True if the slot was released (the kernel's remove_exclusive_swap_page)."""
    if not PageLocked(page):
        raise AssertionError(f"try_to_free_swap of an unlocked page: {page!r}")
    if not PageSwapCache(page) or page.test(PG.writeback):
        return False
    if page_swapcount(page) != 0:
        return False
    delete_from_swap_cache(page)
    page.set(PG.dirty)
    return True


# ---------------------------------------------------------------------------------------------
# mmlist and swap token

def mmlist_add(mm: MmStruct) -> None:
    """Put mm on the mmlist (try_to_unmap_one does this when it installs a swap entry)."""
    si = mm.kernel.swap
    if si is None or mm.on_mmlist:
        return
    with si.mmlist_lock:
        if not mm.on_mmlist:
            si.mmlist.append(mm)
            mm.on_mmlist = True


def mmlist_del(mm: MmStruct) -> None:
    """Take mm off the mmlist (mmput at exit)."""
    si = mm.kernel.swap
    if si is None or not mm.on_mmlist:
        return
    with si.mmlist_lock:
        if mm.on_mmlist:
            si.mmlist.remove(mm)
            mm.on_mmlist = False


def grab_swap_token(mm: MmStruct) -> None:
    """mm is faulting a page in from swap: it takes the swap token, which makes reclaim treat
    its pages as referenced while it is in a fault (page_referenced_one)."""
    kernel = mm.kernel
    if kernel.swap_token_mm is not mm:
        kernel.swap_token_mm = mm
        kernel.stats["swap_token_grabbed"] += 1


def has_swap_token(mm: MmStruct) -> bool:
    return mm.kernel.swap_token_mm is mm


def put_swap_token(mm: MmStruct) -> None:
    """mm exits: it gives the token back."""
    if has_swap_token(mm):
        mm.kernel.swap_token_mm = None


# ---------------------------------------------------------------------------------------------
# swapoff

def unuse_pte(vma, addr: int, ptep: int, entry: SwpEntry, page: Page) -> bool:
    """Map the locked swap-cache ``page`` at ``addr`` in place of the swap entry ``entry``,
    if the PTE still holds it: page_add_anon_rmap, a page reference for the PTE, the slot
    loses the PTE's count.  Takes the pte lock.  Returns True if the PTE was replaced."""
    from .memory import vma_page_prot
    from .pte import _PAGE_A, pfn_pte, pte_is_swap, pte_to_swp_entry
    from .rmap import page_add_anon_rmap

    mm = vma.vm_mm
    kernel = mm.kernel
    arch = kernel.arch
    with mm.page_table_lock:
        val = arch.pte_load(ptep)
        if not pte_is_swap(val) or pte_to_swp_entry(val) != entry:
            return False
        kernel.get_page(page)
        mm.anon_rss += 1
        # Read-only (an anonymous vma's protection): a write faults and either reuses the
        # page or copies it (COW after fork).  Old, as 2008's unuse_pte made it (pte_mkold).
        arch.set_pte_at(mm, addr, ptep, pfn_pte(page.pfn, vma_page_prot(vma) & ~_PAGE_A))
        page_add_anon_rmap(page, vma, addr)
        swap_free(kernel, entry)
    kernel.stats["swapoff_ptes"] += 1
    return True


def swapoff(kernel) -> int:
    """Turn the swap device off: every swap entry in every mm on the mmlist is swapped in and
    mapped again (try_to_unuse / unuse_mm), every swap-cache page leaves the swap cache
    (dirty: its data now lives only in the frame), and ``kernel.swap`` becomes None.

    Takes each mm's mmap_sem for read while its page tables are scanned.  Returns the number
    of PTEs restored.

    Raises
    ------
    ValueError
        Swap is off.
    RuntimeError
        Slots are still in use afterwards (an entry held outside every mm on the mmlist);
        the device then stays on.
    """
    from .pagemap import lock_page, unlock_page
    from .pagetable import pte_range
    from .pte import is_migration_entry, pte_is_swap, pte_to_swp_entry

    si = _si(kernel, what="swapoff")
    restored = 0
    for mm in list(si.mmlist):
        mm.mmap_sem.down_read()
        try:
            for vma in list(mm.mmap):
                if vma.anon_vma is None:
                    continue
                for addr, ptep in pte_range(mm, vma.vm_start, vma.vm_end):
                    val = kernel.arch.pte_load(ptep)
                    if not pte_is_swap(val):
                        continue
                    entry = pte_to_swp_entry(val)
                    if is_migration_entry(entry) or entry.type != si.type:
                        continue
                    page = read_swap_page(kernel, entry)
                    lock_page(page)
                    try:
                        restored += unuse_pte(vma, addr, ptep, entry, page)
                    finally:
                        unlock_page(page)
                        kernel.put_page(page)
        finally:
            mm.mmap_sem.up_read()
    for offset in sorted(si.cache):
        page = si.cache.get(offset)
        if page is None:
            continue
        kernel.get_page(page)
        lock_page(page)
        try:
            if PageSwapCache(page) and page.private.offset == offset:
                if page_swapcount(page) == 0:
                    delete_from_swap_cache(page)
                    page.set(PG.dirty)
        finally:
            unlock_page(page)
            kernel.put_page(page)
    if si.inuse_pages:
        busy = [int(i) for i in np.nonzero(si.swap_map)[0][:8]]
        raise RuntimeError(f"swapoff: {si.inuse_pages} swap slots still in use "
                           f"(offsets {busy}...)")
    for mm in list(si.mmlist):
        mm.on_mmlist = False
    si.mmlist.clear()
    kernel.swap = None
    kernel.stats["swapoff"] += 1
    return restored
