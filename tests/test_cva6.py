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


def test_ptw_state_names_match_the_pinned_sources():
    """cosim.cva6.PTW_STATES (the names tb_inval gives CVA6's walker states) are the enum of
    ``state_q`` in the pinned wheel's ptw.sv, in order."""
    import re

    from cosim.cva6 import PTW_STATES
    from hdl.cva6 import sources
    ptw = next(f for f in sources() if f.name == "ptw.sv").read_text()
    m = re.search(r"enum\s+logic\s*\[2:0\]\s*\{([^}]*)\}\s*state_q", ptw)
    assert m, "ptw.sv has no state_q enum"
    names = tuple(re.sub(r"//[^\n]*", "", m.group(1)).replace(",", " ").split())
    assert names == PTW_STATES, names


#: What each MMU answers in cosim.tb.tb_cva6.test_mxr_canonical, as (fault, hit, walker
#: reads, the scoreboard's violation kinds); docs/cva6.md tabulates it beside the spec.
MXR_CANONICAL = {
    "ours": {
        "x_only_load_mxr1_walk": ("NONE", False, 3, []),
        "x_only_load_mxr0_hit": ("PAGE", False, 3, []),
        "x_only_load_mxr0_walk": ("PAGE", False, 3, []),
        "canonical_load_walk": ("NONE", False, 3, []),
        "non_canonical_load_hit": ("PAGE", False, 0, []),
        "non_canonical_load_walk": ("PAGE", False, 0, []),
        "non_canonical_fetch_walk": ("PAGE", False, 0, []),
    },
    "cva6": {
        "x_only_load_mxr1_walk": ("NONE", False, 3, []),
        "x_only_load_mxr0_hit": ("NONE", True, 0, ["stale_hit"]),
        "x_only_load_mxr0_walk": ("PAGE", False, 3, []),
        "canonical_load_walk": ("NONE", False, 3, []),
        "non_canonical_load_hit": ("NONE", True, 0, ["stale_hit"]),
        "non_canonical_load_walk": ("NONE", False, 3, ["walk_mismatch"]),
        "non_canonical_fetch_walk": ("ACCESS", False, 3, ["walk_mismatch"]),
    },
}


@pytest.mark.sim
@pytest.mark.parametrize("mmu", ["ours", "cva6"])
def test_mxr_and_non_canonical(mmu, rtl_opts):
    """Loads of an execute-only page with MXR set then clear, and accesses at non-canonical
    addresses, on each MMU (Verilator, Svade): each answers as docs/cva6.md says, and the
    golden-walk scoreboard reports exactly CVA6's departures from the spec (a load served
    from an X-only entry with MXR clear; a non-canonical load translated by its low 39 bits,
    from a hit or a walk; a non-canonical fetch that walks and answers ACCESS)."""
    from cosim.build import make_config, run
    from hdl.config import mmu_params
    r = run(make_config(**{"svadu": False, **mmu_params(mmu)}), "verilator", "cosim.tb.tb_cva6",
            seed=1 + rtl_opts["seed"], testcase="test_mxr_canonical", waves=rtl_opts["waves"])
    assert r.passed, _explain(r)
    rep = r.report["mxr_canonical"]
    assert rep["mmu"] == mmu
    got = {name: (c["fault"], c["hit"], c["walker_reads"], c["scoreboard"])
           for name, c in rep["cases"].items()}
    assert got == MXR_CANONICAL[mmu], rep["cases"]


@pytest.mark.sim
def test_litmus_scoreboard_judges_cva6_by_its_choices():
    """The litmus runs' golden-walk scoreboard takes the run's MMU: on CVA6 a walk stopped by
    a shootdown and walked again from the root (``aborts_walks``) is CVA6's choice, not a
    walk mismatch (ad_cas_remap, seed 4: a load's walk cut after its second read)."""
    from cosim.litmus.runner import MMU_CONFIG, format_result, run_files
    r = run_files(["litmus/ad_cas_remap.litmus"], runs=1, seed=4, sim="verilator",
                  arbitration="round_robin", config=MMU_CONFIG["cva6"])[0]
    assert r.passed, format_result(r)
    assert r.config["mmu"] == "cva6"
