"""DeviceMmu on Amaranth's simulator: miss → fault record, fill, young test-and-clear,
permissions, invalidation, counters, and a seeded lockstep comparison with SoftArch's
DeviceTlb."""

from __future__ import annotations

import random

import pytest

from hdl.device import DEVICE_COUNTERS, DeviceMmu
from hdl.layouts import PERM_R, PERM_W, PERM_X, unpack_tlb_entry
from pyrmap import pte as P
from pyrmap.arch import InvalKind, TlbEntry
from pyrmap.pte import AccessType, FaultKind
from pyrmap.softarch import DeviceTlb
from test_hdl_memmodel import inval, run_sim

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

LOAD, STORE, FETCH = AccessType.LOAD, AccessType.STORE, AccessType.FETCH


async def dev_access(ctx, dut, vaddr, op, asid=0, timeout=50):
    req, resp = dut.req, dut.resp
    ctx.set(req.vaddr, vaddr)
    ctx.set(req.op, op)
    ctx.set(req.asid, asid)
    ctx.set(req.valid, 1)
    for _ in range(timeout):
        _, _, ready = await ctx.tick().sample(req.ready)
        if ready:
            break
    ctx.set(req.valid, 0)
    for _ in range(timeout):
        _, _, v, fault, paddr = await ctx.tick().sample(resp.valid, resp.fault, resp.paddr)
        if v:
            return FaultKind(fault), paddr
    raise TimeoutError("no device response")


async def dev_fill(ctx, dut, vaddr, ppn, *, asid=0, level=0, perm=PERM_R | PERM_W, g=0,
                   timeout=50):
    f = dut.fill
    for name, val in dict(vaddr=vaddr, asid=asid, ppn=ppn, level=level, perm=perm, g=g).items():
        ctx.set(getattr(f, name), val)
    ctx.set(f.valid, 1)
    for _ in range(timeout):
        _, _, ready = await ctx.tick().sample(f.ready)
        if ready:
            ctx.set(f.valid, 0)
            return
    raise TimeoutError("fill never accepted")


async def dev_young(ctx, dut, vaddr, asid=0, timeout=50):
    y = dut.young
    ctx.set(y.vaddr, vaddr)
    ctx.set(y.asid, asid)
    ctx.set(y.valid, 1)
    for _ in range(timeout):
        _, _, ack, young = await ctx.tick().sample(y.ack, y.young)
        if ack:
            ctx.set(y.valid, 0)
            return bool(young)
    raise TimeoutError("young never acknowledged")


def fault_record(ctx, dut):
    f = dut.fault
    if not ctx.get(f.valid):
        return None
    return ctx.get(f.vaddr), ctx.get(f.asid), AccessType(ctx.get(f.op))


async def ack_fault(ctx, dut):
    ctx.set(dut.fault.ack, 1)
    await ctx.tick()
    ctx.set(dut.fault.ack, 0)


def perf(ctx, dut):
    return {n: ctx.get(getattr(dut.perf, n)) for n in DEVICE_COUNTERS}


def test_miss_fill_hit_young():
    dut = DeviceMmu()
    out = {}

    async def bench(ctx):
        out["miss"] = await dev_access(ctx, dut, 0x5123, STORE, asid=4)
        out["rec"] = fault_record(ctx, dut)
        out["miss2"] = await dev_access(ctx, dut, 0x9000, LOAD, asid=4)
        out["rec2"] = fault_record(ctx, dut)          # still the first one
        await ack_fault(ctx, dut)
        out["rec3"] = fault_record(ctx, dut)
        await dev_fill(ctx, dut, 0x5000, 0x321, asid=4)
        out["young0"] = await dev_young(ctx, dut, 0x5000, asid=4)
        out["hit"] = await dev_access(ctx, dut, 0x5123, STORE, asid=4)
        out["other_asid"] = await dev_access(ctx, dut, 0x5123, LOAD, asid=5)
        await ack_fault(ctx, dut)
        out["young1"] = await dev_young(ctx, dut, 0x5fff, asid=4)
        out["young2"] = await dev_young(ctx, dut, 0x5000, asid=4)
        out["young_none"] = await dev_young(ctx, dut, 0x7000, asid=4)
        out["perf"] = perf(ctx, dut)

    run_sim(dut, bench)
    assert out["miss"] == (FaultKind.MISS, 0)
    assert out["rec"] == (0x5123, 4, STORE)
    assert out["miss2"][0] == FaultKind.MISS and out["rec2"] == (0x5123, 4, STORE)
    assert out["rec3"] is None
    assert out["young0"] is False, "a fresh entry is not young"
    assert out["hit"] == (FaultKind.NONE, 0x321123)
    assert out["other_asid"][0] == FaultKind.MISS
    assert (out["young1"], out["young2"], out["young_none"]) == (True, False, False)
    p = out["perf"]
    assert p == dict(lookups=4, hits=1, misses=3, fills=1, invals=0, young_clears=1)


def test_permissions_and_superpage():
    dut = DeviceMmu()
    out = []

    async def bench(ctx):
        await dev_fill(ctx, dut, 0x4020_0000, 0x400, level=1, perm=PERM_R)
        await dev_fill(ctx, dut, 0x1000, 0x11, perm=PERM_X)
        out.append(await dev_access(ctx, dut, 0x4021_2345, LOAD))
        out.append(await dev_access(ctx, dut, 0x4021_2345, STORE))   # needs W
        out.append(await dev_access(ctx, dut, 0x1008, FETCH))
        out.append(await dev_access(ctx, dut, 0x1008, LOAD))         # needs R
        out.append(await dev_access(ctx, dut, 0x1008 | (1 << 45), LOAD))   # non-canonical
        out.append(ctx.get(dut.fault.valid))

    run_sim(dut, bench)
    assert out[0] == (FaultKind.NONE, (0x400 << 12) + 0x1_2345)
    assert out[1][0] == FaultKind.PAGE
    assert out[2] == (FaultKind.NONE, 0x11008)
    assert out[3][0] == FaultKind.PAGE
    assert out[4][0] == FaultKind.PAGE
    assert out[5] == 0, "permission and canonical faults raise no fault record"


def test_fill_replaces_instead_of_duplicating():
    dut = DeviceMmu(entries=4)
    out = {}

    async def bench(ctx):
        await dev_fill(ctx, dut, 0x1000, 0x11, perm=PERM_R)
        await dev_fill(ctx, dut, 0x1000, 0x22, perm=PERM_R | PERM_W)
        out["acc"] = await dev_access(ctx, dut, 0x1000, STORE)
        out["valid"] = [unpack_tlb_entry(9, ctx.get(s.as_value()))["valid"]
                        for s in dut.tlb.entry_signals]

    run_sim(dut, bench)
    assert out["acc"] == (FaultKind.NONE, 0x22000)
    assert sum(out["valid"]) == 1


@pytest.mark.parametrize("kind,va,asid,left", [
    (InvalKind.ALL, 0, 0, []),
    (InvalKind.VA, 0x1000, 0, [0x2000, 0x3000]),
    (InvalKind.ASID, 0, 1, [0x3000]),
    (InvalKind.VA_ASID, 0x3000, 7, [0x1000, 0x2000]),
], ids=["all", "va", "asid", "va-asid-global"])
def test_device_inval(kind, va, asid, left):
    dut = DeviceMmu()
    out = {}

    async def bench(ctx):
        await dev_fill(ctx, dut, 0x1000, 0x11, asid=1)
        await dev_fill(ctx, dut, 0x2000, 0x22, asid=1)
        await dev_fill(ctx, dut, 0x3000, 0x33, asid=1, g=1)
        await inval(ctx, dut.inval, kind, va, asid)
        res = []
        for v in (0x1000, 0x2000, 0x3000):
            fault, _ = await dev_access(ctx, dut, v, LOAD, asid=1)
            await ack_fault(ctx, dut)
            if fault == FaultKind.NONE:
                res.append(v)
        out["left"] = res
        out["invals"] = ctx.get(dut.perf.invals)

    run_sim(dut, bench)
    assert out["left"] == left
    assert out["invals"] == 1


def test_fill_not_accepted_while_invalidating():
    dut = DeviceMmu()
    out = []

    async def bench(ctx):
        ctx.set(dut.inval.valid, 1)
        ctx.set(dut.inval.kind, InvalKind.ALL)
        ctx.set(dut.fill.valid, 1)
        _, _, apply_ready = await ctx.tick().sample(dut.fill.ready)
        out.append(apply_ready)
        ctx.set(dut.inval.valid, 0)
        ctx.set(dut.fill.valid, 0)

    run_sim(dut, bench)
    assert out == [0]


# --- lockstep with the golden DeviceTlb ------------------------------------------------------

def _device_lockstep(seed, nops=80, golden_entries=8):
    rng = random.Random(seed)
    golden = DeviceTlb(golden_entries, 9, rng=random.Random(seed))
    dut = DeviceMmu(entries=8)
    pages = [(rng.randrange(1 << 20) << 12, rng.choice([0, 0, 0, 1])) for _ in range(14)]
    pages = [(va & ~((1 << (12 + 9 * lvl)) - 1), lvl) for va, lvl in pages]
    ops = []
    for _ in range(nops):
        r = rng.random()
        va, lvl = rng.choice(pages)
        asid = rng.randrange(3)
        if r < 0.3:
            ops.append(("fill", va, asid, rng.randrange(1, 1 << 16) << (9 * lvl), lvl,
                        rng.choice([2, 4, 6, 8 | 2, 2 | 4 | 8]), rng.random() < 0.1))
        elif r < 0.75:
            ops.append(("access", va + (rng.randrange(1 << (12 + 9 * lvl)) & ~7),
                        rng.choice(list(AccessType)), asid))
        elif r < 0.9:
            ops.append(("young", va, asid))
        else:
            ops.append(("inval", InvalKind(rng.randrange(4)), va, asid))
    got = []

    async def bench(ctx):
        for op in ops:
            if op[0] == "fill":
                _, va, asid, ppn, lvl, perm, g = op
                await dev_fill(ctx, dut, va, ppn, asid=asid, level=lvl, perm=perm >> 1, g=int(g))
                got.append(None)
            elif op[0] == "access":
                got.append(await dev_access(ctx, dut, op[1], op[2], op[3]))
                got.append(fault_record(ctx, dut))
                if rng.random() < 0.5:
                    await ack_fault(ctx, dut)
                    got.append("acked")
                else:
                    got.append("kept")
            elif op[0] == "young":
                got.append(await dev_young(ctx, dut, op[1], op[2]))
            else:
                await inval(ctx, dut.inval, op[1], op[2], op[3])
                got.append(None)
        await ctx.tick().repeat(2)          # a fill's write lands the cycle after its handshake
        got.append(perf(ctx, dut))
        ents = []
        for s in dut.tlb.entry_signals:
            f = unpack_tlb_entry(9, ctx.get(s.as_value()))
            if f["valid"]:
                perm = (f["r"] << 1) | (f["w"] << 2) | (f["x"] << 3) | (f["u"] << 4)
                ents.append(TlbEntry(f["vpn"], f["asid"], f["ppn"], f["level"], perm,
                                     bool(f["g"]), bool(f["young"]), bool(f["d"])))
        got.append(ents)

    run_sim(dut, bench)
    it = iter(got)
    for op in ops:
        where = f"seed={seed} op={op}"
        if op[0] == "fill":
            _, va, asid, ppn, lvl, perm, g = op
            golden.fill(va, asid, ppn, lvl, perm, g)
            next(it)
        elif op[0] == "access":
            assert next(it) == golden.access(op[1], op[2], op[3]), where
            assert next(it) == golden.fault, where
            if next(it) == "acked":
                golden.ack_fault()
        elif op[0] == "young":
            assert next(it) == golden.young(op[1], op[2]), where
        else:
            golden.inval(op[1], op[2], op[3])
            next(it)
    counters, entries = next(it), next(it)
    assert counters == dict(golden.perf), f"seed={seed}"
    assert sorted(entries, key=repr) == sorted(golden.entries(), key=repr), f"seed={seed}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_device_lockstep_with_softarch(seed):
    _device_lockstep(seed)


def test_device_lockstep_checker_catches_a_mismatch():
    # A golden TLB of 2 entries evicts where the 8-entry RTL does not: the comparison fails.
    with pytest.raises(AssertionError, match="seed=1"):
        _device_lockstep(1, golden_entries=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 30))
def test_device_lockstep_with_softarch_long(seed):
    _device_lockstep(seed, nops=300)
