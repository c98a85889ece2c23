"""pyrmap.rmap: the 2008 mm/rmap.c, function by function, against its contracts on SoftArch."""

import pytest

from pyrmap import locking, rmap
from pyrmap.filemap import read_file_page
from pyrmap.kernel import Quirks
from pyrmap.mm_types import PG, VM_LOCKED, VM_NONLINEAR, Vma, page_mapcount
from pyrmap.mmu_notifier import RecordingNotifier, fail_allocations, mmu_notifier_register
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pagetable import pte_offset
from pyrmap.pte import (_PAGE_A, AccessType, FaultKind, SWP_MIGRATION_READ,
                        SWP_MIGRATION_WRITE, is_migration_entry, migration_entry_to_pfn,
                        pte_dirty, pte_file, pte_is_swap, pte_none, pte_present, pte_to_pgoff,
                        pte_to_swp_entry, pte_write, pte_young)
from pyrmap.rmap import (CLUSTER_SIZE, EFAULT, SWAP_AGAIN, SWAP_FAIL, SWAP_SUCCESS,
                         BadPageState, KernelBug)
from pyrmap.sched import Scheduler
from pyrmap.swap import add_to_swap, swap_count

from reclaim_fixtures import (ANON_FLAGS, RO, RW, SHARED_FLAGS, access, add_vma, dup_anon,
                              install, make_kernel, map_anon, map_file, new_file, new_mm,
                              pte_of)

BASE = 0x7000_0000
PAGE = 4096


def tlb_maps(k, addr, mm=None):
    """Every core's TLB entries covering ``addr`` (in ``mm``'s ASID when given)."""
    return [e for c in range(k.arch.ncores) for e in k.arch.tlb_entries(c)
            if e.covers(addr) and (mm is None or e.asid == mm.asid)]


def forked(swap_slots=None, nframes=64):
    """A parent mm with one anon page at BASE and a forked child sharing it (COW, read-only),
    each warmed in a different core's TLB."""
    k = make_kernel(nframes=nframes, swap_slots=swap_slots)
    parent = new_mm(k)
    pvma = add_vma(parent, BASE, 4)
    page = map_anon(pvma, BASE)
    child = new_mm(k)
    cvma = dup_anon(pvma, child)
    access(parent, BASE, AccessType.LOAD, core=0)
    access(child, BASE, AccessType.LOAD, core=1)
    return k, parent, pvma, child, cvma, page


def shared_file(nmms=2, flags=SHARED_FLAGS, prot=RW, npages=4):
    k = make_kernel()
    f = new_file(k, "f", npages, seed=3)
    mms, vmas = [], []
    for i in range(nmms):
        mm = new_mm(k)
        vma = add_vma(mm, BASE, npages, flags, mapping=f)
        page = map_file(vma, BASE + PAGE, prot)
        mms.append(mm)
        vmas.append(vma)
    return k, f, mms, vmas, page


# ---------------------------------------------------------------------------------------------
# Addresses

def test_vma_address_and_page_address_in_vma():
    k, parent, pvma, child, cvma, page = forked()
    assert rmap.vma_address(page, pvma) == BASE
    assert rmap.page_address_in_vma(page, cvma) == BASE
    other = add_vma(new_mm(k), BASE, 4)                  # its own anon_vma
    assert rmap.page_address_in_vma(page, other) == -EFAULT
    short = Vma(parent, BASE + PAGE, BASE + 2 * PAGE, ANON_FLAGS, pgoff=page.index + 1)
    assert rmap.vma_address(page, short) == -EFAULT      # index before the VMA
    k2, f, mms, vmas, fpage = shared_file(nmms=1)
    assert rmap.page_address_in_vma(fpage, vmas[0]) == BASE + PAGE
    g = new_file(k2, "g", 4)
    assert rmap.page_address_in_vma(fpage, add_vma(mms[0], BASE + 0x10000, 4, SHARED_FLAGS,
                                                   mapping=g)) == -EFAULT
    nl = Vma(mms[0], BASE + 0x20000, BASE + 0x24000, SHARED_FLAGS | VM_NONLINEAR, mapping=f)
    assert rmap.page_address_in_vma(fpage, nl) == -EFAULT


# ---------------------------------------------------------------------------------------------
# anon_vma

def test_anon_vma_prepare_allocates_once_and_reuses_a_neighbours():
    k = make_kernel()
    mm = new_mm(k)
    a = Vma(mm, BASE, BASE + 2 * PAGE, ANON_FLAGS, pgoff=BASE >> 12)
    mm.mmap.append(a)
    assert rmap.anon_vma_prepare(a) == 0
    av = a.anon_vma
    assert av is not None and av.head == [a] and not av.lock.is_locked()
    assert rmap.anon_vma_prepare(a) == 0 and a.anon_vma is av          # fast path
    b = Vma(mm, BASE + 2 * PAGE, BASE + 4 * PAGE, ANON_FLAGS, pgoff=(BASE >> 12) + 2)
    mm.mmap.append(b)
    assert rmap.anon_vma_prepare(b) == 0
    assert b.anon_vma is av and av.head == [a, b], "an adjacent mergeable VMA shares it"
    far = Vma(mm, BASE + 0x100000, BASE + 0x101000, ANON_FLAGS | VM_LOCKED, pgoff=0)
    mm.mmap.append(far)
    rmap.anon_vma_prepare(far)
    assert far.anon_vma is not av
    assert k.stats["rmap_anon_vma_alloc"] == 2
    lonely = Vma(mm, BASE + 0x200000, BASE + 0x201000, ANON_FLAGS)
    mm.mmap.append(lonely)
    with fail_allocations(k):
        assert rmap.anon_vma_prepare(lonely) == -rmap.ENOMEM
    assert lonely.anon_vma is None and not mm.page_table_lock.is_locked()


def test_anon_vma_link_unlink_merge_and_free():
    k = make_kernel()
    mm = new_mm(k)
    a = add_vma(mm, BASE, 2)
    av = a.anon_vma
    b = Vma(mm, BASE + 2 * PAGE, BASE + 4 * PAGE, ANON_FLAGS)
    b.anon_vma = av
    with pytest.raises(KernelBug, match=r"__anon_vma_link\(.*\) without"):
        rmap.__anon_vma_link(b)
    with av.lock:
        rmap.__anon_vma_link(b)
    assert av.head == [a, b]
    c = Vma(mm, BASE + 4 * PAGE, BASE + 5 * PAGE, ANON_FLAGS)
    c.anon_vma = av
    rmap.anon_vma_link(c)
    assert av.head == [a, b, c] and not av.lock.is_locked()
    rmap.__anon_vma_merge(a, b)
    assert av.head == [a, c]
    stranger = add_vma(mm, BASE + 0x100000, 1)
    with pytest.raises(KernelBug, match="__anon_vma_merge of"):
        rmap.__anon_vma_merge(a, stranger)
    rmap.anon_vma_unlink(c)
    assert not av.freed
    rmap.anon_vma_unlink(a)
    assert av.freed and av.head == [] and k.stats["rmap_anon_vma_free"] == 1
    rmap.anon_vma_unlink(Vma(mm, BASE, BASE + PAGE, ANON_FLAGS))      # no anon_vma: no-op


def test_page_lock_anon_vma_only_for_mapped_anon_pages():
    k, parent, pvma, child, cvma, page = forked()
    av = rmap.page_lock_anon_vma(page)
    assert av is pvma.anon_vma and av.lock.held_by_me()
    rmap.page_unlock_anon_vma(av)
    assert not av.lock.is_locked()
    assert rmap.page_lock_anon_vma(k.alloc_page()) is None
    k2, f, mms, vmas, fpage = shared_file(nmms=1)
    assert rmap.page_lock_anon_vma(fpage) is None


# ---------------------------------------------------------------------------------------------
# Adding and removing mappings

def test_rmap_counts_add_dup_remove():
    k = make_kernel()
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 4)
    page = k.alloc_page()
    rmap.page_add_new_anon_rmap(page, vma, BASE + 2 * PAGE)
    assert page_mapcount(page) == 1 and page.mapping is vma.anon_vma
    assert page.index == vma.linear_page_index(BASE + 2 * PAGE)
    assert k.stats["NR_ANON_PAGES"] == 1
    rmap.page_dup_rmap(page, vma, BASE + 2 * PAGE)
    assert page_mapcount(page) == 2
    with pytest.raises(KernelBug, match="has index"):
        rmap.page_dup_rmap(page, vma, BASE + 3 * PAGE)
    lock_page(page)
    rmap.page_add_anon_rmap(page, vma, BASE + 2 * PAGE)
    unlock_page(page)
    assert page_mapcount(page) == 3
    for _ in range(3):
        rmap.page_remove_rmap(page, vma)
    assert page_mapcount(page) == 0 and k.stats["NR_ANON_PAGES"] == 0
    assert page.mapping is vma.anon_vma, "page_remove_rmap leaves page->mapping alone"
    with pytest.raises(KernelBug, match="outside"):
        rmap.page_add_new_anon_rmap(page, vma, BASE + 4 * PAGE)
    fpage = k.alloc_page()
    rmap.page_add_file_rmap(fpage)
    rmap.page_add_file_rmap(fpage)
    assert page_mapcount(fpage) == 2 and k.stats["NR_FILE_MAPPED"] == 1


def test_page_add_anon_rmap_needs_the_page_lock():
    k = make_kernel()
    vma = add_vma(new_mm(k), BASE, 1)
    page = k.alloc_page()
    with pytest.raises(KernelBug, match="page_add_anon_rmap without the page lock"):
        rmap.page_add_anon_rmap(page, vma, BASE)
    assert page_mapcount(page) == 0


def test_page_dup_rmap_of_an_unmapped_page_is_a_bug():
    k = make_kernel()
    vma = add_vma(new_mm(k), BASE, 1)
    with pytest.raises(KernelBug, match="page_dup_rmap of an unmapped page"):
        rmap.page_dup_rmap(k.alloc_page(), vma, BASE)


def test_page_remove_rmap_underflow_raises_bad_page_state():
    k = make_kernel()
    vma = add_vma(new_mm(k), BASE, 1)
    page = k.alloc_page()
    rmap.page_add_new_anon_rmap(page, vma, BASE)
    rmap.page_remove_rmap(page, vma)
    with pytest.raises(BadPageState, match=r"page_mapcount\(page\) went negative! \(-1\)") as e:
        rmap.page_remove_rmap(page, vma)
    err = e.value
    assert (err.page, err.mapcount, err.mapping, err.index, err.vma) == (
        page, -1, vma.anon_vma, page.index, vma)
    assert err.pfn == page.pfn and err.count == 1 and isinstance(err, AssertionError)


# ---------------------------------------------------------------------------------------------
# page_check_address

def test_page_check_address_returns_the_locked_pte_or_none():
    k, parent, pvma, child, cvma, page = forked()
    found = rmap.page_check_address(page, parent, BASE)
    assert found is not None
    ptep, ptl = found
    assert ptep == pte_offset(parent, BASE) and ptl is parent.page_table_lock
    assert ptl.held_by_me()
    rmap.pte_unmap_unlock(ptep, ptl)
    assert rmap.page_check_address(k.alloc_page(), parent, BASE) is None     # other pfn
    assert rmap.page_check_address(page, parent, BASE + PAGE) is None        # pte none
    assert rmap.page_check_address(page, parent, BASE + 0x4000_0000) is None  # no table
    assert not parent.page_table_lock.is_locked()


# ---------------------------------------------------------------------------------------------
# page_referenced

def test_page_referenced_anon_across_fork_clears_a_and_flushes():
    k, parent, pvma, child, cvma, page = forked()
    assert pte_young(pte_of(parent, BASE)) and pte_young(pte_of(child, BASE))
    assert tlb_maps(k, BASE, parent) and tlb_maps(k, BASE, child)
    page.set(PG.referenced)
    assert rmap.page_referenced(page, 0, None) == 3         # PG_referenced + two young ptes
    assert not page.test(PG.referenced)
    assert not pte_young(pte_of(parent, BASE)) and not pte_young(pte_of(child, BASE))
    assert not tlb_maps(k, BASE), "x86 2008 flushes a young pte so the next access re-sets A"
    assert rmap.page_referenced(page, 0, None) == 0
    access(child, BASE, AccessType.LOAD, core=1)
    assert rmap.page_referenced(page, 0, None) == 1
    assert k.stats["rmap_young_found"] == 3 and k.stats["rmap_ptes_aged"] == 6


def test_page_referenced_vm_locked_counts_without_touching_a():
    k, parent, pvma, child, cvma, page = forked()
    pvma.vm_flags |= VM_LOCKED
    # The parent's VM_LOCKED pte counts and stops the walk: the child's A is not cleared.
    assert rmap.page_referenced(page, 0, None) == 1
    assert pte_young(pte_of(parent, BASE)) and pte_young(pte_of(child, BASE))
    assert tlb_maps(k, BASE, parent)


def test_page_referenced_memcg_filter():
    k, parent, pvma, child, cvma, page = forked()
    cg_a, cg_b = object(), object()
    parent.mem_cgroup, child.mem_cgroup = cg_a, cg_b
    assert rmap.page_referenced(page, 0, cg_b) == 1
    assert pte_young(pte_of(parent, BASE)), "another cgroup's pte was aged"
    assert not pte_young(pte_of(child, BASE))
    assert rmap.page_referenced(page, 0, cg_a) == 1
    assert not pte_young(pte_of(parent, BASE))
    assert rmap.page_referenced(page, 0, object()) == 0


def test_page_referenced_swap_token_of_a_faulting_mm():
    k, parent, pvma, child, cvma, page = forked()
    rmap.page_referenced(page, 0, None)                     # age both
    k.swap_token_mm = child
    assert rmap.page_referenced(page, 0, None) == 0         # child's mmap_sem is free
    child.mmap_sem.down_read()                              # "in the middle of a fault"
    assert rmap.page_referenced(page, 0, None) == 1
    k.arch.current_task().mm = child                        # but not for current's own mm
    try:
        assert rmap.page_referenced(page, 0, None) == 0
    finally:
        k.arch.current_task().mm = None
        child.mmap_sem.up_read()
    assert k.stats["rmap_swap_token_refs"] == 1


def test_page_referenced_counts_secondary_young():
    k, parent, pvma, child, cvma, page = forked()
    rmap.page_referenced(page, 0, None)
    rec = RecordingNotifier(young={BASE})
    mmu_notifier_register(rec, child)
    assert rmap.page_referenced(page, 0, None) == 1
    assert rec.kinds() == ["clear_flush_young"]
    assert rmap.page_referenced(page, 0, None) == 0


def test_page_referenced_file_locking():
    k, f, mms, vmas, page = shared_file()
    for i, mm in enumerate(mms):
        access(mm, BASE + PAGE, AccessType.LOAD, core=i)
    with pytest.raises(KernelBug, match="page_referenced_file on unlocked"):
        rmap.page_referenced_file(page, None)
    lock_page(page)                            # someone else's lock: trylock fails, counts 1
    assert rmap.page_referenced(page, 0, None) == 1
    assert pte_young(pte_of(mms[0], BASE + PAGE))
    assert rmap.page_referenced(page, 1, None) == 2
    unlock_page(page)
    access(mms[1], BASE + PAGE, AccessType.LOAD, core=1)
    assert rmap.page_referenced(page, 0, None) == 1
    assert not page.lock.is_locked(), "page_referenced must unlock what it trylocked"


def test_page_referenced_file_locked_shared_vma_counts_once_and_stops():
    k, f, mms, vmas, page = shared_file(flags=SHARED_FLAGS | VM_LOCKED)
    access(mms[0], BASE + PAGE, AccessType.LOAD)
    lock_page(page)
    assert rmap.page_referenced(page, 1, None) == 1
    unlock_page(page)
    assert pte_young(pte_of(mms[0], BASE + PAGE))


# ---------------------------------------------------------------------------------------------
# page_mkclean

def test_page_mkclean_leaves_shared_ptes_clean_readonly_and_next_store_faults():
    k, f, mms, vmas, page = shared_file()
    private_mm = new_mm(k)
    pvma = add_vma(private_mm, BASE, 4, ANON_FLAGS, mapping=f)         # MAP_PRIVATE, RO pte
    map_file(pvma, BASE + PAGE, RO)
    for i, mm in enumerate(mms):
        assert access(mm, BASE + PAGE, AccessType.STORE, 10 + i, core=i).fault == FaultKind.NONE
    recs = [RecordingNotifier(f"n{i}") for i in range(2)]
    for rec, mm in zip(recs, mms):
        mmu_notifier_register(rec, mm)
    with pytest.raises(KernelBug, match="page_mkclean on unlocked"):
        rmap.page_mkclean(page)
    lock_page(page)
    assert rmap.page_mkclean(page) == 2
    unlock_page(page)
    for i, mm in enumerate(mms):
        val = pte_of(mm, BASE + PAGE)
        assert pte_present(val) and not pte_write(val) and not pte_dirty(val)
        assert not [e for e in tlb_maps(k, BASE + PAGE, mm) if e.perm & 0b100 or e.d]
        assert recs[i].kinds() == ["invalidate_page"]
        assert access(mm, BASE + PAGE, AccessType.STORE, 1, core=i).fault == FaultKind.PAGE
    assert pte_present(pte_of(private_mm, BASE + PAGE)), "a private mapping is not touched"
    lock_page(page)
    assert rmap.page_mkclean(page) == 0, "already clean and read-only"
    unlock_page(page)
    assert k.stats["rmap_ptes_cleaned"] == 2


def test_page_mkclean_ignores_anonymous_pages():
    k, parent, pvma, child, cvma, page = forked()
    lock_page(page)
    assert rmap.page_mkclean(page) == 0
    unlock_page(page)
    with pytest.raises(KernelBug, match="page_mkclean_file on anonymous"):
        rmap.page_mkclean_file(pvma.anon_vma, page)


def _mkclean_vs_pte_rewrite(seed, quirk):
    """A thread rewrites a dirty writable shared pte under the pte lock by clearing it and
    setting it back (powerpc's set_pte_at); writeback runs page_mkclean meanwhile.  Returns
    (page_mkclean's result, the final pte)."""
    sched = Scheduler(seed)
    k = make_kernel(sched=sched)
    k.quirks = Quirks(page_check_address_lockless=quirk)
    f = new_file(k, "f", 1)
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 1, SHARED_FLAGS, mapping=f)
    page = map_file(vma, BASE, RW)
    access(mm, BASE, AccessType.STORE, 5)
    ptep = pte_offset(mm, BASE)
    result = {}

    def rewriter():
        for _ in range(2):
            with mm.page_table_lock:
                val = k.arch.ptep_get_and_clear(mm, BASE, ptep)
                k.arch.flush_tlb_page(vma, BASE)
                k.arch.yield_point("rewriting")
                k.arch.set_pte_at(mm, BASE, ptep, val)

    def writeback():
        lock_page(page)
        result["mkclean"] = rmap.page_mkclean(page)
        unlock_page(page)

    sched.spawn("rewriter", rewriter)
    sched.spawn("writeback", writeback)
    sched.run()
    return result["mkclean"], k.arch.pte_load(ptep)


def test_page_mkclean_takes_the_pte_lock_so_a_rewritten_pte_is_never_missed():
    for seed in range(12):
        ret, val = _mkclean_vs_pte_rewrite(seed, quirk=False)
        assert ret == 1 and not pte_write(val) and not pte_dirty(val), f"seed {seed}"


def test_page_check_address_lockless_quirk_misses_a_rewritten_pte():
    missed = [seed for seed in range(12)
              if pte_write(_mkclean_vs_pte_rewrite(seed, quirk=True)[1])]
    assert missed, "the lockless fast path never skipped the transiently cleared pte"


# ---------------------------------------------------------------------------------------------
# try_to_unmap

def test_try_to_unmap_on_an_unlocked_page_is_a_bug():
    k, parent, pvma, child, cvma, page = forked()
    with pytest.raises(KernelBug, match="try_to_unmap on unlocked"):
        rmap.try_to_unmap(page, 0)
    assert page_mapcount(page) == 2


def test_try_to_unmap_anon_installs_swap_entries():
    k, parent, pvma, child, cvma, page = forked(swap_slots=8)
    recs = [RecordingNotifier("p"), RecordingNotifier("c")]
    at_invalidate = []
    for rec, mm in zip(recs, (parent, child)):
        rec.on_event = lambda ev, mm=mm: at_invalidate.append(
            (ev.kind, pte_of(mm, BASE), tlb_maps(k, BASE, mm), page._count))
        mmu_notifier_register(rec, mm)
    rmap.page_referenced(page, 0, None)              # age: the walk must not find them young
    lock_page(page)
    assert add_to_swap(page)
    entry = page.private
    refs, slot = page._count, swap_count(k, entry)
    rss = (parent.anon_rss, child.anon_rss)
    assert rmap.try_to_unmap(page, 0) == SWAP_SUCCESS
    unlock_page(page)
    assert page_mapcount(page) == 0 and page._count == refs - 2
    assert swap_count(k, entry) == slot + 2
    for mm in (parent, child):
        val = pte_of(mm, BASE)
        assert pte_is_swap(val) and pte_to_swp_entry(val) == entry
        assert mm.on_mmlist and mm in k.swap.mmlist
    assert (parent.anon_rss, child.anon_rss) == (rss[0] - 1, rss[1] - 1)
    assert not tlb_maps(k, BASE)
    # invalidate_page ran after the clear and the CPU flush, before the reference was dropped.
    assert [(kind, val, tlb) for kind, val, tlb, _ in at_invalidate
            if kind == "invalidate_page"] == [("invalidate_page", 0, [])] * 2
    assert [c for kind, _, _, c in at_invalidate if kind == "invalidate_page"] == [refs, refs - 1]
    assert k.stats["rmap_swap_ptes"] == 2 and k.stats["rmap_unmapped"] == 2


def test_try_to_unmap_transfers_the_dirty_bit_from_the_atomic_clear():
    k = make_kernel(swap_slots=4)
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 1)
    page = map_anon(vma, BASE)
    access(mm, BASE, AccessType.STORE, 77)
    lock_page(page)
    add_to_swap(page)
    page.clear(PG.dirty)
    pte = pte_of(mm, BASE)
    k.arch.mem.write(pte_offset(mm, BASE), pte & ~_PAGE_A)   # old, but dirty
    assert rmap.try_to_unmap(page, 0) == SWAP_SUCCESS
    unlock_page(page)
    assert page.test(PG.dirty) and k.stats["rmap_dirty_transferred"] == 1


def test_try_to_unmap_fails_for_vm_locked_and_young_ptes():
    k, parent, pvma, child, cvma, page = forked(swap_slots=8)
    lock_page(page)
    add_to_swap(page)
    # Young: the first pass consumes the parent's A bit and fails.
    assert rmap.try_to_unmap(page, 0) == SWAP_FAIL
    assert not pte_young(pte_of(parent, BASE)) and pte_present(pte_of(parent, BASE))
    assert page_mapcount(page) == 2
    rmap.page_referenced(page, 1, None)
    pvma.vm_flags |= VM_LOCKED
    assert rmap.try_to_unmap(page, 0) == SWAP_FAIL
    assert page_mapcount(page) == 2 and pte_present(pte_of(parent, BASE))
    pvma.vm_flags &= ~VM_LOCKED
    assert rmap.try_to_unmap(page, 0) == SWAP_SUCCESS
    unlock_page(page)
    assert k.stats["rmap_unmap_fail_young"] == 1 and k.stats["rmap_unmap_fail_locked"] == 1


def test_try_to_unmap_fails_when_a_secondary_mmu_has_it_young():
    k, parent, pvma, child, cvma, page = forked(swap_slots=8)
    rmap.page_referenced(page, 0, None)
    rec = RecordingNotifier(young={BASE})
    mmu_notifier_register(rec, parent)
    lock_page(page)
    add_to_swap(page)
    assert rmap.try_to_unmap(page, 0) == SWAP_FAIL
    assert rec.kinds() == ["clear_flush_young"]
    assert rmap.try_to_unmap(page, 0) == SWAP_SUCCESS
    unlock_page(page)
    assert rec.kinds() == ["clear_flush_young", "clear_flush_young", "invalidate_page"]


def test_try_to_unmap_anon_migration_entries():
    k, parent, pvma, child, cvma, page = forked()
    rmap.page_referenced(page, 0, None)
    parent_pte = pte_of(parent, BASE)
    k.arch.mem.write(pte_offset(parent, BASE), parent_pte | 0b100)   # parent writable again
    pvma.vm_flags |= VM_LOCKED                                       # migration ignores it
    lock_page(page)
    assert rmap.try_to_unmap(page, 1) == SWAP_SUCCESS
    unlock_page(page)
    for mm, typ in ((parent, SWP_MIGRATION_WRITE), (child, SWP_MIGRATION_READ)):
        entry = pte_to_swp_entry(pte_of(mm, BASE))
        assert is_migration_entry(entry) and entry.type == typ
        assert migration_entry_to_pfn(entry) == page.pfn
    assert (parent.anon_rss, child.anon_rss) == (1, 1), "migration keeps rss"


def test_try_to_unmap_anon_not_in_swap_cache_without_migration_is_a_bug():
    k, parent, pvma, child, cvma, page = forked()
    rmap.page_referenced(page, 0, None)
    lock_page(page)
    with pytest.raises(KernelBug, match="neither in the swap cache nor being migrated"):
        rmap.try_to_unmap(page, 0)


def test_try_to_unmap_file_and_file_migration():
    k, f, mms, vmas, page = shared_file()
    for i, mm in enumerate(mms):
        access(mm, BASE + PAGE, AccessType.STORE, i, core=i)
    lock_page(page)
    rmap.page_referenced(page, 1, None)
    refs = page._count
    assert rmap.try_to_unmap(page, 0) == SWAP_SUCCESS
    assert page._count == refs - 2 and page.test(PG.dirty)
    for mm in mms:
        assert pte_none(pte_of(mm, BASE + PAGE)) and mm.file_rss == 0
    assert not tlb_maps(k, BASE + PAGE)
    unlock_page(page)
    # Migration leaves migration entries instead.
    k2, f2, mms2, vmas2, page2 = shared_file(nmms=1, prot=RO)
    lock_page(page2)
    assert rmap.try_to_unmap(page2, 1) == SWAP_SUCCESS
    unlock_page(page2)
    entry = pte_to_swp_entry(pte_of(mms2[0], BASE + PAGE))
    assert entry.type == SWP_MIGRATION_READ and entry.offset == page2.pfn
    assert mms2[0].file_rss == 1


def test_try_to_unmap_stops_at_swap_again_for_a_vma_that_lost_the_page():
    """A VMA on the list that no longer maps the page returns SWAP_AGAIN, and a walk that
    cannot unmap everything reports SWAP_AGAIN."""
    k, parent, pvma, child, cvma, page = forked(swap_slots=4)
    rmap.page_referenced(page, 0, None)
    lock_page(page)
    add_to_swap(page)
    assert rmap.try_to_unmap_one(page, add_vma(new_mm(k), BASE, 4), 0) == SWAP_AGAIN
    assert rmap.try_to_unmap_one(page, cvma, 0) == SWAP_AGAIN   # unmapped from the child
    assert page_mapcount(page) == 1
    page._mapcount += 1                                        # a mapping rmap cannot find
    assert rmap.try_to_unmap(page, 0) == SWAP_AGAIN
    page._mapcount -= 1
    unlock_page(page)


# ---------------------------------------------------------------------------------------------
# Nonlinear VMAs: the cluster scan

NL_PAGES = 40          # 160 KiB: two clusters (128 KiB + 32 KiB)


def nonlinear(locked=False):
    """A 64-page file; a nonlinear shared VMA of NL_PAGES pages where virtual page i maps
    file page NL_PAGES - 1 - i (so none sits at its linear index)."""
    k = make_kernel(nframes=160)
    f = new_file(k, "nl", 64)
    mm = new_mm(k)
    flags = SHARED_FLAGS | VM_NONLINEAR | (VM_LOCKED if locked else 0)
    vma = Vma(mm, BASE, BASE + NL_PAGES * PAGE, flags, pgoff=0, mapping=f)
    mm.mmap.append(vma)
    f.i_mmap_nonlinear.append(vma)
    pages = []
    for i in range(NL_PAGES):
        page = read_file_page(f, NL_PAGES - 1 - i)
        install(vma, BASE + i * PAGE, page, RW)
        with mm.page_table_lock:
            rmap.page_add_file_rmap(page)
        mm.file_rss += 1
        pages.append(page)
    return k, f, mm, vma, pages


def test_try_to_unmap_nonlinear_scans_clusters_with_cursors():
    k, f, mm, vma, pages = nonlinear()
    target = pages[35]                       # virtual page 35: in the second cluster
    young = 3
    access(mm, BASE + young * PAGE, AccessType.STORE, 1)     # young (and dirty) in cluster 0
    access(mm, BASE + 35 * PAGE, AccessType.LOAD)            # the target is young too
    lock_page(target)
    # Round 1: cluster 0 unmaps its 31 old ptes, exhausting the target's budget of 1.
    assert rmap.try_to_unmap(target, 0) == SWAP_AGAIN
    assert vma.vm_private_data == CLUSTER_SIZE
    for i in range(32):
        val = pte_of(mm, BASE + i * PAGE)
        if i == young:
            assert pte_present(val) and not pte_young(val)    # spared, A consumed
        else:
            assert pte_file(val) and pte_to_pgoff(val) == NL_PAGES - 1 - i
            assert page_mapcount(pages[i]) == 0
    assert mm.file_rss == NL_PAGES - 31
    # Round 2: the bound grows to two clusters; cluster 1 spares the young target (A
    # consumed) and unmaps the 7 others, exhausting the budget again past the VMA's end.
    assert rmap.try_to_unmap(target, 0) == SWAP_AGAIN
    val = pte_of(mm, BASE + 35 * PAGE)
    assert pte_present(val) and not pte_young(val)
    assert vma.vm_private_data == 2 * CLUSTER_SIZE
    assert all(pte_file(pte_of(mm, BASE + i * PAGE)) for i in range(32, NL_PAGES) if i != 35)
    # Round 3: every cursor is at or past the end: nothing is scanned, the bound passes the
    # rounded size, and the cursors are reset ("don't loop forever").
    assert rmap.try_to_unmap(target, 0) == SWAP_AGAIN
    assert vma.vm_private_data == 0 and pte_present(pte_of(mm, BASE + young * PAGE))
    # Round 4: cluster 0 again: the formerly young pte is old now and goes, dirty bit moved.
    assert rmap.try_to_unmap(target, 0) == SWAP_AGAIN
    assert pte_file(pte_of(mm, BASE + young * PAGE)) and pages[young].test(PG.dirty)
    assert vma.vm_private_data == CLUSTER_SIZE
    # Round 5: cluster 1 unmaps the target.
    assert rmap.try_to_unmap(target, 0) == SWAP_SUCCESS
    unlock_page(target)
    assert pte_file(pte_of(mm, BASE + 35 * PAGE)) and page_mapcount(target) == 0
    assert mm.file_rss == 0
    assert k.stats["rmap_cluster_unmapped"] == NL_PAGES
    assert not tlb_maps(k, BASE + 35 * PAGE)


def test_try_to_unmap_nonlinear_all_locked_fails():
    k, f, mm, vma, pages = nonlinear(locked=True)
    lock_page(pages[0])
    assert rmap.try_to_unmap(pages[0], 0) == SWAP_FAIL
    assert all(pte_present(pte_of(mm, BASE + i * PAGE)) for i in range(NL_PAGES))
    unlock_page(pages[0])


def test_try_to_unmap_cluster_on_an_anonymous_pte_is_a_bug():
    k, f, mm, vma, pages = nonlinear()
    anon = k.alloc_page()
    anon.mapping = add_vma(mm, BASE + 0x100000, 1).anon_vma
    k.arch.mem.write(pte_offset(mm, BASE), (anon.pfn << 10) | RW)
    with pytest.raises(KernelBug, match="does not map a file page"):
        rmap.try_to_unmap_cluster(0, rmap.Ref(1), vma)
    assert not mm.page_table_lock.is_locked()


# ---------------------------------------------------------------------------------------------
# Lock order

def test_lock_order_is_the_seed_tree_checked_by_lockdep():
    assert rmap.LOCK_ORDER is locking.LOCK_ORDER
    names = [name for name, _ in rmap.LOCK_ORDER]
    assert names.index("mmap_sem") < names.index("PG_locked") < names.index("i_mmap_lock") \
        < names.index("anon_vma->lock") < names.index("page_table_lock")
    k, parent, pvma, child, cvma, page = forked()
    assert k.arch.lockdep is not None
    checks = k.arch.lockdep.checks
    lock_page(page)
    rmap.page_referenced(page, 1, None)
    unlock_page(page)
    assert k.arch.lockdep.checks > checks
    # Taking the anon_vma lock inside the pte lock is the wrong order: lockdep says so.
    with parent.page_table_lock:
        with pytest.raises(locking.LockOrderViolation, match="anon_vma->lock"):
            rmap.page_lock_anon_vma(page)


# ---------------------------------------------------------------------------------------------
# End to end under a seeded scheduler: reclaim against a CPU writing the page

def _reclaim_vs_store(seed, quirk):
    """A clean swap-cache page (just written back) mapped writable but not dirty; a CPU
    thread stores to it while a reclaim thread unmaps it.  Returns (stores that completed,
    try_to_unmap result, PG_dirty at the end)."""
    sched = Scheduler(seed)
    k = make_kernel(swap_slots=4, sched=sched)
    k.quirks = Quirks(nonatomic_ptep_get_and_clear=quirk)
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 1)
    page = map_anon(vma, BASE)
    access(mm, BASE, AccessType.LOAD, core=1)     # core 1 caches a clean entry (A=1, D=0)
    lock_page(page)
    assert add_to_swap(page)
    unlock_page(page)
    page.clear(PG.dirty)                          # as after swap_writepage
    out = {"stores": 0}

    def cpu():
        k.arch.switch_mm(1, mm)
        for i in range(3):
            if k.arch.cpu_access(1, BASE, AccessType.STORE, data=100 + i).fault:
                return
            out["stores"] += 1

    def reclaim():
        lock_page(page)
        for _ in range(4):
            out["ret"] = rmap.try_to_unmap(page, 0)
            if out["ret"] == SWAP_SUCCESS:
                break
        unlock_page(page)

    sched.spawn("cpu", cpu)
    sched.spawn("reclaim", reclaim)
    sched.run()
    return out["stores"], out["ret"], page.test(PG.dirty)


def test_try_to_unmap_never_loses_a_store_into_a_page_it_unmaps():
    raced = 0
    for seed in range(16):
        stores, ret, dirty = _reclaim_vs_store(seed, quirk=False)
        if ret == SWAP_SUCCESS and stores:
            raced += 1
            assert dirty, f"seed {seed}: {stores} stores completed, page unmapped clean"
    assert raced, "no seed let a store complete before the page was unmapped"


def test_nonatomic_get_and_clear_quirk_loses_a_store_through_try_to_unmap():
    lost = [seed for seed in range(16)
            if (lambda s, r, d: r == SWAP_SUCCESS and s and not d)(
                *_reclaim_vs_store(seed, quirk=True))]
    assert lost, "the non-atomic clear never lost the racing D bit"


# ---------------------------------------------------------------------------------------------
# Property: random fork trees, random accesses, reclaim until unmapped

def _ptes_mapping(k, pfn):
    """(mm, addr) of every present pte mapping ``pfn``, by scanning every mm's VMAs."""
    found = []
    for mm in k.mms:
        for vma in mm.mmap:
            for addr in range(vma.vm_start, vma.vm_end, PAGE):
                val = pte_of(mm, addr)
                if pte_present(val) and (val >> 10) == pfn:
                    found.append((mm, addr))
    return found


@pytest.mark.parametrize("seed", range(6))
def test_random_fork_tree_reclaim_unmaps_every_pte(seed):
    import random
    rng = random.Random(seed)
    k = make_kernel(nframes=128, swap_slots=16)
    root = new_mm(k)
    vmas = [add_vma(root, BASE, 4)]
    pages = [map_anon(vmas[0], BASE + i * PAGE) for i in range(4)]
    for _ in range(rng.randrange(1, 5)):                  # fork from a random member
        parent = rng.choice(vmas)
        vmas.append(dup_anon(parent, new_mm(k)))
    for _ in range(12):                                    # warm TLBs, set A (and D)
        vma = rng.choice(vmas)
        addr = BASE + rng.randrange(4) * PAGE
        op = rng.choice([AccessType.LOAD, AccessType.STORE])
        access(vma.vm_mm, addr, op, data=1 if op == AccessType.STORE else None,
               core=rng.randrange(2))
    for page in pages:
        # rmap completeness: the mapcount is exactly the number of ptes mapping the page.
        where = _ptes_mapping(k, page.pfn)
        assert page_mapcount(page) == len(where), f"seed {seed}"
        lock_page(page)
        assert add_to_swap(page)
        rets = []
        while not rets or rets[-1] != SWAP_SUCCESS:
            # Each pass consumes at most one young pte's A bit and fails on it.
            assert len(rets) <= len(vmas), f"seed {seed}: {rets}"
            rets.append(rmap.try_to_unmap(page, 0))
        unlock_page(page)
        assert set(rets[:-1]) <= {SWAP_FAIL}, f"seed {seed}: {rets}"
        assert not _ptes_mapping(k, page.pfn) and page_mapcount(page) == 0
        assert not [e for c in range(2) for e in k.arch.tlb_entries(c) if e.ppn == page.pfn]
        holders = sum(pte_is_swap(pte_of(mm, addr)) and pte_to_swp_entry(pte_of(mm, addr))
                      == page.private for mm, addr in where)
        assert holders == len(where)
        assert swap_count(k, page.private) == len(where) + 1      # + the swap cache


@pytest.mark.parametrize("flushes", [True, False])
def test_page_referenced_aging_with_and_without_the_young_flush(flushes):
    """x86 2008 flushes a young pte, so a later access re-sets A and is seen; since
    b13b1d2d8692 the cached A=1 entry keeps serving hits and the page looks idle."""
    from pyrmap.kernel import KernelConfig
    k, parent, pvma, child, cvma, page = forked()
    k.config = KernelConfig(clear_flush_young_flushes=flushes)
    assert rmap.page_referenced(page, 0, None) == 2
    assert bool(tlb_maps(k, BASE)) is not flushes
    res = access(parent, BASE, AccessType.LOAD, core=0)
    assert res.hit is not flushes
    assert rmap.page_referenced(page, 0, None) == (1 if flushes else 0)
