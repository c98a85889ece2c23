"""Random stimulus for ``top``: CPU requests, invalidations, the PTE racer.

Driver → DUT → Monitor → Scoreboard ← Model: each stimulus here drives one port through the
port's one driver (:class:`cosim.cpu.CpuRequester`, :class:`cosim.inval.InvalDriver`), then
hands the finished transaction to the :class:`~cosim.scoreboard.MmuScoreboard`, whose model is
``pyrmap.walk.sv39_walk``.

All randomness comes from ``random.Random`` objects seeded from the run's seed.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Optional

from pyrmap.arch import InvalKind
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_V, _PAGE_W, AccessType, FaultKind,
                        swp_entry, swp_entry_to_pte)

from ..cpu import CpuRequester
from ..inval import InvalDriver
from ..memory import MemOp, MemoryResponder, MemTxn, cycle_now
from ..ports import PortTimeout
from ..scoreboard import CpuTxn, InvalTxn, MmuScoreboard, Violation
from .tables import RandomTables

__all__ = ["CpuStimulus", "InvalStimulus", "PteRacer", "TIMEOUT_CYCLES"]

#: A response or an ack that takes longer than this is a protocol violation.
TIMEOUT_CYCLES = 4000


class CpuStimulus:
    """Random requests on one core's CPU port (through its :class:`cosim.cpu.CpuRequester`);
    every finished transaction goes to the scoreboard.

    Parameters
    ----------
    dut, core : the DUT handle and the core index.
    ncores : int
    tables : RandomTables
        Where the virtual addresses and contexts come from.
    scoreboard : MmuScoreboard
    rng : random.Random
    nreq : int
        Requests to issue.
    p_switch : float
        Probability of switching to another context before a request.
    """

    def __init__(self, dut, core: int, ncores: int, tables: RandomTables,
                 scoreboard: MmuScoreboard, rng: random.Random, nreq: int, *,
                 p_switch: float = 0.05):
        self.dut, self.core, self.tables, self.sb, self.rng = dut, core, tables, scoreboard, rng
        self.port = CpuRequester(dut, core, ncores=ncores, timeout=TIMEOUT_CYCLES)
        self.nreq, self.p_switch = nreq, p_switch
        self.ctx = tables.contexts[core % len(tables.contexts)]
        self.done = 0
        self.recent: list[int] = []
        self.log = logging.getLogger(f"cosim.core{core}.cpu")

    def _next(self) -> tuple:
        rng = self.rng
        if self.recent and rng.random() < 0.6:            # locality: TLB hits
            return rng.choice(self.recent)
        req = self.tables.pick_request(self.ctx, rng)
        self.recent = (self.recent + [req])[-6:]
        return req

    async def run(self) -> None:
        from cocotb.triggers import ClockCycles
        clk = self.dut.clk
        rng = self.rng
        for _ in range(self.nreq):
            if rng.random() < self.p_switch:
                self.ctx = rng.choice(self.tables.contexts)
                self.recent = []
            va, op, user, sum_, mxr = self._next()
            try:
                r = await self.port.request(va, op, asid=self.ctx.asid, root=self.ctx.root,
                                            user=user, sum=sum_, mxr=mxr)
            except PortTimeout as exc:
                self.sb.fail("protocol", cycle_now(), str(exc))
                return
            t = CpuTxn(self.core, va, op, user, sum_, self.ctx.asid, self.ctx.root, r.accept,
                       mxr=mxr)
            t.resp_cycle = cycle_now()
            t.paddr = r.paddr
            t.fault = r.fault
            t.hit = r.hit
            self.log.debug("%s", t.describe())
            self.sb.on_cpu(t)
            self.done += 1
            gap = rng.choice((0, 0, 0, 1, 2, 5))
            if gap:
                await ClockCycles(clk, gap)


class InvalStimulus:
    """Random invalidations on one invalidation port (``cpu{i}__inval__*`` or
    ``dev__inval__*``, through its :class:`cosim.inval.InvalDriver`).

    Issues random invalidations of the four kinds at random intervals until :attr:`stop` is
    set; also accepts requests from the racer (:meth:`request`).  One idle cycle follows
    every ack.
    """

    def __init__(self, dut, target: int, tables: RandomTables, scoreboard: MmuScoreboard,
                 rng: random.Random, *, mean_gap: int = 150,
                 on_ack: Optional[Callable[[InvalTxn], None]] = None):
        self.dut, self.target, self.tables, self.sb, self.rng = dut, target, tables, scoreboard, rng
        self.mean_gap = mean_gap
        self.stop = False
        self.queue: list[tuple[InvalKind, int, int]] = []
        self.done: list[InvalTxn] = []
        self.on_ack = on_ack
        self.port = InvalDriver(dut, "dev" if target < 0 else f"cpu{target}",
                                timeout=TIMEOUT_CYCLES)

    def request(self, kind: InvalKind, vaddr: int, asid: int) -> None:
        self.queue.append((InvalKind(kind), vaddr, asid))

    def _random(self) -> tuple[InvalKind, int, int]:
        rng = self.rng
        ctx = rng.choice(self.tables.contexts)
        kind = rng.choice([InvalKind.VA_ASID, InvalKind.VA_ASID, InvalKind.VA, InvalKind.ASID,
                           InvalKind.ALL])
        return kind, self.tables.pick_va(ctx, rng), ctx.asid

    async def run(self) -> None:
        from cocotb.triggers import RisingEdge
        clk = self.dut.clk
        rng = self.rng
        while not self.stop:
            gap = 0
            while not self.queue and gap < 2 * self.mean_gap and not self.stop:
                await RisingEdge(clk)
                gap += 1
                if rng.random() < 1.0 / self.mean_gap:
                    break
            if self.stop:
                break
            kind, va, asid = self.queue.pop(0) if self.queue else self._random()
            inv = InvalTxn(self.target, kind, va, asid, cycle_now() + 1)
            self.sb.on_inval_request(inv)
            try:
                await self.port.invalidate(kind, va, asid)
            except PortTimeout as exc:
                self.sb.fail("protocol", cycle_now(), f"{inv.describe()}: {exc}")
                return
            inv.ack_cycle = cycle_now()
            self.sb.on_inval_ack(inv)
            self.done.append(inv)
            if self.on_ack:
                self.on_ack(inv)
            await RisingEdge(clk)           # one idle cycle between requests


class PteRacer:
    """Changes PTEs from software, timed to race the walkers.

    Listens to the memory responder: when a core reads a leaf PTE, the racer may, a few
    cycles later, change that same PTE with one of the operations software really does:
    exchange with 0 (unmap; restored later by a plain store while it is non-present), a CAS
    that clears A or D or W (page_referenced, page_mkclean, wrprotect), or a plain store to a
    non-present entry.  After a change of a present PTE it may ask for an invalidation on a
    random core (the flush that would follow), which then races the walks in flight.
    """

    def __init__(self, dut, mem: MemoryResponder, tables: RandomTables, rng: random.Random,
                 inval_drivers: list, *, p_race: float = 0.25, p_flush: float = 0.3):
        self.dut, self.mem, self.tables, self.rng = dut, mem, tables, rng
        self.invals = inval_drivers
        self.p_race, self.p_flush = p_race, p_flush
        self.stop = False
        self.recent_reads: list[MemTxn] = []
        self.unmapped: dict[int, int] = {}          # addr -> value to restore
        self.counts = {"xchg": 0, "cas": 0, "store": 0, "restore": 0, "flush": 0}
        self._leaves = set(tables.leaf_addrs)
        mem.listeners.append(self._on_txn)

    def _on_txn(self, txn: MemTxn) -> None:
        if txn.op == MemOp.READ and txn.addr in self._leaves and not txn.err:
            self.recent_reads = (self.recent_reads + [txn])[-4:]

    def _act(self) -> None:
        rng = self.rng
        if self.unmapped and rng.random() < 0.4:
            addr = rng.choice(sorted(self.unmapped))
            if rng.random() < 0.3:              # swap it out: another non-present value
                new = swp_entry_to_pte(swp_entry(rng.randrange(4), rng.randrange(1, 1 << 12)))
                self.mem.sw_store(addr, new, "racer store non-present")
                self.counts["store"] += 1
            else:                               # map it again
                self.mem.sw_store(addr, self.unmapped.pop(addr), "racer restore")
                self.counts["restore"] += 1
            return
        if self.recent_reads and rng.random() < 0.8:
            addr = self.recent_reads[-1].addr
        else:
            addr = rng.choice(self.tables.leaf_addrs)
        if addr in self.unmapped:
            return
        cur = self.mem.sw_read(addr, "racer")
        r = rng.random()
        if not cur & _PAGE_V:
            new = swp_entry_to_pte(swp_entry(rng.randrange(4), rng.randrange(1, 1 << 12)))
            self.mem.sw_store(addr, new, "racer store non-present")
            self.counts["store"] += 1
            return
        if r < 0.3:
            old = self.mem.sw_xchg(addr, 0, "racer xchg")
            self.unmapped[addr] = old & ~(_PAGE_A | _PAGE_D) if rng.random() < 0.5 else old
            self.counts["xchg"] += 1
        else:
            bit = rng.choice([_PAGE_A, _PAGE_A, _PAGE_D, _PAGE_D, _PAGE_W])
            if bit == _PAGE_W and not cur & _PAGE_R:
                bit = _PAGE_A
            self.mem.sw_cas(addr, cur, cur ^ bit, "racer cas")
            self.counts["cas"] += 1
        if self.invals and rng.random() < self.p_flush:
            drv = rng.choice(self.invals)
            ctx = rng.choice(self.tables.contexts)
            kind = rng.choice(list(InvalKind))
            drv.request(kind, self.tables.pick_va(ctx, rng), ctx.asid)
            self.counts["flush"] += 1

    async def run(self) -> None:
        from cocotb.triggers import ClockCycles
        clk = self.dut.clk
        rng = self.rng
        while not self.stop:
            await ClockCycles(clk, rng.randint(1, 6))
            if self.recent_reads and rng.random() < self.p_race:
                self._act()
            elif rng.random() < self.p_race / 4:
                self._act()
