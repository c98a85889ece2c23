"""The result of one design point, as written to ``<results>/points/<point_id>.json``.

A result is a JSON object::

    {
      "schema": 1,                   # SCHEMA_VERSION
      "point_id": "<12 hex digits>", # hash of design + workload + seed
      "git_commit": "...",           # the repository's HEAD ("unknown" outside git)
      "tools": {"python": ..., "verilator": ..., "amaranth": ..., "cocotb": ..., ...},
      "design": {...},               # MmuConfig parameters + "latency" (memory, cycles)
      "workload": {"kind": "synthetic" | "trace" | "scenario", ...},
      "seed": 1,
      "metrics": {...},              # names in METRICS (absent when the point failed)
      "area": {...} | null,          # Yosys: cells by type, transistors, ltp (when measured)
      "checks": {"golden_tlb": {"verdict": "pass" | "fail" | "not exercised", "detail": ...},
                 ...},               # one entry per cross-check of CHECKS
      "status": "ok" | "failed",
      "error": null | "one line",
      "seconds": 12.3                # wall time of the point (build excluded)
    }

A point whose cross-check disagrees has ``status == "failed"``.  ``METRICS`` names every
metric once, with its unit and meaning (ChampSim's words where it has one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEMA_VERSION", "Metric", "METRICS", "METRIC_NAMES", "CHECKS", "VERDICTS",
           "STATUSES", "validate_result"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Metric:
    """One metric of a point: its key in ``metrics``, its unit and what it counts."""
    name: str
    unit: str
    doc: str


METRICS = (
    Metric("accesses", "count", "CPU accesses translated (ChampSim ACCESS), faults excluded"),
    Metric("hits", "count", "accesses served from the TLB (ChampSim HIT)"),
    Metric("misses", "count", "accesses that needed a walk (ChampSim MISS)"),
    Metric("hits_load", "count", "loads served from the TLB"),
    Metric("misses_load", "count", "loads that needed a walk"),
    Metric("hits_store", "count", "stores served from the TLB"),
    Metric("misses_store", "count", "stores that needed a walk"),
    Metric("hits_fetch", "count", "instruction fetches served from the TLB"),
    Metric("misses_fetch", "count", "instruction fetches that needed a walk"),
    Metric("hit_rate", "fraction", "hits / accesses"),
    Metric("miss_rate", "fraction", "misses / accesses"),
    Metric("mpki", "misses per 1000", "1000 x misses / mpki_denominator"),
    Metric("mpki_denominator", "name", "'instructions' when the trace has them, else "
                                       "'accesses'"),
    Metric("instructions", "count", "instructions of the stream (0 when it has none)"),
    Metric("walks", "count", "page-table walks started (hardware counter)"),
    Metric("walk_cycles", "cycles", "cycles the walkers were busy (hardware counter)"),
    Metric("walk_latency_mean", "cycles", "mean request-to-data latency of a TLB miss"),
    Metric("walk_latency_p50", "cycles", "median request-to-data latency of a TLB miss"),
    Metric("walk_latency_p99", "cycles", "99th percentile of the same"),
    Metric("walk_latency_hist", "[edges, counts]", "histogram of the same"),
    Metric("hit_latency_mean", "cycles", "mean request-to-data latency of a TLB hit"),
    Metric("mem_accesses_per_walk", "count", "the walkers' memory requests (PTE reads, A/D "
                                             "compare-and-swaps) per walk (hardware counters)"),
    Metric("a_sets", "count", "Accessed bits set by the walkers (Svadu)"),
    Metric("d_sets", "count", "Dirty bits set by the walkers (Svadu)"),
    Metric("cas_retries", "count", "A/D compare-and-swap retries (a PTE changed under it)"),
    Metric("invals", "count", "invalidation requests the cores received"),
    Metric("inval_cycles", "cycles", "cycles the kernel's flushes took (send to last ack)"),
    Metric("squashed", "count", "walks squashed by an invalidation and restarted"),
    Metric("faults", "count", "page faults the kernel served"),
    Metric("shootdowns", "count", "flushes that reached at least one core"),
    Metric("pages_reclaimed", "count", "pages the kernel freed by reclaim"),
    Metric("pages_swapped_out", "count", "anonymous pages written to swap"),
    Metric("cow_faults", "count", "copy-on-write faults the kernel served"),
    Metric("forks", "count", "forks of a core's process by the fork/COW storm"),
    Metric("mprotects", "count", "ranges write-protected by the mprotect/munmap storm"),
    Metric("munmaps", "count", "ranges unmapped by the mprotect/munmap storm"),
    Metric("segv_restores", "count", "storm ranges given back by the program's SIGSEGV "
                                     "handler when an engine touched them"),
    Metric("dev_accesses", "count", "device TLB lookups (DeviceMmu counter; device-reclaim)"),
    Metric("dev_hits", "count", "device accesses served from the device TLB"),
    Metric("dev_misses", "count", "device accesses that missed (a fault to the host driver)"),
    Metric("dev_hit_rate", "fraction", "dev_hits / dev_accesses"),
    Metric("dev_fills", "count", "device TLB entries the host driver filled"),
    Metric("dev_faults", "count", "device faults the host driver resolved"),
    Metric("dev_invals", "count", "invalidations the device TLB received (mmu notifiers)"),
    Metric("dev_young_clears", "count", "young bits cleared by clear_flush_young"),
    Metric("cycles", "cycles", "simulated cycles of the measured phase"),
    Metric("accesses_per_s", "1/s", "checked accesses per second of wall time"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)

#: Cross-checks a point can carry, by name: the golden model's TLB (exact counts on the same
#: stream), a stack-distance LRU bound (fully associative LRU points), cachegrind (traces);
#: on the step path (device-reclaim): the run's checkers with the golden-walk scoreboard
#: (every translation replayed), and the device TLB's counters against the host driver's
#: own counts.
CHECKS = ("golden_tlb", "stack_distance_lru", "cachegrind", "scoreboard", "device_counters")
VERDICTS = ("pass", "fail", "not exercised")
STATUSES = ("ok", "failed")


def validate_result(result: dict) -> None:
    """Raise ``ValueError`` naming the first field of ``result`` that breaks the schema."""
    need = ("schema", "point_id", "git_commit", "tools", "design", "workload", "seed",
            "metrics", "checks", "status", "error")
    for key in need:
        if key not in result:
            raise ValueError(f"point result lacks {key!r}")
    if result["schema"] != SCHEMA_VERSION:
        raise ValueError(f"point result has schema {result['schema']!r}, not {SCHEMA_VERSION}")
    if result["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {result['status']!r}")
    for name, check in result["checks"].items():
        if name not in CHECKS:
            raise ValueError(f"check {name!r} is not one of {CHECKS}")
        if check.get("verdict") not in VERDICTS:
            raise ValueError(f"check {name!r} has verdict {check.get('verdict')!r}, not one of "
                             f"{VERDICTS}")
    if result["status"] == "ok":
        unknown = set(result["metrics"]) - set(METRIC_NAMES)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRIC_NAMES}")
        if any(c["verdict"] == "fail" for c in result["checks"].values()):
            raise ValueError("a point with a failed check must have status 'failed'")
