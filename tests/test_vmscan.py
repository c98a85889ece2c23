"""pyrmap.vmscan: the LRU, aging through the MMU's A bits, reclaim to swap and to files."""

import numpy as np
import pytest

from pyrmap.mm_types import PG, VM_LOCKED, page_mapcount
from pyrmap.physmem import OutOfMemory
from pyrmap.pte import (is_migration_entry, pte_is_swap, pte_present, pte_to_swp_entry,
                        pte_young)
from pyrmap import vmscan as vs

from reclaim_fixtures import (ANON_FLAGS, PAGE, RW, SHARED_FLAGS, add_vma, load, make_kernel,
                              map_anon, map_file, new_file, new_mm, pte_of, store)

BASE = 0x4000_0000


def fills(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2**63, size=512, dtype=np.uint64) for _ in range(n)]


def anon_setup(n=4, seed=0, nframes=64, swap_slots=16):
    k = make_kernel(nframes=nframes, seed=seed, swap_slots=swap_slots)
    mm = new_mm(k)
    vma = add_vma(mm, BASE, n)
    data = fills(n, seed)
    pages = [map_anon(vma, BASE + i * PAGE, data[i]) for i in range(n)]
    return k, mm, vma, pages, data


# ---------------------------------------------------------------------------------------------
# LRU lists

def test_lru_add_activate_and_mark_accessed():
    k, mm, vma, pages, _ = anon_setup(2)
    lru = vs.get_lru(k)
    assert lru.contents() == ([p.pfn for p in pages], [])
    f = new_file(k, "f", 2)
    from pyrmap.filemap import read_file_page
    fp = read_file_page(f, 0)
    assert fp.test(PG.lru) and not fp.test(PG.active)
    assert lru.contents()[1] == [fp.pfn]
    vs.mark_page_accessed(fp)                 # inactive,unreferenced -> referenced
    assert fp.test(PG.referenced) and not fp.test(PG.active)
    vs.mark_page_accessed(fp)                 # referenced -> active
    assert fp.test(PG.active) and not fp.test(PG.referenced)
    assert fp.pfn in lru.contents()[0]
    with pytest.raises(AssertionError, match="already on the LRU"):
        vs.lru_cache_add(fp)


def test_isolate_putback_and_stale_entries():
    k, mm, vma, pages, _ = anon_setup(1)
    page = pages[0]
    ref = page._count
    assert vs.isolate_lru_page(page) == 0
    assert not page.test(PG.lru) and page._count == ref + 1
    assert vs.isolate_lru_page(page) == -16
    vs.putback_lru_page(page)
    assert page.test(PG.lru) and page._count == ref
    # A page freed while on the list is dropped lazily.
    spare = k.alloc_page()
    vs.lru_cache_add(spare)
    k.put_page(spare)
    assert spare.pfn not in vs.get_lru(k).contents()[1]
    assert vs.isolate_lru_page(spare) == -16


# ---------------------------------------------------------------------------------------------
# Aging

def test_aging_clears_a_through_the_mmu_and_keeps_touched_pages_active():
    k, mm, vma, pages, data = anon_setup(4)
    for i in range(4):
        load(mm, BASE + i * PAGE)
    assert all(pte_young(pte_of(mm, BASE + i * PAGE)) for i in range(4))
    # First scan: every page was referenced; A is cleared in every pte and the TLB flushed.
    assert vs.shrink_active_list(k, 4) == 0
    assert k.stats["vmscan_referenced"] == 4
    assert not any(pte_young(pte_of(mm, BASE + i * PAGE)) for i in range(4))
    assert not any(e.vpn << 12 in range(BASE, BASE + 4 * PAGE)
                   for e in k.arch.tlb_entries(0))
    # Only page 2 is touched between the scans: the walker sets A again on it alone.
    load(mm, BASE + 2 * PAGE)
    assert vs.shrink_active_list(k, 4) == 3
    active, inactive = vs.get_lru(k).contents()
    assert active == [pages[2].pfn]
    assert sorted(inactive) == sorted(p.pfn for i, p in enumerate(pages) if i != 2)
    assert k.stats["vmscan_deactivated"] == 3 and k.stats["vmscan_aged"] == 8


def test_anon_pages_stay_active_without_swap():
    k = make_kernel()
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 2)
    for i in range(2):
        map_anon(vma, BASE + i * PAGE)
    assert vs.shrink_active_list(k, 2) == 0
    assert k.stats["vmscan_no_swap"] == 2


# ---------------------------------------------------------------------------------------------
# The reclaim cycle

def test_idle_anon_pages_swap_out_and_fault_back_intact():
    k, mm, vma, pages, data = anon_setup(4, seed=3)
    # CPU writes a word into every page (dirty ptes), then only page 0 stays in use.
    for i in range(4):
        store(mm, BASE + i * PAGE + 8, 0x1111 * (i + 1))
        data[i][1] = 0x1111 * (i + 1)
    vs.shrink_active_list(k, 4)               # all referenced: A cleared
    load(mm, BASE)                            # page 0 touched again
    vs.shrink_active_list(k, 4)               # 1, 2, 3 deactivated
    free_before = k.frames.nr_free
    old_pfns = [p.pfn for p in pages]
    freed = vs.shrink_inactive_list(k, 32)
    assert freed == 3 and k.frames.nr_free == free_before + 3
    for i in (1, 2, 3):
        val = pte_of(mm, BASE + i * PAGE)
        assert pte_is_swap(val) and not is_migration_entry(pte_to_swp_entry(val))
        assert k.frames.is_free(old_pfns[i])
        k.mem.zero_frame(old_pfns[i])         # make a stale read visible
    assert pte_present(pte_of(mm, BASE))
    assert mm.anon_rss == 1 and mm.on_mmlist
    assert k.stats["vmscan_swapped_out"] == 3 and k.stats["vmscan_written"] == 3
    assert k.stats["vmscan_unmapped"] == 3 and k.stats["vmscan_freed"] == 3
    assert k.swap.inuse_pages == 3
    # Fault them back: contents intact, word by word where the CPU wrote and elsewhere.
    for i in range(4):
        assert load(mm, BASE + i * PAGE + 8) == 0x1111 * (i + 1)
        page = k.pfn_to_page(pte_of(mm, BASE + i * PAGE) >> 10 & ((1 << 44) - 1))
        assert np.array_equal(k.mem.frame(page.pfn), data[i]), f"page {i} corrupted"
        assert page_mapcount(page) == 1
    assert k.stats["pswpin"] == 3


def test_pageout_skips_a_page_someone_else_still_holds():
    """2008's pageout writes a page out only when the cache and reclaim are its only holders
    (is_page_cache_freeable): a zap's mmu_gather holds its reference until the TLB flush,
    and a store through a still-live TLB entry must not land after the write."""
    k, mm, vma, pages, data = anon_setup(2, seed=4)
    for i in range(2):
        store(mm, BASE + i * PAGE + 8, 7 + i)
    vs.shrink_active_list(k, 2)
    vs.shrink_active_list(k, 2)
    k.get_page(pages[1])                      # held elsewhere, e.g. by an mmu_gather
    assert vs.shrink_inactive_list(k, 32) == 1
    assert k.stats["vmscan_pageout_busy"] == 1 and k.stats["vmscan_written"] == 1
    assert pages[1].test(PG.dirty)
    k.put_page(pages[1])


def test_page_touched_after_deactivation_is_activated_not_reclaimed():
    k, mm, vma, pages, data = anon_setup(2)
    vs.shrink_active_list(k, 2)               # A was clear (hand-mapped): both deactivated
    assert vs.get_lru(k).contents()[0] == []
    load(mm, BASE + PAGE)                      # page 1 used again before reclaim
    assert vs.shrink_inactive_list(k, 32) == 1
    assert pte_present(pte_of(mm, BASE + PAGE))
    assert pages[1].test(PG.active) and pages[1].test(PG.lru)
    assert k.stats["vmscan_activated"] >= 1 and k.stats["vmscan_referenced"] >= 1
    assert pte_is_swap(pte_of(mm, BASE))


def test_swap_full_keeps_the_page():
    k, mm, vma, pages, data = anon_setup(3, swap_slots=1)
    vs.shrink_active_list(k, 3)
    assert vs.shrink_inactive_list(k, 32) == 1
    assert k.stats["vmscan_no_swap"] == 2
    kept = [i for i in range(3) if pte_present(pte_of(mm, BASE + i * PAGE))]
    assert len(kept) == 2
    for i in range(3):
        assert load(mm, BASE + i * PAGE + 16) == int(data[i][2])


def test_mlocked_vma_is_not_reclaimed():
    k = make_kernel(swap_slots=8)
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 2, ANON_FLAGS | VM_LOCKED)
    for i in range(2):
        map_anon(vma, BASE + i * PAGE)
    # page_referenced counts a VM_LOCKED mapping as a reference: never deactivated.
    assert vs.shrink_active_list(k, 2) == 0
    assert vs.try_to_free_pages(k, 2) == 0
    assert k.stats["vmscan_freed"] == 0 and k.stats["vmscan_referenced"] >= 2
    assert all(pte_present(pte_of(mm, BASE + i * PAGE)) for i in range(2))


def test_dirty_shared_file_page_is_written_back_before_it_is_freed():
    k = make_kernel()
    f = new_file(k, "data", 2, seed=5)
    original = [f.backing[i].copy() for i in range(2)]
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 2, SHARED_FLAGS, mapping=f)
    pages = [map_file(vma, BASE + i * PAGE, RW) for i in range(2)]
    store(mm, BASE + 24, 0xDEAD_BEEF)          # dirties the pte only (no fault)
    freed_before = k.stats["pages_freed"]
    # Page-cache pages start inactive.  The idle page 1 goes at once; page 0, referenced by
    # the store, is activated, then aged and reclaimed on the next round.
    assert vs.shrink_inactive_list(k, 32) == 1
    assert pte_present(pte_of(mm, BASE)) and pages[0].test(PG.active)
    assert k.stats["vmscan_written"] == 0
    vs.shrink_active_list(k, 4)
    assert vs.shrink_inactive_list(k, 32) == 1
    assert k.stats["pages_freed"] - freed_before == 2
    assert f.nrpages == 0 and not pte_present(pte_of(mm, BASE))
    assert int(f.backing[0][3]) == 0xDEAD_BEEF
    expect = original[0].copy()
    expect[3] = 0xDEAD_BEEF
    assert np.array_equal(f.backing[0], expect)
    assert np.array_equal(f.backing[1], original[1])
    assert k.stats["vmscan_written"] == 1       # the clean page was not written


def test_alloc_page_reclaim_under_pressure():
    k, mm, vma, pages, data = anon_setup(8, nframes=16, swap_slots=32)
    held = []
    with pytest.raises(OutOfMemory):
        while True:
            held.append(k.alloc_page())
    page = vs.alloc_page_reclaim(k)
    assert page._count == 1 and k.stats["vmscan_direct_reclaim"] >= 1
    assert k.stats["vmscan_freed"] >= 1
    swapped = [i for i in range(8) if pte_is_swap(pte_of(mm, BASE + i * PAGE))]
    assert swapped
    for p in held:
        k.put_page(p)
    for i in range(8):
        assert load(mm, BASE + i * PAGE + 40) == int(data[i][5])


def test_alloc_page_reclaim_gives_up_clearly():
    k = make_kernel(nframes=8)
    while True:
        try:
            k.alloc_page()
        except OutOfMemory:
            break
    with pytest.raises(OutOfMemory, match="no free frame after reclaim"):
        vs.alloc_page_reclaim(k)
    assert k.stats["vmscan_oom"] == 1


def test_balance_reclaims_to_the_high_watermark():
    k, mm, vma, pages, data = anon_setup(8, nframes=24, swap_slots=32)
    free0 = k.frames.nr_free
    assert vs.balance(k, 0, 0) == 0
    assert vs.balance(k, free0, free0 + 100) == 0      # free >= low: kswapd sleeps
    freed = vs.balance(k, free0 + 1, free0 + 4)
    assert freed >= 4 and k.frames.nr_free >= free0 + 4
    with pytest.raises(ValueError, match="0 <= low <= high"):
        vs.balance(k, 5, 2)
    with pytest.raises(ValueError, match="positive integer"):
        vs.try_to_free_pages(k, 0)


def test_try_to_free_pages_counts():
    k, mm, vma, pages, data = anon_setup(6, swap_slots=32)
    assert vs.try_to_free_pages(k, 6) == 6
    assert k.stats["vmscan_freed"] == 6 and k.stats["vmscan_swapped_out"] == 6
    assert all(pte_is_swap(pte_of(mm, BASE + i * PAGE)) for i in range(6))


# ---------------------------------------------------------------------------------------------
# Reclaim racing CPUs and writeback, under the seeded scheduler, with the checkers on

def run_reclaim_race(seed, nops=60, rounds=8, extras=True, svadu=True):
    """Two CPU threads store and load random words of 16 anonymous and 6 shared file pages in
    ~40 frames; a kswapd thread reclaims and a writeback thread msyncs meanwhile; with
    ``extras``, a device (secondary MMU, notifier client) faults translations in and a
    migration thread moves random pages.  Every load must return the last value stored
    there; at the end the file's backing store must hold every stored word, rmap must be
    complete and no frame was freed or reused while a PTE, TLB or the device reached it."""
    import random
    from pyrmap.checkers import Checkers
    from pyrmap.filemap import msync
    from pyrmap.sched import Scheduler
    sched = Scheduler(seed)
    k = make_kernel(nframes=40, seed=seed, swap_slots=64, sched=sched, svadu=svadu)
    checkers = Checkers(k, seed=seed).install()
    f = new_file(k, "race", 6, seed=seed)
    mm = new_mm(k)
    anon = add_vma(mm, BASE, 16)
    FILE = BASE + 0x10_0000
    add_vma(mm, FILE, 6, SHARED_FLAGS, mapping=f)
    shadow = {}
    for i in range(6):
        for w in range(512):
            shadow[FILE + i * PAGE + 8 * w] = int(f.backing[i][w])
    pages = [BASE + i * PAGE for i in range(16)] + [FILE + i * PAGE for i in range(6)]

    def cpu(core):
        rng = random.Random(seed * 100 + core)
        for _ in range(nops):
            va = rng.choice(pages) + 8 * rng.randrange(4)
            if rng.random() < 0.5:
                val = rng.getrandbits(63)
                store(mm, va, val, core=core)
                shadow[va] = val
            else:
                got = load(mm, va, core=core)
                assert got == shadow.get(va, 0), \
                    f"seed {seed}: load 0x{va:x} = {got:#x}, expected {shadow.get(va, 0):#x}"

    def kswapd():
        for _ in range(rounds):
            vs.try_to_free_pages(k, 4)
            k.arch.yield_point("kswapd sleeps")

    def writeback():
        for _ in range(3):
            assert msync(mm, FILE, 6 * PAGE) == 0
            k.arch.yield_point("writeback sleeps")

    def device(sec):
        # The driver's fault pins the page (get_user_pages) across the fill, as KVM and GRU
        # do: a pinned page may be unmapped but is neither freed nor migrated meanwhile.
        from pyrmap.pagetable import pte_offset
        from pyrmap.pte import pte_pfn
        rng = random.Random(seed * 100 + 7)
        for _ in range(nops // 2):
            va = rng.choice(pages)
            pinned = None
            ptep = pte_offset(mm, va)
            if ptep is not None:
                with mm.page_table_lock:
                    val = k.arch.pte_load(ptep)
                    if pte_present(val):
                        pinned = k.pfn_to_page(pte_pfn(val))
                        k.get_page(pinned)
            sec.fault(va, write=rng.random() < 0.3)
            if pinned is not None:
                k.put_page(pinned)
            k.arch.yield_point("device works")

    def migration():
        from pyrmap.migrate import move_page
        rng = random.Random(seed * 100 + 9)
        for _ in range(nops // 3):
            for _ in range(8):
                k.arch.yield_point("migration sleeps")
            move_page(mm, rng.choice(pages))

    sched.spawn("cpu0", cpu, 0)
    sched.spawn("cpu1", cpu, 1)
    sched.spawn("kswapd", kswapd)
    sched.spawn("writeback", writeback)
    if extras:
        sched.spawn("device", device, checkers.add_secondary(mm))
        sched.spawn("migration", migration)
    sched.run()
    # Quiescent: everything the CPUs stored is where it belongs.
    from pyrmap.filemap import msync as final_msync
    assert final_msync(mm, FILE, 6 * PAGE) == 0
    for va, val in shadow.items():
        if va >= FILE:
            i, w = divmod(va - FILE, PAGE)
            assert int(f.backing[i][w // 8]) == val, f"seed {seed}: lost write at 0x{va:x}"
    for va in [v for v in shadow if v < FILE]:
        assert load(mm, va) == shadow[va], f"seed {seed}: lost anon write at 0x{va:x}"
    checkers.rmap.check()
    assert checkers.violations == []
    assert k.stats["vmscan_freed"] > 0, f"seed {seed}: nothing was reclaimed"
    if extras:
        assert k.stats["migrate_success"] > 0, f"seed {seed}: nothing was migrated"
    return k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reclaim_races_cpus_and_writeback(seed):
    run_reclaim_race(seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_reclaim_races_with_svade(seed):
    """The same with Svade: A and D are set by the fault handler, not the walker."""
    k = run_reclaim_race(seed, svadu=False)
    assert k.stats["fault_svade_a"] > 0 and k.stats["fault_svade_d"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 40))
def test_reclaim_races_many_seeds(seed):
    run_reclaim_race(seed, nops=200, rounds=20)


def test_race_check_catches_a_reclaim_that_drops_the_dirty_bit(monkeypatch):
    """Control for the race test: when try_to_unmap forgets to move a dirty pte's D bit to
    the page, a clean swap-cache page written only through its pte is freed without being
    written, and some seed sees the old data come back."""
    import pyrmap.rmap
    monkeypatch.setattr(pyrmap.rmap, "_set_page_dirty", lambda page: None)
    caught = []
    for seed in range(6):
        try:
            run_reclaim_race(seed, extras=False)
        except AssertionError as exc:
            caught.append((seed, str(exc)))
    assert caught and all("lost" in msg or "expected" in msg for _, msg in caught), caught


def test_store_to_a_clean_swapped_in_page_is_not_lost():
    k, mm, vma, pages, data = anon_setup(1, seed=8)
    assert vs.try_to_free_pages(k, 1) == 1
    assert load(mm, BASE + 8) == int(data[0][1])     # swapped in by a load: clean, cached
    page = k.pfn_to_page(pte_of(mm, BASE) >> 10 & ((1 << 44) - 1))
    assert page.test(PG.swapcache) and not page.test(PG.dirty)
    store(mm, BASE + 8, 0x5EED)                      # dirty only in the pte (or its TLB entry)
    vs.shrink_active_list(k, 8)
    vs.shrink_active_list(k, 8)
    assert vs.shrink_inactive_list(k, 8) == 1
    assert pte_is_swap(pte_of(mm, BASE))
    assert load(mm, BASE + 8) == 0x5EED


@pytest.mark.parametrize("rc, verdict", [(1, "kept"), (2, "activated")])
def test_try_to_unmap_again_keeps_and_fail_activates(monkeypatch, rc, verdict):
    import pyrmap.rmap
    k, mm, vma, pages, data = anon_setup(1)
    vs.shrink_active_list(k, 1)
    monkeypatch.setattr(pyrmap.rmap, "try_to_unmap", lambda page, migration: rc)
    before = k.stats[f"vmscan_{verdict}"]
    assert vs.shrink_inactive_list(k, 8) == 0
    assert k.stats[f"vmscan_{verdict}"] == before + 1
    assert pages[0].test(PG.active) == (verdict == "activated") and pages[0].test(PG.lru)
    assert pte_present(pte_of(mm, BASE)) and k.stats["vmscan_freed"] == 0


def test_locked_page_is_kept():
    from pyrmap.pagemap import lock_page, unlock_page
    k, mm, vma, pages, data = anon_setup(1)
    vs.shrink_active_list(k, 1)
    lock_page(pages[0])
    assert vs.shrink_inactive_list(k, 8) == 0 and k.stats["vmscan_kept"] == 1
    unlock_page(pages[0])
    assert vs.shrink_inactive_list(k, 8) == 1


# ---------------------------------------------------------------------------------------------
# Nonlinear mappings: reclaim goes through try_to_unmap_cluster and leaves file ptes

def test_reclaim_of_nonlinear_pages_leaves_file_ptes_and_refaults_the_right_offset():
    from pyrmap import mmap as mp
    from pyrmap.fremap import sys_remap_file_pages
    from pyrmap.pte import pte_file, pte_to_pgoff
    k = make_kernel(nframes=64)
    f = mp.file_create(k, "nl", 4)
    mm = mp.mm_alloc(k)
    addr = mp.do_mmap(mm, 0, 4 * PAGE, mp.PROT_READ | mp.PROT_WRITE, mp.MAP_SHARED, file=f)
    # Reverse the file in the window: page i of the window shows file page 3 - i.
    for i in range(4):
        assert sys_remap_file_pages(mm, addr + i * PAGE, PAGE, 0, 3 - i, 0) == 0
    for i in range(4):
        assert load(mm, addr + i * PAGE) == mp.file_word(f, 3 - i, 0)
    store(mm, addr + 8, 0xAB)                          # window page 0 = file page 3
    vs.shrink_active_list(k, 16)
    vs.shrink_active_list(k, 16)
    freed = vs.try_to_free_pages(k, 8)
    assert freed >= 1
    leftovers = [pte_of(mm, addr + i * PAGE) for i in range(4)]
    unmapped = [i for i, v in enumerate(leftovers) if not pte_present(v)]
    assert unmapped, "reclaim unmapped nothing of the nonlinear window"
    for i in unmapped:                                 # never at its linear index: file pte
        v = leftovers[i]
        assert pte_file(v) and pte_to_pgoff(v) == 3 - i, f"window page {i}: {v:#x}"
    if 3 not in f.page_tree:                           # reclaimed: written back first
        assert int(f.backing[3][1]) == 0xAB
    for i in range(4):                                 # refault reads the right file page
        want = 0xAB if i == 0 else mp.file_word(f, 3 - i, 1)
        assert load(mm, addr + i * PAGE + 8) == want, f"window page {i}"


def test_a_page_on_the_wrong_list_is_moved_not_lost():
    k, mm, vma, pages, data = anon_setup(2)
    pages[0].clear(PG.active)                 # someone flipped the bit without moving it
    assert vs.shrink_active_list(k, 8) == 1   # only page 1 was aged here
    assert pages[0].pfn in vs.get_lru(k).contents()[1]
    assert vs.shrink_inactive_list(k, 8) == 2
