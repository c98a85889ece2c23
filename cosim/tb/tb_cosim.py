"""cocotb tests of the host-thread environment (cosim.host); they need only a ``clk`` port.

Run by tests/test_cosim.py on a one-register stub and on ``Top``.
"""

from __future__ import annotations

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from cosim.host import Deadlock, HostEnv, LockError, ThreadKilled

SEED = int(os.environ.get("COSIM_SEED", "1"))


def _cycle(env):
    return int(env.now_ns() // 10)


async def _start(dut):
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)


@cocotb.test()
async def test_host_lock_waiter_lets_time_pass(dut):
    """A thread waiting for a held lock sleeps in simulated time and gets it on release."""
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0))
    lock = env.new_lock("page_table_lock")
    trace = []

    def holder():
        with lock:
            trace.append(("holder in", _cycle(env)))
            env.wait_cycles(50)
            trace.append(("holder out", _cycle(env)))

    def waiter():
        env.wait_cycles(5)
        lock.acquire()
        trace.append(("waiter in", _cycle(env)))
        assert lock.held_by_me()
        lock.release()

    t1 = env.spawn("holder", holder)
    t2 = env.spawn("waiter", waiter)
    await t1.join()
    await t2.join()
    names = [t[0] for t in trace]
    assert names == ["holder in", "holder out", "waiter in"], trace
    assert trace[2][1] >= trace[0][1] + 50, trace
    assert env.stats["lock_waits"] >= 1
    assert not lock.is_locked()


@cocotb.test()
async def test_host_rwsem_readers_share_writer_excludes(dut):
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0))
    sem = env.new_rwsem("mmap_sem")
    log = []

    def reader(n):
        sem.down_read()
        log.append((f"r{n}+", _cycle(env)))
        env.wait_cycles(20)
        log.append((f"r{n}-", _cycle(env)))
        sem.up_read()

    def writer():
        env.wait_cycles(3)
        sem.down_write()
        log.append(("w+", _cycle(env)))
        assert sem.is_write_locked()
        sem.up_write()

    tasks = [env.spawn("r1", reader, 1), env.spawn("r2", reader, 2), env.spawn("w", writer)]
    for t in tasks:
        await t.join()
    order = [e[0] for e in log]
    # both readers inside together, the writer after both left
    assert order.index("r2+") < order.index("r1-"), log
    assert order.index("w+") > max(order.index("r1-"), order.index("r2-")), log


@cocotb.test()
async def test_host_yield_points_deterministic_per_seed(dut):
    """The same seed gives the same interleaving (relative cycles); another seed differs."""
    await _start(dut)

    async def one(seed):
        await ClockCycles(dut.clk, 1)     # start every run at the same phase of the clock
        env = HostEnv(dut.clk, seed, yield_cycles=(0, 5))
        lock = env.new_lock("anon_vma->lock")
        trace = []
        t0 = _cycle(env)

        def worker(name):
            for i in range(12):
                env.yield_point("loop")
                with lock:
                    trace.append((name, i, _cycle(env) - t0))

        tasks = [env.spawn(f"w{k}", worker, f"w{k}") for k in range(3)]
        for t in tasks:
            await t.join()
        return trace

    a = await one(SEED)
    b = await one(SEED)
    c = await one(SEED + 1000)
    assert a == b, f"seed {SEED}: two runs differ"
    assert a != c, f"seeds {SEED} and {SEED + 1000} gave the same interleaving"


@cocotb.test()
async def test_host_lock_misuse_is_an_error(dut):
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0), lock_timeout=300)
    lock = env.new_lock("page_table_lock")
    errors = []

    def owner():
        lock.acquire()
        env.wait_cycles(10)

    def thief():
        try:
            lock.release()
        except LockError as exc:
            errors.append(str(exc))

    def starved():
        try:
            lock.acquire()
        except Deadlock as exc:
            errors.append(str(exc))

    await env.spawn("owner", owner).join()
    await env.spawn("thief", thief).join()
    await env.spawn("starved", starved).join()
    # An exception in a thread is kept for join(), not raised into the test by cocotb.
    boom = env.spawn("boom", lambda: 1 // 0)
    try:
        await boom.join()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("join() of a failed thread did not raise its exception")
    assert len(errors) == 2, errors
    assert "does not hold" in errors[0], errors
    assert "waited 300 cycles" in errors[1] and "'owner'" in errors[1], errors
    # A coroutine may not sleep on a contended lock.
    try:
        lock.acquire()
    except LockError as exc:
        assert "coroutine" in str(exc)
    else:
        raise AssertionError("acquiring a held lock from a coroutine did not raise")


@cocotb.test()
async def test_host_stop_ends_other_threads(dut):
    """A failing thread stops the others at their next round trip (a violation ends the run
    instead of letting the workloads run on); a spared thread keeps going."""
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0))
    env.on_error = lambda thread, exc: env.stop(f"{thread.name} failed", spare=[spared])
    lock = env.new_lock("page_table_lock")
    t0 = _cycle(env)

    def failing():
        env.wait_cycles(5)
        raise ValueError("boom")

    def looping():
        with lock:                          # released while unwinding
            for _ in range(1000):
                env.wait_cycles(1)

    def spared_body():
        env.wait_cycles(20)
        return "done"

    a = env.spawn("failing", failing)
    b = env.spawn("looping", looping)
    spared = env.spawn("spared", spared_body)
    for t in (a, b):
        try:
            await t.join()
        except (ValueError, ThreadKilled):
            pass
    assert isinstance(a.error, ValueError), a.error
    assert isinstance(b.error, ThreadKilled), b.error
    assert await spared.join() == "done"
    assert _cycle(env) - t0 < 100, "the looping thread was not stopped"
    assert not lock.is_locked(), "the stopped thread kept its lock"


# =============================================================================================
# The bench: Top + memory model + host environment + CosimArch + one CpuDriver per core.

import json

from cocotb.triggers import RisingEdge

from cosim.arch import CosimArch
from cosim.cpu import CpuDriver
from cosim.memory import Latency, MemoryResponder


def bench_config() -> dict:
    """The Top parameters of this run (``COSIM_CONFIG``, set by cosim.build.run)."""
    try:
        return json.loads(os.environ.get("COSIM_CONFIG", "{}"))
    except ValueError:
        return {}


_INPUTS_ZERO = ("req__valid", "inval__valid")
_DEV_INPUTS_ZERO = ("dev__req__valid", "dev__fill__valid", "dev__young__valid",
                    "dev__inval__valid", "dev__fault__ack")


async def start_bench(dut, mem, seed: int, *, yield_cycles=(0, 2), latency=None):
    """Clock, reset, memory responder, host environment and CosimArch with its CPU drivers.

    Returns ``(env, arch, memory)``; ``arch.drivers`` holds the drivers."""
    cfg = bench_config()
    ncores = int(cfg.get("ncores", 2))
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for i in range(ncores):
        for name in _INPUTS_ZERO:
            getattr(dut, f"cpu{i}__{name}").value = 0
    for name in _DEV_INPUTS_ZERO:
        h = getattr(dut, name, None)
        if h is not None:
            h.value = 0
    memory = MemoryResponder(dut, mem, latency or Latency(seed))
    memory.start()
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    env = HostEnv(dut.clk, seed, yield_cycles=yield_cycles)
    arch = CosimArch(dut, mem, env, ncores=ncores, asid_bits=int(cfg.get("asid_bits", 9)),
                     memory=memory, tlb_entries=int(cfg.get("tlb_entries", 8)),
                     sp_entries=int(cfg.get("superpage_entries", 4)),
                     dev_entries=int(cfg.get("dev_entries", 8)),
                     svadu=bool(cfg.get("svadu", True)))
    arch.attach_drivers([CpuDriver(dut, i, arch) for i in range(ncores)])
    if hasattr(dut, "dev__req__valid"):
        from cosim.devarch import DevArch
        arch.attach_device(DevArch(arch))
    return env, arch, memory


def _map_one_page(kernel, va):
    """A new mm with one read-write VMA at ``va`` and one fresh page mapped there (set_pte_at
    on the empty slot); returns (mm, vma, ptep, page).  Runs in a host thread."""
    from pyrmap.mm_types import VM_READ, VM_WRITE, MmStruct, Vma
    from pyrmap.pagetable import pgd_alloc, pte_alloc
    from pyrmap.pte import PAGE_SHARED, pfn_pte

    mm = MmStruct(kernel, kernel.alloc_asid(), pgd_alloc(kernel))
    vma = Vma(mm, va, va + 0x1000, VM_READ | VM_WRITE)
    ptep = pte_alloc(mm, va)
    page = kernel.alloc_page()
    kernel.arch.set_pte_at(mm, va, ptep, pfn_pte(page.pfn, PAGE_SHARED))
    return mm, vma, ptep, page


@cocotb.test()
async def test_arch_pte_ops_and_flush(dut):
    """CosimArch on the RTL: a store walks and sets A/D by CAS, a flush removes the entry from
    the RTL TLB, the atomics keep what the walker set, a cleared PTE faults after its flush."""
    from pyrmap.kernel import Kernel
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import _PAGE_A, _PAGE_D, _PAGE_W, AccessType, FaultKind, pte_pfn

    mem = PhysMem(64)
    env, arch, memory = await start_bench(dut, mem, SEED)
    kernel = Kernel(arch)
    arch.kernel = kernel
    assert arch.reads_rtl_tlbs, "the RTL TLB entry registers were not found"
    va = 0x4000_1000
    seen = {}

    def body():
        mm, vma, ptep, page = _map_one_page(kernel, va)
        arch.switch_mm(0, mm)
        arch.switch_mm(1, mm)
        r = arch.cpu_access(0, va + 8, AccessType.STORE, data=0xABCD)
        seen["store"] = r
        seen["pte_after_store"] = arch.pte_load(ptep)
        seen["word"] = mem.read((page.pfn << 12) + 8)
        seen["load1"] = arch.cpu_access(1, va + 8, AccessType.LOAD)
        seen["tlb0"] = list(arch.tlb_entries(0))
        seen["raw"] = [str(h.value) for h in arch.tlb_reader.core_handles[0]]
        # Atomics: test-and-clear-young returns 1 and keeps D; wrprotect keeps A/D.
        seen["young"] = arch.ptep_test_and_clear_young(vma, va, ptep)
        arch.ptep_set_wrprotect(mm, va, ptep)
        seen["after_atomics"] = arch.pte_load(ptep)
        old = arch.pte_load(ptep)
        seen["cas_bad"] = arch.cmpxchg(ptep, old ^ 1, 0)
        seen["xchg"] = arch.ptep_get_and_clear(mm, va, ptep)
        arch.flush_tlb_page(vma, va)
        seen["tlb_after_flush"] = [list(arch.tlb_entries(c)) for c in (0, 1)]
        seen["fault"] = arch.cpu_access(0, va + 8, AccessType.LOAD)
        seen["pfn"] = page.pfn

    await env.run("smoke", body)
    r = seen["store"]
    assert r.fault == FaultKind.NONE, r
    assert r.paddr >> 12 == seen["pfn"], (hex(r.paddr), seen["pfn"])
    assert seen["word"] == 0xABCD
    p = seen["pte_after_store"]
    assert p & _PAGE_A and p & _PAGE_D, f"walker did not set A/D: {p:#x}"
    assert seen["load1"].fault == FaultKind.NONE and seen["load1"].value == 0xABCD
    assert any(e.covers(va) and e.ppn == seen["pfn"] for e in seen["tlb0"]), (seen["tlb0"], seen["raw"])
    assert seen["young"] == 1
    a = seen["after_atomics"]
    assert not a & _PAGE_A and a & _PAGE_D and not a & _PAGE_W, f"{a:#x}"
    assert seen["cas_bad"] == a, "a failing cmpxchg must return the value found"
    assert pte_pfn(seen["xchg"]) == seen["pfn"] and seen["xchg"] & _PAGE_D
    for c, entries in enumerate(seen["tlb_after_flush"]):
        assert not any(e.covers(va) for e in entries), f"core {c} still maps 0x{va:x}: {entries}"
    assert seen["fault"].fault == FaultKind.PAGE, seen["fault"]
    f = arch.figures()
    assert f["flush_count"] == 1 and f["flush_cycles_max"] >= 1, f
    assert f["pte_ops"]["xchg"] == 1 and f["pte_ops"]["mkold"] == 1, f
    hist = arch.pte_history(memory.log[-1].addr if memory.log else 0)
    assert isinstance(hist, list)
    memory.stop()


@cocotb.test()
async def test_arch_fill_records_without_rtl_state(dut):
    """When the RTL's TLB registers cannot be read, tlb_entries reports the driver's record of
    translations, and a flush removes what it invalidated."""
    from pyrmap.kernel import Kernel
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import AccessType, FaultKind

    mem = PhysMem(64)
    env, arch, memory = await start_bench(dut, mem, SEED)
    arch.tlb_reader = None                   # as if the hdl exposed no entry registers
    assert not arch.reads_rtl_tlbs
    kernel = Kernel(arch)
    arch.kernel = kernel
    va = 0x5000_0000
    seen = {}

    def body():
        mm, vma, ptep, page = _map_one_page(kernel, va)
        arch.switch_mm(1, mm)
        assert arch.cpu_access(1, va, AccessType.STORE, data=7).fault == FaultKind.NONE
        seen["before"] = list(arch.tlb_entries(1))
        arch.flush_tlb_page(vma, va)
        seen["after"] = list(arch.tlb_entries(1))
        seen["pfn"] = page.pfn

    await env.run("records", body)
    assert [(e.vpn << 12, e.ppn, e.d) for e in seen["before"]] == [(va, seen["pfn"], True)], \
        seen["before"]
    assert seen["after"] == [], seen["after"]
    memory.stop()


@cocotb.test()
async def test_arch_stale_access_is_caught(dut):
    """The cycle-level access check (checker (a)): an access that began after a flush of its
    address was acknowledged must not complete through the flushed translation.  Fed a bad
    input -- a flush recorded as done that never reached the RTL -- it must fire; after a
    real flush the access faults instead and nothing fires."""
    from pyrmap.kernel import Kernel
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import AccessType, FaultKind

    mem = PhysMem(64)
    env, arch, memory = await start_bench(dut, mem, SEED)
    kernel = Kernel(arch)
    arch.kernel = kernel
    va = 0x7000_0000
    seen = {}

    def body():
        mm, vma, ptep, page = _map_one_page(kernel, va)
        arch.switch_mm(0, mm)
        assert arch.cpu_access(0, va, AccessType.LOAD).fault == FaultKind.NONE
        arch.ptep_get_and_clear(mm, va, ptep)
        # Stale but legal: no flush yet, the TLB may still serve the old translation.
        seen["legal"] = arch.cpu_access(0, va, AccessType.LOAD)
        # The bad input: a flush that is recorded as acknowledged but never happened.
        arch._flush_log.append((arch.cycle(), mm.asid, va, va + 0x1000))
        env.wait_cycles(2)
        try:
            arch.cpu_access(0, va, AccessType.LOAD)
        except AssertionError as exc:
            seen["caught"] = str(exc)
        arch.flush_tlb_page(vma, va)
        env.wait_cycles(2)
        seen["after_flush"] = arch.cpu_access(0, va, AccessType.LOAD)

    await env.run("stale", body)
    assert seen["legal"].fault == FaultKind.NONE and seen["legal"].hit, seen["legal"]
    assert "completed through frame" in seen.get("caught", ""), seen
    assert "removed by the flush acknowledged at cycle" in seen["caught"], seen["caught"]
    assert seen["after_flush"].fault == FaultKind.PAGE, seen["after_flush"]
    assert arch.access_checks >= 1
    memory.stop()


# =============================================================================================
# Scenarios: pyrmap.scenario.System on CosimArch, its threads run as host threads.

import random
import time

from pyrmap.demo import KERNEL_FIGURES
from pyrmap.checkers import InvariantViolation
from pyrmap.pte import PAGE_SIZE
from pyrmap.scenario import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE,
                             System)


class CosimViolation(AssertionError):
    """An invariant violation seen in co-simulation: the checker's report (seed, step,
    operation, PTE history, reproducing command) prefixed with the simulated cycle."""


class CosimSystem(System):
    """A :class:`pyrmap.scenario.System` whose MMU is the RTL and whose threads are host
    threads: ``spawn`` queues a thread, ``await run_async()`` runs every queued thread to
    completion in simulated time, then the quiescent checks."""

    def __init__(self, bench, seed: int, *, quirks=None, command: str = "",
                 raise_on_violation: bool = True, swap_slots: int = 128):
        env, arch, memory = bench
        self._queued: list = []
        # System builds a PhysMem of its own and hands it to the arch factory; the bench's
        # arch already owns the memory the RTL is answered from, and the Kernel takes
        # ``arch.mem``, so the System's copy is simply not used.
        super().__init__(seed=seed, nframes=arch.mem.nframes, ncores=arch.ncores,
                         swap_slots=swap_slots, quirks=quirks,
                         arch=lambda mem, ncores, seed_, sched: arch, command=command,
                         raise_on_violation=raise_on_violation)
        arch.kernel = self.kernel
        self.env = env
        self.memory = memory
        arch.access_checker = self.checkers.tlb
        if getattr(arch, "device", None) is not None:
            arch.device.checker = self.checkers.tlb

    def spawn(self, name: str, fn, *args, mm=None):
        self._queued.append((name, fn, args, mm))

    async def run_async(self, check: bool = True, spare=()) -> None:
        queued, self._queued = self._queued, []
        env = self.env
        # The first thread to fail stops the others (at their next round trip); ``spare``:
        # the host thread that called run() and waits for this batch.
        env.on_error = lambda thread, exc: env.stop(f"{thread.name} failed: "
                                                     f"{type(exc).__name__}", spare)
        tasks = []
        for name, fn, args, mm in queued:
            def body(fn=fn, args=args, mm=mm):
                env.current().mm = mm
                return fn(*args)
            tasks.append(env.spawn(name, body))
        first_exc, where = None, ""
        for t in tasks:
            try:
                await t.join()
            except ThreadKilled:
                pass                       # stopped because another thread failed
            except Exception as exc:  # noqa: BLE001 - the first one is re-raised below
                if first_exc is None:
                    first_exc, where = exc, t.name
                    env.stop(f"{t.name} failed: {type(exc).__name__}", spare)
        if first_exc is not None:
            raise self._cycle_tag(first_exc, where)
        if check and self.check:
            try:
                self.checkers.check_all()
            except InvariantViolation as exc:
                raise self._cycle_tag(exc)

    async def call(self, name: str, fn, *args, **kwargs):
        """Run one engine call (an mm operation) as a host thread and return its result."""
        try:
            return await self.env.run(name, fn, *args, **kwargs)
        except InvariantViolation as exc:
            raise self._cycle_tag(exc)

    def _cycle_tag(self, exc, thread: str = ""):
        if isinstance(exc, InvariantViolation):
            who = f" in host thread {thread!r}" if thread else ""
            return CosimViolation(f"at cycle {self.arch.cycle()}{who}:\n{exc}")
        return exc

    def run(self, check: bool = True) -> None:
        """From a host thread (e.g. ``pyrmap.scenario.random_program`` running as one):
        run every queued thread to completion in simulated time, then the quiescent checks.
        From a coroutine: await :meth:`run_async` instead."""
        if not self.env.in_host_thread():
            raise RuntimeError("CosimSystem runs in simulated time: await run_async()")
        self.env.call(self.run_async, check, (self.env.current(),))


async def start_system(dut, seed: int, *, nframes: int, quirks=None, command: str = "",
                       raise_on_violation: bool = True, yield_cycles=(0, 2)) -> CosimSystem:
    """Start the bench on a fresh PhysMem of ``nframes`` and build a CosimSystem on it."""
    from pyrmap.physmem import PhysMem
    bench = await start_bench(dut, PhysMem(nframes), seed, yield_cycles=yield_cycles)
    return CosimSystem(bench, seed, quirks=quirks, command=command,
                       raise_on_violation=raise_on_violation)


# Figures the report shows (kernel.stats keys), as pyrmap.demo labels them.
#: The kernel figures of the report: the same table as the pure-Python demo's.
FIGURES = KERNEL_FIGURES


class Progress:
    """Progress lines to ``COSIM_PROGRESS`` (the CLI tails it) and to the log."""

    def __init__(self):
        self.path = os.environ.get("COSIM_PROGRESS")
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] {text}"
        cocotb.log.info("%s", line)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")


def scenario_params() -> dict:
    """Scenario knobs from the environment (set by the CLI / tests)."""
    def num(name, default):
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            raise ValueError(f"{name} must be an integer, not {os.environ.get(name)!r}")
    quirks = [q for q in os.environ.get("COSIM_QUIRKS", "").split(",") if q]
    return {
        "scenario": os.environ.get("COSIM_SCENARIO", "reclaim"),
        "phases": num("COSIM_PHASES", 3),
        "accesses": num("COSIM_ACCESSES", 40),
        "nframes": num("COSIM_NFRAMES",
                       64 if os.environ.get("COSIM_SCENARIO") == "fuzz" else 32),
        "steps": num("COSIM_STEPS", 12),
        "quirks": quirks,
        "command": os.environ.get("COSIM_COMMAND") or default_command(quirks),
    }


def default_command(quirks) -> str:
    """The CLI command that reruns this very run (seed, simulator, configuration)."""
    cfg = bench_config()
    parts = [f"python -m cosim run {os.environ.get('COSIM_SCENARIO', 'reclaim')}",
             f"--sim {os.environ.get('COSIM_SIM', 'icarus')}", f"--seed {SEED}"]
    for flag, key in (("--cores", "ncores"), ("--tlb-entries", "tlb_entries"),
                      ("--tlb-ways", "tlb_ways")):
        if key in cfg:
            parts.append(f"{flag} {cfg[key]}")
    for name in ("COSIM_PHASES", "COSIM_ACCESSES", "COSIM_NFRAMES", "COSIM_STEPS"):
        if name in os.environ:
            parts.append(f"--{name[6:].lower()} {os.environ[name]}")
    if cfg.get("svadu") is False:
        parts.append("--svade")
    hw = [k for k, v in cfg.items() if k.startswith("quirk_") and v]
    for q in list(quirks) + hw:
        parts.append(f"--quirk {q}")
    return " ".join(parts)


async def reclaim_scenario(dut, seed: int, p: dict, progress: Progress,
                           out: dict) -> CosimSystem:
    """Processes sharing anonymous pages through fork and file pages through shared
    mappings; workloads on every core through the RTL; kswapd under memory pressure,
    writeback and migration next to them; a device (a DeviceMmuDriver registered on the
    parent's mm, its workload on dev__req, shadow-checked) accessing the parent's pages at
    the same time; every checker on, all the time."""
    s = out["system"] = await start_system(dut, seed, nframes=p["nframes"],
                                           quirks=p["quirks"] or None, command=p["command"])
    arch = s.arch
    rng = random.Random(seed)
    ncores = arch.ncores
    progress(f"seed {seed}: {p['nframes']} frames, {ncores} cores, "
             f"quirks {','.join(p['quirks']) or 'none'}; RTL TLB state "
             f"{'read from the RTL' if arch.reads_rtl_tlbs else 'from fills'}")
    rw = PROT_READ | PROT_WRITE

    def setup():
        f = s.create_file("data.bin", 8)
        parent = s.new_process()
        anon = s.mmap(parent, 0, 6 * PAGE_SIZE, rw, MAP_PRIVATE | MAP_ANONYMOUS)
        fsh = s.mmap(parent, 0, 8 * PAGE_SIZE, rw, MAP_SHARED, file=f)
        drv = None
        if dev_arch is not None:
            from pyrmap.devdriver import register_device
            drv = register_device(parent, checkers=s.checkers, dev=dev_arch, name="dev0")
        return f, parent, anon, fsh, drv

    # The device (secondary MMU): a DeviceMmuDriver registered on the parent's mm, its
    # workload on the RTL's dev__req port next to the CPUs, kswapd, writeback and migration.
    dev_arch = getattr(arch, "device", None)
    s.checkers.step("setup")
    f, parent, anon, fsh, drv = await s.call("setup", setup)
    dev = None
    if drv is not None:
        from cosim.device import DeviceDriver
        dev = s.device_driver = DeviceDriver(dev_arch, drv, shadow=s.shadow)
        dev_rng = random.Random(seed * 7919 + 17)
        dev_count = max(8, p["accesses"] // 6)
    s.workload(0, parent, [("store", anon + i * PAGE_SIZE) for i in range(6)] +
               [("store", fsh + i * PAGE_SIZE) for i in range(0, 8, 2)])
    s.spawn("touch", s.workloads[-1].run, mm=parent)
    await s.run_async()

    def fork_and_map():
        c1 = s.fork(parent)
        c2 = s.fork(parent)
        f1 = s.mmap(c1, 0, 4 * PAGE_SIZE, rw, MAP_SHARED, file=f, pgoff=4)
        f2 = s.mmap(c2, 0, 3 * PAGE_SIZE, rw, MAP_PRIVATE, file=f, pgoff=2)
        return c1, c2, f1, f2

    s.checkers.step("fork")
    c1, c2, f1, f2 = await s.call("fork", fork_and_map)
    procs = [parent, c1, c2]
    fmaps = [(parent, fsh, 8 * PAGE_SIZE), (c1, f1, 4 * PAGE_SIZE)]
    progress("3 processes (fork shares 6 anonymous pages), a file of 8 pages mapped shared "
             "by 2 and privately by 1")
    for phase in range(p["phases"]):
        s.checkers.step(f"phase {phase}")
        for core in range(ncores):
            mm = procs[(phase + core) % len(procs)]
            s.random_workload(core, mm, p["accesses"], store_ratio=0.5,
                              rng=random.Random(rng.randrange(1 << 30)))

        def kswapd():
            from pyrmap.vmscan import balance
            for _ in range(8):
                balance(s.kernel, 8, 14)
                arch.env.wait_cycles(arch.env.rng.randint(50, 150))   # kswapd sleeps

        def writeback(phase=phase):
            mm, addr, length = fmaps[phase % len(fmaps)]
            s.msync(mm, addr, length, check_backing=False)

        def migration():
            pages = s.mapped_user_pages()
            if pages:
                s.migrate(rng.choice(pages))

        s.spawn("kswapd", kswapd)
        s.spawn("writeback", writeback)
        s.spawn("migration", migration)
        if dev is None:
            await s.run_async()
        else:
            await _run_with_device(s, dev, parent, dev_count,
                                   random.Random(dev_rng.randrange(1 << 30)))
        k = s.kernel
        progress(f"phase {phase + 1}/{p['phases']}: cycle {arch.cycle()}, "
                 f"free frames {k.frames.nr_free}, swapped out {k.stats['pswpout']}, "
                 f"written {k.stats['pages_written']}, migrated {k.stats['migrate_success']}, "
                 f"accesses {s.shadow.loads + s.shadow.stores}"
                 + (f", device accesses {dev.stats['accesses']}" if dev is not None else ""))

    def finish():
        for mm, addr, length in fmaps:
            s.msync(mm, addr, length)
        for mm in list(procs):
            s.exit(mm)
    s.checkers.step("final msync and exit")
    await s.call("exit", finish)
    s.checkers.check_all()
    return s


async def _run_with_device(s: CosimSystem, dev, mm, count: int, rng: random.Random) -> None:
    """Every queued host thread with ``count`` random device accesses (the device's own words
    of each page of ``mm``, checked against the shadow) on dev__req at the same time; then
    the quiescent checks and the device's own: every device TLB entry backed by its PTE."""
    from pyrmap.scenario import _offset
    from pyrmap.workload import random_accesses
    accesses = list(_offset(random_accesses(rng, lambda: s.shadow.regions(mm), count,
                                            store_ratio=0.4, words=2),
                            s.agent_offset(mm, s.arch.ncores)))
    failed = []

    async def device():
        # An exception in a background task would end the cocotb test at once; keep it and
        # raise it (tagged with the cycle) once the host threads are done.
        try:
            await dev.run(accesses)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            failed.append((s.arch.cycle(), exc))

    task = cocotb.start_soon(device())
    try:
        await s.run_async(check=False)
    finally:
        await task
    if failed:
        cycle, exc = failed[0]
        if isinstance(exc, InvariantViolation):
            raise CosimViolation(f"at cycle {cycle} (device):\n{exc}")
        raise exc
    if not s.check:
        return
    try:
        s.checkers.check_all()
        if not mm.dead:
            for entry in dev.driver.device_entries():
                problem, ptep, _ = s.checkers.tlb._problem("device TLB", entry, mm)
                if problem:
                    s.checkers.tlb.fail(f"device TLB holds {entry} of {mm!r} but {problem}",
                                        ptep)
    except InvariantViolation as exc:
        raise s._cycle_tag(exc)


async def fuzz_scenario(dut, seed: int, p: dict, progress: Progress,
                        out: dict) -> CosimSystem:
    """``pyrmap.scenario.random_program`` on the RTL: seeded random mm operations (mmap anon /
    file, private / shared, munmap, mprotect, mremap, fork, exit, madvise, msync, reclaim,
    migration, remap_file_pages), each run as a host thread next to workloads on the cores
    and kswapd, with the quiescent checks after every step."""
    from pyrmap.scenario import random_program
    s = out["system"] = await start_system(dut, seed, nframes=p["nframes"],
                                           quirks=p["quirks"] or None, command=p["command"])
    progress(f"seed {seed}: {p['nframes']} frames, {s.arch.ncores} cores, {p['steps']} random "
             f"steps, quirks {','.join(p['quirks']) or 'none'}")

    def on_step(step, name):
        if step % 4 == 0 or step == p["steps"] - 1:
            progress(f"step {step + 1}/{p['steps']}: {name} (cycle {s.arch.cycle()}, "
                     f"accesses {s.shadow.loads + s.shadow.stores})")

    await s.call("program", random_program, s, p["steps"], rng=random.Random(seed),
                 on_step=on_step)
    s.checkers.check_all()
    return s


class _SummedCheckers:
    """The checkers of every iteration of a sweep as one bundle for the report: checks and
    violations summed per checker (the last iteration's alone would report a checker that
    ran in earlier iterations as not exercised)."""

    def __init__(self):
        self.bundles: list = []

    def verdicts(self) -> list[tuple[str, int, int, str]]:
        from pyrmap.checkers import NOT_EXERCISED
        rows: dict[str, list[int]] = {}
        for chk in self.bundles:
            for name, checks, violations, _ in chk.verdicts():
                row = rows.setdefault(name, [0, 0])
                row[0] += checks
                row[1] += violations
        return [(name, c, v, "FAIL" if v else "PASS" if c else NOT_EXERCISED)
                for name, (c, v) in rows.items()]


class _RaceRun:
    """Stands in for a CosimSystem in the report of the dirty-race scenario (one kernel per
    iteration; the report shows the last one's figures, every iteration's checks)."""

    def __init__(self, arch, env, memory):
        self.arch, self.env, self.memory = arch, env, memory
        self.kernel = None
        self.checkers = _SummedCheckers()
        self.last_checkers = None
        self.shadow = None
        self.iterations = 0


async def dirty_race_scenario(dut, seed: int, p: dict, progress: Progress, out: dict):
    """reclaim's ``try_to_unmap`` against a CPU store whose walk sets D by CAS in the RTL.

    A shared file page is mapped writable but clean and old, so the store's walker must
    compare-and-swap A and D into the PTE.  Each iteration (a fresh kernel on the same RTL,
    every TLB flushed) starts the store a different number of cycles after reclaim; reclaim
    unmaps the page, writes it back if it is dirty and drops it from the page cache; then the
    file's backing store must hold the store's value (checker (c)).  With
    ``nonatomic_ptep_get_and_clear`` the unmap is a load and a store of 0 a few cycles apart,
    and a walker CAS that lands between them is lost: the page is dropped unwritten."""
    from pyrmap.checkers import Checkers
    from pyrmap.filemap import write_one_page
    from pyrmap.kernel import Kernel, Quirks
    from pyrmap.mm_types import (PG, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ, VM_SHARED,
                                 VM_WRITE, AddressSpace, MmStruct, Vma)
    from pyrmap.pagemap import lock_page, unlock_page
    from pyrmap.pagetable import pgd_alloc, pte_alloc
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import PAGE_SHARED, AccessType, FaultKind, pfn_pte
    from pyrmap.rmap import SWAP_SUCCESS, page_add_file_rmap, try_to_unmap
    from pyrmap.vmscan import remove_mapping

    mem = PhysMem(max(p["nframes"], 16))
    env, arch, memory = await start_bench(dut, mem, seed, yield_cycles=(0, 3))
    run = out["system"] = _RaceRun(arch, env, memory)
    iterations = p["steps"]
    va = 0x4000_0000
    progress(f"seed {seed}: up to {iterations} iterations of store-vs-try_to_unmap, quirks "
             f"{','.join(p['quirks']) or 'none'}")
    for it in range(iterations):
        mem.words[:] = 0
        quirks = Quirks(**{q: True for q in p["quirks"]})
        k = Kernel(arch, quirks)
        arch.kernel = k
        if run.last_checkers is not None:
            run.last_checkers.uninstall()
        chk = Checkers(k, seed=seed, command=p["command"]).install()
        chk.step(f"iteration {it}")
        run.checkers.bundles.append(chk)
        run.kernel, run.last_checkers, run.shadow, run.iterations = k, chk, chk.shadow, it + 1
        arch.access_checker = chk.tlb
        f = AddressSpace(k, "f", 1)
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
        # Iterations sweep the store's start from 24 cycles before reclaim to 23 after.
        delay = it % 48 - 24
        state = {}

        def setup():
            arch.flush_tlb_all()
            mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
            k.mms.append(mm)
            vma = Vma(mm, va, va + PAGE_SIZE, flags, 0, f)
            mm.mmap.append(vma)
            f.i_mmap.insert(0, 0, vma)
            page = k.alloc_page()
            page.mapping, page.index = f, 0
            page.set(PG.uptodate)
            f.page_tree[0] = page
            k.get_page(page)
            ptep = pte_alloc(mm, va)
            arch.set_pte_at(mm, va, ptep, pfn_pte(page.pfn, PAGE_SHARED))   # clean, old
            page_add_file_rmap(page)
            mm.file_rss += 1
            chk.shadow.register_file(f)
            chk.shadow.on_mmap(mm, va, PAGE_SIZE, 3, True, f, 0)
            arch.switch_mm(0, mm)
            state.update(mm=mm, page=page, ptep=ptep)

        first_txn = arch.history_from_seq = len(memory.log)
        await env.run("setup", setup)
        mm, page = state["mm"], state["page"]
        value = 0x5EED_0000 + it

        def cpu():
            env.wait_cycles(max(delay, 0))
            r = arch.cpu_access(0, va, AccessType.STORE, data=value)
            if r.fault == FaultKind.NONE:
                chk.shadow.store(mm, va, value)

        def reclaim():
            env.wait_cycles(max(-delay, 0))
            k.get_page(page)
            lock_page(page)
            rc = try_to_unmap(page, 0)
            if rc == SWAP_SUCCESS and page.test(PG.dirty):
                write_one_page(page)
                lock_page(page)
            if rc == SWAP_SUCCESS:
                remove_mapping(page)
            unlock_page(page)
            k.put_page(page)

        threads = [env.spawn("cpu0", cpu), env.spawn("reclaim", reclaim)]
        try:
            for t in threads:
                await t.join()
        except InvariantViolation as exc:
            raise CosimViolation(f"at cycle {arch.cycle()} (iteration {it}, the store began "
                                 f"{delay} cycles after reclaim):\n{exc}")
        try:
            if 0 not in f.page_tree:
                chk.shadow.check_backing(f, [0])
            chk.check_all()
        except InvariantViolation as exc:
            hist = "\n".join(f"    {h}" for h in arch.pte_history(state["ptep"]))
            raise CosimViolation(f"at cycle {arch.cycle()} (iteration {it}, the store began "
                                 f"{delay} cycles after reclaim):\n{exc}\n  PTE history of "
                                 f"0x{va:x} (oldest first):\n{hist}")
        if it % 8 == 7:
            progress(f"iteration {it + 1}/{iterations}: cycle {arch.cycle()}, no lost write")
    return run


SCENARIOS = {"reclaim": reclaim_scenario, "fuzz": fuzz_scenario,
             "dirty_race": dirty_race_scenario}


def report(s: CosimSystem, seed: int, p: dict, seconds: float, error: str | None) -> dict:
    """The figures of a run (what the CLI prints and ``--json`` writes)."""
    arch = s.arch
    k = s.kernel
    drivers = getattr(arch, "drivers", [])
    cores = []
    for d in drivers:
        perf = d.perf()
        cores.append({"core": d.core, "driver": dict(d.stats), "perf": perf})
    tot = collections.Counter()
    for c in cores:
        tot.update({k2: v for k2, v in c["perf"].items() if v >= 0})
    lookups = tot.get("lookups", 0)
    return {
        "scenario": p["scenario"], "seed": seed, "quirks": p["quirks"],
        "config": bench_config(), "sim": os.environ.get("COSIM_SIM", ""),
        "cycles": arch.cycle(), "wall_seconds": round(seconds, 2),
        "accesses": s.shadow.loads + s.shadow.stores,
        "loads": s.shadow.loads, "stores": s.shadow.stores,
        "tlb": {"lookups": lookups, "hits": tot.get("hits", 0), "misses": tot.get("misses", 0),
                "hit_rate": (tot.get("hits", 0) / lookups) if lookups else 0.0,
                "walks": tot.get("walks", 0), "walk_cycles": tot.get("walk_cycles", 0),
                "a_sets": tot.get("a_sets", 0), "d_sets": tot.get("d_sets", 0),
                "cas_retries": tot.get("cas_retries", 0), "invals": tot.get("invals", 0),
                "squashed": tot.get("squashed", 0)},
        "cores": cores,
        "device": ({"driver": dict(arch.device.stats), "perf": arch.device.counters()}
                   if getattr(arch, "device", None) is not None else None),
        "device_figures": (s.device_driver.figures()
                           if getattr(s, "device_driver", None) is not None else None),
        "device_figure_labels": {key: label for key, label in DEVICE_FIGURE_LABELS},
        "arch": arch.figures(),
        "kernel": {key: k.stats.get(key, 0) for _, key in FIGURES},
        "figure_labels": {key: label for label, key in FIGURES},
        "host": {"threads": arch.env.stats["threads"], "resumes": arch.env.stats["resumes"],
                 "lock_waits": arch.env.stats["lock_waits"]},
        "memory": {"transactions": len(arch.memory.log) if arch.memory else 0},
        "checkers": [{"name": n, "checks": c, "violations": v, "verdict": verd}
                     for n, c, v, verd in s.checkers.verdicts()],
        "iterations": getattr(s, "iterations", None),
        "violation": error,
        "passed": error is None,
    }


import collections  # noqa: E402

from pyrmap.devdriver import FIGURE_LABELS as DEVICE_FIGURE_LABELS  # noqa: E402


@cocotb.test()
async def test_scenario(dut):
    """The scenario named by COSIM_SCENARIO; writes its report to COSIM_REPORT."""
    p = scenario_params()
    if p["scenario"] not in SCENARIOS:
        raise ValueError(f"Unknown scenario {p['scenario']!r}; known: {', '.join(SCENARIOS)}")
    progress = Progress()
    t0 = time.monotonic()
    out = {}
    error = None
    try:
        s = await SCENARIOS[p["scenario"]](dut, SEED, p, progress, out)
    except (CosimViolation, InvariantViolation) as exc:
        error = str(exc)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if "system" not in out:
            raise
    s = out["system"]
    rep = report(s, SEED, p, time.monotonic() - t0, error)
    path = os.environ.get("COSIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(rep, fh, indent=2, default=str)
    progress("violation:\n" + error if error else "passed")
    if error:
        raise CosimViolation(error)
