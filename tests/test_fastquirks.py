"""Every quirk the step path catches, the fast path catches too (or the bug zoo says why it
cannot): the zoo's rows carry their fast-path run (:mod:`cosim.fastquirks`), and each runs here
with the quirk on (its checker must name the violation) and off (every checker must pass).
A few representative rows run in the default suite, the rest under ``slow``; the notifier
pairs (d) and rmap completeness (e), judged at the fast path's quiescent points, each fail on
a bad engine."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from cosim.bugzoo import FAST_COLUMN, QUIRKS, Outcome, fast_row, format_table
from cosim.fastquirks import INVAL_WINDOWS, FastCatch, NotOnFastPath, fast_quirk_outcome, main

FAST = [q for q in QUIRKS if isinstance(q.fast, FastCatch)]
#: In the default suite: a hardware quirk (a walker's plain A/D write resurrecting a PTE), a
#: walk in flight across an unmapping flush answering after it (the race-seeking knobs), a
#: kernel race caught by checker (a) at page_mkclean's return, the rmap row (checker (e)) and
#: a device driver's fill inside an open invalidation window (checker (d)).
#: The race-seeking kernel step's row runs in the default suite through
#: test_the_race_step_reaches_the_non_atomic_window.
DEFAULT = ("quirk_plain_ad_write", "quirk_walk_answer_after_inval",
           "page_check_address_lockless", "split_vma_keeps_pgoff", "no_count_check")


def test_every_zoo_row_says_how_the_fast_path_catches_it_or_why_not():
    import cosim.scoreboard  # noqa: F401 - registers the scoreboard
    from pyrmap.checker_registry import CHECKERS
    for q in QUIRKS:
        assert isinstance(q.fast, (FastCatch, NotOnFastPath)), q.name
        if isinstance(q.fast, NotOnFastPath):
            assert len(q.fast.reason) > 20 and ": " not in q.fast.reason, q
        else:
            assert set(q.fast.checkers) <= set(CHECKERS), q
    assert set(DEFAULT) <= {q.name for q in FAST}
    # every layer the fast path can reach has rows on it
    assert {q.layer for q in FAST} == {"hdl", "kernel", "devdriver"}
    assert {q.fast.checker for q in FAST} >= {"tlb", "frame", "rmap", "notifier", "dirt"}


def test_the_zoo_table_has_the_fast_path_column():
    na = next(q for q in QUIRKS if isinstance(q.fast, NotOnFastPath))
    row = fast_row(na)
    assert row["not_applicable"] and row["ok"]
    caught = FAST[0]
    o_na = Outcome(na, True, "tlb", "1 sched steps", True, rtl={FAST_COLUMN: row})
    o_ok = Outcome(caught, True, "tlb", "1 cycles", True, rtl={FAST_COLUMN: {
        "detected": True, "off_passed": True, "checker": "tlb", "cycle": 4242, "ok": True}})
    o_missed = Outcome(caught, True, "tlb", "1 cycles", True, rtl={FAST_COLUMN: {
        "detected": False, "off_passed": True, "checker": None, "cycle": None, "ok": False}})
    lines = format_table([o_na, o_ok, o_missed]).splitlines()
    assert lines[0].rstrip().endswith("fast path")
    assert lines[2].rstrip().endswith(f"n/a: {na.fast.reason}")
    assert lines[3].rstrip().endswith("tlb @ 4242")
    assert lines[4].rstrip().endswith("MISSED (passed)")
    assert not o_missed.ok and o_ok.ok and o_na.ok


@pytest.mark.sim
@pytest.mark.parametrize("q", [pytest.param(q, marks=() if q.name in DEFAULT else
                                            pytest.mark.slow) for q in FAST],
                         ids=[q.name for q in FAST])
def test_the_fast_path_catches_the_quirk(q):
    row = fast_quirk_outcome(q)
    assert row["detected"], (f"{q.name} not caught on the fast path by {q.fast.checkers}: "
                             f"{row['checker']} {row['violation']} ({row['command']})")
    assert row["off_passed"], f"{q.name}: the same run fails with the quirk off"
    assert row["cycle"] and row["cycle"] > 0
    assert set(row["inval_windows"]) == set(INVAL_WINDOWS)


def test_the_seed_sweep_command_refuses_a_quirk_it_cannot_run(capsys):
    na = next(q for q in QUIRKS if isinstance(q.fast, NotOnFastPath))
    assert main([na.name]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.sim
def test_the_race_step_reaches_the_non_atomic_window():
    """The race-seeking kernel step (``FAST_OPS=race``) catches nonatomic_ptep_get_and_clear
    (its zoo row, quirk on and off): it gets a walker's D update between the kernel's read
    and its write of a PTE with the quirk on, and the fixed kernel, which clears a present
    PTE only by exchange, makes no such read-then-write at all."""
    q = next(q for q in QUIRKS if q.name == "nonatomic_ptep_get_and_clear")
    assert q.fast.env["FAST_OPS"] == "race"
    row = fast_quirk_outcome(q)
    assert row["detected"] and row["off_passed"], row
    assert row["windows"].get("rw_landed_d", 0) >= 1, row
    assert row["windows"]["rw_writable_clean"] >= row["windows"]["rw_landed_d"], row
    assert not row["windows_off"].get("rw"), row


@pytest.mark.sim
def test_notifier_pairs_fail_on_a_range_end_without_its_start(tmp_path):
    """Checker (d) on the fast path: the engine mutation that drops invalidate_range_start
    (a copy of pyrmap, first on the path of a process that runs the fast path, so of its
    simulator too) fails it at the first range operation of a kernel step; the unmutated
    engine passes every checker with the same run (the quirk rows' baseline)."""
    import json
    import subprocess

    from cosim.build import ROOT
    from cosim.mutate import MUTATIONS, apply_mutation
    m = next(m for m in MUTATIONS if m.name == "range_start_dropped")
    shutil.copytree(ROOT / "pyrmap", tmp_path / "pyrmap",
                    ignore=shutil.ignore_patterns("__pycache__"))
    apply_mutation(m, tmp_path)
    code = ("import json, sys, pyrmap\n"
            "assert pyrmap.__file__.startswith(sys.argv[1]), pyrmap.__file__\n"
            "from cosim.fastbuild import fast_run\n"
            "from cosim.fastquirks import QUIRK_ENV, QUIRK_PARAMS\n"
            "from hdl.config import MmuConfig\n"
            "ok, rep, where = fast_run(MmuConfig(), QUIRK_PARAMS, 'verilator', seed=1, "
            "env=QUIRK_ENV)\n"
            "print('REPORT', json.dumps({'ok': ok, 'rep': rep, 'where': str(where)}))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, proc.stderr[-2000:]
    got = json.loads(line[len("REPORT "):])
    rep = got["rep"]
    assert rep is not None, f"no report in {got['where']}"
    assert not got["ok"] and rep.get("checker") == "notifier", rep.get("error")
    assert "without a start" in rep["error"]
