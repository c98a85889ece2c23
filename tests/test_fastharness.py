"""The fast path's clock in the design (cosim.fastbuild.clocked_verilog) and the Python-free
harness on the fast path's own design and stream (cosim.fastharness): the harness runs the same
accesses in the same cycles as the fast-path run it starts from, and a difference is caught."""

from __future__ import annotations

import pytest

from cosim import bench
from cosim import build as cb
from cosim.fastbuild import FastParams, clocked_verilog
from cosim.fastharness import harness_figure, same_stream, write_fast_ports

SMALL = FastParams(words_log2=16, latency=1, log_log2=12)

TOY = """\
module fasttop(\\event , load, clk, rst);
  output \\event ;
  input load;
  wire load;
  input clk;
  wire clk;
  input rst;
  always @(posedge clk) ;
endmodule
module \\fasttop.sub (clk);
  input clk;
  wire clk;
endmodule
"""


def test_clocked_verilog_generates_the_clock_inside_the_top_module():
    text = clocked_verilog(TOY)
    top, sub = text.split("endmodule\n")[:2]
    assert top.startswith("module fasttop(\\event , load, rst);")
    assert "reg clk = 1'b0;\n" in top and "input clk" not in top
    # Verilator: one time step a cycle, with tick for Python; Icarus: the toggled clock.
    verilator, icarus = top.split("`ifdef VERILATOR\n")[1].split("`else\n")
    assert "clk = 1'b1;\n    clk <= 1'b0;\n  end\n" in verilator and "initial" not in verilator
    assert "always @(posedge clk) tick <= ~tick;" in verilator
    assert icarus.startswith("  always #5 clk = ~clk;\n`endif\n")
    # A design with the device's ports keeps the toggled clock on both simulators.
    toggled = clocked_verilog(TOY, one_step=False).split("endmodule\n")[0]
    assert "reg clk = 1'b0;\n  always #5 clk = ~clk;\n" in toggled and "tick" not in toggled
    assert "input clk;\n  wire clk;" in sub                 # submodules keep their port
    with pytest.raises(ValueError, match="no module fasttop with a clk input"):
        clocked_verilog(TOY.replace("clk, rst", "rst"))
    with pytest.raises(ValueError, match="no module fasttop with a clk input"):
        clocked_verilog(TOY.replace("module fasttop(", "module other("))


def test_fast_ports_header_binds_every_input(tmp_path):
    path = tmp_path / "fast_ports.h"
    write_fast_ports(cb.make_config(ncores=3), SMALL, path)
    text = path.read_text()
    assert "#define NCORES 3" in text and "#define LOG_HALF 2048u" in text
    assert "p->done[2] = &t->eng2___05Fdone;" in text
    assert "QData *count[NCORES];" in text and "IData *log_wr_ptr[NCORES];" in text
    assert '{"eng1__seed", nullptr, 8},' in text and '{"rst", nullptr, 1},' in text
    assert '"clk"' not in text                          # the harness toggles it itself
    assert '"eng0__done"' not in text                   # an output


def _write(directory, files):
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)


def test_same_stream_catches_a_different_record(tmp_path):
    run = {"log0.hex": b"0a\n0b\n", "log1.hex": b"1a\n", "wlog.hex": b"ff\n01\n02\n"}
    _write(tmp_path / "run", run)
    _write(tmp_path / "same", dict(run, **{"wlog.hex": b"01\n02\n"}))
    assert same_stream(tmp_path / "run", tmp_path / "same", 2) == []
    _write(tmp_path / "other", dict(run, **{"log1.hex": b"1b\n"}))
    problems = same_stream(tmp_path / "run", tmp_path / "other", 2)
    assert len(problems) == 1 and "core 1's access log differs at byte 1" in problems[0]
    _write(tmp_path / "wlog", dict(run, **{"wlog.hex": b"03\n"}))
    problems = same_stream(tmp_path / "run", tmp_path / "wlog", 2)
    assert len(problems) == 1 and "write log" in problems[0]


def _figures(raw: dict) -> dict:
    """Bench figures by name, with their rates, from the raw figures given."""
    return {name: bench._rates(dict(f)) for name, f in raw.items()}


def test_bench_compares_the_fast_path_with_its_own_harness():
    same = {"cycles": 1000, "accesses": 100}
    figs = _figures({
        "harness-fast": dict(same, loop_seconds=1.0, accesses_per_cpu_s=100.0),
        "fast-verilator": dict(same, loop_seconds=2.0, accesses_per_cpu_s=40.0),
        "fast-checked-verilator": dict(same, cycles=1001, loop_seconds=4.0)})
    r = bench.summarize(figs)
    assert r["fast-verilator / harness-fast (accesses/s)"] == 0.5
    assert r["fast-verilator / harness-fast (accesses per CPU s)"] == 0.4
    assert r["fast-checked-verilator / harness-fast (accesses/s)"] == 0.25
    problems = bench.check_same_stream(figs)
    assert problems == ["fast-checked-verilator and harness-fast disagree on cycles: 1001 vs "
                        "1000"]
    names = bench.figure_names(bench.BenchParams(paths=("fast",), mmus=("ours",)))
    assert names[:3] == ["harness-top", "harness-fast", "harness-fast-reclaim"]
    assert "harness-fast" not in bench.figure_names(bench.BenchParams(paths=("step",)))


def test_the_reclaim_figure_is_judged_against_the_harness_on_its_own_stream():
    figs = _figures({
        "harness-fast": {"cycles": 1000, "accesses": 100, "loop_seconds": 1.0},
        "harness-fast-reclaim": {"cycles": 800, "accesses": 200, "loop_seconds": 1.0,
                                 "accesses_per_cpu_s": 250.0},
        "reclaim-fast-verilator": {"cycles": 900, "accesses": 200, "loop_seconds": 4.0,
                                   "accesses_per_cpu_s": 100.0}})
    r = bench.summarize(figs)
    assert r["reclaim-fast-verilator / harness-fast-reclaim (accesses/s)"] == 0.25
    assert r["reclaim-fast-verilator / harness-fast-reclaim (accesses per CPU s)"] == 0.4
    assert not any(k.startswith("reclaim-fast-verilator / harness-fast ") for k in r)


@pytest.mark.sim
def test_harness_runs_the_fast_paths_accesses_in_the_same_cycles():
    """A fast-path run (Verilator, no kernel work) and the C++ harness from its snapshot: the
    ring files are byte-identical and the counts equal (harness_figure raises otherwise); the
    rings were drained on the way (more records than half a ring per core)."""
    env = {"FAST_ACCESSES": 10_000, "FAST_MODE": "uniform", "FAST_PREFAULT": 1,
           "FAST_KERNEL": "none", "FAST_PAGES": 16, "FAST_CHECKS": 1}
    f = harness_figure(cb.make_config(), SMALL, seed=3, env=env)
    assert f["same_stream"] and f["accesses"] == 10_000 == f["reference"]["accesses"]
    assert f["cycles"] == f["reference"]["cycles"] > 10_000
    assert f["drains"] >= 4 and f["cpu_seconds"] > 0


def _small_trace(path):
    """A trace of 1,500 accesses over 12 pages in three VMAs (one read-only), seeded."""
    import numpy as np

    from cosim.explore import trace as tr
    rng = np.random.default_rng(7)
    pages = np.array([0x10000, 0x11000, 0x12000, 0x40000, 0x41000, 0x42000, 0x43000, 0x44000,
                      0x7f000, 0x80000, 0x81000, 0x82000], dtype=np.uint64)
    va = pages[rng.integers(0, len(pages), 1500)] + rng.integers(0, 512, 1500).astype(
        np.uint64) * np.uint64(8)
    op = rng.choice([0, 1, 3], 1500, p=[0.6, 0.3, 0.1]).astype(np.uint8)
    op[va < np.uint64(0x13000)] = tr.TraceOp.LOAD          # a read-only VMA
    size = np.full(1500, 8, dtype=np.uint16)
    gap = rng.integers(1, 5, 1500).astype(np.uint32)
    t = tr.Trace(va, op, size, gap, int(gap.sum()), tr.derive_vmas(va, size, op, 0),
                 {"format": tr.FORMAT_VERSION, "command": ["synthetic"]})
    assert any(not v.prot & 2 for v in t.vmas) and len(t.vmas) == 3
    return tr.save(t, path)


@pytest.mark.sim
def test_harness_replays_a_recorded_trace_byte_for_byte(tmp_path):
    """A trace point's snapshot (the trace's records in the image, each core's replayed pages
    prefaulted): the harness runs the same accesses in the same cycles as the fast-path run,
    wrapping the trace, draining the rings on the way."""
    trace = _small_trace(tmp_path / "t.npz")
    env = {"FAST_ACCESSES": 10_000, "FAST_TRACE": trace, "FAST_PREFAULT": 1,
           "FAST_KERNEL": "none", "FAST_CHECKS": 1}
    f = harness_figure(cb.make_config(), SMALL, seed=2, env=env)
    assert f["same_stream"] and f["accesses"] == 10_000 == f["reference"]["accesses"]
    assert f["cycles"] == f["reference"]["cycles"] > 10_000
    assert f["drains"] >= 4


def test_a_snapshot_needs_every_page_resident():
    from cosim.fastrun import FastRun
    with pytest.raises(ValueError, match="FAST_SNAPSHOT needs FAST_PREFAULT=1"):
        FastRun(None, 1, {}, {"words_log2": 16}, accesses=10, pages=16, snapshot="x")


def test_the_trace_point_is_judged_against_the_harness_on_the_same_trace(tmp_path):
    figs = _figures({
        "harness-fast": {"cycles": 1000, "accesses": 100, "loop_seconds": 1.0},
        "harness-fast-trace": {"cycles": 900, "accesses": 400, "loop_seconds": 1.0,
                               "accesses_per_cpu_s": 500.0},
        "explore-trace-verilator": {"cycles": 950, "accesses": 400, "loop_seconds": 4.0,
                                    "accesses_per_cpu_s": 200.0}})
    r = bench.summarize(figs)
    assert r["explore-trace-verilator / harness-fast-trace (accesses/s)"] == 0.25
    assert r["explore-trace-verilator / harness-fast-trace (accesses per CPU s)"] == 0.4
    assert bench.check_same_stream(figs) == []
    figs["harness-fast-trace"]["accesses"] = 399
    assert bench.check_same_stream(figs) == [
        "explore-trace-verilator and harness-fast-trace disagree on accesses: 400 vs 399"]
    bp = bench.BenchParams(paths=("fast",), mmus=("ours",), trace=str(tmp_path / "none.npz"))
    assert "explore-trace-verilator" not in bench.figure_names(bp)
    (tmp_path / "t.npz").write_bytes(b"")
    bp.trace = str(tmp_path / "t.npz")
    assert bench.figure_names(bp)[-2:] == ["harness-fast-trace", "explore-trace-verilator"]
