"""remap_file_pages: the VMA becomes nonlinear (i_mmap -> i_mmap_nonlinear), file PTEs name
the right offsets, faults on them map the right page, zaps keep the layout, bad input raises."""

import pytest

from test_memory import RW, Machine, P

from pyrmap import mmap as M
from pyrmap.errors import EINVAL
from pyrmap.fremap import MAP_NONBLOCK, sys_remap_file_pages
from pyrmap.mm_types import PG, VM_NONLINEAR, page_mapcount
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pte import pte_file, pte_none, pte_pfn, pte_present, pte_to_pgoff


def setup(npages=8, vpages=4):
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", npages)
    a = M.do_mmap(mm, 0, vpages * P, RW, M.MAP_SHARED, file=f)
    return m, mm, f, a


def test_remap_makes_the_vma_nonlinear_and_maps_the_named_pages():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m, mm, f, a = setup()
    (vma,) = mm.mmap
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    assert sys_remap_file_pages(mm, a + P, 2 * P, 6) == 0
    assert vma.vm_flags & VM_NONLINEAR
    assert vma in f.i_mmap_nonlinear and vma not in f.i_mmap
    assert ("range_start", a + P, a + 3 * P) in [(e.kind, e.start, e.end) for e in rec.events]
    # Populated: pages 6 and 7 are mapped at a+P and a+2P.
    assert pte_pfn(m.pte(mm, a + P)) == f.page_tree[6].pfn
    assert pte_pfn(m.pte(mm, a + 2 * P)) == f.page_tree[7].pfn
    assert m.load(mm, a + P + 8) == M.file_word(f, 6, 1)
    assert m.load(mm, a + 2 * P) == M.file_word(f, 7, 0)
    # The rest keeps its linear layout.
    assert m.load(mm, a) == M.file_word(f, 0, 0)
    assert m.load(mm, a + 3 * P) == M.file_word(f, 3, 0)
    assert page_mapcount(f.page_tree[6]) == 1 and mm.file_rss == 4
    assert m.k.stats["fault_nonlinear"] == 2


def test_linear_request_on_a_linear_vma_is_a_no_op():
    m, mm, f, a = setup()
    assert sys_remap_file_pages(mm, a + P, P, 0, 1, 0) == 0
    assert not mm.mmap[0].vm_flags & VM_NONLINEAR and f.i_mmap.stab(1) == mm.mmap
    assert m.k.stats["fremap_linear_noop"] == 1


def test_nonblock_installs_file_ptes_and_a_fault_resolves_them():
    m, mm, f, a = setup()
    sys_remap_file_pages(mm, a, 2 * P, 0, 5, MAP_NONBLOCK)
    for i, pgoff in enumerate((5, 6)):
        pte = m.pte(mm, a + i * P)
        assert pte_file(pte) and pte_to_pgoff(pte) == pgoff
    m.store(mm, a + P + 16, 123)
    page = f.page_tree[6]
    assert page.test(PG.dirty) and m.k.mem.read((page.pfn << 12) + 16) == 123
    assert m.k.stats["fault_nonlinear"] == 1


def test_remap_over_a_present_page_flushes_and_drops_it():
    m, mm, f, a = setup()
    m.store(mm, a, 1)                          # page 0 mapped, dirty, in the TLB
    old = f.page_tree[0]
    assert old.pfn in m.tlb_pfns(0)
    old.clear(PG.dirty)
    sys_remap_file_pages(mm, a, P, 3)
    assert old.pfn not in m.tlb_pfns(0)
    assert page_mapcount(old) == 0 and old._count == 1 and old.test(PG.dirty)
    assert pte_pfn(m.pte(mm, a)) == f.page_tree[3].pfn
    assert m.load(mm, a) == M.file_word(f, 3, 0)


def test_madvise_dontneed_on_a_nonlinear_vma_leaves_file_ptes():
    m, mm, f, a = setup()
    sys_remap_file_pages(mm, a, 2 * P, 4)
    M.madvise(mm, a, 4 * P, M.MADV_DONTNEED)
    assert pte_to_pgoff(m.pte(mm, a)) == 4 and pte_to_pgoff(m.pte(mm, a + P)) == 5
    # Pages at their linear offset leave an empty PTE.
    assert pte_none(m.pte(mm, a + 2 * P)) or not pte_present(m.pte(mm, a + 2 * P))
    assert mm.file_rss == 0 and page_mapcount(f.page_tree[4]) == 0
    assert m.load(mm, a + P) == M.file_word(f, 5, 0)


def test_reclaim_of_a_nonlinear_page_leaves_a_file_pte():
    from pyrmap.rmap import try_to_unmap
    m, mm, f, a = setup()
    sys_remap_file_pages(mm, a, P, 7)
    page = f.page_tree[7]
    lock_page(page)
    for _ in range(4):
        try_to_unmap(page, 0)
        if page_mapcount(page) == 0:
            break
    unlock_page(page)
    assert page_mapcount(page) == 0
    pte = m.pte(mm, a)
    assert pte_file(pte) and pte_to_pgoff(pte) == 7
    assert m.load(mm, a + 8) == M.file_word(f, 7, 1)


@pytest.mark.parametrize("make, args, msg", [
    ("private", (0, P, 0, 1, 0), r"<Vma .*> is not a shared file mapping"),
    ("anon", (0, P, 0, 1, 0), r"is not a shared file mapping"),
    ("shared", (0, 5 * P, 0, 1, 0), r"\[0x2000000000, 0x2000005000\) is not inside <Vma"),
    ("shared", (0, P, 1, 1, 0), r"remap_file_pages: prot must be 0, not 0x1"),
    ("shared", (0, 0, 0, 1, 0), r"empty range at 0x2000000000"),
    ("shared", (0, P, 0, 1, 0x4), r"unknown flags 0x4"),
    ("shared", (-0x2000000000 + 0x100000, P, 0, 1, 0), r"no mapping at 0x100000"),
    ("shared", (0, P, 0, -1, 0), r"page offset -1"),
])
def test_bad_input_raises_einval_and_changes_nothing(make, args, msg):
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 8)
    if make == "shared":
        a = M.do_mmap(mm, 0, 4 * P, RW, M.MAP_SHARED, file=f)
    elif make == "private":
        a = M.do_mmap(mm, 0, 4 * P, RW, M.MAP_PRIVATE, file=f)
    else:
        a = M.do_mmap(mm, 0, 4 * P, RW, M.MAP_PRIVATE | M.MAP_ANONYMOUS)
    m.load(mm, a)
    start, size, prot, pgoff, flags = args
    before = [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.mmap], m.pte(mm, a)
    with pytest.raises(EINVAL, match=msg):
        sys_remap_file_pages(mm, a + start, size, prot, pgoff, flags)
    assert ([(v.vm_start, v.vm_end, v.vm_flags) for v in mm.mmap], m.pte(mm, a)) == before
    assert not mm.mmap_sem.is_locked()


def test_munmap_splits_a_nonlinear_vma_and_exit_unlinks_it():
    m, mm, f, a = setup()
    sys_remap_file_pages(mm, a, 2 * P, 5)
    M.do_munmap(mm, a + P, P)
    lo, hi = mm.mmap
    assert lo.vm_flags & VM_NONLINEAR and hi.vm_flags & VM_NONLINEAR
    assert f.i_mmap_nonlinear == [lo, hi] or sorted(map(id, f.i_mmap_nonlinear)) == \
        sorted(map(id, (lo, hi)))
    assert pte_none(m.pte(mm, a + P)) and page_mapcount(f.page_tree[6]) == 0
    assert m.load(mm, a) == M.file_word(f, 5, 0)
    m.arch.switch_mm(0, m.mm(core=None))
    M.mmput(mm)
    assert f.i_mmap_nonlinear == [] and len(f.i_mmap) == 0
    assert all(page_mapcount(p) == 0 for p in f.page_tree.values())
