"""MemArbiter: N walkers' memory ports onto one, one request outstanding."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import ARBITRATIONS, MAX_CORES
from .layouts import mem_signature

__all__ = ["MemArbiter"]


class MemArbiter(wiring.Component):
    """Grant one requester at a time; forward its request, route the response back.

    A grant is taken in a cycle where some ``ports[i].req.valid`` is high (round-robin starting
    after the last grant, or fixed priority: the lowest index first), the request is presented on
    ``mem.req`` from the next cycle until ``mem.req.ready``, and the ``mem.resp`` pulse is routed to
    the granted port; then the next grant.  ``mem.req.src`` carries the granted index.

    Parameters
    ----------
    n : int
        Number of requesters (1..16).
    arbitration : str
        ``"round_robin"`` or ``"fixed"``.

    Members
    -------
    ports : In(mem_signature()) array of ``n``
    mem : Out(mem_signature(src=True))
    """

    def __init__(self, n, *, arbitration="round_robin"):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise TypeError(f"Requester count must be a positive integer, not {n!r}")
        if n > MAX_CORES:
            raise ValueError(f"Arbiter has {n} requesters, which is more than {MAX_CORES}")
        if arbitration not in ARBITRATIONS:
            raise ValueError(f"Arbitration must be one of "
                             f"{', '.join(repr(a) for a in ARBITRATIONS)}, not {arbitration!r}")
        self.n = n
        self.arbitration = arbitration
        super().__init__({
            "ports": In(mem_signature()).array(n),
            "mem": Out(mem_signature(src=True)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        grant = Signal(range(n) if n > 1 else 1)
        last = Signal.like(grant)   # round-robin: the last granted index
        choice = Signal.like(grant)
        valids = [p.req.valid for p in self.ports]

        # Choice: fixed priority, or the first valid index after `last` (wrapping).
        if self.arbitration == "fixed" or n == 1:
            for i in reversed(range(n)):
                with m.If(valids[i]):
                    m.d.comb += choice.eq(i)
        else:
            for start in range(n):
                with m.If(last == start):
                    order = [(start + 1 + k) % n for k in range(n)]
                    for i in reversed(order):
                        with m.If(valids[i]):
                            m.d.comb += choice.eq(i)

        out = self.mem
        with m.FSM(name="arb"):
            with m.State("IDLE"):
                with m.If(Cat(*valids).any()):
                    m.d.sync += [grant.eq(choice), last.eq(choice)]
                    m.next = "REQ"
            with m.State("REQ"):
                for i, p in enumerate(self.ports):
                    with m.If(grant == i):
                        m.d.comb += [
                            out.req.valid.eq(p.req.valid),
                            out.req.op.eq(p.req.op),
                            out.req.addr.eq(p.req.addr),
                            out.req.wdata.eq(p.req.wdata),
                            out.req.cmp.eq(p.req.cmp),
                            p.req.ready.eq(out.req.ready),
                        ]
                m.d.comb += out.req.src.eq(grant)
                with m.If(out.req.valid & out.req.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += out.req.src.eq(grant)
                for i, p in enumerate(self.ports):
                    with m.If(grant == i):
                        m.d.comb += p.resp.valid.eq(out.resp.valid)
                with m.If(out.resp.valid):
                    m.next = "IDLE"
        for p in self.ports:
            m.d.comb += [p.resp.rdata.eq(out.resp.rdata), p.resp.err.eq(out.resp.err)]
        return m
