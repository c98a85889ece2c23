"""The exploration figure of ``make bench`` (``explore-<sim>``): one sweep point, measured
whole, on the bench's design and a stream like the harness's.

The point is :func:`cosim.explore.run.run_point` on the bench's MMU configuration (the same
``Top`` the Python-free harness drives), the traffic engines' uniform stream over the bench's pages
(``npages``, 32) a core with 30 % stores (the harness: xorshift accesses over its mapped pages, 30 % stores), no
kernel work; its cost is everything a sweep pays for a point once its build is cached: the
run with every checker on, the stream saved, the metrics, the golden TLB's replay and the
stack-distance/OPT bound.  ``accesses / loop_seconds`` is the exploration throughput per
point that :func:`cosim.bench.summarize` puts beside the harness's.  The bench runs the point
at the fast figures' size (``--fast-accesses``), so it compares with ``fast-checked``
access for access; ``timeline`` is the point's phases (:mod:`cosim.explore.timeline`).
"""

from __future__ import annotations

import shutil
import time

__all__ = ["explore_figure", "point_for_config"]


def point_for_config(config, *, accesses: int, seed: int, pages: int = 32):
    """The sweep point of ``config`` (an :class:`hdl.config.MmuConfig`) on the uniform stream."""
    from .point import Point
    design = {"entries": config.tlb_entries, "ways": config.tlb_ways,
              "replacement": config.replacement, "superpage_entries": config.superpage_entries,
              "asid_bits": config.asid_bits, "svadu": config.svadu, "cores": config.ncores,
              "dev_entries": config.dev_entries}
    workload = {"workload": "uniform", "pages": pages, "accesses": accesses,
                "store_permille": 300}
    return Point(design, workload, seed)


def explore_figure(config, sim: str, *, seed: int, accesses: int, pages: int = 32) -> dict:
    """Run the point of ``config`` (its build first, untimed) and time the point whole."""
    from cosim.build import SIM_BUILD, make_config
    from cosim.fastbuild import FastParams, fast_build

    from .run import memory_words_log2, run_point
    point = point_for_config(config, accesses=accesses, seed=seed, pages=pages)
    results = SIM_BUILD / "bench-explore"
    shutil.rmtree(results, ignore_errors=True)
    # The build the point will use, made (or found) before the clock starts.
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
    return {"sim": sim, "cycles": m["cycles"], "accesses": m["accesses"],
            "loop_seconds": loop, "run_seconds": res["seconds"],
            "checks": {k: c["verdict"] for k, c in res["checks"].items()},
            "misses": m["misses"], "build_seconds": round(b.seconds, 2),
            "cpu_seconds": res["cpu_seconds"], "timeline": res["timeline"],
            "scenario": f"sweep point {point.label()}: uniform stream over "
                        f"{point.workload['pages']} pages per core, 30 % stores, checked and "
                        f"cross-checked (golden TLB, stack-distance bound)",
            "point": point.as_dict()}
