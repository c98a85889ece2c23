"""cocotb test of ``top``'s invalidation guarantee, cycle by cycle, against the golden model.

The guarantee (hdl/PORTS.md): from the cycle a core's or the device's ``inval.ack`` pulses, no
response leaves that port that was derived from a PTE read or a TLB entry older than the
invalidation.  The MMU keeps it by itself; no requester re-executes anything.

Each *scenario* holds a request on the port in **every** cycle (``valid`` never drops, so
requests are accepted back to back whenever the port is ready), and ``offset`` cycles after the
stream starts, software changes the leaf PTE (remap to another frame, write-protect or unmap)
and raises an invalidation that covers it.  Sweeping the offset cycle by cycle puts the
invalidation before the first request, on every cycle of a walk in flight (the read of each
level, the check, the A/D compare-and-swap, the last cycle), on hits, in the ack cycle and
after it; the memory latency is varied so each walk state lasts several cycles.  Cold
scenarios start with an empty TLB (walks in flight; the leaf clean, so the walk ends in a
compare-and-swap, or dirty, so it answers right after reading the leaf), warm ones with a dirty
entry (hits).

Every response is compared with :func:`pyrmap.walk.sv39_walk` on the PTEs: a response in or
after the ack cycle must equal the walk of the PTEs *as changed*; one before it may equal the
walk of the old PTEs or of the new ones.  The device port gets the same sweep: a filled entry,
a device request in every cycle, a device invalidation at every offset; from the ack on, the
golden :class:`pyrmap.softarch.DeviceTlb` (invalidated) answers MISS.  The
:class:`~cosim.scoreboard.MmuScoreboard` also sees every CPU transaction (walk replay, stale
hits, stale responses, memory, counters).

Environment (besides COSIM_SEED / COSIM_CONFIG / COSIM_REPORT, see :mod:`cosim.tb.tb_mmu`):

``COSIM_INVAL_SWEEP``   ``quick`` (default: 3 latencies, every offset, the change and the
                        invalidation kind rotating with the offset) or ``full`` (6 latencies,
                        every change x every kind x every offset)

The report (``test_inval_timing``) lists the violations, their kinds, the scenarios run and
the *coverage* of where the invalidation was applied (``idle``, ``read L2/L1/L0``, ``cas``,
``between`` for the cycles of a walk between memory transactions, ``hit``), and in which
state of core 0's walker FSM and core FSM, by name (``walker_states``: READ, READ_WAIT, CHECK,
CAS, CAS_WAIT, DONE...; the names come from ``COSIM_STATES``, the build's
``top.states.json``).

The same sweep runs on a Svade configuration (``svadu=False``) and on CVA6's MMU
(``mmu="cva6"``, Svade): the leaves then start with A set (a clean one: loads translate,
stores fault; a dirty one: both translate), a remap installs a dirty leaf, the golden walk is
Svade's and no invalidation can land on a CAS (none is made).  On CVA6 the walker states are
those of its ``ptw.sv`` (:data:`cosim.cva6.PTW_STATES`, read from
``core0.mmu.i_mmu.i_ptw.state_q``) and there is no core FSM; the scoreboard judges CVA6 by its
own choices (:data:`cosim.scoreboard.MMU_BEHAVIOURS`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from pyrmap.arch import InvalKind
from pyrmap.physmem import PhysMem
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, AccessType,
                        FaultKind, pfn_pte, pte_table)
from pyrmap.softarch import DeviceTlb
from pyrmap.walk import sv39_walk

from ..memory import Latency, MemoryResponder, cycle_now
from ..scoreboard import CpuTxn, InvalTxn, MmuScoreboard
from ..dut import reset, write_report
from .tb_mmu import _params, _seed, core_counters

ROOT, L1, L0 = 1, 2, 3
VA = 0x4020_3000
ASID = 5
OLD_PPN, NEW_PPN = 0x1234, 0x5678
LEAF = (L0 << 12) + ((VA >> 12) & 511) * 8
LEVEL_OF_TABLE = {ROOT: "L2", L1: "L1", L0: "L0"}
RWU = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U
CHANGES = ("remap", "wrprotect", "unmap")
KINDS = (InvalKind.VA_ASID, InvalKind.VA, InvalKind.ASID, InvalKind.ALL)
OPS = (AccessType.LOAD, AccessType.STORE)
#: Where an invalidation can land; every bin must be hit by a sweep.
WHERE = ("idle", "hit", "read L2", "read L1", "read L0", "cas", "between")
#: Walker states only a hardware quirk's branch enters (re-read, plain write): the correct
#: design never lands an invalidation there; every other state must get one.
QUIRK_ONLY_WALK_STATES = frozenset({"REREAD", "REREAD_WAIT", "WRITE", "WRITE_WAIT"})
#: Our walker's states that only a Svadu walk enters (the A/D compare-and-swap).
SVADU_ONLY_WALK_STATES = frozenset({"CAS", "CAS_WAIT"})
TIMEOUT = 2000


#: How a scenario starts: an empty TLB and a clean, old leaf (the walk ends in an A/D
#: compare-and-swap); an empty TLB and a dirty, young leaf (the walk answers right after its
#: leaf read); a dirty TLB entry (hits).
STARTS = ("cold", "cold_dirty", "warm")


@dataclass(frozen=True)
class Scenario:
    latency: int
    start: str
    offset: int
    change: str
    kind: InvalKind
    svadu: bool = True

    def describe(self) -> str:
        return (f"latency {self.latency}, {self.start}, offset {self.offset}, {self.change}, "
                f"{self.kind.name}")

    @property
    def old_leaf(self) -> int:
        """Svadu: clean and old (the walk's CAS sets A/D) but for ``cold_dirty``; Svade: A set
        (nothing else would set it), D set for ``cold_dirty`` and ``warm`` (the setup store
        must make a dirty entry)."""
        if self.svadu:
            return pfn_pte(OLD_PPN, RWU | (_PAGE_A | _PAGE_D if self.start == "cold_dirty"
                                           else 0))
        return pfn_pte(OLD_PPN, RWU | _PAGE_A | (0 if self.start == "cold" else _PAGE_D))

    @property
    def ops(self) -> tuple:
        """The alternating operations of the stream: a load first, but a store first on a
        Svade clean leaf, so that a walk ends in a fault (D=0) before the change too."""
        return OPS[::-1] if not self.svadu and self.start == "cold" else OPS


def sweep(full: bool, svadu: bool = True) -> list[Scenario]:
    """The scenarios: every offset across a whole cold walk (plus margin) per latency."""
    out = []
    for lat in ((0, 1, 2, 3, 5, 8) if full else (0, 1, 3)):
        span = 4 * (lat + 2) + 10
        for start in STARTS:
            for off in range(span):
                if full:
                    out += [Scenario(lat, start, off, ch, k, svadu) for ch in CHANGES
                            for k in KINDS]
                else:
                    out.append(Scenario(lat, start, off, CHANGES[off % 3],
                                        KINDS[(off // 3) % 4], svadu))
    return out


def new_leaf(change: str, cur: int, svadu: bool = True) -> int:
    """The leaf after ``change``; a remap's is clean and old under Svadu (the walker sets
    A/D), dirty under Svade (so loads and stores both translate to the new frame)."""
    if change == "remap":
        return pfn_pte(NEW_PPN, RWU | (0 if svadu else _PAGE_A | _PAGE_D))
    if change == "wrprotect":
        return cur & ~(_PAGE_W | _PAGE_D)
    return 0


def golden(words, op: AccessType, svadu: bool = True) -> tuple[FaultKind, int]:
    """(fault, paddr) of a walk of ``VA`` over a snapshot of memory (A/D updates succeed and
    change nothing: they do not change the translation; under Svade a clear A or D faults)."""
    res = sv39_walk(lambda a: int(words[a >> 3]), lambda a, old, new: old, VA, op, user=True,
                    sum=False, root=ROOT, svadu=svadu)
    return res.fault, res.paddr


class InvalTimingBench:
    """One core's CPU port and invalidation port, and the device's, driven cycle by cycle.

    Members (ports)
    ---------------
    drives ``cpu0__req__*``, ``cpu0__inval__*``, ``dev__req__*``, ``dev__fill__*``,
    ``dev__inval__*``, ``dev__fault__ack``; samples ``cpu0__req__ready``, ``cpu0__resp__*``,
    ``cpu0__inval__ack``, ``dev__req__ready``, ``dev__resp__*``, ``dev__fill__ready``,
    ``dev__inval__ack``.
    """

    def __init__(self, dut, mem: PhysMem, responder: MemoryResponder, sb: MmuScoreboard,
                 seed: int, mmu: str = "ours"):
        self.dut, self.mem, self.responder, self.sb, self.seed = dut, mem, responder, sb, seed
        self.svadu = sb.svadu
        self.violations: list[tuple[str, str]] = []
        self.where: Counter = Counter()
        #: States (by name) of core 0's walker and core FSMs in the cycle each CPU
        #: scenario's invalidation was applied.
        self.walker_states: Counter = Counter()
        self.core_states: Counter = Counter()
        if mmu == "cva6":
            from ..cva6 import PTW_STATES, ptw_state
            self.walk_state = ptw_state(dut, 0)
            self.walk_names = dict(enumerate(PTW_STATES))
            self.core_state, self.core_names = None, {}
        else:
            names = json.loads(Path(os.environ["COSIM_STATES"]).read_text())
            self.walk_state, self.core_state = dut.core0.walker.walk_state, dut.core0.core_state
            self.walk_names = {int(v): n
                               for v, n in names["top.core0.walker"]["walk_state"].items()}
            self.core_names = {int(v): n for v, n in names["top.core0"]["core_state"].items()}
        self.stats: Counter = Counter()
        self.log = logging.getLogger("cosim.tb.inval")

    def s(self, name):
        return getattr(self.dut, name)

    def fail(self, kind: str, message: str) -> None:
        self.violations.append((kind, message))
        self.log.error("[%s] %s", kind, message)

    # --- one CPU request, no stream (setup) ----------------------------------------------

    async def _cpu_once(self, op: AccessType) -> None:
        self._present(op)
        q: deque = deque()
        while True:
            await RisingEdge(self.dut.clk)
            done = self._sample_cpu(q)
            if not q and not done and int(self.s("cpu0__req__ready").value):
                q.append(self._txn(op))
                self.s("cpu0__req__valid").value = 0
            elif done:
                return

    def _present(self, op: AccessType) -> None:
        for name, val in (("vaddr", VA), ("op", int(op)), ("user", 1), ("sum", 0), ("mxr", 0),
                          ("asid", ASID), ("root", ROOT)):
            self.s(f"cpu0__req__{name}").value = val
        self.s("cpu0__req__valid").value = 1

    def _txn(self, op: AccessType) -> CpuTxn:
        return CpuTxn(0, VA, op, True, False, ASID, ROOT, cycle_now())

    def _sample_cpu(self, q: deque):
        """The response sampled at this edge, if any (it answers the oldest request)."""
        if not int(self.s("cpu0__resp__valid").value):
            return None
        if not q:
            self.fail("protocol", f"cycle {cycle_now()}: cpu0 response with no request")
            return None
        t = q.popleft()
        t.resp_cycle = cycle_now()
        t.paddr = int(self.s("cpu0__resp__paddr").value)
        t.fault = FaultKind(int(self.s("cpu0__resp__fault").value))
        t.hit = bool(int(self.s("cpu0__resp__hit").value))
        self.sb.on_cpu(t)
        return t

    async def _inval(self, prefix: str, kind: InvalKind, vaddr: int, asid: int,
                     target: int) -> None:
        """A whole invalidation (setup between scenarios)."""
        self._raise_inval(prefix, kind, vaddr, asid)
        inv = InvalTxn(target, kind, vaddr, asid, cycle_now() + 1)
        self.sb.on_inval_request(inv)
        while True:
            await RisingEdge(self.dut.clk)
            if int(self.s(f"{prefix}__inval__ack").value):
                break
        inv.ack_cycle = cycle_now()
        self.s(f"{prefix}__inval__valid").value = 0
        self.sb.on_inval_ack(inv)
        await RisingEdge(self.dut.clk)

    def _raise_inval(self, prefix, kind, vaddr, asid):
        self.s(f"{prefix}__inval__kind").value = int(kind)
        self.s(f"{prefix}__inval__vaddr").value = vaddr
        self.s(f"{prefix}__inval__asid").value = asid
        self.s(f"{prefix}__inval__valid").value = 1

    # --- where the invalidation lands --------------------------------------------------

    def _where(self, edge: int, oldest) -> str:
        """Where core 0 was in the cycle ending at ``edge`` (the cycle the invalidation was
        applied): waiting for a memory transaction of a walk (by the PTE's level), between
        them, serving a hit, or idle.  ``oldest`` is the oldest request then outstanding;
        called once the scenario is over (the memory log is complete)."""
        for m in self.responder.by_src.get(0, []):
            if m.req_cycle < edge <= m.resp_cycle:
                return "cas" if m.op.name == "CAS" else \
                    f"read {LEVEL_OF_TABLE.get(m.addr >> 12)}"
        if oldest is None:
            return "idle"
        return "hit" if oldest.hit else "between"

    # --- a CPU scenario --------------------------------------------------------------------

    async def cpu_scenario(self, sc: Scenario) -> None:
        dut = self.dut
        self.responder.latency = Latency(self.seed, fast=(sc.latency, sc.latency), p_slow=0.0)
        self.responder.sw_store(LEAF, sc.old_leaf, "restore")
        await self._inval("cpu0", InvalKind.ALL, 0, 0, 0)
        if sc.start == "warm":
            await self._cpu_once(AccessType.STORE)      # a dirty entry: loads and stores hit
        old_words = self.mem.words.copy()
        q: deque = deque()
        k = 0
        ops = sc.ops
        self._present(ops[0])
        presenting = True
        cycle, inv, ack_edge, after, new_words, applied_at = 0, None, None, 0, None, None
        while True:
            if cycle == sc.offset:
                cur = self.responder.sw_read(LEAF, "change")
                self.responder.sw_store(LEAF, new_leaf(sc.change, cur, sc.svadu), sc.change)
                new_words = self.mem.words.copy()
                asid = ASID if sc.kind in (InvalKind.ASID, InvalKind.VA_ASID) else 0
                self._raise_inval("cpu0", sc.kind, VA, asid)
                inv = InvalTxn(0, sc.kind, VA, asid, cycle_now() + 1)
                self.sb.on_inval_request(inv)
            await RisingEdge(dut.clk)
            now = cycle_now()
            if inv is not None and now == inv.req_cycle:
                applied_at = (now, q[0] if q else None)
                # sampled right after the edge: the states in the cycle the edge ended
                walk = int(self.walk_state.value)
                self.walker_states[self.walk_names.get(walk, f"<{walk}>")] += 1
                if self.core_state is not None:
                    core = int(self.core_state.value)
                    self.core_states[self.core_names.get(core, f"<{core}>")] += 1
            if inv is not None and ack_edge is None and int(self.s("cpu0__inval__ack").value):
                ack_edge = inv.ack_cycle = now
                self.s("cpu0__inval__valid").value = 0
                self.sb.on_inval_ack(inv)
            t = self._sample_cpu(q)          # after the ack: a response in its cycle is judged
            if t is not None:
                self._judge(sc, t, ack_edge, old_words, new_words)
                if ack_edge is not None:
                    after += 1
            if presenting and int(self.s("cpu0__req__ready").value):
                q.append(self._txn(ops[k % 2]))
                k += 1
                if ack_edge is not None and after >= 3:
                    self.s("cpu0__req__valid").value = 0
                    presenting = False
                else:
                    self.s("cpu0__req__op").value = int(ops[k % 2])
            if not presenting and not q:
                break
            cycle += 1
            if cycle > TIMEOUT:
                self.fail("protocol", f"{sc.describe()}: not finished in {TIMEOUT} cycles")
                return
        if applied_at is not None:
            self.where[self._where(*applied_at)] += 1
        self.stats["cpu_scenarios"] += 1
        self.stats["responses_after_ack"] += after

    def _judge(self, sc: Scenario, t: CpuTxn, ack_edge, old_words, new_words) -> None:
        got = (t.fault, t.paddr)
        old = golden(old_words, t.op, sc.svadu)
        if new_words is None:
            if got != old:
                self.fail("before_change", f"{sc.describe()}: {t.describe()}; golden walk "
                                           f"{_fmt(old)}")
            return
        new = golden(new_words, t.op, sc.svadu)
        if ack_edge is not None and t.resp_cycle >= ack_edge:
            self.stats["judged_after_ack"] += 1
            if got != new:
                self.fail("after_ack", f"{sc.describe()}: {t.describe()}, ack at cycle "
                                       f"{ack_edge}; golden walk of the changed PTEs "
                                       f"{_fmt(new)} (old: {_fmt(old)})")
        elif got not in (old, new):
            self.fail("before_ack", f"{sc.describe()}: {t.describe()}; golden walks: old "
                                    f"{_fmt(old)}, new {_fmt(new)}")

    # --- a device scenario -----------------------------------------------------------------

    async def dev_scenario(self, offset: int, kind: InvalKind, model: DeviceTlb) -> None:
        dut = self.dut
        await self._inval("dev", InvalKind.ALL, 0, 0, -1)
        model.inval(InvalKind.ALL)
        if int(self.s("dev__fault__valid").value):
            self.s("dev__fault__ack").value = 1
            await RisingEdge(dut.clk)
            self.s("dev__fault__ack").value = 0
        for name, val in (("vaddr", VA), ("asid", ASID), ("ppn", OLD_PPN), ("level", 0),
                          ("perm", 0b1011), ("g", 0)):               # R W U
            self.s(f"dev__fill__{name}").value = val
        self.s("dev__fill__valid").value = 1
        while True:
            await RisingEdge(dut.clk)
            if int(self.s("dev__fill__ready").value):
                break
        self.s("dev__fill__valid").value = 0
        model.fill(VA, ASID, OLD_PPN, 0, _PAGE_R | _PAGE_W | _PAGE_U, False)
        await RisingEdge(dut.clk)               # the fill's second cycle
        before = {op: model.access(VA, op, ASID) for op in OPS}
        asid = ASID if kind in (InvalKind.ASID, InvalKind.VA_ASID) else 0
        q: deque = deque()
        k = 0
        for name, val in (("vaddr", VA), ("op", int(OPS[0])), ("asid", ASID)):
            self.s(f"dev__req__{name}").value = val
        self.s("dev__req__valid").value = 1
        presenting = True
        cycle, ack_edge, after, applied = 0, None, 0, False
        while True:
            if cycle == offset:
                self._raise_inval("dev", kind, VA, asid)
                applied = True
            await RisingEdge(dut.clk)
            now = cycle_now()
            if applied and ack_edge is None and int(self.s("dev__inval__ack").value):
                ack_edge = now
                self.s("dev__inval__valid").value = 0
                model.inval(kind, VA, asid)
            if int(self.s("dev__resp__valid").value) and q:
                op, _ = q.popleft()
                got = (FaultKind(int(self.s("dev__resp__fault").value)),
                       int(self.s("dev__resp__paddr").value))
                if ack_edge is not None:
                    after += 1
                    exp = model.access(VA, op, ASID)
                    self.stats["dev_judged_after_ack"] += 1
                    if got != exp:
                        self.fail("dev_after_ack",
                                  f"device {op.name} 0x{VA:x} answered {_fmt(got)} at cycle "
                                  f"{now}, ack at cycle {ack_edge} ({kind.name}, offset "
                                  f"{offset}); golden device TLB {_fmt(exp)}")
                elif got not in (before[op], (FaultKind.MISS, 0)):
                    self.fail("dev_before_ack", f"device {op.name} answered {_fmt(got)} at "
                                                f"cycle {now}; golden {_fmt(before[op])}")
            if presenting and int(self.s("dev__req__ready").value):
                q.append((OPS[k % 2], now))
                k += 1
                if ack_edge is not None and after >= 3:
                    self.s("dev__req__valid").value = 0
                    presenting = False
                else:
                    self.s("dev__req__op").value = int(OPS[k % 2])
            if not presenting and not q:
                break
            cycle += 1
            if cycle > TIMEOUT:
                self.fail("protocol", f"device offset {offset}: not finished in {TIMEOUT} "
                                      f"cycles")
                return
        self.s("dev__req__valid").value = 0
        self.stats["dev_scenarios"] += 1


def unreachable_walk_states(mmu: str, svadu: bool) -> frozenset:
    """The walker states a correct sweep never lands an invalidation in: our quirks' own
    branches (and, Svade, the CAS states); CVA6's access-error state (the shim's PMP entry
    covers all memory and this sweep injects no bus error) and its WAIT_RVALID (entered only at a
    flush)."""
    if mmu == "cva6":
        # WAIT_RVALID is entered only by a flush during a read (it waits for that read's
        # answer), so one invalidation per scenario cannot land in it.
        return frozenset({"PROPAGATE_ACCESS_ERROR", "WAIT_RVALID"})
    return QUIRK_ONLY_WALK_STATES | (frozenset() if svadu else SVADU_ONLY_WALK_STATES)


def _fmt(r) -> str:
    fault, paddr = r
    return f"paddr 0x{paddr:09x}" if fault == FaultKind.NONE else f"fault {fault.name}"


@cocotb.test()
async def test_inval_timing(dut):
    """Requests in every cycle around an invalidation, at every offset, on core 0 and the
    device; every response from the ack cycle on equals the golden walk of the changed PTEs."""
    t0 = time.monotonic()
    params = _params()
    seed = _seed()
    ncores = int(params.get("ncores", 2))
    svadu = bool(params.get("svadu", True))
    mmu = params.get("mmu", "ours")
    full = os.environ.get("COSIM_INVAL_SWEEP", "quick") == "full"
    mem = PhysMem(8)
    mem.write((ROOT << 12) + ((VA >> 30) & 511) * 8, pte_table(L1))
    mem.write((L1 << 12) + ((VA >> 21) & 511) * 8, pte_table(L0))
    mem.write(LEAF, pfn_pte(OLD_PPN, RWU))
    responder = MemoryResponder(dut, mem, Latency(seed, fast=(0, 0), p_slow=0.0))
    sb = MmuScoreboard(ncores, svadu=svadu, mem_log=responder.log, by_src=responder.by_src,
                       initial_words=mem.words, asid_bits=int(params.get("asid_bits", 9)),
                       mmu=mmu)
    await reset(dut, ncores)
    responder.start()
    bench = InvalTimingBench(dut, mem, responder, sb, seed, mmu)
    scenarios = sweep(full, svadu)
    for sc in scenarios:
        await bench.cpu_scenario(sc)
        if len(bench.violations) > 40:
            break
    model = DeviceTlb(int(params.get("dev_entries", 8)), int(params.get("asid_bits", 9)))
    for offset in range(8 if not full else 12):
        for kind in (KINDS if full else (KINDS[offset % 4],)):
            await bench.dev_scenario(offset, kind, model)
    await ClockCycles(dut.clk, 2)
    responder.stop()
    sb.check_hw_writes()
    sb.check_memory(mem.words)
    sb.check_counters(0, core_counters(dut, 0))
    kinds = sorted({k for k, _ in bench.violations} | sb.kinds())
    where = [w for w in WHERE if svadu or w != "cas"]         # Svade walks make no CAS
    missing = [w for w in where if not bench.where[w]]
    states_missing = sorted(set(bench.walk_names.values()) - unreachable_walk_states(mmu, svadu)
                            - set(bench.walker_states))
    write_report(under="test_inval_timing", data={
        "seed": seed, "params": params, "mmu": mmu, "svadu": svadu,
        "sweep": "full" if full else "quick",
        "scenarios": len(scenarios), "stats": dict(bench.stats), "where": dict(bench.where),
        "where_missing": missing, "violation_kinds": kinds,
        "walker_states": dict(bench.walker_states), "core_states": dict(bench.core_states),
        "walker_states_missing": states_missing,
        "violations": ([f"[{k}] {m}" for k, m in bench.violations[:30]]
                       + [str(v) for v in sb.violations[:30]]),
        "cycles": cycle_now(), "wall_s": time.monotonic() - t0})
    cocotb.log.info("inval timing: %d scenarios, %s, where %s, %d cycles", len(scenarios),
                    dict(bench.stats), dict(bench.where), cycle_now())
    problems = [f"[{k}] {m}" for k, m in bench.violations] + [str(v) for v in sb.violations]
    assert not problems, (f"{len(problems)} violation(s) (seed {seed}):\n"
                          + "\n".join(p[:500] for p in problems[:10]))
    assert not missing, f"the sweep never applied an invalidation at: {', '.join(missing)}"
