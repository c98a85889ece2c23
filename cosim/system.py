"""The co-simulated system: ``hdl.top.Top`` brought up with its memory, host threads, CosimArch
and drivers, the pyrmap kernel on top (:class:`CosimSystem`), a scenario's parameters, its
progress lines and its report.

This is a library for cocotb test modules (``cosim.tb``) and scenarios (:mod:`cosim.scenarios`);
it imports no test module.  The parameters travel from the host side (:mod:`cosim.cli`,
:func:`cosim.scenarios.run_scenario`) through the environment: ``COSIM_CONFIG`` (the Top
parameters), ``COSIM_SCENARIO``, ``COSIM_PHASES``, ``COSIM_ACCESSES``, ``COSIM_NFRAMES``,
``COSIM_STEPS``, ``COSIM_QUIRKS`` (the kernel profile's and the named ones), ``COSIM_KERNEL``
(the profile's name), ``COSIM_COMMAND``, ``COSIM_PROGRESS`` and ``COSIM_REPORT``.

Example (in a cocotb test)
--------------------------
>>> s = await start_system(dut, seed, nframes=32)                # doctest: +SKIP
>>> mm = await s.call("setup", s.new_process)                    # doctest: +SKIP
"""

from __future__ import annotations

import collections
import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from cosim.arch import CosimArch
from cosim.device import DEVICE_INPUTS, check_device_entries
from cosim.dut import write_report
from cosim.host import HostEnv, ThreadKilled
from cosim.memory import Latency, MemoryResponder
from cosim.scoreboard import MmuScoreboard
from pyrmap.checkers import InvariantViolation
from pyrmap.demo import KERNEL_FIGURES
from pyrmap.devdriver import FIGURE_LABELS as DEVICE_FIGURE_LABELS
from pyrmap.faults import FaultInjector, FaultPlan
from pyrmap.profiles import DEFAULT_PROFILE, get_profile
from pyrmap.scenario import System

__all__ = ["top_config", "bring_up", "CosimViolation", "CosimSystem", "start_system",
           "system_for", "SummedCheckers", "RaceRun", "FIGURES", "Progress", "scenario_params",
           "default_command", "report", "write_report"]


def top_config() -> dict:
    """The Top parameters of this run (``COSIM_CONFIG``, set by cosim.build.run)."""
    try:
        return json.loads(os.environ.get("COSIM_CONFIG", "{}"))
    except ValueError:
        return {}


_INPUTS_ZERO = ("req__valid", "inval__valid")


async def bring_up(dut, mem, seed: int, *, yield_cycles=(0, 2), latency=None):
    """Clock, reset, memory responder, host environment and CosimArch with its CPU drivers.

    Returns ``(env, arch, memory)``; ``arch.drivers`` holds the drivers.  ``dut`` is
    ``hdl.top.Top`` built with :func:`top_config`'s parameters."""
    cfg = top_config()
    ncores = int(cfg.get("ncores", 2))
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for i in range(ncores):
        for name in _INPUTS_ZERO:
            getattr(dut, f"cpu{i}__{name}").value = 0
    for name in DEVICE_INPUTS:
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
                     svadu=bool(cfg.get("svadu", True)), mmu=cfg.get("mmu", "ours"))
    arch.attach_cpus()
    # Every RTL translation of the run is replayed against the golden walk.
    arch.scoreboard = MmuScoreboard(ncores, svadu=bool(cfg.get("svadu", True)),
                                    mem_log=memory.log, by_src=memory.by_src,
                                    asid_bits=int(cfg.get("asid_bits", 9)),
                                    mmu=cfg.get("mmu", "ours"))
    if hasattr(dut, "dev__req__valid"):
        from cosim.devarch import DevArch
        arch.attach_device(DevArch(arch))
    return env, arch, memory


class CosimViolation(AssertionError):
    """An invariant violation seen in co-simulation: the checker's report (seed, step,
    operation, PTE history, reproducing command) prefixed with the simulated cycle."""


class CosimSystem(System):
    """A :class:`pyrmap.scenario.System` whose MMU is the RTL and whose threads are host
    threads: ``spawn`` queues a thread, ``await run_async()`` runs every queued thread to
    completion in simulated time, then the quiescent checks."""

    #: The device driver on ``dev__req`` (:class:`cosim.device.DeviceRequester`) when the
    #: scenario runs one; its figures go into the report.
    device_driver = None
    #: Sweep iterations (race scenarios, :class:`RaceRun`); None for a system.
    iterations = None

    def __init__(self, platform, seed: int, *, quirks=None, command: str = "",
                 raise_on_violation: bool = True, swap_slots: int = 128,
                 windows: bool = False):
        env, arch, memory = platform
        self._queued: list = []
        # System builds a PhysMem of its own and hands it to the arch factory; the platform's
        # arch already owns the memory the RTL is answered from, and the Kernel takes
        # ``arch.mem``, so the System's copy is simply not used.
        super().__init__(seed=seed, nframes=arch.mem.nframes, ncores=arch.ncores,
                         swap_slots=swap_slots, quirks=quirks,
                         arch=lambda mem, ncores, seed_, sched: arch, command=command,
                         raise_on_violation=raise_on_violation, windows=windows)
        arch.kernel = self.kernel
        # Injected faults (``COSIM_FAULTS``, ``run --faults``), drawn from the seed.
        self.kernel.faults = FaultInjector(FaultPlan.parse(os.environ.get("COSIM_FAULTS", "")),
                                           seed)
        memory.faults = self.kernel.faults         # bus errors on the RTL's memory port
        self.env = env
        self.memory = memory
        arch.access_checker = self.checkers.tlb
        if arch.device is not None:
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
        self.threads_done()
        if check and self.check:
            try:
                self.checkers.check_all()
            except InvariantViolation as exc:
                raise self._cycle_tag(exc)

    async def run_with_device(self, device, accesses, mm) -> None:
        """Every queued host thread, with ``device`` (a :class:`cosim.device.DeviceRequester`)
        running ``accesses`` for ``mm`` on dev__req at the same time; then, unless checks are
        off, the quiescent checks and the device's own: every device TLB entry of ``mm`` is
        backed by its current PTE.

        A device failure is kept until the host threads are done (an exception in a
        background task would end the cocotb test at once) and raised tagged with its cycle.
        """
        failed = []

        async def run_device():
            try:
                await device.run(accesses)
            except Exception as exc:  # noqa: BLE001 - re-raised below
                failed.append((self.arch.cycle(), exc))

        task = cocotb.start_soon(run_device())
        try:
            await self.run_async(check=False)
        finally:
            await task
        if failed:
            cycle, exc = failed[0]
            if isinstance(exc, InvariantViolation):
                raise CosimViolation(f"at cycle {cycle} (device):\n{exc}")
            raise exc
        if self.check:
            self.check_device_entries(device.driver, mm)

    def check_device_entries(self, driver, mm) -> None:
        """The quiescent checks, and every device TLB entry of ``mm`` (``driver``'s
        :class:`pyrmap.devdriver.DeviceMmuDriver`) backed by its current PTE."""
        try:
            self.checkers.check_all()
            if not mm.dead:
                check_device_entries(self.checkers.tlb, driver)
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
                       raise_on_violation: bool = True, yield_cycles=(0, 2),
                       on_start=None, windows: bool = False) -> CosimSystem:
    """Bring up ``dut`` on a fresh PhysMem of ``nframes`` and build a CosimSystem on it.

    ``on_start``, when given, is called with the new system before any scenario step (an
    observer such as :class:`cosim.cfy.AgingMonitor` attaches there).  ``windows``: count
    window coverage (:mod:`pyrmap.windows`; the report carries it)."""
    from pyrmap.physmem import PhysMem
    platform = await bring_up(dut, PhysMem(nframes), seed, yield_cycles=yield_cycles)
    s = CosimSystem(platform, seed, quirks=quirks, command=command,
                    raise_on_violation=raise_on_violation, windows=windows)
    if on_start is not None:
        on_start(s)
    return s


async def system_for(dut, seed: int, p: dict, **kw) -> CosimSystem:
    """:func:`start_system` with a scenario's parameters ``p`` (:func:`scenario_params`):
    its frames, kernel quirks, reproducing command and ``on_start`` hook."""
    return await start_system(dut, seed, nframes=p["nframes"], quirks=p["quirks"] or None,
                              command=p["command"], on_start=p.get("on_start"), **kw)


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


def scenario_params(seed: int) -> dict:
    """Scenario knobs from the environment (set by the CLI / tests); ``seed`` goes into the
    reproducing command."""
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
        "kernel": os.environ.get("COSIM_KERNEL", DEFAULT_PROFILE),
        "command": os.environ.get("COSIM_COMMAND") or default_command(seed, quirks),
    }


def default_command(seed: int, quirks) -> str:
    """The CLI command that reruns this very run (seed, simulator, configuration)."""
    cfg = top_config()
    parts = [f"python -m cosim run {os.environ.get('COSIM_SCENARIO', 'reclaim')}",
             f"--sim {os.environ.get('COSIM_SIM', 'icarus')}", f"--seed {seed}"]
    for flag, key in (("--cores", "ncores"), ("--tlb-entries", "tlb_entries"),
                      ("--tlb-ways", "tlb_ways")):
        if key in cfg:
            parts.append(f"{flag} {cfg[key]}")
    for name in ("COSIM_PHASES", "COSIM_ACCESSES", "COSIM_NFRAMES", "COSIM_STEPS"):
        if name in os.environ:
            parts.append(f"--{name[6:].lower()} {os.environ[name]}")
    if cfg.get("mmu", "ours") != "ours":
        parts.append(f"--mmu {cfg['mmu']}")
    elif cfg.get("svadu") is False:
        parts.append("--svade")
    hw = [k for k, v in cfg.items() if k.startswith("quirk_") and v]
    for q in list(quirks) + hw:
        parts.append(f"--quirk {q}")
    return " ".join(parts)


class SummedCheckers:
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


class RaceRun:
    """What :func:`report` reads of a race scenario's run, which has one kernel per iteration
    on the same RTL: the last iteration's figures, every iteration's checks summed
    (``checkers``); ``last_checkers`` is the bundle of the iteration in progress."""

    def __init__(self, arch, env, memory):
        self.arch, self.env, self.memory = arch, env, memory
        self.kernel = None
        self.checkers = SummedCheckers()
        self.last_checkers = None
        self.shadow = None
        self.workloads: list = []
        self.device_driver = None
        self.iterations = 0
        self.windows = None             # a sweep of fresh kernels counts no window coverage

    def uninstall_last(self) -> None:
        """Take the previous iteration's checkers off the arch (before the next installs)."""
        if self.last_checkers is not None:
            self.last_checkers.uninstall()

    def next_iteration(self, kernel, checkers) -> None:
        """Iteration ``self.iterations`` runs ``kernel`` under ``checkers``."""
        self.checkers.bundles.append(checkers)
        self.kernel, self.last_checkers, self.shadow = kernel, checkers, checkers.shadow
        self.iterations += 1


def report(s: CosimSystem, seed: int, p: dict, seconds: float, error: str | None) -> dict:
    """The figures of a run (what the CLI prints and ``--json`` writes)."""
    arch = s.arch
    k = s.kernel
    cores = []
    for d in arch.drivers:
        perf = arch.perf(d.core)
        cores.append({"core": d.core, "driver": dict(d.stats), "perf": perf})
    tot = collections.Counter()
    for c in cores:
        tot.update({k2: v for k2, v in c["perf"].items() if v >= 0})
    lookups = tot.get("lookups", 0)
    checkers = [{"name": n, "checks": c, "violations": v, "verdict": verd}
                for n, c, v, verd in s.checkers.verdicts()]
    sb = arch.scoreboard
    scoreboard = None
    if sb is not None:
        sb.finish()
        checkers.append(sb.verdict())
        scoreboard = {"translations": sb.responses,
                      "walks": sum(e["walks"] for e in sb.events.values()),
                      "hits": sum(e["hits"] for e in sb.events.values()),
                      # bus errors the replayed walks met, and the access faults answered
                      "bus_errors": sum(e["bus_errors"] for e in sb.events.values()),
                      "access_faults": sum(e["access_faults"] for e in sb.events.values()),
                      "violations": [str(v) for v in sb.violations[:20]]}
        if sb.violations and error is None:
            error = (f"[scoreboard] {sb.violations[0]}\n  reproduce: {p['command']}"
                     if p.get("command") else f"[scoreboard] {sb.violations[0]}")
    return {
        "scenario": p["scenario"], "seed": seed, "quirks": p["quirks"],
        "kernel_profile": get_profile(p.get("kernel", DEFAULT_PROFILE)).as_dict(),
        "config": top_config(), "sim": os.environ.get("COSIM_SIM", ""),
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
                   if arch.device is not None else None),
        "device_figures": (s.device_driver.figures()
                           if s.device_driver is not None else None),
        "device_figure_labels": {key: label for key, label in DEVICE_FIGURE_LABELS},
        "arch": arch.figures(),
        "kernel": {key: k.stats.get(key, 0) for _, key in FIGURES},
        "faults_injected": dict(k.faults.injected),
        "figure_labels": {key: label for label, key in FIGURES},
        "host": {"threads": arch.env.stats["threads"], "resumes": arch.env.stats["resumes"],
                 "lock_waits": arch.env.stats["lock_waits"]},
        "memory": {"transactions": len(arch.memory.log) if arch.memory else 0},
        "checkers": checkers,
        "scoreboard": scoreboard,
        # (operation, window, opened, landings by kind): what landed in the windows
        "windows": [list(row) for row in s.windows.table()] if s.windows is not None else None,
        "iterations": s.iterations,
        "violation": error,
        "passed": error is None,
    }


