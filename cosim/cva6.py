"""Reading CVA6's TLBs for the checkers (``mmu="cva6"``, see :mod:`hdl.cva6`).

Core ``i``'s ITLB and DTLB are ``core{i}.mmu.i_mmu.i_itlb`` / ``i_dtlb`` in the simulated
``top``; each keeps its entries in two packed arrays, ``tags_q`` (per entry, from the most
significant bit: ``asid``, ``vpn2`` (9 bits), ``vpn1``, ``vpn0``, ``is_2M``, ``is_1G``,
``valid``) and ``content_q`` (per entry, the 64-bit PTE the walker read, with G set when any
level of the walk had it).  Entry ``k`` is slice ``k`` of each array.  The device TLB is ours
(``dev.tlb``), read as :class:`cosim.arch.TlbReader` reads it.
"""

from __future__ import annotations

from pyrmap.arch import TlbEntry

from .arch import TlbReader

__all__ = ["Cva6TlbReader", "decode_entry", "PTW_STATES", "ptw_state"]

#: The states of CVA6's page-table walker, in the order of ``state_q``'s enum in
#: ``core/mmu_sv39/ptw.sv`` of the pinned wheel (tests/test_cva6.py reads them from it).
PTW_STATES = ("IDLE", "WAIT_GRANT", "PTE_LOOKUP", "WAIT_RVALID", "PROPAGATE_ERROR",
              "PROPAGATE_ACCESS_ERROR")


def ptw_state(dut, core: int):
    """The simulator handle of core ``core``'s walker state (an index of
    :data:`PTW_STATES`)."""
    return getattr(dut, f"core{core}").mmu.i_mmu.i_ptw.state_q

_TAG_LOW_BITS = 3 + 3 * 9          # valid, is_1G, is_2M, vpn0, vpn1, vpn2


def decode_entry(tag: int, pte: int, asid_bits: int) -> TlbEntry | None:
    """One CVA6 TLB entry as a :class:`pyrmap.arch.TlbEntry` (None when not valid)."""
    if not tag & 1:
        return None
    is_1g, is_2m = (tag >> 1) & 1, (tag >> 2) & 1
    vpn0, vpn1, vpn2 = (tag >> 3) & 511, (tag >> 12) & 511, (tag >> 21) & 511
    asid = (tag >> _TAG_LOW_BITS) & ((1 << max(asid_bits, 1)) - 1)
    level = 2 if is_1g else 1 if is_2m else 0
    vpn = (vpn2 << 18) | (vpn1 << 9) | vpn0
    vpn &= ~((1 << (9 * level)) - 1)
    return TlbEntry(vpn=vpn, asid=asid if asid_bits else 0,
                    ppn=(pte >> 10) & ((1 << 44) - 1), level=level, perm=pte & 0x1E,
                    g=bool(pte & 0x20), a=bool(pte & 0x40), d=bool(pte & 0x80))


class Cva6TlbReader(TlbReader):
    """:class:`cosim.arch.TlbReader` for a ``Top`` whose cores are CVA6's MMUs: a core's
    entries are those of its DTLB and its ITLB."""

    def __init__(self, dut, ncores: int, asid_bits: int, entries: int, sp_entries: int,
                 dev_entries: int):
        super().__init__(dut, ncores, asid_bits, entries, 0, dev_entries)
        self.entries = entries
        self.tag_bits = _TAG_LOW_BITS + max(asid_bits, 1)
        self.core_handles = [[self._arrays(dut, i, "i_dtlb"), self._arrays(dut, i, "i_itlb")]
                             for i in range(ncores)]
        self.available = ncores > 0

    @staticmethod
    def _arrays(dut, core: int, tlb: str):
        mmu = getattr(dut, f"core{core}").mmu.i_mmu
        t = getattr(mmu, tlb)
        return t.tags_q, t.content_q

    def core(self, i: int) -> list[TlbEntry]:
        out = []
        mask = (1 << self.tag_bits) - 1
        for tags_h, content_h in self.core_handles[i]:
            tags, content = self._word(tags_h.value), self._word(content_h.value)
            for k in range(self.entries):
                e = decode_entry((tags >> (k * self.tag_bits)) & mask,
                                 (content >> (64 * k)) & ((1 << 64) - 1), self.asid_bits)
                if e is not None:
                    out.append(e)
        return out
