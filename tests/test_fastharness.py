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
    assert "reg clk = 1'b0;\n  always #5 clk = ~clk;\n" in top and "input clk" not in top
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


def test_bench_compares_the_fast_path_with_its_own_harness():
    same = {"cycles": 1000, "accesses": 100}
    figs = {n: bench._rates(dict(f)) for n, f in {
        "harness-fast": dict(same, loop_seconds=1.0, accesses_per_cpu_s=100.0),
        "fast-verilator": dict(same, loop_seconds=2.0, accesses_per_cpu_s=40.0),
        "fast-checked-verilator": dict(same, cycles=1001, loop_seconds=4.0)}.items()}
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
    figs = {n: bench._rates(dict(f)) for n, f in {
        "harness-fast": {"cycles": 1000, "accesses": 100, "loop_seconds": 1.0},
        "harness-fast-reclaim": {"cycles": 800, "accesses": 200, "loop_seconds": 1.0,
                                 "accesses_per_cpu_s": 250.0},
        "reclaim-fast-verilator": {"cycles": 900, "accesses": 200, "loop_seconds": 4.0,
                                   "accesses_per_cpu_s": 100.0}}.items()}
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
