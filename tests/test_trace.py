"""Recorded traces: lackey's output parsed as a stream, the .npz file, recording a program."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosim.explore import trace as tr
from cosim.explore.trace import LackeyParser, TraceError, TraceOp, parse_lackey


SNIPPET = b"""==796== Lackey, an example Valgrind tool
==796== Command: /bin/true
==796== 
I  0401ab70,3
I  0401ab73,5
 S 1fff000778,8
I  0401b770,1
 L 04030ffc,8
 M 04031000,4
--796-- WARNING: something Valgrind says
I  0401b771,7
I  0401b778,7
**796** a serious note
I  0401b77f,5
==796== Exit code:       0
"""


def test_snippet_gives_accesses_gaps_and_instructions():
    p = parse_lackey([SNIPPET])
    va, op, size, gap, instructions = p.arrays()
    assert va.tolist() == [0x1fff000778, 0x04030ffc, 0x04031000]
    assert op.tolist() == [TraceOp.STORE, TraceOp.LOAD, TraceOp.MODIFY]
    assert size.tolist() == [8, 8, 4]
    assert gap.tolist() == [2, 1, 0]
    assert instructions == 6          # three more after the last access


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, len(SNIPPET)), max_size=8))
def test_chunk_boundaries_do_not_matter(cuts):
    cuts = sorted(set(cuts))
    chunks = [SNIPPET[a:b] for a, b in zip([0] + cuts, cuts + [len(SNIPPET)])]
    whole = parse_lackey([SNIPPET]).arrays()
    split = parse_lackey(chunks).arrays()
    for a, b in zip(whole[:4], split[:4]):
        assert a.tolist() == b.tolist()
    assert whole[4] == split[4]


@pytest.mark.parametrize("line, message", [
    (b"hello world", "line 5: not an access or a Valgrind line"),
    (b" L zz,8", "line 5: expected ' L <hex address>,<size>'"),
    (b" S 1000", "line 5: expected ' S <hex address>,<size>'"),
    (b" L 4000000000,8", "outside the Sv39 user range"),
    (b" L 3ffffffffc,8", "outside the Sv39 user range"),
])
def test_bad_lines_are_errors_naming_the_line(line, message):
    text = b"==1== x\nI  1000,4\n L 2000,8\n==1== y\n" + line + b"\n"
    with pytest.raises(TraceError, match=message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        parse_lackey([text])


def test_skip_and_limit():
    p = parse_lackey([SNIPPET], skip=1, limit=1)
    va, op, size, gap, instructions = p.arrays()
    assert va.tolist() == [0x04030ffc] and gap.tolist() == [1]
    assert p.truncated and instructions == 1
    with pytest.raises(ValueError, match="limit must be at least 1, not 0"):
        LackeyParser(limit=0)


def test_vmas_merge_small_holes_and_know_what_is_written():
    va = np.array([0x10000, 0x12ff8, 0x40000, 0x80ffc], dtype=np.uint64)
    size = np.array([8, 16, 8, 8], dtype=np.uint16)      # the second straddles into 0x13000
    op = np.array([TraceOp.LOAD, TraceOp.LOAD, TraceOp.STORE, TraceOp.LOAD], dtype=np.uint8)
    vmas = tr.derive_vmas(va, size, op, gap_pages=2)
    assert [(v.start, v.end, v.prot) for v in vmas] == [
        (0x10000, 0x14000, 1), (0x40000, 0x41000, 3), (0x80000, 0x82000, 1)]
    assert len(tr.derive_vmas(va, size, op, gap_pages=0)) == 4


def _trace(tmp_path):
    p = parse_lackey([SNIPPET])
    va, op, size, gap, n = p.arrays()
    t = tr.Trace(va, op, size, gap, n, tr.derive_vmas(va, size, op),
                 {"format": tr.FORMAT_VERSION, "command": ["true"]})
    return tr.save(t, tmp_path / "t.npz")


def test_save_load_round_trip_and_bad_files(tmp_path):
    path = _trace(tmp_path)
    t = tr.load(path)
    assert t.va.tolist() == [0x1fff000778, 0x04030ffc, 0x04031000]
    assert t.instructions == 6 and t.meta["command"] == ["true"]
    assert [(v.start, v.end) for v in t.vmas] == [(0x4030000, 0x4032000),
                                                  (0x1fff000000, 0x1fff001000)]
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    bad = dict(data, va=data["va"].astype(np.int64))
    np.savez(tmp_path / "dtype.npz", **bad)
    with pytest.raises(TraceError, match="va must be uint64"):
        tr.load(tmp_path / "dtype.npz")
    np.savez(tmp_path / "novma.npz", **dict(data, vma_start=data["vma_start"][:1],
                                             vma_end=data["vma_end"][:1],
                                             vma_prot=data["vma_prot"][:1]))
    with pytest.raises(TraceError, match="access 0 at 0x1fff000778 lies in no VMA"):
        tr.load(tmp_path / "novma.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(TraceError, match="not a trace file"):
        tr.load(tmp_path / "junk.npz")


def test_record_true_and_cross_check_with_cachegrind(valgrind, tmp_path, capsys):
    from cosim.explore.models import cachegrind_check
    out = tmp_path / "true.npz"
    assert tr.main(["--out", str(out), "--", "true"], prog="rmap-cosim trace") == 0
    assert "accesses" in capsys.readouterr().err
    t = tr.load(out)
    c = t.counts()
    assert c["accesses"] > 1000 and c["stores"] > 100 and t.instructions > c["accesses"]
    assert int(t.gap.sum()) <= t.instructions
    assert int(t.va.max()) < 1 << 38
    assert any(v.prot & 2 for v in t.vmas) and not t.meta["truncated"]
    assert t.meta["exit_code"] == 0
    ok = cachegrind_check(t, entries=8, ways=4)
    assert ok["verdict"] == "pass", ok
    assert ok["cachegrind_refs"] == len(t) and ok["cachegrind_misses"] > 0
    # The same check on a trace that is not the program's: one access moved to a far page.
    va = t.va.copy()
    va[len(va) // 2] = np.uint64(0x2000_0000)
    wrong = tr.Trace(va, t.op, t.size, t.gap, t.instructions, t.vmas, t.meta)
    bad = cachegrind_check(wrong, entries=8, ways=4)
    assert bad["verdict"] == "fail" and "cachegrind saw" in bad["detail"]
    assert cachegrind_check(t, entries=12, ways=4)["verdict"] == "not exercised"


def test_stream_is_pinned_against_signals_and_cachegrind_follows_stdio(valgrind, tmp_path):
    """sort installs a handler only for signals not ignored, so a recording from a background
    job (SIGINT, SIGQUIT ignored) would make another stream: every signal is reset to its
    default first.  The kinds of stdout and stderr are kept, and cachegrind runs the program
    with the same kinds, so its references equal the trace's exactly."""
    import signal
    import subprocess
    from cosim.explore.models import cachegrind_check
    words = tmp_path / "w.txt"
    words.write_text("".join(f"w{(k * 7919) % 1000} x{k}\n" for k in range(300)))
    argv = ["sort", str(words)]
    a = tr.record(argv, stdout=subprocess.DEVNULL)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        b = tr.record(argv, stdout=subprocess.DEVNULL)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    # One stack address differs from run to run (a random offset); the pages may not.
    assert len(a) == len(b) and np.array_equal(a.va >> np.uint64(12), b.va >> np.uint64(12))
    assert np.array_equal(a.op, b.op) and np.array_equal(a.size, b.size)
    with open(tmp_path / "out.txt", "wb") as fh:
        c = tr.record(argv, stdout=fh)
    assert a.meta["stdio"][0] == "null" and c.meta["stdio"][0] == "file"
    for t in (a, c):
        got = cachegrind_check(t, entries=8, ways=2, cache=False)
        assert got["verdict"] == "pass" and got["cachegrind_refs"] == len(t), got
    old_trace = tr.Trace(a.va, a.op, a.size, a.gap, a.instructions, a.vmas,
                         {k: v for k, v in a.meta.items() if k != "state"})
    assert cachegrind_check(old_trace, entries=8, ways=2)["verdict"] == "not exercised"


def test_record_limit_truncates(valgrind):
    t = tr.record(["true"], skip=100, limit=500)
    assert len(t) == 500 and t.meta["truncated"] and t.meta["exit_code"] is None


def test_command_line_errors(capsys):
    assert tr.main([], prog="rmap-cosim trace") == 2
    assert "name the program to trace after `--`" in capsys.readouterr().err
    assert tr.main(["--max-accesses", "0", "--", "true"], prog="rmap-cosim trace") == 2
    assert "--max-accesses: must be at least 1, not 0" in capsys.readouterr().err


def test_a_trace_point_carries_cachegrind_and_fails_on_a_stream_not_the_programs(valgrind,
                                                                                 tmp_path):
    """The per-point check: cachegrind at the point's geometry against the recorded trace;
    a trace whose stream is not the program's fails it."""
    from cosim.explore.run import trace_cachegrind_check
    t = tr.record(["true"])
    good = tr.save(t, tmp_path / "true.npz")
    design = {"tlb_entries": 16, "tlb_ways": 4}
    ok = trace_cachegrind_check(good, design, {"miss_rate": 0.25})
    assert ok["verdict"] == "pass" and ok["rtl_miss_rate"] == 0.25, ok
    assert 0 < ok["cachegrind_miss_rate"] < 1
    va = t.va.copy()
    va[:: 97] += np.uint64(4096 * 64)
    bad = tr.save(tr.Trace(va, t.op, t.size, t.gap, t.instructions,
                           tr.derive_vmas(va, t.size, t.op, 16), t.meta), tmp_path / "bad.npz")
    got = trace_cachegrind_check(bad, design, {"miss_rate": 0.25})
    assert got["verdict"] == "fail" and "cachegrind saw" in got["detail"], got
