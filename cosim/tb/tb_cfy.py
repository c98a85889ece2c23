"""The cocotb test of the clear-flush-young comparison (:mod:`cosim.cfy`): the reclaim
scenario with ``ptep_clear_flush_young`` flushing or not (``CFY_FLUSH``), watched by
:class:`cosim.cfy.AgingMonitor` (``CFY_MONITOR``, ``CFY_WINDOW``).  Its figures go as JSON
to ``COSIM_REPORT``."""

from __future__ import annotations

import os
import time

import cocotb

from cosim.scenarios import play
from cosim.system import scenario_params, write_report

SEED = int(os.environ.get("COSIM_SEED", "1"))


@cocotb.test()
async def test_cfy(dut):
    """The reclaim scenario under AgingMonitor; ``CFY_FLUSH=1`` flushes on young (2008)."""
    from cosim import cfy
    flush = os.environ.get("CFY_FLUSH", "1") == "1"
    use_monitor = os.environ.get("CFY_MONITOR", "1") == "1"
    try:
        window = int(os.environ.get("CFY_WINDOW", cfy.DEFAULT_WINDOW))
    except ValueError:
        raise ValueError(f"CFY_WINDOW must be an integer, not {os.environ['CFY_WINDOW']!r}")
    monitor = cfy.AgingMonitor(window=window)

    def on_start(s):
        s.kernel.config.clear_flush_young_flushes = flush
        if use_monitor:
            monitor.attach(s)

    p = scenario_params(SEED)
    p["scenario"] = "reclaim"
    p["on_start"] = on_start
    t0 = time.monotonic()
    s = rep = None
    error = None
    try:
        s, rep = await play(dut, SEED, p)
        error = rep["violation"]
    except Exception as exc:  # noqa: BLE001 - reported, then re-raised below
        error = f"{type(exc).__name__}: {exc}"
    finally:
        monitor.detach()
    out = {"flush": flush, "seed": SEED, "wall_seconds": round(time.monotonic() - t0, 2),
           "error": error,
           "params": {k: v for k, v in p.items() if k not in ("command", "on_start")}}
    if s is not None:
        out.update(monitor.figures(s))
        out["scenario"] = rep
    write_report(out)
    if error:
        raise AssertionError(error)
