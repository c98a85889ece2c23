"""LogRing: a ring of fixed-width records that software drains in blocks."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .filelog import FileLog
from .ram import Ram

__all__ = ["LogRing", "ring_control_signature", "PTR_WIDTH", "MAX_DEPTH_LOG2"]

#: Width of the free-running read and write pointers.
PTR_WIDTH = 32
MAX_DEPTH_LOG2 = 20


def ring_control_signature() -> wiring.Signature:
    """The software side of a ring (as seen from the ring): ``rd_ptr`` in, the rest out."""
    return wiring.Signature({
        "rd_ptr": In(PTR_WIDTH),
        "wr_ptr": Out(PTR_WIDTH),
        "half": Out(1),
        "full": Out(1),
    })


class LogRing(wiring.Component):
    """``2**depth_log2`` records of ``width`` bits; the producer writes, software drains.

    Pointers are free-running ``PTR_WIDTH``-bit counters: record ``k`` lives in slot
    ``k mod depth``.  The ring holds ``wr_ptr - rd_ptr`` records; it never overwrites one that
    software has not drained: ``push.ready`` is low while it is full, and the producer waits.
    Software reads slots ``rd_ptr .. wr_ptr - 1`` straight from the storage array
    (``ram.storage``) and then advances ``rd_ptr`` (an input it holds; the ring sees it at the
    next clock edge).

    Parameters
    ----------
    width : int
        Bits per record (1 ... 1024).
    depth_log2 : int
        log2 of the number of slots (1 ... ``MAX_DEPTH_LOG2``).
    verilog : bool
        Storage for Verilog export (see :class:`simhw.ram.Ram`).
    file : str, optional
        Verilog only: every record taken is also written to this file
        (:class:`simhw.filelog.FileLog`), so software drains a block of records by reading
        the file instead of the array.

    Members
    -------
    push : In
        ``valid``/``ready`` and ``data`` (one record per cycle while ready).
    ctl : Out(ring_control_signature())
        ``rd_ptr`` (in), ``wr_ptr``, ``half`` (at least half full), ``full``.
    """

    def __init__(self, *, width: int, depth_log2: int, verilog: bool = False,
                 file: str | None = None):
        for name, value, lo, hi in (("Record width", width, 1, 1024),
                                    ("Depth log2", depth_log2, 1, MAX_DEPTH_LOG2)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} is {value}, which is not in [{lo}, {hi}]")
        self.width = width
        self.depth_log2 = depth_log2
        self.verilog = bool(verilog)
        if file is not None and not self.verilog:
            raise ValueError(f"Ring file {file!r} needs verilog=True (the tap is Verilog)")
        self.file = file
        #: The storage array (:class:`simhw.ram.Ram`).
        self.ram = Ram(width=width, abits=depth_log2, verilog=verilog)
        super().__init__({
            "push": In(wiring.Signature({"valid": Out(1), "ready": In(1),
                                         "data": Out(width)})),
            "ctl": Out(ring_control_signature()),
        })

    @property
    def depth(self) -> int:
        return 1 << self.depth_log2

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = self.ram
        wptr = Signal(PTR_WIDTH)
        # The read pointer takes effect at the next edge: nothing depends combinationally on
        # the input (a simulator re-evaluates such logic whenever software drives it).
        rptr = Signal(PTR_WIDTH)
        m.d.sync += rptr.eq(self.ctl.rd_ptr)
        count = Signal(PTR_WIDTH)
        m.d.comb += [
            count.eq(wptr - rptr),
            self.ctl.wr_ptr.eq(wptr),
            self.ctl.full.eq(count >= self.depth),
            self.ctl.half.eq(count >= self.depth // 2),
            self.push.ready.eq(count < self.depth),
            ram.waddr.eq(wptr[:self.depth_log2]),
            ram.wdata.eq(self.push.data),
        ]
        if self.file is not None:
            m.submodules.tap = tap = FileLog(width=self.width, path=self.file)
            m.d.comb += [tap.valid.eq(self.push.valid & self.push.ready),
                         tap.data.eq(self.push.data)]
        with m.If(self.push.valid & self.push.ready):
            m.d.comb += ram.we.eq(1)
            m.d.sync += wptr.eq(wptr + 1)
        return m
