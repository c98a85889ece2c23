"""The invalidation guarantee on the RTL (Icarus and Verilator), cycle by cycle.

:mod:`cosim.tb.tb_inval` holds a request on core 0's port and on the device's port in every
cycle while an invalidation lands at every offset (before the request, on every state of a walk
in flight, on hits, in the ack cycle, after it), and compares every response with the golden
model: from the ack cycle on, a response must be the walk of the PTEs as changed.  The two
hardware quirks that break the guarantee must fail it; the correct design passes.

Budget: the quick sweep (~210 CPU scenarios and 8 device scenarios) on the default build of each
simulator, and one Icarus build per quirk; the full sweep and the Verilator quirk builds are
``slow``.
"""

from __future__ import annotations

import pytest

TB = "cosim.tb.tb_inval"
SIMS = ("icarus", "verilator")


def _run(sim, rtl_opts, env=None, **params):
    from cosim.build import make_config, run
    return run(make_config(**params), sim, TB, seed=1 + rtl_opts["seed"],
               testcase="test_inval_timing", env=env or {}, waves=rtl_opts["waves"])


def _part(r) -> dict:
    return (r.report or {}).get("test_inval_timing", {})


def _explain(r) -> str:
    part = _part(r)
    lines = [f"seed {r.seed}; reproduce with: {r.command}", f"run directory: {r.test_dir}"]
    lines += r.failures + [v[:600] for v in part.get("violations", [])[:8]]
    if not part:
        lines.append(r.log_tail(3000))
    return "\n".join(lines)


def _check_passed(r):
    assert r.passed, _explain(r)
    part = _part(r)
    assert part["where_missing"] == [], part["where"]
    # an invalidation landed in every state of the walker FSM (but the quirks' own) and of the
    # core FSM, by name; none in a state only a quirk enters
    walker = part["walker_states"]
    assert part["walker_states_missing"] == [], walker
    assert {"READ", "READ_WAIT", "CHECK", "CAS", "CAS_WAIT", "DONE", "IDLE"} <= set(walker)
    assert not {"REREAD", "REREAD_WAIT", "WRITE", "WRITE_WAIT"} & set(walker), walker
    assert set(part["core_states"]) == {"IDLE", "WALK_START", "WALK"}, part["core_states"]
    stats = part["stats"]
    assert stats["cpu_scenarios"] == part["scenarios"], stats
    assert stats["judged_after_ack"] >= 3 * part["scenarios"], stats
    assert stats["dev_judged_after_ack"] > 0, stats


@pytest.mark.sim
@pytest.mark.parametrize("sim", SIMS)
def test_inval_timing(sim, rtl_opts):
    """Every response from the ack cycle on equals the golden walk of the changed PTEs."""
    _check_passed(_run(sim, rtl_opts))


QUIRKS = [
    ("quirk_inval_clear_late", {"after_ack", "stale_hit", "dev_after_ack"}),
    ("quirk_walk_answer_after_inval", {"after_ack", "stale_response"}),
]


@pytest.mark.sim
@pytest.mark.parametrize("sim", [
    "icarus",
    pytest.param("verilator", marks=pytest.mark.slow),   # a Verilator build per quirk
])
@pytest.mark.parametrize("quirk,kinds", QUIRKS, ids=[q for q, _ in QUIRKS])
def test_inval_timing_kills_quirk(quirk, kinds, sim, rtl_opts):
    """Each design that breaks the guarantee fails the sweep, with the expected checkers."""
    bad = _run(sim, rtl_opts, **{quirk: True})
    assert not bad.passed, f"{quirk} was not caught:\n" + _explain(bad)
    got = set(_part(bad).get("violation_kinds", []))
    assert kinds <= got, f"{quirk}: expected {sorted(kinds)}, got {sorted(got)}\n" + _explain(bad)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMS)
def test_inval_timing_full(sim, rtl_opts):
    """Six latencies x every change x every invalidation kind x every offset."""
    _check_passed(_run(sim, rtl_opts, env={"COSIM_INVAL_SWEEP": "full"}))


@pytest.mark.sim
@pytest.mark.parametrize("mmu", ["ours", "cva6"])
def test_inval_timing_svade(mmu, rtl_opts):
    """The quick sweep on a Svade configuration, ours and CVA6's MMU (Verilator): every
    response from the ack cycle on equals the Svade golden walk of the changed PTEs, the
    scoreboard judging each MMU by its own choices.  An invalidation lands in every walker
    state but those a correct Svade sweep cannot reach (ours: the quirks' and the CAS states;
    CVA6's ptw.sv: the access-error state and WAIT_RVALID, which only a flush enters), on
    walks (every level), hits and idle; none on a CAS (none is made)."""
    from hdl.config import mmu_params
    params = {"svadu": False, **mmu_params(mmu)}
    r = _run("verilator", rtl_opts, **params)
    assert r.passed, _explain(r)
    part = _part(r)
    assert (part["mmu"], part["svadu"]) == (mmu, False), part
    assert part["where_missing"] == [] and "cas" not in part["where"], part["where"]
    assert {"read L2", "read L1", "read L0", "hit", "idle"} <= set(part["where"]), part["where"]
    walker = part["walker_states"]
    assert part["walker_states_missing"] == [], walker
    if mmu == "cva6":
        assert {"IDLE", "WAIT_GRANT", "PTE_LOOKUP", "PROPAGATE_ERROR"} <= set(walker), walker
        assert part["core_states"] == {}, part["core_states"]
    else:
        assert not {"CAS", "CAS_WAIT"} & set(walker), walker
        assert set(part["core_states"]) == {"IDLE", "WALK_START", "WALK"}
    stats = part["stats"]
    assert stats["cpu_scenarios"] == part["scenarios"], stats
    assert stats["judged_after_ack"] >= 3 * part["scenarios"], stats
    assert stats["dev_judged_after_ack"] > 0, stats
