"""Engine mutation testing (cosim.mutate): every mutation applies to the engine as it is, a
mutant runs on a patched copy of pyrmap (never the live one) and the default fuzz kills it."""

import pathlib
import shutil

import pytest

from cosim.mutate import (MUTATIONS, OPEN_MUTATIONS, Mutation, apply_mutation,
                          format_mutations, main, run_mutation)


def test_at_least_twelve_mutations_of_the_kinds_that_caused_real_bugs():
    assert len(MUTATIONS) >= 12
    names = [m.name for m in MUTATIONS + OPEN_MUTATIONS]
    assert len(set(names)) == len(names)
    kinds = {m.kind for m in MUTATIONS}
    for kind in ("flush moved after a lock drop", "flush skipped", "notifier call dropped",
                 "dirty bit taken from the wrong value"):
        assert kind in kinds, kind


def test_every_mutation_is_registered_as_killed():
    """The mutations the default fuzz did not kill were moved into MUTATIONS once stimulus
    and checkers killed them; none is left open."""
    assert OPEN_MUTATIONS == []
    names = {m.name for m in MUTATIONS}
    assert {"cow_flush_after_unlock", "zap_decision_from_read",
            "unmap_decision_from_read"} <= names


def test_the_unmutated_engine_survives_the_default_fuzz_it_is_the_control():
    o = run_mutation(None, seeds=(0,), steps=8)
    assert o.name == "unmutated" and not o.killed and o.steps_run == 8, o


def test_every_mutation_applies_once_to_the_engine_and_changes_it(tmp_path):
    src = pathlib.Path(__file__).resolve().parent.parent / "pyrmap"
    for m in MUTATIONS + OPEN_MUTATIONS:
        root = tmp_path / m.name
        shutil.copytree(src, root / "pyrmap", ignore=shutil.ignore_patterns("__pycache__"))
        before = (root / "pyrmap" / m.file).read_text()
        apply_mutation(m, root)
        after = (root / "pyrmap" / m.file).read_text()
        assert after != before, m.name
        compile(after, m.file, "exec")


def test_a_mutation_whose_text_is_gone_says_so(tmp_path):
    (tmp_path / "pyrmap").mkdir()
    (tmp_path / "pyrmap" / "rmap.py").write_text("nothing to see\n")
    m = Mutation("gone", "flush skipped", "rmap.py", "flush()\n", "pass\n", "")
    with pytest.raises(ValueError, match=r"Mutation 'gone': its text occurs 0 times in "
                                         r"pyrmap/rmap.py, not once"):
        apply_mutation(m, tmp_path)


def test_a_mutant_is_killed_by_the_default_fuzz_and_the_table_says_by_what():
    """fork without its flush: checker (a) sees the parent's writable TLB entry at fork's
    return in seed 0 (the mutant runs in its own interpreter on a copy)."""
    m = next(m for m in MUTATIONS if m.name == "fork_flush_dropped")
    o = run_mutation(m, seeds=(0,))
    assert o.killed and o.by == "tlb" and o.seed == 0 and o.stage == "fuzz", o
    assert o.step is not None and o.steps_run == o.step
    table = format_mutations([o])
    assert "fork_flush_dropped" in table and "KILLED" in table
    assert "1 of 1 mutants killed" in table


def test_cli_refuses_bad_flags(capsys):
    assert main(["--jobs", "0"]) == 2
    assert main(["--only", "nosuch"]) == 2
    assert main(["--json", "/nonexistent-dir/x.json"]) == 2


@pytest.mark.slow
def test_every_mutation_is_killed_by_the_default_fuzz():
    outcomes = [run_mutation(m) for m in MUTATIONS]
    assert all(o.killed for o in outcomes), format_mutations(outcomes)
