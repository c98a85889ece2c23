"""pyrmap.walk.sv39_walk against hand-built Sv39 page tables: every fault rule, every page size,
the A/D update and the compare-and-swap restart."""

import pytest

from pyrmap.physmem import BusError, PhysMem
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_G, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X,
                        AccessType, FaultKind, pfn_pte, pte_table)
from pyrmap.walk import MAX_CAS_RETRIES, FaultCause, check_perm, sv39_walk

L, S, F = AccessType.LOAD, AccessType.STORE, AccessType.FETCH
RW = _PAGE_V | _PAGE_R | _PAGE_W
RWU = RW | _PAGE_U


class Tables:
    """Sv39 tables in a PhysMem, built by hand (no pyrmap.pagetable)."""

    def __init__(self, nframes=64):
        self.mem = PhysMem(nframes)
        self.next = 1
        self.root = self.alloc()
        self.cas_log = []

    def alloc(self):
        pfn = self.next
        self.next += 1
        return pfn

    def slot(self, table, va, level):
        return (table << 12) + ((va >> (12 + 9 * level)) & 511) * 8

    def table_for(self, va, level):
        """Physical address of the PTE for va at ``level``, allocating upper tables."""
        table = self.root
        for lv in range(2, level, -1):
            slot = self.slot(table, va, lv)
            pte = self.mem.read(slot)
            if not pte & _PAGE_V:
                new = self.alloc()
                self.mem.write(slot, pte_table(new))
                pte = pte_table(new)
            table = pte >> 10
        return self.slot(table, va, level)

    def map(self, va, pfn, flags, level=0):
        ptep = self.table_for(va, level)
        self.mem.write(ptep, pfn_pte(pfn, flags) if flags & 0xFF == flags else
                       (pfn << 10) | flags)
        return ptep

    def read(self, paddr):
        return self.mem.read(paddr)

    def cas(self, paddr, old, new):
        found = self.mem.read(paddr)
        self.cas_log.append((paddr, old, new, found))
        if found == old:
            self.mem.write(paddr, new)
        return found

    def walk(self, va, op=L, *, user=True, sum=False, svadu=True, read=None, cas=None,
             mxr=False):
        return sv39_walk(read or self.read, cas or self.cas, va, op, user=user, sum=sum,
                         root=self.root, svadu=svadu, mxr=mxr)


# --- success on each page size ------------------------------------------------------------------

@pytest.mark.parametrize("level,va,pfn", [
    (0, 0x0000_1234_5678, 0x30),
    (1, 0x0000_4020_1ABC, 0x200),          # 2 MiB: PPN[0] zero
    (2, 0x0000_4123_4567, 0x40000),         # 1 GiB: PPN[1], PPN[0] zero
])
def test_translates_each_page_size(level, va, pfn):
    t = Tables()
    ptep = t.map(va, pfn, RWU | _PAGE_A, level=level)
    r = t.walk(va, L)
    assert r.fault == FaultKind.NONE and r.cause == FaultCause.NONE
    assert r.level == level
    size = 1 << (12 + 9 * level)
    assert r.paddr == (pfn << 12) + (va & (size - 1))
    assert len(r.reads) == 3 - level
    assert r.reads[-1] == (ptep, t.mem.read(ptep))
    assert r.pte_addr == ptep
    assert r.cas == []                       # A already set, a load needs nothing more


def test_load_sets_a_store_sets_a_and_d():
    t = Tables()
    ptep = t.map(0x5000, 0x30, RWU)
    r = t.walk(0x5008, L)
    assert r.ok and r.a_set and not r.d_set
    assert t.mem.read(ptep) == pfn_pte(0x30, RWU | _PAGE_A)
    assert r.pte == t.mem.read(ptep)
    r = t.walk(0x5008, S)
    assert r.ok and r.d_set and not r.a_set
    assert t.mem.read(ptep) == pfn_pte(0x30, RWU | _PAGE_A | _PAGE_D)
    assert r.cas == [(ptep, pfn_pte(0x30, RWU | _PAGE_A), pfn_pte(0x30, RWU | _PAGE_A | _PAGE_D),
                      pfn_pte(0x30, RWU | _PAGE_A))]


def test_fetch_sets_a_not_d():
    t = Tables()
    ptep = t.map(0x5000, 0x30, _PAGE_V | _PAGE_R | _PAGE_X | _PAGE_U)
    r = t.walk(0x5000, F)
    assert r.ok
    assert t.mem.read(ptep) & (_PAGE_A | _PAGE_D) == _PAGE_A


# --- fault rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("va", [1 << 38, 0x8000_0000_0000_0000, (1 << 63) | 0x1000])
def test_non_canonical_is_page_fault_without_reads(va):
    t = Tables()
    r = t.walk(va, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.NON_CANONICAL
    assert r.reads == []


def test_canonical_upper_half_is_walked():
    t = Tables()
    va = (0xFFFF_FFFF_FFFF_F000)            # top of the upper half, canonical
    t.map(va, 0x31, RWU | _PAGE_A)
    r = t.walk(va, L)
    assert r.ok and r.paddr == 0x31 << 12


def test_bus_error_on_pte_read_is_access_fault():
    t = Tables()
    t.root = 10_000                          # beyond the 64 frames
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.ACCESS and r.cause == FaultCause.PTE_BUS_ERROR
    assert r.level == 2


def test_bus_error_at_a_lower_level():
    t = Tables()
    t.mem.write(t.slot(t.root, 0x1000, 2), pte_table(t.alloc()))
    t.mem.write(t.slot(t.next - 1, 0x1000, 1), pte_table(5000))   # level-0 table out of memory
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.ACCESS and r.level == 0 and len(r.reads) == 2


@pytest.mark.parametrize("level", [2, 1, 0])
def test_invalid_pte_at_each_level(level):
    t = Tables()
    if level < 2:
        t.table_for(0x1000, level)           # upper levels exist, this slot is empty
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.INVALID and r.level == level


@pytest.mark.parametrize("level", [0, 1])
def test_w_without_r_is_page_fault(level):
    t = Tables()
    t.map(0x0, 0x200, _PAGE_V | _PAGE_W | _PAGE_A | _PAGE_U, level=level)
    r = t.walk(0x0, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.W_WITHOUT_R


@pytest.mark.parametrize("bit", [54, 60, 63])
def test_reserved_bits_in_leaf(bit):
    t = Tables()
    t.map(0x1000, 0x30, RWU | _PAGE_A | (1 << bit))
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.RESERVED


def test_reserved_bits_in_non_leaf():
    t = Tables()
    t.map(0x1000, 0x30, RWU | _PAGE_A)
    slot = t.slot(t.root, 0x1000, 2)
    t.mem.write(slot, t.mem.read(slot) | (1 << 55))
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.RESERVED and r.level == 2


@pytest.mark.parametrize("bit", [_PAGE_A, _PAGE_D, _PAGE_U])
def test_non_leaf_with_a_d_u(bit):
    t = Tables()
    t.map(0x1000, 0x30, RWU | _PAGE_A)
    slot = t.slot(t.root, 0x1000, 2)
    t.mem.write(slot, t.mem.read(slot) | bit)
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.NONLEAF_ADU


def test_non_leaf_at_level_0():
    t = Tables()
    t.map(0x1000, 0x30, _PAGE_V)             # a pointer where a leaf must be
    r = t.walk(0x1000, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.NONLEAF_LEVEL0 and r.level == 0


@pytest.mark.parametrize("level,pfn", [(1, 0x201), (1, 0x3FF), (2, 0x40200), (2, 0x40001)])
def test_misaligned_superpage(level, pfn):
    t = Tables()
    t.map(0x0, pfn, RWU | _PAGE_A, level=level)
    r = t.walk(0x0, L)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.MISALIGNED and r.level == level


# Permission rule, case by case: (perm, op, user, sum, allowed)
PERM_CASES = [
    (_PAGE_R | _PAGE_U, L, True, False, True),
    (_PAGE_R | _PAGE_U, S, True, False, False),       # store needs W
    (_PAGE_R | _PAGE_U, F, True, False, False),       # fetch needs X
    (_PAGE_X | _PAGE_U, F, True, False, True),
    (_PAGE_X | _PAGE_U, L, True, False, False),       # no MXR: X does not grant loads
    (_PAGE_R | _PAGE_W | _PAGE_U, S, True, False, True),
    (_PAGE_R | _PAGE_W, L, True, False, False),       # U-mode needs U
    (_PAGE_R | _PAGE_W, L, False, False, True),       # S-mode on an S page
    (_PAGE_R | _PAGE_W | _PAGE_U, L, False, False, False),  # S on U page without SUM
    (_PAGE_R | _PAGE_W | _PAGE_U, L, False, True, True),    # ... with SUM
    (_PAGE_R | _PAGE_W | _PAGE_U, S, False, True, True),
    (_PAGE_R | _PAGE_X | _PAGE_U, F, False, True, False),   # S never fetches from U pages
    (_PAGE_R | _PAGE_X, F, False, False, True),
]


# MXR: (perm, op, user, sum, allowed with mstatus.MXR set)
MXR_CASES = [
    (_PAGE_X | _PAGE_U, L, True, False, True),        # an execute-only page is loadable
    (_PAGE_X | _PAGE_U, S, True, False, False),       # ... not writable
    (_PAGE_R | _PAGE_U, F, True, False, False),       # MXR never grants a fetch
    (_PAGE_X, L, True, False, False),                 # U still rules
    (_PAGE_X | _PAGE_U, L, False, False, False),      # S on a U page still needs SUM
    (_PAGE_X | _PAGE_U, L, False, True, True),
]


@pytest.mark.parametrize("perm,op,user,sum,allowed", MXR_CASES)
def test_mxr_permission_rule(perm, op, user, sum, allowed):
    assert check_perm(perm, op, user=user, sum=sum, mxr=True) == allowed
    t = Tables()
    t.map(0x7000, 0x30, _PAGE_V | perm)
    r = t.walk(0x7000, op, user=user, sum=sum, mxr=True)
    assert r.ok == allowed
    if not allowed:
        assert r.cause == FaultCause.PERMISSION


def test_w_and_x_without_r_leaf_is_w_without_r():
    t = Tables()
    t.map(0x0, 0x200, _PAGE_V | _PAGE_W | _PAGE_X | _PAGE_U | _PAGE_A | _PAGE_D)
    for op in (L, S, F):
        r = t.walk(0x0, op)
        assert r.fault == FaultKind.PAGE and r.cause == FaultCause.W_WITHOUT_R


@pytest.mark.parametrize("perm,op,user,sum,allowed", PERM_CASES)
def test_permission_rule(perm, op, user, sum, allowed):
    assert check_perm(perm, op, user=user, sum=sum) == allowed
    t = Tables()
    ptep = t.map(0x7000, 0x30, _PAGE_V | perm)
    r = t.walk(0x7000, op, user=user, sum=sum)
    if allowed:
        assert r.ok
    else:
        assert r.fault == FaultKind.PAGE and r.cause == FaultCause.PERMISSION
        assert t.mem.read(ptep) == pfn_pte(0x30, _PAGE_V | perm)   # a faulting access sets nothing
        assert r.cas == []


def test_faulting_store_leaves_d_clear():
    t = Tables()
    ptep = t.map(0x7000, 0x30, _PAGE_V | _PAGE_R | _PAGE_U | _PAGE_A)
    r = t.walk(0x7000, S)
    assert r.fault == FaultKind.PAGE
    assert not t.mem.read(ptep) & _PAGE_D


# --- Svade ----------------------------------------------------------------------------------------

def test_svade_faults_on_a_clear_and_on_store_to_clean():
    t = Tables()
    ptep = t.map(0x1000, 0x30, RWU)
    r = t.walk(0x1000, L, svadu=False)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.SVADE_AD
    t.mem.write(ptep, pfn_pte(0x30, RWU | _PAGE_A))
    assert t.walk(0x1000, L, svadu=False).ok
    r = t.walk(0x1000, S, svadu=False)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.SVADE_AD
    assert t.cas_log == []                   # Svade never writes
    t.mem.write(ptep, pfn_pte(0x30, RWU | _PAGE_A | _PAGE_D))
    assert t.walk(0x1000, S, svadu=False).ok


# --- the compare-and-swap ----------------------------------------------------------------------

def test_cas_failing_once_restarts_from_the_root():
    t = Tables()
    ptep = t.map(0x1000, 0x30, RWU)
    calls = []

    def cas_fails_once(paddr, old, new):
        calls.append((paddr, old, new))
        if len(calls) == 1:
            return old ^ _PAGE_G             # report a value that changed under us, write nothing
        return t.cas(paddr, old, new)

    r = t.walk(0x1000, S, cas=cas_fails_once)
    assert r.ok and r.cas_retries == 1
    assert len(calls) == 2
    assert len(r.reads) == 6                 # the walk restarted at level 2
    assert [a for a, _ in r.reads[:3]] == [a for a, _ in r.reads[3:]]
    assert t.mem.read(ptep) == pfn_pte(0x30, RWU | _PAGE_A | _PAGE_D)
    assert r.cas[0][3] != r.cas[0][1] and r.cas[1][3] == r.cas[1][1]


def test_cas_race_with_unmap_never_resurrects_the_pte():
    t = Tables()
    ptep = t.map(0x1000, 0x30, RWU)

    def cas_racing_unmap(paddr, old, new):
        t.mem.write(paddr, 0)                # software's ptep_get_and_clear wins the race
        return t.cas(paddr, old, new)

    r = t.walk(0x1000, S, cas=cas_racing_unmap)
    assert r.fault == FaultKind.PAGE and r.cause == FaultCause.INVALID
    assert r.cas_retries == 1
    assert t.mem.read(ptep) == 0


def test_cas_bus_error_is_access_fault():
    t = Tables()
    t.map(0x1000, 0x30, RWU)

    def cas_bus_error(paddr, old, new):
        raise BusError(paddr)

    r = t.walk(0x1000, L, cas=cas_bus_error)
    assert r.fault == FaultKind.ACCESS and r.cause == FaultCause.CAS_BUS_ERROR
    assert r.cas[-1][3] == -1


def test_endless_cas_failure_is_reported():
    t = Tables()
    t.map(0x1000, 0x30, RWU)
    with pytest.raises(RuntimeError, match=rf"lost {MAX_CAS_RETRIES} compare-and-swaps"):
        t.walk(0x1000, L, cas=lambda p, o, n: o ^ 1 << 8)


def test_bad_access_type_raises():
    with pytest.raises(ValueError):
        check_perm(_PAGE_R, 7, user=True, sum=False)
