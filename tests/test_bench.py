"""The benchmark (cosim.bench): the shared workload, the harness's port binding, the figures'
arithmetic and checks, and the plain cocotb driver on both simulators (same stream, same
counts).  The C++ harness build (~1 min) and the whole ``make bench`` are slow tests."""

import json
import sys

import pytest

from cosim import bench
from cosim import build as cb
from cosim.bench import Workload, build_image, xorshift_stream


def test_workload_errors():
    with pytest.raises(ValueError, match=r"Workload page count must be 1\.\.512, not 0"):
        Workload(npages=0)
    with pytest.raises(ValueError, match=r"Seed must be a non-negative integer, not -1"):
        Workload(seed=-1)
    with pytest.raises(ValueError, match=r"Store ratio must be between 0 and 1, not 1\.5"):
        Workload(store_ratio=1.5)


def _walk(words, vaddr):
    """Sv39 walk of the image from the root frame: the leaf's frame, or None."""
    from pyrmap.pte import pte_leaf, pte_pfn, pte_present
    table = bench.ROOT_FRAME
    for level in (2, 1, 0):
        e = int(words[table * 512 + ((vaddr >> (12 + 9 * level)) & 511)])
        if not pte_present(e):
            return None
        if pte_leaf(e):
            return pte_pfn(e) if level == 0 else None
        table = pte_pfn(e)
    return None


@pytest.mark.parametrize("seed", [1, 7])
def test_stream_is_deterministic_and_matches_the_image(seed):
    wl = Workload(npages=16, seed=seed, store_ratio=0.25)
    words = build_image(wl)
    assert len(words) == wl.nframes * 512
    a = [next(s) for s in [xorshift_stream(wl, 0)] for _ in range(400)]
    b = [next(s) for s in [xorshift_stream(wl, 0)] for _ in range(400)]
    c = [next(s) for s in [xorshift_stream(wl, 1)] for _ in range(400)]
    assert a == b, f"seed {seed}: the stream is not deterministic"
    assert a != c, f"seed {seed}: cores 0 and 1 draw the same stream"
    stores = sum(1 for _, st, _, _ in a if st)
    assert 40 <= stores <= 160, f"seed {seed}: {stores} stores of 400 at ratio 0.25"
    for vaddr, _, _, paddr in a:
        assert vaddr & 7 == 0 and paddr & 0xFFF == vaddr & 0xFFF
        assert _walk(words, vaddr) == paddr >> 12, f"seed {seed}: 0x{vaddr:x}"
    assert _walk(words, bench.VA_BASE + 16 * 4096) is None     # past the mapped pages


def test_ports_header(tmp_path):
    cfg = cb.make_config(ncores=3, asid_bits=12)
    h = tmp_path / "bench_ports.h"
    bench.write_ports_header(cfg, h)
    text = h.read_text()
    assert "#define NCORES 3" in text
    assert "c[2].req_valid = &t->cpu2___05Freq___05Fvalid;" in text
    assert "SData *req_asid;" in text and "QData *resp_paddr;" in text
    assert "t->dev___05Ffault___05Fack = 0;" in text
    assert "cpu3" not in text
    with pytest.raises(ValueError, match="Port width 65 is wider than 64 bits"):
        bench._ctype(65)


def test_summary_ratios_and_rates():
    figs = {n: bench._rates(f) for n, f in {
        "harness-top": {"cycles": 1_000_000, "accesses": 100_000, "loop_seconds": 1.0},
        "plain-verilator": {"cycles": 10_000, "accesses": 1_000, "loop_seconds": 1.0},
        "plain-icarus": {"cycles": 10_000, "accesses": 1_000, "loop_seconds": 2.0},
        "cosim-verilator": {"cycles": 800, "accesses": 100, "loop_seconds": 0.5},
    }.items()}
    assert figs["plain-icarus"]["cycles_per_s"] == 5000.0
    r = bench.summarize(figs)
    assert r["harness-top / plain-verilator (cycles/s)"] == 100.0
    assert r["harness-top / cosim-verilator (accesses/s)"] == 500.0
    assert r["plain-verilator / cosim-verilator (accesses/s)"] == 5.0
    assert r["verilator / icarus, plain (cycles/s)"] == 2.0
    assert "verilator / icarus, cosim (accesses/s)" not in r     # cosim-icarus missing


def test_same_stream_check_catches_a_disagreement():
    same = {"accesses": 10, "loads": 7, "stores": 3, "checksum": 99, "mem_ops": 30}
    figs = {"plain-icarus": dict(same), "plain-verilator": dict(same),
            "harness-top": {"check": dict(same)}}
    assert bench.check_same_stream(figs) == []
    figs["harness-top"]["check"] = dict(same, checksum=98)
    problems = bench.check_same_stream(figs)
    assert problems and "disagree on checksum" in problems[0]


def test_measure_reports_wall_and_peak_rss():
    code = "import numpy; a = numpy.ones(40_000_000 // 8); print(a.sum())"
    rc, wall, rss, out, err = bench.measure([sys.executable, "-c", code])
    assert rc == 0 and out.strip() == "5000000.0", err
    assert rss >= 40, f"peak RSS {rss} MiB for a 40 MB array"
    assert wall > 0
    rc, *_ = bench.measure([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert rc == 3


def test_cli_rejects_bad_arguments(capsys):
    assert bench.main(["--plain-cycles", "0"]) == 2
    assert "argument --plain-cycles: must be at least 1, not 0" in capsys.readouterr().err
    assert bench.main(["--npages", "600"]) == 2
    assert "argument --npages: must be at most 512, not 600" in capsys.readouterr().err
    assert bench.main(["--name", "../x"]) == 2
    assert "argument --name: a results name is a file name" in capsys.readouterr().err


def test_plain_driver_same_stream_on_both_simulators():
    """The plain cocotb driver, 3000 cycles on Icarus and on Verilator: every translation
    right, and both simulators complete the same accesses with the same checksum."""
    bp = bench.BenchParams(seed=3, npages=24, plain_cycles=3000)
    config = cb.make_config()
    figs = {f"plain-{sim}": bench.run_figure(f"plain-{sim}", config, bp)
            for sim in ("icarus", "verilator")}
    for name, f in figs.items():
        assert f["errors"] == 0 and f["accesses"] > 100, (name, f)
        assert f["loads"] + f["stores"] == f["accesses"]
    assert bench.check_same_stream(figs) == [], figs


def test_cva6_figures_beside_ours():
    """The step figures on CVA6's MMU (Verilator): the plain driver on a Svade image (A and D
    set: no walker sets them) gets every translation right, the figures are named and run
    beside ours, and the side-by-side table pairs each with our MMU's Verilator figure; the
    same-stream check compares our MMU's simulators only."""
    bp = bench.BenchParams(seed=3, npages=24, plain_cycles=3000, sims=("icarus",),
                           paths=("step",))
    assert bench.figure_names(bp)[-3:] == ["plain-cva6", "cosim-cva6", "reclaim-cva6"]
    assert bench.figure_names(bench.BenchParams(mmus=("ours",), paths=("step",))) == [
        "harness-top", "plain-verilator", "plain-icarus", "cosim-verilator", "cosim-icarus",
        "reclaim-verilator", "reclaim-icarus"]
    assert bench.figure_names(bench.BenchParams(mmus=("cva6",))) == [
        "plain-cva6", "cosim-cva6", "reclaim-cva6"]
    f = bench.run_figure("plain-cva6", cb.make_config(), bp)
    assert f["errors"] == 0 and f["accesses"] > 100 and f["mem_ops"] > 0, f
    assert f["sim"] == "verilator"
    ours = dict(f, accesses=f["accesses"] + 1, cycles=f["cycles"])
    figs = {n: bench._rates(dict(x)) for n, x in (("plain-cva6", f), ("plain-verilator", ours))}
    assert bench.check_same_stream(figs) == []          # one of ours: nothing to compare
    table = bench.side_by_side(figs)
    assert set(table) == {"plain"} and table["plain"]["cva6"]["accesses"] == f["accesses"]
    assert table["plain"]["ours"]["cycles_per_access"] == round(f["cycles"] / ours["accesses"],
                                                                 2)
    lines = bench.format_side_by_side(table)
    assert lines[2].split()[:2] == ["plain", "ours"] and lines[3].split()[:2] == ["plain",
                                                                                  "cva6"]
    assert "plain-cva6 / plain-verilator (accesses/s)" in bench.summarize(figs)


def test_cosim_throughput_figure_checks_every_access():
    bp = bench.BenchParams(seed=2, npages=8, cosim_accesses=40)
    f = bench.run_figure("cosim-icarus", cb.make_config(), bp)
    assert f["accesses"] == 80, f
    assert f["host"]["resumes"] >= 80
    shadow = [c for c in f["checkers"] if c["name"] == "shadow"]
    assert shadow and shadow[0]["checks"] > 0 and shadow[0]["verdict"] == "PASS", f["checkers"]


@pytest.mark.slow
def test_harness_agrees_with_the_plain_driver():
    """The Python-free harness (built with Verilator, ~1 min the first time) issues the same
    stream: over the same cycles it completes the same accesses as the plain driver."""
    bp = bench.BenchParams(seed=5, npages=20, plain_cycles=4000, harness_cycles=100_000)
    config = cb.make_config()
    figs = {"harness-top": bench.run_figure("harness-top", config, bp),
            "plain-verilator": bench.run_figure("plain-verilator", config, bp)}
    assert figs["harness-top"]["errors"] == 0 and figs["harness-top"]["accesses"] > 1000
    assert bench.check_same_stream(figs) == [], json.dumps(figs, default=str)


@pytest.mark.slow
def test_make_bench_small(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    rc = bench.main(["--name", "t", "--plain-cycles", "2000", "--harness-cycles", "50000",
                     "--cosim-accesses", "20", "--repeat", "1", "--path", "step"])
    res = json.loads((tmp_path / "t.json").read_text())
    assert rc == 0, res["errors"]
    assert "notes" not in res           # measured notes live in bench/NOTES.md
    assert set(res["figures"]) == {"harness-top", "plain-verilator", "plain-icarus",
                                   "cosim-verilator", "cosim-icarus", "reclaim-verilator",
                                   "reclaim-icarus", "plain-cva6", "cosim-cva6",
                                   "reclaim-cva6"}
    assert set(res["mmus"]) == {"plain", "cosim", "reclaim"}
    assert res["mmus"]["reclaim"]["cva6"]["accesses"] == \
        res["mmus"]["reclaim"]["ours"]["accesses"]
    for f in res["figures"].values():
        assert f["wall_seconds"] > 0 and f["peak_rss_mib"] > 0
    assert res["ratios"]["harness-top / plain-verilator (cycles/s)"] > 1


@pytest.mark.sim
def test_explore_figure_is_one_checked_sweep_point():
    """The exploration figure: one sweep point on the bench's design, timed whole, with its
    cross-checks passing; named among the fast path's figures and compared with the harness."""
    bp = bench.BenchParams(seed=1, npages=16, fast_accesses=20_000)
    assert bench.EXPLORE in bench.figure_names(bench.BenchParams(paths=("fast",)))
    assert bench.EXPLORE not in bench.figure_names(bench.BenchParams(sims=("icarus",)))
    f = bench.run_figure(bench.EXPLORE, cb.make_config(), bp)
    assert f["accesses"] >= 2000 and f["checks"]["golden_tlb"] == "pass", f
    assert f["loop_seconds"] >= f["run_seconds"] > 0
    figs = {n: bench._rates(dict(x)) for n, x in (
        (bench.EXPLORE, f), ("harness-fast", {"cycles": 10 ** 6, "accesses": 10 ** 6,
                                              "loop_seconds": 1.0}))}
    assert bench.summarize(figs)[f"{bench.EXPLORE} / harness-fast (accesses/s)"] > 0
