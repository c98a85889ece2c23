"""What software sees of the fast path's gateware: the access-log record, the write-log
record, the software port's operations, the traffic engines' modes and the files the
simulator exchanges data through.

This module imports no HDL library, so the simulator's Python (:mod:`cosim.fastrun`,
:mod:`cosim.fasthw`) reads the gateware's records without elaborating anything; the gateware
(:mod:`simhw.traffic`, :mod:`simhw.memory`, :mod:`simhw.fasttop`) builds on these same
definitions.
"""

from __future__ import annotations

import enum

from pyrmap.pte import PA_BITS as PA_WIDTH

__all__ = ["CYCLE_WIDTH", "Mode", "RECORD_FIELDS", "RECORD_WIDTH", "SwOp",
           "WRITE_RECORD_WIDTH", "record_bytes", "ring_file"]

#: Width of the cycle fields of a record (and of the cycle counter).
CYCLE_WIDTH = 40


class Mode(enum.IntEnum):
    """Address streams over the window [base, base + 2**span_log2)."""
    #: Every word equally likely.
    UNIFORM = 0
    #: A power law (density ~ 1/offset, Zipf's law with exponent 1, the hot end at ``base``):
    #: the offset is uniform below a bound that is itself log-uniform.
    ZIPF = 1
    #: ``offset += stride`` (wrapping).
    STRIDE = 2
    #: A dependent chain: the next offset is the previous one plus the last loaded value plus 8.
    CHASE = 3
    #: Replay: record ``k`` (a 64-bit word at physical address ``trace_base + 8k``) holds the
    #: offset with the AccessType in bits [1:0]; ``k`` wraps at ``trace_len``.
    TRACE = 4


# The access-log record, least significant field first: (name, width).
RECORD_FIELDS = (
    ("start", CYCLE_WIDTH),   # cycle the MMU accepted the request
    ("done", CYCLE_WIDTH),    # cycle the memory took the data access (fault: of the response)
    ("va", 48),               # the virtual address (bits 47..0)
    ("pa", PA_WIDTH),         # the physical address (0 on a fault)
    ("data", 64),             # the value loaded or stored
    ("op", 2),                # AccessType
    ("fault", 2),             # FaultKind
    ("hit", 1),               # the translation came from the TLB
    ("squashed", 1),          # an attempt an invalidation squashed (issued again after it)
)
RECORD_WIDTH = sum(w for _, w in RECORD_FIELDS)


#: Records of the MMU port's writes: ``addr`` (PA_WIDTH bits) then ``data`` (64 bits).
WRITE_RECORD_WIDTH = PA_WIDTH + 64


class SwOp(enum.IntEnum):
    """Operations of the software port (and the data ports, which use READ and WRITE)."""
    READ = 0
    WRITE = 1
    CAS = 2
    XCHG = 3


def record_bytes(width: int) -> int:
    """Bytes of one record's line in the file: its hex digits and a newline."""
    return (width + 3) // 4 + 1


def ring_file(ring: str) -> str:
    """The file (in the simulator's working directory) a Verilog FastTop's ring ``ring``
    (``log<i>`` or ``wlog``) writes its records to, or (``memload``) its memory's bulk writes
    are read from."""
    return f"{ring}.hex"
