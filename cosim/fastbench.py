"""The fast path's figures for ``make bench`` (:mod:`cosim.bench` runs each in its own process).

``fast-<sim>``
    the fast path with the checkers off: the traffic engines' uniform stream over mapped pages,
    no kernel work; records are drained and applied to memory, nothing is judged;
``fast-checked-<sim>``
    the same run with every checker on (scoreboard, stale translation, shadow data);
``reclaim-fast-<sim>``
    the reclaim scenario on the fast path with every checker on: kswapd, writeback and
    migration next to the engines, sized as a real machine runs (:func:`reclaim_env`: a
    skewed working set mostly resident, faults under 1 % of the accesses); the figure
    counts the kernel's work (kernel steps, pages swapped out and in, written back,
    migrated, freed) and fails when any of it did not run or the faults reach 1 %;
``engine-imap``
    the engine's cost per i_mmap operation (insert + stab + remove) at 1 k, 4 k and 16 k VMAs.

``harness-fast`` and ``harness-fast-reclaim`` (:func:`harness_fast_figure`)
    the Python-free harness on the fast path's design, running the ``fast`` figure's stream,
    and the reclaim figure's (the same engines, seeds and window, every page resident, no
    kernel work: the harness runs no kernel, so this is the reclaim figure's ceiling).

Every figure reports ``cycles``, ``accesses`` and ``loop_seconds`` (the run after setup), so
:func:`cosim.bench.summarize` compares it with the harness on the same design, and
``cpu_seconds`` (the simulator process's CPU time over the same run) with
``accesses_per_cpu_s``, which a loaded machine does not change.
"""

from __future__ import annotations

import random
import time

from .fastbuild import FastParams, fast_run

__all__ = ["FAST_FIGURES", "fast_figure", "imap_figure", "BENCH_FAST", "reclaim_env",
           "reclaim_sized", "figure_env", "harness_fast_figure"]

#: The fast path's memory and rings in the bench: 4 MiB (1024 frames), 4096-record logs.
BENCH_FAST = FastParams(words_log2=19, latency=1, log_log2=12)

FAST_FIGURES = ("fast", "fast-checked", "reclaim-fast")

#: The reclaim figure's sizing (bench/NOTES.md says why): each core's window spans this many
#: pages (1 MiB; the two windows hold half of :data:`BENCH_FAST`'s 1024 frames) ...
RECLAIM_PAGES = 256
#: ... with a Zipf stream over it (hot pages at its start, a cold tail kswapd takes) ...
RECLAIM_MODE = "zipf"
#: ... and a kernel step (kswapd freeing 8 pages, writeback and dontneed of 8 file pages,
#: migration of one page) every this many cycles; half of it below :data:`RECLAIM_LONG`
#: accesses, so a short run (Icarus) still has kernel steps.
RECLAIM_PERIOD = 100_000
RECLAIM_LONG = 100_000
#: The fault rate the figure must stay under.
RECLAIM_MAX_FAULT_RATE = 0.01
#: The kernel's work the figure counts (``kernel_figures`` of the run), each of which must
#: have run.
RECLAIM_WORK = ("pswpout", "pages_written", "migrate_success", "pages_freed")


def reclaim_env(accesses: int) -> dict:
    """The environment of the reclaim figure's run of ``accesses`` checked accesses."""
    period = RECLAIM_PERIOD if accesses >= RECLAIM_LONG else RECLAIM_PERIOD // 2
    return {"FAST_KERNEL": "reclaim", "FAST_MODE": RECLAIM_MODE, "FAST_PAGES": RECLAIM_PAGES,
            "FAST_PERIOD": period, "FAST_CHECKS": 1}


def reclaim_sized(rep: dict) -> list[str]:
    """What a reclaim run's report lacks to stand for a machine that reclaims as a real one
    does: faults under :data:`RECLAIM_MAX_FAULT_RATE` and every kind of :data:`RECLAIM_WORK`
    done.  Empty: nothing."""
    bad = []
    if rep["fault_rate"] >= RECLAIM_MAX_FAULT_RATE:
        bad.append(f"faults on {rep['fault_rate']:.2%} of the accesses, not under "
                   f"{RECLAIM_MAX_FAULT_RATE:.0%}")
    if not rep["kernel_steps"]:
        bad.append("no kernel step ran")
    bad += [f"{key} is 0" for key in RECLAIM_WORK if not rep["kernel_figures"][key]]
    return bad


def figure_env(kind: str, accesses: int) -> tuple[dict, str]:
    """The fast-path run of figure ``kind`` (:data:`FAST_FIGURES`): its environment and a
    description of its scenario."""
    env = {"FAST_ACCESSES": accesses, "FAST_MODE": "uniform", "FAST_PREFAULT": 1}
    if kind == "reclaim-fast":
        env.update(reclaim_env(accesses))
        return env, (f"reclaim on the fast path: 2 x {RECLAIM_PAGES}-page windows, "
                     f"{RECLAIM_MODE} stream, a kernel step every {env['FAST_PERIOD']:,} cycles")
    env.update(FAST_KERNEL="none", FAST_PAGES=32, FAST_CHECKS=1 if kind == "fast-checked" else 0)
    return env, "uniform stream over 32 pages per core, no kernel work"


def harness_fast_figure(config, *, seed: int, accesses: int, kind: str = "fast") -> dict:
    """The Python-free harness on the fast path's design and the stream of figure ``kind``
    on Verilator (:func:`cosim.fastharness.harness_figure`).  For ``fast`` it runs the same
    accesses in the same cycles as ``fast-verilator``.  For ``reclaim-fast`` it runs that
    figure's engines, seeds and windows with every page resident and no kernel work (no
    faults, no kernel steps): the same access stream, without what only the co-simulation
    can run."""
    from .fastharness import harness_figure
    env, scenario = figure_env(kind, accesses)
    if kind == "reclaim-fast":
        env.update(FAST_KERNEL="none", FAST_CHECKS=0)
        scenario += "; every page resident, no kernel work"
    out = harness_figure(config, BENCH_FAST, seed=seed, env=env)
    return dict(out, scenario=scenario + f" (the {kind}-verilator run's stream)")


def fast_figure(kind: str, config, sim: str, *, seed: int, accesses: int) -> dict:
    """One fast-path figure (``kind`` in :data:`FAST_FIGURES`)."""
    env, scenario = figure_env(kind, accesses)
    ok, rep, where = fast_run(config, BENCH_FAST, sim, seed=seed, env=env)
    if not ok or rep is None or "error" in rep:
        raise RuntimeError(f"{kind} on {sim} failed ({where}): "
                           f"{(rep or {}).get('error') or (rep or {}).get('violations')}")
    out = {"sim": sim, "cycles": rep["cycles"], "accesses": rep["accesses"],
           "loop_seconds": rep["seconds"], "cpu_seconds": rep["cpu_seconds"],
           "accesses_per_cpu_s": rep["accesses_per_cpu_s"], "faults": rep["faults"],
           "fault_rate": rep["fault_rate"], "kernel_figures": rep["kernel_figures"],
           "log_checks": rep["log_checks"], "fast_peak_rss_mb": rep["peak_rss_mb"],
           "scenario": scenario, "run_dir": str(where)}
    if kind == "reclaim-fast":
        bad = reclaim_sized(rep)
        if bad:
            raise RuntimeError(f"{kind} on {sim} is not sized as a real machine runs "
                               f"({'; '.join(bad)}): {scenario}, {where}")
        out.update(kernel_steps=rep["kernel_steps"], period_cycles=env["FAST_PERIOD"],
                   pages_per_core=RECLAIM_PAGES, mode=RECLAIM_MODE, sw_ops=rep["sw_ops"],
                   pte_ops=rep["pte_ops"], drains=rep["drains"],
                   flushes=rep["flushes"]["flush_count"],
                   kernel_work={key: rep["kernel_stats"].get(key, 0) for key in (
                       "vmscan_aged", "vmscan_scanned", "vmscan_freed", "madvise_dontneed",
                       "msync")})
    return out


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
