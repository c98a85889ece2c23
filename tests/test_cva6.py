"""CVA6's Sv39 MMU (``mmu="cva6"``, from the pinned pythondata-cpu-cva6 wheel) behind the shim.

One Verilator build of ``Top(mmu="cva6", svadu=False)`` (~100 s of CPU the first time, shared
by every test here); the configuration rules and the simulator refusal are plain Python.
"""

from __future__ import annotations

import pytest

from hdl.config import MmuConfig

CVA6 = {"mmu": "cva6", "svadu": False}


def _explain(r) -> str:
    return "\n".join([f"seed {r.seed}; reproduce with: {r.command}",
                      f"run directory: {r.test_dir}", *r.failures, r.log_tail(3000)])


@pytest.mark.sim
def test_walk_hit_fault_sfence(rtl_opts):
    """The directed sequence of cosim.tb.tb_cva6.test_walk passes on CVA6's RTL: 3 reads per
    walk, a hit the next cycle, a store fault from a clean entry, re-walk after sfence.vma."""
    from cosim.build import make_config, run
    r = run(make_config(**CVA6), "verilator", "cosim.tb.tb_cva6", seed=1 + rtl_opts["seed"],
            testcase="test_walk", waves=rtl_opts["waves"])
    assert r.passed, _explain(r)
    walk = r.report["cva6_walk"]
    assert walk["hit_cycles"] == 1 and walk["walk_reads"] == 3, walk


@pytest.mark.sim
def test_svade_scenario_on_cva6():
    """Writeback and reclaim with the engine in Svade mode on CVA6's MMU: every checker
    passes, the scoreboard replayed every translation, and the kernel set D on faults (CVA6
    raises them from clean TLB entries and clean PTEs alike)."""
    from cosim.scenarios import run_scenario
    r = run_scenario("svade", "verilator", seed=1, hdl=CVA6)
    assert r.report is not None, f"no report: {r.failures}\n{r.log_tail()}"
    rep = r.report
    assert r.passed, f"{rep.get('violation')}\nreproduce: {r.command}"
    verdicts = {c["name"]: (c["verdict"], c["checks"]) for c in rep["checkers"]}
    assert {v for v, _ in verdicts.values()} == {"PASS"}, verdicts
    assert rep["config"]["mmu"] == "cva6"
    assert verdicts["scoreboard"][1] == rep["tlb"]["lookups"] > 0, verdicts
    assert rep["kernel_stats"].get("fault_svade_d", 0) > 0, rep["kernel_stats"]
    assert rep["tlb"]["a_sets"] == rep["tlb"]["d_sets"] == 0, rep["tlb"]


@pytest.mark.parametrize("params, name", [
    ({"mmu": "cva6"}, "svadu"),
    ({**CVA6, "tlb_entries": 8, "tlb_ways": 2}, "tlb_ways"),
    ({**CVA6, "tlb_entries": 1, "tlb_ways": 1}, "tlb_entries"),
    ({**CVA6, "replacement": "fifo"}, "replacement"),
    ({**CVA6, "quirk_fill_after_inval": True}, "quirk_fill_after_inval"),
    ({"mmu": "rocket"}, "mmu"),
])
def test_config_rules(params, name):
    """A parameter CVA6's MMU does not have is refused, naming the parameter."""
    with pytest.raises(ValueError, match=name):
        MmuConfig(**params)


def test_icarus_refused():
    """CVA6 is Verilator only: asking Icarus for it is a ValueError before any build."""
    from cosim.build import check_simulator
    with pytest.raises(ValueError, match="Verilator only"):
        check_simulator(MmuConfig(**CVA6), "icarus")
    check_simulator(MmuConfig(**CVA6), "verilator")
    check_simulator(MmuConfig(), "icarus")


def test_our_hashes_unchanged():
    """The mmu field leaves the hashes (and cached builds) of our MMU's configurations as
    they were, and gives CVA6's a hash of their own."""
    assert MmuConfig().config_hash == "59bbc177b198"
    assert MmuConfig(**CVA6).config_hash != MmuConfig(svadu=False).config_hash


def test_sources_from_the_pinned_wheel():
    """Every SystemVerilog file comes from the installed wheel of the pinned version (and the
    wrapper from hdl/sv), none from the repository's own copy."""
    import pythondata_cpu_cva6 as pd

    from hdl.cva6 import PIN, WRAPPER, sources
    files = sources()
    assert pd.version_str == PIN
    assert files[-1] == WRAPPER
    assert all(str(f).startswith(pd.data_location) for f in files[:-1])
    assert {f.name for f in files} >= {"mmu.sv", "ptw.sv", "tlb.sv", "cf_math_pkg.sv"}


@pytest.mark.sim
def test_litmus_verdicts_per_mmu(capsys):
    """``--mmu both`` judges each litmus test on each MMU; a test declaring hardware A/D
    (``config svadu=true``) is reported not applicable on CVA6, not run and not passed."""
    from cosim.litmus.runner import main
    rc = main(["litmus/mprotect.litmus", "litmus/young_race.litmus", "--runs", "2",
               "--sim", "verilator", "--mmu", "both"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2 of 2 litmus tests passed on MMU ours" in out, out
    assert "1 of 1 litmus tests passed on MMU cva6 (1 not applicable)" in out, out
    assert "litmus/young_race.litmus: not applicable on MMU cva6: svadu=True" in out, out


def test_litmus_cva6_on_icarus_is_a_usage_error(capsys):
    from cosim.litmus.runner import main
    with pytest.raises(SystemExit) as exc:
        main(["litmus/mprotect.litmus", "--mmu", "cva6", "--sim", "icarus"])
    assert exc.value.code == 2
    assert "Verilator only" in capsys.readouterr().err
