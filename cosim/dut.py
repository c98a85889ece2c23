"""The simulated ``top`` as every cocotb test module starts it: clock, reset, JSON report.

Runtime code for the test modules (:mod:`cosim.tb.tb_mmu`) and the litmus bench
(:mod:`cosim.litmus.bench`); it imports no test module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from .memory import CLOCK_PERIOD_NS

__all__ = ["reset", "write_report"]


def write_report(data: dict, *, under: str | None = None) -> None:
    """Write a test's figures as JSON to the file named by ``COSIM_REPORT`` (where
    :func:`cosim.build.run` reads them), when it is set.

    With ``under``, ``data`` is merged into the file's existing object under that key (a
    module whose tests each report a part); without, ``data`` is the whole report.
    """
    path = os.environ.get("COSIM_REPORT")
    if not path:
        return
    p = Path(path)
    if under is not None:
        report = {}
        if p.exists():
            try:
                report = json.loads(p.read_text())
            except ValueError:
                report = {}
        report[under] = data
        data = report
    p.write_text(json.dumps(data, indent=2, default=str))


async def reset(dut, ncores: int) -> None:
    """Start the clock, drive every input of ``top`` with ``ncores`` cores to 0, hold reset
    for 3 cycles."""
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start(start_high=False)
    for i in range(ncores):
        for name in ("req__valid", "req__vaddr", "req__op", "req__user", "req__sum",
                     "req__mxr", "req__asid", "req__root", "inval__valid", "inval__kind", "inval__vaddr",
                     "inval__asid"):
            getattr(dut, f"cpu{i}__{name}").value = 0
    for name in ("req__valid", "req__vaddr", "req__op", "req__asid", "fault__ack",
                 "fill__valid", "fill__vaddr", "fill__asid", "fill__ppn", "fill__level",
                 "fill__perm", "fill__g", "young__valid", "young__vaddr", "young__asid",
                 "inval__valid", "inval__kind", "inval__vaddr", "inval__asid"):
        getattr(dut, f"dev__{name}").value = 0
    dut.mem__req__ready.value = 0
    dut.mem__resp__valid.value = 0
    dut.mem__resp__rdata.value = 0
    dut.mem__resp__err.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
