"""The fast path on the RTL (Verilator): the traffic engines issue the CPU accesses in
gateware while kswapd, writeback and migration run; every record of the access logs is judged
(golden-walk scoreboard, stale translation, shadow data) and zero violations are found; the
hardware quirks are caught on the same path."""

from __future__ import annotations

import pytest

from cosim.fastbuild import FastParams, fast_run
from hdl.config import MmuConfig

pytestmark = pytest.mark.sim

SMALL = FastParams(words_log2=16, latency=1, log_log2=10)     # 512 KiB, 128 frames


def _run(seed=1, accesses=20_000, pages=16, quirks=(), hdl=None, **env):
    config = MmuConfig(**(hdl or {}))
    e = {"FAST_ACCESSES": accesses, "FAST_PAGES": pages, "FAST_PERIOD": 4000,
         "FAST_QUIRKS": ",".join(quirks)}
    e.update(env)
    return fast_run(config, SMALL, "verilator", seed=seed, env=e)


def test_fast_path_reclaim_checks_every_record():
    passed, rep, where = _run()
    assert rep is not None, f"no report in {where}"
    assert passed, rep.get("violations") or rep.get("error")
    assert rep["accesses"] >= 20_000
    c = rep["log_checks"]
    assert c["scoreboard_checks"] >= rep["records"] - c.get("not_checked", 0) > 0
    assert c.get("stale_checks", 0) > 0
    assert rep["verdicts"]["shadow"] == "PASS" and rep["verdicts"]["tlb"] == "PASS"
    k = rep["kernel_figures"]
    assert k["pswpout"] > 0 and k["pages_written"] > 0 and k["migrate_success"] > 0
    assert 0 < rep["faults"] < rep["accesses"]
    assert not rep["violations"]


def test_fast_path_checks_off_counts_but_judges_nothing():
    passed, rep, _ = _run(accesses=8_000, FAST_CHECKS=0)
    assert passed and rep["accesses"] >= 8_000
    assert "scoreboard_checks" not in rep["log_checks"]
