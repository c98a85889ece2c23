"""The page cache, dirty pages and writeback (mm/filemap.c, page-writeback.c, truncate.c, msync.c).

A file is an :class:`~pyrmap.mm_types.AddressSpace`: its page cache is ``mapping.page_tree``
(index -> page), its "disk" is ``mapping.backing`` (index -> numpy array of 512 words).  A page
in the page cache has ``page.mapping = mapping``, ``page.index`` = its file offset in pages,
and one page reference held by the cache.

Writeback is where a lost dirty bit becomes lost data.  :func:`clear_page_dirty_for_io` is the
one place a dirty page becomes clean: it first runs ``page_mkclean`` (every shared PTE of the
page clean and read-only, every TLB flushed, secondary MMUs invalidated), moves a dirty PTE into
``PG.dirty``, and only then clears ``PG.dirty``.  :func:`writepage` then copies the frame to the
backing store while the caller holds the page lock; a CPU store after ``page_mkclean`` faults
and redirties the page (``set_page_dirty`` in the write fault), so it is written by the next
writeback.

Locking: the page-cache tree is protected by ``mapping``'s "tree_lock" (created on first use),
the innermost lock of the seed's order.  Insertion and removal need the page lock.
"""

from __future__ import annotations

import errno
from typing import Optional

import numpy as np

from .mm_types import PG, VM_SHARED, AddressSpace, Page, PageAnon, page_mapped
from .pagemap import PageLocked, lock_page, trylock_page, unlock_page
from .pte import PAGE_SHIFT, PAGE_SIZE

__all__ = [
    "EEXIST", "EINVAL", "ENOMEM", "MS_ASYNC", "MS_INVALIDATE", "MS_SYNC",
    "page_mapping", "find_get_page", "find_lock_page", "add_to_page_cache",
    "remove_from_page_cache", "read_file_page", "set_page_dirty", "clear_page_dirty_for_io",
    "test_clear_page_dirty", "writepage", "write_one_page", "do_writepages",
    "filemap_write_and_wait", "msync", "truncate_inode_pages", "unmap_mapping_range",
    "vmtruncate", "dirty_pages",
]

EEXIST = 17
EINVAL = 22
ENOMEM = 12
EBUSY = 16

MS_ASYNC = 1
MS_INVALIDATE = 2
MS_SYNC = 4


def _tree_lock(mapping: AddressSpace):
    lock = mapping.__dict__.get("tree_lock")
    if lock is None:
        lock = mapping.kernel.arch.new_lock("tree_lock")
        mapping.__dict__["tree_lock"] = lock
    return lock


def page_mapping(page: Page):
    """The address_space a page's data belongs to: its file, the swap device for anonymous
    pages in the swap cache (the kernel's ``swapper_space``), or None."""
    if PageAnon(page):
        return page.kernel.swap if page.test(PG.swapcache) else None
    return page.mapping


# ---------------------------------------------------------------------------------------------
# The page cache

def find_get_page(mapping: AddressSpace, index: int) -> Optional[Page]:
    """The page at ``index`` with a new reference, or None."""
    with _tree_lock(mapping):
        page = mapping.page_tree.get(index)
        if page is not None:
            mapping.kernel.get_page(page)
    return page


def find_lock_page(mapping: AddressSpace, index: int) -> Optional[Page]:
    """Like :func:`find_get_page`, and the page is locked on return and still in ``mapping``
    at ``index`` (a page truncated while we slept on its lock is skipped)."""
    while True:
        page = find_get_page(mapping, index)
        if page is None:
            return None
        lock_page(page)
        if page.mapping is mapping and page.index == index:
            return page
        unlock_page(page)
        mapping.kernel.put_page(page)


def add_to_page_cache(page: Page, mapping: AddressSpace, index: int) -> int:
    """Insert a new page at ``index``.  Returns 0 with the page *locked* (the caller fills it
    and unlocks), the cache holding a reference and ``page.mapping``/``index`` set; or
    ``-EEXIST`` when another page is there (the page is untouched and unlocked)."""
    if page.mapping is not None:
        raise AssertionError(f"add_to_page_cache of a page that has a mapping: {page!r}")
    if not 0 <= index < mapping.npages:
        raise ValueError(f"Page index {index} is outside file {mapping.name!r} of "
                         f"{mapping.npages} pages")
    if not trylock_page(page):
        raise AssertionError(f"add_to_page_cache of a locked page: {page!r}")
    with _tree_lock(mapping):
        if index in mapping.page_tree:
            unlock_page(page)
            return -EEXIST
        mapping.kernel.get_page(page)
        page.mapping = mapping
        page.index = index
        mapping.page_tree[index] = page
    mapping.kernel.stats["pagecache_add"] += 1
    return 0


def remove_from_page_cache(page: Page) -> None:
    """Remove a locked page from its mapping's page cache.  The cache's reference is *not*
    dropped (the caller does ``page_cache_release``, as in the kernel)."""
    if not PageLocked(page):
        raise AssertionError(f"remove_from_page_cache of an unlocked page: {page!r}")
    mapping = page.mapping
    if not isinstance(mapping, AddressSpace):
        raise AssertionError(f"remove_from_page_cache of a page not in a file: {page!r}")
    with _tree_lock(mapping):
        if mapping.page_tree.get(page.index) is not page:
            raise AssertionError(f"page not in {mapping!r} at {page.index}: {page!r}")
        del mapping.page_tree[page.index]
        page.mapping = None
    mapping.kernel.stats["pagecache_remove"] += 1


def read_file_page(mapping: AddressSpace, index: int) -> Page:
    """The page at ``index`` with a reference for the caller, unlocked and up to date: from the
    page cache, or read from ``mapping.backing`` into a new frame (reclaiming if memory is
    short; an index never written reads as zeros) and added to the cache and the LRU.

    Raises
    ------
    ValueError
        ``index`` is beyond the end of the file.
    pyrmap.physmem.OutOfMemory
        No frame even after reclaim.
    """
    from .vmscan import alloc_page_reclaim, lru_cache_add

    if not isinstance(index, int) or not 0 <= index < mapping.npages:
        raise ValueError(f"Page index {index!r} is outside file {mapping.name!r} of "
                         f"{mapping.npages} pages")
    kernel = mapping.kernel
    while True:
        page = find_get_page(mapping, index)
        if page is not None:
            return page
        new = alloc_page_reclaim(kernel)
        if add_to_page_cache(new, mapping, index) != 0:
            kernel.put_page(new)
            continue
        data = mapping.backing.get(index)
        if data is not None:
            kernel.mem.frame(new.pfn)[:] = data
        new.set(PG.uptodate)
        kernel.stats["pagecache_read"] += 1
        lru_cache_add(new)
        unlock_page(new)
        return new


# ---------------------------------------------------------------------------------------------
# Dirty state

def set_page_dirty(page: Page) -> int:
    """Mark the page's data newer than its backing store.  Returns 1 if it was clean.

    Callers: the write fault (with the page locked or its pte lock held), try_to_unmap_one and
    zap (a dirty pte's D bit moved to the page), clear_page_dirty_for_io (page_mkclean found a
    dirty or writable pte)."""
    if page.test_and_set(PG.dirty):
        return 0
    page.kernel.stats["pages_dirtied"] += 1
    return 1


def test_clear_page_dirty(page: Page) -> bool:
    """TestClearPageDirty."""
    return page.test_and_clear(PG.dirty)


def clear_page_dirty_for_io(page: Page) -> int:
    """Prepare a locked page for writeback.  Returns 1 if it was dirty (and is now clean and
    must be written), else 0.

    For a file page: ``page_mkclean`` first — on return every shared PTE of the page is clean
    and read-only and no TLB (CPU or secondary) holds a writable translation, so any later
    store faults and redirties the page; if it found a dirty or writable PTE the page is
    marked dirty; only then is ``PG.dirty`` tested and cleared.  Anonymous (swap-cache) pages
    have no shared mappings: their PTE dirty bits reach ``PG.dirty`` through try_to_unmap."""
    from .rmap import page_mkclean

    if not PageLocked(page):
        raise AssertionError(f"clear_page_dirty_for_io of an unlocked page: {page!r}")
    page.clear(PG.reclaim)
    if isinstance(page.mapping, AddressSpace):
        if page_mkclean(page):
            set_page_dirty(page)
            page.kernel.stats["mkclean_redirtied"] += 1
    return 1 if test_clear_page_dirty(page) else 0


def writepage(page: Page) -> int:
    """Write a locked page, already cleaned by :func:`clear_page_dirty_for_io`, to its backing
    store: the file's ``backing`` at ``page.index``, or the swap slot of a swap-cache page.

    The I/O is synchronous: ``PG.writeback`` is set for its duration and clear on return, and
    the page is still locked on return (the kernel's writepage unlocks; our caller does).
    Returns 0, or ``-EIO`` when the swap write failed (``kernel.faults``): the page is dirty
    again and still in the swap cache, so nothing is lost."""
    from .swap import swap_writepage

    if not PageLocked(page):
        raise AssertionError(f"writepage of an unlocked page: {page!r}")
    kernel = page.kernel
    page.set(PG.writeback)
    kernel.arch.notify("writeback_start", pfn=page.pfn, page=page)
    try:
        if page.test(PG.swapcache):
            if kernel.faults.fail("swap_write"):
                # The write failed (-EIO): the data is only in the frame, so the page is
                # redirtied and stays in the swap cache; reclaim keeps it and retries later.
                page.set(PG.dirty)
                kernel.stats["swap_write_errors"] += 1
                return -errno.EIO
            swap_writepage(page)
        elif isinstance(page.mapping, AddressSpace):
            page.mapping.backing[page.index] = np.array(kernel.mem.frame(page.pfn), copy=True)
            kernel.stats["file_writepage"] += 1
        else:
            raise AssertionError(f"writepage of a page with no backing store: {page!r}")
    finally:
        page.clear(PG.writeback)
        kernel.arch.notify("writeback_end", pfn=page.pfn, page=page)
    kernel.stats["pages_written"] += 1
    return 0


def write_one_page(page: Page, wait: int = 1) -> int:
    """Write one locked page if it is dirty; the page is *unlocked* on return.  Returns 0."""
    if not PageLocked(page):
        raise AssertionError(f"write_one_page of an unlocked page: {page!r}")
    kernel = page.kernel
    try:
        if clear_page_dirty_for_io(page):
            kernel.get_page(page)
            try:
                writepage(page)
            finally:
                kernel.put_page(page)
    finally:
        unlock_page(page)
    return 0


def dirty_pages(mapping: AddressSpace) -> list[int]:
    """Indices of the pages of ``mapping`` with PG.dirty set (a snapshot)."""
    with _tree_lock(mapping):
        return sorted(i for i, p in mapping.page_tree.items() if p.test(PG.dirty))


def do_writepages(mapping: AddressSpace, start: int = 0, end: Optional[int] = None) -> int:
    """Write back every dirty page of ``mapping`` with index in [start, end] (MS_SYNC
    semantics: waits for each page lock).  Returns the number of pages written.

    Only pages with ``PG.dirty`` are written, as in the kernel: shared writable mappings are
    write-protected until the first store faults and dirties the page (dirty accounting), so
    a store that did not fault was to a page already dirty."""
    kernel = mapping.kernel
    last = mapping.npages - 1 if end is None else end
    written = 0
    for index in dirty_pages(mapping):
        if not start <= index <= last:
            continue
        page = find_get_page(mapping, index)
        if page is None:
            continue
        try:
            lock_page(page)
            if page.mapping is not mapping or not page.test(PG.dirty):
                unlock_page(page)
                continue
            before = kernel.stats["pages_written"]
            write_one_page(page)
            written += kernel.stats["pages_written"] - before
        finally:
            kernel.put_page(page)
    kernel.stats["do_writepages"] += 1
    return written


filemap_write_and_wait = do_writepages


def msync(mm, start: int, length: int, flags: int = MS_SYNC) -> int:
    """sys_msync: for MS_SYNC write back every shared file mapping in [start, start+length).
    Returns 0, ``-EINVAL`` (unaligned start, bad flags) or ``-ENOMEM`` (part of the range is
    not mapped; the mapped parts are still synced)."""
    if start & (PAGE_SIZE - 1) or flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC):
        return -EINVAL
    if (flags & MS_ASYNC) and (flags & MS_SYNC):
        return -EINVAL
    if length < 0:
        return -EINVAL
    end = start + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
    if end == start:
        return 0
    todo: list[tuple[AddressSpace, int, int]] = []
    unmapped = False
    mm.mmap_sem.down_read()
    try:
        addr = start
        for vma in list(mm.mmap):
            if vma.vm_end <= addr:
                continue
            if vma.vm_start >= end:
                break
            if vma.vm_start > addr:
                unmapped = True
            lo, hi = max(addr, vma.vm_start), min(end, vma.vm_end)
            if vma.vm_file is not None and vma.vm_flags & VM_SHARED:
                todo.append((vma.vm_file, vma.linear_page_index(lo),
                             vma.linear_page_index(hi - PAGE_SIZE)))
            addr = hi
        if addr < end:
            unmapped = True
    finally:
        mm.mmap_sem.up_read()
    if flags & MS_SYNC:
        for mapping, lo, hi in todo:
            do_writepages(mapping, lo, hi)
    mm.kernel.stats["msync"] += 1
    return -ENOMEM if unmapped else 0


# ---------------------------------------------------------------------------------------------
# Truncation

def unmap_mapping_range(mapping: AddressSpace, holebegin: int, holelen: int,
                        even_cows: int = 0) -> None:
    """Zap every PTE mapping file bytes [holebegin, holebegin+holelen) (holelen 0: to the end)
    in every VMA of ``mapping``: the i_mmap walk under i_mmap_lock, then every nonlinear VMA
    whole.  ``even_cows`` also zaps private COW copies (truncate); otherwise private VMAs keep
    them.  Each zap brackets its range with the notifier's invalidate_range_start/end."""
    from .memory import zap_page_range

    first = holebegin >> PAGE_SHIFT
    if holelen:
        last = (holebegin + holelen - 1) >> PAGE_SHIFT
    else:
        last = (1 << 44) - 1
    details = {"check_mapping": None if even_cows else mapping,
               "nonlinear_vma": None, "first_index": first, "last_index": last}
    # As in the kernel, i_mmap_lock is held across the zaps (the pte locks nest inside it),
    # so no rmap walk of this file runs in between.
    with mapping.i_mmap_lock:
        vmas = [v for v in mapping.i_mmap
                if v.vm_pgoff <= last and v.vm_pgoff + v.npages - 1 >= first]
        for vma in vmas:
            vfirst = max(first, vma.vm_pgoff)
            vlast = min(last, vma.vm_pgoff + vma.npages - 1)
            s = vma.vm_start + ((vfirst - vma.vm_pgoff) << PAGE_SHIFT)
            e = vma.vm_start + ((vlast - vma.vm_pgoff + 1) << PAGE_SHIFT)
            zap_page_range(vma, s, e - s, details)
        for vma in list(mapping.i_mmap_nonlinear):
            zap_page_range(vma, vma.vm_start, vma.vm_end - vma.vm_start,
                           dict(details, nonlinear_vma=vma))
    mapping.kernel.stats["unmap_mapping_range"] += 1


def truncate_inode_pages(mapping: AddressSpace, lstart: int) -> int:
    """Remove every page-cache page at or beyond byte ``lstart`` (which must be page aligned):
    each is locked, unmapped if some PTE still maps it, dropped from the cache, its dirty data
    discarded.  Returns the number of pages removed."""
    if lstart & (PAGE_SIZE - 1):
        raise ValueError(f"Truncation offset {lstart:#x} is not page aligned")
    kernel = mapping.kernel
    first = lstart >> PAGE_SHIFT
    removed = 0
    with _tree_lock(mapping):
        indices = sorted(i for i in mapping.page_tree if i >= first)
    for index in indices:
        page = find_lock_page(mapping, index)
        if page is None:
            continue
        try:
            if page.mapping is not mapping:
                continue
            if page_mapped(page):
                unmap_mapping_range(mapping, index << PAGE_SHIFT, PAGE_SIZE, 0)
            page.clear(PG.dirty)
            remove_from_page_cache(page)
            kernel.put_page(page)       # the page cache's reference
            removed += 1
        finally:
            unlock_page(page)
            kernel.put_page(page)       # ours
    for index in [i for i in mapping.backing if i >= first]:
        del mapping.backing[index]
    kernel.stats["truncated_pages"] += removed
    return removed


def vmtruncate(mapping: AddressSpace, offset: int) -> int:
    """Shrink the file to ``offset`` bytes (page aligned): unmap the tail from every VMA
    (COW copies included), drop its pages and backing, set ``npages``."""
    if offset & (PAGE_SIZE - 1) or offset < 0:
        raise ValueError(f"Truncation offset {offset:#x} is not page aligned")
    unmap_mapping_range(mapping, offset, 0, 1)
    n = truncate_inode_pages(mapping, offset)
    mapping.npages = min(mapping.npages, offset >> PAGE_SHIFT)
    return n
