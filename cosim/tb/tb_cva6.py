"""cocotb tests of ``top`` built with ``mmu="cva6"`` (CVA6's Sv39 MMU behind hdl.cva6's shim).

Run through :func:`cosim.build.run` (``tests/test_cva6.py``) on Verilator.  ``test_walk``
drives one core through a directed sequence and asserts CVA6's behaviour as the shim presents
it on our ports: a 3-level walk of three reads and no writes (Svade), a hit the next cycle, a
store to a clean entry faulting from the TLB, an sfence.vma by VA+ASID making the next access
walk again, and a load of a page with A=0 faulting.  Its report (``cva6_walk``) keeps the
measured cycles.

``test_mxr_canonical`` runs on either core MMU (``mmu="ours"`` or ``"cva6"``, Svade): loads
of an execute-only page with mstatus.MXR set and then clear (a hit, then a walk), and loads and
a fetch at non-canonical addresses (a hit on the canonical address's entry, and cold walks).
It asserts nothing of the MMU: it reports each response (``mxr_canonical``: fault, hit,
physical address, walker reads) and the violation kinds the golden-walk scoreboard found on
it, for tests/test_cva6.py to hold each MMU to its documented behaviour (docs/cva6.md).
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.triggers import RisingEdge

from pyrmap.arch import InvalKind
from pyrmap.physmem import PhysMem
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X,
                        AccessType, FaultKind, pfn_pte)

from ..dut import reset, write_report
from ..scoreboard import CpuTxn, InvalTxn, MmuScoreboard
from ..memory import SW, Latency, MemOp, MemoryResponder, cycle_now
from .tables import three_levels


def _params() -> dict:
    return json.loads(os.environ.get("COSIM_CONFIG", "{}"))


def _seed() -> int:
    return int(os.environ.get("COSIM_SEED", "1"))


class _Core:
    """Core 0's CPU and invalidation ports, one request at a time."""

    def __init__(self, dut, root: int, asid: int):
        self.dut, self.root, self.asid = dut, root, asid

    async def access(self, op: AccessType, vaddr: int, mxr: bool = False) -> dict:
        dut = self.dut
        dut.cpu0__req__vaddr.value = vaddr
        dut.cpu0__req__op.value = int(op)
        dut.cpu0__req__user.value = 1
        dut.cpu0__req__sum.value = 0
        dut.cpu0__req__mxr.value = int(mxr)
        dut.cpu0__req__asid.value = self.asid
        dut.cpu0__req__root.value = self.root
        dut.cpu0__req__valid.value = 1
        while True:
            await RisingEdge(dut.clk)
            if int(dut.cpu0__req__ready.value):
                break
        start = cycle_now()
        dut.cpu0__req__valid.value = 0
        while True:
            await RisingEdge(dut.clk)
            if int(dut.cpu0__resp__valid.value):
                break
        return {"cycles": cycle_now() - start, "req_cycle": start, "resp_cycle": cycle_now(),
                "paddr": int(dut.cpu0__resp__paddr.value),
                "fault": FaultKind(int(dut.cpu0__resp__fault.value)),
                "hit": bool(int(dut.cpu0__resp__hit.value))}

    async def inval(self, kind: InvalKind, vaddr: int, sb=None) -> int:
        """One invalidation; returns the cycles to its ack (and tells ``sb``, a
        :class:`cosim.scoreboard.MmuScoreboard`, when given)."""
        dut = self.dut
        dut.cpu0__inval__kind.value = int(kind)
        dut.cpu0__inval__vaddr.value = vaddr
        dut.cpu0__inval__asid.value = self.asid
        dut.cpu0__inval__valid.value = 1
        start = cycle_now()
        while True:
            await RisingEdge(dut.clk)
            if int(dut.cpu0__inval__ack.value):
                break
        dut.cpu0__inval__valid.value = 0
        if sb is not None:
            inv = InvalTxn(0, kind, vaddr, self.asid, start + 1, cycle_now())
            sb.on_inval_request(inv)
            sb.on_inval_ack(inv)
        return cycle_now() - start


@cocotb.test()
async def test_walk(dut):
    """Directed: walk, hit, store fault from the TLB, sfence.vma, A=0 fault (Svade)."""
    ncores = int(_params().get("ncores", 2))
    mem = PhysMem(16)
    root, l1, l0 = 1, 2, 3
    va = 0x4020_3000
    leaf = three_levels(mem, va, root, l1, l0)
    clean = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U | _PAGE_A
    mem.write(leaf, pfn_pte(0x1234, clean))
    va_young = va + 0x1000                 # the next page: A=0
    mem.write(leaf + 8, pfn_pte(0x1235, clean & ~_PAGE_A))
    responder = MemoryResponder(dut, mem, Latency(_seed(), fast=(0, 0), p_slow=0.0))
    await reset(dut, ncores)
    responder.start()
    core = _Core(dut, root, asid=5)

    def hw_reads() -> list:
        return [t for t in responder.log if t.src != SW]

    walk = await core.access(AccessType.LOAD, va + 0x18)
    reads = hw_reads()
    assert (walk["fault"], walk["hit"], walk["paddr"]) == (FaultKind.NONE, False, 0x1234018), walk
    assert [t.op for t in reads] == [MemOp.READ] * 3, [t.describe() for t in reads]
    assert [t.addr for t in reads] == [(root << 12) + 8, (l1 << 12) + 8, leaf], \
        [t.describe() for t in reads]
    from ..cva6 import Cva6TlbReader
    reader = Cva6TlbReader(dut, ncores, 9, 8, 0, 8)
    entries = reader.core(0)
    assert [(e.vpn, e.asid, e.ppn, e.level, e.a, e.d) for e in entries] == \
        [(va >> 12, 5, 0x1234, 0, True, False)], entries
    hit = await core.access(AccessType.LOAD, va + 0x20)
    assert (hit["fault"], hit["hit"], hit["paddr"]) == (FaultKind.NONE, True, 0x1234020), hit
    assert hit["cycles"] == 1, f"a DTLB hit answers the next cycle, not after {hit['cycles']}"
    store = await core.access(AccessType.STORE, va + 0x28)
    assert (store["fault"], store["hit"]) == (FaultKind.PAGE, True), \
        f"a store to a clean cached entry faults from the TLB: {store}"
    assert len(hw_reads()) == 3, "the store fault made a walker read"
    mem.write(leaf, pfn_pte(0x1234, clean | _PAGE_D))
    ack = await core.inval(InvalKind.VA_ASID, va)
    store2 = await core.access(AccessType.STORE, va + 0x30)
    assert (store2["fault"], store2["hit"], store2["paddr"]) == \
        (FaultKind.NONE, False, 0x1234030), store2
    assert len(hw_reads()) == 6, [t.describe() for t in hw_reads()]
    young = await core.access(AccessType.LOAD, va_young)
    assert (young["fault"], young["hit"]) == (FaultKind.PAGE, False), young
    assert all(t.op == MemOp.READ for t in hw_reads()), "CVA6's walker wrote memory"
    assert mem.read(leaf + 8) & _PAGE_A == 0
    await RisingEdge(dut.clk)             # the counters count the last response at this edge
    perf = {name: int(getattr(dut, f"cpu0__perf__{name}").value)
            for name in ("lookups", "hits", "misses", "walks", "invals", "a_sets")}
    assert perf == {"lookups": 5, "hits": 2, "misses": 3, "walks": 3, "invals": 1,
                    "a_sets": 0}, perf
    write_report(under="cva6_walk", data={"walk_cycles": walk["cycles"], "hit_cycles": hit["cycles"],
                               "walk_reads": 3, "inval_ack_cycles": ack,
                               "store_after_sfence_cycles": store2["cycles"]})


#: A non-canonical Sv39 address: bit 45 set above a bit 38 that is clear.
NON_CANONICAL = 1 << 45


@cocotb.test()
async def test_mxr_canonical(dut):
    """Directed, on either MMU: MXR on a TLB hit, and non-canonical addresses (see the module
    docstring); reports what the MMU answered and what the scoreboard made of it."""
    params = _params()
    ncores = int(params.get("ncores", 2))
    mmu = params.get("mmu", "ours")
    mem = PhysMem(16)
    root, l1, l0 = 1, 2, 3
    va_x, va_rw = 0x4020_5000, 0x4020_3000
    leaf_x = three_levels(mem, va_x, root, l1, l0)
    mem.write(leaf_x, pfn_pte(0x2000, _PAGE_V | _PAGE_X | _PAGE_U | _PAGE_A))
    leaf_rw = three_levels(mem, va_rw, root, l1, l0)
    mem.write(leaf_rw, pfn_pte(0x1234, _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_X | _PAGE_U
                               | _PAGE_A | _PAGE_D))
    responder = MemoryResponder(dut, mem, Latency(_seed(), fast=(0, 0), p_slow=0.0))
    sb = MmuScoreboard(ncores, svadu=bool(params.get("svadu", True)), mem_log=responder.log,
                       by_src=responder.by_src, initial_words=mem.words,
                       asid_bits=int(params.get("asid_bits", 9)), mmu=mmu)
    await reset(dut, ncores)
    responder.start()
    core = _Core(dut, root, asid=5)
    out = {}

    async def case(name: str, op: AccessType, vaddr: int, mxr: bool = False) -> None:
        reads = len(responder.by_src.get(0, []))
        r = await core.access(op, vaddr, mxr)
        before = len(sb.violations)
        sb.on_cpu(CpuTxn(0, vaddr, op, True, False, 5, root, r["req_cycle"], r["resp_cycle"],
                         r["paddr"], r["fault"], r["hit"], mxr))
        out[name] = {"op": op.name, "vaddr": hex(vaddr), "mxr": mxr, "fault": r["fault"].name,
                     "hit": r["hit"], "paddr": hex(r["paddr"]),
                     "walker_reads": len(responder.by_src.get(0, [])) - reads,
                     "scoreboard": sorted({v.kind for v in sb.violations[before:]})}

    await case("x_only_load_mxr1_walk", AccessType.LOAD, va_x + 8, mxr=True)
    await case("x_only_load_mxr0_hit", AccessType.LOAD, va_x + 8)
    await core.inval(InvalKind.ALL, 0, sb)
    await case("x_only_load_mxr0_walk", AccessType.LOAD, va_x + 8)
    await case("canonical_load_walk", AccessType.LOAD, va_rw + 16)
    await case("non_canonical_load_hit", AccessType.LOAD, va_rw + 16 + NON_CANONICAL)
    await core.inval(InvalKind.ALL, 0, sb)
    await case("non_canonical_load_walk", AccessType.LOAD, va_rw + 24 + NON_CANONICAL)
    await core.inval(InvalKind.ALL, 0, sb)
    await case("non_canonical_fetch_walk", AccessType.FETCH, va_rw + 32 + NON_CANONICAL)
    await RisingEdge(dut.clk)
    write_report(under="mxr_canonical", data={"mmu": mmu, "cases": out})
