"""Kernel profiles (pyrmap.profiles): parsing, the fixes of each profile, each fix's quirk
flipping with the profile, and the 2008 profile showing each historical bug's symptom."""

import dataclasses
import subprocess
import sys

import pytest

from pyrmap import profiles
from pyrmap.checkers import InvariantViolation
from pyrmap.kernel import Quirks
from pyrmap.profiles import FIXES, PROFILES, get_profile, kernel_quirks
from pyrmap.scenario import System

#: The fixes of the ``fixed`` profile, in the order they landed upstream.
COMMITS = ["479db0bf408e", "d9d332e0874f", "3ad3d901bbcf", "1cf35d47712d", "5df397dec7c4"]


def test_fixed_lists_its_fixes_by_commit_in_order():
    assert list(FIXES) == COMMITS
    assert PROFILES["fixed"].fixes == tuple(COMMITS)
    assert PROFILES["2008"].fixes == ()
    assert profiles.DEFAULT_PROFILE == "fixed"
    assert get_profile("fixed").describe() == "fixed (fixes " + ", ".join(COMMITS) + ")"
    assert get_profile("2008").describe() == "2008 (the seed, no later fix)"


def test_every_fix_maps_onto_one_quirk_switch():
    fields = {f.name for f in dataclasses.fields(Quirks)}
    quirks = [fix.quirk for fix in FIXES.values()]
    assert len(set(quirks)) == len(quirks) and set(quirks) <= fields
    assert "nonatomic_ptep_get_and_clear" not in quirks      # not a later fix: x86 had xchg


@pytest.mark.parametrize("commit", COMMITS)
def test_each_fix_quirk_flips_with_the_profile(commit):
    quirk = FIXES[commit].quirk
    assert getattr(kernel_quirks("2008"), quirk) is True
    assert getattr(kernel_quirks("fixed"), quirk) is False
    assert getattr(System(seed=0, nframes=16, kernel="2008").kernel.quirks, quirk) is True
    assert getattr(System(seed=0, nframes=16).kernel.quirks, quirk) is False


def test_named_quirks_add_to_the_profile():
    q = kernel_quirks("fixed", ["zap_rmap_before_flush"])
    assert q.enabled() == ["zap_rmap_before_flush"]
    assert set(kernel_quirks("2008", ["nonatomic_ptep_get_and_clear"]).enabled()) == \
        {fix.quirk for fix in FIXES.values()} | {"nonatomic_ptep_get_and_clear"}
    assert System(seed=0, nframes=16, kernel="2008").profile.name == "2008"


@pytest.mark.parametrize("bad", ["1999", "", "Fixed", None])
def test_unknown_profile_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match=r"^unknown kernel profile .*; known: 2008, fixed$"):
        get_profile(bad)
    with pytest.raises(ValueError, match="unknown kernel profile"):
        System(seed=0, nframes=16, kernel=bad)


def test_unknown_quirk_over_a_profile():
    with pytest.raises(ValueError, match=r"^unknown quirk 'bogus'; known: "):
        kernel_quirks("2008", ["bogus"])


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "pyrmap", "fuzz", "--seed", "1", "--kernel", "1999"],
    [sys.executable, "-m", "pyrmap", "demo", "--kernel", "new"],
    [sys.executable, "-m", "cosim", "run", "reclaim", "--kernel", "1999"],
    [sys.executable, "-m", "cosim", "demo", "--kernel", "2022"],
    [sys.executable, "-m", "cosim", "litmus", "litmus/mp.litmus", "--kernel", "x"],
])
def test_bad_kernel_flag_exits_2_with_one_line(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "argument --kernel: unknown kernel profile" in lines[0], r.stderr
    assert "known: 2008, fixed" in lines[0]


def test_fuzz_and_demo_name_the_profile():
    r = subprocess.run([sys.executable, "-m", "pyrmap", "fuzz", "--seed", "2", "--steps", "2",
                        "--kernel", "2008"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "kernel 2008 (the seed, no later fix)"
    assert "OK: 2 steps on kernel 2008 (the seed, no later fix)" in r.stdout
    import io

    from pyrmap.demo import run_demo
    out = io.StringIO()
    run_demo(1, phases=1, accesses=10, out=out)
    assert "kernel fixed (fixes " + ", ".join(COMMITS) + ")" in out.getvalue()


def test_cosim_run_names_the_profile_and_passes_its_quirks():
    from cosim.cli import format_report, parse_args
    a = parse_args(["run", "zap_race", "--kernel", "2008", "--quirk",
                    "nonatomic_ptep_get_and_clear"])
    assert a.kernel == "2008" and "--kernel 2008" in a.command
    assert a.env["COSIM_KERNEL"] == "2008"
    assert set(a.env["COSIM_QUIRKS"].split(",")) == \
        {fix.quirk for fix in FIXES.values()} | {"nonatomic_ptep_get_and_clear"}
    assert a.quirks == ["nonatomic_ptep_get_and_clear"]       # the named ones, as given
    d = parse_args(["run", "zap_race"])
    assert d.kernel == "fixed" and d.env["COSIM_QUIRKS"] == "" and "--kernel" not in d.command
    text = format_report({"kernel_profile": get_profile("2008").as_dict()})
    assert "kernel 2008 (the seed, no later fix)" in text


# --- the 2008 profile runs the seed's behaviour -------------------------------------------------

def test_2008_links_a_new_anon_vma_without_its_lock():
    """d9d332e0874f: the fixed anon_vma_prepare takes a new anon_vma's lock and the pte
    lock; 2008 takes only the pte lock (lockdep checks one lock fewer)."""
    from pyrmap.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, Vma
    from pyrmap.rmap import anon_vma_prepare
    taken = {}
    for profile in ("fixed", "2008"):
        s = System(seed=0, nframes=16, kernel=profile)
        mm = s.new_process()
        vma = Vma(mm, 0x1000_0000, 0x1000_1000, VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE,
                  0x1000_0, None)
        lockdep = s.arch.lockdep
        before = lockdep.checks
        assert anon_vma_prepare(vma) == 0 and vma in vma.anon_vma.head
        taken[profile] = lockdep.checks - before
    assert taken == {"fixed": 2, "2008": 1}
    from pyrmap.kernel import no_symptom_quirks
    assert list(no_symptom_quirks()) == ["anon_vma_prepare_unlocked"]


def _races():
    from pyrmap import quirk_races as qr
    return {"479db0bf408e": qr.lockless_race, "3ad3d901bbcf": qr.release_race,
            "1cf35d47712d": qr.zap_race, "5df397dec7c4": qr.zap_rmap_race}


@pytest.mark.parametrize("commit", ["479db0bf408e", "3ad3d901bbcf", "1cf35d47712d",
                                    "5df397dec7c4"])
def test_2008_shows_each_bug_on_its_race_and_fixed_does_not(commit):
    """Each race run with the whole 2008 profile (every fix off) shows its bug's symptom for
    some seed, and that seed passes on the fixed kernel."""
    race = _races()[commit]
    for seed in range(40):
        try:
            race(seed, True, profile="2008")
        except InvariantViolation as exc:
            assert exc.checker in ("tlb", "shadow", "frame"), exc
            race(seed, False)
            return
    pytest.fail(f"the 2008 kernel never showed {commit}'s bug on {race.__name__}")


# --- 5df397dec7c4 on the RTL ------------------------------------------------------------------

@pytest.mark.sim
def test_zap_order_quirk_caught_at_cycle_level_on_verilator():
    """The 2008 zap order (page_remove_rmap before the flush) is caught by checker (a) at a
    cycle of the zap_race sweep on Verilator, with the whole 2008 profile too; the fixed
    kernel passes every offset of the same seed."""
    from cosim.scenarios import QUIRK_SCENARIOS, run_scenario, violation_checker
    q = QUIRK_SCENARIOS["zap_rmap_before_flush"]
    assert q.scenario == "zap_race" and q.checker == "tlb"
    env, hdl = q.params(True)
    on = run_scenario("zap_race", "verilator", seed=q.seed, env=env, hdl=hdl, tag="5df")
    assert not on.passed and violation_checker(on.report) == "tlb", on.report
    v = on.report["violation"]
    assert "at cycle" in v and "page_mkclean of" in v and "map=0" in v, v
    old = run_scenario("zap_race", "verilator", seed=q.seed, hdl=hdl, tag="2008",
                       env=dict(env, COSIM_QUIRKS=",".join(profiles.profile_quirks("2008")),
                                COSIM_KERNEL="2008"))
    assert not old.passed and violation_checker(old.report) == "tlb", old.report
    assert old.report["kernel_profile"]["profile"] == "2008"
    off = run_scenario("zap_race", "verilator", seed=q.seed, hdl=hdl, tag="fixed")
    assert off.passed, off.report and off.report.get("violation")
    assert off.report["iterations"] == 64
    assert off.report["kernel_profile"] == {"profile": "fixed", "fixes": COMMITS, "quirks": []}
