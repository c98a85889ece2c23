"""A recorded trace replayed: its VMAs in an engine mm, its records through the traffic engine,
its accesses through the golden MMU under the kernel with reclaim."""

import random

import numpy as np
import pytest

from cosim.explore import trace as tr
from cosim.explore.models import stack_distance_check
from cosim.explore.replay import SPAN_LOG2, TraceReplay
from pyrmap.pte import AccessType
from pyrmap.scenario import System

HEAP, STACK = 0x4000_0000, 0x1f_f000_0000


def synthetic_trace(n=1500, seed=3):
    """A program-like stream: a heap with a drifting hot set, a stack, a read-only table."""
    rng = random.Random(seed)
    va, op, size = [], [], []
    hot = 0
    for k in range(n):
        if k % 200 == 0:
            hot = rng.randrange(40)
        r = rng.random()
        if r < 0.6:
            a, o = HEAP + (hot + rng.randrange(6)) * 4096 + rng.randrange(512) * 8, \
                rng.choice([tr.TraceOp.LOAD, tr.TraceOp.STORE, tr.TraceOp.MODIFY])
        elif r < 0.9:
            a, o = STACK - 8 * rng.randrange(1, 1500), rng.choice([tr.TraceOp.LOAD,
                                                                  tr.TraceOp.STORE])
        else:
            a, o = 0x10_0000 + rng.randrange(3 * 512) * 8, tr.TraceOp.LOAD
        va.append(a), op.append(o), size.append(8)
    va = np.array(va, dtype=np.uint64)
    op = np.array(op, dtype=np.uint8)
    size = np.array(size, dtype=np.uint16)
    gap = np.ones(n, dtype=np.uint32) * 2
    return tr.Trace(va, op, size, gap, 2 * n + 5, tr.derive_vmas(va, size, op),
                    {"format": tr.FORMAT_VERSION, "command": ["synthetic"]})


def test_records_layout_and_instructions():
    rp = TraceReplay(synthetic_trace(100))
    rec = rp.records()
    mask = ((1 << SPAN_LOG2) - 1) & ~7            # as the traffic engine decodes them
    assert ((rec & np.uint64(mask)) == rp.vaddrs(100)).all()
    assert ((rec & np.uint64(3)) == rp.ops()).all()
    modify = rp.trace.op == tr.TraceOp.MODIFY
    assert modify.any() and (rp.ops()[modify] == AccessType.STORE).all()
    assert rp.pages(250)[100:200].tolist() == rp.pages(100).tolist()
    assert rp.instructions(99) == 198 and rp.instructions(100) == 205
    assert rp.instructions(250) == 2 * 205 + 100
    assert rp.memory_layout(1024) == (1023, 1023 << 12)
    with pytest.raises(ValueError, match="leaves the engine 0, fewer than 64"):
        rp.memory_layout(1)
    f = rp.engine_fields(1023 << 12, 500)
    assert f["trace_len"] == 100 and f["span_log2"] == 38 and f["base"] == 0


def test_trace_replays_through_the_golden_mmu_under_reclaim():
    """Every VMA mapped, every fault served by the engine, reclaim running beside it: the
    checkers stay green and the TLB's misses respect the OPT bound on the same stream."""
    rp = TraceReplay(synthetic_trace())
    s = System(seed=5, nframes=48, ncores=1, swap_slots=256, tlb_entries=8)
    mm = s.new_process()
    assert rp.map_into(s, mm) == [v.start for v in rp.trace.vmas]
    n = 3000                                      # two passes over the trace
    wl = s.spawn_workload(0, mm, rp.accesses(n))

    def kswapd():
        for _ in range(6):
            s.reclaim(8)
            s.arch.yield_point("kswapd sleeps")
    s.spawn("kswapd", kswapd)
    s.run()
    st = s.tlb_stats()
    assert wl.stats["loads"] + wl.stats["stores"] == n
    assert wl.stats["faults"] > 0 and s.kernel.stats["pswpout"] > 0     # reclaim swapped
    misses = st["misses"] - wl.stats["faults"]    # the faulting attempts missed too
    check = stack_distance_check(rp.pages(n), misses, entries=8, ways=8)
    assert check["verdict"] == "pass", check
    assert stack_distance_check(rp.pages(n), check["opt_misses"] - 1, entries=8,
                                ways=8)["verdict"] == "fail"


def test_records_replay_on_the_traffic_engine():
    """The records, written into FastTop's memory, come out of the traffic engine's log as the
    trace's word addresses and access types (Amaranth's simulator, the real gateware)."""
    from test_simhw import DATA, Tables, configure, fast_top, run, run_to_done
    ft = fast_top()
    va = np.array([HEAP + 0x18, STACK - 8, HEAP + 0x1ffd, HEAP + 0x1008], dtype=np.uint64)
    op = np.array([tr.TraceOp.STORE, tr.TraceOp.LOAD, tr.TraceOp.MODIFY, tr.TraceOp.LOAD],
                  dtype=np.uint8)
    size = np.full(4, 2, dtype=np.uint16)
    rp = TraceReplay(tr.Trace(va, op, size, np.ones(4, np.uint32), 4,
                              tr.derive_vmas(va, size, op), {"format": 1}))
    trace_pa = (DATA + 4) << 12
    out = {}

    async def bench(ctx):
        t = Tables(ctx, ft)
        for k, page in enumerate(sorted(set(rp.pages(4).tolist()))):
            t.map(page << 12, DATA + k)
        for k, word in enumerate(rp.records().tolist()):
            t.write(trace_pa + 8 * k, word)
        e0 = ft.eng0
        configure(ctx, e0, mode=rp.engine_fields(trace_pa, 6)["mode"], limit=6)
        for name, value in rp.engine_fields(trace_pa, 6).items():
            ctx.set(getattr(e0, name), value)
        out["recs"] = await run_to_done(ctx, ft)

    run(ft, bench)
    assert [r["va"] for r in out["recs"]] == rp.vaddrs(6).tolist()
    assert [r["op"] for r in out["recs"]] == rp.ops()[[0, 1, 2, 3, 0, 1]].tolist()
    assert all(r["fault"] == 0 for r in out["recs"])
