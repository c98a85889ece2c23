"""The fast path's figures for ``make bench`` (:mod:`cosim.bench` runs each in its own process).

``fast-<sim>``
    the fast path with the checkers off: the traffic engines' uniform stream over mapped pages,
    no kernel work; records are drained and applied to memory, nothing is judged;
``fast-checked-<sim>``
    the same run with every checker on (scoreboard, stale translation, shadow data);
``reclaim-fast-<sim>``
    the reclaim scenario on the fast path with every checker on: kswapd, writeback and
    migration next to the engines, sized as a real machine runs (faults under 1 % of the
    accesses);
``engine-imap``
    the engine's cost per i_mmap operation (insert + stab + remove) at 1 k, 4 k and 16 k VMAs.

Every figure reports ``cycles``, ``accesses`` and ``loop_seconds`` (the run after setup), so
:func:`cosim.bench.summarize` compares it with the harness on the same design, and
``cpu_seconds`` (the simulator process's CPU time over the same run) with
``accesses_per_cpu_s``, which a loaded machine does not change.
"""

from __future__ import annotations

import random
import time

from .fastbuild import FastParams, fast_run

__all__ = ["FAST_FIGURES", "fast_figure", "imap_figure", "BENCH_FAST"]

#: The fast path's memory and rings in the bench: 4 MiB (1024 frames), 4096-record logs.
BENCH_FAST = FastParams(words_log2=19, latency=1, log_log2=12)

FAST_FIGURES = ("fast", "fast-checked", "reclaim-fast")


def fast_figure(kind: str, config, sim: str, *, seed: int, accesses: int) -> dict:
    """One fast-path figure (``kind`` in :data:`FAST_FIGURES`)."""
    env = {"FAST_ACCESSES": accesses, "FAST_MODE": "uniform", "FAST_PREFAULT": 1}
    if kind == "reclaim-fast":
        env.update(FAST_KERNEL="reclaim", FAST_PAGES=256, FAST_PERIOD=50_000, FAST_CHECKS=1)
        scenario = "reclaim on the fast path: 2 x 256-page windows, kernel step / 50k cycles"
    else:
        env.update(FAST_KERNEL="none", FAST_PAGES=32,
                   FAST_CHECKS=1 if kind == "fast-checked" else 0)
        scenario = "uniform stream over 32 pages per core, no kernel work"
    ok, rep, where = fast_run(config, BENCH_FAST, sim, seed=seed, env=env)
    if not ok or rep is None or "error" in rep:
        raise RuntimeError(f"{kind} on {sim} failed ({where}): "
                           f"{(rep or {}).get('error') or (rep or {}).get('violations')}")
    return {"sim": sim, "cycles": rep["cycles"], "accesses": rep["accesses"],
            "loop_seconds": rep["seconds"], "cpu_seconds": rep["cpu_seconds"],
            "accesses_per_cpu_s": rep["accesses_per_cpu_s"], "faults": rep["faults"],
            "fault_rate": rep["fault_rate"], "kernel_figures": rep["kernel_figures"],
            "log_checks": rep["log_checks"], "fast_peak_rss_mb": rep["peak_rss_mb"],
            "scenario": scenario, "run_dir": str(where)}


def imap_figure(sizes=(1000, 4000, 16000), rounds: int = 2000, seed: int = 1) -> dict:
    """Microseconds per (insert + stab + remove) of one VMA in an i_mmap of each size."""
    from pyrmap.interval import IntervalIndex
    out = {}
    for n in sizes:
        rng = random.Random(seed)
        idx = IntervalIndex()
        for k in range(n):
            first = rng.randrange(1 << 20)
            idx.insert(first, first + rng.randrange(256), (k,))
        t0 = time.perf_counter()
        for r in range(rounds):
            item = (n + r,)
            first = rng.randrange(1 << 20)
            idx.insert(first, first + 16, item)
            idx.stab(first + 3)
            idx.remove(item)
        out[str(n)] = round((time.perf_counter() - t0) / rounds * 1e6, 2)
    return {"us_per_insert_stab_remove": out, "loop_seconds": 0.0, "cycles": 0, "accesses": 0}
