"""A design point: the MMU's parameters, the memory latency, the workload and the seed.

Design axes (the sweep's names, then :class:`hdl.config.MmuConfig`'s): ``entries``
(``tlb_entries``), ``ways`` (``tlb_ways``), ``replacement``, ``superpage_entries``,
``asid_bits``, ``svadu`` (True: hardware A/D; False: Svade faults), ``cores`` (``ncores``),
``dev_entries`` (the device TLB's entries, ``DeviceMmu``), ``latency`` (memory latency in
cycles, :class:`cosim.fastbuild.FastParams`).

Workload axes: ``workload`` (a key of :data:`WORKLOADS`), ``pages`` (each core's window, a
power of two), ``accesses`` (in all, split over the cores), ``store_permille``, ``period``
(cycles between kernel steps).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

__all__ = ["Point", "DESIGN_AXES", "WORKLOAD_AXES", "WORKLOADS", "KERNEL_SCENARIOS", "UNSUPPORTED_AXES",
           "DESIGN_DEFAULTS", "WORKLOAD_DEFAULTS", "PointError"]


class PointError(ValueError):
    """A design point or workload the sweep cannot run (names the axis, the value, the rule)."""


#: Sweep axis name -> MmuConfig parameter (``latency`` is the fast path's memory latency).
DESIGN_AXES = {"entries": "tlb_entries", "ways": "tlb_ways", "replacement": "replacement",
               "superpage_entries": "superpage_entries", "asid_bits": "asid_bits",
               "svadu": "svadu", "cores": "ncores", "dev_entries": "dev_entries",
               "latency": "latency"}
DESIGN_DEFAULTS = {"entries": 8, "ways": None, "replacement": "plru", "superpage_entries": 4,
                   "asid_bits": 9, "svadu": True, "cores": 2, "dev_entries": 8, "latency": 1}
#: Names a user may try that are not axes, with the rule.
UNSUPPORTED_AXES = {
    "device_entries": "the device TLB's axis is named dev_entries",
}

#: Kernel scenarios that run beside the traffic engines, by name: the fast path's kernel-step
#: operations (``FAST_OPS``; ``None``: its default set, kswapd, migration, writeback,
#: dontneed and a VMA split: reclaim with shootdowns).  ``fork-cow``: a fork of a core's
#: process every step (the parent's pages write-protected, its stores take COW faults), the
#: oldest of two children exiting; ``mprotect-munmap``: 4 pages write-protected and 4
#: unmapped every step, given back by the program's SIGSEGV handler when an engine touches
#: them, else at the next step (:mod:`cosim.faststorm`).
KERNEL_SCENARIOS = {"none": (), "reclaim": None, "fork-cow": ("fork",),
                    "mprotect-munmap": ("mprotect", "munmap")}

#: Workloads by name (the one registry of workload kinds): the traffic engine's address
#: stream (``mode``; ``trace`` replays a recorded trace, the ``trace`` axis: a ``.npz`` of
#: ``rmap-cosim trace``, on every core of one process mapping its VMAs) and the kernel
#: scenario beside it (a key of :data:`KERNEL_SCENARIOS`), every ``period`` cycles.
#: ``device-reclaim`` (mode ``device``) is the one workload with device traffic: the
#: registered ``reclaim`` scenario on the step path (the fast path's engines are CPU ports
#: only): every core's workload, kswapd, writeback and migration, and a device (the
#: ``DeviceMmu``, a secondary MMU kept coherent by mmu notifiers) on the parent's memory;
#: ``accesses`` is split over 3 phases and the cores, ``pages``, ``period`` and
#: ``store_permille`` are the scenario's own.
WORKLOADS = {
    "uniform": {"mode": "uniform", "kernel": "none"},
    "zipf": {"mode": "zipf", "kernel": "none"},
    "stride": {"mode": "stride", "kernel": "none"},
    "chase": {"mode": "chase", "kernel": "none"},
    "reclaim": {"mode": "uniform", "kernel": "reclaim"},
    "reclaim-zipf": {"mode": "zipf", "kernel": "reclaim"},
    "fork-cow": {"mode": "uniform", "kernel": "fork-cow"},
    "mprotect-munmap": {"mode": "uniform", "kernel": "mprotect-munmap"},
    "trace": {"mode": "trace", "kernel": "none"},
    "trace-reclaim": {"mode": "trace", "kernel": "reclaim"},
    "trace-fork-cow": {"mode": "trace", "kernel": "fork-cow"},
    "trace-mprotect-munmap": {"mode": "trace", "kernel": "mprotect-munmap"},
    "device-reclaim": {"mode": "device", "kernel": "reclaim"},
}
WORKLOAD_AXES = ("workload", "trace", "pages", "accesses", "store_permille", "period")
WORKLOAD_DEFAULTS = {"workload": "uniform", "trace": None, "pages": 16, "accesses": 20_000,
                     "store_permille": 250, "period": 20_000}


@dataclass(frozen=True)
class Point:
    """One point of a sweep.

    Parameters
    ----------
    design : dict
        Sweep design axes (:data:`DESIGN_AXES`), defaults filled in.
    workload : dict
        Workload axes (:data:`WORKLOAD_AXES`), defaults filled in.
    seed : int
    """
    design: dict
    workload: dict
    seed: int = 1
    mmu: dict = field(init=False, compare=False)

    def __post_init__(self):
        for name in self.design:
            if name in UNSUPPORTED_AXES:
                raise PointError(f"design axis {name!r} is not supported: "
                                 f"{UNSUPPORTED_AXES[name]}")
            if name not in DESIGN_AXES:
                raise PointError(f"unknown design axis {name!r}; known: "
                                 f"{', '.join(DESIGN_AXES)}")
        for name in self.workload:
            if name not in WORKLOAD_AXES:
                raise PointError(f"unknown workload axis {name!r}; known: "
                                 f"{', '.join(WORKLOAD_AXES)}")
        w = self.workload.get("workload", WORKLOAD_DEFAULTS["workload"])
        if w not in WORKLOADS:
            raise PointError(f"workload must be one of {', '.join(WORKLOADS)}, not {w!r}")
        design = dict(DESIGN_DEFAULTS, **self.design)
        if design["ways"] is None:
            design["ways"] = design["entries"]
        workload = dict(WORKLOAD_DEFAULTS, **self.workload)
        is_trace = WORKLOADS[w]["mode"] == "trace"
        if is_trace and not workload["trace"]:
            raise PointError(f"workload {w!r} needs the trace axis (a .npz of rmap-cosim trace)")
        if not is_trace and workload["trace"]:
            raise PointError(f"workload {w!r} takes no trace (trace = {workload['trace']!r}); "
                             f"use one of the trace workloads: "
                             f"{', '.join(k for k, v in WORKLOADS.items() if v['mode'] == 'trace')}")
        if is_trace:
            from pathlib import Path
            if not Path(workload["trace"]).is_file():
                raise PointError(f"trace {workload['trace']!r} is not a file (record one with "
                                 f"rmap-cosim trace, or make traces)")
            workload["trace"] = str(Path(workload["trace"]).resolve())
        pages = workload["pages"]
        if not isinstance(pages, int) or pages < 2 or pages & (pages - 1):
            raise PointError(f"pages must be a power of two of at least 2, not {pages!r}")
        for name in ("accesses", "period"):
            if not isinstance(workload[name], int) or workload[name] < 1:
                raise PointError(f"{name} must be a positive integer, not {workload[name]!r}")
        if not 0 <= workload["store_permille"] <= 1000:
            raise PointError(f"store_permille must be in 0..1000, not "
                             f"{workload['store_permille']!r}")
        lat = design["latency"]
        if not isinstance(lat, int) or isinstance(lat, bool) or not 0 <= lat <= 64:
            raise PointError(f"latency must be an integer in 0..64 cycles, not {lat!r}")
        object.__setattr__(self, "design", design)
        object.__setattr__(self, "workload", workload)
        from hdl.config import MmuConfig
        params = {DESIGN_AXES[k]: v for k, v in design.items() if k != "latency"}
        try:
            cfg = MmuConfig.from_params(**params)
        except (TypeError, ValueError) as exc:
            raise PointError(f"design {self.label()}: {exc}") from None
        object.__setattr__(self, "mmu", cfg.as_dict())

    @property
    def point_id(self) -> str:
        blob = json.dumps({"design": self.design, "workload": self.workload,
                           "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def label(self) -> str:
        d = dict(DESIGN_DEFAULTS, **self.design)
        ways = d["ways"] if d["ways"] is not None else d["entries"]
        w = self.workload.get("workload", "uniform")
        if self.workload.get("trace"):
            from pathlib import Path
            w += f":{Path(self.workload['trace']).stem}"
        dev = "" if d["dev_entries"] == DESIGN_DEFAULTS["dev_entries"] else \
            f"/dev{d['dev_entries']}"
        return (f"{d['entries']}e/{ways}w/{d['replacement']}/{d['cores']}c"
                f"/lat{d['latency']}{dev}/{w}")

    def command(self, out: str = "explore-results") -> str:
        """The ``rmap-cosim sweep`` command line that runs this point alone."""
        flags = []
        for name, value in list(self.design.items()) + list(self.workload.items()):
            if value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                flags.append(f"--{name.replace('_', '-')} {text}")
        return f"rmap-cosim sweep {' '.join(flags)} --seed {self.seed} --out {out}"

    def as_dict(self) -> dict:
        return {"design": self.design, "workload": self.workload, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "Point":
        return cls(dict(d["design"]), dict(d["workload"]), int(d.get("seed", 1)))
