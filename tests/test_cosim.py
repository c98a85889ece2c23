"""The co-simulation bridge: host threads, CosimArch, CPU drivers, scenarios, the CLI.

The host-thread tests run on a one-register Verilog stub (they need only a clock); the
scenario tests run ``hdl.top.Top`` on Icarus and on Verilator through ``cosim.build``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUB = """\
module cosim_stub(input clk, input rst, output reg [7:0] cnt);
  initial cnt = 0;
  always @(posedge clk) cnt <= cnt + 1;
endmodule
"""


def _run_stub(sim: str, seed: int, testcase: str | None = None):
    """Run cosim.tb.tb_cosim's host tests on the stub; return (ntests, nfailed)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from cosim.build import SIM_BUILD, sim_env
    sim_env()
    base = SIM_BUILD / "cosim-stub" / f"{sim}-{os.environ.get('PYTEST_XDIST_WORKER', 'w')}"
    base.mkdir(parents=True, exist_ok=True)
    src = base / "cosim_stub.v"
    src.write_text(STUB)
    runner = get_runner(sim)
    runner.build(sources=[src], hdl_toplevel="cosim_stub", build_dir=base, always=False,
                 timescale=("1ns", "1ps"),
                 build_args=["-g2005"] if sim == "icarus" else ["-Wno-fatal"],
                 log_file=base / "build.log")
    results = base / f"results-{seed}.xml"
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        runner.test(test_module="cosim.tb.tb_cosim", hdl_toplevel="cosim_stub",
                    build_dir=base, test_dir=base, results_xml=str(results),
                    test_filter=testcase or "test_host_", seed=seed,
                    extra_env={"COSIM_SEED": str(seed), "PYTHONPATH": str(ROOT)},
                    log_file=base / f"sim-{seed}.log")
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    return get_results(results), base / f"sim-{seed}.log"


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_host_threads(sim):
    """Locks that sleep in simulated time, rwsems, lock misuse, seeded determinism, a failing
    thread stopping the others."""
    (ntests, nfailed), log = _run_stub(sim, seed=5)
    assert ntests >= 5, f"only {ntests} host tests ran; see {log}"
    assert nfailed == 0, f"{nfailed} of {ntests} host tests failed on {sim}; see {log}"


def _run_top(sim: str, seed: int, test_filter: str, env=None, **params):
    from cosim import build as cb
    config = cb.make_config(**params)
    tag = (f"{sim}-{test_filter}-{seed}-{(env or {}).get('COSIM_TAG', '')}"
           f"{os.environ.get('PYTEST_XDIST_WORKER', 'w')}")
    test_dir = cb.SIM_BUILD / config.config_hash / "runs" / tag
    module = "cosim.tb.tb_scenarios" if test_filter == "test_scenario" else "cosim.tb.tb_cosim"
    r = cb.run(config, sim, module, seed=seed, test_dir=test_dir,
               env=dict(env or {}, COCOTB_TEST_FILTER=test_filter))
    return r


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_arch_on_rtl(sim):
    """PTE atomics through the memory model, flushes through the RTL's invalidation ports."""
    r = _run_top(sim, 3, "test_arch_")
    assert r.passed, f"{r.failures}\n{r.log_tail()}\nreproduce: {r.command}"


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_reclaim_scenario(sim):
    """fork-shared anonymous pages, shared and private file mappings, workloads on both cores
    through the RTL, kswapd + writeback + migration; every checker passes."""
    r = _run_top(sim, 11, "test_scenario",
                 env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 2, "COSIM_ACCESSES": 30})
    assert r.report is not None, f"no report: {r.failures}\n{r.log_tail()}"
    assert r.passed, f"{r.report.get('violation')}\n{r.log_tail()}\nreproduce: {r.command}"
    rep = r.report
    assert rep["accesses"] >= 2 * 2 * 30, rep["accesses"]
    assert rep["tlb"]["walks"] > 0 and rep["tlb"]["hits"] > 0, rep["tlb"]
    assert rep["arch"]["flush_count"] > 0, rep["arch"]
    assert all(c["verdict"] == "PASS" for c in rep["checkers"]), rep["checkers"]
    # The device (secondary MMU) on the parent's mm, next to the CPUs: its figures are in the
    # report, with device accesses and notifier invalidations reaching it.
    dev = rep.get("device_figures")
    assert dev, f"no device figures in the report: {sorted(rep)}"
    labels = rep["device_figure_labels"]
    for key in ("accesses", "faults", "fills_refused", "invalidations", "young_harvested"):
        assert key in dev and key in labels, (key, dev, labels)
    assert dev["accesses"] > 0 and dev["invalidations"] > 0, dev
    assert dev["drivers"] == 1 and dev["access_checks"] > 0, dev


# --- the CLI ------------------------------------------------------------------------------

def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "cosim", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["run", "nosuch"], "unknown scenario 'nosuch'; known: reclaim, fuzz, dirty_race"),
    (["run", "reclaim", "--tlb-entries", "12", "--tlb-ways", "8"],
     "TLB has 12 entries, which is not a multiple of 8 ways"),
    (["run", "reclaim", "--quirk", "bogus"], "unknown quirk 'bogus'"),
    (["run", "reclaim", "--cores", "0"], "argument --cores: must be at least 1, not 0"),
    (["run", "reclaim", "--sim", "modelsim"], "argument --sim: invalid choice: 'modelsim'"),
    (["run", "reclaim", "--json", "/nonexistent/dir/x.json"], "directory /nonexistent/dir"),
    (["run", "reclaim", "--nframes", "8"], "argument --nframes: must be at least 16, not 8"),
    (["run", "reclaim", "--mmu", "cva6", "--sim", "icarus"], "--mmu cva6 runs on Verilator only"),
    (["run", "reclaim", "--mmu", "cva6", "--tlb-entries", "8", "--tlb-ways", "2"],
     "tlb_ways=2 is not possible with mmu='cva6'"),
    (["run", "reclaim", "--mmu", "cva6", "--path", "fast"], "--path fast runs our MMU's"),
])
def test_cli_bad_arguments(args, message):
    """Bad arguments: a one-line message on stderr saying what is wrong, exit status 2."""
    r = _cli(*args, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr


def test_cli_scenarios_come_from_the_registry():
    """`list` and `run --help` name every registered scenario; a registered scenario runs
    from the one cocotb test module; `list` names the quirks each one catches."""
    from cosim.cli import main
    from cosim.scenarios import QUIRK_SCENARIOS, SCENARIOS
    import io
    out = io.StringIO()
    assert main(["list"], out=out) == 0
    text = out.getvalue()
    for sc in SCENARIOS.values():
        assert f"  {sc.name:13s} {sc.summary}" in text, sc.name
    for quirk in QUIRK_SCENARIOS:
        assert quirk in text
    r = _cli("run", "--help", timeout=60)
    assert all(name in " ".join(r.stdout.split()) for name in SCENARIOS), r.stdout


def test_cli_parses_quirks_into_kernel_and_hardware():
    from cosim.cli import parse_args
    a = parse_args(["run", "reclaim", "--quirk", "nonatomic_ptep_get_and_clear",
                    "--quirk", "fill_after_inval", "--seed", "9", "--tlb-entries", "16",
                    "--tlb-ways", "4"])
    assert a.kernel_quirks == ["nonatomic_ptep_get_and_clear"]
    assert a.params == {"ncores": 2, "tlb_entries": 16, "tlb_ways": 4,
                        "quirk_fill_after_inval": True}
    assert a.env["COSIM_QUIRKS"] == "nonatomic_ptep_get_and_clear"
    assert "--seed 9" in a.command and "--quirk fill_after_inval" in a.command
    b = parse_args(["run", "reclaim", "--svade"])
    assert b.params["svadu"] is False and "--svade" in b.command


@pytest.mark.sim
def test_cli_run_writes_report_and_json(tmp_path):
    """A short run on Icarus: progress lines, the readable report, the JSON figures."""
    out = tmp_path / "fig.json"
    r = _cli("run", "reclaim", "--sim", "icarus", "--seed", "6", "--phases", "1",
             "--accesses", "20", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    for text in ("phase 1/1", "TLB (all cores):", "hits (", "A/D by CAS:", "flushes:",
                 "swapped out", "migrated", "(c) no lost write", "OK in",
                 "device (secondary MMU):", "device accesses", "young bits harvested",
                 "fills refused by the retry protocol", "invalidations (notifier callbacks)"):
        assert text in r.stdout, f"{text!r} missing from:\n{r.stdout}"
    fig = json.loads(out.read_text())
    assert fig["seed"] == 6 and fig["passed"] is True
    assert fig["accesses"] >= 2 * 20 and fig["tlb"]["lookups"] >= fig["accesses"]
    assert "--seed 6" in fig["command"]
    assert fig["device_figures"]["accesses"] > 0, fig["device_figures"]


def _figures(rep):
    return {k: v for k, v in rep.items() if k not in ("wall_seconds", "sim")}


@pytest.mark.sim
def test_deterministic_per_seed_on_both_simulators():
    """One seed, one interleaving: two Icarus runs and a Verilator run of the same seed give
    identical figures (cycles, every counter, every checker's count); another seed differs."""
    env = {"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 1, "COSIM_ACCESSES": 20}
    runs = [_run_top("icarus", 21, "test_scenario", env=env),
            _run_top("icarus", 21, "test_scenario", env=dict(env, COSIM_TAG="again")),
            _run_top("verilator", 21, "test_scenario", env=env),
            _run_top("icarus", 22, "test_scenario", env=env)]
    for r in runs:
        assert r.passed and r.report, f"{r.failures}\n{r.log_tail()}"
    a, b, v, other = (_figures(r.report) for r in runs)
    assert a == b, "seed 21: two Icarus runs differ"
    assert a == v, "seed 21: Icarus and Verilator differ"
    assert a != other, "seeds 21 and 22 gave the same run"


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_fuzz_scenario(sim):
    """pyrmap's random program (mmap/munmap/mprotect/mremap/fork/exit/madvise/msync/reclaim/
    migration/remap_file_pages, CPU and device workloads) on the RTL: every checker passes."""
    r = _run_top(sim, 1, "test_scenario", env={"COSIM_SCENARIO": "fuzz", "COSIM_STEPS": 12})
    assert r.report is not None, f"no report: {r.failures}\n{r.log_tail()}"
    assert r.passed, f"{r.report.get('violation')}\n{r.log_tail()}\nreproduce: {r.command}"
    rep = r.report
    assert rep["accesses"] > 50 and rep["arch"]["flush_count"] > 0, rep
    assert rep["device"] and rep["device"]["driver"].get("accesses", 0) > 0, rep["device"]
    assert all(c["verdict"] == "PASS" for c in rep["checkers"]), rep["checkers"]


@pytest.mark.sim
def test_race_fuzz_scenario():
    """The race-seeking random program on the RTL (Verilator): operations change ranges the
    cores and the device are using; some accesses land in a range being changed (a legal
    segmentation fault or a stale-but-legal hit), every checker passes."""
    r = _run_top("verilator", 5, "test_scenario", env={"COSIM_SCENARIO": "race_fuzz",
                                                       "COSIM_STEPS": 12})
    assert r.report is not None, f"no report: {r.failures}\n{r.log_tail()}"
    assert r.passed, f"{r.report.get('violation')}\n{r.log_tail()}\nreproduce: {r.command}"
    rep = r.report
    assert rep["accesses"] > 50 and rep["arch"]["flush_count"] > 0, rep
    assert all(c["verdict"] in ("PASS", "not exercised") for c in rep["checkers"]), \
        rep["checkers"]
    # Window coverage on the RTL: the operations opened windows, and CPU accesses completed
    # (in simulated time) inside some of them; the report prints the table.
    from pyrmap.windows import LANDINGS
    windows = rep["windows"]
    assert sum(opened for _, _, opened, _ in windows) > 20, windows
    landed = [(op, phase) for op, phase, _, counts in windows if counts.get("cpu_access")]
    assert landed, windows
    assert all(set(counts) <= set(LANDINGS) for _, _, _, counts in windows), windows
    from cosim.cli import format_report
    text = format_report(rep)
    assert "window coverage:" in text and "operation    window" in text, text


# --- constructors: errors in Amaranth's voice, no simulator needed --------------------------

def test_host_env_rejects_bad_parameters():
    from cosim.host import HostEnv
    with pytest.raises(TypeError, match=r"^Seed must be an integer, not 'x'$"):
        HostEnv(None, "x")
    with pytest.raises(ValueError, match=r"Yield cycles must be 0 <= lo <= hi, not \(3, 1\)"):
        HostEnv(None, 1, yield_cycles=(3, 1))


def test_cosim_arch_rejects_bad_parameters():
    from cosim.arch import CosimArch
    from cosim.host import HostEnv
    env = HostEnv(None, 1)
    with pytest.raises(TypeError, match=r"^Core count must be a positive integer, not 0$"):
        CosimArch(None, None, env, ncores=0)
    with pytest.raises(TypeError, match=r"Range flush threshold must be a positive integer"):
        CosimArch(None, None, env, ncores=2, range_flush_pages=0)


def test_cpu_driver_rejects_bad_core():
    from types import SimpleNamespace

    from cosim.cpu import CpuRequester
    with pytest.raises(ValueError, match=r"^Core must be 0\.\.1, not 5$"):
        CpuRequester(None, 5, ncores=2)
    with pytest.raises(TypeError, match=r"^Timeout must be a positive integer, not 0$"):
        CpuRequester(SimpleNamespace(), 0, ncores=2, timeout=0)


def test_report_format_names_every_figure():
    from cosim.cli import format_report
    rep = {"cycles": 10, "accesses": 3, "stores": 1, "loads": 2,
           "tlb": {"lookups": 4, "hits": 3, "hit_rate": 0.75, "misses": 1, "walks": 1,
                   "a_sets": 1, "d_sets": 1, "cas_retries": 2},
           "arch": {"flush_count": 2, "flushes": {"page": 2}, "flush_cycles_max": 5},
           "kernel": {"pswpout": 7}, "figure_labels": {"pswpout": "swapped out"},
           "checkers": [{"name": "shadow", "checks": 9, "verdict": "FAIL"}],
           "violation": "[shadow] lost write",
           "device_figures": {"accesses": 41, "faults": 5, "fills_refused": 2,
                              "invalidations": 17, "young_harvested": 3},
           "device_figure_labels": {"accesses": "device accesses",
                                    "fills_refused": "fills refused by the retry protocol",
                                    "invalidations": "invalidations (notifier callbacks)",
                                    "young_harvested": "young bits harvested"}}
    text = format_report(rep)
    for needle in ("4 lookups, 3 hits (75.0 %)", "1 D sets, 2 CAS retries", "flushes: 2 driven",
                   "max 5", "swapped out", "(c) no lost write", "FAIL", "[shadow] lost write",
                   "device (secondary MMU):"):
        assert needle in text, f"{needle!r} missing:\n{text}"
    lines = text.splitlines()
    for label, value in (("device accesses", 41), ("fills refused by the retry protocol", 2),
                         ("invalidations (notifier callbacks)", 17),
                         ("young bits harvested", 3)):
        assert any(line.split() == label.split() + [str(value)] for line in lines), \
            f"{label} {value} missing:\n{text}"
    # The device section follows the kernel's figures, before the checkers.
    assert text.index("what the kernel did:") < text.index("device (secondary MMU):") \
        < text.index("checkers:")


@pytest.mark.sim
def test_quirks_fail_dirty_race_at_cycle_level_and_pass_without():
    """A CPU store whose walker sets D by CAS, swept across reclaim's try_to_unmap of the page
    (48 store timings, one seed).  Without a quirk nothing is lost.  With the kernel quirk
    nonatomic_ptep_get_and_clear the walker's CAS lands between reclaim's load and store of
    the PTE and the write is lost (checker (c), the walker's CAS in the PTE history).  With the
    hardware quirk quirk_fill_after_inval a walk in flight fills after the flush was
    acknowledged: an access that began after the ack goes through it (checker (a) at cycle
    level), or the TLB checker finds the entry at the return of reclaim's operation, whichever
    comes first.  Every violation names the seed, the cycle and the reproducing command."""
    env = {"COSIM_SCENARIO": "dirty_race", "COSIM_STEPS": 48}
    off = _run_top("icarus", 1, "test_scenario", env=env)
    assert off.passed, f"{off.report and off.report.get('violation')}\n{off.log_tail()}"
    assert off.report["iterations"] == 48

    on = _run_top("icarus", 1, "test_scenario",
                  env=dict(env, COSIM_QUIRKS="nonatomic_ptep_get_and_clear", COSIM_TAG="k"))
    assert on.report is not None, f"no report: {on.failures}\n{on.log_tail()}"
    assert not on.passed, "no store timing lost a write with nonatomic_ptep_get_and_clear"
    v = on.report["violation"]
    assert "lost write" in v and "at cycle" in v and "seed=1" in v, v
    assert "core0 walker CAS" in v, f"the walker's CAS is not in the PTE history:\n{v}"
    assert "--quirk nonatomic_ptep_get_and_clear" in v, v

    hw = _run_top("icarus", 1, "test_scenario", quirk_fill_after_inval=True, env=env)
    assert hw.report is not None, f"no report: {hw.failures}\n{hw.log_tail()}"
    assert not hw.passed, "quirk_fill_after_inval was not caught"
    v = hw.report["violation"]
    assert "[tlb]" in v and "at cycle" in v and "seed=1" in v, v
    assert ("that began at cycle" in v and "acknowledged at cycle" in v
            and "which no translation still legal at its start allows" in v
            or "core0 TLB holds" in v), v
    assert "--quirk quirk_fill_after_inval" in v, v


# --- stress (make slow) ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("seed", range(1, 9))
def test_fuzz_stress(seed):
    """Longer random programs on Verilator: every checker passes on every seed."""
    r = _run_top("verilator", seed, "test_scenario",
                 env={"COSIM_SCENARIO": "fuzz", "COSIM_STEPS": 40})
    assert r.report is not None, f"seed {seed}: no report: {r.failures}\n{r.log_tail()}"
    assert r.passed, f"seed {seed}: {r.report.get('violation')}\nreproduce: {r.command}"


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_reclaim_demo_size(sim):
    """The demo's size (8 phases x 120 accesses per core) on both simulators."""
    r = _run_top(sim, 1, "test_scenario",
                 env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 8, "COSIM_ACCESSES": 120})
    assert r.passed and r.report, f"{r.failures}\n{r.log_tail()}"
    assert r.report["accesses"] >= 8 * 2 * 120
    assert r.report["kernel"]["pswpout"] > 0 and r.report["kernel"]["pages_written"] > 0


@pytest.mark.sim
def test_reclaim_scenario_on_svade_mmu():
    """The RTL in Svade mode: the walker never sets A/D, a missing A or D is a page fault the
    kernel resolves (arch.svadu tells the engine); every checker passes."""
    r = _run_top("icarus", 2, "test_scenario", svadu=False,
                 env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 2, "COSIM_ACCESSES": 30})
    assert r.passed and r.report, f"{r.report and r.report.get('violation')}\n{r.log_tail()}"
    rep = r.report
    assert rep["tlb"]["a_sets"] == 0 and rep["tlb"]["d_sets"] == 0, rep["tlb"]
    assert rep["kernel"]["fault_svade_a"] + rep["kernel"]["fault_svade_d"] > 0, rep["kernel"]


def test_one_entry_point_with_every_subcommand(capsys):
    """`rmap-cosim` (pyproject's console script) is cosim.cli.main; run, demo, list, litmus,
    cfy, bugzoo and bench are its subcommands, the delegated ones under their own usage."""
    import tomllib
    from cosim.cli import DELEGATED, PROG, main
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {PROG: "cosim.cli:main"}
    r = _cli("--help", timeout=60)
    for cmd in ("run", "demo", "list", "litmus", "cfy", "bugzoo", "bench"):
        assert cmd in r.stdout, (cmd, r.stdout)
    for cmd in DELEGATED:
        try:
            code = main([cmd, "--help"])
        except SystemExit as exc:            # argparse's --help, where main lets it through
            code = exc.code
        assert code == 0, cmd
        assert f"usage: rmap-cosim {cmd}" in capsys.readouterr().out
    assert main(["bench", "--repeat", "0"]) == 2
    assert "argument --repeat: must be at least 1, not 0" in capsys.readouterr().err
