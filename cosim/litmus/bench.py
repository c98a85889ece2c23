"""The litmus bench: a cocotb test module that runs litmus tests on ``top`` many times.

Run by :mod:`cosim.litmus.runner` through :func:`cosim.build.run`, which passes
``COSIM_LITMUS``: JSON ``[{"path": ..., "runs": N, "seed": S}, ...]``.  For each test and each
run ``k`` (seed ``S + k``) the bench

1. resets the RTL (every TLB empty) and builds a fresh memory: page tables for ASID 1
   (root frame 1; virtual page ``i`` of the file at ``0x4000_0000 + i * 4096``), the named
   physical pages, the flags;
2. warms the TLBs the init section names (a translation on that core, or a device fill);
3. starts every thread after a seeded offset, with seeded gaps between operations and a
   seeded memory-latency profile (the timing perturbations);
4. reads the final state when every thread finished and evaluates the conditions.

The JSON report (``COSIM_REPORT``) holds, per test, one record per run: its seed, outcome
key, the value of every condition, the cycles it took and an error if it hung or failed.

CPU accesses are S-mode with ``sstatus.SUM`` set (``user=0``, ``sum=1``: U and non-U pages
alike, as the kernel's user PTEs carry U; ``option user=1``: U-mode), ASID 1: the PTE's
translation goes through the core's TLB and walker; a load or store then reads or writes the
word at the physical address in the cycle the response arrives.  The port does not re-execute
an access answered after an invalidation of its core was acknowledged (the hardware must not
answer from a translation the invalidation removed); the run counts such answers
(``straddled``).  Every CPU response and every invalidation of a core (the bench's and the
kernel's) goes to the golden-walk scoreboard (:class:`cosim.scoreboard.MmuScoreboard`), which
replays each translation from the PTE values the walker read; a run's record counts the
translations it replayed and carries its violations.  Each operation is executed by its
registry entry (:mod:`cosim.litmus.ops`).
OS operations act on the PTE word in memory at one clock edge, atomically with respect to the
walkers' compare-and-swap.  ``fence`` and ``csync`` wait one cycle: the cores are in order and
block on each access, so there is nothing else to drain.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time

import cocotb
from cocotb.triggers import ClockCycles, Event, First, Lock, RisingEdge

from pyrmap.arch import InvalKind
from pyrmap.physmem import PhysMem
from pyrmap.pte import _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X, AccessType, FaultKind, \
    pfn_pte, pte_pfn, pte_table

from ..dut import reset as first_reset
from ..dut import write_report
from ..memory import Latency, MemOp, MemoryResponder, cycle_now
from ..scoreboard import CpuTxn, InvalTxn, MmuScoreboard
from ..device import DeviceDriver
from .kernel_ops import run_kernel_op
from .model import PteExpr, PteSpec
from .ops import lookup
from .outcome import Fault, FinalState, evaluate, outcome_key
from .parser import parse_file

ASID = 1
ROOT, L1, L0, FLAGS = 1, 2, 3, 4
FIRST_PAGE = 5
VA_BASE = 0x4000_0000
#: Free frames after the test's own, for the kernel (migration targets, new pages).
SPARE_FRAMES = 8
MAX_CYCLES = 20000
HANDSHAKE_TIMEOUT = 3000

log = logging.getLogger("cosim.litmus")


class RunError(RuntimeError):
    """A run that could not finish (a handshake that never completed, a hang)."""


class Layout:
    """Where a test's names live in memory."""

    def __init__(self, test):
        self.test = test
        self.vas = {name: VA_BASE + i * 4096 for i, name in enumerate(test.init.maps)}
        self.pfns = {name: FIRST_PAGE + i for i, name in enumerate(test.init.pages)}
        self.flags = {name: (FLAGS << 12) + 8 * i for i, name in enumerate(test.init.flags)}
        self.nframes = FIRST_PAGE + len(test.init.pages) + 1

    def ptep(self, va: str) -> int:
        return (L0 << 12) + ((self.vas[va] >> 12) & 511) * 8

    def pte_value(self, spec: PteSpec) -> int:
        pfn = self.pfns[spec.page] if spec.page else 0
        if spec.page is None and spec.bits == 0:
            return 0
        return pfn_pte(pfn, spec.bits)

    def build(self) -> PhysMem:
        mem = PhysMem(self.nframes + SPARE_FRAMES)
        mem.write((ROOT << 12) + ((VA_BASE >> 30) & 511) * 8, pte_table(L1))
        mem.write((L1 << 12) + ((VA_BASE >> 21) & 511) * 8, pte_table(L0))
        for va, spec in self.test.init.maps.items():
            mem.write(self.ptep(va), self.pte_value(spec))
        for (page, off), value in self.test.init.mem.items():
            mem.write((self.pfns[page] << 12) + off, value & ((1 << 64) - 1))
        for name, value in self.test.init.flags.items():
            mem.write(self.flags[name], value)
        return mem

    def addr_of(self, name: str, off: int) -> int:
        if name in self.flags:
            return self.flags[name] + off
        return (self.pfns[name] << 12) + off


class Perturbation:
    """The seeded timing of one run: memory latency, thread start offsets, gaps between
    operations (which also reorder who wins the memory arbiter)."""

    def __init__(self, seed: int, options: dict):
        self.rng = random.Random(seed)
        rng = self.rng
        self.start_max = int(options.get("start", 48))
        self.jitter = int(options.get("jitter", 4))
        self.p_long = float(options.get("p_long", 10)) / 100.0
        self.long = int(options.get("long", 24))
        profile = rng.choice(("fast", "mixed", "slow"))
        lat_max = int(options.get("latency", 24))
        if profile == "fast":
            self.latency = Latency(rng.randrange(1 << 30), fast=(0, 1), slow=(0, 2), p_slow=0.0)
        elif profile == "mixed":
            self.latency = Latency(rng.randrange(1 << 30), fast=(0, 3),
                                   slow=(4, max(4, lat_max)), p_slow=0.2)
        else:
            self.latency = Latency(rng.randrange(1 << 30), fast=(2, 6),
                                   slow=(6, max(6, lat_max)), p_slow=0.4)
        self.profile = profile

    def start(self) -> int:
        return self.rng.randint(0, self.start_max)

    def gap(self) -> int:
        if self.rng.random() < self.p_long:
            return self.rng.randint(self.jitter, max(self.jitter, self.long))
        return self.rng.randint(0, self.jitter)


class Bench:
    """One DUT, reused by every run: the memory responder, port locks, the device driver."""

    def __init__(self, dut, cfg: dict):
        self.dut = dut
        self.cfg = cfg
        self.ncores = int(cfg.get("ncores", 2))
        self.asid_bits = int(cfg.get("asid_bits", 9))
        self.responder = None
        self.dev = DeviceDriver(dut)
        self.tlb_reader = None

    async def start(self) -> None:
        await first_reset(self.dut, self.ncores)
        from ..arch import TlbReader
        self.tlb_reader = TlbReader(self.dut, self.ncores, self.asid_bits,
                                    int(self.cfg.get("tlb_entries", 8)),
                                    int(self.cfg.get("superpage_entries", 4)),
                                    int(self.cfg.get("dev_entries", 8)))

    async def reset(self, mem: PhysMem, latency: Latency) -> None:
        dut = self.dut
        if self.responder is not None:
            self.responder.stop()
        for i in range(self.ncores):
            for name in ("req__valid", "inval__valid"):
                getattr(dut, f"cpu{i}__{name}").value = 0
        for name in ("req__valid", "fill__valid", "young__valid", "inval__valid", "fault__ack"):
            getattr(dut, f"dev__{name}").value = 0
        dut.mem__req__ready.value = 0
        dut.mem__resp__valid.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        self.responder = MemoryResponder(dut, mem, latency)
        self.responder.start()
        await RisingEdge(dut.clk)


class Run:
    """One execution of a test."""

    def __init__(self, bench: Bench, test, layout: Layout, mem: PhysMem, pert: Perturbation):
        self.b, self.test, self.lay, self.mem, self.pert = bench, test, layout, mem, pert
        self.dut = bench.dut
        self.regs: dict = {}
        self.inval_locks = {i: Lock(f"inval{i}") for i in range(bench.ncores)}
        self.inval_locks["dev"] = Lock("invaldev")
        self.dev_lock = Lock("dev")
        self.core_locks = {i: Lock(f"core{i}") for i in range(bench.ncores)}
        self.walk_events: list = []
        #: Invalidations of each core acknowledged through the bench's own ports.
        self.acks = {i: 0 for i in range(bench.ncores)}
        #: Translations answered after an invalidation of their core was acknowledged that
        #: came after their request (a walk in flight across a shootdown).
        self.straddled = 0
        self.locks: dict = {}
        self.kworld = None
        self.kernel_quirks: list = []
        #: Thread name -> the operation it is executing (for hang reports).
        self.current: dict = {}
        bench.responder.listeners.append(self._on_txn)
        #: The golden-walk scoreboard of this run: every CPU response, every invalidation.
        self.scoreboard = MmuScoreboard(bench.ncores, svadu=bool(bench.cfg.get("svadu", True)),
                                        mem_log=bench.responder.log,
                                        by_src=bench.responder.by_src,
                                        asid_bits=bench.asid_bits,
                                        mmu=bench.cfg.get("mmu", "ours"))

    # --- hardware ports ----------------------------------------------------------------------

    _WALK_OPS = {"read": (MemOp.READ,), "cas": (MemOp.CAS,), "write": (MemOp.WRITE,),
                 "any": (MemOp.READ, MemOp.CAS, MemOp.WRITE)}

    def _on_txn(self, txn) -> None:
        """Memory-model listener: wake ``wait walk`` operations (hardware transactions only)."""
        for addr, core, ops, ev in self.walk_events:
            if txn.addr == addr and txn.op in ops and (core is None or txn.src == core):
                ev.set()

    def acks_of(self, core: int) -> int:
        """Invalidations of ``core`` acknowledged so far (the bench's and the kernel's)."""
        arch = self.kworld.arch.acks[core] if self.kworld is not None else 0
        return self.acks[core] + arch

    async def translate(self, core: int, vaddr: int, op: AccessType):
        dut = self.dut
        s = lambda n: getattr(dut, f"cpu{core}__{n}")  # noqa: E731
        async with self.core_locks[core]:
            s("req__vaddr").value = vaddr
            s("req__op").value = int(op)
            user = bool(self.test.options.get("user"))
            s("req__user").value = int(user)
            s("req__sum").value = int(not user)
            s("req__mxr").value = 0
            s("req__asid").value = ASID
            s("req__root").value = ROOT
            s("req__valid").value = 1
            for _ in range(HANDSHAKE_TIMEOUT):
                await RisingEdge(dut.clk)
                if int(s("req__ready").value):
                    break
            else:
                raise RunError(f"core{core} req.ready low for {HANDSHAKE_TIMEOUT} cycles")
            accepted = cycle_now()
            s("req__valid").value = 0
            acks = self.acks_of(core)
            n = 0
            while not int(s("resp__valid").value):
                await RisingEdge(dut.clk)
                n += 1
                if n > HANDSHAKE_TIMEOUT:
                    raise RunError(f"core{core}: no response in {HANDSHAKE_TIMEOUT} cycles")
            if self.acks_of(core) != acks:
                self.straddled += 1
            fault = FaultKind(int(s("resp__fault").value))
            t = CpuTxn(core, vaddr, AccessType(op), user, not user, ASID, ROOT, accepted)
            t.resp_cycle = cycle_now()
            t.paddr, t.fault = int(s("resp__paddr").value), fault
            t.hit = bool(int(s("resp__hit").value))
            self.scoreboard.on_cpu(t)
            return fault, t.paddr

    async def inval_port(self, target, kind: InvalKind, vaddr: int) -> None:
        dut = self.dut
        async with self.inval_locks[target]:
            if target == "dev":
                await self.b.dev.inval(kind, vaddr, ASID)
                return
            s = lambda n: getattr(dut, f"cpu{target}__inval__{n}")  # noqa: E731
            s("kind").value = int(kind)
            s("vaddr").value = vaddr
            s("asid").value = ASID
            s("valid").value = 1
            # The DUT first sees the request at the next edge.
            txn = InvalTxn(target, kind, vaddr, ASID, cycle_now() + 1)
            self.scoreboard.on_inval_request(txn)
            for _ in range(HANDSHAKE_TIMEOUT):
                await RisingEdge(dut.clk)
                if int(s("ack").value):
                    break
            else:
                raise RunError(f"core{target}: no invalidation ack in {HANDSHAKE_TIMEOUT} cycles")
            txn.ack_cycle = cycle_now()
            self.scoreboard.on_inval_ack(txn)
            self.acks[target] += 1
            s("valid").value = 0
            await RisingEdge(dut.clk)

    async def invalidate(self, targets, va) -> None:
        kind = InvalKind.ALL if va is None else InvalKind.VA_ASID
        vaddr = 0 if va is None else self.lay.vas[va]
        tasks = [cocotb.start_soon(self.inval_port(t, kind, vaddr)) for t in targets]
        for t in tasks:
            await t

    # --- values ----------------------------------------------------------------------------

    def pte_expr(self, e: PteExpr) -> int:
        if isinstance(e.base, PteSpec):
            v = self.lay.pte_value(e.base)
        elif isinstance(e.base, int):
            v = e.base
        else:
            v = self.regs.get(e.base)
            if not isinstance(v, int):
                raise RunError(f"register {e.base!r} holds no PTE ({v})")
        return (v | e.set_bits) & ~e.clear_bits & ((1 << 64) - 1)

    def value(self, v) -> int:
        if isinstance(v, int):
            return v & ((1 << 64) - 1)
        r = self.regs.get(v)
        if not isinstance(r, int):
            raise RunError(f"register {v!r} holds no value ({r})")
        return r

    # --- threads ---------------------------------------------------------------------------

    async def thread(self, th) -> None:
        await ClockCycles(self.dut.clk, self.pert.start() + 1)
        labels = {op.args["name"]: i for i, op in enumerate(th.ops) if op.kind == "label"}
        pc = 0
        while pc < len(th.ops):
            op = th.ops[pc]
            pc += 1
            if op.kind == "label":
                continue
            if op.kind == "if":
                if not evaluate(op.args["cond"], self.live()):
                    continue
                op = op.args["then"]
            if op.kind == "goto":
                pc = labels[op.args["label"]]
                await RisingEdge(self.dut.clk)      # a loop always lets time pass
                continue
            self.current[th.name] = f"line {op.line} '{op.text}'"
            try:
                await self.op(th, op)
            except RunError as exc:
                raise RunError(f"{th.name} line {op.line} '{op.text}': {exc}") from exc
            gap = self.pert.gap()
            if gap:
                await ClockCycles(self.dut.clk, gap)

    def live(self) -> FinalState:
        """The state now, for 'if' conditions: registers, every word, every PTE."""
        st = FinalState(regs=dict(self.regs), pfns=dict(self.lay.pfns))
        for va in self.test.init.maps:
            st.ptes[va] = self.mem.read(self.lay.ptep(va))
        for name in self.test.init.flags:
            st.mem[(name, 0)] = self.mem.read(self.lay.flags[name])
        for page in self.test.init.pages:
            for off in range(0, 64, 8):
                st.mem[(page, off)] = self.mem.read(self.lay.addr_of(page, off))
        return st

    async def op(self, th, op) -> None:
        """Execute ``op`` of thread ``th``: its registry entry's ``run``."""
        await lookup(op.kind).run(self, th, op)

    @property
    def mem_port(self) -> MemoryResponder:
        """The memory model: software reads, stores and atomics at one clock edge."""
        return self.b.responder

    def put(self, op, value) -> None:
        """Write ``value`` into ``op``'s register, if it names one."""
        if op.dst:
            self.regs[op.dst] = value

    async def cpu_access(self, th, op) -> None:
        """``ld`` / ``st``: translate on the thread's core, then read or write the word; with
        ``retry``, a page fault runs the kernel's fault handler and the access again."""
        who = f"{th.name}:{op.line}"
        store = op.kind == "st"
        va = self.lay.vas[op.va] + op.off
        acc = AccessType.STORE if store else AccessType.LOAD
        fault, paddr = await self.translate(th.core, va, acc)
        tries = 0
        while fault == FaultKind.PAGE and op.args.get("retry") and tries < 4:
            # The kernel's fault handler (a host thread), then the access again.
            tries += 1
            try:
                await self.kworld.env.run(f"{th.name}:fault", self.kworld.fault, va, store)
            except Exception as exc:  # noqa: BLE001 - SIGSEGV/SIGBUS: the access faults
                log.debug("%s: fault handler: %s", who, exc)
                break
            fault, paddr = await self.translate(th.core, va, acc)
        if fault != FaultKind.NONE:
            res = Fault(fault.name.lower())
        elif store:
            self.mem_port.sw_store(paddr, self.value(op.args["value"]), who)
            res = 0
        else:
            res = self.mem_port.sw_read(paddr, who)
        self.put(op, res)

    async def wait_flag(self, flag: str, want: int) -> None:
        addr = self.lay.flags[flag]
        for _ in range(MAX_CYCLES):
            if self.mem.read(addr) == want:
                return
            await RisingEdge(self.dut.clk)
        raise RunError(f"flag {flag} never became {want}")

    async def wait_walk(self, va: str, core, what: str) -> None:
        """Resume in the very time step the memory model performs a walker's access to
        PTE(va), so the next operations (a PTE change, an invalidation) land inside the
        walk."""
        ev = Event()
        entry = (self.lay.ptep(va), core, self._WALK_OPS[what], ev)
        self.walk_events.append(entry)
        timer = ClockCycles(self.dut.clk, MAX_CYCLES)
        fired = await First(ev.wait(), timer)
        self.walk_events.remove(entry)
        if fired is timer:
            raise RunError(f"no walk read PTE({va})")

    async def lock(self, name: str) -> None:
        await self.locks.setdefault(name, Lock(name)).acquire()

    def unlock(self, name: str) -> None:
        lk = self.locks.get(name)
        if lk is None or not lk.locked():
            raise RunError(f"unlock of {name!r}, which is not locked")
        lk.release()

    async def dev_young(self, va: str) -> int:
        async with self.dev_lock:
            return int(await self.b.dev.young(self.lay.vas[va], ASID))

    async def dev_access(self, op) -> None:
        who = f"dev:{op.line}"
        store = op.kind == "dev st"
        va = self.lay.vas[op.va] + op.off
        async with self.dev_lock:
            fault, paddr = await self.b.dev.access(va, AccessType.STORE if store
                                                   else AccessType.LOAD, ASID)
            if fault == FaultKind.MISS and self.b.dev.fault_record() is not None:
                await self.b.dev.ack_fault()
        if fault != FaultKind.NONE:
            res = Fault(fault.name.lower())
        elif store:
            self.b.responder.sw_store(paddr, self.value(op.args["value"]), who)
            res = 0
        else:
            res = self.b.responder.sw_read(paddr, who)
        if op.dst:
            self.regs[op.dst] = res

    async def dev_fill(self, va: str) -> None:
        """The device driver's fill: read PTE(va) now; install it if present."""
        await self.dev_install(va, self.b.responder.sw_read(self.lay.ptep(va), "dev fill"))

    async def dev_install(self, va: str, pte: int) -> None:
        """Install ``pte`` as the device's translation of ``va`` (nothing if not present)."""
        if not pte & _PAGE_V or not pte & (_PAGE_R | _PAGE_X):
            return
        async with self.dev_lock:
            await self.b.dev.fill(self.lay.vas[va], ASID, pte_pfn(pte), 0,
                                  pte & (_PAGE_R | _PAGE_W | _PAGE_X | _PAGE_U), False)

    async def kernel_op(self, th, op, body) -> None:
        await run_kernel_op(self, th, op, body)

    # --- whole run -------------------------------------------------------------------------

    async def warm(self) -> None:
        from .kernel_ops import KernelWorld, needs_kernel
        if needs_kernel(self.test):
            self.kworld = KernelWorld(self, self.pert.rng.randrange(1 << 30))
            await self.kworld.setup()
        for w in self.test.init.warm:
            if w.target == "dev":
                await self.dev_fill(w.va)
            else:
                fault, _ = await self.translate(w.target, self.lay.vas[w.va],
                                                AccessType.STORE if w.store else AccessType.LOAD)
                if fault != FaultKind.NONE:
                    raise RunError(f"init line {w.line}: warming C{w.target} with {w.va} "
                                   f"faulted ({fault.name})")

    def final(self) -> FinalState:
        st = FinalState(regs=dict(self.regs), pfns=dict(self.lay.pfns))
        for va in self.test.init.maps:
            st.ptes[va] = self.mem.read(self.lay.ptep(va))
        for c in self.test.conditions:
            for ref in c.expr.refs():
                if ref.op == "mem":
                    st.mem[ref.args] = self.mem.read(self.lay.addr_of(*ref.args))
                elif ref.op == "tlb":
                    tgt, va = ref.args
                    entries = (self.b.tlb_reader.device() if tgt == "dev"
                               else self.b.tlb_reader.core(tgt))
                    st.tlb[ref.args] = any(e.covers(self.lay.vas[va]) and e.asid == ASID
                                           for e in entries)
                elif ref.op == "dirty":
                    st.dirty[ref.args[0]] = (self.kworld is not None
                                             and self.kworld.page_dirty(ref.args[0]))
        return st


async def run_test(bench: Bench, test, seed: int, kernel_quirks=()) -> dict:
    """One run of ``test`` with ``seed``: the record the report keeps.  ``kernel_quirks``
    names :class:`pyrmap.kernel.Quirks` switched on in the run's kernel."""
    lay = Layout(test)
    mem = lay.build()
    pert = Perturbation(seed, test.options)
    await bench.reset(mem, pert.latency)
    start = cycle_now()
    run = Run(bench, test, lay, mem, pert)
    run.kernel_quirks = list(kernel_quirks)
    rec = {"seed": seed, "profile": pert.profile}
    try:
        await run.warm()
        errors: list = []

        async def guarded(th):
            # cocotb fails the whole test when a background task raises: keep it for the run
            try:
                await run.thread(th)
                run.current[th.name] = None
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        tasks = [cocotb.start_soon(guarded(th)) for th in test.threads]
        budget = int(test.options.get("max_cycles", MAX_CYCLES))
        deadline = cycle_now() + budget
        while not all(t.done() for t in tasks):
            if cycle_now() > deadline:
                for t in tasks:
                    if not t.done():
                        t.cancel()
                stuck = ", ".join(f"{n} at {w}" for n, w in run.current.items() if w)
                raise RunError(f"threads still running after {budget} cycles: {stuck}")
            await RisingEdge(bench.dut.clk)
        if errors:
            raise errors[0]
        await ClockCycles(bench.dut.clk, 2)
        st = run.final()
        rec["outcome"] = outcome_key(test, st)
        rec["conds"] = [bool(evaluate(c.expr, st)) for c in test.conditions]
    except Exception as exc:  # noqa: BLE001 - a run that breaks is reported, not fatal
        rec["error"] = f"{type(exc).__name__}: {exc}"
    rec["cycles"] = cycle_now() - start
    rec["straddled"] = run.straddled
    sb = run.scoreboard
    sb.finish()
    rec["scoreboard"] = {"translations": sb.responses,
                         "violations": [str(v) for v in sb.violations[:5]],
                         "count": len(sb.violations)}
    return rec


@cocotb.test()
async def test_litmus(dut):
    """Every test of ``COSIM_LITMUS``, each for its number of runs."""
    t0 = time.monotonic()
    cfg = json.loads(os.environ.get("COSIM_CONFIG", "{}"))
    jobs = json.loads(os.environ.get("COSIM_LITMUS", "[]"))
    bench = Bench(dut, cfg)
    await bench.start()
    report = {}
    for job in jobs:
        test = parse_file(job["path"])
        recs = []
        for k in range(int(job["runs"])):
            recs.append(await run_test(bench, test, int(job["seed"]) + k,
                                       job.get("kernel_quirks", ())))
        report[job["path"]] = {"name": test.name, "runs": recs}
        log.info("%s: %d runs", test.name, len(recs))
    if bench.responder is not None:
        bench.responder.stop()
    write_report(under="litmus", data={"config": cfg, "tests": report, "wall_s": time.monotonic() - t0})
