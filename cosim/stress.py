"""``python -m cosim.stress`` (``make stress``): the fast path with every checker on, many seeds.

Each seed runs the reclaim workload on the fast path (:mod:`cosim.fastrun`: kswapd, writeback
and migration next to the traffic engines, every record judged) with every checker on, and
must end with zero violations, no checker failing and every checker exercised: the records'
checkers (golden-walk scoreboard, stale translation (a), shadow memory (c)) on every drained
record, the frame checker (b) at every free, and rmap completeness (e), notifier pairs (d) and
accounted dirt (f) at the quiescent points after each kernel step.  A checker that made no
check is listed under ``not_exercised`` and fails the seed (never counted as a pass).  Default: Verilator 10**6 checked accesses
per seed over 20 seeds, Icarus 10**5 per seed.  A JSON summary (per seed: accesses, faults,
checks, verdicts, violations, wall time; totals) goes to ``--json`` (default
``bench/results/stress-<date>.json``, checked writable before anything runs; rewritten after
every seed, so an interrupted run keeps what it measured).  The run's progress lines (every
tenth of a seed's accesses) are printed as they come.  Exit status 0
when every seed passed, 1 otherwise (2 for a bad argument); each failure prints its seed and
the command that reproduces it.
"""

from __future__ import annotations

import datetime as _dt
import json
import resource
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .build import ROOT, SIMULATORS
from .fastbuild import FastParams, fast_run, fully_passed
from .fastcli import fast_sizes

__all__ = ["stress", "main"]


def _reproduce(sim: str, seed: int, accesses: int, nframes: int) -> str:
    return (f".venv/bin/python -m cosim.stress --sim {sim} --seeds 1 --first-seed {seed} "
            f"--accesses {accesses} --nframes {nframes}")


def stress(sim: str, seeds: Sequence[int], accesses: int, *, nframes: int = 1024,
           ncores: int = 2, out=sys.stdout, quiet: bool = False,
           on_seed=lambda summary: None) -> dict:
    """Run the fast path once per seed; returns the summary dict (also handed to
    ``on_seed`` after every seed, as it stands then)."""
    from hdl.config import MmuConfig

    from .cli import progress_file
    words_log2, pages = fast_sizes(nframes, ncores)
    params = FastParams(words_log2=words_log2, latency=1, log_log2=12)
    config = MmuConfig(ncores=ncores)
    runs = []
    summary = {"sim": sim, "accesses_per_seed": accesses, "seeds": list(seeds),
               "nframes": nframes, "pages_per_core": pages, "runs": runs}
    for seed in seeds:
        t0 = time.monotonic()
        cpu0 = _child_cpu()
        print(f"  {sim} seed {seed}: {accesses:,} checked accesses ...", file=out, flush=True)
        with progress_file(out, quiet, prefix="cosim-stress-") as progress:
            ok, rep, where = fast_run(config, params, sim, seed=seed, env={
                "FAST_ACCESSES": accesses, "FAST_PAGES": pages, "FAST_PERIOD": 50_000,
                "COSIM_PROGRESS": progress})
        rep = rep or {}
        verdicts = rep.get("verdicts", {})
        passed, failing, idle = fully_passed(ok, rep)
        entry = {"seed": seed, "passed": passed,
                 "accesses": rep.get("accesses", 0), "faults": rep.get("faults", 0),
                 "fault_rate": rep.get("fault_rate"), "log_checks": rep.get("log_checks", {}),
                 "verdicts": verdicts, "not_exercised": idle,
                 "violations": len(rep.get("violations", [])) + ("error" in rep),
                 "wall_seconds": round(time.monotonic() - t0, 1),
                 "cpu_seconds": round(_child_cpu() - cpu0, 1),
                 "sim_seconds": rep.get("seconds"), "cycles": rep.get("cycles"),
                 "accesses_per_s": rep.get("accesses_per_s"),
                 "kernel_steps": rep.get("kernel_steps"),
                 "kernel_figures": rep.get("kernel_figures"),
                 "peak_rss_mb": rep.get("peak_rss_mb"), "run_dir": str(where)}
        if not entry["passed"]:
            entry["reproduce"] = _reproduce(sim, seed, accesses, nframes)
            entry["first_violation"] = (
                (rep.get("violations") or [rep.get("error")])[0]
                or (f"checkers failing: {', '.join(failing)}" if failing else
                    f"checkers not exercised: {', '.join(idle)}" if idle else
                    "the checkers were off or reported nothing"))
        runs.append(entry)
        _totals(summary)
        on_seed(summary)
        print(f"  {sim} seed {seed}: {'PASS' if entry['passed'] else 'FAIL'} "
              f"{entry['accesses']:,} accesses, {entry['faults']} faults, "
              f"{entry['wall_seconds']} s" + ("" if entry["passed"] else
                                               f"\n    reproduce: {entry['reproduce']}"),
              file=out, flush=True)
    return summary


def _child_cpu() -> float:
    """CPU seconds (user + system) of the finished simulator processes so far: a seed's
    cost that the machine's load does not change (its build included when it built)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _totals(summary: dict) -> None:
    runs = summary["runs"]
    summary.update(
        passed=bool(runs) and len(runs) == len(summary["seeds"]) and all(r["passed"] for r in runs),
        total_accesses=sum(r["accesses"] for r in runs),
        not_exercised=sorted({n for r in runs for n in r["not_exercised"]}),
        total_violations=sum(r["violations"] for r in runs),
        wall_seconds_per_seed=(round(sum(r["wall_seconds"] for r in runs) / len(runs), 1)
                               if runs else None))


def main(argv: Optional[Sequence[str]] = None, out=sys.stdout) -> int:
    from pyrmap.cliargs import ArgumentParser, int_arg, writable_file

    from .cli import MAX_FRAMES
    p = ArgumentParser(prog="python -m cosim.stress", description=__doc__.split("\n")[0])
    p.add_argument("--sim", action="append", choices=SIMULATORS,
                   help="simulator(s) (default: both)")
    p.add_argument("--seeds", type=int_arg(1), default=20,
                   help="seeds per simulator (default 20)")
    p.add_argument("--first-seed", type=int_arg(0), default=1)
    p.add_argument("--accesses", type=int_arg(1), default=None,
                   help="checked accesses per seed (default: Verilator 10**6, Icarus 10**5)")
    p.add_argument("--nframes", type=int_arg(16, MAX_FRAMES, "physical memory is allocated up "
                                                            "front"), default=1024)
    p.add_argument("--json", type=writable_file, default=None,
                   help="summary file (checked writable first)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    path = Path(a.json) if a.json else (ROOT / "bench" / "results" / (
        "stress-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + ".json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "runs": []}
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    sims = a.sim or list(SIMULATORS)

    def save(part: Optional[dict] = None) -> None:
        done = summary["runs"] + ([part] if part is not None else [])
        summary["passed"] = (len(done) == len(sims) and all(r["passed"] for r in done))
        path.write_text(json.dumps(dict(summary, runs=done), indent=2, default=str) + "\n")

    for sim in sims:
        acc = a.accesses or (1_000_000 if sim == "verilator" else 100_000)
        print(f"stress: {sim}, {len(seeds)} seeds x {acc:,} checked accesses, summary in "
              f"{path}", file=out, flush=True)
        summary["runs"].append(stress(sim, seeds, acc, nframes=a.nframes, out=out,
                                      quiet=a.quiet, on_seed=save))
    save()
    print(f"summary written to {path}: {'PASS' if summary['passed'] else 'FAIL'}", file=out)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
