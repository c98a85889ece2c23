"""``rmap-cosim`` (also ``python -m cosim``): the co-simulation's one command line.

Commands
--------
``run SCENARIO``
    Build (or reuse) ``hdl.top.Top`` for the chosen simulator and configuration, run the
    registered scenario (:data:`cosim.scenarios.SCENARIOS`) in cocotb
    (``cosim.tb.tb_scenarios.test_scenario``) with a progress display, then print the figures
    (accesses, TLB hit rate, walks, A/D CAS updates and retries, flushes and their cycles,
    pages aged / unmapped / written back / swapped / migrated) and every checker's verdict.
    ``--json FILE`` writes the figures, ``--waves`` records a waveform.
``demo``
    ``run reclaim`` with the demo's size (``make demo``).
``list``
    Scenarios (with the quirks each catches), checkers and quirks, from their registries.
``litmus``, ``cfy``, ``bugzoo``, ``bench``
    Handed to :mod:`cosim.litmus.runner`, :mod:`cosim.cfy`, :mod:`cosim.bugzoo` and
    :mod:`cosim.bench` (:data:`DELEGATED`); ``rmap-cosim COMMAND --help`` shows their flags.

Exit status: 0 when every checker passed, 1 on a violation or a failed simulation, 2 on bad
arguments (with a one-line message saying what is wrong).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence, TextIO

import cosim.scoreboard  # noqa: F401 - registers the scoreboard's row title
from hdl.config import MAX_CORES, MMUS, mmu_params
from pyrmap.checker_registry import checker_title
from pyrmap.checkers import verdict_lines  # importing pyrmap.checkers registers them
from pyrmap.cliargs import UsageError, int_arg, writable_file
from pyrmap.faults import add_faults_argument
from pyrmap.profiles import DEFAULT_PROFILE, add_kernel_argument, describe, profile_quirks

__all__ = ["main", "UsageError", "parse_args", "format_report"]

def _scenarios() -> dict:
    """The scenario registry (:data:`cosim.scenarios.SCENARIOS`)."""
    from cosim.scenarios import SCENARIOS
    return SCENARIOS


DEMO = {"phases": 8, "accesses": 120, "nframes": 32}


def _kernel_quirks() -> list[str]:
    from pyrmap.kernel import Quirks
    return [f.name for f in dataclasses.fields(Quirks)]


def _hdl_quirks() -> list[str]:
    from hdl.config import MmuConfig
    return [f.name for f in dataclasses.fields(MmuConfig) if f.name.startswith("quirk_")]


#: Upper bounds on the run's size flags: beyond them a run takes hours, not minutes.
MAX_PHASES = 10_000
MAX_ACCESSES = 1_000_000
MAX_STEPS = 100_000
MAX_FRAMES = 1 << 16
MAX_TIMEOUT = 7 * 24 * 3600


def default_timeout(phases: int, accesses: int, cores: int, steps: int) -> int:
    """The wall-clock limit of a run of this size, in seconds: ten minutes of margin (the
    simulator's start, a loaded machine) plus 0.2 s per access and 10 s per step, several
    times what Icarus needs."""
    return int(600 + 0.2 * phases * accesses * cores + 10 * steps)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)

    def exit(self, status: int = 0, message: Optional[str] = None):
        if message:
            raise UsageError(message.strip())
        raise SystemExit(status)


#: The console entry point (pyproject's ``[project.scripts]``).
PROG = "rmap-cosim"

#: Commands handed whole to another module's ``main(argv, prog=...)``: name -> (module, help).
DELEGATED = {
    "litmus": ("cosim.litmus.runner", "run litmus files on the RTL (docs/litmus.md)"),
    "cfy": ("cosim.cfy", "the clear-flush-young comparison: reclaim with and without the "
                         "flush on young, side by side"),
    "bugzoo": ("cosim.bugzoo", "every quirk against the run that catches it, as a table"),
    "bench": ("cosim.bench", "how fast the co-simulation runs, and its ceiling "
                             "(bench/results/)"),
    "trace": ("cosim.explore.trace", "record a program's data accesses with Valgrind's lackey "
                                     "into a .npz (rmap-cosim trace --out FILE -- CMD ARGS)"),
    "sweep": ("cosim.explore.cli", "a TLB design sweep on the RTL (points, CSV, plots; "
                                   "docs/exploration.md)"),
}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(sp, demo=False):
        sp.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="simulator (default %(default)s: it builds once, then runs "
                             "several times faster than Icarus)")
        sp.add_argument("--seed", type=int_arg(0), default=1, help="seed of the run (default 1)")
        sp.add_argument("--cores", type=int_arg(1, MAX_CORES, "the memory arbiter serves at "
                                                  "most 16 cores"),
                        default=2, help="CPU cores (default 2)")
        sp.add_argument("--tlb-entries", type=int_arg(1), default=8,
                        help="entries of each core's TLB (default 8)")
        sp.add_argument("--tlb-ways", type=int_arg(1), default=None,
                        help="ways (default: fully associative = entries)")
        sp.add_argument("--phases", type=int_arg(1, MAX_PHASES), default=DEMO["phases"] if demo else None,
                        help="workload phases (default: "
                             + (str(DEMO["phases"]) if demo else "the scenario's, else 3")
                             + ")")
        sp.add_argument("--accesses", type=int_arg(1, MAX_ACCESSES), default=None,
                        help="accesses per core per phase (default: "
                             + (str(DEMO["accesses"]) if demo else "the scenario's, else 40")
                             + ")")
        sp.add_argument("--nframes", type=int_arg(16, MAX_FRAMES, "physical memory is "
                                                                  "allocated up front"),
                        default=None,
                        help="physical memory in 4 KiB frames (default: 32, fuzz 64)")
        sp.add_argument("--steps", type=int_arg(1, MAX_STEPS), default=None,
                        help=", ".join(f"{sc.steps} of {sc.name}" for sc in
                                       _scenarios().values() if sc.steps)
                        + " (default: the scenario's, else 12)")
        sp.add_argument("--quirk", action="append", default=[], metavar="NAME",
                        help="switch on a quirk (repeatable); see `list`")
        add_kernel_argument(sp)
        sp.add_argument("--svade", action="store_true",
                        help="Svade MMU: A/D faults handled by the kernel instead of the "
                             "walker's CAS")
        sp.add_argument("--mmu", choices=MMUS, default="ours",
                        help="the cores' MMU: ours (hdl) or cva6 (CVA6's Sv39 MMU behind a "
                             "shim; Verilator only, Svade) (default %(default)s)")
        sp.add_argument("--waves", action="store_true", help="record a waveform")
        sp.add_argument("--json", metavar="FILE", type=writable_file,
                        help="write the figures as JSON (checked writable before the run)")
        sp.add_argument("--timeout", type=int_arg(1, MAX_TIMEOUT), default=None,
                        metavar="SECONDS",
                        help="wall-clock limit of the simulation (default: 10 minutes plus "
                             "0.2 s per access and 10 s per step)")
        add_faults_argument(sp)
        sp.add_argument("--quiet", action="store_true", help="no progress display")
        sp.add_argument("--path", choices=("fast", "step"), default="step",
                        help="fast: traffic engines, memory and access logs in gateware, "
                             "Python wakes per event (reclaim only; sized for 10^6 accesses, "
                             "about 6 minutes of simulator CPU: see bench/NOTES.md); step: "
                             "every access from Python (default %(default)s)")

    run = sub.add_parser("run", help="run a scenario")
    run.add_argument("scenario", metavar="SCENARIO",
                     help=f"one of: {', '.join(_scenarios())} (see `list`)")
    common(run)
    demo = sub.add_parser("demo", help="the reclaim scenario at demo size")
    common(demo, demo=True)
    sub.add_parser("list", help="scenarios, checkers and quirks")
    # Dispatched before parsing (see main); listed for --help.
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


@dataclasses.dataclass
class RunArgs:
    scenario: str
    sim: str
    seed: int
    params: dict            # Top parameters
    kernel_quirks: list
    env: dict               # COSIM_* for the testbench
    waves: bool
    json: Optional[str]
    quiet: bool
    command: str
    #: Every quirk switched on (kernel and hardware), as given.
    quirks: list = dataclasses.field(default_factory=list)
    #: Wall-clock limit of the simulation, seconds.
    timeout: int = 600
    #: ``"step"`` (every access from Python) or ``"fast"`` (cosim.fastcli).
    path: str = "step"
    #: The kernel profile (:mod:`pyrmap.profiles`); its quirks are in ``kernel_quirks``.
    kernel: str = DEFAULT_PROFILE


def parse_args(argv: Sequence[str]) -> "RunArgs | str":
    """Parse and validate; returns :class:`RunArgs`, or ``"list"``.

    Raises
    ------
    UsageError
        Anything wrong with the arguments, the configuration or the quirk names.
    """
    args = _parser().parse_args(list(argv))
    if args.command == "list":
        return "list"
    scenario = "reclaim" if args.command == "demo" else args.scenario
    scenarios = _scenarios()
    if scenario not in scenarios:
        raise UsageError(f"unknown scenario {scenario!r}; known: {', '.join(scenarios)}")
    sc = scenarios[scenario]
    params = {"ncores": args.cores, "tlb_entries": args.tlb_entries,
              "tlb_ways": args.tlb_ways if args.tlb_ways is not None else args.tlb_entries}
    if args.svade:
        params["svadu"] = False
    params.update(mmu_params(args.mmu))          # CVA6 brings its Svade mode
    params.update(sc.hdl)                        # e.g. svade: svadu=False
    kq, hq = _kernel_quirks(), _hdl_quirks()
    kernel_quirks = profile_quirks(args.kernel)
    for q in args.quirk:
        if q in kq:
            if q not in kernel_quirks:
                kernel_quirks.append(q)
        elif q in hq or f"quirk_{q}" in hq:
            params[q if q in hq else f"quirk_{q}"] = True
        else:
            raise UsageError(f"unknown quirk {q!r}; kernel quirks: {', '.join(kq)}; "
                             f"hardware quirks: {', '.join(hq)}")
    try:
        from cosim.build import check_simulator, make_config
        check_simulator(make_config(**params), args.sim)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    # Knobs not given take the scenario's defaults (cosim.scenarios.SCENARIOS), the same
    # ones its tests and the bug zoo run with, so a command shown with only a seed and a
    # quirk reproduces what they found.
    args.phases = args.phases or int(sc.env.get("COSIM_PHASES", 3))
    if args.path == "fast" and args.mmu != "ours":
        raise UsageError(f"--path fast runs our MMU's gateware only, not --mmu {args.mmu}")
    if args.path == "fast" and scenario != "reclaim":
        raise UsageError(f"--path fast runs the reclaim scenario only, not {scenario!r}")
    if args.path == "fast" and args.faults:
        raise UsageError("--faults is injected on the step path only (the fast path's memory "
                         "and kernel steps take no injected faults): use --path step")
    if args.path == "fast":
        from cosim.fastcli import FAST_DEMO
        args.accesses = args.accesses or FAST_DEMO["accesses"]
        args.nframes = args.nframes or FAST_DEMO["nframes"]
    elif args.command == "demo":
        args.accesses = args.accesses or DEMO["accesses"]
    args.accesses = args.accesses or int(sc.env.get("COSIM_ACCESSES", 40))
    args.steps = args.steps or int(sc.env.get("COSIM_STEPS", 12))
    nframes = args.nframes or int(sc.env.get("COSIM_NFRAMES", DEMO["nframes"]))
    env = {"COSIM_SCENARIO": scenario, "COSIM_PHASES": args.phases,
           "COSIM_ACCESSES": args.accesses, "COSIM_NFRAMES": nframes,
           "COSIM_STEPS": args.steps,
           "COSIM_QUIRKS": ",".join(kernel_quirks), "COSIM_KERNEL": args.kernel}
    parts = [f"python -m cosim run {scenario} --sim {args.sim} --seed {args.seed}",
             f"--cores {args.cores} --tlb-entries {args.tlb_entries}",
             f"--tlb-ways {params['tlb_ways']} --phases {args.phases}",
             f"--accesses {args.accesses} --nframes {nframes}"]
    if sc.steps:
        parts.append(f"--steps {args.steps}")
    if args.svade:
        parts.append("--svade")
    if args.mmu != "ours":
        parts.append(f"--mmu {args.mmu}")
    if args.kernel != DEFAULT_PROFILE:
        parts.append(f"--kernel {args.kernel}")
    parts += [f"--quirk {q}" for q in args.quirk]
    if args.faults:
        parts.append(f"--faults {args.faults.text()}")
        env["COSIM_FAULTS"] = args.faults.text()
    if args.timeout is not None:
        parts.append(f"--timeout {args.timeout}")
    parts.append(f"--path {args.path}")
    timeout = args.timeout or default_timeout(args.phases, args.accesses, args.cores,
                                              args.steps)
    command = " ".join(parts)
    env["COSIM_COMMAND"] = command
    return RunArgs(scenario, args.sim, args.seed, params, kernel_quirks, env, args.waves,
                   args.json, args.quiet, command, list(args.quirk), timeout, args.path,
                   args.kernel)


# ---------------------------------------------------------------------------------------------
# Running


class _Tail(threading.Thread):
    """Prints the lines the testbench appends to its progress file."""

    def __init__(self, path: Path, out: TextIO):
        super().__init__(daemon=True)
        self.path, self.out = path, out
        self.stop = threading.Event()

    def run(self):
        pos = 0
        while True:
            stopping = self.stop.is_set()
            try:
                with open(self.path) as fh:
                    fh.seek(pos)
                    data = fh.read()
                    pos = fh.tell()
            except OSError:
                data = ""
            for line in data.splitlines():
                print(f"  {line}", file=self.out, flush=True)
            if stopping:
                return
            self.stop.wait(0.3)


@contextlib.contextmanager
def progress_file(out: TextIO, quiet: bool, prefix: str = "cosim-progress-"):
    """A temporary progress file for a simulation; unless ``quiet``, its lines are printed to
    ``out`` as the simulation appends them.  Yields the file's path (as a string); on exit the
    last lines are printed and the file is removed."""
    fd, progress = tempfile.mkstemp(prefix=prefix, suffix=".txt")
    os.close(fd)
    tail = None
    if not quiet:
        tail = _Tail(Path(progress), out)
        tail.start()
    try:
        yield progress
    finally:
        if tail is not None:
            tail.stop.set()
            tail.join()
        os.unlink(progress)


def run(a: RunArgs, out: TextIO = sys.stdout) -> int:
    from cosim import build as cb
    config = cb.make_config(**a.params)
    print(f"rmap-cosim: scenario {a.scenario!r} on {a.sim}, seed {a.seed}, "
          f"{a.params['ncores']} cores, TLB {a.params['tlb_entries']} entries / "
          f"{a.params['tlb_ways']} ways{', Svade' if a.params.get('svadu') is False else ''}, "
          f"MMU {a.params.get('mmu', 'ours')}, "
          f"config {config.config_hash}", file=out, flush=True)
    print(f"  kernel {describe(a.kernel)}", file=out, flush=True)
    t0 = time.monotonic()
    print("  build: export (hdl -> Verilog), then compile (the simulator); both cached by "
          "configuration", file=out, flush=True)
    try:
        b = cb.build(config, a.sim, waves=a.waves,
                     progress=lambda line: print(f"  {line}", file=out, flush=True))
    except cb.BuildError as exc:
        print(f"error: {exc}", file=out)
        return 1
    print(f"  build: {'reused' if not b.seconds else 'done'} in {time.monotonic() - t0:.1f} s "
          f"({b.build_dir})", file=out, flush=True)
    from cosim.scenarios import TB_MODULE
    try:
        with progress_file(out, a.quiet) as progress:
            r = cb.run(config, a.sim, TB_MODULE, seed=a.seed, waves=a.waves,
                       env=dict(a.env, COSIM_PROGRESS=progress,
                                COCOTB_TEST_FILTER="test_scenario"), timeout=a.timeout)
    except RuntimeError as exc:          # the simulator itself died
        print(f"\nerror: the simulation failed: {exc}", file=out)
        print(f"\nFAILED (reproduce: {a.command})", file=out)
        return 1
    seconds = time.monotonic() - t0
    if r.timed_out is not None:
        print(f"\nerror: the simulation timed out after {r.timed_out:g} s of wall-clock time "
              f"(seed {a.seed}, in: {r.last_progress or 'start-up'}); run directory "
              f"{r.test_dir}", file=out)
        print(f"\nFAILED (reproduce: {a.command}; --timeout SECONDS sets the limit)", file=out)
        return 1
    rep = r.report
    if rep is None:
        print(f"\nthe simulation produced no report ({'; '.join(r.failures)}); log tail:",
              file=out)
        print(r.log_tail(3000), file=out)
        print(f"run directory: {r.test_dir}", file=out)
        return 1
    rep = dict(rep, command=a.command, run_dir=str(r.test_dir),
               waves=str(r.waves_file) if r.waves_file else None,
               save_file=str(r.save_file) if r.save_file else None,
               total_seconds=round(seconds, 2))
    print(format_report(rep), file=out)
    if r.waves_file:
        print(f"waves: {r.waves_file}", file=out)
    if r.save_file:
        print(f"save file: {r.save_file} (gtkwave {r.waves_file} {r.save_file})", file=out)
    if a.json:
        try:
            Path(a.json).write_text(json.dumps(rep, indent=2, default=str) + "\n")
            print(f"figures written to {a.json}", file=out)
        except OSError as exc:           # checked before the run; the disk may still fail
            print(f"error: cannot write {a.json}: {exc.strerror or exc}", file=out)
    ok = r.passed and rep.get("passed", False)
    if ok:
        from cosim.scenarios import unexercised_quirks
        idle = unexercised_quirks(rep, a.quirks)
        for line in idle:
            print(f"\n{line}", file=out)
        ok = not idle
    print(f"\n{'OK' if ok else 'FAILED'} in {seconds:.1f} s (reproduce: {a.command})", file=out)
    return 0 if ok else 1


def format_report(rep: dict) -> str:
    """The readable report of a run's figures (the JSON ``--json`` writes)."""
    lines = []
    t = rep.get("tlb", {})
    a = rep.get("arch", {})
    lines.append("")
    prof = rep.get("kernel_profile")
    if prof:
        lines.append(f"kernel {describe(prof['profile'])}")
    lines.append(f"simulated {rep.get('cycles', 0)} cycles in {rep.get('wall_seconds', 0)} s "
                 f"({rep.get('host', {}).get('threads', 0)} host threads, "
                 f"{rep.get('host', {}).get('resumes', 0)} round trips, "
                 f"{rep.get('memory', {}).get('transactions', 0)} memory transactions)")
    lines.append(f"accesses: {rep.get('accesses', 0)} ({rep.get('stores', 0)} stores, "
                 f"{rep.get('loads', 0)} loads checked against the shadow memory)")
    lines.append(f"TLB (all cores): {t.get('lookups', 0)} lookups, {t.get('hits', 0)} hits "
                 f"({100 * t.get('hit_rate', 0):.1f} %), {t.get('misses', 0)} misses, "
                 f"{t.get('walks', 0)} walks ({t.get('walk_cycles', 0)} cycles)")
    lines.append(f"A/D by CAS: {t.get('a_sets', 0)} A sets, {t.get('d_sets', 0)} D sets, "
                 f"{t.get('cas_retries', 0)} CAS retries; {t.get('squashed', 0)} walks "
                 f"restarted by invalidations")
    dev = rep.get("device") or {}
    if dev.get("driver"):
        dd, dp = dev["driver"], dev.get("perf", {})
        lines.append(f"device TLB: {dd.get('accesses', 0)} accesses ({dp.get('hits', 0)} hits, "
                     f"{dp.get('misses', 0)} misses), {dd.get('fills', 0)} fills, "
                     f"{dd.get('invals', 0)} invalidations, {dd.get('young_tests', 0)} "
                     f"young tests")
    fl = a.get("flushes", {})
    kinds = ", ".join(f"{k} {v}" for k, v in fl.items() if k != "no_cores")
    idle = f", {fl['no_cores']} with no core to reach" if fl.get("no_cores") else ""
    lines.append(f"flushes: {a.get('flush_count', 0)} driven (requested: {kinds or 'none'}"
                 f"{idle}); "
                 f"{a.get('inval_requests', 0)} invalidation requests; cycles to the last ack "
                 f"mean {a.get('flush_cycles_mean', 0):.1f}, max {a.get('flush_cycles_max', 0)}, "
                 f"total {a.get('flush_cycles_total', 0)}")
    ops = a.get("pte_ops", {})
    lines.append("PTE operations: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    lines.append("what the kernel did:")
    labels = rep.get("figure_labels", {})
    for key, value in rep.get("kernel", {}).items():
        lines.append(f"  {labels.get(key, key):30s} {value:6d}")
    devfig = rep.get("device_figures")
    if devfig:
        dlabels = rep.get("device_figure_labels") or {}
        lines.append("device (secondary MMU):")
        for key, label in dlabels.items():
            lines.append(f"  {label:36s} {devfig.get(key, 0):6d}")
        lines.append(f"  {'device TLB misses / permission faults':36s} "
                     f"{devfig.get('misses', 0):6d} / {devfig.get('page_faults', 0)}")
        lines.append(f"  {'accesses checked at cycle level':36s} "
                     f"{devfig.get('access_checks', 0):6d}")
    faults = rep.get("faults_injected")
    if faults:
        lines.append("faults injected (survived): "
                     + ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())))
    sb = rep.get("scoreboard")
    if sb:
        lines.append(f"golden-walk scoreboard: {sb.get('translations', 0)} RTL translations "
                     f"replayed ({sb.get('walks', 0)} walks, {sb.get('hits', 0)} TLB hits), "
                     f"{len(sb.get('violations', []))} mismatches")
    windows = rep.get("windows")
    if windows:
        from pyrmap.windows import format_window_rows
        hit = sum(1 for _, _, _, counts in windows if sum(counts.values()))
        lines.append(f"window coverage: {hit} of {len(windows)} (operation, window) pairs "
                     f"opened were landed in (between a PTE change, its lock drop and its "
                     f"flush):")
        lines.extend(f"  {line}" for line in format_window_rows(windows).splitlines())
    lines.append("checkers:")
    lines.extend(verdict_lines(rep.get("checkers", [])))
    if rep.get("violation"):
        lines.append("")
        lines.append("violation:")
        lines.extend(f"  {line}" for line in str(rep["violation"]).splitlines())
    return "\n".join(lines)


def list_all(out: TextIO) -> int:
    print("scenarios:", file=out)
    for sc in _scenarios().values():
        caught = ", ".join(q.quirk for q in sc.quirks)
        print(f"  {sc.name:13s} {sc.summary}" + (f" [catches: {caught}]" if caught else ""),
              file=out)
    print("checkers:", file=out)
    from pyrmap.checkers import CHECKERS
    for spec in sorted(CHECKERS.values(), key=lambda spec: spec.title):
        print(f"  {spec.title:32s} {spec.guarantee}", file=out)
    from pyrmap.profiles import PROFILES
    print("kernel profiles (--kernel): " + "; ".join(describe(p) for p in PROFILES), file=out)
    print("kernel quirks (pyrmap.kernel.Quirks): " + ", ".join(_kernel_quirks()), file=out)
    print("hardware quirks (hdl.config.MmuConfig): " + ", ".join(_hdl_quirks()), file=out)
    print("the run that catches each quirk (it fails, naming the checker):", file=out)
    from cosim.scenarios import QUIRK_SCENARIOS
    for q in QUIRK_SCENARIOS.values():
        print(f"  python -m cosim run {q.scenario} --seed {q.seed} --quirk {q.quirk}"
              f"   # {checker_title(q.checker)}", file=out)
    return 0

def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in DELEGATED:
        import importlib
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return module.main(argv[1:], prog=f"{PROG} {argv[0]}")
    try:
        a = parse_args(argv)
    except UsageError as exc:
        print(f"python -m cosim: error: {exc} (see python -m cosim --help)", file=sys.stderr)
        return 2
    if a == "list":
        return list_all(out)
    if a.path == "fast":
        from cosim.fastcli import run_fast
        return run_fast(a, out)
    return run(a, out)
