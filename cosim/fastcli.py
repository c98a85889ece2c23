"""``python -m cosim run reclaim --path fast`` and ``python -m cosim demo`` (fast by default).

The fast path (:mod:`cosim.fastrun`) runs the reclaim workload with the traffic engines in
gateware: ``--phases`` x ``--accesses`` x ``--cores`` checked CPU accesses in all, while
kswapd, writeback and migration run every ``FAST_PERIOD`` cycles.  Its physical memory is
``--nframes`` rounded up to a power of two (default 1024 frames, 4 MiB) and each core works
on a window of a quarter of it split over the cores (faults stay under 1 % of accesses).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

__all__ = ["run_fast", "fast_sizes", "FAST_DEMO"]

#: The demo on the fast path: 8 phases x 62,500 accesses x 2 cores = 10**6 checked accesses.
FAST_DEMO = {"accesses": 62_500, "nframes": 1024}


def fast_sizes(nframes: int, ncores: int) -> tuple[int, int]:
    """``(words_log2, pages per core window)`` for a memory of at least ``nframes`` frames."""
    frames = 16
    while frames < nframes:
        frames *= 2
    words_log2 = (frames * 512).bit_length() - 1
    pages = 2
    while pages * 2 * max(ncores, 1) * 4 <= frames:
        pages *= 2
    return words_log2, pages


def run_fast(a, out: TextIO) -> int:
    """Run the fast path for parsed CLI arguments (:class:`cosim.cli.RunArgs` with
    ``path == "fast"``); print progress and the verdicts; 0 when every checker passed."""
    from cosim.build import make_config

    from .fastbuild import FastParams, fast_run
    config = make_config(**a.params)
    ncores = a.params["ncores"]
    nframes = int(a.env.get("COSIM_NFRAMES") or FAST_DEMO["nframes"])
    words_log2, pages = fast_sizes(nframes, ncores)
    total = int(a.env["COSIM_PHASES"]) * int(a.env["COSIM_ACCESSES"]) * ncores
    params = FastParams(words_log2=words_log2, latency=1, log_log2=12)
    print(f"rmap-cosim: reclaim on the fast path ({a.sim}), seed {a.seed}, {ncores} cores, "
          f"{(8 << words_log2) >> 12} frames, {pages}-page window per core, {total:,} checked "
          f"accesses", file=out, flush=True)
    from .cli import progress_file
    t0 = time.monotonic()
    with progress_file(out, a.quiet, prefix="cosim-fast-") as progress:
        ok, rep, where = fast_run(config, params, a.sim, seed=a.seed, env={
            "FAST_ACCESSES": total, "FAST_PAGES": pages, "FAST_PERIOD": 50_000,
            "FAST_PREFAULT": 1,
            "FAST_QUIRKS": ",".join(a.kernel_quirks), "COSIM_PROGRESS": progress})
    wall = time.monotonic() - t0
    if rep is None or "error" in rep:
        err = (rep or {}).get("error") or f"no report (see {where}/sim.log)"
        print(f"\nFAILED: {err}\nreproduce: {a.command}", file=out)
        return 1
    print(f"\n{rep['accesses']:,} accesses checked in {rep['seconds']:.1f} s "
          f"({rep['accesses_per_s']:,.0f}/s, {rep['cycles_per_s']:,.0f} cycles/s; process "
          f"{wall:.1f} s), faults {rep['faults']} ({100 * rep['fault_rate']:.3f} %), "
          f"peak RSS {rep['peak_rss_mb']:.0f} MiB", file=out)
    k = rep["kernel_figures"]
    print(f"kernel: {rep['kernel_steps']} steps, swapped out {k['pswpout']}, written "
          f"{k['pages_written']}, migrated {k['migrate_success']}", file=out)
    c = rep["log_checks"]
    print(f"log checks: scoreboard {c.get('scoreboard_checks', 0):,}, stale translation "
          f"{c.get('stale_checks', 0):,}, not checked {c.get('not_checked', 0):,}", file=out)
    for name, verdict in rep["verdicts"].items():
        print(f"  {name:10s} {verdict}", file=out)
    if a.json:
        Path(a.json).write_text(json.dumps(dict(rep, command=a.command), indent=2,
                                           default=str) + "\n")
    if not ok or rep["violations"]:
        for v in rep["violations"][:5]:
            print(f"VIOLATION: {v}", file=out)
        print(f"\nFAILED (seed {a.seed}; reproduce: {a.command})", file=out)
        return 1
    print("\nPASS", file=out)
    return 0
