"""Run litmus files on the RTL, many times each, and judge them.

:func:`run_files` groups the tests by the ``Top`` configuration they need, runs each group in
one simulator process (:mod:`cosim.litmus.bench`), and returns a :class:`TestResult` per
test: the histogram of outcomes, which conditions were seen, and the verdict.

Verdict rules: a test **fails** when a run satisfies a ``forbidden`` condition, when a run
does not satisfy a ``required`` one, when an ``observable`` condition (a negative control) was
never satisfied, when the golden-walk scoreboard found a translation of a run wrong, or when a
run hung or broke; otherwise it **passes**.  The report counts the translations the
scoreboard replayed.
"""

from __future__ import annotations

import collections
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from hdl.config import MMUS, mmu_params

from .model import LitmusTest, Verdict
from .parser import parse_file
from pyrmap.profiles import DEFAULT_PROFILE, add_kernel_argument, describe, get_profile, profile_quirks

__all__ = ["TestResult", "judge", "run_files", "format_result", "DEFAULT_RUNS", "MMU_CONFIG",
           "inapplicable"]

DEFAULT_RUNS = 100


@dataclass
class TestResult:
    """The judged runs of one test.

    Attributes
    ----------
    test : LitmusTest
    sim : str
    config : dict
        The ``Top`` parameters it ran on.
    runs : list of dict
        The bench's records (``seed``, ``outcome``, ``conds``, ``cycles``, ``error``).
    histogram : Counter of str
    seen : list of int
        Per condition, the number of runs that satisfied it.
    failures : list of str
        Why the test failed (empty: passed); each names a run's seed.
    first_bad_cycles : int or None
        Simulated cycles from the start of the batch to the end of the first failing run.
    """
    test: LitmusTest
    sim: str
    config: dict
    runs: list
    histogram: collections.Counter = field(default_factory=collections.Counter)
    seen: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    first_bad_cycles: Optional[int] = None
    first_bad_condition: Optional[str] = None
    first_bad_run: Optional[dict] = None
    kernel_quirks: list = field(default_factory=list)
    #: The kernel profile the test's kernel ran (:mod:`pyrmap.profiles`).
    kernel: str = DEFAULT_PROFILE
    #: Waves files of the simulator processes that ran this test (``waves=True``).
    waves: list = field(default_factory=list)

    def reproduce(self) -> Optional[str]:
        """The command that replays the first failing run (None when all passed)."""
        rec = self.first_bad_run
        if rec is None:
            return None
        from ..build import nondefault_params
        cfg = ",".join(f"{k}={v}" for k, v in sorted(nondefault_params(self.config).items())
                       if k not in ("ncores", "arbitration"))
        cmd = (f"python -m cosim.litmus {self.test.path} --runs 1 --seed {rec['seed']} "
               f"--sim {self.sim or 'icarus'}")
        if rec.get("arbitration"):
            cmd += f" --arbitration {rec['arbitration']}"
        if cfg:
            cmd += f" --config {cfg}"
        if self.kernel != DEFAULT_PROFILE:
            cmd += f" --kernel {self.kernel}"
        cmd += "".join(f" --kernel-quirk {q}" for q in self.kernel_quirks)
        return cmd

    @property
    def straddled(self) -> int:
        """Translations, over all runs, answered after an invalidation of their core was
        acknowledged that came after their request (walks in flight across a shootdown)."""
        return sum(rec.get("straddled", 0) for rec in self.runs)

    @property
    def replayed(self) -> int:
        """RTL translations, over all runs, replayed by the golden-walk scoreboard."""
        return sum(rec.get("scoreboard", {}).get("translations", 0) for rec in self.runs)

    @property
    def scoreboard_violations(self) -> int:
        return sum(rec.get("scoreboard", {}).get("count", 0) for rec in self.runs)

    @property
    def passed(self) -> bool:
        return not self.failures


def judge(test: LitmusTest, runs: list, sim: str = "", config: Optional[dict] = None
          ) -> TestResult:
    """Apply the verdict rules to the bench's run records."""
    r = TestResult(test, sim, dict(config or {}), runs)
    r.seen = [0] * len(test.conditions)
    cycles = 0
    for rec in runs:
        cycles += rec.get("cycles", 0)
        arb = f", {rec['arbitration']} arbitration" if "arbitration" in rec else ""
        if "error" in rec:
            r.histogram["error: " + rec["error"]] += 1
            r.failures.append(f"run seed {rec['seed']}{arb}: {rec['error']}")
            if r.first_bad_cycles is None:
                r.first_bad_cycles, r.first_bad_condition = cycles, "run error"
                r.first_bad_run = rec
            continue
        r.histogram[rec["outcome"]] += 1
        for i, (c, val) in enumerate(zip(test.conditions, rec["conds"])):
            if val:
                r.seen[i] += 1
            bad = (c.verdict == Verdict.FORBIDDEN and val) or \
                  (c.verdict == Verdict.REQUIRED and not val)
            if bad:
                what = "forbidden outcome seen" if val else "required condition failed"
                r.failures.append(f"run seed {rec['seed']}{arb}: {what} (line {c.line}: "
                                  f"{c.text}): {rec['outcome']}")
                if r.first_bad_cycles is None:
                    r.first_bad_cycles = cycles
                    r.first_bad_condition = f"{c.verdict.value}: {c.text}"
                    r.first_bad_run = rec
        bad = rec.get("scoreboard", {}).get("violations")
        if bad:
            r.failures.append(f"run seed {rec['seed']}{arb}: golden-walk scoreboard: {bad[0]}")
            if r.first_bad_cycles is None:
                r.first_bad_cycles, r.first_bad_condition = cycles, "scoreboard"
                r.first_bad_run = rec
    for i, c in enumerate(test.conditions):
        if c.verdict == Verdict.OBSERVABLE and not r.seen[i] and runs:
            r.failures.append(f"observable outcome never seen in {len(runs)} runs (line "
                              f"{c.line}: {c.text})")
    return r


def format_result(r: TestResult, *, max_failures: int = 5) -> str:
    """The histogram and verdict of one test, as the CLI prints it."""
    n = len(r.runs)
    lines = [f"Test {r.test.name} ({r.test.path}) on {r.sim or '?'}: {n} runs"]
    for outcome, count in sorted(r.histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {count:6d}  {outcome}")
    for c, seen in zip(r.test.conditions, r.seen):
        lines.append(f"  {c.verdict.value:>10}: {c.text}  -- satisfied in {seen}/{n}")
    lines.append(f"  golden-walk scoreboard: {r.replayed} RTL translations replayed, "
                 f"{r.scoreboard_violations} violations")
    if r.straddled:
        runs = sum(1 for rec in r.runs if rec.get("straddled"))
        lines.append(f"  walks across a shootdown: {r.straddled} in {runs}/{n} runs")
    if r.passed:
        lines.append("  verdict: PASS")
    else:
        lines.append(f"  verdict: FAIL ({len(r.failures)} problem(s))")
        for f in r.failures[:max_failures]:
            lines.append(f"    {f}")
        if r.reproduce():
            lines.append(f"  reproduce the first failing run: {r.reproduce()}")
    return "\n".join(lines)


#: The ``Top`` parameters of each core MMU a litmus run can use (``--mmu``).
MMU_CONFIG = {name: mmu_params(name) for name in MMUS}


def inapplicable(paths: Iterable[str], config: dict) -> dict[str, str]:
    """The files whose own ``config`` line cannot be combined with ``config`` (e.g. a test
    that declares ``svadu=true``, hardware A/D, on CVA6's MMU): path -> the reason.

    Raises
    ------
    LitmusSyntaxError
        A file does not parse.
    """
    from ..build import make_config
    out = {}
    for p in paths:
        test = parse_file(p)
        try:
            make_config(**_config_for(test, config))
        except ValueError as exc:
            out[str(p)] = str(exc)
    return out


def _config_for(test: LitmusTest, base: dict) -> dict:
    cfg = dict(base)
    cfg.update({k: v for k, v in test.config.items()})
    cfg["ncores"] = max(int(cfg.get("ncores", 2)), test.ncores)
    return cfg


def run_files(paths: Iterable[str], *, runs: Optional[int] = None, sim: str = "icarus",
              seed: int = 1, config: Optional[dict] = None, waves: bool = False,
              arbitration: str = "both", kernel_quirks: Iterable[str] = (),
              kernel: str = DEFAULT_PROFILE) -> list[TestResult]:
    """Parse, run and judge litmus files.

    Parameters
    ----------
    paths : iterable of str
    runs : int, optional
        Runs per test (default: the file's ``option runs=``, else :data:`DEFAULT_RUNS`).
    sim : str
        ``"icarus"`` or ``"verilator"``.
    seed : int
        Run ``k`` of a test uses seed ``seed + k``; ``--runs 1 --seed S`` replays one run
        (with the same arbitration).
    config : dict, optional
        ``Top`` parameters for every test (a file's ``config`` line overrides them), e.g.
        ``{"quirk_fill_after_inval": True}``.
    arbitration : str
        ``"round_robin"``, ``"fixed"``, or ``"both"``: the first half of the runs on a
        round-robin memory arbiter, the second half on a fixed-priority one (a timing
        perturbation of its own).  A test or ``config`` naming ``arbitration`` pins it.
    kernel_quirks : iterable of str
        :class:`pyrmap.kernel.Quirks` to switch on in the kernel of tests that use one.

    Raises
    ------
    LitmusSyntaxError
        A file does not parse (before anything runs).
    ValueError
        An unknown arbitration.
    RuntimeError
        The simulator failed to produce a report.
    """
    from pyrmap.kernel import Quirks

    from ..build import make_config, run
    from .kernel_ops import needs_kernel
    kernel_quirks = list(kernel_quirks)
    for q in kernel_quirks:
        if q not in Quirks.__dataclass_fields__:
            raise ValueError(f"Kernel quirk must be one of "
                             f"{', '.join(Quirks.__dataclass_fields__)}, not {q!r}")
    kernel = get_profile(kernel).name
    run_quirks = profile_quirks(kernel) + [q for q in kernel_quirks
                                           if q not in profile_quirks(kernel)]
    if arbitration not in ("round_robin", "fixed", "both"):
        raise ValueError(f"Arbitration must be 'round_robin', 'fixed' or 'both', not "
                         f"{arbitration!r}")
    tests = [parse_file(p) for p in paths]
    groups: dict = collections.OrderedDict()
    for t in tests:
        cfg = _config_for(t, config or {})
        groups.setdefault(json.dumps(cfg, sort_keys=True), []).append(t)
    records: dict = collections.defaultdict(list)
    waves_files: dict = collections.defaultdict(list)
    configs: dict = {}
    for key, group in groups.items():
        cfg = json.loads(key)
        arbs = ([cfg["arbitration"]] if "arbitration" in cfg else
                ["round_robin", "fixed"] if arbitration == "both" else [arbitration])
        for t in group:
            configs[id(t)] = cfg
        for j, arb in enumerate(arbs):
            jobs = []
            for t in group:
                n = int(runs or t.options.get("runs", DEFAULT_RUNS))
                lo = n * j // len(arbs)
                hi = n * (j + 1) // len(arbs)
                if hi > lo:
                    jobs.append((t, {"path": str(Path(t.path).resolve()), "runs": hi - lo,
                                     "seed": seed + lo, "kernel_quirks": run_quirks}))
            if not jobs:
                continue
            full = dict(cfg, arbitration=arb)
            rr = run(make_config(**full), sim, "cosim.litmus.bench", seed=seed,
                     env={"COSIM_LITMUS": json.dumps([jb for _, jb in jobs])}, waves=waves)
            rep = (rr.report or {}).get("litmus")
            if rep is None:
                raise RuntimeError(f"the litmus bench produced no report "
                                   f"({'; '.join(rr.failures)})\n{rr.log_tail()}\n"
                                   f"reproduce: {rr.command}")
            for t, jb in jobs:
                if rr.waves_file is not None:
                    waves_files[id(t)].append(str(rr.waves_file))
                for rec in rep["tests"][jb["path"]]["runs"]:
                    rec["arbitration"] = arb
                    records[id(t)].append(rec)
    results = [judge(t, records[id(t)], sim, configs[id(t)]) for t in tests]
    for r in results:
        r.kernel_quirks = list(kernel_quirks) if needs_kernel(r.test) else []
        r.kernel = kernel
        r.waves = waves_files[id(r.test)]
    return results


def main(argv: Optional[list] = None, prog: str = "python -m cosim.litmus") -> int:
    """Run litmus files on the RTL; exit 1 when any test fails, 2 on a usage or parse error."""
    import logging

    from pyrmap.cliargs import ArgumentParser

    from ..build import SIMULATORS, make_config
    from .parser import LitmusSyntaxError
    p = ArgumentParser(prog=prog, description=main.__doc__)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--runs", type=int, default=None, help=f"runs per test (default: the "
                   f"file's 'option runs=', else {DEFAULT_RUNS})")
    p.add_argument("--sim", choices=SIMULATORS, default="icarus")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", default="", help="k=v,k=v parameters of Top (quirks too)")
    p.add_argument("--arbitration", choices=("both", "round_robin", "fixed"), default="both",
                   help="memory arbiter of the runs (both: half of the runs on each)")
    p.add_argument("--kernel-quirk", action="append", default=[], metavar="NAME",
                   help="switch on a pyrmap.kernel.Quirks switch in the tests' kernel")
    add_kernel_argument(p)
    p.add_argument("--waves", action="store_true")
    p.add_argument("--mmu", choices=(*MMU_CONFIG, "both"), default="ours",
                   help="the cores' MMU: ours, cva6 (Verilator only; the engine in Svade "
                        "mode) or both, one verdict per MMU (default %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.runs is not None and args.runs < 1:
        p.error(f"--runs must be at least 1, not {args.runs}")
    from hdl.config import MmuConfig

    from ..build import check_simulator
    mmus = list(MMU_CONFIG) if args.mmu == "both" else [args.mmu]
    try:
        cfg = MmuConfig.parse_params(args.config)
        make_config(**cfg)
    except (TypeError, ValueError) as exc:
        p.error(f"argument --config: {exc}")
    try:
        for mmu in mmus:
            check_simulator(make_config(**dict(cfg, **MMU_CONFIG[mmu])), args.sim)
    except (TypeError, ValueError) as exc:
        p.error(f"argument --mmu: {exc}")
    summary = []
    for mmu in mmus:
        base = dict(cfg, **MMU_CONFIG[mmu])
        try:
            skip = inapplicable(args.files, base)
            results = run_files([f for f in args.files if str(f) not in skip], runs=args.runs,
                                sim=args.sim, seed=args.seed, config=base, waves=args.waves,
                                arbitration=args.arbitration, kernel_quirks=args.kernel_quirk,
                                kernel=args.kernel)
        except (LitmusSyntaxError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not summary:
            print(f"kernel {describe(args.kernel)} (for tests with kernel threads)")
        bad = 0
        if len(mmus) > 1:
            print(f"=== MMU {mmu}")
        for r in results:
            print(format_result(r))
            for w in r.waves:
                print(f"  waves: {w}")
            bad += not r.passed
        for path, why in skip.items():
            print(f"Test {path}: not applicable on MMU {mmu}: {why}")
        summary.append((mmu, len(results) - bad, len(results), len(skip)))
    for mmu, good, n, skipped in summary:
        na = f" ({skipped} not applicable)" if skipped else ""
        print(f"{good} of {n} litmus tests passed" + (f" on MMU {mmu}{na}" if len(mmus) > 1
                                                        or mmu != "ours" else ""))
    return 0 if all(good == n for _, good, n, _ in summary) else 1
