"""``python -m cosim.stress`` (``make stress``): the fast path with every checker on, many seeds.

Each seed runs the reclaim workload on the fast path (:mod:`cosim.fastrun`: kswapd, writeback
and migration next to the traffic engines, every record judged) with every checker on, and
must end with zero violations, no checker failing and every checker exercised: the records'
checkers (golden-walk scoreboard, stale translation (a), shadow memory (c)) on every drained
record, the frame checker (b) at every free, and rmap completeness (e), notifier pairs (d) and
accounted dirt (f) at the quiescent points after each kernel step.  A checker that made no
check is listed under ``not_exercised`` and fails the seed (never counted as a pass).

The full size (:data:`FULL_SIZE`, the default): Verilator 10**6 checked accesses per seed over
20 seeds, Icarus 10**5 per seed over 20 seeds.

* **One build per simulator**, made (or reused) before any seed starts, shared by its seeds.
* **Seeds in parallel**: ``--jobs`` worker processes (default: the usable cores), the longest
  seeds first; each worker is this command for one seed with ``--in-process``.
* **Resume**: each seed's result is written as it ends to ``<summary>-seeds/<sim>-seed<N>.json``
  (its log beside it); a rerun of the same command skips the seeds that already passed with the
  same sizes at the same commit, and runs the rest.  ``--fresh`` starts over.
* **Progress from the first second**: the plan and an ETA at once (from the measured cost per
  access, :data:`PRIOR_RATE`, until this run measures its own), then a status line every
  ``--status-every`` seconds and a line at each seed's end.
* **A wall-clock limit per seed** (``--timeout``, default from the seed's size): a seed past it
  is killed, and its entry names the seed, its last progress line and the command that
  reproduces it.
* **A JSON summary** (``--json``, default ``bench/results/stress.json``, checked writable
  before anything runs, rewritten after every seed): per seed its accesses, cycles, checks,
  verdicts, CPU seconds and peak RSS; per simulator and overall the totals, and
  ``meets_full_size`` / ``verdict``: whether the whole stress met the full size with every seed
  passing, said plainly.

Exit status 0 when every seed passed, 1 otherwise (2 for a bad argument, 130 when
interrupted: rerun the same command to resume); each failure prints its seed and the command
that reproduces it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .build import ROOT, SIMULATORS
from .fastbuild import FastParams, fast_build, fast_run, fully_passed
from .fastcli import fast_sizes

__all__ = ["FULL_SIZE", "PRIOR_RATE", "SeedRun", "run_seed", "stress", "main"]

#: The full stress: checked accesses per seed and seeds, per simulator.
FULL_SIZE = {"verilator": {"accesses": 1_000_000, "seeds": 20},
             "icarus": {"accesses": 100_000, "seeds": 20}}
#: Checked accesses per second of one seed on one core, before this run has measured its own
#: (the ETA's first guess): the per-seed CPU cost measured at the full size (bench/NOTES.md,
#: "make stress at full size": a Verilator seed of 10**6 in 174 s, an Icarus seed of 10**5 in
#: 274 s).
PRIOR_RATE = {"verilator": 5_700, "icarus": 360}
#: Cycles between two kernel steps (kswapd, migration, writeback, dontneed).
PERIOD = 50_000
#: A seed's fixed cost in the ETA: the worker's and the simulator's start and the setup.
START_SECONDS = 5.0
NCORES = 2
_PROGRESS = re.compile(r"([\d,]+) accesses checked")


@dataclass(frozen=True)
class SeedRun:
    """One seed of the stress: what it runs and the identity a resumed stress compares."""
    sim: str
    seed: int
    accesses: int
    nframes: int

    @property
    def name(self) -> str:
        return f"{self.sim}-seed{self.seed}"

    @property
    def key(self) -> dict:
        """What a stored result must match to be reused (sizes and the code's commit)."""
        return {"sim": self.sim, "seed": self.seed, "accesses": self.accesses,
                "nframes": self.nframes, "ncores": NCORES, "period": PERIOD,
                "commit": _commit()}

    def argv(self) -> list[str]:
        return ["--sim", self.sim, "--seeds", "1", "--first-seed", str(self.seed),
                "--accesses", str(self.accesses), "--nframes", str(self.nframes)]

    @property
    def reproduce(self) -> str:
        return (".venv/bin/python -m cosim.stress " + " ".join(self.argv()) +
                f" --fresh --json bench/results/stress-{self.name}.json")

    def estimate(self, rate: float) -> float:
        """Seconds of wall time on one free core at ``rate`` accesses per second."""
        return START_SECONDS + self.accesses / rate


@functools.lru_cache(maxsize=None)
def _commit() -> Optional[str]:
    """The checked-out commit (what a stored result is reused for), None outside git."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def _params(nframes: int) -> tuple[FastParams, int]:
    words_log2, pages = fast_sizes(nframes, NCORES)
    return FastParams(words_log2=words_log2, latency=1, log_log2=12), pages


def _config():
    from hdl.config import MmuConfig
    return MmuConfig(ncores=NCORES)


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def run_seed(task: SeedRun, out: TextIO = sys.stdout, quiet: bool = False) -> dict:
    """Run one seed in this process (the simulator is its child); returns its entry."""
    from .cli import progress_file
    params, pages = _params(task.nframes)
    t0, cpu0 = time.monotonic(), _cpu()
    print(f"  {task.sim} seed {task.seed}: {task.accesses:,} checked accesses ...", file=out,
          flush=True)
    with progress_file(out, quiet, prefix="cosim-stress-") as progress:
        ok, rep, where = fast_run(_config(), params, task.sim, seed=task.seed, env={
            "FAST_ACCESSES": task.accesses, "FAST_PAGES": pages, "FAST_PERIOD": PERIOD,
            "COSIM_PROGRESS": progress})
    rep = rep or {}
    passed, failing, idle = fully_passed(ok, rep)
    entry = {"seed": task.seed, "sim": task.sim, "passed": passed,
             "accesses": rep.get("accesses", 0), "cycles": rep.get("cycles"),
             "faults": rep.get("faults", 0), "fault_rate": rep.get("fault_rate"),
             "checks": rep.get("checker_checks", {}), "log_checks": rep.get("log_checks", {}),
             "verdicts": rep.get("verdicts", {}), "not_exercised": idle,
             "violations": len(rep.get("violations", [])) + ("error" in rep),
             "wall_seconds": round(time.monotonic() - t0, 1),
             "cpu_seconds": round(_cpu() - cpu0, 1),
             "sim_cpu_seconds": rep.get("cpu_seconds"),
             "peak_rss_mb": rep.get("peak_rss_mb"),
             "kernel_steps": rep.get("kernel_steps"),
             "kernel_figures": rep.get("kernel_figures"),
             "run_dir": str(where), "key": task.key}
    if passed:
        # The rings' record files (tens of MB per 10**6 accesses) are of use only to a
        # failure; the report and the log stay.
        for f in Path(where).glob("*.hex"):
            f.unlink()
    else:
        entry["reproduce"] = task.reproduce
        entry["first_violation"] = (
            (rep.get("violations") or [rep.get("error")])[0]
            or (f"checkers failing: {', '.join(failing)}" if failing else
                f"checkers not exercised: {', '.join(idle)}" if idle else
                f"the simulation ended without a report (see {where}/sim.log)"))
    return entry


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def default_timeout(task: SeedRun) -> int:
    """A seed's wall-clock limit: 15 minutes of margin (start-up, the build of a cold cache)
    plus six times its expected time on a free core (a loaded machine)."""
    return int(900 + 6 * task.estimate(PRIOR_RATE[task.sim]))


class _Worker:
    """A seed running in a worker process (its own session, so a timeout kills it whole)."""

    def __init__(self, task: SeedRun, result: Path, log: Path, timeout: float):
        self.task, self.result, self.log, self.timeout = task, result, log, timeout
        self.t0 = time.monotonic()
        result.unlink(missing_ok=True)
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cosim.stress", *task.argv(), "--in-process",
                 "--result", str(result)], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def last_progress(self) -> tuple[int, str]:
        """(checked accesses, the line) of the worker's last progress line."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0, ""
        for line in reversed(text.splitlines()):
            m = _PROGRESS.search(line)
            if m:
                return int(m.group(1).replace(",", "")), line.strip()
        return 0, ""

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def finish(self, timed_out: bool) -> dict:
        entry = None if timed_out else _read_json(self.result)
        if entry is None:
            n, line = self.last_progress()
            why = (f"timed out after {self.timeout:g} s of wall-clock time (seed "
                   f"{self.task.seed}, {self.task.sim}, last progress: {line or 'none'})"
                   if timed_out else
                   f"the worker exited with status {self.proc.returncode} and no result "
                   f"(see {self.log})")
            entry = {"seed": self.task.seed, "sim": self.task.sim, "passed": False,
                     "accesses": n, "cycles": None, "faults": 0, "checks": {},
                     "log_checks": {}, "verdicts": {}, "not_exercised": [], "violations": 1,
                     "wall_seconds": round(self.elapsed(), 1), "cpu_seconds": None,
                     "peak_rss_mb": None, "timed_out": timed_out, "key": self.task.key,
                     "first_violation": why, "reproduce": self.task.reproduce}
            _write_json(self.result, entry)
        entry["log"] = str(self.log)
        return entry


def _eta(queued: list[SeedRun], running: list[_Worker], rates: dict, jobs: int,
         settled: frozenset = frozenset()) -> float:
    """Seconds until the last seed ends: the running seeds' remaining times and the queued
    seeds, each given to the first worker free (as the scheduler does).  A simulator's rate
    is ``rates``' when it is ``settled`` (measured on seeds that ended), else the running
    seeds' own so far when they have reported progress, else ``rates``' first guess."""
    rates = dict(rates)
    progress = [(w.task.sim, *w.last_progress(), w.elapsed()) for w in running]
    for sim in {p[0] for p in progress if p[1]} - set(settled):
        n, t = (sum(x) for x in zip(*[(p[1], p[3]) for p in progress if p[0] == sim and p[1]]))
        rates[sim] = n / max(t, 1e-9)
    free = []
    for w, (_, n, _, _) in zip(running, progress):
        rate = rates[w.task.sim]
        left = ((w.task.accesses - n) / rate if n else
                max(w.task.estimate(rate) - w.elapsed(), 0.0))
        free.append(left)
    free += [0.0] * max(jobs - len(free), 0)
    free.sort()
    for t in queued:
        free[0] += t.estimate(rates[t.sim])
        free.sort()
    return max(free) if free else 0.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def stress(tasks: Sequence[SeedRun], summary_path: Path, *, jobs: int,
           timeout: Optional[float] = None, fresh: bool = False, status_every: float = 30.0,
           out: TextIO = sys.stdout, quiet: bool = False) -> dict:
    """Run ``tasks`` over ``jobs`` worker processes; returns the summary (also written to
    ``summary_path`` after every seed).  Stored passed results are reused unless ``fresh``."""
    t_start = time.monotonic()
    seeds_dir = summary_path.with_name(summary_path.stem + "-seeds")
    seeds_dir.mkdir(parents=True, exist_ok=True)
    done: dict[SeedRun, dict] = {}
    for t in tasks:
        path = seeds_dir / f"{t.name}.json"
        if fresh:
            path.unlink(missing_ok=True)
            continue
        old = _read_json(path)
        if old is not None and old.get("passed") and old.get("key") == t.key:
            done[t] = dict(old, reused=True)
    if done:
        print(f"stress: resuming: {len(done)} of {len(tasks)} seeds already passed with these "
              f"sizes at this commit ({seeds_dir}; --fresh starts over)", file=out, flush=True)
    queued = sorted((t for t in tasks if t not in done),
                    key=lambda t: -t.estimate(PRIOR_RATE[t.sim]))
    summary = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "commit": _commit(), "jobs": jobs, "full_size": FULL_SIZE,
               "seeds_dir": str(seeds_dir)}

    def save() -> None:
        summary.update(_summarize(tasks, done))
        summary["wall_seconds"] = round(time.monotonic() - t_start, 1)
        _write_json(summary_path, summary)

    # One build per simulator, before any seed: the seeds share it.
    for sim in sorted({t.sim for t in queued}, key=list(SIMULATORS).index):
        nframes = {t.nframes for t in queued if t.sim == sim}
        for n in sorted(nframes):
            t0 = time.monotonic()
            print(f"stress: build for {sim} ({n} frames) ...", file=out, flush=True)
            b = fast_build(_config(), _params(n)[0], sim)
            print(f"stress: build for {sim}: {'built' if b.seconds else 'reused'} in "
                  f"{time.monotonic() - t0:.1f} s ({b.build_dir})", file=out, flush=True)
    rates = dict(PRIOR_RATE)
    measured: dict[str, list[tuple[int, float]]] = {}
    running: list[_Worker] = []
    save()
    eta = _eta(queued, running, rates, jobs)
    guess = ", ".join(f"{s} {r:,} accesses/s" for s, r in rates.items())
    print(f"stress: {len(queued)} seeds to run over {jobs} worker(s), longest first; ETA "
          f"{_minutes(eta)} (first guess: {guess} per seed on a free core); summary in "
          f"{summary_path}", file=out, flush=True)
    next_status = time.monotonic() + min(status_every, 1.0)
    interrupted = False
    # The workers run in sessions of their own (a timeout kills one whole), so a terminal's
    # hang-up or a kill of this process must stop them here, as Ctrl-C does.
    handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while queued or running:
            while queued and len(running) < jobs:
                t = queued.pop(0)
                limit = timeout or default_timeout(t)
                running.append(_Worker(t, seeds_dir / f"{t.name}.json",
                                       seeds_dir / f"{t.name}.log", limit))
                print(f"  {t.name}: started ({t.accesses:,} checked accesses, limit "
                      f"{limit:g} s, log {seeds_dir / (t.name + '.log')})", file=out,
                      flush=True)
            for w in list(running):
                over = w.elapsed() > w.timeout
                if w.proc.poll() is None and not over:
                    continue
                if over:
                    w.kill()
                running.remove(w)
                entry = w.finish(over)
                done[w.task] = entry
                if entry["passed"] and entry["accesses"]:
                    measured.setdefault(w.task.sim, []).append(
                        (entry["accesses"], entry["wall_seconds"]))
                    a, s = map(sum, zip(*measured[w.task.sim]))
                    rates[w.task.sim] = a / max(s, 1e-9)
                save()
                print(_seed_line(entry), file=out, flush=True)
            now = time.monotonic()
            if not quiet and running and now >= next_status:
                print(_status_line(tasks, done, running, queued, rates, jobs, t_start,
                                   measured), file=out, flush=True)
                next_status = now + status_every
            time.sleep(0.25)
    except KeyboardInterrupt:
        interrupted = True
        for w in running:
            w.kill()
        print("\nstress: interrupted; the seeds that ended are kept: rerun the same command to "
              "resume", file=out, flush=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    save()
    summary["interrupted"] = interrupted
    _write_json(summary_path, summary)
    return summary


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _seed_line(e: dict) -> str:
    head = f"  {e['sim']}-seed{e['seed']}: {'PASS' if e['passed'] else 'FAIL'}"
    if not e["passed"]:
        return (f"{head}: {e.get('first_violation')}\n    reproduce: {e.get('reproduce')}"
                f"\n    log: {e.get('log')}")
    return (f"{head} {e['accesses']:,} accesses, {e['faults']:,} faults, "
            f"{e['wall_seconds']} s wall, {e['cpu_seconds']} s CPU, peak RSS "
            f"{e['peak_rss_mb'] or 0:.0f} MiB")


def _status_line(tasks, done, running, queued, rates, jobs, t_start, settled) -> str:
    now = time.monotonic() - t_start
    per_sim = []
    for sim in SIMULATORS:
        n = sum(t.sim == sim for t in tasks)
        if n:
            per_sim.append(f"{sim} {sum(t.sim == sim for t in done)}/{n}")
    runs = []
    for w in running:
        n, _ = w.last_progress()
        runs.append(f"{w.task.name} {n:,}/{w.task.accesses:,}" if n else
                    f"{w.task.name} starting ({w.elapsed():.0f} s)")
    eta = _eta(queued, running, rates, jobs, frozenset(settled))
    end = _dt.datetime.now() + _dt.timedelta(seconds=eta)
    return (f"[{now:6.0f} s] done {', '.join(per_sim)}; running {'; '.join(runs)}; ETA "
            f"{_minutes(eta)} ({end:%H:%M})")


def _summarize(tasks: Sequence[SeedRun], done: dict) -> dict:
    """The per-simulator and overall figures, and whether the full size was met."""
    runs = []
    for sim in SIMULATORS:
        mine = [t for t in tasks if t.sim == sim]
        if not mine:
            continue
        entries = [done[t] for t in mine if t in done]
        cpu = [e["cpu_seconds"] for e in entries if e.get("cpu_seconds") is not None]
        full = FULL_SIZE[sim]
        accesses = {t.accesses for t in mine}
        passed = len(entries) == len(mine) and all(e["passed"] for e in entries)
        runs.append({
            "sim": sim, "accesses_per_seed": max(accesses), "seeds": [t.seed for t in mine],
            "nframes": mine[0].nframes, "pages_per_core": _params(mine[0].nframes)[1],
            "passed": passed,
            "seeds_passed": sum(e["passed"] for e in entries), "seeds_ended": len(entries),
            "total_accesses": sum(e["accesses"] for e in entries),
            "total_violations": sum(e["violations"] for e in entries),
            "not_exercised": sorted({n for e in entries for n in e["not_exercised"]}),
            "cpu_seconds": round(sum(cpu), 1),
            "cpu_seconds_per_seed": round(sum(cpu) / len(cpu), 1) if cpu else None,
            "wall_seconds_per_seed": (round(sum(e["wall_seconds"] for e in entries)
                                            / len(entries), 1) if entries else None),
            "peak_rss_mb": max((e["peak_rss_mb"] or 0 for e in entries), default=None),
            "meets_full_size": bool(passed and len(mine) >= full["seeds"]
                                    and min(e["accesses"] for e in entries) >= full["accesses"]),
            "runs": sorted(entries, key=lambda e: e["seed"])})
    passed = bool(runs) and all(r["passed"] for r in runs)
    meets = {r["sim"]: r["meets_full_size"] for r in runs}
    full = passed and all(meets.get(sim, False) for sim in FULL_SIZE)
    size = ", ".join(f"{s} {v['seeds']} seeds x {v['accesses']:,}" for s, v in FULL_SIZE.items())
    ended = sum(r["seeds_ended"] for r in runs)
    if full:
        verdict = f"PASS at the full size ({size}): every seed passed, 0 violations"
    elif passed:
        ran = ", ".join(f"{r['sim']} {len(r['seeds'])} seeds x {r['accesses_per_seed']:,}"
                        for r in runs)
        verdict = (f"PASS, but NOT the full size ({size}): this stress ran {ran}; every seed "
                   f"passed, 0 violations")
    elif ended < len(tasks):
        verdict = f"NOT FINISHED: {ended} of {len(tasks)} seeds ended"
    else:
        verdict = (f"FAIL: {sum(r['seeds_ended'] - r['seeds_passed'] for r in runs)} of "
                   f"{len(tasks)} seeds failed")
    return {"runs": runs, "passed": passed, "meets_full_size": full, "verdict": verdict,
            "total_violations": sum(r["total_violations"] for r in runs),
            "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 1)}


def main(argv: Optional[Sequence[str]] = None, out=sys.stdout) -> int:
    from pyrmap.cliargs import ArgumentParser, int_arg, writable_file

    from .cli import MAX_FRAMES, MAX_TIMEOUT
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
    p.add_argument("-j", "--jobs", type=int_arg(1, 256), default=len(os.sched_getaffinity(0)),
                   help="seeds run at once, one worker process each (default: the usable "
                        "cores)")
    p.add_argument("--timeout", type=int_arg(1, MAX_TIMEOUT), default=None, metavar="SECONDS",
                   help="wall-clock limit of one seed (default: 15 minutes plus six times the "
                        "seed's expected time)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: do not reuse the seeds' stored results")
    p.add_argument("--status-every", type=int_arg(1), default=30, metavar="SECONDS",
                   help="seconds between two status lines (default 30)")
    p.add_argument("--json", type=writable_file, default=None,
                   help="summary file (checked writable first; default "
                        "bench/results/stress.json); the seeds' results and logs go to "
                        "<summary>-seeds/")
    p.add_argument("--quiet", action="store_true", help="no progress or status lines")
    p.add_argument("--in-process", action="store_true",
                   help="run the seeds in this process, one after another (what a worker does)")
    p.add_argument("--result", type=writable_file, default=None,
                   help="with --in-process and one seed: where its result goes")
    a = p.parse_args(argv)
    sims = a.sim or list(SIMULATORS)
    tasks = [SeedRun(sim, seed, a.accesses or FULL_SIZE[sim]["accesses"], a.nframes)
             for sim in sims for seed in range(a.first_seed, a.first_seed + a.seeds)]
    if a.in_process:
        if a.result and len(tasks) != 1:
            p.error(f"argument --result: takes one seed of one simulator, not {len(tasks)}")
        ok = True
        for t in tasks:
            entry = run_seed(t, out=out, quiet=a.quiet)
            if a.result:
                _write_json(Path(a.result), entry)
            print(_seed_line(dict(entry, log=entry["run_dir"])), file=out, flush=True)
            ok = ok and entry["passed"]
        return 0 if ok else 1
    path = Path(a.json) if a.json else ROOT / "bench" / "results" / "stress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = ", ".join(f"{s} {a.seeds} seeds x {a.accesses or FULL_SIZE[s]['accesses']:,}"
                      for s in sims)
    print(f"stress: {sizes} checked accesses, every checker on", file=out, flush=True)
    summary = stress(tasks, path, jobs=a.jobs, timeout=a.timeout, fresh=a.fresh,
                     status_every=a.status_every, out=out, quiet=a.quiet)
    print(f"summary written to {path}: {summary['verdict']}", file=out, flush=True)
    if summary.get("interrupted"):
        return 130
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
