"""Data layouts shared by the gateware and the testbenches.

Every layout here is built from :mod:`pyrmap.pte`, which defines the Sv39 PTE once.  The cocotb
side packs and unpacks port vectors and internal TLB entry registers with the helpers at the end
of this module (:func:`pack_tlb_entry`, :func:`unpack_tlb_entry`), so hardware and testbench share
one definition.

Layouts
-------
``PTE_LAYOUT``
    The 64-bit Sv39 PTE: ``v r w x u g a d rsw ppn reserved`` at the bit positions of pyrmap.pte.
``tlb_entry_layout(asid_bits)``
    One TLB entry: ``valid vpn asid ppn level r w x u g a d young``.  ``vpn`` is the full 27-bit
    VPN of the virtual address the entry was filled for, aligned down to the page size of
    ``level`` (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB); ``young`` is only used by the DeviceMmu.
``MemOp``
    The memory port's request kinds (READ, WRITE, CAS).
"""

from __future__ import annotations

import enum
import functools

from amaranth.hdl import unsigned
from amaranth.lib import data

from pyrmap import pte as _pte
from pyrmap.arch import InvalKind, TlbEntry
from pyrmap.pte import AccessType, FaultKind
from .config import check_asid_bits

__all__ = [
    "PTE_LAYOUT", "PTE_BITS", "tlb_entry_layout", "MemOp", "AccessType", "FaultKind", "InvalKind",
    "VA_WIDTH", "PA_WIDTH", "PPN_WIDTH", "VPN_WIDTH", "PERM_R", "PERM_W", "PERM_X", "PERM_U",
    "pack_tlb_entry", "unpack_tlb_entry", "unpack_pte",
]

VA_WIDTH = 64
PA_WIDTH = _pte.PA_BITS
PPN_WIDTH = _pte.PPN_BITS
VPN_WIDTH = _pte.VPN_BITS
PAGE_SHIFT = _pte.PAGE_SHIFT

# Bit positions of the device/fill `perm` field (R W X U), in PTE order shifted down by one.
PERM_R, PERM_W, PERM_X, PERM_U = 1, 2, 4, 8


class MemOp(enum.IntEnum):
    """Memory port request kinds (``mem__req__op``)."""
    READ = 0
    WRITE = 1
    CAS = 2


def _pte_fields():
    # (name, offset, width) from pyrmap.pte; checked to tile the 64-bit word exactly.
    fields = [
        ("v", _pte._PAGE_BIT_V, 1),
        ("r", _pte._PAGE_BIT_R, 1),
        ("w", _pte._PAGE_BIT_W, 1),
        ("x", _pte._PAGE_BIT_X, 1),
        ("u", _pte._PAGE_BIT_U, 1),
        ("g", _pte._PAGE_BIT_G, 1),
        ("a", _pte._PAGE_BIT_A, 1),
        ("d", _pte._PAGE_BIT_D, 1),
        ("rsw", _pte._PAGE_BIT_SWP, 2),
        ("ppn", _pte.PPN_SHIFT, _pte.PPN_BITS),
        ("reserved", _pte.RESERVED_SHIFT, 64 - _pte.RESERVED_SHIFT),
    ]
    fields.sort(key=lambda f: f[1])
    pos = 0
    for name, offset, width in fields:
        if offset != pos:
            raise ValueError(f"PTE field {name!r} starts at bit {offset}, expected {pos}")
        pos += width
    if pos != 64:
        raise ValueError(f"PTE fields cover {pos} bits, not 64")
    return fields


PTE_FIELDS = _pte_fields()
PTE_LAYOUT = data.StructLayout({name: unsigned(width) for name, _, width in PTE_FIELDS})
PTE_BITS = 64


_TLB_FIELD_ORDER = ("valid", "vpn", "asid", "ppn", "level", "r", "w", "x", "u", "g", "a", "d",
                    "young")


def tlb_entry_layout(asid_bits: int) -> data.StructLayout:
    """The layout of one TLB entry with an ``asid_bits``-wide ASID tag (0 allowed: no tag)."""
    check_asid_bits(asid_bits)
    widths = {
        "valid": 1, "vpn": VPN_WIDTH, "asid": max(asid_bits, 1), "ppn": PPN_WIDTH, "level": 2,
        "r": 1, "w": 1, "x": 1, "u": 1, "g": 1, "a": 1, "d": 1, "young": 1,
    }
    return data.StructLayout({name: unsigned(widths[name]) for name in _TLB_FIELD_ORDER})


def tlb_entry_value(layout: data.StructLayout, **fields):
    """A Value holding a TLB entry built from ``fields`` (missing ones are 0).

    Assigning it in one unconditional statement makes Yosys emit a continuous ``assign``:
    a comb process whose only statements are constants would never run at time 0 in
    Icarus/Verilator (an ``always @*`` with no sensitivities) and leave X bits.
    """
    from amaranth.hdl import Cat, Const, Value
    parts = []
    for name, field in layout:
        width = field.width
        value = fields.pop(name, None)
        if value is None:
            value = 0
        if isinstance(value, int):
            parts.append(Const(value, width))
            continue
        value = Value.cast(value).as_unsigned()
        parts.append(value[:width] if len(value) >= width
                     else Cat(value, Const(0, width - len(value))))
    if fields:
        raise TypeError(f"TLB entries have no field(s) {', '.join(sorted(fields))}")
    return Cat(*parts)


def _offsets(layout):
    return {name: (field.offset, field.width) for name, field in layout}


def pack_tlb_entry(asid_bits: int, *, valid=1, vpn=0, asid=0, ppn=0, level=0, r=0, w=0, x=0,
                   u=0, g=0, a=0, d=0, young=0) -> int:
    """Pack the fields of a TLB entry into the integer a port or register holds."""
    layout = tlb_entry_layout(asid_bits)
    values = dict(valid=valid, vpn=vpn, asid=asid, ppn=ppn, level=level, r=r, w=w, x=x, u=u,
                  g=g, a=a, d=d, young=young)
    word = 0
    for name, (offset, width) in _offsets(layout).items():
        value = int(values[name])
        if not 0 <= value < (1 << width):
            raise ValueError(f"TLB entry field {name!r} value {value:#x} does not fit in "
                             f"{width} bits")
        word |= value << offset
    return word


@functools.lru_cache(maxsize=None)
def _tlb_entry_offsets(asid_bits: int) -> tuple:
    # Building the StructLayout per call cost ~7 % of a co-simulation's scheduler time
    # (the checkers read every TLB entry register often); the offsets never change.
    return tuple(_offsets(tlb_entry_layout(asid_bits)).items())


def unpack_tlb_entry(asid_bits: int, word: int) -> dict:
    """Unpack an entry register into a dict of its fields."""
    word = int(word)
    return {name: (word >> offset) & ((1 << width) - 1)
            for name, (offset, width) in _tlb_entry_offsets(asid_bits)}


def tlb_entry_to_arch(asid_bits: int, word: int) -> TlbEntry | None:
    """The :class:`pyrmap.arch.TlbEntry` a register holds, or None for an invalid entry."""
    f = unpack_tlb_entry(asid_bits, word)
    if not f["valid"]:
        return None
    perm = (f["r"] << 1) | (f["w"] << 2) | (f["x"] << 3) | (f["u"] << 4)
    return TlbEntry(vpn=f["vpn"], asid=f["asid"], ppn=f["ppn"], level=f["level"], perm=perm,
                    g=bool(f["g"]), a=bool(f["a"]), d=bool(f["d"]))


def unpack_pte(word: int) -> dict:
    """Split a PTE word into the fields of ``PTE_LAYOUT``."""
    return {name: (int(word) >> offset) & ((1 << width) - 1) for name, offset, width in PTE_FIELDS}


# ---------------------------------------------------------------------------------------------
# Signatures of the request/response members, named by role.  Directions are those of the
# initiator (the side that raises ``valid``); a responder uses ``In(...)`` of the same signature.

from amaranth.lib import wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402

SRC_WIDTH = 4


def mem_signature(*, src: bool = False) -> wiring.Signature:
    """A walker's (or the arbiter's) memory port: one request outstanding.

    ``req``: ``valid``/``ready``, ``op`` (:class:`MemOp`), ``addr`` (byte address of an aligned
    64-bit word), ``wdata`` (WRITE data, CAS new value), ``cmp`` (CAS expected value) and, on the
    arbiter's output, ``src`` (requester index).  ``resp``: a ``valid`` pulse with ``rdata`` (READ
    data; CAS: the old value) and ``err`` (bus error).
    """
    req = {"valid": Out(1), "ready": In(1), "op": Out(2), "addr": Out(PA_WIDTH),
           "wdata": Out(64), "cmp": Out(64)}
    if src:
        req["src"] = Out(SRC_WIDTH)
    return wiring.Signature({
        "req": Out(wiring.Signature(req)),
        "resp": In(wiring.Signature({"valid": Out(1), "rdata": Out(64), "err": Out(1)})),
    })


def inval_signature(asid_bits: int) -> wiring.Signature:
    """Invalidation request (initiator view): hold ``valid`` until the ``ack`` pulse."""
    check_asid_bits(asid_bits)
    return wiring.Signature({"valid": Out(1), "kind": Out(2), "vaddr": Out(VA_WIDTH),
                             "asid": Out(max(asid_bits, 1)), "ack": In(1)})


def perf_signature(names) -> wiring.Signature:
    """32-bit performance counters (as outputs of the counting component)."""
    return wiring.Signature({name: Out(32) for name in names})
