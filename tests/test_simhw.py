"""The fast path's simulation-only gateware on Amaranth's simulator: SimMemory (software port,
MMU port, data ports, atomicity, bus errors, latency), LogRing (back-pressure, pointers) and
the traffic engines inside FastTop (translations against the page tables, data in memory,
stop on a fault and resume, squash on an invalidation)."""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

from hdl.config import MmuConfig
from hdl.layouts import MemOp
from pyrmap import pte as P
from pyrmap.arch import InvalKind
from pyrmap.pte import AccessType, FaultKind
from simhw.abi import RECORD_FIELDS, Mode, SwOp
from simhw.fasttop import FastTop
from simhw.memory import SimMemory
from simhw.ring import LogRing
from simhw.traffic import xorshift64

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def run(dut, *benches, deadline=None):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for b in benches:
        sim.add_testbench(b)
    sim.run() if deadline is None else sim.run_until(deadline)


async def mem_op(ctx, port, op, addr, wdata=0, cmp=0, timeout=200):
    ctx.set(port.req.valid, 1)
    ctx.set(port.req.op, op)
    ctx.set(port.req.addr, addr)
    ctx.set(port.req.wdata, wdata)
    ctx.set(port.req.cmp, cmp)
    for _ in range(timeout):
        _, _, ready = await ctx.tick().sample(port.req.ready)
        if ready:
            break
    else:
        raise TimeoutError("request never accepted")
    ctx.set(port.req.valid, 0)
    for n in range(timeout):
        _, _, v, rdata, err = await ctx.tick().sample(port.resp.valid, port.resp.rdata,
                                                      port.resp.err)
        if v:
            return rdata, err, n
    raise TimeoutError("no response")


def unpack(word):
    out = {}
    for name, width in RECORD_FIELDS:
        out[name] = word & ((1 << width) - 1)
        word >>= width
    return out


@pytest.mark.parametrize("latency", [0, 3])
def test_memory_software_port_ops(latency):
    dut = SimMemory(words_log2=8, latency=latency)
    out = []

    async def bench(ctx):
        assert await mem_op(ctx, dut.sw, SwOp.WRITE, 0x40, 0x1234) == (0, 0, latency)
        out.append(await mem_op(ctx, dut.sw, SwOp.READ, 0x40))
        out.append(await mem_op(ctx, dut.sw, SwOp.CAS, 0x40, 0x99, cmp=0x1))     # fails
        out.append(await mem_op(ctx, dut.sw, SwOp.CAS, 0x40, 0x77, cmp=0x1234))  # succeeds
        out.append(await mem_op(ctx, dut.sw, SwOp.XCHG, 0x40, 0x5))
        out.append(await mem_op(ctx, dut.sw, SwOp.READ, 0x40))
        out.append(await mem_op(ctx, dut.sw, SwOp.WRITE, 8 << 8, 0x1))            # outside
        assert ctx.get(dut.ram.storage.data[8]) == 5

    run(dut, bench)
    assert [(d, e) for d, e, _ in out] == [(0x1234, 0), (0x1234, 0), (0x1234, 0), (0x77, 0),
                                          (0x5, 0), (0, 1)]


def write_log(dut, *benches, until=1e-4):
    """Run ``benches`` on SimMemory ``dut``; the (addr, data) of each ``wlog`` pulse."""
    seen = []

    async def watch(ctx):
        async for _, _, v, addr, data in ctx.tick().sample(dut.wlog.valid, dut.wlog.addr,
                                                            dut.wlog.data):
            if v:
                seen.append((addr, data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for b in benches:
        sim.add_testbench(b)
    sim.add_process(watch)
    sim.run_until(until)
    return seen


def test_memory_mmu_writes_are_logged_and_xchg_is_refused():
    dut = SimMemory(words_log2=6)

    async def bench(ctx):
        await mem_op(ctx, dut.mmu, MemOp.WRITE, 0x10, 0xAB)
        await mem_op(ctx, dut.mmu, MemOp.CAS, 0x10, 0xCD, cmp=0xAB)
        await mem_op(ctx, dut.mmu, MemOp.CAS, 0x10, 0xEF, cmp=0xAB)       # fails: no log
        assert (await mem_op(ctx, dut.mmu, SwOp.XCHG, 0x10, 0x1))[1] == 1
        assert (await mem_op(ctx, dut.mmu, MemOp.READ, 0x10))[0] == 0xCD

    assert write_log(dut, bench) == [(0x10, 0xAB), (0x10, 0xCD)]


def test_memory_logs_both_ports_writes_in_the_order_they_happen():
    """A walker's CAS taken just before a software exchange of the same word is logged before
    the exchange's write (software that applied the exchange's value and then the walker's
    record would hold the walker's value: a PTE the kernel cleared still mapping its frame);
    reads and failed compare-and-swaps write nothing and log nothing."""
    dut = SimMemory(words_log2=6, latency=1)

    async def mmu(ctx):
        ctx.set(dut.ram.storage.data[2], 0x100)
        assert (await mem_op(ctx, dut.mmu, MemOp.CAS, 0x10, 0x140, cmp=0x100))[0] == 0x100

    async def sw(ctx):
        await ctx.tick()
        await ctx.tick()          # the walker's CAS is taken first; the exchange waits for it
        assert (await mem_op(ctx, dut.sw, SwOp.XCHG, 0x10, 0x0))[0] == 0x140
        await mem_op(ctx, dut.sw, SwOp.READ, 0x10)
        await mem_op(ctx, dut.sw, SwOp.CAS, 0x10, 0x7, cmp=0x1)                 # fails
        await mem_op(ctx, dut.sw, SwOp.WRITE, 0x18, 0x9)

    assert write_log(dut, mmu, sw) == [(0x10, 0x140), (0x10, 0x0), (0x18, 0x9)]


def test_memory_software_cas_is_atomic_with_the_mmu_cas():
    """Both ports compare-and-swap the same word in the same cycle: exactly one wins."""
    dut = SimMemory(words_log2=6, latency=1)
    res = {}

    async def sw(ctx):
        await ctx.tick()
        res["sw"] = await mem_op(ctx, dut.sw, SwOp.CAS, 0x8, 0x200, cmp=0x100)

    async def mmu(ctx):
        ctx.set(dut.ram.storage.data[1], 0x100)
        await ctx.tick()
        res["mmu"] = await mem_op(ctx, dut.mmu, MemOp.CAS, 0x8, 0x300, cmp=0x100)
        res["final"] = ctx.get(dut.ram.storage.data[1])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sw)
    sim.add_testbench(mmu)
    sim.run()
    wins = [k for k in ("sw", "mmu") if res[k][0] == 0x100]
    assert wins == ["sw"]                     # the software port has priority
    assert res["mmu"][0] == 0x200 and res["final"] == 0x200


def test_memory_mmu_delay_serves_the_software_port_while_a_walker_waits():
    """With ``mmu_delay`` a walker's read takes the word in the cycle after it is accepted and
    answers up to ``mmu_delay`` cycles later: a software exchange of the same word lands and
    answers meanwhile, and the walker's answer is still the old value.  The delays vary and
    stay within the bound; with ``mmu_delay`` 0 the MMU port answers after ``latency``;
    ``overtaken`` counts the one answer whose word the exchange changed."""
    dut = SimMemory(words_log2=6, latency=1)
    res = {"mmu": [], "sw": None}

    async def mmu(ctx):
        ctx.set(dut.mmu_delay, 40)
        ctx.set(dut.ram.storage.data[2], 0x100)
        res["mmu"].append(await mem_op(ctx, dut.mmu, MemOp.READ, 0x10))
        for _ in range(12):
            res["mmu"].append(await mem_op(ctx, dut.mmu, MemOp.READ, 0x18))
        ctx.set(dut.mmu_delay, 0)
        res["plain"] = await mem_op(ctx, dut.mmu, MemOp.READ, 0x18)
        res["overtaken"] = ctx.get(dut.overtaken)

    async def sw(ctx):
        for _ in range(3):
            await ctx.tick()
        res["sw"] = await mem_op(ctx, dut.sw, SwOp.XCHG, 0x10, 0x0)
        res["sw_done"] = res["mmu"] == []

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(mmu)
    sim.add_testbench(sw)
    sim.run_until(1e-3)
    first = res["mmu"][0]
    waits = [n for _, _, n in res["mmu"]]
    assert res["sw"][0] == 0x100 and first[0] == 0x100      # both read the old value
    assert all(1 <= n <= 1 + 40 for n in waits) and len(set(waits)) > 3
    # The walker's first read waits 18 cycles (the LFSR's draw at that cycle): the exchange,
    # three cycles behind it, answered first.
    assert waits[0] > 4 and res["sw_done"]
    assert res["overtaken"] == 1          # the first read's answer, and only it
    assert res["plain"][2] == 1           # the memory's latency


def test_memory_parameters_are_checked():
    with pytest.raises(ValueError, match="Words log2 is 30, which is more than 24"):
        SimMemory(words_log2=30)
    with pytest.raises(TypeError, match="Latency must be an integer of at least 0, not -1"):
        SimMemory(words_log2=4, latency=-1)
    with pytest.raises(ValueError, match="Depth log2 is 0, which is not in"):
        LogRing(width=8, depth_log2=0)


def test_ring_backpressure_and_pointers():
    dut = LogRing(width=16, depth_log2=2)

    async def bench(ctx):
        pushed = 0
        for k in range(6):
            ctx.set(dut.push.valid, 1)
            ctx.set(dut.push.data, 0x100 + k)
            _, _, ready, half = await ctx.tick().sample(dut.push.ready, dut.ctl.half)
            pushed += ready
        ctx.set(dut.push.valid, 0)
        await ctx.tick()
        assert pushed == 4
        assert ctx.get(dut.ctl.wr_ptr) == 4 and ctx.get(dut.ctl.full) == 1
        assert [ctx.get(dut.ram.storage.data[i]) for i in range(4)] == [0x100, 0x101, 0x102,
                                                                        0x103]
        ctx.set(dut.ctl.rd_ptr, 3)
        await ctx.tick()
        assert ctx.get(dut.ctl.half) == 0 and ctx.get(dut.push.ready) == 1

    run(dut, bench)


# --- FastTop: the engines through the real MMU ------------------------------------------------

ROOT = 0x1                    # page-table frames from here
DATA = 0x8                    # data frames from here
BASE = 0x4000_0000


class Tables:
    """Sv39 tables written straight into FastTop's memory array (before the clock runs)."""

    def __init__(self, ctx, ft):
        self.ctx, self.data = ctx, ft.memory.ram.storage.data
        self.next = ROOT + 1

    def read(self, pa):
        return self.ctx.get(self.data[pa >> 3])

    def write(self, pa, v):
        self.ctx.set(self.data[pa >> 3], v)

    def pte_addr(self, va):
        table = ROOT
        for lvl in (2, 1):
            addr = (table << 12) + P.vpn(va, lvl) * 8
            val = self.read(addr)
            if not P.pte_present(val):
                val = P.pte_table(self.next)
                self.next += 1
                self.write(addr, val)
            table = P.pte_pfn(val)
        return (table << 12) + P.vpn(va, 0) * 8

    def map(self, va, ppn, flags=P._PAGE_V | P._PAGE_R | P._PAGE_W | P._PAGE_U):
        self.write(self.pte_addr(va), P.pfn_pte(ppn, flags))


def configure(ctx, ctl, *, mode=Mode.UNIFORM, span_log2=13, store_p=96, limit=200, seed=7):
    for name, value in (("mode", mode), ("base", BASE), ("span_log2", span_log2),
                        ("stride", 8), ("store_p", store_p), ("fetch_p", 0), ("user", 1),
                        ("asid", 1), ("root", ROOT), ("seed", seed), ("limit", limit)):
        ctx.set(getattr(ctl, name), value)


async def drain(ctx, ft, i, rd):
    ring = ft.rings[i]
    wr = ctx.get(ring.ctl.wr_ptr)
    recs = [unpack(ctx.get(ring.ram.storage.data[k % ring.depth])) for k in range(rd, wr)]
    ctx.set(getattr(ft, f"log{i}").rd_ptr, wr)
    return recs, wr


async def run_to_done(ctx, ft, cycles=5000):
    """Load engine 0's seed, run it until ``done`` (or ``cycles``), return its records."""
    e0 = ft.eng0
    ctx.set(e0.load_seed, 1)
    await ctx.tick()
    ctx.set(e0.load_seed, 0)
    ctx.set(e0.run, 1)
    for _ in range(cycles):
        await ctx.tick()
        if ctx.get(e0.done):
            break
    recs, _ = await drain(ctx, ft, 0, 0)
    return recs


def fast_top():
    return FastTop(MmuConfig(ncores=2, tlb_entries=4, tlb_ways=4), words_log2=13,
                   latency=1, log_log2=6, wlog_log2=4)


@pytest.mark.parametrize("mode", [Mode.ZIPF, Mode.STRIDE, Mode.CHASE])
def test_engines_translate_and_access_memory(mode):
    ft = fast_top()
    records = {0: [], 1: []}

    async def bench(ctx):
        t = Tables(ctx, ft)
        for k in range(2):
            t.map(BASE + k * 4096, DATA + k)
        for i in range(2):
            configure(ctx, getattr(ft, f"eng{i}"), mode=mode, seed=3 + i, limit=100)
            ctx.set(getattr(ft, f"eng{i}").load_seed, 1)
        await ctx.tick()
        for i in range(2):
            ctx.set(getattr(ft, f"eng{i}").load_seed, 0)
            ctx.set(getattr(ft, f"eng{i}").run, 1)
        rd = [0, 0]
        watched = [ft.log0.half, ft.log1.half, ft.wlog.half, ft.eng0.done, ft.eng1.done,
                   ft.eng0.faulted, ft.eng1.faulted]
        prev, wake = [0] * len(watched), ctx.get(ft.wake)
        for _ in range(20000):
            await ctx.tick()
            now = [ctx.get(s) for s in watched]
            rose = any(a and not b for a, b in zip(now, prev))
            # wake toggles exactly in the cycles where a watched signal rises
            assert ctx.get(ft.wake) == wake ^ rose
            wake, prev = ctx.get(ft.wake), now
            records["rises"] = records.get("rises", 0) + rose
            for i in range(2):
                if ctx.get(getattr(ft, f"log{i}").half):
                    recs, rd[i] = await drain(ctx, ft, i, rd[i])
                    records[i] += recs
            if all(ctx.get(getattr(ft, f"eng{i}").done) for i in range(2)):
                break
        for i in range(2):
            recs, rd[i] = await drain(ctx, ft, i, rd[i])
            records[i] += recs
        records["mem"] = {a: t.read(a) for a in range(DATA << 12, (DATA + 2) << 12, 8)}

    run(ft, bench)
    assert records.pop("rises") >= 4          # each ring half full at least once, each done
    shadow = {}
    events = sorted(((r["done"], i, r) for i in (0, 1) for r in records[i]),
                    key=lambda e: e[0])
    assert len(events) == 200
    for _, i, r in events:
        assert r["fault"] == FaultKind.NONE
        page = (r["va"] - BASE) >> 12
        assert 0 <= page < 2
        assert r["pa"] == ((DATA + page) << 12) | (r["va"] & 0xFFF)
        assert r["start"] <= r["done"]
        if r["op"] == AccessType.STORE:
            shadow[r["pa"]] = r["data"]
        else:
            assert r["data"] == shadow.get(r["pa"], 0), r
    for pa, v in shadow.items():
        assert records["mem"][pa] == v
    assert any(r["hit"] for _, _, r in events) and any(not r["hit"] for _, _, r in events)
    if mode == Mode.STRIDE:
        offs = [r["va"] - BASE for r in records[0]]
        assert all((b - a) % 8192 == 8 for a, b in zip(offs, offs[1:]))


def test_engine_stops_on_a_fault_and_resumes():
    ft = fast_top()
    seen = {}

    async def bench(ctx):
        t = Tables(ctx, ft)
        t.map(BASE, DATA)                     # the second page of the window is not mapped
        e0 = ft.eng0
        configure(ctx, e0, limit=100)
        ctx.set(e0.load_seed, 1)
        await ctx.tick()
        ctx.set(e0.load_seed, 0)
        ctx.set(e0.run, 1)
        for _ in range(5000):
            await ctx.tick()
            if ctx.get(e0.faulted):
                break
        seen["va"] = ctx.get(e0.fault_va)
        seen["kind"] = ctx.get(e0.fault_kind)
        n = ctx.get(e0.count)
        for _ in range(50):
            await ctx.tick()
        assert ctx.get(e0.count) == n and ctx.get(e0.faulted)      # stopped
        t.map(BASE + 4096, DATA + 1)
        ctx.set(e0.resume, 1)
        await ctx.tick()
        ctx.set(e0.resume, 0)
        recs, rd = await drain(ctx, ft, 0, 0)
        for _ in range(20000):
            await ctx.tick()
            if ctx.get(ft.log0.half):
                more, rd = await drain(ctx, ft, 0, rd)
                recs += more
            if ctx.get(e0.done) or ctx.get(e0.faulted):
                break
        seen["done"] = ctx.get(e0.done)
        more, _ = await drain(ctx, ft, 0, rd)
        seen["recs"] = recs + more

    run(ft, bench)
    assert seen["kind"] == FaultKind.PAGE and seen["va"] >> 12 == (BASE >> 12) + 1
    assert seen["done"] == 1
    faults = [r for r in seen["recs"] if r["fault"]]
    assert len(faults) == 1 and faults[0]["va"] == seen["va"] & ((1 << 48) - 1)
    assert sum(1 for r in seen["recs"] if not r["fault"]) == 100


def test_engine_reexecutes_an_access_an_invalidation_interrupted():
    """Invalidations of everything every 41 cycles: each access that saw an ack between its
    request and its data access is issued again (counted), the squashed attempt is logged
    with ``squashed`` set (one record per squash, none of them counted as an access), and no
    record uses a translation whose invalidation was acknowledged before the request began."""
    ft = fast_top()
    out = {}

    async def bench(ctx):
        t = Tables(ctx, ft)
        t.map(BASE, DATA)
        t.map(BASE + 4096, DATA + 1)
        e0 = ft.eng0
        configure(ctx, e0, limit=60)
        ctx.set(e0.load_seed, 1)
        await ctx.tick()
        ctx.set(e0.load_seed, 0)
        ctx.set(e0.run, 1)
        inv = ft.cpu0.inval
        ctx.set(inv.kind, InvalKind.ALL)
        acks = 0
        recs, rd = [], 0
        for n in range(20000):
            if n % 16 == 0:
                more, rd = await drain(ctx, ft, 0, rd)
                recs += more
            ctx.set(inv.valid, n % 41 < 3)
            _, _, ack = await ctx.tick().sample(inv.ack)
            if ack:
                acks += 1
                ctx.set(inv.valid, 0)
                await ctx.tick()
            if ctx.get(e0.done):
                break
        out["acks"] = acks
        out["squashes"] = ctx.get(e0.squashes)
        more, _ = await drain(ctx, ft, 0, rd)
        out["recs"] = recs + more

    run(ft, bench)
    assert out["squashes"] > 0 and out["acks"] > 10
    squashed = [r for r in out["recs"] if r["squashed"]]
    assert len(out["recs"]) - len(squashed) == 60
    assert len(squashed) == out["squashes"]


def test_engine_replays_a_trace_from_memory():
    ft = fast_top()
    trace_pa = (DATA + 4) << 12
    trace = [(0x10, AccessType.STORE), (0x18, AccessType.LOAD), (0x1008, AccessType.STORE),
             (0x10, AccessType.LOAD)]
    out = {}

    async def bench(ctx):
        t = Tables(ctx, ft)
        t.map(BASE, DATA)
        t.map(BASE + 4096, DATA + 1)
        for k, (off, op) in enumerate(trace):
            t.write(trace_pa + 8 * k, off | op)
        e0 = ft.eng0
        configure(ctx, e0, mode=Mode.TRACE, limit=8)
        ctx.set(e0.trace_base, trace_pa)
        ctx.set(e0.trace_len, len(trace))
        out["recs"] = await run_to_done(ctx, ft)

    run(ft, bench)
    got = [(r["va"] - BASE, r["op"]) for r in out["recs"]]
    assert got == trace * 2
    assert out["recs"][3]["data"] == out["recs"][0]["data"]    # the load sees the store
    assert out["recs"][0]["data"] == xorshift64(7)                # the first draw of seed 7
