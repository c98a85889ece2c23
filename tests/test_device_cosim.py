"""The secondary MMU through mmu notifiers on the RTL DeviceMmu, on Icarus and on Verilator.

One simulation per simulator runs every test of :mod:`cosim.tb.tb_device`: reclaim of
device-used pages; munmap, mprotect and mremap while the device accesses; fork with COW;
migration; exit racing reclaim; registration racing munmap, truncate and try_to_unmap;
registration interrupted by a signal; each quirk (no_seq_retry, directed and by timing
alone; defer_inval_to_range_end; no_count_check, by checker (d) from outside the driver;
notifier_release_unlink_first) caught by a checker with the
same run passing without it; the device checks fed bad input.
"""

from __future__ import annotations

import json
import os

import pytest

SEED = 7


def _run(sim: str, seed: int = SEED, test_filter: str | None = None, rtl_opts=None,
         tag: str = "", **params):
    """One simulation of cosim.tb.tb_device on ``Top(**params)``; returns (RunResult,
    {test name: figures})."""
    from cosim import build as cb
    opts = rtl_opts or {"seed": 0, "waves": False}
    seed += opts["seed"]
    config = cb.make_config(**params)
    tag = f"{sim}-device-{seed}{tag}-{os.environ.get('PYTEST_XDIST_WORKER', 'w')}"
    test_dir = cb.SIM_BUILD / config.config_hash / "runs" / tag
    env = {"COCOTB_TEST_FILTER": test_filter} if test_filter else None
    r = cb.run(config, sim, "cosim.tb.tb_device", seed=seed, test_dir=test_dir, env=env,
               waves=opts["waves"])
    figures = {}
    path = test_dir / "report.json.device.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            figures[rec["test"]] = rec
    return r, figures


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_device_scenarios_and_quirks_on_rtl(sim, rtl_opts):
    r, fig = _run(sim, rtl_opts=rtl_opts)
    assert r.passed, f"{r.failures}\n{r.log_tail(6000)}\nreproduce: {r.command}"
    expected = {"reclaim", "with_cpus", "vm_ops", "fork", "migration", "exit", "register_race",
                "register_eintr", "no_seq_retry_on", "no_seq_retry_off", "defer_on",
                "defer_off", "release_unlink_first_on", "release_unlink_first_off",
                "seq_sweep_on", "seq_sweep_off", "stale_access", "register_unlocked",
                "no_count_check_on", "no_count_check_off"}
    assert expected <= set(fig), f"missing reports: {expected - set(fig)}"
    rec = fig["reclaim"]
    # The figures the demo shows, from a real RTL run.
    for key in ("accesses", "faults", "fills", "fills_refused", "invalidations",
                "young_harvested"):
        assert key in rec, rec
    assert rec["accesses"] > 0 and rec["faults"] > 0 and rec["invalidations"] > 0, rec
    assert rec["perf"]["fills"] == rec["fills"], rec          # every fill reached the RTL
    assert rec["perf"]["misses"] >= rec["misses"], rec
    for name in ("no_seq_retry_on", "defer_on", "release_unlink_first_on", "seq_sweep_on",
                 "no_count_check_on"):
        assert fig[name]["violation"], f"{name}: no violation reported"
        assert f"seed={SEED + rtl_opts['seed']}" in fig[name]["violation"], fig[name]["violation"]
    assert "[notifier]" in fig["no_count_check_on"]["violation"]
    for name in ("no_seq_retry_off", "defer_off", "release_unlink_first_off", "seq_sweep_off",
                 "no_count_check_off"):
        assert not fig[name].get("violation"), fig[name]["violation"]


@pytest.mark.sim
def test_device_runs_are_deterministic_per_seed(rtl_opts):
    """The same seed gives the same device figures (cycles included) on two Icarus runs and
    on Verilator; another seed differs."""
    runs = [_run("icarus", 3, "test_dev_reclaim", rtl_opts),
            _run("icarus", 3, "test_dev_reclaim", rtl_opts, tag="again"),
            _run("verilator", 3, "test_dev_reclaim", rtl_opts),
            _run("icarus", 4, "test_dev_reclaim", rtl_opts)]
    for r, _ in runs:
        assert r.passed, f"{r.failures}\n{r.log_tail()}"
    a, b, v, other = (f["reclaim"] for _, f in runs)
    assert a == b, "two Icarus runs of one seed differ"
    assert a == v, "Icarus and Verilator differ on one seed"
    assert a != other, "seeds 3 and 4 gave the same run"


@pytest.mark.sim
def test_device_scenarios_with_a_two_entry_device_tlb(rtl_opts):
    """A 2-entry DeviceMmu evicts all the time: the driver's record outlives the entries,
    invalidations of evicted entries are harmless, every checker still passes."""
    r, fig = _run("icarus", 5, "test_dev_(reclaim|munmap|migration|exit)", rtl_opts,
                  dev_entries=2)
    assert r.passed, f"{r.failures}\n{r.log_tail(6000)}\nreproduce: {r.command}"
    assert {"reclaim", "vm_ops", "migration", "exit"} <= set(fig), set(fig)
    rec = fig["reclaim"]
    assert rec["perf"]["fills"] == rec["fills"] and rec["fills"] > 8, rec


def test_devarch_and_device_driver_constructor_errors():
    """Clear errors without a simulator: a design without device ports, a host driver that
    does not use this DevArch, a bad retry limit."""
    import types

    from cosim.devarch import DevArch
    from cosim.device import DeviceDriver, DeviceRequester
    arch = types.SimpleNamespace(dut=types.SimpleNamespace(clk=None), env=None, asid_bits=9)
    with pytest.raises(ValueError, match="The design has no dev__req__valid port"):
        DevArch(arch)
    dut = types.SimpleNamespace(**{p: 0 for p in ("clk", "dev__req__valid", "dev__fill__valid",
                                                  "dev__inval__valid", "dev__young__valid",
                                                  "dev__inval__kind", "dev__inval__vaddr",
                                                  "dev__inval__asid", "dev__inval__ack")})
    env = types.SimpleNamespace(in_host_thread=lambda: False)
    dev = DevArch(types.SimpleNamespace(dut=dut, env=env, asid_bits=9, cycle=lambda: 0,
                                        device_port_driver=DeviceDriver))
    with pytest.raises(RuntimeError, match="dev_fill needs simulated time"):
        dev._call("fill", None)
    with pytest.raises(TypeError, match="Retry limit must be a positive integer, not 0"):
        DeviceRequester(dev, types.SimpleNamespace(dev=dev, mm=None), max_retries=0)
    with pytest.raises(ValueError, match="does not use this DevArch"):
        DeviceRequester(dev, types.SimpleNamespace(dev=object(), mm=None))


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 11, 13])
def test_device_scenarios_more_seeds(sim, seed, rtl_opts):
    """Every scenario and quirk test on more seeds (make slow)."""
    r, fig = _run(sim, seed, rtl_opts=rtl_opts)
    assert r.passed, f"{r.failures}\n{r.log_tail(6000)}\nreproduce: {r.command}"
    for name in ("no_seq_retry_on", "defer_on", "release_unlink_first_on", "seq_sweep_on"):
        assert fig[name]["violation"], f"seed {seed}: {name}: no violation reported"
