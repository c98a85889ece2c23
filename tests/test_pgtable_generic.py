"""pyrmap.pgtable_generic: the PTE helpers rmap changes live PTEs with, on SoftArch."""

import pytest

from pyrmap import pgtable_generic as pg
from pyrmap.kernel import KernelConfig, Quirks
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_W, AccessType, FaultKind, pte_dirty, pte_young)

from reclaim_fixtures import RW, access, add_vma, install, make_kernel, new_mm, pte_of

BASE = 0x4000_0000
PAGE = 4096


def setup(nvpages=2, quirks=None, config=None, prot=RW):
    k = make_kernel()
    if quirks is not None:
        k.quirks = quirks
    if config is not None:
        k.config = config
    mm = new_mm(k)
    vma = add_vma(mm, BASE, nvpages)
    pteps = []
    for i in range(nvpages):
        page = k.alloc_page()
        pteps.append(install(vma, BASE + i * PAGE, page, prot))
    return k, mm, vma, pteps


def cached(k, core, addr):
    return [e for e in k.arch.tlb_entries(core) if e.covers(addr)]


def test_ptep_get_and_clear_returns_walker_bits_and_does_not_flush():
    k, mm, vma, (p0, _) = setup()
    assert access(mm, BASE, AccessType.STORE, 5).fault == FaultKind.NONE   # walker sets A, D
    old = pg.ptep_get_and_clear(mm, BASE, p0)
    assert pte_young(old) and pte_dirty(old)
    assert pte_of(mm, BASE) == 0
    assert cached(k, 0, BASE), "ptep_get_and_clear must not flush"
    assert k.stats["ptep_get_and_clear"] == 1


def test_ptep_clear_flush_flushes_only_that_page_on_every_core():
    k, mm, vma, (p0, p1) = setup()
    for core in (0, 1):
        access(mm, BASE, AccessType.LOAD, core=core)
        access(mm, BASE + PAGE, AccessType.LOAD, core=core)
    old = pg.ptep_clear_flush(vma, BASE, p0)
    assert pte_young(old) and not pte_dirty(old)
    for core in (0, 1):
        assert not cached(k, core, BASE)
        assert cached(k, core, BASE + PAGE), "a neighbouring page was flushed too"
    assert access(mm, BASE, AccessType.LOAD).fault == FaultKind.PAGE


def test_ptep_clear_flush_young_flushes_when_young_2008():
    k, mm, vma, (p0, _) = setup(config=KernelConfig(clear_flush_young_flushes=True))
    access(mm, BASE, AccessType.LOAD)
    assert pg.ptep_clear_flush_young(vma, BASE, p0) == 1
    assert not pte_young(pte_of(mm, BASE)) and not cached(k, 0, BASE)
    # The next access re-walks and sets A again: aging is exact.
    access(mm, BASE, AccessType.LOAD)
    assert pte_young(pte_of(mm, BASE))
    assert pg.ptep_clear_flush_young(vma, BASE, p0) == 1
    assert pg.ptep_clear_flush_young(vma, BASE, p0) == 0


def test_ptep_clear_flush_young_without_flush_keeps_a_stale_young_entry():
    k, mm, vma, (p0, _) = setup(config=KernelConfig(clear_flush_young_flushes=False))
    access(mm, BASE, AccessType.LOAD)
    assert pg.ptep_clear_flush_young(vma, BASE, p0) == 1
    assert cached(k, 0, BASE), "x86 since b13b1d2d8692 clears A without flushing"
    # The cached entry has A=1, so a hit does not set A in memory again.
    assert access(mm, BASE, AccessType.LOAD).hit
    assert not pte_young(pte_of(mm, BASE))
    assert pg.ptep_clear_flush_young(vma, BASE, p0) == 0


def test_ptep_clear_flush_young_on_old_pte_does_not_flush():
    k, mm, vma, (p0, _) = setup()
    access(mm, BASE, AccessType.LOAD)
    assert pg.ptep_test_and_clear_young(vma, BASE, p0) == 1      # A cleared, no flush
    flushes = k.arch.stats["flush_tlb_page"]
    assert pg.ptep_clear_flush_young(vma, BASE, p0) == 0
    assert k.arch.stats["flush_tlb_page"] == flushes
    assert cached(k, 0, BASE)


def test_ptep_set_access_flags_writes_and_flushes_only_dirty_changes():
    k, mm, vma, (p0, _) = setup(prot=RW & ~_PAGE_W)
    access(mm, BASE, AccessType.LOAD)
    old = pte_of(mm, BASE)
    assert not pg.ptep_set_access_flags(vma, BASE, p0, old, True)          # unchanged
    want = old | _PAGE_W | _PAGE_D
    assert pg.ptep_set_access_flags(vma, BASE, p0, want, False)            # changed, not dirty
    assert pte_of(mm, BASE) == old, "x86 writes only when dirty"
    assert pg.ptep_set_access_flags(vma, BASE, p0, want, True)
    assert pte_of(mm, BASE) == want | _PAGE_A
    assert not cached(k, 0, BASE)
    assert access(mm, BASE, AccessType.STORE, 1).fault == FaultKind.NONE
    with pytest.raises(ValueError, match="needs a present PTE, not 0x0"):
        pg.ptep_set_access_flags(vma, BASE, p0, 0, True)


def test_ptep_set_access_flags_keeps_a_concurrent_hardware_d_bit():
    k, mm, vma, (p0, _) = setup()
    access(mm, BASE, AccessType.LOAD)
    stale = pte_of(mm, BASE)                       # what a fault handler read: A, no D
    arch = k.arch
    real_cmpxchg = arch.cmpxchg
    raced = []

    def cmpxchg(ptep, old, new):                  # a walker sets D just before our CAS
        if not raced:
            raced.append(True)
            arch.mem.write(ptep, arch.mem.read(ptep) | _PAGE_D)
        return real_cmpxchg(ptep, old, new)

    arch.cmpxchg = cmpxchg
    assert pg.ptep_set_access_flags(vma, BASE, p0, stale & ~_PAGE_W, True)
    assert pte_dirty(pte_of(mm, BASE)) and raced


def _store_between_load_and_store(k, mm, quirk):
    """Run ptep_get_and_clear while core 1 stores through a clean cached entry at the
    quirk's window (or just before the exchange when the quirk is off)."""
    k.quirks = Quirks(nonatomic_ptep_get_and_clear=quirk)
    access(mm, BASE, AccessType.LOAD, core=1)        # core 1 caches A=1 D=0
    arch = k.arch
    real_yield = arch.yield_point
    fired = []

    def yield_point(why=""):
        if not fired and why.startswith("ptep_get_and_clear"):
            fired.append(why)
            # The store hits a clean entry, re-walks and sets D with a CAS.
            assert arch.cpu_access(1, BASE, AccessType.STORE, data=99).fault == FaultKind.NONE
        real_yield(why)

    arch.yield_point = yield_point
    try:
        return pg.ptep_get_and_clear(mm, BASE, pte_of_ptep(mm)), fired
    finally:
        arch.yield_point = real_yield


def pte_of_ptep(mm):
    from pyrmap.pagetable import pte_offset
    return pte_offset(mm, BASE)


def test_atomic_get_and_clear_keeps_a_racing_dirty_bit():
    k, mm, vma, _ = setup()
    old, fired = _store_between_load_and_store(k, mm, quirk=False)
    assert fired and pte_dirty(old)


def test_nonatomic_get_and_clear_quirk_loses_the_racing_dirty_bit():
    k, mm, vma, _ = setup()
    old, fired = _store_between_load_and_store(k, mm, quirk=True)
    assert fired == ["ptep_get_and_clear: between the load and the store"]
    assert not pte_dirty(old), "the quirk must lose the D bit the walker set in the window"
    assert pte_of(mm, BASE) == 0
