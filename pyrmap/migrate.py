"""Page migration (mm/migrate.c, 2008): move a mapped page's contents to another frame.

``unmap_and_move(page, newpage)`` replaces every PTE of ``page`` by a *migration entry*
(``try_to_unmap(page, 1)``: each PTE cleared with the TLBs flushed and the secondary MMUs
invalidated, its D bit moved into ``PG.dirty``, a read or write migration entry naming the old
pfn stored in its place), moves the page-cache or swap-cache slot to ``newpage``, copies the
contents and the page flags, and then ``remove_migration_ptes`` turns every migration entry
that names the old page into a PTE of the new one (writable iff the entry was a write entry,
A and D clear), restoring the mapcount through ``page_add_anon_rmap`` / ``page_add_file_rmap``
and taking a page reference per PTE.  A thread that faults on a migration entry waits in
:func:`migration_entry_wait` for the page lock, which migration holds throughout.

The walk over the PTEs to restore is rmap's: the anon_vma list under its lock for anonymous
pages, the i_mmap tree at ``page->index`` under ``i_mmap_lock`` for file pages (nonlinear VMAs
never get migration entries: ``try_to_unmap_cluster`` unmaps instead).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from .mm_types import PG, AddressSpace, AnonVma, Page, PageAnon, page_mapped
from .pagemap import lock_page, trylock_page, unlock_page
from .pagetable import pte_offset
from .pte import (_PAGE_A, _PAGE_R, _PAGE_W, is_migration_entry,
                  is_write_migration_entry, migration_entry_to_pfn, pfn_pte, pte_is_swap,
                  pte_to_swp_entry)

__all__ = [
    "EAGAIN", "EBUSY", "unmap_and_move", "move_to_new_page", "migrate_page",
    "migrate_page_move_mapping", "migrate_page_copy", "remove_migration_ptes",
    "remove_migration_pte", "migrate_pages", "migrate_isolated_pages", "move_page",
    "migrate_page_to", "migration_entry_wait",
    "vma_migration_prot",
]

EAGAIN = 11
EBUSY = 16
EFAULT = 14

#: Passes of migrate_pages over pages that answered -EAGAIN (the kernel's 10).
MIGRATE_PASSES = 10


def vma_migration_prot(vma, write: bool) -> int:
    """The protection bits of a PTE restored from a migration entry in ``vma``:
    ``vma->vm_page_prot`` (:func:`pyrmap.memory.vma_page_prot`, so a PROT_NONE VMA gets
    its user-inaccessible PTE back) made old (A clear, pte_mkold), plus W for a write entry
    (a read entry stays read-only, so a COW or dirty-tracking write still faults).  D is
    clear: the old PTE's D bit already went to ``PG.dirty`` of the page."""
    from .memory import vma_page_prot

    prot = vma_page_prot(vma) & ~_PAGE_A
    if write:
        prot |= _PAGE_W | _PAGE_R
    return prot


# ---------------------------------------------------------------------------------------------
# Restoring PTEs

def remove_migration_pte(vma, old: Page, new: Page) -> bool:
    """If ``vma`` maps ``new``'s index with a migration entry naming ``old``, replace it by a
    PTE of ``new`` and account it (get_page, page_add_*_rmap).  Caller holds ``new``'s page
    lock and the anon_vma lock or i_mmap_lock the walk is under; takes the pte lock.  Returns
    True if a PTE was restored."""
    from .rmap import page_add_anon_rmap, page_add_file_rmap, page_address_in_vma

    addr = page_address_in_vma(new, vma)
    if addr == -EFAULT:
        return False
    mm = vma.vm_mm
    ptep = pte_offset(mm, addr)
    if ptep is None:
        return False
    arch = mm.kernel.arch
    with mm.page_table_lock:
        val = arch.pte_load(ptep)
        if not pte_is_swap(val):
            return False
        entry = pte_to_swp_entry(val)
        if not is_migration_entry(entry) or migration_entry_to_pfn(entry) != old.pfn:
            return False
        mm.kernel.get_page(new)
        pte = pfn_pte(new.pfn, vma_migration_prot(vma, is_write_migration_entry(entry)))
        # A non-present PTE is cached by no TLB: a plain store is legal.
        arch.set_pte_at(mm, addr, ptep, pte)
        if PageAnon(new):
            page_add_anon_rmap(new, vma, addr)
        else:
            page_add_file_rmap(new)
    mm.kernel.stats["migration_ptes_restored"] += 1
    return True


def remove_migration_ptes(old: Page, new: Page) -> int:
    """Restore every migration entry naming ``old`` as a PTE of ``new`` (``new`` may be
    ``old`` itself when migration fails).  Caller holds ``new``'s page lock.  Returns the
    number of PTEs restored."""
    mapping = new.mapping
    n = 0
    if isinstance(mapping, AnonVma):
        with mapping.lock:
            for vma in list(mapping.head):
                n += remove_migration_pte(vma, old, new)
    elif isinstance(mapping, AddressSpace):
        with mapping.i_mmap_lock:
            for vma in mapping.i_mmap.stab(new.index):
                n += remove_migration_pte(vma, old, new)
    return n


# ---------------------------------------------------------------------------------------------
# Moving the page

def migrate_page_move_mapping(mapping, newpage: Page, page: Page) -> int:
    """Hand ``page``'s page-cache or swap-cache slot to ``newpage``.  ``mapping`` is
    ``page_mapping(page)`` (None: an anonymous page in no cache).  The only references to
    ``page`` allowed are the caller's and the cache's; otherwise -EAGAIN.  Returns 0."""
    kernel = page.kernel
    if mapping is None:
        return 0 if page._count == 1 else -EAGAIN
    if page.test(PG.swapcache):
        si = kernel.swap
        entry = page.private
        with si.swap_lock:
            if si.cache.get(entry.offset) is not page or page._count != 2:
                return -EAGAIN
            kernel.get_page(newpage)
            newpage.set(PG.swapcache)
            newpage.private = entry
            si.cache[entry.offset] = newpage
    else:
        from .filemap import _tree_lock
        with _tree_lock(mapping):
            if mapping.page_tree.get(page.index) is not page or page._count != 2:
                return -EAGAIN
            kernel.get_page(newpage)
            mapping.page_tree[page.index] = newpage
    kernel.put_page(page)        # the cache's reference moved to newpage
    return 0


_COPIED_FLAGS = (PG.referenced, PG.uptodate, PG.active, PG.mlocked)


def migrate_page_copy(newpage: Page, page: Page) -> None:
    """Copy contents and state: the frame, referenced/uptodate/active/mlocked, and dirty
    (moved: cleared on the old page).  The old page leaves the swap cache and its mapping."""
    kernel = page.kernel
    kernel.mem.copy_frame(newpage.pfn, page.pfn)
    for flag in _COPIED_FLAGS:
        if page.test(flag):
            newpage.set(flag)
    if page.test_and_clear(PG.dirty):
        newpage.set(PG.dirty)
    page.clear(PG.swapcache)
    page.clear(PG.active)
    page.private = None
    page.mapping = None


def migrate_page(mapping, newpage: Page, page: Page) -> int:
    """The generic a_ops->migratepage: move the cache slot, then copy.  0 or -EAGAIN."""
    rc = migrate_page_move_mapping(mapping, newpage, page)
    if rc:
        return rc
    migrate_page_copy(newpage, page)
    return 0


def move_to_new_page(newpage: Page, page: Page) -> int:
    """With ``page`` locked and unmapped (only migration entries left): lock ``newpage``, give
    it ``page``'s mapping and index, migrate, and restore the PTEs onto it.  0 or -EAGAIN
    (then ``newpage`` has no mapping again)."""
    from .filemap import page_mapping

    if not trylock_page(newpage):
        raise AssertionError(f"migration target is locked: {newpage!r}")
    try:
        newpage.index = page.index
        newpage.mapping = page.mapping
        rc = migrate_page(page_mapping(page), newpage, page)
        if rc == 0:
            remove_migration_ptes(page, newpage)
        else:
            newpage.mapping = None
        return rc
    finally:
        unlock_page(newpage)


def unmap_and_move(page: Page, newpage: Page, force: bool = True) -> int:
    """Migrate ``page`` to ``newpage``.

    The caller holds a reference to ``page`` (it isolated it from the LRU) and owns
    ``newpage`` (a new page: one reference, no mapping, unmapped).  Takes ``page``'s lock
    (sleeping for it when ``force``, else -EAGAIN if it is taken).

    Returns 0 on success: every PTE that mapped ``page`` now maps ``newpage`` (same
    writability, mapcount restored), the cache slot and the flags moved, and ``page`` has no
    mapping; the caller drops its reference to ``page`` (freeing it) and puts ``newpage`` on
    the LRU.  Otherwise -EAGAIN (a PTE could not be unmapped now, an extra reference, the page
    lost its mapping) with every migration entry turned back into a PTE of ``page``: the
    caller puts ``page`` back and frees ``newpage``.
    """
    from .rmap import try_to_unmap

    kernel = page.kernel
    if newpage._count != 1 or page_mapped(newpage) or newpage.mapping is not None:
        raise ValueError(f"Migration target must be a new page, not {newpage!r}")
    if page._count == 1 and not page_mapped(page) and page.mapping is None:
        return 0        # freed under us: nothing to move
    if not trylock_page(page):
        if not force:
            return -EAGAIN
        lock_page(page)
    rc = -EAGAIN
    try:
        if page.test(PG.writeback) or page.mapping is None:
            return rc
        try_to_unmap(page, 1)
        if not page_mapped(page):
            rc = move_to_new_page(newpage, page)
        if rc:
            remove_migration_ptes(page, page)
        return rc
    finally:
        unlock_page(page)
        kernel.stats["migrate_success" if rc == 0 else "migrate_again"] += 1
        if rc == 0:
            kernel.arch.notify("returned", op="migration", kind="unmap", mm=None, start=0,
                               end=0, page=page)


def migrate_pages(kernel, pages: Iterable[Page],
                  get_new_page: Optional[Callable[[Page], Page]] = None) -> int:
    """Migrate each page to a page from ``get_new_page(page)`` (default: any free frame, with
    reclaim).  Each page is first isolated from the LRU (a page not on it -- free, or isolated
    by reclaim or another migration right now -- is not migrated).  Pages answering -EAGAIN
    are retried for up to 10 passes.  Returns the number of pages not migrated; those are
    back on the LRU as they were."""
    from .vmscan import isolate_lru_page

    isolated = []
    failed = 0
    for page in pages:
        if isolate_lru_page(page) == 0:
            isolated.append(page)
        else:
            failed += 1
    kernel.stats["migrate_failed"] += failed
    return failed + migrate_isolated_pages(kernel, isolated, get_new_page)


def migrate_isolated_pages(kernel, pages: list[Page],
                           get_new_page: Optional[Callable[[Page], Page]] = None) -> int:
    """:func:`migrate_pages` for pages the caller isolated (``isolate_lru_page``; the
    isolation reference is consumed).  Returns the number not migrated (put back)."""
    from .vmscan import _add, alloc_page_reclaim, putback_lru_page

    todo = list(pages)
    for _ in range(MIGRATE_PASSES):
        if not todo:
            break
        retry = []
        for page in todo:
            newpage = get_new_page(page) if get_new_page else alloc_page_reclaim(kernel)
            rc = unmap_and_move(page, newpage)
            if rc == 0:
                if newpage.mapping is not None:
                    _add(newpage, newpage.test(PG.active))
                kernel.put_page(newpage)
                page.clear(PG.active)
                kernel.put_page(page)       # the isolation reference: the old frame is free
            else:
                kernel.put_page(newpage)
                retry.append(page)
        todo = retry
    for page in todo:
        putback_lru_page(page)
    kernel.stats["migrate_failed"] += len(todo)
    return len(todo)


def move_page(mm, addr: int) -> Optional[Page]:
    """sys_move_pages for the one page mapped at ``addr`` in ``mm``: look the page up under
    the pte lock (taking a reference), isolate it, drop the lookup reference, migrate.
    Returns the page now mapped there, or None (nothing mapped, not isolatable, or migration
    failed)."""
    from .pte import pte_pfn, pte_present
    from .vmscan import isolate_lru_page

    kernel = mm.kernel
    ptep = pte_offset(mm, addr)
    if ptep is None:
        return None
    with mm.page_table_lock:
        val = kernel.arch.pte_load(ptep)
        if not pte_present(val):
            return None
        page = kernel.pfn_to_page(pte_pfn(val))
        kernel.get_page(page)                # follow_page(FOLL_GET)
    try:
        if isolate_lru_page(page) != 0:
            kernel.stats["migrate_failed"] += 1
            return None
    finally:
        kernel.put_page(page)
    got: list[Page] = []

    def get_new_page(_old: Page) -> Page:
        from .vmscan import alloc_page_reclaim
        got.append(alloc_page_reclaim(kernel))
        return got[-1]

    if migrate_isolated_pages(kernel, [page], get_new_page):
        return None
    return got[-1]


def migrate_page_to(page: Page, newpage: Optional[Page] = None) -> Optional[Page]:
    """Migrate one page on the LRU (a convenience around :func:`migrate_pages`), to
    ``newpage`` if given.  Returns the page now holding its contents, or None if it could not
    be migrated."""
    kernel = page.kernel
    got: list[Page] = []

    def get_new_page(_old: Page) -> Page:
        nonlocal newpage
        if newpage is None:
            from .vmscan import alloc_page_reclaim
            newpage = alloc_page_reclaim(kernel)
        got.append(newpage)
        target, newpage = newpage, None
        return target

    failed = migrate_pages(kernel, [page], get_new_page)
    return None if failed else got[-1]


# ---------------------------------------------------------------------------------------------
# The fault path

def migration_entry_wait(mm, ptep: int, addr: int) -> None:
    """A fault found a non-present PTE at ``ptep``: if it is a migration entry, sleep until
    the page it names is unlocked (migration finished or failed), then return so the fault is
    retried.  Caller holds mmap_sem for read and no other lock."""
    kernel = mm.kernel
    arch = kernel.arch
    with mm.page_table_lock:
        val = arch.pte_load(ptep)
        if not pte_is_swap(val):
            return
        entry = pte_to_swp_entry(val)
        if not is_migration_entry(entry):
            return
        page = kernel.pfn_to_page(migration_entry_to_pfn(entry))
        if page._count <= 0:            # get_page_unless_zero
            return
        kernel.get_page(page)
    kernel.stats["migration_entry_wait"] += 1
    try:
        if page.lock.is_locked() and not page.lock.held_by_me():
            page.lock.acquire()         # wait_on_page_locked
            page.lock.release()
    finally:
        kernel.put_page(page)
