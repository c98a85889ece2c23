"""Run a sweep's points: in parallel processes on this machine (default), or as Ray tasks
(``ray_address``); skip points whose result exists (resume); write the CSV; show progress
with an ETA.

Every point is :func:`cosim.explore.run.run_point`; its JSON lands in
``<results>/points/<point_id>.json``.  The CSV (``<results>/sweep.csv``) has one row per point
of the grid with a result: the design and workload axes, the status, the golden check's
verdict and every scalar metric.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import multiprocessing
import time
from pathlib import Path
from typing import Callable, Iterable

from .point import DESIGN_AXES, WORKLOAD_AXES, Point
from .run import result_path, run_point
from .schema import CHECKS, METRICS
from .timeline import cpu_now

__all__ = ["run_sweep", "interleave_designs", "point_cost", "write_csv", "load_results", "SweepSummary"]


class SweepSummary(dict):
    """``{"points", "ran", "reused", "failed", "seconds", "cpu_seconds", "phase_cpu",
    "csv", "results"}``: ``seconds`` of wall time, ``cpu_seconds`` of this process and the
    workers it waited for (their simulators and compilers included; Ray's workers are not
    counted), ``phase_cpu`` the CPU seconds of the points that ran, by phase
    (:mod:`cosim.explore.timeline`), largest first."""


def _run_one(point_dict: dict, results: str, sim: str, area: bool = False) -> dict:
    return run_point(Point.from_dict(point_dict), Path(results), sim=sim, area=area)


def point_cost(point: Point) -> tuple:
    """A point's expected cost, for ordering (larger runs longer): its accesses, then its
    TLB's entries and its cores (a larger design takes longer to build and to simulate)."""
    return (point.workload["accesses"], point.design["entries"] * point.design["cores"])


def interleave_designs(points: list[Point]) -> list[Point]:
    """``points`` longest first (:func:`point_cost`), round-robin over their designs: the
    designs by their points' total cost, largest first, then each design's first point, each
    design's second point, and so on.  Points that run at the same time build different
    configurations instead of waiting for one build's lock, and the longest points start
    first, so the sweep does not end waiting on one long point with a core idle."""
    groups: dict[str, list[Point]] = {}
    for p in points:
        groups.setdefault(json.dumps(p.design, sort_keys=True), []).append(p)
    queues = [sorted(g, key=point_cost, reverse=True) for g in groups.values()]

    def total(q):
        costs = [point_cost(p) for p in q]
        return tuple(sum(c[k] for c in costs) for k in range(len(costs[0])))
    queues.sort(key=total, reverse=True)
    out = []
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out


def load_results(results: Path, points: Iterable[Point]) -> list[dict]:
    out = []
    for p in points:
        path = result_path(results, p)
        if path.exists():
            out.append(json.loads(path.read_text()))
    return out


def _scalar_metrics() -> list[str]:
    return [m.name for m in METRICS if m.name != "walk_latency_hist"]


def write_csv(results: Path, rows: list[dict]) -> Path:
    """``<results>/sweep.csv``: one row per point result."""
    path = Path(results) / "sweep.csv"
    metrics = _scalar_metrics()
    header = (["point_id", "seed"] + list(DESIGN_AXES) + list(WORKLOAD_AXES)
              + ["status", "error"] + [f"check_{c}" for c in CHECKS] + metrics
              + ["area_cells", "area_transistors", "ltp"])
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            m = r.get("metrics") or {}
            area = r.get("area") or {}
            w.writerow([r["point_id"], r["seed"]]
                       + [r["design"].get(k) for k in DESIGN_AXES]
                       + [r["workload"].get(k) for k in WORKLOAD_AXES]
                       + [r["status"], r.get("error") or ""]
                       + [r["checks"].get(c, {}).get("verdict", "") for c in CHECKS]
                       + [m.get(k) for k in metrics]
                       + [area.get("cells"), area.get("transistors"), area.get("ltp")])
    return path


def run_sweep(points: list[Point], results: Path, *, jobs: int = 2, sim: str = "verilator",
              resume: bool = True, ray_address: str | None = None, area: bool = False,
              on_result: Callable[[dict, int, int], None] | None = None) -> SweepSummary:
    """Run every point of ``points`` not done yet; returns a summary.

    Parameters
    ----------
    points : list of Point
    results : Path
        The results folder (``points/``, ``runs/``, ``sweep.csv``).
    jobs : int
        Points at once on this machine (processes).
    resume : bool
        Skip points whose result file exists (False: run them all again).
    area : bool
        Measure each design's area and logic depth with Yosys (cached per configuration).
    ray_address : str or None
        Run each point as a Ray task on the cluster at this address (``"local"`` starts a
        local instance); results come back to this process, which writes them.
    on_result : callable
        ``on_result(result, done, total)`` after each point (progress).
    """
    results = Path(results)
    (results / "points").mkdir(parents=True, exist_ok=True)
    todo = interleave_designs([p for p in points
                               if not (resume and result_path(results, p).exists())])
    reused = len(points) - len(todo)
    t0, c0 = time.monotonic(), cpu_now()
    done = reused
    failed = 0
    phase_cpu: dict[str, float] = {}

    def finished(res: dict) -> None:
        nonlocal done, failed
        done += 1
        failed += res["status"] != "ok"
        for ph in res.get("timeline", ()):
            phase_cpu[ph["phase"]] = phase_cpu.get(ph["phase"], 0.0) + ph["cpu"]
        path = results / "points" / f"{res['point_id']}.json"
        path.write_text(json.dumps(res, indent=2, default=str) + "\n")
        if on_result is not None:
            on_result(res, done, len(points))

    if todo and ray_address is not None:
        _run_ray(todo, results, sim, ray_address, finished, area)
    elif todo and jobs <= 1:
        for p in todo:
            finished(run_point(p, results, sim=sim, area=area))
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
            futs = [ex.submit(_run_one, p.as_dict(), str(results), sim, area) for p in todo]
            for f in cf.as_completed(futs):
                finished(f.result())
    rows = load_results(results, points)
    csv_path = write_csv(results, rows)
    return SweepSummary(points=len(points), ran=len(todo), reused=reused,
                        failed=sum(r["status"] != "ok" for r in rows),
                        seconds=time.monotonic() - t0, cpu_seconds=cpu_now() - c0,
                        phase_cpu=dict(sorted(phase_cpu.items(), key=lambda kv: -kv[1])),
                        csv=str(csv_path), results=rows)


def _run_ray(points: list[Point], results: Path, sim: str, address: str, finished,
             area: bool) -> None:
    """Each point a Ray task (one CPU); results collected as they finish."""
    import ray
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(_run_one)
        pending = [task.remote(p.as_dict(), str(Path(results).resolve()), sim, area)
                   for p in points]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            finished(ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()
