"""pyrmap.filemap: the page cache, dirty state, clear_page_dirty_for_io, writeback and msync."""

import numpy as np
import pytest

from pyrmap import filemap as fm
from pyrmap.mm_types import PG, VM_MAYREAD, VM_READ
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pte import AccessType, FaultKind, pte_dirty, pte_present, pte_write

from reclaim_fixtures import (PAGE, RW, SHARED_FLAGS, access, add_vma, load, make_kernel,
                              map_file, new_file, new_mm, pte_of, store)

BASE = 0x5000_0000


def shared_setup(npages=2, nmms=1, seed=7):
    k = make_kernel()
    f = new_file(k, "f", npages, seed=seed)
    mms = []
    for j in range(nmms):
        mm = new_mm(k)
        vma = add_vma(mm, BASE, npages, SHARED_FLAGS, mapping=f)
        for i in range(npages):
            map_file(vma, BASE + i * PAGE, RW)
        mms.append(mm)
    return k, f, mms


def test_read_file_page_caches_and_reads_backing():
    k = make_kernel()
    f = new_file(k, "f", 3, seed=1)
    p = fm.read_file_page(f, 1)
    assert np.array_equal(k.mem.frame(p.pfn), f.backing[1])
    assert p.mapping is f and p.index == 1 and p.test(PG.uptodate) and p._count == 2
    assert not p.lock.is_locked()
    assert fm.read_file_page(f, 1) is p and p._count == 3
    assert fm.find_get_page(f, 1) is p and fm.find_get_page(f, 0) is None
    del f.backing[2]
    hole = fm.read_file_page(f, 2)
    assert not k.mem.frame(hole.pfn).any()
    with pytest.raises(ValueError, match=r"Page index 3 is outside file 'f' of 3 pages"):
        fm.read_file_page(f, 3)


def test_add_and_remove_page_cache():
    k = make_kernel()
    f = new_file(k, "f", 2)
    a, b = k.alloc_page(), k.alloc_page()
    assert fm.add_to_page_cache(a, f, 0) == 0
    assert a.lock.is_locked() and a._count == 2
    assert fm.add_to_page_cache(b, f, 0) == -fm.EEXIST
    assert b.mapping is None and not b.lock.is_locked()
    fm.remove_from_page_cache(a)
    assert a.mapping is None and f.nrpages == 0 and a._count == 2   # caller drops the ref
    unlock_page(a)
    with pytest.raises(AssertionError, match="unlocked page"):
        fm.remove_from_page_cache(a)
    assert fm.find_lock_page(f, 0) is None


def test_set_page_dirty_counts_transitions():
    k = make_kernel()
    f = new_file(k, "f", 1)
    p = fm.read_file_page(f, 0)
    assert fm.set_page_dirty(p) == 1 and fm.set_page_dirty(p) == 0
    assert fm.dirty_pages(f) == [0] and k.stats["pages_dirtied"] == 1


def test_clear_page_dirty_for_io_moves_pte_dirt_and_write_protects():
    k, f, (mm,) = shared_setup(1)
    page = fm.find_get_page(f, 0)
    store(mm, BASE + 8, 42)                        # D set in the pte, PG_dirty still clear
    assert pte_dirty(pte_of(mm, BASE)) and not page.test(PG.dirty)
    lock_page(page)
    assert fm.clear_page_dirty_for_io(page) == 1    # page_mkclean found the dirty pte
    val = pte_of(mm, BASE)
    assert pte_present(val) and not pte_write(val) and not pte_dirty(val)
    assert not page.test(PG.dirty)
    assert not any(e.vpn == BASE >> 12 and e.perm & 0b100 for e in k.arch.tlb_entries(0))
    assert fm.clear_page_dirty_for_io(page) == 0    # nothing left to write
    unlock_page(page)


def test_writeback_equals_what_the_cpus_wrote_and_next_store_faults():
    k, f, (mm1, mm2) = shared_setup(2, nmms=2)
    expect = [f.backing[i].copy() for i in range(2)]
    for page in (fm.find_get_page(f, i) for i in range(2)):
        fm.set_page_dirty(page)                    # what the write fault does
    store(mm1, BASE + 0, 0xAAAA, core=0)
    store(mm2, BASE + PAGE + 16, 0xBBBB, core=1)
    expect[0][0] = 0xAAAA
    expect[1][2] = 0xBBBB
    assert fm.msync(mm1, BASE, 2 * PAGE) == 0
    for i in range(2):
        assert np.array_equal(f.backing[i], expect[i]), f"page {i} lost data"
        for mm in (mm1, mm2):
            val = pte_of(mm, BASE + i * PAGE)
            assert pte_present(val) and not pte_write(val) and not pte_dirty(val)
    assert fm.dirty_pages(f) == []
    # The next store from either CPU faults; the fault redirties; the next msync writes it.
    res = access(mm2, BASE + 8, AccessType.STORE, 0xCCCC, core=1)
    assert res.fault == FaultKind.PAGE
    store(mm2, BASE + 8, 0xCCCC, core=1)
    expect[0][1] = 0xCCCC
    assert fm.dirty_pages(f) == [0]
    assert fm.msync(mm2, BASE, PAGE) == 0
    assert np.array_equal(f.backing[0], expect[0])
    assert k.stats["pages_written"] == 3


def test_without_mkclean_a_later_store_is_lost(monkeypatch):
    """The check above can fail: with a page_mkclean that does nothing, the store after
    writeback goes through the still-writable TLB entry, the page stays clean, and the next
    writeback leaves the backing store stale."""
    import pyrmap.rmap
    k, f, (mm,) = shared_setup(1)
    page = fm.find_get_page(f, 0)
    fm.set_page_dirty(page)
    store(mm, BASE, 1)
    monkeypatch.setattr(pyrmap.rmap, "page_mkclean", lambda page: 0)
    fm.msync(mm, BASE, PAGE)
    assert access(mm, BASE, AccessType.STORE, 2).fault == FaultKind.NONE   # no fault
    fm.msync(mm, BASE, PAGE)
    assert int(f.backing[0][0]) == 1 and load(mm, BASE) == 2               # lost write


def test_write_one_page_unlocks_and_skips_clean_pages():
    k = make_kernel()
    f = new_file(k, "f", 1)
    p = fm.read_file_page(f, 0)
    k.mem.frame(p.pfn)[5] = 77
    lock_page(p)
    fm.write_one_page(p)
    assert not p.lock.is_locked() and 0 not in f.backing    # clean: nothing written
    fm.set_page_dirty(p)
    lock_page(p)
    fm.write_one_page(p)
    assert int(f.backing[0][5]) == 77 and not p.test(PG.dirty) and not p.test(PG.writeback)


def test_do_writepages_range_and_private_mappings_are_not_synced():
    k = make_kernel()
    f = new_file(k, "f", 4)
    for i in range(4):
        p = fm.read_file_page(f, i)
        k.mem.frame(p.pfn)[0] = 100 + i
        fm.set_page_dirty(p)
    assert fm.do_writepages(f, 1, 2) == 2
    assert fm.dirty_pages(f) == [0, 3]
    mm = new_mm(k)
    add_vma(mm, BASE, 4, VM_READ | VM_MAYREAD, mapping=f)   # private read-only mapping
    assert fm.msync(mm, BASE, 4 * PAGE) == 0
    assert fm.dirty_pages(f) == [0, 3]
    assert fm.do_writepages(f) == 2 and int(f.backing[3][0]) == 103


def test_msync_errors():
    k, f, (mm,) = shared_setup(2)
    assert fm.msync(mm, BASE + 1, PAGE) == -fm.EINVAL
    assert fm.msync(mm, BASE, PAGE, fm.MS_SYNC | fm.MS_ASYNC) == -fm.EINVAL
    assert fm.msync(mm, BASE, PAGE, 0x100) == -fm.EINVAL
    assert fm.msync(mm, BASE, 0) == 0
    fm.set_page_dirty(fm.find_get_page(f, 1))
    assert fm.msync(mm, BASE, 4 * PAGE) == -fm.ENOMEM       # hole after the VMA
    assert fm.dirty_pages(f) == []                          # the mapped part was synced


# ---------------------------------------------------------------------------------------------
# Truncation (needs the zap of pyrmap.memory)

def truncate_setup():
    """f of 4 pages; mm1 maps it shared (every page faulted in); mm2 maps it private, reads
    page 3 and writes page 2 (a COW copy)."""
    from pyrmap.mm_types import VM_MAYWRITE, VM_WRITE
    k = make_kernel(nframes=96)
    f = new_file(k, "t", 4, seed=11)
    mm1, mm2 = new_mm(k), new_mm(k)
    add_vma(mm1, BASE, 4, SHARED_FLAGS, mapping=f)
    add_vma(mm2, BASE, 4, VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE, mapping=f)
    for i in range(4):
        assert load(mm1, BASE + i * PAGE) == int(f.backing[i][0])
    load(mm2, BASE + 3 * PAGE)
    store(mm2, BASE + 2 * PAGE, 0xC0C0)
    return k, f, mm1, mm2


def test_vmtruncate_unmaps_everywhere_and_drops_the_tail():
    from pyrmap.mm_types import PageAnon
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    k, f, mm1, mm2 = truncate_setup()
    cow = k.pfn_to_page(pte_of(mm2, BASE + 2 * PAGE) >> 10 & ((1 << 44) - 1))
    assert PageAnon(cow)
    tail = [f.page_tree[i] for i in (2, 3)]
    tail_pfns = [p.pfn for p in tail]
    rec = RecordingNotifier("t")
    assert mmu_notifier_register(rec, mm1) == 0
    assert fm.vmtruncate(f, 2 * PAGE) == 2
    assert f.npages == 2 and sorted(f.page_tree) == [0, 1] and sorted(f.backing) == [0, 1]
    for mm in (mm1, mm2):
        for i in (2, 3):
            assert pte_of(mm, BASE + i * PAGE) == 0, f"page {i} still mapped in {mm!r}"
        assert pte_present(pte_of(mm1, BASE))
    assert all(k.frames.is_free(pfn) for pfn in tail_pfns)
    assert k.frames.is_free(cow.pfn)                          # even the COW copy
    starts = [e for e in rec.events if e.kind == "range_start"]
    ends = [e for e in rec.events if e.kind == "range_end"]
    assert rec.depth == 0 and len(starts) == len(ends) >= 1
    assert any(e.start <= BASE + 2 * PAGE and e.end >= BASE + 4 * PAGE for e in starts)
    with pytest.raises(ValueError, match="not page aligned"):
        fm.vmtruncate(f, 100)


def test_unmap_mapping_range_keeps_cow_copies():
    k, f, mm1, mm2 = truncate_setup()
    fm.unmap_mapping_range(f, 2 * PAGE, 2 * PAGE, 0)
    assert pte_of(mm1, BASE + 2 * PAGE) == 0 and pte_of(mm1, BASE + 3 * PAGE) == 0
    assert pte_of(mm2, BASE + 3 * PAGE) == 0
    assert pte_present(pte_of(mm2, BASE + 2 * PAGE))            # private copy survives
    assert load(mm2, BASE + 2 * PAGE) == 0xC0C0
    assert pte_present(pte_of(mm1, BASE + PAGE))
    # Faulting the file pages in again reads the same data from the cache.
    assert load(mm1, BASE + 3 * PAGE) == int(f.backing[3][0])


def test_truncate_inode_pages_discards_dirty_data():
    k = make_kernel()
    f = new_file(k, "d", 2, seed=2)
    p = fm.read_file_page(f, 1)
    k.mem.frame(p.pfn)[0] = 99
    fm.set_page_dirty(p)
    k.put_page(p)
    assert fm.truncate_inode_pages(f, PAGE) == 1
    assert f.nrpages == 0 and 1 not in f.backing and k.frames.is_free(p.pfn)
    assert fm.do_writepages(f) == 0
