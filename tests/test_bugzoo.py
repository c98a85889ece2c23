"""The bug zoo's table and a fast subset of its quirks (``make bugzoo`` runs them all)."""

import pytest

import cosim.bugzoo as zoo
from cosim.bugzoo import QUIRKS, Outcome, Quirk, format_table, run_quirk

SCHEDULER = [q for q in QUIRKS if q.kind == "scheduler"]


def test_every_quirk_of_the_project_has_a_scenario():
    assert zoo._unlisted_quirks() == []
    layers = {q.layer for q in QUIRKS}
    assert layers == {"hdl", "kernel", "devdriver"}
    for q in QUIRKS:
        if q.kind == "litmus":
            assert (zoo.LITMUS / q.scenario).exists(), q


@pytest.mark.parametrize("q", SCHEDULER, ids=[q.name for q in SCHEDULER])
def test_scheduler_quirks_detected_and_pass_when_off(q):
    o = run_quirk(q)
    assert o.detected, f"{q.name}: {o.detail}"
    assert o.off_passed, f"{q.name}: {o.detail}"
    assert o.checker in ("shadow", "frame", "tlb", "notifier", "rmap"), o.checker
    assert "sched steps" in o.after


def test_hardware_quirk_detected_on_the_rtl_with_cycles():
    q = next(q for q in QUIRKS if q.name == "quirk_fill_after_inval")
    o = run_quirk(q, runs=2)
    assert o.ok, o.detail
    assert o.checker == "litmus forbidden: r2 == 0"
    cycles = int(o.after.split()[0])
    assert cycles > 0 and o.after.endswith("cycles (icarus)")


def test_a_scenario_that_misses_its_quirk_is_reported():
    """Bad input: a scenario that never exercises the quirk must show as not detected."""
    q = Quirk("quirk_fill_after_inval", "hdl", "-", "remap_local.litmus", runs=2)
    o = run_quirk(q)
    assert not o.detected and o.off_passed and not o.ok
    assert "no forbidden outcome in 2 runs" in o.detail
    table = format_table([o])
    assert "remap_local.litmus" in table and " NO " in table


def test_table_and_exit_status(monkeypatch, capsys):
    qs = [Quirk("a_quirk", "kernel", "deadbeef", "x.litmus"),
          Quirk("b_quirk", "hdl", "erratum 7", "y.litmus")]
    table = format_table([Outcome(qs[0], True, "shadow", "12 cycles (icarus)", True),
                          Outcome(qs[1], False, "", "", False)])
    lines = table.splitlines()
    assert lines[0].split() == ["quirk", "layer", "reference", "scenario", "detected", "by",
                                "after", "quirk", "off", "co-simulation", "run"]
    assert lines[2].split() == ["a_quirk", "kernel", "deadbeef", "x.litmus", "yes", "shadow",
                                "12", "cycles", "(icarus)", "passes", "-"]
    assert lines[3].split()[-5:] == ["NO", "-", "-", "FAILS", "-"]
    # The co-simulation column comes from the scenario registry.
    from cosim.scenarios import QUIRK_SCENARIOS
    q = QUIRK_SCENARIOS["zap_flush_after_pte_unlock"]
    row = format_table([Outcome(Quirk(q.quirk, "kernel", "-", "z.litmus"), True, "shadow",
                                "1 cycles", True)]).splitlines()[2]
    assert row.split()[-3:] == [q.scenario, "seed", str(q.seed)]
    # A quirk of the project left out of the zoo fails `make bugzoo`.
    zap = next(q for q in QUIRKS if q.name == "zap_flush_after_pte_unlock")
    monkeypatch.setattr(zoo, "QUIRKS", [zap])
    assert zoo.main(["--only", "zap_flush_after_pte_unlock", "--no-cosim"]) == 1
    out = capsys.readouterr().out
    assert "quirks with no scenario in the zoo: quirk_plain_ad_write" in out
    assert zoo.main(["--only", "no_such_quirk"]) == 2       # a usage error, printed


def test_every_registered_checker_is_tripped_by_a_quirk_of_the_zoo():
    """No checker is without a quirk that makes it fail from outside: the checkers the
    scheduler rows name (run here) and those of the quirks' co-simulation runs
    (``QUIRK_SCENARIOS``, each run on the RTL by tests/test_cosim_scenarios.py) cover the
    registry, rmap completeness (e) and the notifier windows (d) included."""
    import cosim.scoreboard  # noqa: F401 - registers (s)
    from cosim.scenarios import QUIRK_SCENARIOS
    from pyrmap.checker_registry import CHECKERS
    by_rows = {run_quirk(q).checker for q in SCHEDULER}
    assert {"rmap", "notifier"} <= by_rows, by_rows
    tripped = by_rows | {c for q in QUIRK_SCENARIOS.values() for c in q.checkers}
    # The engine mutations are rows of the zoo too: a D bit lost by a zap trips (f).
    from cosim.mutate import MUTATIONS, run_mutation
    o = run_mutation(next(m for m in MUTATIONS if m.name == "zap_decision_from_read"))
    assert o.killed and o.by == "dirt", o
    tripped.add(o.by)
    assert set(CHECKERS) <= tripped, set(CHECKERS) - tripped


def test_rtl_cells_name_the_checker_and_the_cycle_or_why_not():
    row = {"detected": True, "off_passed": True, "checker": "tlb", "cycle": 1723, "ok": True}
    assert zoo.rtl_cell(row) == "tlb @ 1723" and zoo.rtl_cell(None) == "-"
    assert zoo.rtl_cell(dict(row, detected=False, checker=None, ok=False)) == "MISSED (passed)"
    assert zoo.rtl_cell(dict(row, off_passed=False, ok=False)) == "off FAILS"
    q = next(q for q in QUIRKS if q.name == "split_vma_keeps_pgoff")
    missed = Outcome(q, True, "rmap", "sequential", True,
                     rtl={"verilator": dict(row, detected=False, checker="shadow", ok=False)})
    assert not missed.ok
    lines = format_table([missed]).splitlines()
    assert lines[0].split()[-1] == "verilator" and lines[2].endswith("MISSED (shadow)")


@pytest.mark.sim
def test_a_row_caught_on_both_simulators_with_its_checker_and_cycle():
    """One row of the table on both simulators (``make bugzoo`` runs them all): checker (e)'s
    quirk fails its co-simulation run, named by (e) with the cycle of the violation, on
    Icarus and on Verilator, and the same seed passes with it off on both."""
    from cosim.scenarios import QUIRK_SCENARIOS
    q = next(q for q in QUIRKS if q.name == "split_vma_keeps_pgoff")
    o = run_quirk(q, sim=("icarus", "verilator"), cosim=True)
    assert o.ok, (o.detail, o.rtl)
    assert set(o.rtl) == {"icarus", "verilator"}
    for sim, row in o.rtl.items():
        assert row["checker"] == "rmap" and row["cycle"] > 0, (sim, row)
        assert row["seed"] == QUIRK_SCENARIOS[q.name].seed and row["sim"] == sim
    table = format_table([o]).splitlines()
    assert table[0].split()[-2:] == ["icarus", "verilator"]
    assert table[2].split()[-6:] == ["rmap", "@", str(o.rtl["icarus"]["cycle"]),
                                     "rmap", "@", str(o.rtl["verilator"]["cycle"])]


def test_mutation_rows_name_the_checker_and_the_steps():
    """The engine mutations are rows of the zoo's table: the checker that killed each, the
    program steps it took, and the unmutated engine's fuzz as their "quirk off"."""
    from cosim.mutate import MutantOutcome
    killed = MutantOutcome("zap_decision_from_read", True, "dirt", 4, 7, 127, "fuzz")
    survived = MutantOutcome("cow_flush_after_unlock", False, steps_run=480)
    control = MutantOutcome("unmutated", False, steps_run=480)
    lines = format_table([], [killed, survived], control).splitlines()
    assert lines[2].split()[:2] == ["zap_decision_from_read", "mutation"]
    assert "PTE read before its atomic clear" in lines[2]
    assert lines[2].split()[-2:] == ["passes", "-"]
    assert " dirt " in lines[2] and "127 program steps (seed 4, step 7)" in lines[2]
    assert " NO " in lines[3] and "passes" in lines[3]
    broken = MutantOutcome("unmutated", True, "tlb", 0, 3, 3, "fuzz")
    assert "FAILS" in format_table([], [killed], broken).splitlines()[2]


def test_rows_that_cannot_run_on_cva6_say_why():
    """A row whose co-simulation run cannot be built on CVA6's MMU is not run there, and its
    cell gives the configuration's reason: our hardware quirks are switches of our RTL, and
    the lost dirty bit of ``nonatomic_ptep_get_and_clear`` needs a walker that sets D (CVA6
    is Svade).  The same rows apply on our MMU."""
    from cosim.scenarios import QUIRK_SCENARIOS, quirk_outcome
    for name, why in (("nonatomic_ptep_get_and_clear", "CVA6 sets no A/D bits in hardware"),
                      ("quirk_inval_clear_late", "switches of our MMU")):
        assert QUIRK_SCENARIOS[name].not_applicable("ours") is None
        row = quirk_outcome(name, "verilator", mmu="cva6")
        assert row["ok"] and not row["detected"] and why in row["not_applicable"], row
        assert zoo.rtl_cell(row).startswith("n/a: ") and why in zoo.rtl_cell(row)
    assert QUIRK_SCENARIOS["zap_flush_after_pte_unlock"].not_applicable("cva6") is None
    with pytest.raises(ValueError, match="does not apply to mmu='cva6'"):
        from cosim.scenarios import run_quirk as run_scenario_quirk
        run_scenario_quirk("nonatomic_ptep_get_and_clear", "verilator", mmu="cva6")


@pytest.mark.sim
def test_a_kernel_row_caught_on_cva6_with_its_checker_and_cycle():
    """A kernel row of the zoo on CVA6's MMU (Verilator): ``notifier_release_unlink_first``
    fails its co-simulation run on CVA6, named by its checker with the cycle, and the same
    seed passes with the quirk off; the table has a ``cva6`` column."""
    q = next(q for q in QUIRKS if q.name == "notifier_release_unlink_first")
    o = run_quirk(q, sim="verilator", cosim=True, mmus=("cva6",))
    assert o.ok, (o.detail, o.rtl)
    row = o.rtl["cva6"]
    assert set(o.rtl) == {"cva6"} and row["mmu"] == "cva6", o.rtl
    assert row["checker"] in ("tlb", "frame") and row["cycle"] > 0, row
    assert "--config mmu=cva6,svadu=False" in row["command"], row["command"]
    table = format_table([o]).splitlines()
    assert table[0].split()[-1] == "cva6"
    assert table[2].split()[-3:] == [row["checker"], "@", str(row["cycle"])]
