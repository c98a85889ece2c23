"""remap_file_pages: nonlinear file mappings (mm/fremap.c, 2008).

A shared file VMA becomes VM_NONLINEAR the first time ``remap_file_pages`` maps a page at an
offset other than its linear one: the VMA moves from ``mapping.i_mmap`` (searched by offset)
to ``mapping.i_mmap_nonlinear`` (searched whole, by ``try_to_unmap_cluster``).  The layout
lives in the page tables: :func:`populate_range` stores a *file PTE* (``pgoff_to_pte``) in
each slot, and a fault on a file PTE maps the page it names (``do_nonlinear_fault``).  Reclaim
of a nonlinear VMA's page leaves a file PTE behind, so the layout survives.

2008 limitation kept here: ``page_mkclean`` does not look at nonlinear VMAs, so writeback
cannot write-protect a nonlinear PTE (the kernel's fremap.c says so; its filesystems that
account dirty pages emulate nonlinear mappings with linear VMAs instead).
"""

from __future__ import annotations

from typing import Optional

from .errors import EINVAL
from .memory import make_pages_present, vm_normal_page
from .mm_types import VM_NONLINEAR, VM_SHARED, MmStruct, Vma
from .pagetable import pte_alloc, pte_lockptr
from .physmem import OutOfMemory
from .pte import (PAGE_SHIFT, PAGE_SIZE, PGOFF_BITS, is_migration_entry, pgoff_to_pte,
                  pte_dirty, pte_is_swap, pte_none, pte_present, pte_to_swp_entry)

__all__ = ["sys_remap_file_pages", "populate_range", "install_file_pte", "zap_pte",
           "MAP_NONBLOCK"]

MAP_NONBLOCK = 0x10000


def zap_pte(mm: MmStruct, vma: Vma, addr: int, ptep: int) -> None:
    """Empty one PTE before a file PTE replaces it.  Caller holds the pte lock.

    A present PTE is cleared *and flushed* (``ptep_clear_flush``), its D moved to the page,
    the rmap dropped and then the page reference; a swap entry loses its slot reference."""
    from .filemap import set_page_dirty
    from .pgtable_generic import ptep_clear_flush
    from .rmap import page_remove_rmap

    kernel = mm.kernel
    arch = kernel.arch
    pte = arch.pte_load(ptep)
    if pte_present(pte):
        pte = ptep_clear_flush(vma, addr, ptep)
        page = vm_normal_page(vma, addr, pte)
        if pte_dirty(pte):
            set_page_dirty(page)
        page_remove_rmap(page, vma)
        kernel.put_page(page)
        mm.file_rss -= 1
    else:
        if pte_is_swap(pte):
            entry = pte_to_swp_entry(pte)
            if not is_migration_entry(entry):
                from .swap import free_swap_and_cache
                free_swap_and_cache(kernel, entry)
        arch.set_pte_at(mm, addr, ptep, 0)


def install_file_pte(mm: MmStruct, vma: Vma, addr: int, pgoff: int) -> int:
    """Make the PTE of ``addr`` a file PTE naming ``pgoff`` (whatever it held is zapped).
    Takes the pte lock.  Returns 0 or -ENOMEM."""
    try:
        ptep = pte_alloc(mm, addr)
    except OutOfMemory:
        return -12
    with pte_lockptr(mm, addr):
        if not pte_none(mm.kernel.arch.pte_load(ptep)):
            zap_pte(mm, vma, addr, ptep)
        mm.kernel.arch.set_pte_at(mm, addr, ptep, pgoff_to_pte(pgoff))
    return 0


def populate_range(mm: MmStruct, vma: Vma, addr: int, size: int, pgoff: int) -> int:
    """Install file PTEs for [addr, addr+size) naming pgoff, pgoff+1, ...  Caller holds
    mmap_sem and brackets the call with invalidate_range_start/end.  Returns 0 or -ENOMEM."""
    while size > 0:
        err = install_file_pte(mm, vma, addr, pgoff)
        if err:
            return err
        size -= PAGE_SIZE
        addr += PAGE_SIZE
        pgoff += 1
    mm.kernel.stats["fremap_ptes"] += 1
    return 0


def sys_remap_file_pages(mm: MmStruct, start: int, size: int, prot: int,
                         pgoff: Optional[int] = None, flags: int = 0) -> int:
    """remap_file_pages: map file pages ``pgoff ..`` at [start, start+size) of the shared
    file VMA containing ``start``.

    Called with the kernel's arguments ``(mm, start, size, prot, pgoff, flags)`` (``prot``
    must be 0) or as ``(mm, start, size, pgoff)``.  ``start`` and ``size`` are rounded down
    to pages, as the kernel does.  Takes mmap_sem (for write when the VMA becomes
    nonlinear).  If the request is the VMA's linear layout and the VMA is still linear,
    nothing changes.  Otherwise the VMA is made VM_NONLINEAR (moved to
    ``i_mmap_nonlinear`` under ``i_mmap_lock``), the range's PTEs are replaced by file PTEs
    inside ``invalidate_range_start/end`` (:func:`populate_range`), and, unless
    MAP_NONBLOCK, the pages are faulted in.  Returns 0.

    Raises
    ------
    EINVAL
        Nonzero ``prot``, an empty or wrapping range, an offset a file PTE cannot hold, no
        VMA, a VMA that is not a shared file mapping, or a range not inside one VMA.
    """
    from .mmu_notifier import mmu_notifier_range

    if pgoff is None:
        prot, pgoff = 0, prot
    for what, v in (("Address", start), ("Size", size), ("Protection", prot),
                    ("Page offset", pgoff), ("Flags", flags)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{what} must be an integer, not {v!r}")
    if prot:
        raise EINVAL(f"remap_file_pages: prot must be 0, not {prot:#x}")
    if flags & ~MAP_NONBLOCK:
        raise EINVAL(f"remap_file_pages: unknown flags {flags & ~MAP_NONBLOCK:#x}")
    start &= ~(PAGE_SIZE - 1)
    size &= ~(PAGE_SIZE - 1)
    end = start + size
    if size <= 0 or start < 0:
        raise EINVAL(f"remap_file_pages: empty range at 0x{start:x} (size {size:#x})")
    if pgoff < 0 or pgoff + (size >> PAGE_SHIFT) > (1 << PGOFF_BITS):
        raise EINVAL(f"remap_file_pages: page offset {pgoff} (+{size >> PAGE_SHIFT} pages) "
                     f"does not fit in a file PTE ({PGOFF_BITS} bits)")
    if mm.dead:
        raise EINVAL(f"remap_file_pages: {mm!r} has exited")
    kernel = mm.kernel
    sem = mm.mmap_sem
    sem.down_write()
    try:
        vma = mm.find_vma(start)
        if vma is None or vma.vm_start > start:
            raise EINVAL(f"remap_file_pages: no mapping at 0x{start:x}")
        if vma.vm_file is None or not vma.vm_flags & VM_SHARED:
            raise EINVAL(f"remap_file_pages: {vma!r} is not a shared file mapping")
        if end > vma.vm_end:
            raise EINVAL(f"remap_file_pages: [0x{start:x}, 0x{end:x}) is not inside {vma!r}")
        if not vma.vm_flags & VM_NONLINEAR:
            if pgoff == vma.linear_page_index(start):
                kernel.stats["fremap_linear_noop"] += 1
                return 0
            mapping = vma.vm_file
            with mapping.i_mmap_lock:
                mapping.i_mmap.remove(vma)
                vma.vm_flags |= VM_NONLINEAR
                mapping.i_mmap_nonlinear.append(vma)
            kernel.stats["fremap_nonlinear_vmas"] += 1
        with mmu_notifier_range(mm, start, end):
            err = populate_range(mm, vma, start, size, pgoff)
        if err:
            raise OutOfMemory(f"remap_file_pages: no memory for page tables of {vma!r}")
        if not flags & MAP_NONBLOCK:
            make_pages_present(vma, start, end, write=False)
        kernel.stats["remap_file_pages"] += 1
        return 0
    finally:
        sem.up_write()
