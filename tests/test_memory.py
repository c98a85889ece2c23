"""pyrmap.memory: the fault handler (every kind), zap with the mmu_gather, Svade A/D, and the
bad accesses do_page_fault refuses."""

import pytest

from pyrmap import memory as mem
from pyrmap import mmap as M
from pyrmap.errors import BusErrorSignal, SegmentationFault
from pyrmap.kernel import Kernel, KernelConfig, Quirks
from pyrmap.mm_types import PG, PageAnon, page_mapcount
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pagetable import pte_offset
from pyrmap.physmem import PhysMem
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_U, AccessType, make_migration_entry,
                        pte_dirty, pte_is_swap, pte_none, pte_pfn, pte_present, pte_write,
                        pte_young, swp_entry_to_pte)

LOAD, STORE, FETCH = AccessType.LOAD, AccessType.STORE, AccessType.FETCH
RW = M.PROT_READ | M.PROT_WRITE
ANON = M.MAP_PRIVATE | M.MAP_ANONYMOUS
P = 4096


class Machine:
    """A kernel on SoftArch with helpers to touch memory as a CPU does."""

    def __init__(self, nframes=160, ncores=2, seed=0, svadu=True, quirks=None, swap=0,
                 sched=None):
        from pyrmap.softarch import SoftArch
        self.arch = SoftArch(PhysMem(nframes), ncores=ncores, seed=seed, svadu=svadu,
                             sched=sched)
        self.k = Kernel(self.arch, quirks or Quirks(), KernelConfig(reuse_freed_first=True))
        if swap:
            from pyrmap.swap import swapon
            swapon(self.k, swap)

    def mm(self, core=0):
        mm = M.mm_alloc(self.k)
        if core is not None:
            self.arch.switch_mm(core, mm)
        return mm

    def access(self, mm, va, op, data=None, core=0, max_faults=4):
        for _ in range(max_faults + 1):
            if op == STORE:
                r = self.arch.cpu_access(core, va, op, data=data)
            else:
                r = self.arch.cpu_access(core, va, op)
            if r.fault == 0:
                return r.value
            mem.do_page_fault(mm, va, op)
        raise AssertionError(f"{op.name} at 0x{va:x} still faults after {max_faults} faults")

    def load(self, mm, va, core=0):
        return self.access(mm, va, LOAD, core=core)

    def store(self, mm, va, value, core=0):
        self.access(mm, va, STORE, value, core=core)

    def pte(self, mm, va):
        ptep = pte_offset(mm, va)
        return 0 if ptep is None else self.k.mem.read(ptep)

    def page(self, mm, va):
        return self.k.pages[pte_pfn(self.pte(mm, va))]

    def tlb_pfns(self, core=0):
        return {e.ppn for e in self.arch.tlb_entries(core)}


def test_anonymous_read_fault_maps_a_zeroed_writable_dirty_page():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 2 * P, RW, ANON)
    assert m.load(mm, a + 8) == 0
    pte = m.pte(mm, a)
    assert pte_present(pte) and pte_write(pte) and pte_dirty(pte) and pte_young(pte)
    assert pte & _PAGE_U
    page = m.page(mm, a)
    assert PageAnon(page) and page.mapping is mm.mmap[0].anon_vma
    assert page.index == a >> 12 and page_mapcount(page) == 1 and page._count == 1
    assert page.test(PG.lru)
    assert mm.anon_rss == 1 and mm.file_rss == 0
    assert m.k.stats["fault_anon"] == 1
    assert pte_none(m.pte(mm, a + P))           # the other page is untouched


def test_anonymous_write_then_read_back():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a + 16, 0xDEAD)
    assert m.load(mm, a + 16) == 0xDEAD
    assert m.k.stats["pgfault"] == 1


def test_file_read_fault_maps_the_page_cache_page_read_only():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 4)
    a = M.do_mmap(mm, 0, 4 * P, RW, M.MAP_SHARED, file=f)
    assert m.load(mm, a + 2 * P + 24) == M.file_word(f, 2, 3)
    pte = m.pte(mm, a + 2 * P)
    assert pte_present(pte) and not pte_write(pte)
    page = m.page(mm, a + 2 * P)
    assert f.page_tree[2] is page and page.mapping is f and page.index == 2
    assert page_mapcount(page) == 1 and page._count == 2     # page cache + pte
    assert mm.file_rss == 1 and mm.anon_rss == 0
    assert m.k.stats["pgmajfault"] == 1 and m.k.stats["fault_file"] == 1
    m.load(mm, a + 2 * P)                                    # TLB hit, no fault
    assert m.k.stats["pgfault"] == 1


def test_shared_file_write_fault_dirties_the_page():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 2)
    a = M.do_mmap(mm, 0, 2 * P, RW, M.MAP_SHARED, file=f)
    m.store(mm, a + P, 5)
    pte = m.pte(mm, a + P)
    assert pte_write(pte) and pte_dirty(pte)
    page = f.page_tree[1]
    assert page.test(PG.dirty) and not page.test(PG.locked)
    assert m.k.stats["fault_file_write_shared"] == 1
    assert m.k.mem.read((page.pfn << 12) + 0) == 5


def test_shared_file_read_then_write_goes_through_do_wp_page_shared_path():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(mm, 0, P, RW, M.MAP_SHARED, file=f)
    m.load(mm, a)
    page = f.page_tree[0]
    assert not page.test(PG.dirty)
    m.store(mm, a, 11)
    assert m.k.stats["fault_wp_shared"] == 1
    assert page.test(PG.dirty) and page._count == 2 and page_mapcount(page) == 1
    assert pte_write(m.pte(mm, a)) and pte_pfn(m.pte(mm, a)) == page.pfn


def test_file_read_fault_maps_clean_and_a_shmem_read_fault_writable_clean():
    """As 2008 made them: a read fault maps a dirty-accounted file page read-only and clean
    (writenotify); a shared writable shmem mapping has no write notification, so a read fault
    maps it writable and clean and the first store makes the walker set D by CAS (one D set,
    no second fault)."""
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(mm, 0, P, RW, M.MAP_SHARED, file=f)
    m.load(mm, a)
    pte = m.pte(mm, a)
    assert not pte_write(pte) and not pte_dirty(pte) and pte_young(pte)
    sh = M.do_mmap(mm, 0, P, RW, M.MAP_SHARED | M.MAP_ANONYMOUS)
    m.load(mm, sh)
    pte = m.pte(mm, sh)
    assert pte_write(pte) and not pte_dirty(pte) and pte_young(pte)
    faults, d_sets = m.k.stats["pgfault"], m.arch.perf(0)["d_sets"]
    m.store(mm, sh, 9)
    assert m.k.stats["pgfault"] == faults
    assert m.arch.perf(0)["d_sets"] == d_sets + 1
    assert pte_dirty(m.pte(mm, sh))


def test_mprotect_of_shmem_makes_clean_ptes_writable_but_of_a_file_only_dirty_ones():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 2)
    a = M.do_mmap(mm, 0, 2 * P, RW, M.MAP_SHARED, file=f)
    sh = M.do_mmap(mm, 0, P, RW, M.MAP_SHARED | M.MAP_ANONYMOUS)
    m.load(mm, a)
    m.store(mm, a + P, 3)
    m.load(mm, sh)
    for addr, length in ((a, 2 * P), (sh, P)):
        M.mprotect(mm, addr, length, M.PROT_READ)
        M.mprotect(mm, addr, length, RW)
    assert not pte_write(m.pte(mm, a)) and not pte_dirty(m.pte(mm, a))
    assert pte_write(m.pte(mm, a + P)) and pte_dirty(m.pte(mm, a + P))
    assert pte_write(m.pte(mm, sh)) and not pte_dirty(m.pte(mm, sh))


def test_private_file_write_fault_copies_into_an_anonymous_page():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 2)
    a = M.do_mmap(mm, 0, 2 * P, RW, M.MAP_PRIVATE, file=f)
    m.store(mm, a + P + 8, 77)
    page = m.page(mm, a + P)
    cache = f.page_tree[1]
    assert PageAnon(page) and page is not cache
    assert page_mapcount(cache) == 0 and cache._count == 1   # only the page cache
    assert m.load(mm, a + P + 16) == M.file_word(f, 1, 2)    # rest of the page copied
    assert m.k.mem.read((cache.pfn << 12) + 8) == M.file_word(f, 1, 1)  # file untouched
    assert mm.anon_rss == 1 and mm.file_rss == 0
    assert m.k.stats["fault_private_file_cow"] == 1


def test_private_file_cow_after_read_flushes_the_old_translation_and_notifies():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m = Machine()
    mm = m.mm(core=0)
    m.arch.switch_mm(1, mm)
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(mm, 0, P, RW, M.MAP_PRIVATE, file=f)
    rec = RecordingNotifier()
    assert mmu_notifier_register(rec, mm) == 0
    m.load(mm, a, core=0)
    m.load(mm, a, core=1)                       # both cores cache the file page
    cache = f.page_tree[0]
    assert cache.pfn in m.tlb_pfns(0) and cache.pfn in m.tlb_pfns(1)
    m.store(mm, a, 3, core=0)
    assert cache.pfn not in m.tlb_pfns(1) and cache.pfn not in m.tlb_pfns(0)
    assert ("invalidate_page", a) in [(e.kind, e.start) for e in rec.events]
    assert page_mapcount(cache) == 0 and mm.file_rss == 0 and mm.anon_rss == 1
    assert m.load(mm, a, core=1) == 3
    assert m.k.stats["fault_cow"] == 1


def test_wp_reuse_of_an_exclusive_anonymous_page_keeps_the_frame():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    pfn = pte_pfn(m.pte(mm, a))
    M.mprotect(mm, a, P, M.PROT_READ)
    M.mprotect(mm, a, P, RW)
    assert not pte_write(m.pte(mm, a))
    m.store(mm, a, 2)
    assert pte_pfn(m.pte(mm, a)) == pfn and pte_write(m.pte(mm, a))
    assert m.k.stats["fault_wp_reuse"] == 1 and m.k.stats["fault_cow"] == 0


def test_svade_sets_accessed_and_dirty_bits_under_the_pte_lock_and_nothing_else():
    m = Machine(svadu=False)
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 9)
    ptep = pte_offset(mm, a)
    before = m.pte(mm, a)
    page = m.page(mm, a)
    # Clear A and D the way reclaim/writeback would (clear, flush, set).
    with mm.page_table_lock:
        old = m.arch.ptep_get_and_clear(mm, a, ptep)
        m.arch.flush_tlb_page(mm.mmap[0], a)
        m.arch.set_pte_at(mm, a, ptep, old & ~(_PAGE_A | _PAGE_D))
    assert m.load(mm, a) == 9
    assert m.k.stats["fault_svade_a"] == 1 and m.k.stats["fault_svade_d"] == 0
    assert pte_young(m.pte(mm, a)) and not pte_dirty(m.pte(mm, a))
    m.store(mm, a, 10)
    assert m.k.stats["fault_svade_d"] == 1
    assert m.pte(mm, a) == before                # same frame, same permissions, A and D back
    assert page_mapcount(page) == 1 and page._count == 1 and mm.anon_rss == 1
    assert m.k.stats["fault_anon"] == 1 and m.k.stats["fault_cow"] == 0


def test_svadu_spurious_fault_changes_nothing():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    before = m.pte(mm, a)
    vma = mm.mmap[0]
    assert mem.handle_mm_fault(mm, vma, a, True) == 0
    assert m.pte(mm, a) == before and m.k.stats["fault_spurious"] == 1


def _swap_out(m, mm, va):
    """Push the anonymous page at va out to the swap device; returns its swap entry."""
    from pyrmap.rmap import SWAP_SUCCESS, try_to_unmap
    from pyrmap.swap import add_to_swap, delete_from_swap_cache, swap_writepage
    page = m.page(mm, va)
    m.k.get_page(page)
    lock_page(page)
    assert add_to_swap(page)
    rc = try_to_unmap(page, 0)
    if rc != SWAP_SUCCESS:                      # the first pass consumed the young bit
        rc = try_to_unmap(page, 0)
    assert rc == SWAP_SUCCESS
    entry = page.private
    swap_writepage(page)
    delete_from_swap_cache(page)
    page.clear(PG.dirty)
    unlock_page(page)
    m.k.put_page(page)
    assert m.k.frames.is_free(page.pfn)
    return entry


def test_swap_in_read_major_fault_maps_the_swapped_data():
    from pyrmap.swap import PageSwapCache, swap_count
    m = Machine(swap=16)
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a + 8, 1234)
    entry = _swap_out(m, mm, a)
    assert pte_is_swap(m.pte(mm, a)) and mm.anon_rss == 0
    assert m.load(mm, a + 8) == 1234
    page = m.page(mm, a)
    assert PageAnon(page) and page_mapcount(page) == 1 and PageSwapCache(page)
    assert not pte_write(m.pte(mm, a))          # shared with the swap cache copy
    assert swap_count(m.k, entry) == 1          # only the swap cache holds the slot now
    assert mm.anon_rss == 1 and m.k.stats["fault_swapin"] == 1
    assert m.k.stats["pgmajfault"] == 1


def test_swap_in_write_fault_makes_an_exclusive_page_writable():
    m = Machine(swap=16)
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 5)
    _swap_out(m, mm, a)
    m.store(mm, a + 8, 6)
    assert pte_write(m.pte(mm, a)) and pte_dirty(m.pte(mm, a))
    assert m.load(mm, a) == 5 and m.load(mm, a + 8) == 6
    assert m.k.stats["fault_cow"] == 0


def test_migration_entry_fault_waits_for_the_page_lock_then_retries():
    from pyrmap.sched import Scheduler
    waited = 0
    for seed in range(6):
        sched = Scheduler(seed)
        m = Machine(seed=seed, sched=sched)
        mm = m.mm()
        a = M.do_mmap(mm, 0, P, RW, ANON)
        m.store(mm, a, 42)
        page = m.page(mm, a)
        ptep = pte_offset(mm, a)
        vma = mm.mmap[0]
        order = []

        def migrator():
            lock_page(page)
            with mm.page_table_lock:
                old = m.arch.ptep_get_and_clear(mm, a, ptep)
                m.arch.flush_tlb_page(vma, a)
                m.arch.set_pte_at(mm, a, ptep,
                                  swp_entry_to_pte(make_migration_entry(page.pfn, True)))
            order.append("installed")
            for _ in range(20):
                m.arch.yield_point("migrating")
            with mm.page_table_lock:
                m.arch.set_pte_at(mm, a, ptep, old)
            order.append("restored")
            unlock_page(page)

        def faulter():
            while "installed" not in order:
                m.arch.yield_point("wait for the migration entry")
            value = m.load(mm, a, core=1)
            order.append(("loaded", value))

        m.arch.switch_mm(1, mm)
        sched.spawn("migrator", migrator)
        sched.spawn("faulter", faulter)
        sched.run()
        assert order[-2:] == ["restored", ("loaded", 42)], f"seed {seed}: {order}"
        waited += m.k.stats["fault_migration_wait"]
    assert waited >= 1


def test_segmentation_fault_outside_any_vma_and_for_forbidden_accesses():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, M.PROT_READ, ANON)
    with pytest.raises(SegmentationFault,
                       match=r"load at 0x1000: no mapping covers this address") as e:
        mem.do_page_fault(mm, 0x1000, LOAD)
    assert e.value.reason == "no vma" and e.value.address == 0x1000
    with pytest.raises(SegmentationFault, match=r"store at 0x2000000008: .* is not writable"):
        mem.do_page_fault(mm, a + 8, STORE)
    with pytest.raises(SegmentationFault, match=r"fetch at .* is not executable") as e:
        mem.do_page_fault(mm, a, FETCH)
    assert e.value.reason == "access"
    with pytest.raises(SegmentationFault, match="no mapping"):
        mem.do_page_fault(mm, M.TASK_SIZE + P, LOAD)
    assert mm.anon_rss == 0 and pte_none(m.pte(mm, a))
    assert not mm.mmap_sem.is_locked()          # released on the error path


def test_sigbus_beyond_the_end_of_the_file():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "short", 1)
    a = M.do_mmap(mm, 0, 3 * P, M.PROT_READ, M.MAP_SHARED, file=f)
    m.load(mm, a)
    with pytest.raises(BusErrorSignal, match=r"load at 0x2000001000 in .*beyond the end"):
        mem.do_page_fault(mm, a + P, LOAD)
    assert mm.file_rss == 1 and pte_none(m.pte(mm, a + P))


# ---------------------------------------------------------------------------------------------
# zap and the mmu_gather

def test_madvise_dontneed_zaps_flushes_frees_and_notifies():
    from pyrmap.mmu_notifier import RecordingNotifier, mmu_notifier_register
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, 4 * P, RW, ANON)
    for i in range(4):
        m.store(mm, a + i * P, i + 1)
    pfns = [pte_pfn(m.pte(mm, a + i * P)) for i in range(4)]
    assert set(pfns) <= m.tlb_pfns(0)
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    M.madvise(mm, a + P, 2 * P, M.MADV_DONTNEED)
    assert [(e.kind, e.start, e.end) for e in rec.events] == [
        ("range_start", a + P, a + 3 * P), ("range_end", a + P, a + 3 * P)]
    assert pte_none(m.pte(mm, a + P)) and pte_none(m.pte(mm, a + 2 * P))
    assert m.k.frames.is_free(pfns[1]) and m.k.frames.is_free(pfns[2])
    assert not {pfns[1], pfns[2]} & m.tlb_pfns(0)
    assert mm.anon_rss == 2
    assert m.load(mm, a + P) == 0 and m.load(mm, a) == 1 and m.load(mm, a + 3 * P) == 4


def test_no_frame_is_freed_while_a_tlb_still_reaches_it():
    m = Machine()
    mm = m.mm(core=0)
    m.arch.switch_mm(1, mm)
    a = M.do_mmap(mm, 0, 6 * P, RW, ANON)
    for i in range(6):
        m.store(mm, a + i * P, i, core=i % 2)
        m.load(mm, a + i * P, core=1 - i % 2)
    freed = []

    def observer(event, **d):
        if event == "frame_free":
            for core in range(2):
                assert d["pfn"] not in m.tlb_pfns(core), \
                    f"frame {d['pfn']:#x} freed while core {core} still caches it"
            freed.append(d["pfn"])

    m.arch.observer = observer
    M.do_munmap(mm, a, 6 * P)
    assert len(freed) >= 6


def test_gather_refuses_to_free_before_the_flush():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    tlb = mem.tlb_gather_mmu(mm, False)
    mem.unmap_vmas(tlb, mm.mmap, a, a + P)
    assert tlb.need_flush and len(tlb.pages) == 1
    with pytest.raises(AssertionError, match="freeing pages before the TLB flush"):
        mem.tlb_flush_mmu_free(tlb)
    mem.tlb_finish_mmu(tlb, a, a + P)
    assert not tlb.pages and not tlb.need_flush and mm.anon_rss == 0


def _record_zap_order(m, mm):
    events = []
    lock = mm.page_table_lock
    real_release, real_flush, real_yield = lock.release, m.arch.flush_tlb_mm, m.arch.yield_point

    def release():
        events.append("pte unlock")
        real_release()

    def flush(x):
        events.append("flush")
        real_flush(x)

    def yield_point(why=""):
        if "quirk" in why:
            events.append("yield")
        real_yield(why)

    lock.release = release
    m.arch.flush_tlb_mm = flush
    m.arch.yield_point = yield_point
    return events


@pytest.mark.parametrize("quirk", [False, True])
def test_zap_of_a_dirty_shared_pte_flushes_before_the_pte_unlock_unless_quirk(quirk):
    m = Machine(quirks=Quirks(zap_flush_after_pte_unlock=quirk))
    mm = m.mm()
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(mm, 0, P, RW, M.MAP_SHARED, file=f)
    m.store(mm, a, 1)
    page = f.page_tree[0]
    page.clear(PG.dirty)
    events = _record_zap_order(m, mm)
    M.madvise(mm, a, P, M.MADV_DONTNEED)
    assert page.test(PG.dirty), "the pte's D bit must reach the page"
    assert page_mapcount(page) == 0 and mm.file_rss == 0 and page._count == 1
    first_unlock = events.index("pte unlock")
    first_flush = events.index("flush")
    if quirk:
        assert first_unlock < first_flush and "yield" in events[first_unlock:first_flush]
    else:
        assert first_flush < first_unlock and "yield" not in events


def test_zap_of_a_clean_pte_defers_the_flush_to_tlb_finish_mmu():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    events = _record_zap_order(m, mm)
    M.madvise(mm, a, P, M.MADV_DONTNEED)
    assert events.index("pte unlock") < events.index("flush")


def test_zap_frees_swap_entries():
    from pyrmap.swap import swap_count
    m = Machine(swap=8)
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    m.store(mm, a, 1)
    entry = _swap_out(m, mm, a)
    assert swap_count(m.k, entry) == 1
    M.madvise(mm, a, P, M.MADV_DONTNEED)
    assert swap_count(m.k, entry) == 0 and pte_none(m.pte(mm, a))
    assert m.k.swap.nr_free == 8


def test_munmap_frees_page_tables_of_a_whole_region():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, RW, ANON)
    b = M.do_mmap(mm, 1 << 30, P, RW, ANON | M.MAP_FIXED)
    m.store(mm, a, 1)
    m.store(mm, b, 1)
    free_before = m.k.frames.nr_free
    M.do_munmap(mm, b, P)
    # The 1 GiB region of b held a middle directory and a page table: both go, with the page.
    assert m.k.stats["pagetables_freed"] == 2
    assert m.k.frames.nr_free == free_before + 3
    assert pte_offset(mm, b) is None and m.load(mm, a) == 1


def test_exit_returns_every_frame():
    m = Machine()
    free0 = m.k.frames.nr_free
    mm = m.mm()
    a = M.do_mmap(mm, 0, 8 * P, RW, ANON)
    b = M.do_mmap(mm, 0x4000_0000, 3 * P, RW, ANON | M.MAP_FIXED)
    for i in range(8):
        m.store(mm, a + i * P, i)
    m.store(mm, b + 2 * P, 1)
    M.do_munmap(mm, a + 2 * P, P)
    m.arch.switch_mm(0, m.mm())                 # the core leaves the dying mm
    M.mmput(mm)
    assert mm.dead and mm not in m.k.mms
    # Everything but the new mm's root table is free again.
    assert m.k.frames.nr_free == free0 - 1


def test_cow_copy_event_names_the_old_and_new_frames():
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(mm, 0, P, RW, M.MAP_PRIVATE, file=f)
    m.load(mm, a)
    events = []
    m.arch.observer = lambda ev, **d: events.append((ev, d)) if ev == "cow_copy" else None
    m.store(mm, a + 8, 1)
    ((ev, d),) = events
    assert d["mm"] is mm and d["address"] == a
    assert d["old_pfn"] == f.page_tree[0].pfn and d["new_pfn"] == pte_pfn(m.pte(mm, a))


def test_write_only_mapping_is_readable_exec_only_is_not():
    m = Machine()
    mm = m.mm()
    a = M.do_mmap(mm, 0, P, M.PROT_WRITE, ANON)
    assert m.load(mm, a) == 0
    m.store(mm, a, 4)
    assert m.load(mm, a) == 4
    x = M.do_mmap(mm, 0x10_0000, P, M.PROT_EXEC, ANON)
    with pytest.raises(SegmentationFault, match=r"load at 0x100000: .* is not readable"):
        m.load(mm, x)
    assert mem.do_page_fault(mm, x, FETCH) == 0
    assert m.arch.cpu_access(0, x, FETCH).fault == 0
    assert mm.hiwater_rss == 0
    M.do_munmap(mm, a, P)
    assert mm.hiwater_rss == 2 and mm.anon_rss == 1


def test_cow_orders_clear_flush_then_new_pte_then_rmap_removal_then_release(monkeypatch):
    import pyrmap.mmu_notifier as mn
    import pyrmap.rmap as rmap
    m = Machine()
    mm = m.mm()
    f = M.file_create(m.k, "f", 1)
    a = M.do_mmap(mm, 0, P, RW, M.MAP_PRIVATE, file=f)
    m.load(mm, a)
    old = f.page_tree[0]
    ptep = pte_offset(mm, a)
    log = []
    real_clear, real_remove = mn.ptep_clear_flush_notify, rmap.page_remove_rmap
    real_set, real_put = m.arch.set_pte_at, m.k.put_page

    def clear(vma, addr, p):
        log.append("clear_flush")
        v = real_clear(vma, addr, p)
        assert old.pfn not in m.tlb_pfns(0), "TLB still maps the old page after clear_flush"
        return v

    def set_pte(mm_, addr, p, val):
        if p == ptep:
            log.append("set_pte")
        real_set(mm_, addr, p, val)

    def remove(page, vma):
        log.append("remove_rmap" if page is old else "remove_rmap(other)")
        real_remove(page, vma)

    def put(page):
        if page is old:
            log.append("put_old")
        real_put(page)

    monkeypatch.setattr(mn, "ptep_clear_flush_notify", clear)
    monkeypatch.setattr(rmap, "page_remove_rmap", remove)
    monkeypatch.setattr(m.arch, "set_pte_at", set_pte)
    monkeypatch.setattr(m.k, "put_page", put)
    m.store(mm, a, 1)
    assert log == ["clear_flush", "set_pte", "remove_rmap", "put_old", "put_old"]
    assert old._count == 1 and page_mapcount(old) == 0


@pytest.mark.parametrize("seed", range(8))
def test_concurrent_faults_and_zaps_never_free_a_reachable_frame(seed):
    """A CPU thread stores and loads while another thread zaps (madvise), unmaps and maps
    again: no frame is freed while a TLB can reach it, no store is lost, and the rmap is
    exact at the end."""
    from pyrmap.sched import Scheduler
    from test_mmap import check_consistency
    sched = Scheduler(seed)
    m = Machine(seed=seed, sched=sched)
    mm = m.mm(core=None)
    a = M.do_mmap(mm, 0, 4 * P, RW, ANON)
    zaps = [0, 0]                 # zaps started, zaps finished
    last = {}                     # word -> (value, zaps finished when it was stored)

    def observer(event, **d):
        if event == "frame_free":
            for core in range(2):
                assert d["pfn"] not in m.tlb_pfns(core), \
                    f"seed {seed}: frame {d['pfn']:#x} freed while core {core} caches it"

    m.arch.observer = observer

    def cpu():
        import random
        rng = random.Random(seed)
        m.arch.switch_mm(0, mm)
        for i in range(60):
            va = a + rng.randrange(4) * P + 8 * rng.randrange(2)
            if rng.random() < 0.5:
                m.store(mm, va, i + 1)
                last[va] = (i + 1, zaps[1])
            else:
                got = m.load(mm, va)
                want, when = last.get(va, (0, 0))
                # 0 is legal only if a zap that had not finished at the store ran since.
                zapped = a + P <= va < a + 3 * P
                assert got == want or (zapped and got == 0 and zaps[0] > when), \
                    f"seed {seed}: 0x{va:x} read {got}, stored {want}"

    def zapper():
        for _ in range(4):
            zaps[0] += 1
            M.madvise(mm, a + P, 2 * P, M.MADV_DONTNEED)
            zaps[1] += 1
            for _ in range(5):
                m.arch.yield_point("between zaps")

    sched.spawn("cpu0", cpu)
    sched.spawn("zapper", zapper)
    sched.run()
    check_consistency(m, [mm])
