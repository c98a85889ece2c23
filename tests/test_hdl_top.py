"""MemArbiter and Top on Amaranth's simulator: arbitration order, response routing, src; Top's
port names against hdl/PORTS.md; two cores and the device through one memory port."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hdl.arbiter import MemArbiter
from hdl.config import MmuConfig
from hdl.layouts import MemOp
from hdl.top import Top
from pyrmap import pte as P
from pyrmap.arch import InvalKind
from pyrmap.pte import AccessType, FaultKind
from test_hdl_memmodel import MemModel, PageTables, inval, run_sim, translate

V, R, W, U, A, D = P._PAGE_V, P._PAGE_R, P._PAGE_W, P._PAGE_U, P._PAGE_A, P._PAGE_D
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
PORTS_MD = Path(__file__).resolve().parent.parent / "hdl" / "PORTS.md"


async def requester(ctx, port, addrs, out, timeout=500):
    for addr in addrs:
        ctx.set(port.req.valid, 1)
        ctx.set(port.req.op, MemOp.READ)
        ctx.set(port.req.addr, addr)
        for _ in range(timeout):
            _, _, ready = await ctx.tick().sample(port.req.ready)
            if ready:
                break
        ctx.set(port.req.valid, 0)
        for _ in range(timeout):
            _, _, v, rdata, err = await ctx.tick().sample(port.resp.valid, port.resp.rdata,
                                                          port.resp.err)
            if v:
                out.append((addr, rdata, err))
                break
        else:
            raise TimeoutError("no response")


@pytest.mark.parametrize("arbitration", ["round_robin", "fixed"])
def test_arbiter_order_and_routing(arbitration):
    n = 3
    arb = MemArbiter(n, arbitration=arbitration)
    mem = MemModel(arb.mem, latency=2)
    for i in range(n):
        for k in range(4):
            mem.write(0x1000 * (i + 1) + 8 * k, (i << 8) | k)
    outs = [[] for _ in range(n)]
    benches = []
    for i in range(n):
        addrs = [0x1000 * (i + 1) + 8 * k for k in range(4)]

        def make(i=i, addrs=addrs):
            async def bench(ctx):
                await requester(ctx, arb.ports[i], addrs, outs[i])
            return bench
        benches.append(make())
    run_sim(arb, *benches, background=[mem.run])
    for i in range(n):
        assert [rd for _, rd, _ in outs[i]] == [(i << 8) | k for k in range(4)], \
            "each response goes back to its requester"
    srcs = [e[6] for e in mem.log]
    for e in mem.log:
        assert (e[1] >> 12) - 1 == e[6], "src names the requester"
    if arbitration == "round_robin":
        assert srcs[:6] == [0, 1, 2, 0, 1, 2] or srcs[:6] == [1, 2, 0, 1, 2, 0]
    else:
        # requester 0 re-raises valid right after its response: it wins every time it asks
        assert srcs[:4] == [0, 0, 0, 0]


def test_arbiter_parameter_errors():
    with pytest.raises(TypeError, match=r"^Requester count must be a positive integer, not 0$"):
        MemArbiter(0)
    with pytest.raises(ValueError, match=r"^Arbiter has 17 requesters, which is more than 16$"):
        MemArbiter(17)
    with pytest.raises(ValueError, match=r"^Arbitration must be one of 'round_robin', 'fixed', "
                                         r"not 'lottery'$"):
        MemArbiter(2, arbitration="lottery")


# --- Top ---------------------------------------------------------------------------------------

def _ports_md_names(ncores):
    """Every port name PORTS.md's tables list, expanded for ``ncores``."""
    text = PORTS_MD.read_text()
    names = set()
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = "cpu" if "core" in line else "mem" if "Memory" in line else \
                "dev" if "Device" in line else None
        m = re.match(r"\| `([^`]+)`(?: / `([^`]+)`)?", line)
        if not m or section is None:
            continue
        first, second = m.group(1), m.group(2)
        if first.startswith("cpu{i}__perf__{"):
            for c in first[len("cpu{i}__perf__{"):-1].split(","):
                names |= {f"cpu{i}__perf__{c}" for i in range(ncores)}
            continue
        if first.startswith("dev__perf__{"):
            names |= {f"dev__perf__{c}" for c in first[len("dev__perf__{"):-1].split(",")}
            continue
        if first == "dev__inval__…":
            names |= {f"dev__inval__{f}" for f in ("valid", "kind", "vaddr", "asid", "ack")}
            continue
        groups = [first] + ([second] if second else [])
        expanded = []
        for g in groups:
            for part in re.split(r"`, `", g):
                expanded.append(part)
        base = None
        for part in expanded:
            if part.startswith("__"):
                part = base + part
            else:
                base = part.rsplit("__", 1)[0]
            if "{i}" in part:
                names |= {part.replace("{i}", str(i)) for i in range(ncores)}
            else:
                names.add(part)
    return names


def _top_port_names(top):
    return {"__".join(str(p) for p in path) for path, _, _ in top.signature.flatten(top)}


def test_top_ports_match_ports_md():
    top = Top(ncores=2)
    expect = _ports_md_names(2)
    have = _top_port_names(top)
    # the dev fill/young/fault rows list several fields in one cell
    line_fields = {
        "dev__req": ["vaddr", "op", "asid"],
        "dev__fault": ["vaddr", "asid", "op"],
        "dev__fill": ["vaddr", "asid", "ppn", "level", "perm", "g"],
        "dev__young": ["vaddr", "asid"],
    }
    for base, fields in line_fields.items():
        expect |= {f"{base}__{f}" for f in fields}
    missing = {n for n in expect if n not in have}
    assert not missing, f"ports in PORTS.md but not on Top: {sorted(missing)}"
    assert len(expect) > 80
    for name in ("mem__req__src", "cpu1__perf__squashed", "dev__young__young",
                 "dev__fill__ready", "cpu0__inval__ack"):
        assert name in have


def test_top_port_widths():
    top = Top(ncores=3, asid_bits=12)
    sigs = {"__".join(str(p) for p in path): len(value)
            for path, _, value in top.signature.flatten(top)}
    assert sigs["cpu2__req__vaddr"] == 64
    assert sigs["cpu2__req__asid"] == 12
    assert sigs["cpu0__req__root"] == 44
    assert sigs["cpu0__resp__paddr"] == 56
    assert sigs["mem__req__addr"] == 56
    assert sigs["mem__req__src"] == 4
    assert sigs["dev__fill__perm"] == 4
    assert sigs["dev__fill__asid"] == 12
    assert sigs["cpu1__perf__walk_cycles"] == 32


def test_two_cores_and_device_share_memory():
    top = Top(ncores=2, tlb_entries=4, tlb_ways=4)
    mem = MemModel(top.mem, latency=(1, 3), seed=5)
    pt = PageTables(mem)
    leaves = [pt.map(0x1000 * (k + 1), 0x500 + k, flags=V | R | W | U) for k in range(6)]
    res = {0: [], 1: []}

    def cpu(i):
        async def bench(ctx):
            port = getattr(top, f"cpu{i}")
            for k in range(6):
                op = AccessType.STORE if (k + i) % 2 else AccessType.LOAD
                res[i].append((k, op, await translate(ctx, port, 0x1000 * (k + 1) + 8 * i, op,
                                                      asid=i)))
            res[i].append({n: ctx.get(getattr(port.perf, n)) for n in ("walks", "a_sets",
                                                                        "d_sets")})
        return bench

    run_sim(top, cpu(0), cpu(1), background=[mem.run])
    for i in (0, 1):
        for k, op, r in res[i][:-1]:
            assert r.fault == FaultKind.NONE, f"core {i} page {k}"
            assert r.paddr == ((0x500 + k) << 12) + 8 * i
    srcs = {e[6] for e in mem.log}
    assert srcs == {0, 1}, "both walkers used the one memory port"
    for k, leaf in enumerate(leaves):
        assert mem.read(leaf) & A
        # D set exactly when one of the cores stored to it
        assert bool(mem.read(leaf) & D) == any((k + i) % 2 for i in (0, 1))
    total_a = res[0][-1]["a_sets"] + res[1][-1]["a_sets"]
    assert total_a == 6, "A set once per page: the loser of a race sees A already set"


def test_top_device_and_inval():
    top = Top(ncores=1)
    mem = MemModel(top.mem)
    out = {}

    async def bench(ctx):
        d = top.dev
        ctx.set(d.req.vaddr, 0x3000)
        ctx.set(d.req.op, AccessType.LOAD)
        ctx.set(d.req.valid, 1)
        await ctx.tick()
        ctx.set(d.req.valid, 0)
        _, _, v, fault = await ctx.tick().sample(d.resp.valid, d.resp.fault)
        out["miss"] = (v, fault, ctx.get(d.fault.valid), ctx.get(d.fault.vaddr))
        out["inval_cycles"] = await inval(ctx, d.inval, InvalKind.ALL)
        out["invals"] = ctx.get(d.perf.invals)

    run_sim(top, bench, background=[mem.run])
    assert out["miss"] == (1, FaultKind.MISS, 1, 0x3000)
    assert out["invals"] == 1


@pytest.mark.parametrize("quirk", ["quirk_plain_ad_write", "quirk_ad_on_nonpresent",
                                   "quirk_fill_after_inval", "quirk_walk_answer_after_inval",
                                   "quirk_inval_clear_late"])
def test_top_passes_quirks_down(quirk):
    top = Top(**{quirk: True})
    for core in top.cores:
        flags = {"quirk_fill_after_inval": core.quirk_fill_after_inval,
                 "quirk_plain_ad_write": core.walker.quirk_plain_ad_write,
                 "quirk_ad_on_nonpresent": core.walker.quirk_ad_on_nonpresent,
                 "quirk_walk_answer_after_inval": core.quirk_walk_answer_after_inval,
                 "quirk_inval_clear_late": core.quirk_inval_clear_late}
        assert [k for k, v in flags.items() if v] == [quirk]
    assert top.device.quirk_inval_clear_late == (quirk == "quirk_inval_clear_late")


def test_package_exports():
    import hdl
    assert hdl.Top is Top and hdl.MmuConfig is MmuConfig
    assert hdl.MemArbiter is MemArbiter
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        hdl.Nope


def test_layouts_follow_pyrmap_pte():
    from hdl.layouts import (PTE_LAYOUT, pack_tlb_entry, tlb_entry_to_arch, unpack_pte,
                             unpack_tlb_entry)
    val = P.pfn_pte(0xABCDE, V | R | W | U | A) | (1 << 63)
    f = unpack_pte(val)
    assert (f["v"], f["r"], f["w"], f["x"], f["u"], f["a"], f["d"]) == (1, 1, 1, 0, 1, 1, 0)
    assert f["ppn"] == 0xABCDE and f["reserved"] == 1 << 9
    assert PTE_LAYOUT.size == 64 and PTE_LAYOUT["ppn"].offset == P.PPN_SHIFT
    word = pack_tlb_entry(9, vpn=0x123, asid=7, ppn=0x456, level=1, r=1, w=1, g=1, a=1)
    assert unpack_tlb_entry(9, word)["asid"] == 7
    e = tlb_entry_to_arch(9, word)
    assert (e.vpn, e.asid, e.ppn, e.level, e.perm, e.g, e.a, e.d) == \
        (0x123, 7, 0x456, 1, R | W, True, True, False)
    assert tlb_entry_to_arch(9, pack_tlb_entry(9, valid=0)) is None
    with pytest.raises(ValueError, match=r"field 'asid' value 0x200 does not fit in 9 bits"):
        pack_tlb_entry(9, asid=0x200)
