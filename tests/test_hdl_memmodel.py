"""Testbench pieces for the hdl unit tests (Amaranth's simulator), and their own tests.

* :class:`MemModel` answers a ``mem_signature`` port from a dict of 64-bit words: READ, WRITE,
  CAS (atomic at acceptance), a fixed or seeded random latency, bus errors on chosen addresses,
  random ``ready`` back-pressure, and hooks that run after an access (to change a PTE between
  the walker's read and its CAS).
* :class:`PageTables` builds Sv39 tables in a MemModel with pyrmap.pte's encoders.
* :func:`translate`, :func:`inval` drive a CPU / invalidation port and return the response.

Every random choice takes a seed; failing tests print it in their assertion messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hdl.layouts import MemOp, mem_signature
from pyrmap import pte as P
from pyrmap.physmem import BusError

MASK64 = (1 << 64) - 1


class MemModel:
    """A memory responder for a ``mem_signature`` port (``port.req`` / ``port.resp``).

    Parameters
    ----------
    port : the DUT's memory port (initiator side).
    latency : int or (int, int)
        Cycles from the accepting edge to the response pulse (>= 1); a pair draws uniformly
        from the range with ``seed``.
    ready_prob : float
        Probability that ``req.ready`` is high in a cycle.
    """

    def __init__(self, port, *, latency=1, ready_prob=1.0, seed=0):
        self.port = port
        self.words: dict[int, int] = {}
        self.err_addrs: set[int] = set()
        self.err_ops: set[int] = {MemOp.READ, MemOp.WRITE, MemOp.CAS}
        self.log: list[tuple] = []          # (op, addr, wdata, cmp, rdata, err, src)
        self.hooks: dict[int, list] = {}    # addr -> [fn(model, op, rdata) -> keep?]
        self.latency = latency
        self.ready_prob = ready_prob
        self.seed = seed
        self.rng = random.Random(seed)

    # Word access (byte addresses of aligned words).
    def read(self, addr: int) -> int:
        return self.words.get(addr, 0)

    def write(self, addr: int, value: int) -> None:
        self.words[addr] = value & MASK64

    def after(self, addr: int, fn) -> None:
        """Call ``fn(model, op, rdata)`` after each access to ``addr`` while it returns True."""
        self.hooks.setdefault(addr, []).append(fn)

    def _perform(self, op, addr, wdata, cmp, src):
        err = addr in self.err_addrs and op in self.err_ops
        rdata = 0
        if not err:
            if op == MemOp.READ:
                rdata = self.read(addr)
            elif op == MemOp.WRITE:
                self.write(addr, wdata)
            elif op == MemOp.CAS:
                rdata = self.read(addr)
                if rdata == cmp:
                    self.write(addr, wdata)
            else:
                err = True
        self.log.append((MemOp(op) if op < 3 else op, addr, wdata, cmp, rdata, err, src))
        if not err:
            keep = [fn for fn in self.hooks.get(addr, []) if fn(self, op, rdata)]
            self.hooks[addr] = keep
        return rdata, err

    def _delay(self):
        if isinstance(self.latency, tuple):
            return self.rng.randint(*self.latency)
        return self.latency

    async def run(self, ctx):
        req, resp = self.port.req, self.port.resp
        has_src = "src" in req.signature.members
        sampled = [req.valid, req.ready, req.op, req.addr, req.wdata, req.cmp]
        if has_src:
            sampled.append(req.src)
        pending = []
        tick = 0
        ctx.set(req.ready, 1)
        async for _, _, valid, ready, op, addr, wdata, cmp, *src in ctx.tick().sample(*sampled):
            tick += 1
            ctx.set(resp.valid, 0)
            if valid and ready:
                rdata, err = self._perform(op, addr, wdata, cmp, src[0] if src else 0)
                pending.append((tick + self._delay() - 1, rdata, err))
            if pending and pending[0][0] <= tick:
                _, rdata, err = pending.pop(0)
                ctx.set(resp.valid, 1)
                ctx.set(resp.rdata, rdata)
                ctx.set(resp.err, err)
            ctx.set(req.ready, self.rng.random() < self.ready_prob)

    # For pyrmap.walk.sv39_walk on a copy of the same words.
    def golden_ports(self):
        words = dict(self.words)
        errs = set(self.err_addrs)

        def read(addr):
            if addr in errs:
                raise BusError(addr)
            return words.get(addr, 0)

        def cas(addr, old, new):
            if addr in errs:
                raise BusError(addr)
            found = words.get(addr, 0)
            if found == old:
                words[addr] = new
            return found
        return read, cas, words


class PageTables:
    """Sv39 tables in a :class:`MemModel`; table frames come from ``next_ppn`` upwards."""

    def __init__(self, mem: MemModel, root=0x80, next_ppn=0x81):
        self.mem = mem
        self.root = root
        self.next_ppn = next_ppn

    def _alloc(self):
        ppn = self.next_ppn
        self.next_ppn += 1
        return ppn

    def pte_addr(self, va, level=0, create=True):
        """Address of the PTE for ``va`` at ``level`` (creating the tables above it)."""
        table = self.root
        for lvl in (2, 1, 0):
            addr = (table << 12) + P.vpn(va, lvl) * 8
            if lvl == level:
                return addr
            val = self.mem.read(addr)
            if not P.pte_present(val):
                if not create:
                    return None
                val = P.pte_table(self._alloc())
                self.mem.write(addr, val)
            table = P.pte_pfn(val)
        raise AssertionError("unreachable")

    def map(self, va, ppn, level=0, flags=P._PAGE_V | P._PAGE_R | P._PAGE_W | P._PAGE_A
            | P._PAGE_D | P._PAGE_U):
        addr = self.pte_addr(va, level)
        # flags may carry bits outside V..D on purpose (reserved-bit tests)
        self.mem.write(addr, P.pfn_pte(ppn, flags & 0xFF) | (flags & ~0xFF))
        return addr


@dataclass
class Resp:
    fault: int
    paddr: int
    hit: int


async def translate(ctx, port, vaddr, op, *, user=1, sum=0, mxr=0, asid=0, root=0x80,
                    timeout=2000):
    """Issue one request on a CPU port (``port.req``/``port.resp``) and wait for its response."""
    req, resp = port.req, port.resp
    ctx.set(req.vaddr, vaddr)
    ctx.set(req.op, op)
    ctx.set(req.user, user)
    ctx.set(req.sum, sum)
    ctx.set(req.mxr, mxr)
    ctx.set(req.asid, asid)
    ctx.set(req.root, root)
    ctx.set(req.valid, 1)
    for _ in range(timeout):
        _, _, ready = await ctx.tick().sample(req.ready)
        if ready:
            break
    else:
        raise TimeoutError(f"request for {vaddr:#x} never accepted")
    ctx.set(req.valid, 0)
    for _ in range(timeout):
        _, _, v, paddr, fault, hit = await ctx.tick().sample(resp.valid, resp.paddr, resp.fault,
                                                             resp.hit)
        if v:
            return Resp(fault, paddr, hit)
    raise TimeoutError(f"no response for {vaddr:#x}")


async def inval(ctx, port, kind, vaddr=0, asid=0, timeout=100):
    """Hold an invalidation request until its ack; returns the number of cycles it took."""
    ctx.set(port.kind, kind)
    ctx.set(port.vaddr, vaddr)
    ctx.set(port.asid, asid)
    ctx.set(port.valid, 1)
    for n in range(1, timeout):
        _, _, ack = await ctx.tick().sample(port.ack)
        if ack:
            ctx.set(port.valid, 0)
            return n
    raise TimeoutError("invalidation never acknowledged")


def run_sim(dut, *benches, background=(), deadline=None):
    """Simulate ``dut`` with testbenches (critical) and background ones (e.g. MemModel.run)."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for b in background:
        sim.add_testbench(b, background=True)
    for b in benches:
        sim.add_testbench(b)
    if deadline is None:
        sim.run()
    else:
        sim.run_until(deadline)
    return sim


def tlb_entries(ctx, tlb, asid_bits):
    """The valid entries of an elaborated Tlb, as pyrmap.arch.TlbEntry."""
    from hdl.layouts import tlb_entry_to_arch
    out = []
    for sig in tlb.entry_signals:
        e = tlb_entry_to_arch(asid_bits, ctx.get(sig.as_value()))
        if e is not None:
            out.append(e)
    return out


# ---------------------------------------------------------------------------------------------
# The model's own tests: a CAS that must fail, a bus error, latency.

class _Initiator(wiring.Component):
    """A pass-through so the model can be tested on a bare port."""

    def __init__(self):
        super().__init__({"up": wiring.In(mem_signature()), "mem": wiring.Out(mem_signature())})

    def elaborate(self, platform):
        m = Module()
        wiring.connect(m, wiring.flipped(self.up), wiring.flipped(self.mem))
        m.domains.sync = ClockDomain()
        return m


async def _mem_op(ctx, up, op, addr, wdata=0, cmp=0):
    ctx.set(up.req.valid, 1)
    ctx.set(up.req.op, op)
    ctx.set(up.req.addr, addr)
    ctx.set(up.req.wdata, wdata)
    ctx.set(up.req.cmp, cmp)
    while True:
        _, _, ready = await ctx.tick().sample(up.req.ready)
        if ready:
            break
    ctx.set(up.req.valid, 0)
    n = 0
    while True:
        n += 1
        _, _, v, rdata, err = await ctx.tick().sample(up.resp.valid, up.resp.rdata, up.resp.err)
        if v:
            return rdata, err, n


@pytest.mark.parametrize("latency", [1, 3])
def test_memmodel_cas_and_errors(latency):
    dut = _Initiator()
    mem = MemModel(dut.mem, latency=latency)
    mem.write(0x1000, 0x55)
    mem.err_addrs.add(0x2000)
    out = {}

    async def bench(ctx):
        out["cas_ok"] = await _mem_op(ctx, dut.up, MemOp.CAS, 0x1000, wdata=0x77, cmp=0x55)
        out["cas_bad"] = await _mem_op(ctx, dut.up, MemOp.CAS, 0x1000, wdata=0x99, cmp=0x55)
        out["err"] = await _mem_op(ctx, dut.up, MemOp.READ, 0x2000)
        out["rd"] = await _mem_op(ctx, dut.up, MemOp.READ, 0x1000)

    run_sim(dut, bench, background=[mem.run])
    assert out["cas_ok"][:2] == (0x55, 0)
    assert out["cas_bad"][:2] == (0x77, 0)      # found != cmp: failed, memory unchanged
    assert out["err"][1] == 1
    assert out["rd"][:2] == (0x77, 0)
    assert out["rd"][2] == latency              # cycles from acceptance to the response
    assert mem.read(0x1000) == 0x77


def test_page_tables_builder():
    mem = MemModel(None)
    pt = PageTables(mem)
    a0 = pt.map(0x4000_1000, 0x1234)
    a1 = pt.map(0x4020_0000, 0x400, level=1)
    assert a0 != a1
    assert P.pte_pfn(mem.read(a0)) == 0x1234
    read, cas, _ = mem.golden_ports()
    from pyrmap.walk import sv39_walk
    r = sv39_walk(read, cas, 0x4000_1abc, P.AccessType.LOAD, user=True, sum=False,
                  root=pt.root, svadu=True)
    assert r.ok and r.paddr == (0x1234 << 12) | 0xabc
    r = sv39_walk(read, cas, 0x4020_1abc, P.AccessType.LOAD, user=True, sum=False,
                  root=pt.root, svadu=True)
    assert r.ok and r.paddr == (0x400 << 12) | 0x1abc
