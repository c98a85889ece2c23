"""Testbench agents for ``top``: CPU request drivers, invalidation drivers, the PTE racer.

Driver → DUT → Monitor → Scoreboard ← Model: each driver here drives one port and samples its
response every cycle it waits (responses and acks are one-cycle pulses, PORTS.md), then hands
the finished transaction to the :class:`~cosim.scoreboard.MmuScoreboard`, whose model is
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

from ..memory import MemOp, MemoryResponder, MemTxn, cycle_now
from ..scoreboard import CpuTxn, InvalTxn, MmuScoreboard, Violation
from .tables import RandomTables

__all__ = ["CpuDriver", "InvalDriver", "PteRacer", "TIMEOUT_CYCLES"]

#: A response or an ack that takes longer than this is a protocol violation.
TIMEOUT_CYCLES = 4000


def _int(handle) -> int:
    return int(handle.value)


class CpuDriver:
    """Drives ``cpu{i}__req__*`` with random requests; samples ``cpu{i}__resp__*``.

    Parameters
    ----------
    dut, core : the DUT handle and the core index.
    tables : RandomTables
        Where the virtual addresses and contexts come from.
    scoreboard : MmuScoreboard
    rng : random.Random
    nreq : int
        Requests to issue.
    p_switch : float
        Probability of switching to another context before a request.

    Members (ports)
    ---------------
    drives ``req__valid/vaddr/op/user/sum/asid/root``; samples ``req__ready``,
    ``resp__valid/paddr/fault/hit``.
    """

    def __init__(self, dut, core: int, tables: RandomTables, scoreboard: MmuScoreboard,
                 rng: random.Random, nreq: int, *, p_switch: float = 0.05):
        self.dut, self.core, self.tables, self.sb, self.rng = dut, core, tables, scoreboard, rng
        self.nreq, self.p_switch = nreq, p_switch
        self.ctx = tables.contexts[core % len(tables.contexts)]
        self.done = 0
        self.recent: list[int] = []
        self.log = logging.getLogger(f"cosim.core{core}.cpu")

    def _s(self, name):
        return getattr(self.dut, f"cpu{self.core}__{name}")

    def _next(self) -> tuple:
        rng = self.rng
        if self.recent and rng.random() < 0.6:            # locality: TLB hits
            return rng.choice(self.recent)
        req = self.tables.pick_request(self.ctx, rng)
        self.recent = (self.recent + [req])[-6:]
        return req

    async def run(self) -> None:
        from cocotb.triggers import ClockCycles, RisingEdge
        clk = self.dut.clk
        valid, ready = self._s("req__valid"), self._s("req__ready")
        rvalid = self._s("resp__valid")
        rng = self.rng
        for _ in range(self.nreq):
            if rng.random() < self.p_switch:
                self.ctx = rng.choice(self.tables.contexts)
                self.recent = []
            va, op, user, sum_ = self._next()
            self._s("req__vaddr").value = va
            self._s("req__op").value = int(op)
            self._s("req__user").value = int(user)
            self._s("req__sum").value = int(sum_)
            self._s("req__asid").value = self.ctx.asid
            self._s("req__root").value = self.ctx.root
            valid.value = 1
            t = None
            waited = 0
            while t is None:
                await RisingEdge(clk)
                waited += 1
                if _int(ready):
                    t = CpuTxn(self.core, va, op, user, sum_, self.ctx.asid, self.ctx.root,
                               cycle_now())
                elif waited > TIMEOUT_CYCLES:
                    self.sb.fail("protocol", cycle_now(),
                                 f"core{self.core} req.ready stayed low {waited} cycles")
                    return
            valid.value = 0
            if not _int(rvalid):
                waited = 0
                while True:
                    await RisingEdge(clk)
                    if _int(rvalid):
                        break
                    waited += 1
                    if waited > TIMEOUT_CYCLES:
                        self.sb.fail("protocol", cycle_now(),
                                     f"{t.describe()}: no response in {waited} cycles")
                        return
            t.resp_cycle = cycle_now()
            t.paddr = _int(self._s("resp__paddr"))
            t.fault = FaultKind(_int(self._s("resp__fault")))
            t.hit = bool(_int(self._s("resp__hit")))
            self.log.debug("%s", t.describe())
            self.sb.on_cpu(t)
            self.done += 1
            gap = rng.choice((0, 0, 0, 1, 2, 5))
            if gap:
                await ClockCycles(clk, gap)


class InvalDriver:
    """Drives one invalidation port (``cpu{i}__inval__*`` or ``dev__inval__*``).

    Issues random invalidations of the four kinds at random intervals until :attr:`stop` is
    set; also accepts requests from the racer (:meth:`request`).  ``valid`` is held until
    ``ack``; the DUT first sees a request at the edge after it is driven.

    Members (ports)
    ---------------
    drives ``inval__valid/kind/vaddr/asid``; samples ``inval__ack``.
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
        self.prefix = "dev" if target < 0 else f"cpu{target}"

    def _s(self, name):
        return getattr(self.dut, f"{self.prefix}__inval__{name}")

    def request(self, kind: InvalKind, vaddr: int, asid: int) -> None:
        self.queue.append((InvalKind(kind), vaddr, asid))

    def _random(self) -> tuple[InvalKind, int, int]:
        rng = self.rng
        ctx = rng.choice(self.tables.contexts)
        kind = rng.choice([InvalKind.VA_ASID, InvalKind.VA_ASID, InvalKind.VA, InvalKind.ASID,
                           InvalKind.ALL])
        return kind, self.tables.pick_va(ctx, rng), ctx.asid

    async def run(self) -> None:
        from cocotb.triggers import ClockCycles, RisingEdge
        clk = self.dut.clk
        rng = self.rng
        valid = self._s("valid")
        ack = self._s("ack")
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
            self._s("kind").value = int(kind)
            self._s("vaddr").value = va
            self._s("asid").value = asid
            valid.value = 1
            inv = InvalTxn(self.target, kind, va, asid, cycle_now() + 1)
            self.sb.on_inval_request(inv)
            waited = 0
            while True:
                await RisingEdge(clk)
                if _int(ack):
                    break
                waited += 1
                if waited > TIMEOUT_CYCLES:
                    self.sb.fail("protocol", cycle_now(), f"{inv.describe()}: no ack in "
                                                          f"{waited} cycles")
                    return
            inv.ack_cycle = cycle_now()
            valid.value = 0
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
