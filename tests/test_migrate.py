"""pyrmap.migrate: migration of anon, file and swap-cache pages, across fork trees."""

import random

import numpy as np
import pytest

from pyrmap import migrate as mg
from pyrmap.mm_types import PG, page_mapcount
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pte import (AccessType, FaultKind, is_migration_entry, pte_dirty, pte_is_swap,
                        pte_pfn, pte_present, pte_to_swp_entry, pte_write)

from reclaim_fixtures import (PAGE, RO, RW, SHARED_FLAGS, access, add_vma, dup_anon, load,
                              make_kernel, map_anon, map_file, new_file, new_mm, pte_of, store)

BASE = 0x6000_0000


def fork_tree(seed, levels=5, max_children=3, max_nodes=24):
    """The selftests/mm/rmap.c shape: a tree of processes, each forked from its parent after
    the parent mapped one anonymous page.  Returns (kernel, mms, page, data)."""
    rng = random.Random(seed)
    k = make_kernel(nframes=256, seed=seed)
    root = new_mm(k)
    vma = add_vma(root, BASE, 1)
    data = np.random.default_rng(seed).integers(0, 2**63, size=512, dtype=np.uint64)
    page = map_anon(vma, BASE, data)
    nodes = [(root, vma)]
    frontier = [(root, vma)]
    for _ in range(levels - 1):
        nxt = []
        for mm, v in frontier:
            for _ in range(rng.randint(1, max_children)):
                if len(nodes) >= max_nodes:
                    break
                child = new_mm(k)
                cv = dup_anon(v, child)
                nodes.append((child, cv))
                nxt.append((child, cv))
        frontier = nxt
    return k, [mm for mm, _ in nodes], page, data


def assert_maps(k, mms, addr, new, old_pfn):
    for mm in mms:
        val = pte_of(mm, addr)
        assert not (pte_is_swap(val) and is_migration_entry(pte_to_swp_entry(val))), \
            f"migration entry left in mm {mm.asid}"
        assert pte_present(val) and pte_pfn(val) == new.pfn, f"mm {mm.asid} maps {val:#x}"
    for core in range(k.arch.ncores):
        assert not any(e.ppn == old_pfn for e in k.arch.tlb_entries(core))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anon_page_across_fork_tree(seed):
    k, mms, page, data = fork_tree(seed)
    n = len(mms)
    assert page_mapcount(page) == n and n > 3
    for i, mm in enumerate(mms):                # cached translations on both cores
        assert load(mm, BASE + 8, core=i % 2) == int(data[1])
    old_pfn = page.pfn
    new = mg.migrate_page_to(page)
    assert new is not None and new.pfn != old_pfn, f"seed {seed}"
    assert_maps(k, mms, BASE, new, old_pfn)
    assert page_mapcount(new) == n and new._count == n
    assert new.mapping is mms[0].mmap[0].anon_vma and new.index == BASE >> 12 == mms[-1].mmap[0].linear_page_index(BASE)
    assert page.mapping is None
    assert k.frames.is_free(old_pfn)
    for i, mm in enumerate(mms):
        assert not pte_write(pte_of(mm, BASE))  # COW-shared: still read-only
        assert load(mm, BASE + 8 * (i % 512), core=i % 2) == int(data[i % 512])
    assert new.test(PG.lru) and new.test(PG.active)
    assert k.stats["migration_ptes_restored"] == n


def test_writable_dirty_anon_page_keeps_write_and_dirt():
    k = make_kernel()
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 1)
    page = map_anon(vma, BASE)
    store(mm, BASE + 16, 0x1234)
    assert pte_dirty(pte_of(mm, BASE)) and not page.test(PG.dirty)
    new = mg.migrate_page_to(page)
    val = pte_of(mm, BASE)
    assert pte_pfn(val) == new.pfn and pte_write(val) and not pte_dirty(val)
    assert new.test(PG.dirty)                  # the D bit moved through the migration entry
    assert access(mm, BASE + 24, AccessType.STORE, 7).fault == FaultKind.NONE
    assert load(mm, BASE + 16) == 0x1234 and load(mm, BASE + 24) == 7


def test_file_page_shared_by_many_mms():
    k = make_kernel(nframes=128)
    f = new_file(k, "f", 2, seed=9)
    mms = []
    for j in range(5):
        mm = new_mm(k)
        vma = add_vma(mm, BASE, 2, SHARED_FLAGS, mapping=f)
        map_file(vma, BASE + PAGE, RW if j % 2 else RO)
        mms.append(mm)
    page = f.page_tree[1]
    old_pfn = page.pfn
    for j, mm in enumerate(mms):
        load(mm, BASE + PAGE, core=j % 2)
    new = mg.migrate_page_to(page)
    assert new is not None
    assert_maps(k, mms, BASE + PAGE, new, old_pfn)
    assert f.page_tree[1] is new and new.mapping is f and new.index == 1
    assert page_mapcount(new) == 5 and new._count == 6      # 5 ptes + the page cache
    for j, mm in enumerate(mms):
        assert pte_write(pte_of(mm, BASE + PAGE)) == bool(j % 2)
    assert np.array_equal(k.mem.frame(new.pfn), f.backing[1])
    assert k.frames.is_free(old_pfn) and page.mapping is None


def test_swap_cache_page_moves_its_slot():
    from pyrmap.swap import add_to_swap, lookup_swap_cache, swap_count
    k = make_kernel(swap_slots=4)
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 1)
    page = map_anon(vma, BASE, np.arange(512, dtype=np.uint64))
    lock_page(page)
    assert add_to_swap(page)
    unlock_page(page)
    entry = page.private
    new = mg.migrate_page_to(page)
    assert new.test(PG.swapcache) and new.private == entry and not page.test(PG.swapcache)
    found = lookup_swap_cache(k, entry)
    assert found is new
    k.put_page(found)
    # As in the kernel, try_to_unmap(page, 1) leaves a swap entry (not a migration entry) for
    # a swap-cache page: the pte is restored by the next fault, from the swap cache.
    val = pte_of(mm, BASE)
    assert pte_is_swap(val) and pte_to_swp_entry(val) == entry
    assert swap_count(k, entry) == 2 and page_mapcount(new) == 0 and new.test(PG.dirty)
    assert load(mm, BASE + 8 * 100) == 100
    assert pte_pfn(pte_of(mm, BASE)) == new.pfn and page_mapcount(new) == 1
    assert swap_count(k, entry) == 1


def test_extra_reference_fails_and_restores_every_pte():
    k, mms, page, data = fork_tree(4, levels=2)
    n = len(mms)
    k.get_page(page)                            # someone pins the page (gup)
    failed = mg.migrate_pages(k, [page])
    assert failed == 1 and k.stats["migrate_failed"] == 1
    assert_maps(k, mms, BASE, page, -1)
    assert page_mapcount(page) == n and page._count == n + 1
    assert page.test(PG.lru) and not page.lock.is_locked()
    k.put_page(page)
    assert mg.migrate_pages(k, [page]) == 0     # unpinned: it moves


def test_unmap_and_move_rejects_a_used_target():
    k = make_kernel()
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 2)
    a = map_anon(vma, BASE)
    b = map_anon(vma, BASE + PAGE)
    with pytest.raises(ValueError, match="Migration target must be a new page"):
        mg.unmap_and_move(a, b)


def test_migration_entry_wait_sleeps_until_migration_ends():
    """A CPU faulting on a migration entry waits for the page lock, then retries; it never
    reads anything but the page's data and ends on the new page.  Its wait pins the old
    page, which makes a pass of the migration answer -EAGAIN (as in the kernel) and retry."""
    from pyrmap.pagetable import pte_offset
    from pyrmap.sched import Scheduler
    waited = 0
    for seed in range(8):
        sched = Scheduler(seed)
        k = make_kernel(seed=seed, sched=sched)
        mm = new_mm(k)
        vma = add_vma(mm, BASE, 1)
        page = map_anon(vma, BASE, np.full(512, 5, dtype=np.uint64))
        seen, got = [], []

        def migrator():
            got.append(mg.migrate_page_to(page))

        def faulter():
            while True:
                res = access(mm, BASE, AccessType.LOAD, core=1)
                if res.fault == FaultKind.NONE:
                    seen.append(("loaded", res.value, res.paddr >> 12))
                    if got:
                        return
                    k.arch.yield_point("spin")
                    continue
                with mm.page_table_lock:            # as handle_pte_fault looks at it
                    val = pte_of(mm, BASE)
                if pte_present(val):
                    continue                        # raced with the pte's restoration
                assert pte_is_swap(val) and is_migration_entry(pte_to_swp_entry(val)), \
                    f"seed {seed}: unexpected fault on {val:#x}"
                mg.migration_entry_wait(mm, pte_offset(mm, BASE), BASE)
                seen.append(("waited",))

        sched.spawn("migrator", migrator)
        sched.spawn("faulter", faulter)
        sched.run()
        new = got[0]
        assert new is not None, f"seed {seed}: migration failed"
        loads = [s for s in seen if s[0] == "loaded"]
        assert all(v == 5 for _, v, _ in loads), f"seed {seed}"
        assert loads[-1][2] == new.pfn and pte_pfn(pte_of(mm, BASE)) == new.pfn
        assert page_mapcount(new) == 1 and new._count == 1
        waited += any(s[0] == "waited" for s in seen)
    assert waited >= 1, "no seed made the faulter meet the migration entry"


# ---------------------------------------------------------------------------------------------
# The kselftests mm/rmap.c shape on the real mm: mmap, fork tree, migrate, every process checks

@pytest.mark.parametrize("kind", ["anon", "shm", "file", "file_private"])
@pytest.mark.parametrize("seed, svadu", [(0, True), (5, True), (7, False)])
def test_selftests_rmap_fork_tree(kind, seed, svadu):
    from pyrmap import mmap as mp
    rng = random.Random(seed)
    k = make_kernel(nframes=512, seed=seed, svadu=svadu)
    root = mp.mm_alloc(k)
    prot = mp.PROT_READ | mp.PROT_WRITE
    if kind == "anon":
        addr = mp.do_mmap(root, 0, PAGE, prot, mp.MAP_PRIVATE | mp.MAP_ANONYMOUS)
    elif kind == "shm":
        addr = mp.do_mmap(root, 0, PAGE, prot, mp.MAP_SHARED | mp.MAP_ANONYMOUS)
    else:
        f = mp.file_create(k, "rmap-test", 1)
        flags = mp.MAP_SHARED if kind == "file" else mp.MAP_PRIVATE
        addr = mp.do_mmap(root, 0, PAGE, mp.PROT_READ if kind == "file_private" else prot,
                          flags, file=f)
    if kind in ("anon", "shm"):
        store(root, addr + 8, 0xFEED)
    expect = load(root, addr + 8)
    procs, frontier = [root], [root]
    for _level in range(4):                   # 5 levels, at most 3 children each
        nxt = []
        for mm in frontier:
            for _ in range(rng.randint(1, 3)):
                child = mp.dup_mm(mm)
                nxt.append(child)
        procs += nxt
        frontier = nxt
    for i, mm in enumerate(procs):            # every process maps the page
        assert load(mm, addr + 8, core=i % 2) == expect
    old = k.pfn_to_page(pte_pfn(pte_of(root, addr)))
    assert page_mapcount(old) == len(procs)
    worker = rng.choice(procs)               # any process may move it: rmap finds them all
    new = mg.migrate_page_to(k.pfn_to_page(pte_pfn(pte_of(worker, addr))))
    assert new is not None and new is not old
    assert_maps(k, procs, addr, new, old.pfn)
    assert page_mapcount(new) == len(procs)
    for i, mm in enumerate(procs):
        assert load(mm, addr + 8, core=(i + 1) % 2) == expect
    assert k.frames.is_free(old.pfn)


def test_prot_none_page_stays_inaccessible_after_migration():
    from pyrmap import mmap as mp
    k = make_kernel(nframes=64)
    mm = mp.mm_alloc(k)
    addr = mp.do_mmap(mm, 0, PAGE, mp.PROT_READ | mp.PROT_WRITE,
                      mp.MAP_PRIVATE | mp.MAP_ANONYMOUS)
    store(mm, addr, 77)
    assert mp.mprotect(mm, addr, PAGE, mp.PROT_NONE) == 0
    old = k.pfn_to_page(pte_pfn(pte_of(mm, addr)))
    new = mg.migrate_page_to(old)
    val = pte_of(mm, addr)
    assert pte_pfn(val) == new.pfn and not val & 0x10          # no U bit: user faults
    assert access(mm, addr, AccessType.LOAD).fault == FaultKind.PAGE
    assert mp.mprotect(mm, addr, PAGE, mp.PROT_READ) == 0
    assert load(mm, addr) == 77


def test_vma_migration_prot():
    from pyrmap.mm_types import VM_EXEC, VM_READ, VM_WRITE
    k = make_kernel()
    mm = new_mm(k)
    rw = add_vma(mm, BASE, 1, VM_READ | VM_WRITE)
    x = add_vma(mm, BASE + PAGE, 1, VM_EXEC)
    assert mg.vma_migration_prot(rw, True) == RW
    assert mg.vma_migration_prot(rw, False) == RO
    assert mg.vma_migration_prot(x, False) == 0b11001          # V X U, no A


def test_pages_off_the_lru_are_not_migrated():
    from pyrmap.vmscan import isolate_lru_page, putback_lru_page
    k = make_kernel()
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 1)
    page = map_anon(vma, BASE, np.full(512, 3, dtype=np.uint64))
    assert isolate_lru_page(page) == 0          # reclaim has it right now
    assert mg.migrate_pages(k, [page]) == 1
    assert pte_pfn(pte_of(mm, BASE)) == page.pfn and page._count == 2
    putback_lru_page(page)
    free = k.alloc_page()
    k.put_page(free)
    assert mg.migrate_pages(k, [free]) == 1     # a free frame is never touched
    assert free._count == 0


def test_move_page_by_address():
    k = make_kernel()
    mm = new_mm(k)
    vma = add_vma(mm, BASE, 2)
    page = map_anon(vma, BASE, np.full(512, 9, dtype=np.uint64))
    new = mg.move_page(mm, BASE)
    assert new is not None and pte_pfn(pte_of(mm, BASE)) == new.pfn != page.pfn
    assert load(mm, BASE + 64) == 9 and page_mapcount(new) == 1 and new._count == 1
    assert mg.move_page(mm, BASE + PAGE) is None           # nothing mapped
    assert mg.move_page(mm, BASE + 0x100_0000) is None     # no page table
