"""Litmus format, verdict rules, and the suite on the RTL (both simulators).

The suite runs a few times per test here (``RUNS``); ``python -m cosim.litmus litmus/*.litmus``
runs it 100 times each.  Every random choice derives from the seed the failure names.
"""

from pathlib import Path

import pytest

from cosim.litmus.model import Verdict
from cosim.litmus.outcome import Fault, FinalState, evaluate, outcome_key
from cosim.litmus.parser import LitmusSyntaxError, parse, parse_file
from cosim.litmus.runner import format_result, judge, main, run_files

ROOT = Path(__file__).resolve().parent.parent
SUITE = sorted(str(p) for p in (ROOT / "litmus").glob("*.litmus"))
RUNS = 4
HEAD = "litmus T\ninit\n  map x -> A vrwad\n"

#: Every shape of reference/litmus-shapes.md and the test(s) that express it.
SHAPES = {
    1: ["RemapLocal", "RemapLocal.unmap"], 3: ["MP.shoot", "MP.shoot.po"], 6: ["BBM"],
    8: ["DirtyLost.xchg", "DirtyLost.and", "ClearFlush.kernel"],
    9: ["NonAtomicRMW", "NonAtomicRMW.random"], 11: ["Mkclean.tlb", "Mkclean.kernel"],
    14: ["ADCas.unmap", "ADCas.remap"], 15: ["WalkInflight"],
    17: ["BatchedFlush", "BatchedFlush.missing"],
    18: ["SecondaryRetry", "SecondaryRetry.missing", "SecondaryRetry.kernel"],
    20: ["YoungNoFlush", "YoungRace"], 21: ["StoreClean", "StoreClean.svade"],
}


# --- the format ----------------------------------------------------------------------------------

BAD = [
    ("init\n  map x -> A\n", "t.litmus:1: expected 'litmus NAME' as the first line, found 'init'"),
    (HEAD + "thread C0\n  r = ld 42\nforbidden: r == 0\n",
     "t.litmus:5: expected a virtual page name after 'ld', found '42'"),
    (HEAD + "thread C0\n  r = ld y\nforbidden: r == 0\n",
     "t.litmus:5: expected a virtual page declared with 'map', found 'y'"),
    (HEAD.replace("vrwad", "vrwq") + "thread C0\n  r = ld x\nforbidden: r == 0\n",
     "t.litmus:3: expected PTE flag letters from 'vrwxugad', found 'vrwq'"),
    (HEAD + "thread C0\n  r = ld x\n",
     "t.litmus:5: expected at least one condition (forbidden:, allowed:, observable: or "
     "required:)"),
    (HEAD + "thread C0\n  r = ld x\nforbidden: r == \n",
     "t.litmus:6: expected a value (register, integer, mem[..], pte(..), fault(..), ok(..), "
     "tlb(..), dirty(..)), found the end of the line"),
    (HEAD + "thread C0\n  r = ld x\nforbidden: q == 1\n",
     "t.litmus:6: expected a register written by a thread or a page name, found 'q'"),
    (HEAD + "thread OS\n  r = ld x\nforbidden: r == 1\n",
     "t.litmus:5: expected 'ld' only in cpu threads, found it in os thread 'OS'"),
    (HEAD + "thread OS\n  inv x\nforbidden: pte(x) == 1\n",
     "t.litmus:5: expected a target core (inv C1 x) in os thread 'OS'"),
    (HEAD + "thread OS\n  goto nowhere\nforbidden: pte(x) == 1\n",
     "t.litmus:5: expected a label of thread 'OS', found 'nowhere'"),
    (HEAD + "thread C0\n  r = ld x\nthread A cpu 0\n  s = ld x\nforbidden: r == 1\n",
     "t.litmus:6: expected one cpu thread per core, found a second on core 0"),
    (HEAD + "thread C0\n  r = ld x+3\nforbidden: r == 1\n",
     "t.litmus:5: expected an 8-byte aligned offset in the page, found 3"),
    (HEAD + "thread Foo\n  r = ld x\nforbidden: r == 1\n",
     "t.litmus:4: expected 'cpu N', 'os' or 'dev' after thread 'Foo' (the kind is inferred "
     "only from names like C0, OS, Dev)"),
    (HEAD + "thread C0\n  r = ld x\n  pte x := r -w\nforbidden: r == 1\n",
     "t.litmus:6: expected a register holding a PTE, found 'r'"),
    (HEAD + "thread OS\n  pte x := {B vrw\nforbidden: pte(x) == 1\n",
     "t.litmus:5: expected '}' to close the PTE literal"),
    (HEAD + "thread C0\n  s = st x, $i\nforbidden: s == 1\n",
     "t.litmus:5: expected '$i' only inside 'repeat N: ...'"),
    (HEAD + "thread OS\n  p = pte x\nforbidden: p.q == 1\n",
     "t.litmus:6: expected a PTE field (v r w x u g a d ppn value), found 'q'"),
    (HEAD + "thread OS\n  fence x\nforbidden: pte(x) == 1\n",
     "t.litmus:5: expected the end of the line after 'fence', found 'x'"),
    (HEAD + "thread C0\n  r = ld x\nforbidden r == 1\nbogus\n",
     "t.litmus:7: expected a section keyword (litmus, doc, config, option, init, thread, "
     "forbidden, allowed, observable, required), found 'bogus'"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_parse_errors_name_the_line_and_what_was_expected(text, message):
    with pytest.raises(LitmusSyntaxError) as ei:
        parse(text, "t.litmus")
    assert str(ei.value) == message


def test_missing_file_is_a_syntax_error():
    with pytest.raises(LitmusSyntaxError, match="cannot read the file"):
        parse_file(ROOT / "litmus" / "no-such-test.litmus")


def test_operations_parse_into_the_ast():
    t = parse(HEAD + """  map y -> B v r
  mem A+8 = 7
  flag F = 2
  warm C1 x store
  warm dev y
thread C0
  repeat 3: s$i = st x+8, $i
  r = ld x retry ; fence ; csync
thread OS
  top:
  p = xchg pte x, {B vrwad}
  q = cas pte y, p, p -w +d
  o = and pte x, ~ad
  inv C1 all ; shoot x ; inv dev y
  if mem[F] == 2 && p.d == 1: goto top
  lock L ; unlock L ; set F = 3 ; wait F == 3 ; wait walk C1 x ; wait walk x cas ; delay 5
  n = page_mkclean x
  m = mem A+8 ; mem B := m
thread Dev
  d = dev ld y ; dev st y, 4 ; dev fill x ; w = dev young y ; dev install x, {A vrw}
forbidden: s1 == 1 || (fault(r) && !ok(d)) || pte(x).ppn == B || tlb(C1, x) || mem[A+8] > 3
required: true
""", "ops.litmus")
    kinds = [op.kind for th in t.threads for op in th.ops]
    assert kinds[:5] == ["st", "st", "st", "ld", "fence"]
    assert [op.args["value"] for op in t.threads[0].ops[:3]] == [1, 2, 3]
    assert t.threads[0].ops[3].args["retry"] is True
    for k in ("xchg", "cas", "and", "inv", "shoot", "if", "lock", "wait walk",
              "page_mkclean", "mem", "dev ld", "dev st", "dev fill", "dev young",
              "dev install", "label"):
        assert k in kinds, k
    mems = [op.args["store"] for op in t.threads[1].ops if op.kind == "mem"]
    assert mems == [False, True]
    cas = next(op for op in t.threads[1].ops if op.kind == "cas")
    assert cas.args["new"].clear_bits == 4 and cas.args["new"].set_bits == 0x80
    assert t.init.mem[("A", 8)] == 7 and t.init.flags == {"F": 2}
    assert [(w.target, w.store) for w in t.init.warm] == [(1, True), ("dev", False)]
    assert t.registers["p"] == "pte" and t.registers["s1"] == "status"
    assert t.ncores == 2 and [c.verdict for c in t.conditions] == [Verdict.FORBIDDEN,
                                                                  Verdict.REQUIRED]


def test_the_suite_parses_and_covers_every_shape():
    names = {parse_file(p).name for p in SUITE}
    for shape, tests in SHAPES.items():
        missing = [t for t in tests if t not in names]
        assert not missing, f"shape #{shape}: no test {missing}"
    controls = [parse_file(p) for p in SUITE]
    observable = [t.name for t in controls
                  if any(c.verdict == Verdict.OBSERVABLE for c in t.conditions)]
    assert {"NonAtomicRMW", "YoungNoFlush"} <= set(observable)


# --- conditions and verdicts -----------------------------------------------------------------------

def test_conditions_on_faults_unset_registers_fields_and_pages():
    t = parse(HEAD + "thread C0\n  r = ld x\n  s = st x, 1\nthread OS\n  p = pte x\n"
              "forbidden: r == 0\n", "c.litmus")
    st = FinalState(regs={"r": Fault("page"), "p": 0xC7 | (5 << 10)}, pfns={"A": 5},
                    ptes={"x": 0}, mem={("A", 0): 3})

    def ev(text):
        return evaluate(parse(HEAD + "thread C0\n  r = ld x\n  s = st x, 1\n"
                              "thread OS\n  p = pte x\nforbidden: " + text + "\n",
                              "c.litmus").conditions[0].expr, st)
    assert ev("fault(r)") and not ev("ok(r)") and not ev("r == 0") and ev("r != 0")
    assert not ev("fault(s)") and not ev("ok(s)") and not ev("s == 0")      # never written
    assert ev("p.ppn == A") and ev("p.d == 1") and ev("p.a == 1") and not ev("p.u == 1")
    assert ev("mem[A] == 3 && pte(x) == 0") and ev("!(mem[A] > 3)")
    assert outcome_key(t, st) == "r=fault:page s=unset p={A vrwad}"


def _records(conds_list, outcome="o"):
    return [{"seed": i + 1, "outcome": outcome, "conds": c, "cycles": 10}
            for i, c in enumerate(conds_list)]


def test_judge_fails_forbidden_seen_required_missed_observable_never_and_errors():
    t = parse(HEAD + "thread C0\n  r = ld x\nforbidden: r == 0\nrequired: r == 1\n"
              "observable: fault(r)\nallowed: r == 2\n", "j.litmus")
    ok = judge(t, _records([[False, True, True, False], [False, True, False, True]]))
    assert ok.passed and ok.seen == [0, 2, 1, 1]
    bad = judge(t, _records([[True, True, False, False], [False, False, False, False]]))
    assert not bad.passed
    assert any("seed 1: forbidden outcome seen (line 6: r == 0)" in f for f in bad.failures)
    assert any("seed 2: required condition failed (line 7: r == 1)" in f for f in bad.failures)
    assert any("observable outcome never seen in 2 runs (line 8: fault(r))" in f
               for f in bad.failures)
    assert bad.first_bad_cycles == 10 and bad.first_bad_condition == "forbidden: r == 0"
    err = judge(t, _records([[False, True, True, False]]) + [{"seed": 9, "error": "hung",
                                                               "cycles": 5}])
    assert not err.passed and err.failures == ["run seed 9: hung"]
    assert "verdict: FAIL" in format_result(err) and "error: hung" in format_result(err)


# --- on the RTL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_suite_on_the_rtl(sim):
    """Every test of the suite, RUNS runs each (half on each arbitration): forbidden outcomes
    never seen, required ones always, the negative controls observed."""
    results = run_files(SUITE, runs=RUNS, sim=sim, seed=11)
    report = "\n".join(format_result(r) for r in results if not r.passed)
    assert all(r.passed for r in results), report
    assert len(results) == len(SUITE)
    # The golden-walk scoreboard replayed every CPU translation of every run (the tests
    # that use the device only have none), and the report says how many.
    for r in results:
        assert r.replayed > 0 or r.test.name.startswith("SecondaryRetry"), r.test.name
        assert (f"golden-walk scoreboard: {r.replayed} RTL translations replayed, 0 "
                f"violations") in format_result(r)
    assert sum(r.replayed for r in results) >= len(SUITE) * RUNS // 2
    by_name = {r.test.name: r for r in results}
    for name in ("NonAtomicRMW", "YoungNoFlush", "BatchedFlush.missing"):
        r = by_name[name]
        seen = [s for c, s in zip(r.test.conditions, r.seen) if c.verdict == Verdict.OBSERVABLE]
        assert seen and all(seen), f"{name}: negative control not observed: {r.seen}"
    assert {r.runs[0]["arbitration"] for r in results} == {"round_robin"}
    assert any(rec["arbitration"] == "fixed" for rec in by_name["BBM"].runs)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_runner_fails_a_wrong_verdict_and_an_unseen_control_and_is_seed_stable(tmp_path,
                                                                               capsys):
    wrong = _write(tmp_path, "wrong.litmus", """litmus Wrong
init
  map x -> A vrwad
  mem A = 0
  mem B = 1
  warm C0 x
thread C0
  pte x := {B vrwad}
  inv x
  r = ld x
forbidden: r == 1
observable: r == 0
""")
    rc = main([wrong, "--runs", "3", "--seed", "5", "--arbitration", "round_robin"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "run seed 5, round_robin arbitration: forbidden outcome seen (line 11: r == 1): r=1" \
        in out
    assert "observable outcome never seen in 3 runs (line 12: r == 0)" in out
    assert (f"reproduce the first failing run: python -m cosim.litmus {wrong} --runs 1 "
            f"--seed 5 --sim icarus --arbitration round_robin") in out
    a = run_files([wrong], runs=3, seed=5, arbitration="round_robin")[0]
    b = run_files([wrong], runs=3, seed=5, arbitration="round_robin")[0]
    assert [r["outcome"] for r in a.runs] == [r["outcome"] for r in b.runs]
    assert [r["cycles"] for r in a.runs] == [r["cycles"] for r in b.runs]


def test_runner_usage_and_parse_errors_exit_2(tmp_path, capsys):
    bad = _write(tmp_path, "bad.litmus", "litmus X\ninit\n  map x -> A vrwad\nthread C0\n"
                                         "  r = ld q\nforbidden: r == 0\n")
    assert main([bad]) == 2
    assert "bad.litmus:5: expected a virtual page declared with 'map', found 'q'" in \
        capsys.readouterr().err
    assert main([bad, "--kernel-quirk", "no_such_quirk"]) == 2
    with pytest.raises(SystemExit):
        main([bad, "--runs", "0"])


def test_judge_fails_a_run_the_scoreboard_found_wrong():
    """A run whose conditions all hold still fails when the golden-walk scoreboard found one
    of its translations wrong; its count is in the report."""
    t = parse(HEAD + "thread C0\n  r = ld x\nforbidden: r == 0\n", "s.litmus")
    recs = _records([[False], [False]])
    for rec in recs:
        rec["scoreboard"] = {"translations": 3, "violations": [], "count": 0}
    recs[1]["scoreboard"] = {"translations": 2, "count": 1,
                             "violations": ["[stale_hit] cycle 9: core0 LOAD 0x40000000"]}
    r = judge(t, recs)
    assert not r.passed and r.replayed == 5 and r.scoreboard_violations == 1
    assert r.failures == ["run seed 2: golden-walk scoreboard: [stale_hit] cycle 9: core0 "
                          "LOAD 0x40000000"]
    assert r.first_bad_condition == "scoreboard" and r.first_bad_cycles == 20
    assert "golden-walk scoreboard: 5 RTL translations replayed, 1 violations" in \
        format_result(r)


def test_the_scoreboard_sees_a_walk_answered_after_the_ack_in_a_litmus_run():
    """On the RTL: a walk that answers after an acknowledged invalidation from what it read
    before is a stale response for the scoreboard of the litmus run, besides the forbidden
    outcome the test's condition sees; with the guarantee kept, the same runs replay clean."""
    path = str(ROOT / "litmus" / "walk_answer.litmus")
    r = run_files([path], runs=2, config={"quirk_walk_answer_after_inval": True},
                  arbitration="round_robin")[0]
    assert not r.passed and r.scoreboard_violations > 0, format_result(r)
    assert any("golden-walk scoreboard: [stale_response]" in f for f in r.failures), r.failures
    ok = run_files([path], runs=2, arbitration="round_robin")[0]
    assert ok.passed and ok.replayed > 0 and ok.scoreboard_violations == 0


def test_hardware_quirk_shows_as_a_forbidden_outcome():
    """The walk-in-flight test fails when the RTL fills after an invalidation."""
    path = str(ROOT / "litmus" / "walk_inflight.litmus")
    r = run_files([path], runs=2, config={"quirk_fill_after_inval": True},
                  arbitration="round_robin")[0]
    assert not r.passed and r.first_bad_condition == "forbidden: r2 == 0", format_result(r)


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_suite_on_the_rtl_stress(sim):
    """The suite at 100 runs per test, another seed."""
    results = run_files(SUITE, runs=100, sim=sim, seed=20261129)
    report = "\n".join(format_result(r) for r in results if not r.passed)
    assert all(r.passed for r in results), report


def test_cosim_cli_litmus_subcommand(capsys):
    from cosim.cli import main as cosim_main
    path = str(ROOT / "litmus" / "remap_local.litmus")
    assert cosim_main(["litmus", path, "--runs", "1", "--arbitration", "round_robin"]) == 0
    out = capsys.readouterr().out
    assert "Test RemapLocal" in out and "verdict: PASS" in out


def test_a_walk_straddles_the_shootdown_of_migrate_try_to_unmap_and_munmap():
    """The .walk tests exercise the window a TLB hit cannot: some translation is answered
    after its core acknowledged the operation's shootdown, and the verdicts hold."""
    paths = [str(ROOT / "litmus" / f) for f in ("migrate_walk.litmus",
                                                "try_to_unmap_walk.litmus", "munmap_walk.litmus")]
    for r in run_files(paths, runs=20, seed=3, arbitration="round_robin"):
        assert r.passed, format_result(r)
        assert r.straddled > 0, format_result(r)
        assert "walks across a shootdown:" in format_result(r)
    hit = run_files([str(ROOT / "litmus" / "remap_local.litmus")], runs=2,
                    arbitration="round_robin")[0]
    assert hit.passed and hit.straddled == 0 and "walks across" not in format_result(hit)
