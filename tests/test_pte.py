"""The Sv39 PTE format and its software encodings."""

import pytest
from hypothesis import given, strategies as st

from pyrmap import pte as P


def test_present_fields_round_trip():
    v = P.pfn_pte(0x12345, P.PAGE_SHARED | P._PAGE_A)
    assert P.pte_present(v) and P.pte_leaf(v)
    assert P.pte_pfn(v) == 0x12345
    assert P.pte_write(v) and P.pte_young(v) and not P.pte_dirty(v)
    assert P.pte_dirty(P.pte_mkdirty(v)) and not P.pte_write(P.pte_wrprotect(v))
    assert not P.pte_young(P.pte_mkold(v))


def test_table_entry_is_not_a_leaf():
    t = P.pte_table(7)
    assert P.pte_present(t) and not P.pte_leaf(t) and P.pte_pfn(t) == 7


@given(st.integers(0, P.SWP_MIGRATION_WRITE), st.integers(0, (1 << P.SWP_OFFSET_BITS) - 1),
       st.booleans(), st.booleans())
def test_swap_entry_ignores_stray_ad(type_, offset, a, d):
    v = P.swp_entry_to_pte(P.swp_entry(type_, offset))
    assert not P.pte_present(v) and P.pte_is_swap(v) and not P.pte_none(v)
    stray = v | (P._PAGE_A if a else 0) | (P._PAGE_D if d else 0)
    assert P.pte_to_swp_entry(stray) == P.SwpEntry(type_, offset)


@given(st.integers(0, (1 << P.PGOFF_BITS) - 1))
def test_file_pte_round_trip(pgoff):
    v = P.pgoff_to_pte(pgoff)
    assert P.pte_file(v) and not P.pte_is_swap(v) and P.pte_to_pgoff(v) == pgoff


def test_migration_entry():
    e = P.make_migration_entry(0x42, write=True)
    assert P.is_migration_entry(e) and P.is_write_migration_entry(e)
    assert P.migration_entry_to_pfn(e) == 0x42
    assert not P.is_write_migration_entry(P.make_migration_entry(0x42, write=False))
    with pytest.raises(P.PteError, match="not a migration entry"):
        P.migration_entry_to_pfn(P.swp_entry(3, 9))


def test_none_ignores_ad():
    assert P.pte_none(0) and P.pte_none(P._PAGE_A | P._PAGE_D)
    assert not P.pte_none(P._PAGE_SWP)


def test_bad_values_are_rejected_with_clear_errors():
    with pytest.raises(P.PteError, match="PFN 0x100000000000 does not fit in 44 bits"):
        P.pfn_pte(1 << 44, P.PAGE_SHARED)
    with pytest.raises(P.PteError, match="outside V R W X U G A D"):
        P.pfn_pte(1, 0x100)
    with pytest.raises(P.PteError, match="is not a swap entry"):
        P.pte_to_swp_entry(P.pfn_pte(1, P.PAGE_SHARED))
    with pytest.raises(P.PteError, match="does not fit in 64 bits"):
        P.pte_to_swp_entry(1 << 64)
    with pytest.raises(TypeError):
        P.pte_to_swp_entry("0x1")


def test_canonical():
    assert P.va_canonical(0x3F_FFFF_FFFF)
    assert not P.va_canonical(0x40_0000_0000)
    assert P.va_canonical(0xFFFF_FFC0_0000_0000)


def test_describe():
    assert P.describe(0) == "none"
    assert "swap" in P.describe(P.swp_entry_to_pte(P.swp_entry(1, 2)))
    assert P.describe(P.pfn_pte(5, P.PAGE_SHARED)).startswith("VRW-U")
