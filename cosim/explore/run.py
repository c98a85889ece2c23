"""One design point on the RTL's fast path: build (cached per configuration), run, measure,
cross-check, write ``<results>/points/<point_id>.json``.

The point runs :mod:`cosim.fastrun` on Verilator (``cosim.fastbuild.fast_run``: one build per
configuration under ``sim_build/fast-<hash>/``, ccache when present) with its stream saved;
the metrics come from the access logs (hits and misses by op, latencies), the MMU's
performance counters (walks, A/D updates, CAS retries, invalidations, squashed walks) and the
kernel's counters; the golden model's TLB replays the same stream (:mod:`.golden`).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from pyrmap.arch import CORE_COUNTERS
from pyrmap.pte import AccessType, FaultKind

from .golden import golden_tlb_check
from .point import KERNEL_SCENARIOS, WORKLOADS, Point
from .schema import SCHEMA_VERSION, validate_result
from .stream import load_stream
from .timeline import Timeline, cpu_now

__all__ = ["run_point", "lru_bound_check", "trace_cachegrind_check", "result_path", "stream_metrics", "git_commit", "tool_versions",
           "HIST_EDGES", "memory_words_log2"]

#: Walk-latency histogram bucket edges (cycles).
HIST_EDGES = (0, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024, 1 << 40)


def trace_words_log2(path) -> int:
    """The fast path's memory for a trace: its records, twice the pages it touches (page
    tables, reclaim's room) and 128 frames, rounded up to a power of two."""
    from .replay import TraceReplay
    replay = TraceReplay.load(path)
    touched = int(np.unique(replay.pages(len(replay))).size)
    need = replay.record_frames() + 2 * touched + 128
    frames = 128
    while frames < need:
        frames *= 2
    return (frames * 512).bit_length() - 1


def memory_words_log2(pages: int, cores: int) -> int:
    """The fast path's memory for a point: at least 128 frames and four times the frames
    the cores' windows span (page tables, the file's page cache and reclaim need room), a
    power of two; as ``log2`` of 64-bit words."""
    frames = 128
    while frames < 4 * pages * cores:
        frames *= 2
    return (frames * 512).bit_length() - 1


def kernel_env(kernel: str) -> dict:
    """The fast path's environment for a kernel scenario (a key of
    :data:`cosim.explore.point.KERNEL_SCENARIOS`)."""
    ops = KERNEL_SCENARIOS[kernel]
    if kernel == "none":
        return {"FAST_KERNEL": "none"}
    env = {"FAST_KERNEL": "reclaim"}          # kernel steps on; FAST_OPS says which
    if ops is not None:
        env["FAST_OPS"] = ",".join(ops)
    return env


def result_path(results: Path, point: Point) -> Path:
    return Path(results) / "points" / f"{point.point_id}.json"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tool_versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("rmap-cosim", "amaranth", "cocotb", "verilator", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def stream_metrics(stream) -> dict:
    """Hits and misses by op, hit rate and latencies from the access-log records."""
    op, fault, hit = stream["op"], stream["fault"], stream["hit"].astype(bool)
    ok = (fault == FaultKind.NONE) & (stream["squashed"] == 0)
    lat = stream["done"] - stream["start"]
    out = {}
    for name, kind in (("load", AccessType.LOAD), ("store", AccessType.STORE),
                       ("fetch", AccessType.FETCH)):
        sel = ok & (op == kind)
        out[f"hits_{name}"] = int((sel & hit).sum())
        out[f"misses_{name}"] = int((sel & ~hit).sum())
    n = int(ok.sum())
    misses = int((ok & ~hit).sum())
    out.update(accesses=n, hits=n - misses, misses=misses,
               hit_rate=(n - misses) / n if n else 0.0, miss_rate=misses / n if n else 0.0)
    mlat = lat[ok & ~hit]
    hlat = lat[ok & hit]
    if len(mlat):
        counts, _ = np.histogram(mlat, bins=np.array(HIST_EDGES))
        out.update(walk_latency_mean=float(mlat.mean()),
                   walk_latency_p50=float(np.percentile(mlat, 50)),
                   walk_latency_p99=float(np.percentile(mlat, 99)),
                   walk_latency_hist=[list(HIST_EDGES), counts.tolist()])
    else:
        out.update(walk_latency_mean=0.0, walk_latency_p50=0.0, walk_latency_p99=0.0,
                   walk_latency_hist=[list(HIST_EDGES), [0] * (len(HIST_EDGES) - 1)])
    out["hit_latency_mean"] = float(hlat.mean()) if len(hlat) else 0.0
    return out


def _metrics(stream, rep: dict, instructions: int = 0) -> dict:
    m = stream_metrics(stream)
    perf = {k: sum(p[k] for p in rep["perf"]) for k in CORE_COUNTERS}
    m["instructions"] = int(instructions)
    if m["instructions"]:
        m["mpki_denominator"] = "instructions"
        m["mpki"] = 1000 * m["misses"] / m["instructions"]
    else:
        m["mpki_denominator"] = "accesses"
        m["mpki"] = 1000 * m["misses"] / m["accesses"] if m["accesses"] else 0.0
    for k in ("walks", "walk_cycles", "a_sets", "d_sets", "cas_retries", "invals", "squashed"):
        m[k] = int(perf[k])
    m["mem_accesses_per_walk"] = perf["walk_mem"] / perf["walks"] if perf["walks"] else 0.0
    ks = rep["kernel_stats"]
    fl = rep["flushes"]
    m.update(inval_cycles=int(fl["flush_cycles_total"]), shootdowns=int(fl["flush_count"]),
             faults=int(rep["faults"]), pages_reclaimed=int(ks.get("pages_freed", 0)),
             pages_swapped_out=int(ks.get("pswpout", 0)), cycles=int(rep["cycles"]),
             accesses_per_s=float(rep["accesses_per_s"]))
    storm = rep["storm"]
    m.update(cow_faults=int(ks.get("fault_cow", 0)), forks=int(storm["forks"]),
             mprotects=int(storm["mprotects"]), munmaps=int(storm["munmaps"]),
             segv_restores=int(storm["segv_restores"]))
    return m


def lru_bound_check(stream, design: dict) -> dict:
    """The models' bound (:func:`cosim.explore.models.stack_distance_check`) on each core's
    page stream (its TLB lookups in order: every record but a faulting one, squashed
    attempts included, since a squashed attempt looked the TLB up and its restarted walk
    fills the entry its re-issue then hits) against that core's RTL misses on the same
    lookups; the point's verdict is the worst of its cores'."""
    from .models import stack_distance_check
    ok = stream["fault"] == FaultKind.NONE
    order = np.argsort(stream["start"], kind="stable")
    per_core = []
    for c in np.unique(stream["core"]).tolist():
        sel = order[(stream["core"][order] == c) & ok[order]]
        pages = (stream["va"][sel] >> np.uint64(12)).astype(np.int64)
        misses = int((stream["hit"][sel] == 0).sum())
        per_core.append(stack_distance_check(pages, misses, entries=design["tlb_entries"],
                                             ways=design["tlb_ways"]))
    if not per_core:
        return {"verdict": "not exercised", "detail": "no accesses"}
    for verdict in ("fail", "pass"):
        hit = [(i, c) for i, c in enumerate(per_core) if c["verdict"] == verdict]
        if hit:
            return {"verdict": verdict,
                    "detail": "; ".join(f"core {i}: {c['detail']}" for i, c in hit),
                    "cores": per_core}
    return {"verdict": "not exercised", "detail": per_core[0]["detail"], "cores": per_core}


def trace_cachegrind_check(trace_path, design: dict, metrics: dict) -> dict:
    """Cachegrind on the trace's program, with D1 as an LRU TLB of the point's geometry
    (entries, ways, 4 KiB lines), against the LRU model on the recorded trace
    (:func:`cosim.explore.models.cachegrind_check`): references and misses must be equal,
    else the stream the RTL replayed is not the program's and the point fails.  The RTL's
    own misses are judged exactly by the golden TLB on the same replayed stream; they differ
    from cachegrind's by design (a prefix replayed per core, word-granular, the point's
    replacement policy, the kernel's faults and shootdowns), so cachegrind's miss rate is
    reported beside the RTL's, not compared."""
    from .models import cachegrind_check
    from .trace import load as load_trace
    check = cachegrind_check(load_trace(trace_path), entries=design["tlb_entries"],
                             ways=design["tlb_ways"])
    if "cachegrind_refs" in check:
        check["cachegrind_miss_rate"] = (check["cachegrind_misses"] / check["cachegrind_refs"]
                                         if check["cachegrind_refs"] else 0.0)
        check["rtl_miss_rate"] = metrics.get("miss_rate", 0.0)
    return check


def run_point(point: Point, results: Path, *, sim: str = "verilator",
              area: bool = False) -> dict:
    """Run ``point``; write and return its result (:mod:`.schema`).  Never raises for a
    failing point: its result has ``status == "failed"`` and a one-line ``error``.  With
    ``area``, the design's Yosys area and logic depth (:func:`cosim.explore.area.area`,
    cached per configuration) go in ``area``."""
    from cosim.build import make_config
    from cosim.fastbuild import FastParams
    # Absolute: the simulator runs in the point's run directory and writes the stream by
    # this path.
    results = Path(results).resolve()
    pid = point.point_id
    t0 = time.monotonic()
    timeline = Timeline()
    with timeline.phase("prepare"):
        run_dir = results / "runs" / pid
        run_dir.mkdir(parents=True, exist_ok=True)
        config = make_config(**point.mmu)
        w = point.workload
        spec = WORKLOADS[w["workload"]]
        if w["trace"]:
            words_log2 = trace_words_log2(w["trace"])
        else:
            words_log2 = memory_words_log2(w["pages"], point.design["cores"])
        params = FastParams(words_log2=words_log2, latency=point.design["latency"], log_log2=12)
        result = {"schema": SCHEMA_VERSION, "point_id": pid, "git_commit": git_commit(),
                  "tools": tool_versions(), "design": dict(point.design, mmu=point.mmu),
                  "workload": dict(w, kind=("trace" if w["trace"] else "scenario"
                                            if spec["mode"] == "device" else "synthetic"),
                                   **spec),
                  "seed": point.seed,
                  "metrics": {}, "area": None, "checks": {}, "status": "failed", "error": None,
                  "build_key": None, "seconds": 0.0, "build_seconds": 0.0,
                  "command": point.command(str(results))}
    try:
        if spec["mode"] == "device":
            with timeline.phase("step_run"):
                _device_point(point, config, run_dir, sim, result)
            _conclude(result, config, area, timeline)
        else:
            _fast_point(point, config, params, run_dir, sim, result, area, timeline)
    except Exception as exc:  # noqa: BLE001 - a point reports its failure, the sweep goes on
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    result["wall_seconds"] = time.monotonic() - t0
    result["timeline"] = timeline.as_list()
    result["cpu_seconds"] = round(timeline.total_cpu(), 3)
    validate_result(result)
    path = result_path(results, point)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)
    return result


def _conclude(result: dict, config, area: bool, timeline: Timeline) -> None:
    """Area when asked; the point fails on its first failed cross-check."""
    if area:
        from .area import area as measure_area
        with timeline.phase("area"):
            result["area"] = measure_area(config)
    failed = [n for n, c in result["checks"].items() if c["verdict"] == "fail"]
    if failed:
        result["error"] = f"cross-check {failed[0]} disagrees: " \
                          f"{result['checks'][failed[0]]['detail']}"[:500]
    else:
        result["status"] = "ok"


def _device_point(point, config, run_dir: Path, sim: str, result: dict) -> None:
    from .devpoint import (device_counters_check, device_metrics, run_device_point,
                           scoreboard_check)
    rep, secs, build_secs, command = run_device_point(point, config, run_dir, sim)
    result["seconds"], result["build_seconds"] = secs, build_secs
    from cosim.build import config_hash
    result["build_key"] = config_hash(config)
    if rep is None:
        raise RuntimeError(f"the step-path run wrote no report (reproduce: {command})")
    result["metrics"] = device_metrics(rep)
    result["checks"]["scoreboard"] = scoreboard_check(rep)
    result["checks"]["device_counters"] = device_counters_check(rep)


def _fast_point(point, config, params, run_dir: Path, sim: str, result: dict,
                area: bool, timeline: Timeline) -> None:
    from cosim.fastbuild import fast_build, fast_run, fast_verilog
    w = point.workload
    spec = WORKLOADS[w["workload"]]
    stream_file = run_dir / "stream.npz"
    with timeline.phase("elaborate"):
        fast_verilog(config, params)
    with timeline.phase("compile"):
        b = fast_build(config, params, sim)
    result["build_key"] = b.key
    result["build_seconds"] = b.seconds
    t1, c1 = time.monotonic(), cpu_now()
    ok, rep, where = fast_run(config, params, sim, seed=point.seed, test_dir=run_dir, env={
        "FAST_ACCESSES": w["accesses"], "FAST_PAGES": w["pages"],
        "FAST_MODE": "uniform" if w["trace"] else spec["mode"], "FAST_TRACE": w["trace"] or "",
        **kernel_env(spec["kernel"]), "FAST_PERIOD": w["period"],
        "FAST_STORE": w["store_permille"], "FAST_STREAM": stream_file})
    result["seconds"] = time.monotonic() - t1
    _simulator_phases(timeline, result["seconds"], cpu_now() - c1, rep)
    if rep is None or "error" in rep or not ok or not stream_file.exists():
        err = (rep or {}).get("error") or (rep or {}).get("violations") or \
            f"the run failed (see {where}/sim.log)"
        result["error"] = str(err).splitlines()[0][:500]
        return
    with timeline.phase("stream_load"):
        stream = load_stream(stream_file)
    with timeline.phase("metrics"):
        instructions = 0
        if w["trace"]:
            from .replay import TraceReplay
            per_core = -(-w["accesses"] // point.design["cores"])
            instructions = (TraceReplay.load(w["trace"]).instructions(per_core)
                            * point.design["cores"])
        result["metrics"] = _metrics(stream, rep, instructions)
    with timeline.phase("golden_tlb"):
        result["checks"]["golden_tlb"] = golden_tlb_check(stream, point.mmu)
    with timeline.phase("stack_distance_lru"):
        result["checks"]["stack_distance_lru"] = lru_bound_check(stream, point.mmu)
    if w["trace"]:
        with timeline.phase("cachegrind"):
            result["checks"]["cachegrind"] = trace_cachegrind_check(
                w["trace"], point.mmu, result["metrics"])
    _conclude(result, config, area, timeline)
    if result["status"] == "ok":
        _remove_scratch(run_dir, point.design["cores"])


def _remove_scratch(run_dir: Path, cores: int) -> None:
    """The simulator's scratch files of a passed point: its rings' record files and its
    memory's load file (~85 MB at 10^6 accesses).  The stream, the report and the log stay;
    a failed point keeps everything."""
    from simhw.abi import ring_file
    for ring in [f"log{i}" for i in range(cores)] + ["wlog", "memload"]:
        (run_dir / ring_file(ring)).unlink(missing_ok=True)


def _simulator_phases(timeline: Timeline, wall: float, cpu: float, rep: dict | None) -> None:
    """The simulator's process split into its start (and exit), its set-up and its loop,
    from the report's own clocks; the whole when it wrote no report."""
    if not rep or "setup_seconds" not in rep:
        timeline.add("sim_start", wall, cpu)
        return
    inner_wall = rep["setup_seconds"] + rep["seconds"] + rep["save_seconds"]
    inner_cpu = rep["setup_cpu_seconds"] + rep["cpu_seconds"] + rep["save_cpu_seconds"]
    timeline.add("sim_start", wall - inner_wall, cpu - inner_cpu)
    timeline.add("sim_setup", rep["setup_seconds"], rep["setup_cpu_seconds"])
    timeline.add("sim_loop", rep["seconds"], rep["cpu_seconds"])
    timeline.add("stream_save", rep["save_seconds"], rep["save_cpu_seconds"])
