"""Where a design point's time goes: wall and CPU seconds of each phase, in order.

A point's result carries its :class:`Timeline` as ``timeline`` (a list of
``{"phase", "wall", "cpu"}``) and the sum as ``cpu_seconds``.  CPU seconds are this process's
and those of the children it waited for (the simulator, Verilator and the compiler,
cachegrind), so they stay meaningful on a loaded machine, where wall seconds do not.

Phases of a fast-path point (:data:`FAST_PHASES`, in the order they run): ``prepare`` (the
memory's size from the trace, the result's header: git commit, tool versions), ``elaborate``
(Amaranth to Verilog, cached per configuration), ``compile`` (Verilator and the C++
compiler, cached per configuration), ``sim_start`` (the simulator's start and exit, cocotb,
the report written), ``sim_setup`` (the trace's records into the gateware memory, its VMAs
into the engine's mms, the engines configured), ``sim_loop`` (the run: the RTL, the drains
and every checker), ``stream_save`` (the stream written for the cross-checks),
``stream_load``, ``metrics``, ``golden_tlb``,
``stack_distance_lru``, ``cachegrind``, ``area``.  A device point (the step
path) has ``step_run`` (its build and run) instead of the simulator's phases.
"""

from __future__ import annotations

import contextlib
import resource
import time

__all__ = ["Timeline", "cpu_now", "FAST_PHASES"]

FAST_PHASES = ("prepare", "elaborate", "compile", "sim_start", "sim_setup", "sim_loop", "stream_save",
               "stream_load", "metrics", "golden_tlb", "stack_distance_lru", "cachegrind", "area")


def cpu_now() -> float:
    """CPU seconds (user + system) of this process and of its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Timeline:
    """The phases of one point, each with its wall and CPU seconds."""

    def __init__(self):
        self.phases: list[dict] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time the ``with`` body as phase ``name`` (recorded even when it raises)."""
        w0, c0 = time.monotonic(), cpu_now()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - w0, cpu_now() - c0)

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Record a phase measured elsewhere (e.g. inside the simulator's process)."""
        self.phases.append({"phase": name, "wall": round(max(wall, 0.0), 4),
                            "cpu": round(max(cpu, 0.0), 4)})

    def seconds(self, name: str) -> tuple[float, float]:
        """``(wall, cpu)`` of every phase called ``name`` together."""
        got = [p for p in self.phases if p["phase"] == name]
        return sum(p["wall"] for p in got), sum(p["cpu"] for p in got)

    def total_cpu(self) -> float:
        return sum(p["cpu"] for p in self.phases)

    def as_list(self) -> list[dict]:
        return [dict(p) for p in self.phases]
