"""The one cocotb test that runs a registered scenario (:data:`cosim.scenarios.SCENARIOS`):
the one named by ``COSIM_SCENARIO``, with the knobs of :func:`cosim.system.scenario_params`;
its report goes to ``COSIM_REPORT`` (the CLI and the tests read it)."""

from __future__ import annotations

import os

import cocotb

from cosim.scenarios import play
from cosim.system import CosimViolation, scenario_params, write_report

SEED = int(os.environ.get("COSIM_SEED", "1"))


@cocotb.test()
async def test_scenario(dut):
    """The scenario named by COSIM_SCENARIO; writes its report to COSIM_REPORT."""
    _, rep = await play(dut, SEED, scenario_params(SEED))
    write_report(rep)
    if rep["violation"]:
        raise CosimViolation(rep["violation"])
