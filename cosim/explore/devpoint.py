"""A design point with device traffic (workload ``device-reclaim``): the device TLB axis.

The fast path's traffic engines drive CPU ports only, so a point that measures the
secondary MMU (``hdl.device.DeviceMmu``: a TLB without a walker, filled by the host driver
after a fault, kept coherent by mmu notifiers) runs the registered ``reclaim`` scenario on
the step path (:func:`cosim.build.run` of :data:`cosim.scenarios.TB_MODULE`): every core's
workload through its TLB, kswapd, writeback and migration, and a device on the parent's
memory through its port, with every checker on.  ``dev_entries`` changes the ``DeviceMmu``
that is built.

Metrics come from the run's report (the cores' and the device's hardware counters, the
kernel's flushes and statistics); the checks are

* ``scoreboard``: the run's checkers, the golden-walk scoreboard among them (every RTL
  translation replayed from the PTE values the walker read), all passing;
* ``device_counters``: the DeviceMmu's counters against the host driver's own counts of what
  it sent and what the port answered (lookups = accesses issued, misses = misses answered,
  fills, invalidations, young-bit clears), exactly.
"""

from __future__ import annotations

from pathlib import Path

from .schema import METRIC_NAMES

__all__ = ["run_device_point", "device_metrics", "device_counters_check", "PHASES"]

#: The scenario's phases (the ``accesses`` axis is split over them and the cores).
PHASES = 3
#: The DeviceMmu counter -> the host driver's count of the same events.
_PAIRS = (("lookups", "accesses"), ("fills", "fills"), ("invals", "invals"),
          ("young_clears", "young_set"))


def device_counters_check(rep: dict) -> dict:
    """The DeviceMmu's counters against the host driver's own counts (``rep``: the
    scenario's report)."""
    dev, figs = rep.get("device"), rep.get("device_figures")
    if not dev or not figs:
        return {"verdict": "not exercised", "detail": "the run drove no device"}
    perf, drv = dev["perf"], dev["driver"]
    pairs = [(f"{hw} {perf[hw]} vs driver {sw} {drv[sw]}", perf[hw] == drv[sw])
             for hw, sw in _PAIRS]
    pairs.append((f"misses {perf['misses']} vs requester misses {figs['misses']}",
                  perf["misses"] == figs["misses"]))
    pairs.append((f"hits + misses {perf['hits'] + perf['misses']} vs lookups "
                  f"{perf['lookups']}", perf["hits"] + perf["misses"] == perf["lookups"]))
    if not perf["lookups"]:
        return {"verdict": "not exercised", "detail": "the device made no access"}
    bad = [text for text, ok in pairs if not ok]
    figures = {f"rtl_{k}": v for k, v in perf.items()}
    if bad:
        return dict(figures, verdict="fail", detail="; ".join(bad))
    return dict(figures, verdict="pass",
                detail=f"{perf['lookups']} lookups, {perf['misses']} misses, {perf['fills']} "
                       f"fills, {perf['invals']} invalidations as the driver counted")


def scoreboard_check(rep: dict) -> dict:
    """Every checker of the run passed or was not exercised, the scoreboard exercised."""
    checkers = {c["name"]: c["verdict"] for c in rep.get("checkers", [])}
    sb = rep.get("scoreboard") or {}
    failed = [n for n, v in checkers.items() if v not in ("PASS", "not exercised")]
    if failed or not rep.get("passed"):
        return {"verdict": "fail", "detail": f"checker(s) {', '.join(failed) or '?'} failed: "
                                             f"{rep.get('violation')}"[:400],
                "checkers": checkers}
    if not sb.get("translations"):
        return {"verdict": "not exercised", "detail": "the scoreboard replayed nothing",
                "checkers": checkers}
    return {"verdict": "pass", "checkers": checkers,
            "translations": sb["translations"],
            "detail": f"{sb['translations']} translations replayed by the scoreboard; every "
                      f"checker passed"}


def device_metrics(rep: dict) -> dict:
    """The point's metrics from the scenario's report."""
    tlb, arch, ks = rep["tlb"], rep["arch"], rep.get("kernel") or {}
    n = int(tlb["lookups"])
    misses = int(tlb["misses"])
    m = {"accesses": n, "hits": n - misses, "misses": misses,
         "hit_rate": (n - misses) / n if n else 0.0, "miss_rate": misses / n if n else 0.0,
         "instructions": 0, "mpki_denominator": "accesses",
         "mpki": 1000 * misses / n if n else 0.0}
    for k in ("walks", "walk_cycles", "a_sets", "d_sets", "cas_retries", "invals", "squashed"):
        m[k] = int(tlb[k])
    walk_mem = sum(c["perf"].get("walk_mem", 0) for c in rep["cores"])
    m["mem_accesses_per_walk"] = walk_mem / m["walks"] if m["walks"] else 0.0
    m.update(inval_cycles=int(arch["flush_cycles_total"]), shootdowns=int(arch["flush_count"]),
             faults=sum(int(c["driver"].get("page_faults", 0)) for c in rep["cores"]),
             pages_reclaimed=int(ks.get("vmscan_freed", 0)),
             pages_swapped_out=int(ks.get("pswpout", 0)), cycles=int(rep["cycles"]),
             accesses_per_s=n / rep["wall_seconds"] if rep.get("wall_seconds") else 0.0)
    dev, figs = rep.get("device"), rep.get("device_figures")
    if dev and figs:
        perf = dev["perf"]
        m.update(dev_accesses=int(perf["lookups"]), dev_hits=int(perf["hits"]),
                 dev_misses=int(perf["misses"]),
                 dev_hit_rate=perf["hits"] / perf["lookups"] if perf["lookups"] else 0.0,
                 dev_fills=int(perf["fills"]), dev_faults=int(figs["faults"]),
                 dev_invals=int(perf["invals"]), dev_young_clears=int(perf["young_clears"]))
    return {k: v for k, v in m.items() if k in METRIC_NAMES}


def run_device_point(point, config, run_dir: Path, sim: str) -> tuple:
    """Run ``point`` (workload mode ``device``) on ``config``; returns ``(report,
    run_seconds, build_seconds, command)``; the report is None when the run wrote none."""
    import time
    from cosim import build as cb
    from cosim.scenarios import TB_MODULE
    b = cb.build(config, sim)
    per = max(8, point.workload["accesses"] // (PHASES * point.design["cores"]))
    env = {"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": PHASES, "COSIM_ACCESSES": per,
           "COCOTB_TEST_FILTER": "test_scenario"}
    t0 = time.monotonic()
    r = cb.run(config, sim, TB_MODULE, seed=point.seed, testcase="test_scenario",
               test_dir=run_dir / "step", env=env)
    return r.report, time.monotonic() - t0, b.seconds, r.command
