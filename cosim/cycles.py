"""Clock cycles as cocotb triggers: how Python waits for the next cycle of a design, whatever
makes its clock.

A design's clock is either a ``clk`` that Python (or the design) toggles twice a cycle, whose
rising edge is the cycle, or, in the fast path's Verilator build, a clock pulsed once a time
step (:func:`cosim.fastbuild.clocked_verilog`): high and back low in the same step, a change no
value callback sees.  That build also carries ``tick``, a register that toggles at every rising
edge, so a change of ``tick`` is the cycle there.  Either way the trigger fires after the
simulator evaluated the edge, as a rising edge of a clock the design toggles does on Verilator.

Public API
----------
:class:`CycleClock`
    ``edge()`` (the next cycle), ``cycles(n)``; ``CycleClock.of(dut)`` picks the signal.
"""

from __future__ import annotations

from cocotb.triggers import ClockCycles, RisingEdge, ValueChange

__all__ = ["CycleClock", "TICK"]

#: The signal of a design whose clock is pulsed once a time step: it toggles once a cycle.
TICK = "tick"


class CycleClock:
    """One clock's cycles.

    Parameters
    ----------
    signal : cocotb handle
        A signal that changes once a cycle (``ValueChange``) or a clock (``RisingEdge``).
    edge_type : RisingEdge or ValueChange
        Which change of ``signal`` is one cycle.  Default: its rising edge.
    """

    __slots__ = ("signal", "edge_type")

    def __init__(self, signal, edge_type=RisingEdge):
        if edge_type not in (RisingEdge, ValueChange):
            raise ValueError(f"A cycle is a RisingEdge or a ValueChange, not {edge_type!r}")
        self.signal = signal
        self.edge_type = edge_type

    @classmethod
    def of(cls, dut) -> "CycleClock":
        """The cycles of ``dut``: its :data:`TICK` where it has one, else its ``clk``."""
        tick = getattr(dut, TICK, None)
        return cls(tick, ValueChange) if tick is not None else cls(dut.clk)

    def edge(self):
        """The trigger of the next cycle."""
        return self.edge_type(self.signal)

    def cycles(self, n: int):
        """The trigger of the ``n``-th next cycle (``n`` >= 1)."""
        return ClockCycles(self.signal, n, self.edge_type)
