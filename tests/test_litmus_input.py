"""Every malformed litmus file gets one line naming the file and the line, and exit status 2:
the bad inputs one by one, a hypothesis fuzz of the parser, and a byte-wise mutation fuzz of
the suite's own files.  Also: the operation registry and the documentation agree."""

import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosim.litmus import docs, ops
from cosim.litmus.parser import LitmusSyntaxError, parse, parse_file
from cosim.litmus.runner import main
from cosim.litmus.syntax import MAX_NESTING, MAX_OPS, MAX_REPEAT

ROOT = Path(__file__).resolve().parent.parent
SUITE = sorted((ROOT / "litmus").glob("*.litmus"))
HEAD = "litmus T\ninit\n  map x -> A vrwad\n"
TAIL = "forbidden: r == 0\n"


def _err(text: str) -> str:
    with pytest.raises(LitmusSyntaxError) as ei:
        parse(text, "t.litmus")
    return str(ei.value)


BAD = [
    # integer literals and ranges
    (HEAD + "  mem A = 007\nthread C0\n  r = ld x\n" + TAIL,
     "t.litmus:4: expected an integer value (a decimal integer without leading zeros, or 0x "
     "followed by hex digits), found '007'"),
    (HEAD + "  mem A = 0x_\nthread C0\n  r = ld x\n" + TAIL,
     "t.litmus:4: expected an integer value (a decimal integer without leading zeros, or 0x "
     "followed by hex digits), found '0x_'"),
    (HEAD + "thread C0\n  r = ld x\n  s = st x, 123456789012345678901234567890123456\n" + TAIL,
     "t.litmus:6: expected a value (integer or register) from -9223372036854775808 to "
     "18446744073709551615 (a 64-bit word), found 12345678901234567890... (36 digits)"),
    (HEAD + "thread C0\n  r = ld x+4096\n" + TAIL,
     "t.litmus:5: expected a byte offset from 0 to 4088, found 4096"),
    (HEAD + "thread C0\n  r = ld x\n  delay -1\n" + TAIL,
     "t.litmus:6: expected a number of cycles after 'delay' from 0 to 10000000, found -1"),
    # nesting and repeat bounds
    (HEAD + "thread C0\n  r = ld x\nforbidden: " + "(" * 5000 + "r" + ")" * 5000 + "\n",
     f"t.litmus:6: expected at most {MAX_NESTING} nested '(' or '!', found more at '('"),
    (HEAD + "thread C0\n  r = ld x\nforbidden: " + "!" * 5000 + "r\n",
     f"t.litmus:6: expected at most {MAX_NESTING} nested '(' or '!', found more at '!'"),
    (HEAD + "thread C0\n  r = ld x\n  repeat 100000000: fence\n" + TAIL,
     f"t.litmus:6: expected a repeat count from 1 to {MAX_REPEAT}, found 100000000"),
    (HEAD + "thread C0\n  r = ld x\n  repeat 2: repeat 2: fence\n" + TAIL,
     "t.litmus:6: expected one 'repeat' per line, found a nested one"),
    (HEAD + "thread C0\n  r = ld x\n" + f"  repeat {MAX_REPEAT}: fence\n" * 5 + TAIL,
     f"t.litmus:9: expected at most {MAX_OPS} operations per thread (after 'repeat'); thread "
     f"'C0' would have {1 + 4 * MAX_REPEAT}"),
    (HEAD + "thread C0\n  r = ld x\n  " + "if r == 1: " * 3000 + "fence\n" + TAIL,
     "t.litmus:6: expected a plain operation after 'if ...:', found 'if'"),
    # unknown keys and options
    ("litmus T\noption bogus=1\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
     "t.litmus:2: expected a runner option (runs, start, jitter, p_long, long, latency, "
     "max_cycles, kernel, mapping, user), found 'bogus'"),
    ("litmus T\noption runs=0\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
     "t.litmus:2: expected an integer from 1 to 100000 for option 'runs', found 0"),
    ("litmus T\noption mapping=heap\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
     "t.litmus:2: expected shared or anon for option 'mapping', found 'heap'"),
    ("litmus T\nconfig bogus=1\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
     "t.litmus:2: expected a valid 'config' line: Unknown parameter 'bogus'; known: ncores, "
     "tlb_entries, tlb_ways, replacement, superpage_entries, asid_bits, svadu, dev_entries, "
     "arbitration, quirk_plain_ad_write, quirk_fill_after_inval, quirk_ad_on_nonpresent, "
     "quirk_walk_answer_after_inval, quirk_inval_clear_late, mmu"),
    ("litmus T\nconfig svadu=maybe\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
     "t.litmus:2: expected a valid 'config' line: svadu must be a bool (true/false, yes/no, "
     "1/0), not 'maybe'"),
    ("litmus T\nconfig ncores=17\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
     "t.litmus:2: expected a valid 'config' line: "),
    # register kinds
    (HEAD + "thread C0\n  r = ld x\nforbidden: r.ppn == A\n",
     "t.litmus:6: expected a PTE (a register holding one, or pte(x)) before '.ppn', found "
     "'r', a data register"),
    # cores and threads
    (HEAD + "  warm C9 x\nthread C0\n  r = ld x\n" + TAIL,
     "t.litmus:4: expected a core of the design (C0..C1: config ncores=2 and the cpu "
     "threads), found C9; add a 'thread C9' or 'config ncores=10'"),
    (HEAD + "thread C0\n  r = ld x\nforbidden: tlb(C5, x)\n",
     "t.litmus:6: expected a core of the design (C0..C1: config ncores=2 and the cpu "
     "threads), found C5; add a 'thread C5' or 'config ncores=6'"),
    (HEAD + "thread C16\n  r = ld x\n" + TAIL,
     "t.litmus:4: expected a core number from 0 to 15, found 16"),
    (HEAD + "".join(f"thread OS{i}\n  fence\n" for i in range(33)) + "thread C0\n  r = ld x\n"
     + TAIL, "t.litmus:68: expected at most 32 threads per test"),
    # a file that is not a litmus file
    ("# a README\nThe project\n", "t.litmus:2: expected 'litmus NAME' as the first line, "
                                  "found 'The'"),
    # kernel operations
    (HEAD + "thread OS\n  exit\nthread C0\n  r = ld x\n" + TAIL,
     "t.litmus:5: expected a 'fork' in the test before 'exit' (exit ends the child the last "
     "fork made)"),
    (HEAD + "thread OS\n  r = mremap x, y\n" + TAIL,
     "t.litmus:5: expected a virtual page declared with 'map', found 'y'"),
    ("litmus T\noption mapping=anon\n" + HEAD[9:] + "thread OS\n  r = truncate x\n" + TAIL,
     "t.litmus:6: expected a file mapping for 'truncate', found 'option mapping=anon'"),
    (HEAD + "thread Dev\n  r = dev frob x\n" + TAIL,
     "t.litmus:5: expected 'dev ld', 'dev st', 'dev young', 'dev fill', 'dev install', found "
     "'dev frob'"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_one_line_naming_the_line(text, message):
    err = _err(text)
    assert err == message or (message.endswith(": ") and err.startswith(message)), err
    assert "\n" not in err


def test_literals_at_the_edges_of_a_word_parse():
    t = parse(HEAD + "  mem A = 0xffff_ffff_ffff_ffff\n  mem A+8 = -9223372036854775808\n"
              "thread C0\n  r = ld x\n" + TAIL, "t.litmus")
    assert t.init.mem[("A", 0)] == (1 << 64) - 1 and t.init.mem[("A", 8)] == -(1 << 63)
    assert "from -9223372036854775808" in _err(
        HEAD + "  mem A = 0x1_0000_0000_0000_0000\nthread C0\n  r = ld x\n" + TAIL)


def test_long_and_chains_are_one_node_not_a_deep_tree():
    t = parse(HEAD + "thread C0\n  r = ld x\nforbidden: " + " && ".join(["r == 0"] * 5000)
              + "\n", "t.litmus")
    assert t.conditions[0].expr.op == "and" and len(t.conditions[0].expr.args) == 5000


def test_cli_exit_2_with_file_and_line(tmp_path, capsys):
    cases = {
        "latin1.litmus": (b"litmus T\ninit\n  map x -> A\n# caf\xe9\n",
                          "latin1.litmus:4: expected UTF-8 text, found byte 0xe9 at column 6"),
        "warm.litmus": ((HEAD + "  warm C9 x\nthread C0\n  r = ld x\n" + TAIL).encode(),
                        "warm.litmus:4: expected a core of the design"),
        "readme.litmus": (b"# notes\nsome prose\n",
                          "readme.litmus:2: expected 'litmus NAME' as the first line"),
    }
    for name, (data, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        assert main([str(p)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert main([str(tmp_path)]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.litmus")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_config_is_checked_before_anything_runs(capsys):
    ok = str(ROOT / "litmus" / "remap_local.litmus")
    with pytest.raises(SystemExit) as ei:
        main([ok, "--config", "bogus=1"])
    assert ei.value.code == 2
    assert "Unknown parameter 'bogus'; known: ncores, tlb_entries" in capsys.readouterr().err


# --- fuzzing ---------------------------------------------------------------------------------------

_WORDS = (["litmus", "doc", "config", "option", "init", "thread", "forbidden:", "allowed:",
           "observable:", "required:", "map", "mem", "flag", "warm", "repeat", "if", "goto",
           "->", "x", "y", "A", "B", "C0", "C1", "C9", "OS", "Dev", "r", "p", "F", "vrwad",
           "invalid", "{A vrwad}", "pte", ":=", "=", "==", "&&", "||", "!", "(", ")", ",",
           ":", ";", "+", "-", "~", ".", "ppn", "d", "0", "1", "007", "0x_", "0xff",
           "99999999999999999999999", "$i", "all", "retry", "walk", "runs=1", "ncores=3",
           "svadu=false", "mapping=anon", "#", "\t", "  ", "\n", "\n  ", "\udcff", "é"]
          + ops.names(full=True))


def _judge(text: str) -> None:
    try:
        parse(text, "f.litmus")
    except LitmusSyntaxError as exc:
        assert exc.path == "f.litmus" and 0 <= exc.line <= text.count("\n") + 1, str(exc)
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_WORDS), max_size=80).map(" ".join))
def test_fuzz_token_soup_parses_or_names_a_line(text):
    _judge(text)


@settings(max_examples=200, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([p.read_text() for p in SUITE]), st.data())
def test_fuzz_suite_files_with_edited_lines(text, data):
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(("drop", "dup", "insert", "swap")))
        if edit == "drop":
            del lines[i]
        elif edit == "dup":
            lines.insert(i, lines[i])
        elif edit == "insert":
            lines.insert(i, data.draw(st.lists(st.sampled_from(_WORDS), max_size=12)
                                      .map(" ".join)))
        else:
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    _judge("\n".join(lines))


def test_bytewise_mutation_of_the_suite(tmp_path):
    """Every suite file with random bytes flipped, inserted or deleted (seeded) either parses
    or is a LitmusSyntaxError naming the file and a line."""
    seed = 20261203
    rng = random.Random(seed)
    n = 0
    for path in SUITE:
        data = path.read_bytes()
        for k in range(25):
            b = bytearray(data)
            for _ in range(rng.randint(1, 6)):
                i = rng.randrange(len(b))
                what = rng.randrange(3)
                if what == 0:
                    b[i] = rng.randrange(256)
                elif what == 1:
                    b.insert(i, rng.choice(b"0123456789(!)_x\xff\xc3;:=\n"))
                else:
                    del b[i]
            p = tmp_path / f"m{n}.litmus"
            p.write_bytes(bytes(b))
            try:
                parse_file(p)
            except LitmusSyntaxError as exc:
                assert exc.path == str(p) and 1 <= exc.line <= b.count(b"\n") + 1, \
                    f"seed {seed}, {path.name} mutation {k}: {exc}"
            n += 1
    assert n == 25 * len(SUITE)


# --- the registry ----------------------------------------------------------------------------------

def test_docs_tables_are_the_registry():
    doc = (ROOT / "docs" / "litmus.md").read_text()
    assert docs.render_docs(doc) == doc, "python -m cosim.litmus.docs --write docs/litmus.md"
    for spec in ops.OPS:
        assert spec.syntax.replace("|", "\\|") in doc


def test_docs_check_fails_on_a_stale_table(tmp_path, capsys):
    doc = (ROOT / "docs" / "litmus.md").read_text()
    stale = tmp_path / "litmus.md"
    stale.write_text(doc.replace("| `fence` |", "| `fence!` |"))
    assert docs.main([str(stale)]) == 1
    assert "differ from cosim.litmus.ops" in capsys.readouterr().out
    assert docs.main([str(stale), "--write"]) == 0 and stale.read_text() == doc


def test_every_op_of_the_registry_parses_and_is_checked_against_thread_kinds():
    """One line per registry entry, in a thread of each kind: it parses exactly where the
    entry allows it, else the error names the allowed kinds."""
    samples = {"ld": "r = ld x", "st": "st x, 1", "pte": "p = pte x", "xchg": "xchg pte x, 0",
               "cas": "cas pte x, 0, 0", "and": "and pte x, ~a", "or": "or pte x, a",
               "inv": "inv C0 x", "shoot": "shoot x", "set": "set F = 1",
               "wait": "wait F == 0", "wait walk": "wait walk C0 x", "flag": "r = flag F",
               "mem": "r = mem A", "lock": "lock L", "unlock": "unlock L", "delay": "delay 1",
               "dev ld": "r = dev ld x", "dev st": "dev st x, 1", "dev young": "r = dev young x",
               "dev fill": "dev fill x", "dev install": "dev install x, {A vrw}",
               "mremap": "mremap x, y", "remap_file_pages": "remap_file_pages x, y",
               "fork": "fork", "exit": "fork ; exit", "fence": "fence", "csync": "csync"}
    head = "litmus T\ninit\n  map x -> A vrwad\n  map y -> B\n  flag F\n"
    for spec in ops.OPS:
        line = samples.get(spec.name, f"{spec.name} x")
        for kind, thread in (("cpu", "C0"), ("os", "OS"), ("dev", "Dev")):
            text = f"{head}thread {thread}\n  {line}\nallowed: true\n"
            if kind in spec.kinds:
                t = parse(text, "k.litmus")
                assert spec.name in [op.kind for op in t.threads[0].ops]
            else:
                assert f"expected {spec.name!r} only in {' or '.join(spec.kinds)} threads" \
                    in _err(text)
    assert set(samples) - {s.name for s in ops.OPS} == set()


def test_every_kernel_operation_has_a_test_in_the_suite():
    """Each engine call of the registry is raced by at least one test of litmus/ with a
    verdict (a forbidden or required condition)."""
    from cosim.litmus.model import Verdict
    used: dict = {}
    for path in SUITE:
        t = parse_file(path)
        judged = any(c.verdict in (Verdict.FORBIDDEN, Verdict.REQUIRED) for c in t.conditions)
        for th in t.threads:
            for op in th.ops:
                if judged:
                    used.setdefault(op.kind, t.name)
    missing = [s.name for s in ops.OPS if s.kernel and s.name not in used]
    assert not missing, f"kernel operations without a litmus test: {missing}"


# --- the trial: malformed files through the command line ----------------------------------------

#: More malformed files a new user writes (beside BAD): each must be one line naming the line.
TRIAL = {
    "empty": "",
    "only_comment": "# nothing here yet\n",
    "no_threads": HEAD + TAIL,
    "no_condition": HEAD + "thread C0\n  r = ld x\n",
    "dup_thread": HEAD + "thread C0\n  r = ld x\nthread C0\n  s = ld x\n" + TAIL,
    "unknown_op": HEAD + "thread C0\n  r = frob x\n" + TAIL,
    "ld_no_page": HEAD + "thread C0\n  r = ld\n" + TAIL,
    "st_no_value": HEAD + "thread C0\n  st x\n" + TAIL,
    "unknown_page": HEAD + "thread C0\n  r = ld z\n" + TAIL,
    "bad_flags": "litmus T\ninit\n  map x -> A vrwqz\nthread C0\n  r = ld x\n" + TAIL,
    "dup_map": HEAD + "  map x -> B vrwad\nthread C0\n  r = ld x\n" + TAIL,
    "unknown_register": HEAD + "thread C0\n  r = ld x\nforbidden: q == 0\n",
    "unclosed_paren": HEAD + "thread C0\n  r = ld x\nforbidden: (r == 0\n",
    "trailing_garbage": HEAD + "thread C0\n  r = ld x junk\n" + TAIL,
    "thread_kind": HEAD + "thread X0\n  r = ld x\n" + TAIL,
    "dev_op_on_cpu": HEAD + "thread C0\n  r = dev ld x\n" + TAIL,
    "inval_unknown_page": HEAD + "thread C0\n  r = ld x\n  inv q\n" + TAIL,
    "repeat_zero": HEAD + "thread C0\n  r = ld x\n  repeat 0: fence\n" + TAIL,
    "huge_hex": HEAD + "  mem A = 0x1" + "0" * 40 + "\nthread C0\n  r = ld x\n" + TAIL,
    "unaligned_mem": HEAD + "  mem A+3 = 1\nthread C0\n  r = ld x\n" + TAIL,
    "pte_flags": HEAD + "thread OS\n  pte x := {A qq}\nthread C0\n  r = ld x\n" + TAIL,
    "option_no_value": "litmus T\noption runs\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
    "config_no_value": "litmus T\nconfig ncores\n" + HEAD[9:] + "thread C0\n  r = ld x\n" + TAIL,
    "name_missing": "litmus\ninit\n  map x -> A vrwad\nthread C0\n  r = ld x\n" + TAIL,
    "section_typo": HEAD + "thred C0\n  r = ld x\n" + TAIL,
    "cpu_too_big": HEAD + "thread OS cpu 40\n  fence\nthread C0\n  r = ld x\n" + TAIL,
    "goto_nowhere": HEAD + "thread C0\n  r = ld x\n  goto nowhere\n" + TAIL,
    "negative_mem": HEAD + "  mem A = -99999999999999999999999\nthread C0\n  r = ld x\n" + TAIL,
    "nul_byte": HEAD + "thread C0\n  r = ld x\0\n" + TAIL,
}


def test_trial_of_malformed_files_through_the_command_line(tmp_path, capsys):
    """The bad-input trial rerun: at least 50 malformed files (BAD, TRIAL, bytes that are not
    UTF-8, a file that is not a litmus file) through ``rmap-cosim litmus FILE``.  Each ends
    with exit status 2 and one line on stderr that names the file and the line -- no
    traceback, no hang (pytest-timeout), nothing run."""
    files = {f"bad{i}.litmus": text.encode() for i, (text, _) in enumerate(BAD)}
    files.update({f"{name}.litmus": text.encode() for name, text in TRIAL.items()})
    files["latin1.litmus"] = b"litmus T\ninit\n  map x -> A\n# caf\xe9\n"
    files["utf16.litmus"] = "litmus T\n".encode("utf-16")
    files["readme.litmus"] = b"# notes\nsome prose about the project\n"
    assert len(files) >= 50
    outcome = {}
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        try:
            rc = main([str(p)])
        except SystemExit as exc:                  # argparse's way; still an exit status
            rc = exc.code
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        clean = (rc == 2 and len(lines) == 1
                 and re.fullmatch(rf"error: {re.escape(str(p))}:\d+: .+", lines[0])
                 and "Traceback" not in cap.err + cap.out and not cap.out.strip())
        outcome[name] = "clean" if clean else f"rc={rc} err={cap.err[-300:]!r}"
    bad = {n: o for n, o in outcome.items() if o != "clean"}
    assert not bad, bad


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    p = tmp_path / "bom.litmus"
    p.write_bytes("\ufeff".encode() + (HEAD + "thread C0\n  r = ld x\n" + TAIL).encode())
    assert parse_file(p).name == "T"
