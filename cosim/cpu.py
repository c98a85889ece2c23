"""CpuRequester: one core's CPU port of ``hdl.top.Top`` (``cpu{i}__req``/``cpu{i}__resp``).

A :class:`CpuRequester` is the one driver of a core's CPU port.  :meth:`CpuRequester.request`
presents one translation request -- (vaddr, op, user, sum, mxr, asid, root) -- holds ``valid``
until the edge after which ``ready`` reads 1, and returns at the response pulse
(:class:`CpuResponse`).  :meth:`CpuRequester.access` adds what a core does with the answer:
on ``NONE`` it performs the 8-byte load or store on the shared
:class:`~pyrmap.physmem.PhysMem` at the translated address *in the same instant* as the
response (no simulated time between the translation and the data access); a bus error on
the data access is an ``ACCESS`` fault.  Fault handling is the caller's (the engine's
:class:`pyrmap.workload.CpuWorkload` calls ``arch.cpu_access`` in a host thread, which ends
here).

Users: :class:`cosim.arch.CosimArch` (``cpu_access``), the random MMU stimulus
(:mod:`cosim.tb.agents`) and the litmus runner.

A shootdown needs nothing from the requester: from the cycle the RTL acknowledges an
invalidation, no response leaves the port that was derived from a PTE read or a TLB entry
older than it (the MMU restarts a walk in flight itself, hdl/PORTS.md), so the data access
performed at the response instant never goes through a translation the shootdown removed.

Signals are sampled right after the rising edge, which gives their values in the cycle that
edge ended (a synchronous receiver's view): a request is accepted at the edge after which
``ready`` reads 1, and the response is the cycle after which ``resp__valid`` reads 1.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Callable, Optional

from cocotb.triggers import RisingEdge

from pyrmap.physmem import BusError
from pyrmap.pte import AccessType, FaultKind

from .memory import cycle_now
from .ports import PortTimeout, handles

__all__ = ["CpuRequester", "CpuResponse"]

MASK64 = (1 << 64) - 1


@dataclass
class CpuResponse:
    """The answer to one request: the fault kind, the physical address (valid with
    ``NONE``), whether the TLB served it, the cycle the request was presented (``start``),
    the cycle it was accepted (``accept``), and the cycles from presentation to response."""
    fault: FaultKind
    paddr: int
    hit: bool
    start: int
    accept: int
    cycles: int


class CpuRequester:
    """The driver of core ``core``'s CPU port.

    Parameters
    ----------
    dut : cocotb handle
        ``top``.
    core : int
    ncores : int
        Cores of the design (``core`` must be one of them).
    timeout : int
        Cycles to wait for ``ready`` and for the response; :class:`PortTimeout` after.
    cycle : callable
        The current clock cycle.

    Members (ports)
    ---------------
    drives ``cpu{i}__req__valid/vaddr/op/user/sum/asid/root``; samples ``cpu{i}__req__ready``
    and ``cpu{i}__resp__valid/paddr/fault/hit``.

    Members
    -------
    stats : collections.Counter
        translations, cycles, hits, misses, page_faults, access_faults;
        with :meth:`access`: accesses, loads, stores, fetches, data_bus_errors.
    """

    def __init__(self, dut, core: int, *, ncores: int, timeout: int = 100_000,
                 cycle: Callable[[], int] = cycle_now):
        if not isinstance(core, int) or isinstance(core, bool) or not 0 <= core < ncores:
            raise ValueError(f"Core must be 0..{ncores - 1}, not {core!r}")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
            raise TypeError(f"Timeout must be a positive integer, not {timeout!r}")
        self.dut = dut
        self.core = core
        self.timeout = timeout
        self.cycle = cycle
        self.clk = dut.clk
        self.stats: collections.Counter[str] = collections.Counter()
        self.log = logging.getLogger(f"cosim.core{core}.cpu")
        self.req = handles(dut, f"cpu{core}__req",
                           ("valid", "ready", "vaddr", "op", "user", "sum", "mxr", "asid",
                            "root"))
        self.resp = handles(dut, f"cpu{core}__resp", ("valid", "paddr", "fault", "hit"))
        self.req.valid.value = 0
        self.req.mxr.value = 0

    async def request(self, vaddr: int, op: AccessType, *, asid: int, root: int,
                      user: bool = True, sum: bool = False, mxr: bool = False) -> CpuResponse:
        """Present one request and return at its response pulse.

        ``user``: U-mode (else S-mode); ``sum``: sstatus.SUM; ``mxr``: mstatus.MXR (a load may
        read an executable page without R).

        One request at a time per requester (the caller serialises).  On return, simulated
        time stands right after the edge that ended the response cycle; the caller may act on
        memory before any further edge.

        Raises
        ------
        PortTimeout
            ``ready`` or the response did not come within ``timeout`` cycles.
        """
        start = self.cycle()
        self.req.vaddr.value = vaddr & MASK64
        self.req.op.value = int(op)
        self.req.user.value = int(user)
        self.req.sum.value = int(sum)
        self.req.mxr.value = int(mxr)
        self.req.asid.value = asid
        self.req.root.value = root
        self.req.valid.value = 1
        accepted = None
        waited = 0
        while True:
            await RisingEdge(self.clk)
            waited += 1
            if accepted is None and int(self.req.ready.value):
                accepted = self.cycle()
                self.req.valid.value = 0
                waited = 0
            if accepted is not None and int(self.resp.valid.value):
                fault = FaultKind(int(self.resp.fault.value))
                hit = bool(int(self.resp.hit.value))
                self.stats["translations"] += 1
                self.stats["cycles"] += self.cycle() - start
                if fault == FaultKind.NONE:
                    self.stats["hits" if hit else "misses"] += 1
                else:
                    self.stats["page_faults" if fault == FaultKind.PAGE
                               else "access_faults"] += 1
                return CpuResponse(fault, int(self.resp.paddr.value), hit, start, accepted,
                                   self.cycle() - start)
            if waited > self.timeout:
                what = "req.ready stayed low" if accepted is None else "no response"
                raise PortTimeout(f"core{self.core}: {what} for {waited} cycles after "
                                  f"{AccessType(op).name} 0x{vaddr:x} (asid {asid})")

    async def access(self, vaddr: int, op: AccessType, *, asid: int, root: int, mem,
                     user: bool = True, sum: bool = False, mxr: bool = False,
                     data: Optional[int] = None,
                     check: Optional[Callable[[CpuResponse], None]] = None,
                     on_response: Optional[Callable[[CpuResponse], None]] = None):
        """One request and, when it translates, the data access on ``mem`` at the same
        instant: a STORE writes ``data``, a LOAD or FETCH reads the word.  ``on_response(resp)``
        runs at the response instant for every response, a fault included (the golden-walk
        scoreboard); ``check(resp)`` then, for a translation, before the data access (the
        cycle-level checkers).

        Returns a :class:`pyrmap.softarch.AccessResult`; no fault handling."""
        from pyrmap.softarch import AccessResult
        op = AccessType(op)
        r = await self.request(vaddr, op, asid=asid, root=root, user=user, sum=sum, mxr=mxr)
        if on_response is not None:
            on_response(r)
        if r.fault != FaultKind.NONE:
            return AccessResult(r.fault, 0, None, r.hit)
        if check is not None:
            check(r)
        word = r.paddr & ~7
        value = None
        try:
            if op == AccessType.STORE:
                mem.write(word, data & MASK64)
                self.stats["stores"] += 1
            else:
                value = mem.read(word)
                self.stats["loads" if op == AccessType.LOAD else "fetches"] += 1
        except BusError:
            self.stats["data_bus_errors"] += 1
            return AccessResult(FaultKind.ACCESS, r.paddr, None, r.hit)
        self.stats["accesses"] += 1
        return AccessResult(FaultKind.NONE, r.paddr, value, r.hit)
