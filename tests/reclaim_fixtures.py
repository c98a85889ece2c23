"""Small hand-built machines for the swap, page-cache, reclaim and migration tests.

A Kernel on SoftArch, mms and VMAs built directly on the data structures (so these tests do
not depend on pyrmap.mmap), pages mapped the way the fault paths map them, CPU loads and stores
through SoftArch, and a minimal fault handler for the faults these tests provoke (swap-in and
the write-protect fault after page_mkclean).
"""

from __future__ import annotations

import numpy as np

from pyrmap.kernel import Kernel, KernelConfig
from pyrmap.mm_types import (PG, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ, VM_SHARED,
                             VM_WRITE, AddressSpace, MmStruct, Vma)
from pyrmap.pagetable import pgd_alloc, pte_alloc, pte_offset
from pyrmap.physmem import PhysMem
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, AccessType,
                        FaultKind, is_migration_entry, pfn_pte, pte_is_swap, pte_present,
                        pte_to_swp_entry)

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
    """The engine's fault handler when pyrmap.memory has one, else the two cases these tests
    provoke: swap-in (do_swap_page) and the write fault on a write-protected shared file page
    (do_wp_page's dirty accounting)."""
    try:
        from pyrmap import memory
        fn = getattr(memory, "do_page_fault", None) or getattr(memory, "handle_mm_fault")
    except ImportError:
        fn = None
    if fn is not None and getattr(fn, "__name__", "") == "do_page_fault":
        fn(mm, addr, op)
        return
    _mini_fault(mm, addr, op)


def _mini_fault(mm, addr, op):
    from pyrmap.filemap import set_page_dirty
    from pyrmap.pagemap import lock_page, unlock_page
    from pyrmap.rmap import page_add_anon_rmap
    from pyrmap.swap import read_swap_page, swap_free, grab_swap_token
    k = mm.kernel
    arch = k.arch
    page_addr = addr & ~(PAGE - 1)
    vma = mm.find_vma(page_addr)
    assert vma is not None and vma.contains(page_addr)
    ptep = pte_offset(mm, page_addr)
    val = arch.pte_load(ptep)
    if pte_is_swap(val):
        entry = pte_to_swp_entry(val)
        assert not is_migration_entry(entry)
        grab_swap_token(mm)
        page = read_swap_page(k, entry)
        lock_page(page)
        with mm.page_table_lock:
            assert arch.pte_load(ptep) == val
            prot = RO | _PAGE_A
            if op == AccessType.STORE:
                prot |= _PAGE_W | _PAGE_D
                set_page_dirty(page)
            arch.set_pte_at(mm, page_addr, ptep, pfn_pte(page.pfn, prot))
            page_add_anon_rmap(page, vma, page_addr)
            mm.anon_rss += 1
        swap_free(k, entry)          # the pte's count; the page's reference stays with the pte
        unlock_page(page)
        return
    assert pte_present(val), f"unexpected fault on {val:#x}"
    assert op == AccessType.STORE and vma.vm_flags & VM_SHARED
    page = k.pfn_to_page(val >> 10 & ((1 << 44) - 1))
    lock_page(page)
    with mm.page_table_lock:
        cur = arch.pte_load(ptep)
        arch.cmpxchg(ptep, cur, cur | _PAGE_W | _PAGE_D | _PAGE_A)
        arch.flush_tlb_page(vma, page_addr)
        set_page_dirty(page)
    unlock_page(page)
