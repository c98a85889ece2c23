"""pyrmap.mmap: mm_alloc, files, mmap/munmap/mprotect/mremap/madvise/mlock, exit — the VMAs,
PTEs, rmap links, counters and TLB flushes each leaves, and every bad-input error with its
message, leaving the state as it was."""

import pytest

from test_memory import ANON, LOAD, RW, Machine, P

from pyrmap import mmap as M
from pyrmap.errors import EACCES, EFAULT, EINVAL, ENOMEM, MmError, SegmentationFault
from pyrmap.mm_types import (PG, VM_LOCKED, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE,
                             VM_MAYWRITE, VM_READ, VM_SHARED, VM_WRITE, page_mapcount)
from pyrmap.pte import _PAGE_U, pte_none, pte_pfn, pte_present, pte_write


def snapshot(m, mm):
    """What a failed syscall must leave unchanged."""
    return ([(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.vm_file) for v in mm.mmap],
            mm.anon_rss, mm.file_rss, m.k.frames.nr_free)


def test_mm_alloc_gives_a_fresh_asid_and_root():
    m = Machine()
    a, b = M.mm_alloc(m.k), M.mm_alloc(m.k)
    assert a.asid != b.asid and a.pgd != b.pgd
    assert m.k.mms == [a, b] and not a.mmap
    assert not m.k.frames.is_free(a.pgd)


def test_file_create_pattern_and_errors():
    m = Machine()
    f = M.file_create(m.k, "data", 3)
    assert m.k.files["data"] is f and f.npages == 3
    assert int(f.backing[2][5]) == M.file_word(f, 2, 5)
    z = M.file_create(m.k, "zero", 1, fill="zero")
    assert not z.backing[0].any()
    with pytest.raises(EINVAL, match="A file named 'data' already exists"):
        M.file_create(m.k, "data", 1)
    with pytest.raises(EINVAL, match="File size must be a positive number of pages, not 0"):
        M.file_create(m.k, "x", 0)
    with pytest.raises(EINVAL, match="File fill must be 'pattern' or 'zero', not 'ones'"):
        M.file_create(m.k, "x", 1, fill="ones")
    assert set(m.k.files) == {"data", "zero"}


def test_mmap_anonymous_private_vma_and_merge_with_neighbour():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, ANON)
    assert a == M.TASK_UNMAPPED_BASE
    (v,) = mm.mmap
    assert v.vm_flags == VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    assert v.vm_pgoff == a >> 12 and v.vm_file is None and v.anon_vma is None
    b = M.do_mmap(mm, 0, P, RW, ANON)
    assert b == a + 2 * P
    assert len(mm.mmap) == 1 and mm.mmap[0].vm_end == b + P        # merged
    c = M.do_mmap(mm, 0, P, M.PROT_READ, ANON)
    assert len(mm.mmap) == 2 and c == b + P                          # different flags


def test_mmap_file_shared_links_into_i_mmap():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 16)
    a = M.do_mmap(mm, 0, 4 * P, M.PROT_READ, M.MAP_SHARED, file=f, pgoff=3)
    (v,) = mm.mmap
    assert v.vm_flags & (VM_SHARED | VM_MAYSHARE) == VM_SHARED | VM_MAYSHARE
    assert f.i_mmap.stab(3) == [v] and f.i_mmap.stab(6) == [v]
    assert f.i_mmap.stab(2) == [] and f.i_mmap.stab(7) == []
    assert f.i_mmap_writable == 1
    assert m.load(mm, a + P) == M.file_word(f, 4, 0)


def test_mmap_anonymous_shared_is_backed_by_a_shmem_file():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, M.MAP_SHARED | M.MAP_ANONYMOUS)
    (v,) = mm.mmap
    assert v.vm_file is not None and v.vm_file.name.startswith("shmem:")
    assert v.vm_file.i_mmap.stab(1) == [v]
    m.store(mm, a + P, 7)
    assert m.load(mm, a) == 0 and m.load(mm, a + P) == 7


def test_mmap_fixed_replaces_what_was_there():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 3 * P, RW, ANON)
    m.store(mm, a + P, 5)
    old = pte_pfn(m.pte(mm, a + P))
    got = M.do_mmap(mm, a + P, P, M.PROT_READ, ANON | M.MAP_FIXED)
    assert got == a + P
    assert [(v.vm_start, v.vm_end) for v in mm.mmap] == [(a, a + P), (a + P, a + 2 * P),
                                                          (a + 2 * P, a + 3 * P)]
    assert m.k.frames.is_free(old) and mm.anon_rss == 0
    assert m.load(mm, a + P) == 0


def test_mmap_hint_that_overlaps_picks_another_address():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0x1000_0000, 2 * P, RW, ANON)
    assert a == 0x1000_0000
    b = M.do_mmap(mm, 0x1000_0000 + P, P, RW, ANON)
    assert b != a + P and not (a <= b < a + 2 * P)


@pytest.mark.parametrize("args, exc, msg", [
    ((0, 0, RW, ANON), EINVAL, r"mmap: length 0 is not positive"),
    ((0x1001, P, RW, ANON), EINVAL, r"mmap: address 0x1001 is not page aligned"),
    ((0, P, 8, ANON), EINVAL, r"protection 0x8 has bits other than"),
    ((0, P, RW, M.MAP_ANONYMOUS), EINVAL, r"exactly one of MAP_SHARED and MAP_PRIVATE"),
    ((0, P, RW, M.MAP_ANONYMOUS | M.MAP_SHARED | M.MAP_PRIVATE), EINVAL, "exactly one"),
    ((0, P, RW, M.MAP_PRIVATE), EINVAL, r"mmap: needs a file or MAP_ANONYMOUS"),
    ((0, P, RW, ANON | 0x4000000), EINVAL, r"mmap: unknown flags 0x4000000"),
    ((M.TASK_SIZE, P, RW, ANON | M.MAP_FIXED), ENOMEM,
     r"MAP_FIXED range \[0x4000000000, 0x4000001000\) is outside the user address space"),
    ((0, M.TASK_SIZE + P, RW, ANON), ENOMEM, r"exceeds the user address space"),
])
def test_mmap_bad_input_raises_and_changes_nothing(args, exc, msg):
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    before = snapshot(m, mm)
    with pytest.raises(exc, match=msg) as e:
        M.do_mmap(mm, *args)
    assert isinstance(e.value, MmError) and e.value.errno == exc.errno
    assert snapshot(m, mm) == before
    assert not mm.mmap_sem.is_locked()


def test_mmap_file_with_anonymous_flag_and_negative_pgoff():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 1)
    with pytest.raises(EINVAL, match="MAP_ANONYMOUS mapping given file 'f'"):
        M.do_mmap(mm, 0, P, RW, ANON, file=f)
    with pytest.raises(EINVAL, match="page offset -1 is negative"):
        M.do_mmap(mm, 0, P, RW, M.MAP_SHARED, file=f, pgoff=-1)
    assert not mm.mmap and len(f.i_mmap) == 0


# ---------------------------------------------------------------------------------------------
# munmap

def test_munmap_middle_splits_and_keeps_rmap_right():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 8)
    a = M.do_mmap(mm, 0, 8 * P, RW, M.MAP_SHARED, file=f)
    for i in range(8):
        m.load(mm, a + i * P)
    pages = [f.page_tree[i] for i in range(8)]
    M.do_munmap(mm, a + 2 * P, 3 * P)
    lo, hi = mm.mmap
    assert (lo.vm_start, lo.vm_end, lo.vm_pgoff) == (a, a + 2 * P, 0)
    assert (hi.vm_start, hi.vm_end, hi.vm_pgoff) == (a + 5 * P, a + 8 * P, 5)
    assert f.i_mmap.stab(1) == [lo] and f.i_mmap.stab(5) == [hi] and f.i_mmap.stab(3) == []
    assert [page_mapcount(p) for p in pages] == [1, 1, 0, 0, 0, 1, 1, 1]
    assert mm.file_rss == 5 and f.i_mmap_writable == 2
    assert not {p.pfn for p in pages[2:5]} & m.tlb_pfns(0)
    with pytest.raises(SegmentationFault):
        m.load(mm, a + 3 * P)
    assert m.load(mm, a + 6 * P) == M.file_word(f, 6, 0)


def test_munmap_of_an_anonymous_range_across_two_vmas():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 4 * P, RW, ANON)
    b = M.do_mmap(mm, a + 4 * P, 4 * P, M.PROT_READ, ANON | M.MAP_FIXED)
    for i in range(4):
        m.store(mm, a + i * P, i)
        m.load(mm, b + i * P)
    anon_vma = mm.mmap[0].anon_vma
    M.do_munmap(mm, a + 3 * P, 2 * P)
    assert [(v.vm_start, v.vm_end) for v in mm.mmap] == [(a, a + 3 * P), (b + P, b + 4 * P)]
    assert mm.anon_rss == 6
    # The neighbours share one anon_vma (find_mergeable_anon_vma); the unmapped pieces left it.
    assert anon_vma.head == mm.mmap or sorted(map(id, anon_vma.head)) == sorted(map(id, mm.mmap))


def test_munmap_unmapped_range_is_a_no_op_and_bad_ranges_raise():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    before = snapshot(m, mm)
    assert M.do_munmap(mm, a + 16 * P, 4 * P) == 0
    assert snapshot(m, mm) == before
    with pytest.raises(EINVAL, match=r"munmap: address 0x2000000800 is not page aligned"):
        M.do_munmap(mm, a + 0x800, P)
    with pytest.raises(EINVAL, match=r"munmap: length 0 is not positive"):
        M.do_munmap(mm, a, 0)
    with pytest.raises(EINVAL, match=r"is outside the user address space"):
        M.do_munmap(mm, M.TASK_SIZE - P, 2 * P)
    assert snapshot(m, mm) == before and m.load(mm, a) == 1


# ---------------------------------------------------------------------------------------------
# mprotect

def test_mprotect_read_only_splits_flushes_and_faults_writes():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 4 * P, RW, ANON)
    for i in range(4):
        m.store(mm, a + i * P, i)
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    M.mprotect(mm, a + P, 2 * P, M.PROT_READ)
    assert [(v.vm_start, v.vm_end, v.vm_flags & (VM_READ | VM_WRITE)) for v in mm.mmap] == [
        (a, a + P, VM_READ | VM_WRITE), (a + P, a + 3 * P, VM_READ),
        (a + 3 * P, a + 4 * P, VM_READ | VM_WRITE)]
    assert not pte_write(m.pte(mm, a + P)) and pte_write(m.pte(mm, a))
    assert not any(e.perm & 0x4 for e in m.arch.tlb_entries(0)
                   if a + P <= e.vpn << 12 < a + 3 * P)
    assert ("range_start", a + P, a + 3 * P) in [(e.kind, e.start, e.end) for e in rec.events]
    with pytest.raises(SegmentationFault, match="is not writable"):
        m.store(mm, a + P, 9)
    assert m.load(mm, a + 2 * P) == 2
    anon_vma = mm.mmap[0].anon_vma
    assert all(v.anon_vma is anon_vma and v in anon_vma.head for v in mm.mmap)
    M.mprotect(mm, a + P, 2 * P, RW)
    assert len(mm.mmap) == 1 and len(anon_vma.head) == 1      # merged back
    m.store(mm, a + P, 9)
    assert m.load(mm, a + P) == 9


def test_mprotect_none_keeps_pages_mapped_but_unreachable():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 3)
    page = m.page(mm, a)
    M.mprotect(mm, a, P, M.PROT_NONE)
    pte = m.pte(mm, a)
    assert pte_present(pte) and not pte & _PAGE_U and page_mapcount(page) == 1
    assert m.arch.cpu_access(0, a, LOAD).fault != 0
    with pytest.raises(SegmentationFault, match="is not readable"):
        m.load(mm, a)
    M.mprotect(mm, a, P, M.PROT_READ)
    assert m.load(mm, a) == 3


def test_mprotect_bad_input_changes_nothing():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, ANON)
    M.do_mmap(mm, a + 3 * P, P, RW, ANON | M.MAP_FIXED)
    m.store(mm, a, 1)
    before = snapshot(m, mm)
    with pytest.raises(ENOMEM, match=r"mprotect: \[0x2000000000, 0x2000004000\) is not fully "
                                     r"mapped: nothing maps 0x2000002000"):
        M.mprotect(mm, a, 4 * P, M.PROT_READ)
    with pytest.raises(EINVAL, match=r"mprotect: address 0x2000000010 is not page aligned"):
        M.mprotect(mm, a + 16, P, M.PROT_READ)
    with pytest.raises(EINVAL, match=r"protection 0x10 has bits other than"):
        M.mprotect(mm, a, P, 0x10)
    mm.mmap[0].vm_flags &= ~VM_MAYEXEC
    before = snapshot(m, mm)
    with pytest.raises(EACCES, match=r"mprotect: <Vma .*> may not become PROT_READ\|PROT_EXEC"):
        M.mprotect(mm, a, P, M.PROT_READ | M.PROT_EXEC)
    assert snapshot(m, mm) == before
    assert pte_write(m.pte(mm, a)) and M.mprotect(mm, a, 0, M.PROT_READ) == 0


# ---------------------------------------------------------------------------------------------
# mremap

def test_mremap_shrink_grow_in_place_and_move():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 4 * P, RW, ANON)
    for i in range(4):
        m.store(mm, a + i * P, 100 + i)
    assert M.mremap(mm, a, 4 * P, 2 * P) == a
    assert mm.mmap[0].vm_end == a + 2 * P and mm.anon_rss == 2
    assert M.mremap(mm, a, 2 * P, 3 * P) == a                 # grow in place
    assert mm.mmap[0].vm_end == a + 3 * P and m.load(mm, a + 2 * P) == 0
    M.do_mmap(mm, a + 3 * P, P, RW, M.MAP_ANONYMOUS | M.MAP_FIXED | M.MAP_SHARED)
    with pytest.raises(ENOMEM, match="cannot grow .* in place and MREMAP_MAYMOVE is not set"):
        M.mremap(mm, a, 3 * P, 5 * P)
    old_pfns = [pte_pfn(m.pte(mm, a + i * P)) for i in range(2)]
    new = M.mremap(mm, a, 3 * P, 5 * P, M.MREMAP_MAYMOVE)
    assert new != a
    assert [pte_pfn(m.pte(mm, new + i * P)) for i in range(2)] == old_pfns
    assert pte_none(m.pte(mm, a)) and not set(old_pfns) & {
        e.ppn for e in m.arch.tlb_entries(0) if e.vpn << 12 < a + 3 * P and e.vpn << 12 >= a}
    assert m.load(mm, new) == 100 and m.load(mm, new + P) == 101
    page = m.k.pages[old_pfns[0]]
    v = next(v for v in mm.mmap if v.vm_start == new)
    assert page_mapcount(page) == 1 and v.linear_page_index(new) == page.index
    assert v in page.mapping.head and mm.anon_rss == 3


def test_mremap_fixed_and_errors():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, ANON)
    m.store(mm, a, 1)
    before = snapshot(m, mm)
    with pytest.raises(EFAULT, match=r"mremap: \[0x2000000000, 0x2000003000\) is not inside "
                                     "one mapping"):
        M.mremap(mm, a, 3 * P, 4 * P)
    with pytest.raises(EINVAL, match="mremap: unknown flags 0x4"):
        M.mremap(mm, a, P, P, 4)
    with pytest.raises(EINVAL, match="MREMAP_FIXED needs MREMAP_MAYMOVE"):
        M.mremap(mm, a, P, P, M.MREMAP_FIXED, 0x100000)
    with pytest.raises(EINVAL, match="overlaps the old one"):
        M.mremap(mm, a, 2 * P, 2 * P, M.MREMAP_FIXED | M.MREMAP_MAYMOVE, a + P)
    with pytest.raises(EINVAL, match="mremap: new length is 0"):
        M.mremap(mm, a, P, 0)
    assert snapshot(m, mm) == before
    got = M.mremap(mm, a, 2 * P, 2 * P, M.MREMAP_FIXED | M.MREMAP_MAYMOVE, 0x100000)
    assert got == 0x100000 and m.load(mm, got) == 1
    assert [(v.vm_start, v.vm_end) for v in mm.mmap] == [(0x100000, 0x102000)]


def test_mremap_moves_a_file_mapping_with_i_mmap_right():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 4)
    a = M.do_mmap(mm, 0, 4 * P, M.PROT_READ, M.MAP_SHARED, file=f)
    m.load(mm, a + 2 * P)
    new = M.mremap(mm, a + 2 * P, 2 * P, 2 * P, M.MREMAP_MAYMOVE | M.MREMAP_FIXED, 0x200000)
    (moved,) = f.i_mmap.stab(2)
    assert moved.vm_start == new and moved.vm_pgoff == 2
    assert page_mapcount(f.page_tree[2]) == 1
    assert m.load(mm, new) == M.file_word(f, 2, 0)


# ---------------------------------------------------------------------------------------------
# madvise, mlock

def test_madvise_dontneed_private_file_drops_cow_copies():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 2)
    a = M.do_mmap(mm, 0, 2 * P, RW, M.MAP_PRIVATE, file=f)
    m.store(mm, a, 1)
    assert m.load(mm, a) == 1
    M.madvise(mm, a, 2 * P, M.MADV_DONTNEED)
    assert mm.anon_rss == 0 and m.load(mm, a) == M.file_word(f, 0, 0)


def test_madvise_errors():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, ANON)
    m.store(mm, a, 1)
    m.store(mm, a + P, 2)
    with pytest.raises(EINVAL, match=r"madvise: advice 9 is not supported"):
        M.madvise(mm, a, P, 9)
    with pytest.raises(EINVAL, match=r"madvise: address 0x2000000008 is not page aligned"):
        M.madvise(mm, a + 8, P, M.MADV_DONTNEED)
    M.mlock(mm, a, P)
    before = snapshot(m, mm)
    with pytest.raises(EINVAL, match=r"madvise: MADV_DONTNEED on locked mapping"):
        M.madvise(mm, a, 2 * P, M.MADV_DONTNEED)
    assert snapshot(m, mm) == before
    # A hole: the mapped part is zapped (as Linux does), then ENOMEM.
    with pytest.raises(ENOMEM, match=r"nothing maps 0x2000002000"):
        M.madvise(mm, a + P, 4 * P, M.MADV_DONTNEED)
    assert mm.anon_rss == 1 and m.load(mm, a + P) == 0 and m.load(mm, a) == 1


def test_mlock_populates_and_locks_munlock_merges():
    from pyrmap.rmap import SWAP_FAIL, try_to_unmap
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 4 * P, RW, ANON)
    M.mlock(mm, a + P + 100, P)          # rounds out to [a+P, a+3P)
    assert [(v.vm_start, bool(v.vm_flags & VM_LOCKED)) for v in mm.mmap] == [
        (a, False), (a + P, True), (a + 3 * P, False)]
    assert pte_write(m.pte(mm, a + P)) and pte_write(m.pte(mm, a + 2 * P))
    assert pte_none(m.pte(mm, a)) and mm.anon_rss == 2
    page = m.page(mm, a + P)
    from pyrmap.pagemap import lock_page, unlock_page
    lock_page(page)
    assert try_to_unmap(page, 0) == SWAP_FAIL and page_mapcount(page) == 1
    unlock_page(page)
    M.munlock(mm, a, 4 * P)
    assert len(mm.mmap) == 1 and not mm.mmap[0].vm_flags & VM_LOCKED


def test_mlock_hole_raises_enomem_and_changes_nothing():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    before = snapshot(m, mm)
    with pytest.raises(ENOMEM, match=r"mlock: \[0x2000000000, 0x2000002000\) is not fully "
                                     r"mapped: nothing maps 0x2000001000"):
        M.mlock(mm, a, 2 * P)
    assert snapshot(m, mm) == before


def test_exit_mmap_releases_notifiers_first_and_frees_everything():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m = Machine()
    free0 = m.k.frames.nr_free
    mm = m.mm(core=None)
    a = M.do_mmap(mm, 0, 3 * P, RW, ANON)
    f = M.file_create(m.k, "f", 2)
    b = M.do_mmap(mm, 0, 2 * P, RW, M.MAP_SHARED, file=f)
    m.arch.switch_mm(0, mm)
    for i in range(3):
        m.store(mm, a + i * P, i)
    m.store(mm, b, 1)
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    anon_vma = mm.mmap[0].anon_vma
    m.arch.switch_mm(0, M.mm_alloc(m.k))
    M.exit_mmap(mm)
    assert rec.kinds() == ["release"]
    assert anon_vma.freed and len(f.i_mmap) == 0
    assert mm not in m.k.mms and not mm.mmap
    assert f.page_tree[0].test(PG.dirty) and page_mapcount(f.page_tree[0]) == 0
    # Frames in use: the new mm's root and the file's cached page.
    assert m.k.frames.nr_free == free0 - 2
    with pytest.raises(EINVAL, match="has already exited"):
        M.exit_mmap(mm)
    with pytest.raises(EINVAL, match="has exited"):
        M.do_mmap(mm, 0, P, RW, ANON)


# ---------------------------------------------------------------------------------------------
# A seeded random walk over the syscalls with an independent consistency oracle.

def check_consistency(m, mms):
    from pyrmap.checkers import present_leaves
    from pyrmap.mm_types import PageAnon
    k = m.k
    counts = {}
    for mm in mms:
        vmas = mm.mmap
        for x, y in zip(vmas, vmas[1:]):
            assert x.vm_end <= y.vm_start, f"overlapping {x!r} {y!r}"
        for v in vmas:
            if v.anon_vma is not None:
                assert v in v.anon_vma.head and not v.anon_vma.freed, v
            if v.vm_file is not None:
                assert v in v.vm_file.i_mmap.stab(v.vm_pgoff) or v in v.vm_file.i_mmap_nonlinear
        anon = filerss = 0
        for va, ptep, val, level in present_leaves(k.mem, mm.pgd):
            vma = mm.find_vma(va)
            assert vma is not None and vma.vm_start <= va, f"pte at 0x{va:x} outside any vma"
            page = k.pages[pte_pfn(val)]
            counts[page.pfn] = counts.get(page.pfn, 0) + 1
            if PageAnon(page):
                anon += 1
                assert page.mapping is vma.anon_vma and vma.linear_page_index(va) == page.index
            else:
                filerss += 1
                assert page.mapping is vma.vm_file
            assert not k.frames.is_free(page.pfn)
        assert (mm.anon_rss, mm.file_rss) == (anon, filerss), mm
    for page in k.pages:
        assert page_mapcount(page) == counts.get(page.pfn, 0), page
        if counts.get(page.pfn):
            assert page._count >= page_mapcount(page)
    for f in k.files.values():
        for v in list(f.i_mmap) + f.i_mmap_nonlinear:
            assert v.vm_mm in mms and v in v.vm_mm.mmap, f"stale {v!r} in {f!r}"


@pytest.mark.parametrize("seed, svadu", [(s, True) for s in range(6)] + [(6, False), (7, False)])
def test_random_syscalls_keep_vmas_ptes_rmap_and_rss_consistent(seed, svadu):
    import random
    from test_memory import ANON, RW, Machine
    rng = random.Random(seed)
    m = Machine(nframes=400, seed=seed, svadu=svadu)
    f = M.file_create(m.k, "f", 16)
    root = m.mm(core=None)
    shadow = {root: {}}            # mm -> {va: value} for anonymous private words
    prots = {root: {}}             # mm -> {page va: writable}
    base = 0x10_0000

    def pages(mm):
        return [(v, a) for v in mm.mmap for a in range(v.vm_start, v.vm_end, P)]

    for step in range(120):
        mm = rng.choice(list(shadow))
        m.arch.switch_mm(0, mm)
        op = rng.choices(["mmap", "store", "load", "munmap", "mprotect", "mremap", "madvise",
                          "mlock", "fork", "file"], [3, 8, 4, 1, 2, 3, 1, 1, 1, 2])[0]
        where = f"seed {seed} step {step} {op}"
        start = base + rng.randrange(16) * P
        n = rng.randrange(1, 5) * P
        if op == "mmap":
            M.do_mmap(mm, start, n, RW, ANON | M.MAP_FIXED)
            for a in range(start, start + n, P):
                prots[mm][a] = True
                for w in [va for va in shadow[mm] if a <= va < a + P]:
                    del shadow[mm][w]
        elif op == "file":
            M.do_mmap(mm, start, n, rng.choice([M.PROT_READ, RW]),
                      rng.choice([M.MAP_SHARED, M.MAP_PRIVATE]) | M.MAP_FIXED, file=f,
                      pgoff=rng.randrange(8))
            for a in range(start, start + n, P):
                prots[mm].pop(a, None)
                for w in [va for va in shadow[mm] if a <= va < a + P]:
                    del shadow[mm][w]
            for v, a in pages(mm):
                if v.vm_file is not None and rng.random() < 0.5:
                    m.load(mm, a)
        elif op in ("store", "load"):
            cands = [a for a, w in prots[mm].items() if w or op == "load"]
            if cands:
                va = rng.choice(cands) + 8 * rng.randrange(4)
                if op == "store":
                    val = rng.randrange(1, 1 << 48)
                    m.store(mm, va, val)
                    shadow[mm][va] = val
                else:
                    assert m.load(mm, va) == shadow[mm].get(va, 0), where
        elif op == "munmap":
            M.do_munmap(mm, start, n)
            for a in range(start, start + n, P):
                prots[mm].pop(a, None)
                for w in [va for va in shadow[mm] if a <= va < a + P]:
                    del shadow[mm][w]
        elif op in ("mprotect", "mlock", "madvise"):
            if all(a in prots[mm] for a in range(start, start + n, P)):
                if op == "mprotect":
                    w = rng.random() < 0.5
                    M.mprotect(mm, start, n, RW if w else M.PROT_READ)
                    for a in range(start, start + n, P):
                        prots[mm][a] = w
                elif op == "mlock":
                    M.mlock(mm, start, n)
                    M.munlock(mm, start, n)
                else:
                    M.madvise(mm, start, n, M.MADV_DONTNEED)
                    for w in [va for va in shadow[mm] if start <= va < start + n]:
                        del shadow[mm][w]
        elif op == "mremap":
            n = P * rng.randrange(1, 3)
            if prots[mm]:
                start = rng.choice(list(prots[mm]))
            v = mm.find_vma(start)
            if v is not None and v.vm_start <= start and start + n <= v.vm_end \
                    and all(a in prots[mm] for a in range(start, start + n, P)):
                new = 0x400_0000 + rng.randrange(8) * 0x10_0000
                if new < start + n and start < new + n + P:
                    continue
                got = M.mremap(mm, start, n, n + P, M.MREMAP_MAYMOVE | M.MREMAP_FIXED, new)
                moved = {va - start + got: x for va, x in shadow[mm].items()
                         if start <= va < start + n}
                for a in [a for a in prots[mm] if got <= a < got + n + P]:
                    del prots[mm][a]
                for va in [va for va in shadow[mm]
                           if start <= va < start + n or got <= va < got + n + P]:
                    del shadow[mm][va]
                for a in range(start, start + n, P):
                    prots[mm][a - start + got] = prots[mm].pop(a)
                prots[mm][got + n] = prots[mm][got + n - P]
                shadow[mm].update(moved)
        elif op == "fork" and len(shadow) < 4:
            child = M.dup_mm(mm)
            shadow[child] = dict(shadow[mm])
            prots[child] = dict(prots[mm])
        try:
            check_consistency(m, list(shadow))
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
    for mm, view in shadow.items():
        m.arch.switch_mm(0, mm)
        for va, val in view.items():
            assert m.load(mm, va) == val, f"seed {seed}: 0x{va:x}"
    for mm in list(shadow):
        m.arch.switch_mm(0, m.mm(core=None))
        M.mmput(mm)
    check_consistency(m, [])


def test_mremap_move_brackets_the_old_range_with_notifier_calls():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, ANON)
    m.store(mm, a, 1)
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    new = M.mremap(mm, a, 2 * P, 2 * P, M.MREMAP_MAYMOVE | M.MREMAP_FIXED, 0x300000)
    ev = [(e.kind, e.start, e.end) for e in rec.events]
    # move_ptes's window on the old range, then munmap's on the (now empty) old range.
    assert ev[:2] == [("range_start", a, a + 2 * P), ("range_end", a, a + 2 * P)]
    assert rec.depth == 0 and m.load(mm, new) == 1


def test_asid_tags_never_collide_among_live_mms():
    m = Machine()
    m.arch.asid_bits = 2                      # tags 1..3
    a, b, c = (M.mm_alloc(m.k) for _ in range(3))
    with pytest.raises(ENOMEM, match="No free ASID: 3 address spaces use all 3 hardware tags"):
        M.mm_alloc(m.k)
    M.exit_mmap(b)
    d = M.mm_alloc(m.k)
    assert d.asid & 3 == b.asid & 3 and d.asid != b.asid
    assert m.k.stats["asid_rollover_flushes"] == 1
    assert len({mm.asid & 3 for mm in (a, c, d)}) == 3


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 140))
def test_random_syscalls_stress(seed):
    test_random_syscalls_keep_vmas_ptes_rmap_and_rss_consistent(seed, seed % 2 == 0)


def test_anonymous_shared_memory_dies_with_its_last_mapping():
    m = Machine()
    free0 = m.k.frames.nr_free
    parent = m.mm(core=None)
    a = M.do_mmap(parent, 0, 2 * P, RW, M.MAP_SHARED | M.MAP_ANONYMOUS | M.MAP_POPULATE)
    shm = parent.mmap[0].vm_file
    assert parent.file_rss == 2 and shm.nrpages == 2
    child = M.dup_mm(parent)
    m.arch.switch_mm(0, child)
    m.store(child, a + P, 77)
    m.arch.switch_mm(0, parent)
    assert m.load(parent, a + P) == 77
    M.do_munmap(parent, a, 2 * P)
    assert m.k.files.get(shm.name) is shm          # the child still maps it
    m.arch.switch_mm(0, M.mm_alloc(m.k))
    M.mmput(child)
    assert shm.name not in m.k.files and shm.nrpages == 0
    assert m.k.stats["shmem_released"] == 1
    M.mmput(parent)
    assert m.k.frames.nr_free == free0 - 1         # only the last mm's root table


def test_type_errors_and_mm_reference_counting():
    m = Machine()
    mm = m.mm(core=None)
    with pytest.raises(TypeError, match=r"Length must be an integer, not '4096'"):
        M.do_mmap(mm, 0, "4096", RW, ANON)
    with pytest.raises(TypeError, match=r"mm must be an MmStruct, not None"):
        M.do_munmap(None, 0, P)
    M.mmget(mm)
    M.mmput(mm)
    assert not mm.dead and mm in m.k.mms
    M.mmput(mm)
    assert mm.dead
    with pytest.raises(EINVAL, match="mmput of .* which has no users left"):
        M.mmput(mm)
    with pytest.raises(EINVAL, match="mmget of .* which has no users left"):
        M.mmget(mm)
