"""Software view of an mm's Sv39 page tables, which live in physical memory.

The engine finds, allocates and frees page-table pages here; every PTE *store* still goes
through the arch (``kernel.arch``), because the hardware walkers read the same words.

The pte lock of every PTE is ``mm.page_table_lock`` (the 2008 kernel without split pte locks).
"""

from __future__ import annotations

from typing import Iterator, Optional

from .mm_types import PG, MmStruct
from .pte import (LEVEL_SHIFT, LEVELS, PAGE_SIZE, PTE_SIZE, PTRS_PER_PTE, pte_leaf,
                  pte_pfn, pte_present, pte_table)


def pte_index(addr: int, level: int) -> int:
    return (addr >> LEVEL_SHIFT[level]) & (PTRS_PER_PTE - 1)


def pgd_alloc(kernel) -> int:
    """Allocate a zeroed root page-table page; returns its pfn."""
    page = kernel.alloc_page()
    page.set(PG.pagetable)
    kernel.stats["pagetable_pages"] += 1
    return page.pfn


def pte_offset(mm: MmStruct, addr: int) -> Optional[int]:
    """Physical address of the level-0 PTE for ``addr``, or None when an upper level is empty.

    Reads the upper levels through the arch (they are PTEs the walkers read too)."""
    arch = mm.kernel.arch
    table = mm.pgd
    for level in (2, 1):
        entry = arch.pte_load((table << 12) + pte_index(addr, level) * PTE_SIZE)
        if not pte_present(entry) or pte_leaf(entry):
            return None
        table = pte_pfn(entry)
    return (table << 12) + pte_index(addr, 0) * PTE_SIZE


def pte_alloc(mm: MmStruct, addr: int) -> int:
    """Like :func:`pte_offset`, allocating missing page-table pages.

    Caller holds mmap_sem; takes the page_table_lock to install a new table (the kernel's
    __pte_alloc), so two threads faulting in one table never both install one."""
    kernel = mm.kernel
    arch = kernel.arch
    table = mm.pgd
    for level in (2, 1):
        slot = (table << 12) + pte_index(addr, level) * PTE_SIZE
        entry = arch.pte_load(slot)
        if not pte_present(entry):
            new = kernel.alloc_page()
            new.set(PG.pagetable)
            with mm.page_table_lock:
                entry = arch.pte_load(slot)
                if not pte_present(entry):
                    # Upper-level entries are never cached by TLBs while non-present.
                    arch.set_pte_at(mm, addr, slot, pte_table(new.pfn))
                    kernel.stats["pagetable_pages"] += 1
                    entry = pte_table(new.pfn)
                    new = None
            if new is not None:
                new.clear(PG.pagetable)
                kernel.put_page(new)
        if pte_leaf(entry):
            raise AssertionError(f"superpage leaf at level {level} for 0x{addr:x} in {mm!r}")
        table = pte_pfn(entry)
    return (table << 12) + pte_index(addr, 0) * PTE_SIZE


def pte_lockptr(mm: MmStruct, addr: int):
    return mm.page_table_lock


def pte_range(mm: MmStruct, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(addr, ptep) for each page of [start, end) whose level-0 table exists."""
    addr = start
    while addr < end:
        ptep = pte_offset(mm, addr)
        if ptep is None:
            # Skip to the next 2 MiB boundary: no table covers this one.
            addr = ((addr >> LEVEL_SHIFT[1]) + 1) << LEVEL_SHIFT[1]
            continue
        yield addr, ptep
        addr += PAGE_SIZE


def table_pages(mm: MmStruct) -> list[int]:
    """Every page-table page of mm (root first), for teardown and checkers."""
    arch = mm.kernel.arch
    found = [mm.pgd]
    frontier = [(mm.pgd, 2)]
    while frontier:
        table, level = frontier.pop()
        if level == 0:
            continue
        for i in range(PTRS_PER_PTE):
            entry = arch.pte_load((table << 12) + i * PTE_SIZE)
            if pte_present(entry) and not pte_leaf(entry):
                found.append(pte_pfn(entry))
                frontier.append((pte_pfn(entry), level - 1))
    return found


assert LEVELS == 3
