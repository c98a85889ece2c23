"""SoftArch: TLB hits and fills, invalidation kinds, superpages, global entries, ASIDs, A/D
behaviour of cached entries, flushes, PTE atomics, the device TLB, parameter errors."""

import random
from types import SimpleNamespace

import pytest

from pyrmap.arch import Arch, InvalKind
from pyrmap.locking import Deadlock, LockError
from pyrmap.physmem import PhysMem
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_G, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X,
                        AccessType, FaultKind, pfn_pte, pte_table)
from pyrmap.softarch import SoftArch, Tlb

L, S, F = AccessType.LOAD, AccessType.STORE, AccessType.FETCH
RWU = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U


class Machine:
    """A SoftArch and hand-built page tables for a few fake mms (no Kernel needed)."""

    def __init__(self, nframes=96, **kw):
        self.mem = PhysMem(nframes)
        self.arch = SoftArch(self.mem, **kw)
        self.next = 1

    def alloc(self):
        pfn = self.next
        self.next += 1
        return pfn

    def mm(self, asid):
        return SimpleNamespace(asid=asid, pgd=self.alloc(), cpu_vm_mask=set())

    def ptep(self, mm, va, level=0):
        table = mm.pgd
        for lv in range(2, level, -1):
            slot = (table << 12) + ((va >> (12 + 9 * lv)) & 511) * 8
            pte = self.mem.read(slot)
            if not pte & _PAGE_V:
                pte = pte_table(self.alloc())
                self.mem.write(slot, pte)
            table = pte >> 10
        return (table << 12) + ((va >> (12 + 9 * level)) & 511) * 8

    def map(self, mm, va, pfn, flags=RWU, level=0):
        p = self.ptep(mm, va, level)
        self.mem.write(p, pfn_pte(pfn, flags))
        return p

    def keys(self, core=0):
        return sorted((e.vpn, e.asid, e.g) for e in self.arch.tlb_entries(core))


def vma_of(mm):
    return SimpleNamespace(vm_mm=mm)


# --- parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,exc,msg", [
    (dict(tlb_entries=12, tlb_ways=8), ValueError,
     r"^TLB has 12 entries, which is not a multiple of 8 ways$"),
    (dict(tlb_entries=24, tlb_ways=8), ValueError,
     r"^TLB has 3 sets \(24 entries / 8 ways\), which is not a power of 2$"),
    (dict(replacement="lru"), ValueError,
     r"^Replacement must be one of 'plru', 'random', 'fifo', not 'lru'$"),
    (dict(tlb_entries=6, tlb_ways=6), ValueError,
     r"^PLRU replacement needs a power-of-2 number of ways, not 6$"),
    (dict(asid_bits=17), ValueError, r"^ASID bits must be between 0 and 16, not 17$"),
    (dict(asid_bits="9"), TypeError, r"^ASID bits must be an integer, not '9'$"),
    (dict(tlb_entries=0), TypeError, r"^TLB entries must be a positive integer, not 0$"),
    (dict(tlb_ways=2.0), TypeError, r"^TLB ways must be a positive integer, not 2.0$"),
    (dict(ncores=0), TypeError, r"^Core count must be a positive integer, not 0$"),
    (dict(dev_entries=6), ValueError,
     r"^Device TLB has 6 entries, which is not a power of 2 \(PLRU replacement\)$"),
])
def test_parameter_errors(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        SoftArch(PhysMem(4), **kw)


def test_random_replacement_accepts_any_way_count():
    t = Tlb(6, 6, "random")
    assert t.nsets == 1 and t.superpages is None


def test_memory_must_be_physmem():
    with pytest.raises(TypeError, match=r"^Memory must be a PhysMem, not 4$"):
        SoftArch(4)


def test_switch_mm_rejects_wide_asid_and_bad_core():
    m = Machine(asid_bits=4)
    with pytest.raises(ValueError, match=r"^ASID 16 does not fit in 4 ASID bits$"):
        m.arch.switch_mm(0, m.mm(16))
    with pytest.raises(ValueError, match=r"^Core must be 0\.\.1, not 2$"):
        m.arch.switch_mm(2, m.mm(1))


def test_softarch_implements_every_abstract_method():
    assert not SoftArch.__abstractmethods__
    assert "current_task" in Arch.__abstractmethods__


# --- translation, hits, superpages ----------------------------------------------------------

def test_walk_fills_then_hits_and_counts():
    m = Machine()
    mm = m.mm(1)
    m.map(mm, 0x4000, 0x50)
    m.arch.switch_mm(0, mm)
    assert mm.cpu_vm_mask == {0}
    r = m.arch.cpu_access(0, 0x4010, S, data=0xDEAD)
    assert r.fault == FaultKind.NONE and not r.hit and r.paddr == 0x50010
    assert m.mem.read(0x50010) == 0xDEAD
    r = m.arch.cpu_access(0, 0x4010, L)
    assert r.hit and r.value == 0xDEAD
    p = m.arch.perf(0)
    assert (p["lookups"], p["hits"], p["misses"], p["walks"], p["a_sets"], p["d_sets"]) == \
        (2, 1, 1, 1, 1, 1)
    [e] = m.arch.tlb_entries(0)
    assert (e.vpn, e.asid, e.ppn, e.level, e.a, e.d, e.g) == (4, 1, 0x50, 0, True, True, False)
    assert e.perm == _PAGE_R | _PAGE_W | _PAGE_U


def test_unaligned_word_access_uses_the_aligned_word():
    m = Machine()
    mm = m.mm(1)
    m.map(mm, 0x4000, 0x50)
    m.arch.switch_mm(0, mm)
    m.arch.cpu_access(0, 0x4013, S, data=7)
    assert m.mem.read(0x50010) == 7
    assert m.arch.cpu_access(0, 0x4017, L).value == 7


@pytest.mark.parametrize("level,base,pfn,probes", [
    (1, 0x20_0000, 0x200, [0x20_0000, 0x20_1234, 0x3F_FFF8]),
    (2, 0x4000_0000, 0x40000, [0x4000_0000, 0x4ABC_D008, 0x7FFF_FFF8]),
])
def test_va_anywhere_inside_a_superpage_hits_it(level, base, pfn, probes):
    m = Machine(nframes=32)
    mm = m.mm(1)
    m.map(mm, base, pfn, RWU | _PAGE_A | _PAGE_D, level=level)
    m.arch.switch_mm(0, mm)
    r = m.arch.translate(0, base + 8, L)
    assert not r.hit and r.fault == FaultKind.NONE
    for va in probes:
        r = m.arch.translate(0, va, S)
        assert r.hit, hex(va)
        assert r.paddr == (pfn << 12) + (va - base)
    outside = base + (1 << (12 + 9 * level))
    r = m.arch.translate(0, outside, L)
    assert not r.hit and r.fault == FaultKind.PAGE
    [e] = m.arch.tlb_entries(0)
    assert e.level == level


def test_asids_separate_translations():
    m = Machine()
    a, b = m.mm(1), m.mm(2)
    m.map(a, 0x1000, 0x50)
    m.map(b, 0x1000, 0x51)
    m.arch.switch_mm(0, a)
    assert m.arch.translate(0, 0x1000, L).paddr == 0x50000
    m.arch.switch_mm(0, b)
    r = m.arch.translate(0, 0x1000, L)
    assert not r.hit and r.paddr == 0x51000     # no cross-ASID hit
    m.arch.switch_mm(0, a)
    r = m.arch.translate(0, 0x1000, L)
    assert r.hit and r.paddr == 0x50000         # a's entry survived the switch
    assert {e.asid for e in m.arch.tlb_entries(0)} == {1, 2}
    assert a.cpu_vm_mask == {0} and b.cpu_vm_mask == {0}


def test_global_entry_hits_in_every_asid():
    m = Machine()
    a, b = m.mm(1), m.mm(2)
    m.map(a, 0x9000, 0x52, RWU | _PAGE_G)
    m.arch.switch_mm(0, a)
    m.arch.translate(0, 0x9000, L)
    m.arch.switch_mm(0, b)                      # b's tables do not map 0x9000 at all
    r = m.arch.translate(0, 0x9000, L)
    assert r.hit and r.paddr == 0x52000


def test_zero_asid_bits_ignores_asids():
    m = Machine(asid_bits=0)
    a, b = m.mm(1), m.mm(2)
    m.map(a, 0x1000, 0x50)
    m.arch.switch_mm(0, a)
    m.arch.translate(0, 0x1000, L)
    m.arch.switch_mm(0, b)
    assert m.arch.translate(0, 0x1000, L).hit   # no tags: software must flush on a switch


def test_access_without_address_space_raises():
    m = Machine()
    with pytest.raises(RuntimeError, match=r"Core 1 has no address space"):
        m.arch.translate(1, 0x1000, L)


def test_store_needs_data_and_load_takes_none():
    m = Machine()
    m.arch.switch_mm(0, m.mm(1))
    with pytest.raises(TypeError, match=r"^A store needs integer data, not None$"):
        m.arch.cpu_access(0, 0, S)
    with pytest.raises(TypeError, match=r"^Only a store takes data, not a LOAD$"):
        m.arch.cpu_access(0, 0, L, data=1)


def test_data_bus_error_is_access_fault():
    m = Machine(nframes=16)
    mm = m.mm(1)
    m.map(mm, 0x1000, 0x999)                    # a frame beyond memory
    m.arch.switch_mm(0, mm)
    r = m.arch.cpu_access(0, 0x1000, L)
    assert r.fault == FaultKind.ACCESS and r.value is None


# --- A and D on cached entries ----------------------------------------------------------------

def test_store_to_clean_cached_entry_rewalks_and_sets_d():
    m = Machine()
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(0, mm)
    assert m.arch.cpu_access(0, 0x1000, L).fault == FaultKind.NONE
    assert m.mem.read(p) & (_PAGE_A | _PAGE_D) == _PAGE_A
    [e] = m.arch.tlb_entries(0)
    assert not e.d
    r = m.arch.cpu_access(0, 0x1000, S, data=1)
    assert r.fault == FaultKind.NONE and not r.hit and r.walk is not None
    assert m.mem.read(p) & _PAGE_D
    [e] = m.arch.tlb_entries(0)                 # the entry was replaced, not duplicated
    assert e.d
    assert m.arch.cpu_access(0, 0x1000, S, data=2).hit
    assert m.arch.perf(0)["d_sets"] == 1


def test_clearing_a_without_flush_is_stale_until_the_flush():
    m = Machine()
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(0, mm)
    m.arch.cpu_access(0, 0x1000, L)
    assert m.arch.ptep_test_and_clear_young(vma_of(mm), 0x1000, p) == 1
    assert m.arch.ptep_test_and_clear_young(vma_of(mm), 0x1000, p) == 0
    r = m.arch.cpu_access(0, 0x1000, L)
    assert r.hit                                # stale but legal
    assert not m.mem.read(p) & _PAGE_A          # the hit did not set A again
    m.arch.flush_tlb_page(vma_of(mm), 0x1000)
    r = m.arch.cpu_access(0, 0x1000, L)
    assert not r.hit
    assert m.mem.read(p) & _PAGE_A              # after the flush the walk sets it


def test_cleared_pte_still_translates_until_flushed():
    m = Machine()
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(0, mm)
    m.arch.cpu_access(0, 0x1000, S, data=5)
    old = m.arch.ptep_get_and_clear(mm, 0x1000, p)
    assert old & _PAGE_A and old & _PAGE_D      # the walker's A/D are in what xchg returns
    assert m.arch.cpu_access(0, 0x1000, L).value == 5
    m.arch.flush_tlb_page(vma_of(mm), 0x1000)
    assert m.arch.cpu_access(0, 0x1000, L).fault == FaultKind.PAGE


def test_write_protected_pte_faults_after_flush_not_before():
    m = Machine()
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(0, mm)
    m.arch.cpu_access(0, 0x1000, S, data=1)
    m.arch.ptep_set_wrprotect(mm, 0x1000, p)
    assert not m.mem.read(p) & _PAGE_W
    assert m.arch.cpu_access(0, 0x1000, S, data=2).hit
    m.arch.flush_tlb_range(vma_of(mm), 0x1000, 0x2000)
    assert m.arch.cpu_access(0, 0x1000, S, data=3).fault == FaultKind.PAGE
    assert m.mem.read(0x50000) == 2


def test_permission_failure_on_a_hit_drops_the_entry_and_rewalks():
    m = Machine()
    mm = m.mm(1)
    m.map(mm, 0x1000, 0x50, RWU | _PAGE_A)
    m.arch.switch_mm(0, mm)
    m.arch.translate(0, 0x1000, L)
    r = m.arch.translate(0, 0x1000, F)           # no X
    assert r.fault == FaultKind.PAGE and not r.hit
    assert m.arch.tlb_entries(0) == []
    r = m.arch.translate(0, 0x1000, L, user=False)   # S-mode on a U page without SUM
    assert r.fault == FaultKind.PAGE
    assert m.arch.translate(0, 0x1000, L, user=False, sum=True).fault == FaultKind.NONE


def test_svade_arch_faults_on_store_to_clean_page():
    m = Machine(svadu=False)
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50, RWU | _PAGE_A)
    m.arch.switch_mm(0, mm)
    assert m.arch.cpu_access(0, 0x1000, L).fault == FaultKind.NONE
    assert m.arch.cpu_access(0, 0x1000, S, data=1).fault == FaultKind.PAGE
    assert m.mem.read(p) == pfn_pte(0x50, RWU | _PAGE_A)
    m.mem.write(p, pfn_pte(0x50, RWU | _PAGE_A | _PAGE_D))
    assert m.arch.cpu_access(0, 0x1000, S, data=1).fault == FaultKind.NONE


# --- invalidation kinds --------------------------------------------------------------------------

def _populate():
    """Core 0 caches (va1, asid1), (va2, asid1), (va1, asid2) and a global va3."""
    m = Machine()
    a, b = m.mm(1), m.mm(2)
    va1, va2, va3 = 0x1000, 0x2000, 0x3000
    m.map(a, va1, 0x50)
    m.map(a, va2, 0x51)
    m.map(a, va3, 0x52, RWU | _PAGE_G)
    m.map(b, va1, 0x53)
    m.arch.switch_mm(0, a)
    for va in (va1, va2, va3):
        m.arch.translate(0, va, L)
    m.arch.switch_mm(0, b)
    m.arch.translate(0, va1, L)
    assert m.keys() == [(1, 1, False), (1, 2, False), (2, 1, False), (3, 1, True)]
    return m


@pytest.mark.parametrize("kind,va,asid,left", [
    (InvalKind.ALL, 0, 0, []),
    (InvalKind.VA, 0x1000, 0, [(2, 1, False), (3, 1, True)]),
    (InvalKind.VA, 0x3000, 0, [(1, 1, False), (1, 2, False), (2, 1, False)]),
    (InvalKind.ASID, 0, 1, [(1, 2, False), (3, 1, True)]),     # keeps the global entry
    (InvalKind.ASID, 0, 2, [(1, 1, False), (2, 1, False), (3, 1, True)]),
    (InvalKind.VA_ASID, 0x1000, 1, [(1, 2, False), (2, 1, False), (3, 1, True)]),
    (InvalKind.VA_ASID, 0x3000, 2, [(1, 1, False), (1, 2, False), (2, 1, False)]),  # global va
    (InvalKind.VA_ASID, 0x2000, 2, [(1, 1, False), (1, 2, False), (2, 1, False),
                                    (3, 1, True)]),
])
def test_inval_kinds(kind, va, asid, left):
    m = _populate()
    removed = m.arch.inval(0, kind, va, asid)
    assert m.keys() == left
    assert removed == 4 - len(left)
    assert m.arch.perf(0)["invals"] == 1


def test_inval_by_va_inside_a_superpage_removes_it():
    m = Machine(nframes=32)
    mm = m.mm(1)
    m.map(mm, 0x20_0000, 0x200, RWU, level=1)
    m.arch.switch_mm(0, mm)
    m.arch.translate(0, 0x20_0000, L)
    assert m.arch.inval(0, InvalKind.VA_ASID, 0x3F_F000, 1) == 1
    assert m.arch.tlb_entries(0) == []


def test_flushes_reach_only_cores_in_cpu_vm_mask():
    m = Machine()
    a, b = m.mm(1), m.mm(2)
    m.map(a, 0x1000, 0x50)
    m.map(b, 0x1000, 0x51)
    m.arch.switch_mm(0, a)
    m.arch.switch_mm(1, b)
    m.arch.translate(0, 0x1000, L)
    m.arch.translate(1, 0x1000, L)
    m.arch.flush_tlb_page(vma_of(a), 0x1000)
    assert m.arch.tlb_entries(0) == [] and len(m.arch.tlb_entries(1)) == 1
    assert m.arch.perf(1)["invals"] == 0
    m.arch.translate(0, 0x1000, L)
    m.arch.flush_tlb_mm(b)
    assert len(m.arch.tlb_entries(0)) == 1 and m.arch.tlb_entries(1) == []
    m.arch.translate(1, 0x1000, L)
    m.arch.flush_tlb_all()
    assert m.arch.tlb_entries(0) == [] and m.arch.tlb_entries(1) == []
    st = m.arch.stats
    assert (st["flush_tlb_page"], st["flush_tlb_mm"], st["flush_tlb_all"]) == (1, 1, 1)
    assert st["inval_requests"] == 1 + 1 + 2
    assert st["entries_invalidated"] == 1 + 1 + 2


def test_flush_tlb_range_small_and_large():
    m = Machine()
    mm = m.mm(1)
    for i in range(4):
        m.map(mm, 0x10_0000 + i * 0x1000, 0x50 + i)
    m.arch.switch_mm(0, mm)
    for i in range(4):
        m.arch.translate(0, 0x10_0000 + i * 0x1000, L)
    m.arch.flush_tlb_range(vma_of(mm), 0x10_1000, 0x10_3000)      # pages 1 and 2
    assert sorted(e.vpn for e in m.arch.tlb_entries(0)) == [0x100, 0x103]
    assert m.arch.stats["inval_requests"] == 2
    m.arch.flush_tlb_range(vma_of(mm), 0, 1 << 30)               # large: one ASID request
    assert m.arch.tlb_entries(0) == []
    assert m.arch.stats["inval_requests"] == 3


# --- replacement and organisation ----------------------------------------------------------------

def _fill_pages(m, mm, pages, core=0):
    for pg in pages:
        m.map(mm, pg << 12, 0x40 + pg)
    m.arch.switch_mm(core, mm)
    for pg in pages:
        assert m.arch.translate(core, pg << 12, L).fault == FaultKind.NONE


def test_plru_keeps_the_recently_used_entry():
    m = Machine(tlb_entries=8, tlb_ways=8, replacement="plru")
    mm = m.mm(1)
    _fill_pages(m, mm, range(1, 9))
    assert m.arch.translate(0, 1 << 12, L).hit          # touch page 1
    _fill_pages(m, mm, [9])
    vpns = {e.vpn for e in m.arch.tlb_entries(0)}
    assert len(vpns) == 8 and 1 in vpns and 9 in vpns


def test_fifo_evicts_the_oldest_fill_even_if_used():
    m = Machine(tlb_entries=8, tlb_ways=8, replacement="fifo")
    mm = m.mm(1)
    _fill_pages(m, mm, range(1, 9))
    assert m.arch.translate(0, 1 << 12, L).hit
    _fill_pages(m, mm, [9])
    vpns = {e.vpn for e in m.arch.tlb_entries(0)}
    assert len(vpns) == 8 and 1 not in vpns and 9 in vpns


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_replacement_is_seeded(seed):
    def run(s):
        m = Machine(tlb_entries=4, tlb_ways=4, replacement="random", seed=s)
        _fill_pages(m, m.mm(1), range(1, 13))
        return sorted(e.vpn for e in m.arch.tlb_entries(0))
    first = run(seed)
    assert len(first) == 4 and 12 in first, f"seed {seed}"
    assert run(seed) == first, f"seed {seed}"


def test_set_associative_conflicts_and_superpage_array():
    m = Machine(nframes=64, tlb_entries=8, tlb_ways=2)          # 4 sets of 2 ways
    mm = m.mm(1)
    _fill_pages(m, mm, [4, 8, 12])                             # all in set 0
    assert sorted(e.vpn for e in m.arch.tlb_entries(0)) == [8, 12]   # PLRU: 4 was oldest
    _fill_pages(m, mm, [5, 6])                                 # other sets are unaffected
    assert len(m.arch.tlb_entries(0)) == 4
    m.map(mm, 0x4000_0000, 0x40000, RWU, level=2)
    m.arch.translate(0, 0x4000_0000, L)
    assert len(m.arch.tlb_entries(0)) == 5                     # superpage in its own array


def test_direct_mapped():
    m = Machine(tlb_entries=4, tlb_ways=1)
    mm = m.mm(1)
    _fill_pages(m, mm, [1, 5])                                 # same set
    assert [e.vpn for e in m.arch.tlb_entries(0)] == [5]


# --- PTE atomics and history -------------------------------------------------------------------

def test_pte_atomics_and_history():
    m = Machine(history=True)
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(1, mm)
    m.arch.cpu_access(1, 0x1000, L)
    val = m.arch.pte_load(p)
    assert m.arch.cmpxchg(p, val ^ 1, 0) == val            # fails, nothing written
    assert m.arch.pte_load(p) == val
    assert m.arch.cmpxchg(p, val, val | _PAGE_D) == val
    assert m.arch.ptep_get_and_clear(mm, 0x1000, p) == val | _PAGE_D
    m.arch.set_pte_at(mm, 0x1000, p, pfn_pte(0x51, RWU))
    whos = [w.who for w in m.arch.pte_history(p)]
    assert whos == ["hw-cas core1", "sw cmpxchg thread main", "sw xchg thread main",
                    "sw set_pte_at thread main"]
    assert m.arch.pte_history(p)[-1].value == pfn_pte(0x51, RWU)


def test_history_is_bounded_and_off_by_default():
    m = Machine(history=True, history_depth=2)
    mm = m.mm(1)
    p = m.ptep(mm, 0x1000)
    for v in (1, 2, 3):
        m.arch.set_pte_at(mm, 0x1000, p, v << 10)
    assert [w.value for w in m.arch.pte_history(p)] == [2 << 10, 3 << 10]
    assert Machine().arch.pte_history(p) == []


def test_observer_sees_fills_invals_accesses_and_pte_writes():
    m = Machine()
    events = []
    m.arch.observer = lambda ev, **d: events.append((ev, d))
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(0, mm)
    m.arch.cpu_access(0, 0x1000, S, data=1)
    m.arch.flush_tlb_page(vma_of(mm), 0x1000)
    names = [e for e, _ in events]
    assert names == ["pte_write", "tlb_fill", "walk_read", "walk_read", "walk_read",
                     "cpu_access", "tlb_inval", "tlb_flush"]
    assert events[4][1] == {"core": 0, "ptep": p}       # the walk read the leaf last
    assert events[0][1]["who"] == "hw-cas core0" and events[0][1]["ptep"] == p
    assert events[6][1]["removed"] == 1


# --- device TLB --------------------------------------------------------------------------------

def test_device_miss_fill_hit_young():
    m = Machine()
    a = m.arch
    assert a.dev_access(0x5000, L, 3) == (FaultKind.MISS, 0)
    assert a.dev.fault == (0x5000, 3, L)
    assert a.dev_access(0x6000, L, 3) == (FaultKind.MISS, 0)
    assert a.dev.ack_fault() == (0x5000, 3, L)          # one record pending at a time
    assert a.dev.fault is None
    a.dev_fill(0x5000, 3, 0x77, 0, _PAGE_R | _PAGE_U, False)
    assert a.dev_young(0x5000, 3) is False               # a fill is not an access
    assert a.dev_access(0x5008, L, 3) == (FaultKind.NONE, 0x77008)
    assert a.dev_access(0x5008, S, 3) == (FaultKind.PAGE, 0)   # a store needs W
    assert a.dev_access(0x5008, L, 4) == (FaultKind.MISS, 0)   # other ASID
    [e] = a.dev_entries()
    assert e.a and not e.d
    assert a.dev_young(0x5000, 3) is True
    assert a.dev_young(0x5000, 3) is False
    assert a.dev.perf["young_clears"] == 1
    assert a.dev.perf["fills"] == 1 and a.dev.perf["misses"] == 3 and a.dev.perf["hits"] == 2


def test_device_fill_replaces_and_inval_kinds():
    a = Machine().arch
    a.dev_fill(0x5000, 3, 0x77, 0, _PAGE_R, False)
    a.dev_fill(0x5000, 3, 0x78, 0, _PAGE_R | _PAGE_W, False)
    assert [e.ppn for e in a.dev_entries()] == [0x78]
    assert a.dev_access(0x5000, S, 3) == (FaultKind.NONE, 0x78000)
    a.dev_fill(0x20_0000, 3, 0x200, 1, _PAGE_R, False)
    a.dev_fill(0x9000, 0, 0x79, 0, _PAGE_R, True)
    assert a.dev_access(0x9000, L, 7)[0] == FaultKind.NONE      # global
    assert a.dev_inval(InvalKind.ASID, 0, 3) == 2
    assert [e.g for e in a.dev_entries()] == [True]
    assert a.dev_inval(InvalKind.VA_ASID, 0x9000, 5) == 1
    assert a.dev_entries() == []
    assert a.dev_access(1 << 45, L, 3) == (FaultKind.PAGE, 0)   # non-canonical


@pytest.mark.parametrize("args,msg", [
    ((0x1000, 1, 0x201, 1, _PAGE_R, False), r"^PPN 0x201 is not aligned to a level-1 page$"),
    ((0x1000, 1, 0x20, 3, _PAGE_R, False), r"^Level must be 0, 1 or 2, not 3$"),
    ((0x1000, 1, 0x20, 0, _PAGE_V | _PAGE_R, False),
     r"^Device permissions 0x3 have bits outside R W X U \(PTE bits 1\.\.4\)$"),
])
def test_device_fill_errors(args, msg):
    with pytest.raises(ValueError, match=msg):
        Machine().arch.dev_fill(*args)


# --- environment without a scheduler ---------------------------------------------------------

def test_current_task_defaults_and_is_settable():
    a = Machine().arch
    t = a.current_task()
    assert (t.name, t.mm, t.signal_pending) == ("main", None, False)
    assert a.current_thread() == "main" and not a.signal_pending()
    t.signal_pending = True
    t.mm = "mm"
    assert a.signal_pending() and a.current_task().mm == "mm"


def test_locks_check_misuse_without_scheduler():
    a = Machine().arch
    lk = a.new_lock("page_table_lock")
    with pytest.raises(LockError, match=r"releases 'page_table_lock', which is not locked"):
        lk.release()
    lk.acquire()
    assert lk.is_locked() and lk.held_by_me() and not lk.trylock()
    with pytest.raises(Deadlock, match=r"which it already holds"):
        lk.acquire()
    lk.release()
    sem = a.new_rwsem("mmap_sem")
    with pytest.raises(LockError, match=r"up_read"):
        sem.up_read()
    sem.down_read()
    assert sem.is_locked() and not sem.is_write_locked() and sem.held_by_me()
    sem.up_read()
    sem.down_write()
    assert sem.is_write_locked() and not sem.down_read_trylock()
    sem.up_write()
    with pytest.raises(LockError, match=r"up_write"):
        sem.up_write()
    with pytest.raises(TypeError, match=r"^Lock class name must be a non-empty string"):
        a.new_lock("")


def test_yield_point_is_a_noop_without_scheduler():
    a = Machine().arch
    a.yield_point("anything")
    assert a.sched is None


def test_random_cpu_accesses_match_a_fresh_walk():
    """Property: with no PTE changes, every access (hit or walk) gives the walk's answer."""
    seed = 1234
    rng = random.Random(seed)
    m = Machine(nframes=128, tlb_entries=4, tlb_ways=2)
    mm = m.mm(1)
    flags = [RWU, _PAGE_V | _PAGE_R | _PAGE_U, _PAGE_V | _PAGE_R | _PAGE_X | _PAGE_U,
             _PAGE_V | _PAGE_R | _PAGE_W]
    pages = {pg: (0x60 + pg, rng.choice(flags)) for pg in range(1, 17)}
    for pg, (pfn, fl) in pages.items():
        m.map(mm, pg << 12, pfn, fl)
    m.arch.switch_mm(0, mm)
    for _ in range(300):
        pg = rng.randrange(1, 18)
        op = rng.choice([L, S, F])
        user = rng.random() < 0.8
        r = m.arch.translate(0, (pg << 12) + 8 * rng.randrange(512), op, user=user)
        if pg not in pages:
            assert r.fault == FaultKind.PAGE, f"seed {seed}"
            continue
        pfn, fl = pages[pg]
        ok = bool(fl & {L: _PAGE_R, S: _PAGE_W, F: _PAGE_X}[op]) and bool(fl & _PAGE_U) == user
        assert (r.fault == FaultKind.NONE) == ok, f"seed {seed} page {pg} op {op} user {user}"
        if ok:
            assert r.paddr >> 12 == pfn, f"seed {seed}"


# --- atomicity against engine threads -------------------------------------------------------

def test_walker_cas_and_xchg_never_lose_d_under_any_interleaving():
    """A store racing ptep_get_and_clear: either the store faults (the clear came first) or
    the value the clear returned carries D.  Checked over many scheduler seeds."""
    from pyrmap.sched import Scheduler
    outcomes = set()
    for seed in range(40):
        sched = Scheduler(seed)
        m = Machine(sched=sched, history=True)
        mm = m.mm(1)
        p = m.map(mm, 0x1000, 0x50, RWU | _PAGE_A)         # clean: the store must CAS D in
        m.arch.switch_mm(0, mm)
        res = {}

        def cpu():
            for _ in range(3):
                m.arch.yield_point("think")
            res["store"] = m.arch.cpu_access(0, 0x1000, S, data=9)

        def reclaim():
            for _ in range(3):
                m.arch.yield_point("think")
            res["old"] = m.arch.ptep_get_and_clear(mm, 0x1000, p)
            m.arch.flush_tlb_page(vma_of(mm), 0x1000)
        sched.spawn("cpu0", cpu)
        sched.spawn("reclaim", reclaim)
        sched.run()
        stored = res["store"].fault == FaultKind.NONE
        assert not stored or res["old"] & _PAGE_D, f"seed {seed}: lost D"
        assert m.mem.read(p) == 0, f"seed {seed}: PTE resurrected"
        whos = [w.who for w in m.arch.pte_history(p)]
        assert whos[-1] == "sw xchg thread reclaim", f"seed {seed}"
        if stored:
            assert whos == ["hw-cas core0", "sw xchg thread reclaim"], f"seed {seed}"
        outcomes.add(stored)
    assert outcomes == {True, False}         # both orders were explored


def test_describe_history_for_violation_messages():
    m = Machine(history=True)
    mm = m.mm(1)
    p = m.map(mm, 0x1000, 0x50)
    m.arch.switch_mm(0, mm)
    m.arch.cpu_access(0, 0x1000, S, data=1)
    m.arch.ptep_get_and_clear(mm, 0x1000, p)
    text = m.arch.describe_history(p)
    assert text.splitlines()[0] == f"writes to PTE 0x{p:09x}, oldest first:"
    assert "VRW-U-AD ppn=0x50" in text and "by hw-cas core0" in text
    assert text.splitlines()[-1].strip().startswith("none") and "sw xchg thread main" in text
    assert "history=True" in Machine().arch.describe_history(p)


def test_upper_half_vaddr_hits_and_is_invalidated():
    m = Machine()
    mm = m.mm(1)
    va = 0xFFFF_FFFF_FFFF_E000
    m.map(mm, va, 0x50, RWU | _PAGE_A)
    m.arch.switch_mm(0, mm)
    assert not m.arch.translate(0, va, L).hit
    r = m.arch.translate(0, va + 8, L)
    assert r.hit and r.paddr == 0x50008
    assert m.arch.inval(0, InvalKind.VA_ASID, va, 1) == 1
