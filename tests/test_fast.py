"""The fast path on the RTL (Verilator): the traffic engines issue the CPU accesses in
gateware while kswapd, writeback and migration run; every record of the access logs is judged
(golden-walk scoreboard, stale translation, shadow data) and zero violations are found
(``make stress``'s short form is tests/test_stress.py)."""

from __future__ import annotations

import pytest

from cosim.fastbuild import FastParams, fast_run
from hdl.config import MmuConfig

pytestmark = pytest.mark.sim

SMALL = FastParams(words_log2=16, latency=1, log_log2=12)     # 512 KiB, 128 frames


def _run(seed=1, accesses=3000, pages=16, quirks=(), hdl=None, sim="verilator", **env):
    config = MmuConfig(**(hdl or {}))
    e = {"FAST_ACCESSES": accesses, "FAST_PAGES": pages, "FAST_PERIOD": 6000,
         "FAST_QUIRKS": ",".join(quirks)}
    e.update(env)
    return fast_run(config, SMALL, sim, seed=seed, env=e)


def test_fast_path_reclaim_checks_every_record():
    passed, rep, where = _run()
    assert rep is not None, f"no report in {where}"
    assert passed, rep.get("violations") or rep.get("error")
    assert rep["accesses"] >= 3000
    c = rep["log_checks"]
    assert c["scoreboard_checks"] + c.get("not_checked", 0) == rep["records"]
    assert c["scoreboard_checks"] > 0.9 * rep["records"]
    assert c.get("stale_checks", 0) > 0
    assert rep["verdicts"]["shadow"] == "PASS" and rep["verdicts"]["tlb"] == "PASS"
    k = rep["kernel_figures"]
    assert k["pswpout"] > 0 and k["pages_written"] > 0
    assert 0 < rep["faults"] < rep["accesses"]
    assert not rep["violations"]
    # PTE loads are answered from the drained copy; test-and-clear-young is one
    # compare-and-swap through the port, none when A is already clear.
    ops = rep["pte_ops"]
    assert ops["pte_load_copy"] > 0 and "pte_load" not in ops
    assert ops["pte_mkold"] > 0
    # The flush after a young page's A clear is not drained (it cuts off no frame).
    assert 0 < rep["flushes"]["flushes"]["aging_undrained"] < rep["flushes"]["flush_count"]


def test_fast_path_tiny_windows_lose_no_write():
    """4-page windows, a kernel step every 800 cycles and half the accesses stores: a frame is
    swapped out, freed and reused within a few hundred cycles, so a page's new contents must
    reach the gateware before its PTE does.  A bulk write that landed late or not at all shows
    here as a load returning the frame's previous owner's data (shadow memory, checker (c))."""
    passed, rep, where = _run(accesses=1500, pages=4, FAST_PERIOD=800, FAST_STORE=500)
    assert rep is not None, f"no report in {where}"
    assert passed, rep.get("violations") or rep.get("error")
    assert rep["verdicts"]["shadow"] == "PASS" and rep["verdicts"]["frame"] == "PASS"
    k = rep["kernel_figures"]
    assert k["pswpout"] > 0 and rep["faults"] > 100


@pytest.mark.parametrize("sim,accesses", [("verilator", 1500), ("icarus", 600)])
def test_the_device_runs_on_the_fast_path_beside_the_engines_and_the_kernel(sim, accesses):
    """FAST_DEVICE: the DeviceMmu behind its host driver, notified by the kernel's unmaps,
    zaps and migrations, accesses the shared file window next to the engines; its misses are
    served, its accesses checked at cycle level, and at the end its process exits (the
    notifier release stops and invalidates it) with every checker passing."""
    passed, rep, where = _run(accesses=accesses, pages=4, FAST_PERIOD=800, FAST_DEVICE=200,
                              sim=sim)
    assert rep is not None, f"no report in {where}"
    assert passed, rep.get("violations") or rep.get("error")
    assert set(rep["verdicts"].values()) == {"PASS"}
    dev = rep["device"]
    assert dev["accesses"] > 20 and dev["misses"] > 0 and dev["fills"] > 0
    assert dev["access_checks"] > 0 and dev["access_checks"] <= dev["accesses"]
    # the kernel's operations reached the device through its notifier
    assert dev["dev_invals"] > 0 and dev["invalidations"] > 0
    assert dev["releases"] == 1 and dev["entries_checked"] > 0
    assert dev["perf"]["lookups"] >= dev["accesses"] and dev["perf"]["invals"] == dev["dev_invals"]


def test_a_driver_quirk_needs_the_device():
    from cosim.fastrun import FastRun
    with pytest.raises(ValueError, match="need a device: FAST_DEVICE"):
        FastRun(None, 1, {}, {"words_log2": 16}, accesses=10, pages=16,
                quirks=["no_seq_retry"])
    with pytest.raises(ValueError, match="FAST_DEVICE must be a non-negative"):
        FastRun(None, 1, {}, {"words_log2": 16}, accesses=10, pages=16, device=-1)


def test_fast_path_checks_off_counts_but_judges_nothing():
    passed, rep, _ = _run(accesses=3000, FAST_CHECKS=0, FAST_KERNEL="none")
    assert passed and rep["accesses"] >= 3000
    assert "scoreboard_checks" not in rep["log_checks"]


def test_fast_path_replays_a_recorded_trace(valgrind, tmp_path):
    """A program's recorded accesses replay on both cores, each in a process whose VMAs are
    the trace's: every page faults in through the engine, reclaim and migration run beside
    it, every record is judged and none is wrong."""
    import numpy as np

    from cosim.explore import trace as tr
    path = tr.save(tr.record(["true"], limit=4000), tmp_path / "true.npz")
    t = tr.load(path)
    passed, rep, where = _run(accesses=6000, FAST_TRACE=path)
    assert rep is not None, f"no report in {where}"
    assert passed, rep.get("violations") or rep.get("error")
    assert rep["mode"] == "trace" and rep["accesses"] >= 6000
    assert rep["verdicts"]["shadow"] == "PASS" and rep["verdicts"]["tlb"] == "PASS"
    touched = np.unique(t.va[:3000] >> np.uint64(12)).size
    assert rep["faults"] >= 2 * touched           # each core's process faults every page in
    assert rep["kernel_figures"]["pswpout"] + rep["kernel_figures"]["migrate_success"] > 0
    # The RTL's misses against Belady's OPT on the same streams (8 entries, fully associative).
    from cosim.explore.models import stack_distance_check
    from cosim.explore.replay import TraceReplay
    c = rep["log_checks"]
    misses = c["records"] - c["faults"] - c["hits"]
    pages = TraceReplay(t).pages(3000)
    check = stack_distance_check([pages, pages], [misses // 2, misses - misses // 2], entries=8,
                                 ways=8, squashes=rep["squashes"])
    assert check["verdict"] == "pass", check


def test_bulk_push_and_software_port():
    """The engine's changed words reach the gateware memory in one bulk write and the
    software port reads and writes them (cosim.tb.tb_fast.test_gateware_memory_access)."""
    passed, _, where = fast_run(MmuConfig(), SMALL, "verilator", seed=1,
                                env={"FAST_SELFTEST": 1},
                                testcase="test_gateware_memory_access")
    assert passed, f"see {where}/sim.log"


@pytest.mark.slow
def test_fast_path_tiny_windows_long_run():
    """The tiny-window run at 6,000 accesses: a walker's A-bit update the memory took just
    before a kernel operation on the same PTE must reach the engine's copy before the
    operation's value does (applied after it, the copy kept a cleared PTE mapped and the frame
    checker failed at free, ~495 k cycles in).  A kernel step every 200 cycles keeps the run
    that long now that faults are handled once (about 2,000 steps over ~420 k cycles)."""
    passed, rep, where = _run(accesses=6000, pages=4, FAST_PERIOD=200, FAST_STORE=500)
    assert rep is not None, f"no report in {where}"
    assert passed, rep.get("violations") or rep.get("error")
    assert rep["verdicts"]["shadow"] == "PASS" and rep["verdicts"]["frame"] == "PASS"
    assert rep["kernel_steps"] > 300
