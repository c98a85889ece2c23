"""Small hand-built machines for the swap, page-cache, reclaim and migration tests.

A Kernel on SoftArch, mms and VMAs built directly on the data structures (so these tests do
not depend on pyrmap.mmap), pages mapped the way the fault paths map them, CPU loads and stores
through SoftArch; faults go to the engine's handler (pyrmap.memory.do_page_fault).
"""

from __future__ import annotations

import numpy as np

from pyrmap.kernel import Kernel, KernelConfig
from pyrmap.mm_types import (VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ, VM_SHARED,
                             VM_WRITE, AddressSpace, MmStruct, Vma)
from pyrmap.pagetable import pgd_alloc, pte_alloc, pte_offset
from pyrmap.physmem import PhysMem
from pyrmap.pte import (_PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, AccessType, FaultKind, pfn_pte,
                        pte_present)

PAGE = 4096
ANON_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
SHARED_FLAGS = ANON_FLAGS | VM_SHARED | VM_MAYSHARE
RW = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U
RO = _PAGE_V | _PAGE_R | _PAGE_U


def make_kernel(nframes=64, seed=0, swap_slots=None, sched=None, **arch_kw):
    from pyrmap.softarch import SoftArch
    arch = SoftArch(PhysMem(nframes), ncores=2, seed=seed, sched=sched, **arch_kw)
    k = Kernel(arch, config=KernelConfig(reuse_freed_first=True))
    if swap_slots:
        from pyrmap.swap import swapon
        swapon(k, swap_slots)
    return k


def new_mm(k) -> MmStruct:
    mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
    k.mms.append(mm)
    return mm


def add_vma(mm, start, npages, flags=ANON_FLAGS, mapping=None, pgoff=0, anon_vma=None):
    """A VMA linked where rmap finds it: anon_vma (given, shared with a fork parent, or new)
    and, for a file, i_mmap."""
    from pyrmap.rmap import anon_vma_prepare
    if mapping is None and not pgoff:
        pgoff = start >> 12                   # mmap's vm_pgoff for an anonymous VMA
    vma = Vma(mm, start, start + npages * PAGE, flags, pgoff=pgoff, mapping=mapping)
    mm.mmap.append(vma)
    mm.mmap.sort(key=lambda v: v.vm_start)
    if anon_vma is not None:
        vma.anon_vma = anon_vma
        anon_vma.head.append(vma)
    elif mapping is None:
        anon_vma_prepare(vma)
    if mapping is not None:
        mapping.i_mmap.insert(pgoff, pgoff + npages - 1, vma)
    return vma


def new_file(k, name, npages, seed=None) -> AddressSpace:
    mapping = AddressSpace(k, name, npages)
    k.files[name] = mapping
    if seed is not None:
        rng = np.random.default_rng(seed)
        for i in range(npages):
            mapping.backing[i] = rng.integers(0, 2**63, size=512, dtype=np.uint64)
    return mapping


def install(vma, addr, page, prot):
    mm = vma.vm_mm
    ptep = pte_alloc(mm, addr)
    with mm.page_table_lock:
        mm.kernel.arch.set_pte_at(mm, addr, ptep, pfn_pte(page.pfn, prot))
    return ptep


def map_anon(vma, addr, fill=None, prot=RW):
    """do_anonymous_page: a new page, filled, mapped, on the active list."""
    from pyrmap.rmap import page_add_new_anon_rmap
    from pyrmap.vmscan import lru_cache_add_active
    k = vma.kernel
    page = k.alloc_page()
    if fill is not None:
        k.mem.frame(page.pfn)[:] = fill
    install(vma, addr, page, prot)
    with vma.vm_mm.page_table_lock:
        page_add_new_anon_rmap(page, vma, addr)
    vma.vm_mm.anon_rss += 1
    lru_cache_add_active(page)
    return page


def map_file(vma, addr, prot=RO):
    """__do_fault for a file VMA: the page-cache page mapped (the pte holds a reference)."""
    from pyrmap.filemap import read_file_page
    from pyrmap.rmap import page_add_file_rmap
    page = read_file_page(vma.vm_file, vma.linear_page_index(addr))
    install(vma, addr, page, prot)
    with vma.vm_mm.page_table_lock:
        page_add_file_rmap(page)
    vma.vm_mm.file_rss += 1
    return page


def dup_anon(parent_vma, child_mm):
    """fork's copy_page_range for one anonymous VMA: the child shares the anon_vma, every
    present pte is copied write-protected in both (COW) with page_dup_rmap + get_page."""
    from pyrmap.rmap import page_dup_rmap
    k = child_mm.kernel
    arch = k.arch
    pmm = parent_vma.vm_mm
    child = add_vma(child_mm, parent_vma.vm_start, parent_vma.npages, parent_vma.vm_flags,
                    anon_vma=parent_vma.anon_vma)
    for addr in range(parent_vma.vm_start, parent_vma.vm_end, PAGE):
        src = pte_offset(pmm, addr)
        if src is None:
            continue
        val = arch.pte_load(src)
        if not pte_present(val):
            continue
        with pmm.page_table_lock:
            arch.ptep_set_wrprotect(pmm, addr, src)
        page = k.pfn_to_page(val >> 10 & ((1 << 44) - 1))
        dst = pte_alloc(child_mm, addr)
        with child_mm.page_table_lock:
            arch.set_pte_at(child_mm, addr, dst, arch.pte_load(src) & ~_PAGE_W)
            k.get_page(page)
            page_dup_rmap(page, child, addr)
        child_mm.anon_rss += 1
    arch.flush_tlb_mm(pmm)
    return child


def pte_of(mm, addr) -> int:
    ptep = pte_offset(mm, addr)
    return 0 if ptep is None else mm.kernel.arch.pte_load(ptep)


def access(mm, addr, op, data=None, core=0):
    arch = mm.kernel.arch
    arch.switch_mm(core, mm)
    return arch.cpu_access(core, addr, op, data=data)


def store(mm, addr, data, core=0, fault_ok=True):
    """A user store; on a page fault runs :func:`handle_fault` and retries once."""
    res = access(mm, addr, AccessType.STORE, data, core)
    for _ in range(4):
        if res.fault != FaultKind.PAGE or not fault_ok:
            break
        handle_fault(mm, addr, AccessType.STORE)
        res = access(mm, addr, AccessType.STORE, data, core)
    assert res.fault == FaultKind.NONE, f"store to 0x{addr:x} faulted: {res}"
    return res


def load(mm, addr, core=0):
    res = access(mm, addr, AccessType.LOAD, None, core)
    for _ in range(4):
        if res.fault != FaultKind.PAGE:
            break
        handle_fault(mm, addr, AccessType.LOAD)
        res = access(mm, addr, AccessType.LOAD, None, core)
    assert res.fault == FaultKind.NONE, f"load from 0x{addr:x} faulted: {res}"
    return res.value


def handle_fault(mm, addr, op):
    """The engine's page-fault entry (pyrmap.memory.do_page_fault)."""
    from pyrmap.memory import do_page_fault
    do_page_fault(mm, addr, op)
