"""No vacuous PASS: a checker that made no check says "not exercised"; a run with a quirk on
whose checker made no check fails; every command shown to catch a quirk (README, ``list``)
is the one the quirk table runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyrmap.checkers import NOT_EXERCISED, Checkers
from pyrmap.kernel import Kernel
from pyrmap.physmem import PhysMem
from pyrmap.softarch import SoftArch

ROOT = Path(__file__).resolve().parent.parent


def _bundle() -> Checkers:
    return Checkers(Kernel(SoftArch(PhysMem(16), 2)), raise_on_violation=False)


def test_a_checker_without_checks_is_not_exercised_not_pass():
    chk = _bundle()
    assert {v[3] for v in chk.verdicts()} == {NOT_EXERCISED}
    assert sorted(chk.not_exercised()) == sorted(c.name for c in chk.all)
    chk.notifier.check()                    # no live mm: still nothing looked at
    assert chk.notifier.verdict == NOT_EXERCISED
    chk.shadow.checks += 1
    assert chk.shadow.verdict == "PASS" and "shadow" not in chk.not_exercised()
    chk.frame.fail("a violation is a check too")
    assert chk.frame.verdict == "FAIL" and chk.frame.exercised


def test_unexercised_quirk_lines_name_the_checker_and_the_scenario():
    from cosim.scenarios import unexercised_quirks
    rows = [{"name": n, "checks": 0, "violations": 0, "verdict": NOT_EXERCISED}
            for n in ("tlb", "frame", "shadow", "notifier", "rmap")]
    lines = unexercised_quirks({"checkers": rows}, ["nonatomic_ptep_get_and_clear"])
    assert len(lines) == 1
    assert "(c) no lost write" in lines[0] and "not exercised" in lines[0]
    assert "python -m cosim run dirty_race --seed 1 --quirk nonatomic_ptep_get_and_clear" \
        in lines[0]
    rows[2]["checks"] = 3
    assert unexercised_quirks({"checkers": rows}, ["nonatomic_ptep_get_and_clear"]) == []
    # A hardware quirk named without its prefix is found too; "also" checkers count.
    rows[2]["checks"] = 0
    rows[1]["checks"] = 1
    assert unexercised_quirks({"checkers": rows}, ["plain_ad_write"]) == []


@pytest.mark.sim
def test_a_quirk_run_whose_checker_made_no_check_fails():
    """One iteration of dirty_race never reaches the backing-store comparison: the run must
    not end OK with "(c) ... PASS"."""
    r = subprocess.run([sys.executable, "-m", "cosim", "run", "dirty_race", "--sim", "icarus",
                        "--seed", "1", "--steps", "1", "--quiet", "--quirk",
                        "nonatomic_ptep_get_and_clear"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert re.search(r"\(c\) no lost write\s+0 checks  not exercised", out), out
    assert "quirk nonatomic_ptep_get_and_clear is caught by (c) no lost write" in out, out
    assert "\nFAILED in" in out and "\nOK in" not in out, out


def _shown_quirk_commands(text: str) -> list[tuple[str, int, str]]:
    out = []
    for line in text.splitlines():
        m = re.search(r"(?:python -m cosim|rmap-cosim) run (\w+)(.*)", line)
        if not m or "--quirk" not in m.group(2):
            continue
        seed = re.search(r"--seed (\d+)", m.group(2))
        quirk = re.search(r"--quirk (\w+)", m.group(2))
        out.append((m.group(1), int(seed.group(1)) if seed else 1, quirk.group(1)))
    return out


def test_every_quirk_command_shown_is_the_one_the_quirk_table_proves():
    """The README's and ``list``'s quirk commands are rows of QUIRK_SCENARIOS (each of which
    tests/test_cosim_scenarios.py runs on the RTL and sees fail), and the CLI runs them with
    the very knobs the table's run uses."""
    import io

    from cosim.cli import list_all, parse_args
    from cosim.scenarios import QUIRK_SCENARIOS
    buf = io.StringIO()
    list_all(buf)
    shown = _shown_quirk_commands((ROOT / "README.md").read_text())
    assert shown, "the README shows no quirk run"
    listed = _shown_quirk_commands(buf.getvalue())
    assert {q for _, _, q in listed} == set(QUIRK_SCENARIOS)
    for scenario, seed, quirk in shown + listed:
        q = QUIRK_SCENARIOS.get(quirk) or QUIRK_SCENARIOS.get(f"quirk_{quirk}")
        assert q is not None, quirk
        assert (scenario, seed) == (q.scenario, q.seed), (scenario, seed, quirk)
        a = parse_args(["run", scenario, "--seed", str(seed), "--quirk", quirk])
        env, _ = q.params(True)
        for key, value in env.items():
            if key != "COSIM_QUIRKS":
                assert str(a.env[key]) == str(value), (quirk, key, a.env[key], value)


@pytest.mark.sim
def test_every_quirk_command_of_the_readme_fails_as_written():
    """The README's quirk commands, run as written (on Icarus, quiet): each exits 1, FAILED,
    with the violation named by one of the quirk's checkers.  (``list``'s commands are the
    rows of QUIRK_SCENARIOS, each run with its quirk on and off by
    tests/test_cosim_scenarios.py with the knobs the CLI gives it, checked above.)"""
    from cosim.scenarios import QUIRK_SCENARIOS
    shown = _shown_quirk_commands((ROOT / "README.md").read_text())
    assert shown
    for scenario, seed, quirk in shown:
        q = QUIRK_SCENARIOS.get(quirk) or QUIRK_SCENARIOS[f"quirk_{quirk}"]
        r = subprocess.run([sys.executable, "-m", "cosim", "run", scenario, "--sim", "icarus",
                            "--seed", str(seed), "--quirk", quirk, "--quiet"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
        out = r.stdout
        assert r.returncode == 1 and "\nFAILED in" in out, out + r.stderr
        named = re.search(r"^\s*\[(\w+)\] ", out, re.M)
        assert named and named.group(1) in q.checkers, out
