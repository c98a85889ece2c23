"""pyrmap.swap: the swap device, swap_map counts, the swap cache, mmlist and swap token."""

import numpy as np
import pytest

from pyrmap.kernel import Kernel, KernelConfig
from pyrmap.mm_types import PG, AnonVma
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.physmem import PhysMem
from pyrmap.pte import make_migration_entry, swp_entry
from pyrmap import swap as sw


def make_kernel(nframes=32, seed=0):
    from pyrmap.softarch import SoftArch
    arch = SoftArch(PhysMem(nframes), ncores=2, seed=seed)
    return Kernel(arch, config=KernelConfig(reuse_freed_first=True))


def anon_page(kernel, fill=None):
    page = kernel.alloc_page()
    page.mapping = AnonVma(kernel)
    if fill is not None:
        kernel.mem.frame(page.pfn)[:] = fill
    return page


def pattern(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**63, size=512, dtype=np.uint64)


def test_swapon_once_and_bad_sizes():
    k = make_kernel()
    si = sw.swapon(k, 8)
    assert k.swap is si and si.nslots == 8 and si.nr_free == 8
    with pytest.raises(ValueError, match="Swap is already on"):
        sw.swapon(k, 8)
    k2 = make_kernel()
    with pytest.raises(TypeError, match=r"positive integer, not 0"):
        sw.swapon(k2, 0)
    assert sw.nr_swap_pages(make_kernel()) == 0


def test_swapon_default_size_from_config():
    k = make_kernel()
    k.config.swap_slots = 5
    assert sw.swapon(k).nslots == 5


def test_slot_exhaustion_is_clear():
    k = make_kernel()
    sw.swapon(k, 3)
    entries = [sw.get_swap_page(k) for _ in range(3)]
    assert sorted(e.offset for e in entries) == [0, 1, 2]
    assert sw.get_swap_page(k) is None
    with pytest.raises(sw.SwapFull, match="All 3 swap slots are in use"):
        sw.get_swap_page(k, must=True)
    assert k.stats["swap_full"] == 2
    sw.swap_free(k, entries[1])
    assert sw.get_swap_page(k) == entries[1]


def test_swap_map_counts_and_bad_frees():
    k = make_kernel()
    sw.swapon(k, 4)
    e = sw.get_swap_page(k)
    assert sw.swap_count(k, e) == 1
    sw.swap_duplicate(k, e)
    sw.swap_duplicate(k, e)
    assert sw.swap_count(k, e) == 3
    for _ in range(3):
        sw.swap_free(k, e)
    assert sw.swap_count(k, e) == 0 and k.swap.nr_free == 4
    with pytest.raises(ValueError, match=r"swap_free of free swap slot SwpEntry\(type=0, "
                                         r"offset=0\)"):
        sw.swap_free(k, e)
    with pytest.raises(ValueError, match=r"swap_duplicate of free swap slot .*offset=0"):
        sw.swap_duplicate(k, e)


def test_bad_entries_are_named():
    k = make_kernel()
    sw.swapon(k, 4)
    with pytest.raises(ValueError, match=r"bad swap file entry .*type=3"):
        sw.swap_duplicate(k, swp_entry(3, 0))
    with pytest.raises(ValueError, match=r"bad swap offset entry .*offset=9.*4 slots"):
        sw.swap_free(k, swp_entry(0, 9))
    with pytest.raises(TypeError, match="must be a SwpEntry"):
        sw.swap_free(k, 5)
    mig = make_migration_entry(7, True)
    assert sw.swap_duplicate(k, mig) == 1          # ignored, as in the kernel
    with pytest.raises(ValueError, match="swap_free of migration entry"):
        sw.swap_free(k, mig)
    with pytest.raises(ValueError, match="no swap device"):
        sw.lookup_swap_cache(make_kernel(), swp_entry(0, 0))


def test_add_to_swap_and_cache_lifecycle():
    k = make_kernel()
    sw.swapon(k, 4)
    page = anon_page(k)
    lock_page(page)
    assert sw.add_to_swap(page)
    e = page.private
    assert sw.PageSwapCache(page) and page.test(PG.dirty)
    assert page._count == 2 and sw.swap_count(k, e) == 1 and sw.page_swapcount(page) == 0
    found = sw.lookup_swap_cache(k, e)
    assert found is page and page._count == 3
    k.put_page(found)
    sw.delete_from_swap_cache(page)
    assert not sw.PageSwapCache(page) and page.private is None and page._count == 1
    assert sw.swap_count(k, e) == 0 and sw.lookup_swap_cache(k, e) is None
    unlock_page(page)
    with pytest.raises(AssertionError, match="unlocked page"):
        sw.add_to_swap(page)


def test_add_to_swap_full_keeps_page():
    k = make_kernel()
    sw.swapon(k, 1)
    a, b = anon_page(k), anon_page(k)
    lock_page(a)
    lock_page(b)
    assert sw.add_to_swap(a)
    assert not sw.add_to_swap(b)
    assert not sw.PageSwapCache(b) and not b.test(PG.dirty) and b._count == 1


def test_add_to_swap_without_swap_device():
    k = make_kernel()
    page = anon_page(k)
    lock_page(page)
    assert sw.add_to_swap(page) is False


def test_writeout_and_swapin_roundtrip():
    k = make_kernel()
    sw.swapon(k, 4)
    data = pattern(1)
    page = anon_page(k, data)
    lock_page(page)
    sw.add_to_swap(page)
    e = page.private
    sw.swap_writepage(page)
    sw.swap_duplicate(k, e)                  # a pte now holds the entry
    sw.delete_from_swap_cache(page)
    unlock_page(page)
    old_pfn = page.pfn
    k.put_page(page)
    assert k.frames.is_free(old_pfn)
    k.mem.zero_frame(old_pfn)
    assert sw.swap_count(k, e) == 1
    new = sw.read_swap_page(k, e)
    assert np.array_equal(k.mem.frame(new.pfn), data)
    assert sw.PageSwapCache(new) and new.private == e and new.test(PG.uptodate)
    assert sw.swap_count(k, e) == 2          # the pte and the cache
    assert new._count == 2                   # the cache and the caller
    again = sw.read_swap_page(k, e)          # a second fault finds it in the cache
    assert again is new and new._count == 3
    assert k.stats["pswpin"] == 1 and k.stats["pswpout"] == 1


def test_read_swap_page_of_free_slot():
    k = make_kernel()
    sw.swapon(k, 4)
    with pytest.raises(ValueError, match=r"read_swap_page of free swap slot .*offset=2"):
        sw.read_swap_page(k, swp_entry(0, 2))


def test_free_swap_and_cache_drops_an_unused_cached_page():
    k = make_kernel()
    sw.swapon(k, 4)
    page = anon_page(k)
    lock_page(page)
    sw.add_to_swap(page)
    e = page.private
    sw.swap_duplicate(k, e)
    unlock_page(page)
    k.put_page(page)                         # only the swap cache holds the page now
    sw.free_swap_and_cache(k, e)             # the pte goes: nobody can read the slot again
    assert sw.swap_count(k, e) == 0 and sw.lookup_swap_cache(k, e) is None
    assert k.frames.is_free(page.pfn) and page._count == 0
    sw.free_swap_and_cache(k, make_migration_entry(3, False))   # ignored


def test_free_swap_and_cache_keeps_a_page_in_use_until_swap_is_full():
    k = make_kernel()
    sw.swapon(k, 4)
    page = anon_page(k)
    lock_page(page)
    sw.add_to_swap(page)
    e = page.private
    sw.swap_duplicate(k, e)
    unlock_page(page)
    k.get_page(page)                         # mapped somewhere else too
    sw.free_swap_and_cache(k, e)
    assert sw.PageSwapCache(page) and sw.swap_count(k, e) == 1
    others = [sw.get_swap_page(k) for _ in range(2)]   # 3 of 4 slots used: swap is full
    assert sw.vm_swap_full(k) and all(others)
    sw.swap_duplicate(k, e)
    sw.free_swap_and_cache(k, e)
    assert not sw.PageSwapCache(page) and page.test(PG.dirty) and page._count == 2


def test_free_swap_and_cache_leaves_a_locked_page():
    k = make_kernel()
    sw.swapon(k, 4)
    page = anon_page(k)
    lock_page(page)
    sw.add_to_swap(page)
    e = page.private
    sw.swap_duplicate(k, e)
    sw.free_swap_and_cache(k, e)             # page lock taken: trylock fails, page stays
    assert sw.PageSwapCache(page) and sw.swap_count(k, e) == 1
    unlock_page(page)


def test_try_to_free_swap():
    k = make_kernel()
    sw.swapon(k, 4)
    page = anon_page(k)
    lock_page(page)
    sw.add_to_swap(page)
    e = page.private
    sw.swap_duplicate(k, e)
    assert not sw.try_to_free_swap(page)     # a pte still holds the slot
    sw.swap_free(k, e)
    page.clear(PG.dirty)
    assert sw.try_to_free_swap(page)
    assert not sw.PageSwapCache(page) and page.test(PG.dirty) and sw.swap_count(k, e) == 0
    unlock_page(page)


def test_mmlist_and_swap_token():
    from pyrmap.mm_types import MmStruct
    from pyrmap.pagetable import pgd_alloc
    k = make_kernel()
    sw.swapon(k, 4)
    mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
    mm2 = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
    sw.mmlist_add(mm)
    sw.mmlist_add(mm)
    assert k.swap.mmlist == [mm] and mm.on_mmlist
    sw.mmlist_del(mm)
    assert k.swap.mmlist == [] and not mm.on_mmlist
    assert not sw.has_swap_token(mm)
    sw.grab_swap_token(mm)
    assert sw.has_swap_token(mm) and not sw.has_swap_token(mm2)
    sw.grab_swap_token(mm2)
    assert sw.has_swap_token(mm2) and not sw.has_swap_token(mm)
    sw.put_swap_token(mm)                    # not the holder: no change
    assert sw.has_swap_token(mm2)
    sw.put_swap_token(mm2)
    assert not sw.has_swap_token(mm2)


def test_swapoff_brings_every_entry_back_across_fork():
    from reclaim_fixtures import add_vma, dup_anon, load, map_anon, new_mm, pte_of
    from pyrmap.mm_types import page_mapcount
    from pyrmap.pte import pte_is_swap, pte_pfn, pte_present
    from pyrmap.vmscan import try_to_free_pages
    k = make_kernel(nframes=64)
    sw.swapon(k, 16)
    base = 0x4000_0000
    parent = new_mm(k)
    vma = add_vma(parent, base, 3)
    data = [pattern(10 + i) for i in range(3)]
    for i in range(3):
        map_anon(vma, base + i * 4096, data[i])
    child = new_mm(k)
    dup_anon(vma, child)
    assert try_to_free_pages(k, 3) == 3
    assert all(pte_is_swap(pte_of(mm, base + i * 4096)) for mm in (parent, child)
               for i in range(3))
    assert load(child, base + 4096 + 8) == int(data[1][1])   # one page back in the child
    assert set(k.swap.mmlist) == {parent, child}
    assert sw.swapoff(k) == 5
    assert k.swap is None and not parent.on_mmlist and not child.on_mmlist
    for i in range(3):
        a, b = pte_of(parent, base + i * 4096), pte_of(child, base + i * 4096)
        assert pte_present(a) and pte_present(b) and pte_pfn(a) == pte_pfn(b)
        page = k.pfn_to_page(pte_pfn(a))
        assert page_mapcount(page) == 2 and not page.test(PG.swapcache)
        assert page.test(PG.dirty) and np.array_equal(k.mem.frame(page.pfn), data[i])
    from pyrmap.pte import pte_write, pte_young
    for i in (0, 2):        # swapoff maps read-only and old (unuse_pte's pte_mkold)
        a = pte_of(parent, base + i * 4096)
        assert not pte_young(a) and not pte_write(a)
    with pytest.raises(ValueError, match="swapoff: no swap device"):
        sw.swapoff(k)


def test_swapoff_refuses_while_an_entry_is_held_elsewhere():
    k = make_kernel()
    sw.swapon(k, 4)
    e = sw.get_swap_page(k)                  # held by no pte of any mm on the mmlist
    with pytest.raises(RuntimeError, match=r"1 swap slots still in use \(offsets \[0\]"):
        sw.swapoff(k)
    assert k.swap is not None and sw.swap_count(k, e) == 1
