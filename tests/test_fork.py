"""fork (dup_mm + copy_page_range): COW PTEs write-protected in parent and child with the
parent's TLBs flushed and a notifier range around them, mapcounts and refcounts, swap
entries duplicated, anon_vma shared; COW after fork never leaks a write across."""

import random

import pytest

from test_memory import ANON, RW, STORE, Machine, P, _swap_out

from pyrmap import mmap as M
from pyrmap.mm_types import PageAnon, VM_LOCKED, page_mapcount
from pyrmap.pte import pte_is_swap, pte_none, pte_pfn, pte_present, pte_write, pte_young


def test_fork_shares_anonymous_pages_read_only_and_cow_separates_them():
    m = Machine()
    parent = m.mm(core=0)
    a = M.do_mmap(parent, 0, 2 * P, RW, ANON)
    m.store(parent, a, 11)
    m.store(parent, a + P, 12)
    page = m.page(parent, a)
    child = M.dup_mm(parent)
    m.arch.switch_mm(1, child)
    assert [(v.vm_start, v.vm_end) for v in child.mmap] == [(a, a + 2 * P)]
    assert child.mmap[0].anon_vma is parent.mmap[0].anon_vma
    assert child.mmap[0] in parent.mmap[0].anon_vma.head
    for mm in (parent, child):
        pte = m.pte(mm, a)
        assert pte_present(pte) and not pte_write(pte) and pte_pfn(pte) == page.pfn
    assert not pte_young(m.pte(child, a))
    assert page_mapcount(page) == 2 and page._count == 2
    assert child.anon_rss == 2 and parent.anon_rss == 2
    # The child writes: it gets its own copy, the parent keeps its data.
    m.store(child, a, 99, core=1)
    assert m.load(parent, a, core=0) == 11 and m.load(child, a, core=1) == 99
    assert pte_pfn(m.pte(child, a)) != page.pfn
    assert page_mapcount(page) == 1 and page._count == 1
    # The parent writes: its page is exclusive again, so it is reused in place.
    m.store(parent, a, 13, core=0)
    assert pte_pfn(m.pte(parent, a)) == page.pfn
    assert m.k.stats["fault_wp_reuse"] == 1 and m.k.stats["fault_cow"] == 1
    assert m.load(child, a + P, core=1) == 12


def test_fork_flushes_the_parents_writable_tlb_entries():
    m = Machine()
    parent = m.mm(core=0)
    a = M.do_mmap(parent, 0, P, RW, ANON)
    m.store(parent, a, 1)
    pfn = pte_pfn(m.pte(parent, a))
    assert any(e.ppn == pfn and e.perm & 0x4 for e in m.arch.tlb_entries(0))
    child = M.dup_mm(parent)
    assert not any(e.ppn == pfn for e in m.arch.tlb_entries(0))
    # The parent's next store faults (COW of a page the child maps), not a silent write.
    assert m.arch.cpu_access(0, a, STORE, data=2).fault != 0
    m.store(parent, a, 2)
    m.arch.switch_mm(1, child)
    assert m.load(child, a, core=1) == 1


def test_fork_notifier_range_on_the_parent_for_cow_mappings_only():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m = Machine()
    parent = m.mm()
    a = M.do_mmap(parent, 0, 2 * P, RW, ANON)
    f = M.file_create(m.k, "f", 2)
    b = M.do_mmap(parent, 0x1000_0000, 2 * P, RW, M.MAP_SHARED, file=f)
    m.store(parent, a, 1)
    m.store(parent, b, 1)
    rec = RecordingNotifier()
    mmu_notifier_register(rec, parent)
    M.dup_mm(parent)
    assert [(e.kind, e.start, e.end) for e in rec.events] == [
        ("range_start", a, a + 2 * P), ("range_end", a, a + 2 * P)]


def test_fork_shared_file_mapping_copies_no_ptes_child_faults_the_same_page():
    m = Machine()
    parent = m.mm()
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(parent, 0, P, RW, M.MAP_SHARED, file=f)
    m.store(parent, a, 5)
    child = M.dup_mm(parent)
    assert pte_none(m.pte(child, a)) and child.file_rss == 0
    assert pte_write(m.pte(parent, a))                    # shared: not write-protected
    assert len(f.i_mmap.stab(0)) == 2 and f.i_mmap_writable == 2
    m.arch.switch_mm(1, child)
    assert m.load(child, a, core=1) == 5
    m.store(child, a, 6, core=1)
    assert m.load(parent, a, core=0) == 6
    assert page_mapcount(f.page_tree[0]) == 2


def test_fork_private_file_mapping_with_a_cow_copy():
    m = Machine()
    parent = m.mm()
    f = M.file_create(m.k, "f", 2)
    a = M.do_mmap(parent, 0, 2 * P, RW, M.MAP_PRIVATE, file=f)
    m.store(parent, a, 7)                 # page 0 is an anonymous copy
    m.load(parent, a + P)                 # page 1 is the file page
    child = M.dup_mm(parent)
    anon = m.page(parent, a)
    filepage = f.page_tree[1]
    assert PageAnon(anon) and page_mapcount(anon) == 2
    assert page_mapcount(filepage) == 2 and child.file_rss == 1 and child.anon_rss == 1
    m.arch.switch_mm(1, child)
    assert m.load(child, a, core=1) == 7
    assert m.load(child, a + P, core=1) == M.file_word(f, 1, 0)


def test_fork_duplicates_swap_entries():
    from pyrmap.swap import swap_count
    m = Machine(swap=8)
    parent = m.mm()
    a = M.do_mmap(parent, 0, P, RW, ANON)
    m.store(parent, a, 31)
    entry = _swap_out(m, parent, a)
    assert swap_count(m.k, entry) == 1
    child = M.dup_mm(parent)
    assert pte_is_swap(m.pte(child, a)) and swap_count(m.k, entry) == 2
    assert child in m.k.swap.mmlist
    m.arch.switch_mm(1, child)
    assert m.load(child, a, core=1) == 31
    assert m.load(parent, a, core=0) == 31
    page = m.page(parent, a)
    assert m.page(child, a) is page and page_mapcount(page) == 2


def test_fork_does_not_inherit_mlock_and_exits_free_everything():
    m = Machine()
    free0 = m.k.frames.nr_free
    parent = m.mm(core=None)
    a = M.do_mmap(parent, 0, 3 * P, RW, ANON | M.MAP_LOCKED)
    assert parent.mmap[0].vm_flags & VM_LOCKED and parent.anon_rss == 3
    child = M.dup_mm(parent)
    assert not child.mmap[0].vm_flags & VM_LOCKED
    anon_vma = parent.mmap[0].anon_vma
    M.mmput(child)
    assert len(anon_vma.head) == 1 and not anon_vma.freed
    M.mmput(parent)
    assert anon_vma.freed
    assert m.k.frames.nr_free == free0


def test_fork_tree_random_cow_keeps_every_process_view(seed=7):
    """Random stores in a small fork tree: every process reads back exactly what it (or its
    ancestor before the fork) wrote; mapcounts equal the number of PTEs mapping each page."""
    rng = random.Random(seed)
    m = Machine(nframes=256, seed=seed)
    root = m.mm(core=None)
    a = M.do_mmap(root, 0, 4 * P, RW, ANON)
    procs = {root: {}}

    def write(mm, i, v):
        m.arch.switch_mm(0, mm)
        m.store(mm, a + i * P, v)
        procs[mm][i] = v

    for step in range(40):
        mm = rng.choice(list(procs))
        if rng.random() < 0.2 and len(procs) < 5:
            child = M.dup_mm(mm)
            procs[child] = dict(procs[mm])
        else:
            write(mm, rng.randrange(4), rng.randrange(1 << 40))
    counts = {}
    for mm, view in procs.items():
        m.arch.switch_mm(0, mm)
        for i in range(4):
            assert m.load(mm, a + i * P) == view.get(i, 0), f"seed {seed}, step {step}"
            counts[m.page(mm, a + i * P).pfn] = counts.get(m.page(mm, a + i * P).pfn, 0) + 1
    for pfn, n in counts.items():
        assert page_mapcount(m.k.pages[pfn]) == n, f"seed {seed}: pfn {pfn:#x}"


def test_fork_out_of_memory_tears_the_child_down_and_raises_enomem():
    from pyrmap.errors import ENOMEM
    m = Machine(nframes=24)
    parent = m.mm()
    a = M.do_mmap(parent, 0, 2 * P, RW, ANON)
    b = M.do_mmap(parent, 0x4000_0000, P, RW, ANON | M.MAP_FIXED)   # needs new tables
    m.store(parent, a, 1)
    m.store(parent, b, 2)
    hog = []
    while m.k.frames.nr_free > 4:
        hog.append(m.k.alloc_page())
    mms_before = list(m.k.mms)
    free_before = m.k.frames.nr_free
    with pytest.raises(ENOMEM, match="fork: out of memory"):
        M.dup_mm(parent)
    assert m.k.mms == mms_before and m.k.frames.nr_free == free_before
    assert page_mapcount(m.page(parent, a)) == 1 and len(parent.mmap[0].anon_vma.head) == 1
    assert not parent.mmap_sem.is_locked()
    assert m.load(parent, b) == 2
