"""The exploration figures of ``make bench``: one sweep point measured whole, against the
Python-free harness on the same design and stream.

``explore-<sim>`` is :func:`cosim.explore.run.run_point` on the bench's MMU configuration
(the same ``Top`` the Python-free harness drives), the traffic engines' uniform stream over
the bench's pages (``npages``, 32) a core with 30 % stores, no kernel work, at the fast
figures' size (``--fast-accesses``), so it compares with ``fast-checked`` access for access.

``explore-trace-verilator`` is the point a sweep runs on a recorded trace
(:data:`cosim.bench.BENCH_TRACE`, ``make traces``' sort; ``--trace``), on the same design, at the
sweep's size (``--trace-accesses``, 10^6: ``make explore-full``'s), first touches faulting
as in the sweep; its ceiling ``harness-fast-trace`` (:func:`trace_harness_figure`) is the
Python-free harness replaying the same trace prefix on the same FastTop (the same memory
size), from a fast-path run's snapshot with each core's replayed pages prefaulted (the
harness serves no fault), checked byte for byte against that run.

A point's cost is everything a sweep pays for it once its build is cached: the simulator's
start and set-up, the run with every checker on, the stream saved, the metrics, the golden
TLB's replay, the stack-distance/OPT bound and (trace points) cachegrind's check.
``accesses / loop_seconds`` and ``accesses / cpu_seconds`` are the exploration throughput
per point that :func:`cosim.bench.summarize` puts beside the harness's; ``timeline`` is the
point's phases (:mod:`cosim.explore.timeline`).
"""

from __future__ import annotations

import shutil
import time

__all__ = ["explore_figure", "point_for_config", "trace_harness_figure",
           "trace_params"]


def point_for_config(config, *, accesses: int, seed: int, pages: int = 32,
                     trace: str | None = None):
    """The sweep point of ``config`` (an :class:`hdl.config.MmuConfig`) on the uniform
    stream, or on ``trace`` (a ``.npz`` of ``rmap-cosim trace``)."""
    from .point import Point
    design = {"entries": config.tlb_entries, "ways": config.tlb_ways,
              "replacement": config.replacement, "superpage_entries": config.superpage_entries,
              "asid_bits": config.asid_bits, "svadu": config.svadu, "cores": config.ncores,
              "dev_entries": config.dev_entries}
    if trace is not None:
        workload = {"workload": "trace", "trace": str(trace), "accesses": accesses}
    else:
        workload = {"workload": "uniform", "pages": pages, "accesses": accesses,
                    "store_permille": 300}
    return Point(design, workload, seed)


def trace_params(trace, latency: int = 1):
    """The fast path's :class:`cosim.fastbuild.FastParams` of a point on ``trace``."""
    from cosim.fastbuild import FastParams

    from .run import trace_words_log2
    return FastParams(words_log2=trace_words_log2(trace), latency=latency, log_log2=12)


def explore_figure(config, sim: str, *, seed: int, accesses: int, pages: int = 32,
                   trace: str | None = None) -> dict:
    """Run the point of ``config`` (its build first, untimed) and time the point whole."""
    from cosim.build import SIM_BUILD, make_config
    from cosim.fastbuild import FastParams, fast_build

    from .run import memory_words_log2, run_point
    point = point_for_config(config, accesses=accesses, seed=seed, pages=pages, trace=trace)
    results = SIM_BUILD / ("bench-explore-trace" if trace else "bench-explore")
    shutil.rmtree(results, ignore_errors=True)
    # The build the point will use, made (or found) before the clock starts.
    if trace:
        params = trace_params(point.workload["trace"], point.design["latency"])
    else:
        params = FastParams(words_log2=memory_words_log2(point.workload["pages"],
                                                         point.design["cores"]),
                            latency=point.design["latency"], log_log2=12)
    b = fast_build(make_config(**point.mmu), params, sim)
    t0 = time.monotonic()
    res = run_point(point, results, sim=sim)
    loop = time.monotonic() - t0
    if res["status"] != "ok":
        raise RuntimeError(f"the explore point failed: {res['error']} (reproduce: "
                           f"{res['command']})")
    m = res["metrics"]
    if trace:
        scenario = (f"sweep point {point.label()}: the first {accesses:,} accesses of "
                    f"{trace} split over the cores, first touches faulting, checked and "
                    f"cross-checked (golden TLB, stack-distance bound, cachegrind)")
    else:
        scenario = (f"sweep point {point.label()}: uniform stream over "
                    f"{point.workload['pages']} pages per core, 30 % stores, checked and "
                    f"cross-checked (golden TLB, stack-distance bound)")
    return {"sim": sim, "cycles": m["cycles"], "accesses": m["accesses"],
            "loop_seconds": loop, "run_seconds": res["seconds"],
            "checks": {k: c["verdict"] for k, c in res["checks"].items()},
            "misses": m["misses"], "faults": m["faults"], "build_seconds": round(b.seconds, 2),
            "cpu_seconds": res["cpu_seconds"],
            "accesses_per_cpu_s": m["accesses"] / res["cpu_seconds"],
            "timeline": res["timeline"], "scenario": scenario, "point": point.as_dict()}


def trace_harness_figure(config, *, seed: int, accesses: int, trace: str) -> dict:
    """The Python-free harness replaying the first ``accesses`` of ``trace`` on the trace
    point's FastTop (:func:`cosim.fastharness.harness_figure`: a fast-path run with each
    core's replayed pages prefaulted writes the snapshot, the harness runs from it, and the
    two runs' rings must be byte-identical)."""
    from cosim.fastharness import harness_figure
    env = {"FAST_ACCESSES": accesses, "FAST_TRACE": str(trace), "FAST_PREFAULT": 1,
           "FAST_KERNEL": "none", "FAST_CHECKS": 0}
    out = harness_figure(config, trace_params(trace), seed=seed, env=env)
    return dict(out, scenario=f"the first {accesses:,} accesses of {trace} split over the "
                              f"cores (the explore-trace-verilator point's stream), every "
                              f"replayed page resident")
