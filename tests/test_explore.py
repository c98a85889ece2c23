"""TLB design exploration (cosim.explore): the grid of a specification, the point schema, the
golden TLB's replay of a stream (and a stream it must reject), the CSV and the Pareto front;
a tiny sweep on the RTL through a local Ray instance, with resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cosim.explore.golden import golden_tlb_check
from cosim.explore.plots import pareto_front
from cosim.explore.point import Point, PointError
from cosim.explore.schema import METRIC_NAMES, SCHEMA_VERSION, validate_result
from cosim.explore.spec import SpecError, grid, load_spec, parse_axis_values
from cosim.explore.stream import Stream
from pyrmap.arch import InvalKind
from pyrmap.pte import _PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, AccessType


def test_grid_is_the_product_and_leaves_out_ways_above_entries(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[design]\nentries = [4, 8]\nways = [1, 8, "full"]\n'
                    'replacement = ["plru", "fifo"]\n[workload]\nworkload = ["uniform", "zipf"]\n')
    points, skipped = grid(load_spec(spec))
    # 4 entries with 8 ways is left out (once per replacement); 8 entries "full" is 8 ways,
    # the same point as 8 ways: 4 designs of 4 entries, 4 of 8, times 2 workloads.
    assert skipped == 2
    assert len(points) == 16
    assert len({p.point_id for p in points}) == len(points)
    assert {p.design["ways"] for p in points if p.design["entries"] == 4} == {1, 4}


def test_points_run_round_robin_over_designs():
    from cosim.explore.sweep import interleave_designs
    points, _ = grid({"design": {"entries": [4, 8, 16]},
                      "workload": {"workload": ["uniform", "zipf"]}})
    order = [p.design["entries"] for p in interleave_designs(points)]
    assert order == [16, 8, 4, 16, 8, 4]          # the larger design first


def test_points_run_longest_first():
    """The design with the most work starts first, and each design's longest point first."""
    from cosim.explore.sweep import interleave_designs
    points, _ = grid({"design": {"entries": [8, 16]},
                      "workload": {"accesses": [1000, 50_000, 3000]}})
    points += grid({"design": {"entries": 4}, "workload": {"accesses": 200_000}})[0]
    order = [(p.design["entries"], p.workload["accesses"]) for p in interleave_designs(points)]
    assert order == [(4, 200_000), (16, 50_000), (8, 50_000), (16, 3000), (8, 3000),
                     (16, 1000), (8, 1000)]


def test_spec_and_point_errors_name_the_axis_and_the_rule(tmp_path):
    with pytest.raises(SpecError, match="'device_entries' is not supported: the device TLB's "
                                        "axis is named dev_entries"):
        grid({"design": {"device_entries": [8]}})
    with pytest.raises(SpecError, match="unknown design axis 'colour'"):
        grid({"design": {"colour": 1}})
    with pytest.raises(SpecError, match="workload must be one of"):
        grid({"workload": {"workload": "fork-storm"}})
    with pytest.raises(PointError, match="not a multiple of 3 ways"):
        Point({"entries": 8, "ways": 3}, {})
    with pytest.raises(PointError, match="pages must be a power of two"):
        Point({}, {"pages": 12})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SpecError, match="is not valid JSON"):
        load_spec(bad)
    assert parse_axis_values("8,16,full,true") == [8, 16, "full", True]


def test_cli_rejects_bad_input_in_one_line(capsys):
    from cosim.explore.cli import main
    assert main(["--entries", "8", "--ways", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a multiple of 3 ways" in err
    assert main(["--entries", "8,16", "--ways", "4", "--dry-run"]) == 0
    # A point's command runs that point alone.
    from cosim.explore.cli import _parser, build_spec
    p = Point({"entries": 16, "ways": 4, "svadu": False}, {"workload": "zipf"}, seed=3)
    argv = p.command("out").split()[2:]
    again, _ = grid(build_spec(_parser("sweep").parse_args(argv)))
    assert [q.point_id for q in again] == [p.point_id]


PTE = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U | _PAGE_A


def _stream(records, pte_writes=(), invals=()):
    """records: (core, start, done, va, op, fault, hit); one PTE per page at 0x1000 * vpn."""
    r = np.array(records, dtype=np.int64).reshape(-1, 7)
    n = len(r)
    arrays = {"core": r[:, 0], "start": r[:, 1], "done": r[:, 2],
              "va": r[:, 3].astype(np.uint64), "pa": (r[:, 3] & ~0xFFF) + 0x8000_0000,
              "op": r[:, 4], "fault": r[:, 5], "hit": r[:, 6],
              "squashed": np.zeros(n, np.int64), "ptep": (r[:, 3] >> 12) * 8,
              "core_asid": np.array([1]), "core_root": np.array([0])}
    pw = np.array(pte_writes, dtype=np.int64).reshape(-1, 3)
    arrays.update(pte_ptep=pw[:, 0], pte_cycle=pw[:, 1], pte_value=pw[:, 2].astype(np.uint64))
    iv = np.array(invals, dtype=np.int64).reshape(-1, 5)
    for i, k in enumerate(("inval_core", "inval_cycle", "inval_kind", "inval_va",
                           "inval_asid")):
        arrays[k] = iv[:, i]
    return Stream(arrays)


DESIGN = {"tlb_entries": 2, "tlb_ways": 2, "replacement": "plru", "asid_bits": 9,
          "superpage_entries": 4, "svadu": True}
L, S = int(AccessType.LOAD), int(AccessType.STORE)


def _three_pages(hits):
    """Pages 1, 2, 1, 3, 1 (2 entries, PLRU): miss, miss, hit, miss (evicts 2), hit; then a
    store to page 1, whose entry is clean (filled by a load): dropped and re-walked."""
    recs = [(0, 10 * k, 10 * k + 5, (vpn << 12) | 8, op, 0, h)
            for k, (vpn, op, h) in enumerate(zip((1, 2, 1, 3, 1, 1, 1), (L, L, L, L, L, S, S),
                                                 hits))]
    ptes = [((vpn << 12) >> 12 << 3, 0, PTE) for vpn in (1, 2, 3)]
    return _stream(recs, ptes)


def test_golden_tlb_agrees_with_a_consistent_stream():
    out = golden_tlb_check(_three_pages([0, 0, 1, 0, 1, 0, 1]), DESIGN)
    assert out["verdict"] == "pass", out
    assert (out["hits"], out["misses"]) == (3, 4)


@pytest.mark.parametrize("flip", [2, 4, 5, 6])
def test_golden_tlb_fails_a_stream_whose_hit_bit_is_wrong(flip):
    hits = [0, 0, 1, 0, 1, 0, 1]
    hits[flip] ^= 1
    out = golden_tlb_check(_three_pages(hits), DESIGN)
    assert out["verdict"] == "fail" and out["disagreements"] >= 1
    assert f"record {flip}" in out["detail"]


def test_golden_tlb_applies_invalidations_at_their_ack():
    recs = [(0, 0, 5, 0x1008, L, 0, 0), (0, 20, 25, 0x1010, L, 0, 0)]
    # VA_ASID invalidation of page 1 acknowledged at cycle 10: the second access misses.
    s = _stream(recs, [(8, 0, PTE)], [(0, 10, 3, 0x1000, 1)])
    assert golden_tlb_check(s, DESIGN)["verdict"] == "pass"
    s = _stream(recs, [(8, 0, PTE)], [(0, 30, 3, 0x1000, 1)])
    assert golden_tlb_check(s, DESIGN)["verdict"] == "fail"


def test_random_replacement_is_not_exercised():
    out = golden_tlb_check(_three_pages([0] * 7), dict(DESIGN, replacement="random"))
    assert out["verdict"] == "not exercised"


def test_pareto_front():
    xs = [1, 2, 3, 4, 2]
    ys = [5, 3, 4, 1, 6]
    assert pareto_front(xs, ys) == [0, 1, 3]


def test_schema_rejects_a_failed_check_on_an_ok_point():
    r = {"schema": SCHEMA_VERSION, "point_id": "x", "git_commit": "c", "tools": {},
         "design": {}, "workload": {}, "seed": 1, "metrics": {"hits": 1}, "status": "ok",
         "error": None, "checks": {"golden_tlb": {"verdict": "pass"}}}
    validate_result(r)
    with pytest.raises(ValueError, match="must have status 'failed'"):
        validate_result(dict(r, checks={"golden_tlb": {"verdict": "fail"}}))
    with pytest.raises(ValueError, match="unknown metrics"):
        validate_result(dict(r, metrics={"speed": 1}))
    assert "mpki" in METRIC_NAMES


@pytest.mark.sim
def test_tiny_sweep_on_local_ray_with_resume(tmp_path):
    """Two points (zipf without a kernel, reclaim with one) as Ray tasks on a local instance,
    on the RTL (the fast path's default build, shared with test_fast), each cross-checked
    against the golden TLB; the CSV, the JSON and the plots are written; a second run reuses
    both results."""
    import ray
    from cosim.explore.cli import main
    from cosim.explore.timeline import FAST_PHASES
    out = tmp_path / "res"
    argv = ["--entries", "8", "--accesses", "1500", "--pages", "16",
            "--workload", "zipf,reclaim", "--period", "6000",
            "--out", str(out), "--ray", "local", "--quiet"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(argv) == 0
        results = [json.loads(p.read_text()) for p in sorted((out / "points").glob("*.json"))]
        assert len(results) == 2
        for r in results:
            assert r["status"] == "ok" and r["checks"]["golden_tlb"]["verdict"] == "pass"
            m = r["metrics"]
            assert m["accesses"] >= 1500 and m["hits"] + m["misses"] == m["accesses"]
            assert m["faults"] > 0 and m["walks"] >= m["misses"]
            assert 1 <= m["mem_accesses_per_walk"] <= 6
            assert m["shootdowns"] > 0          # the fault handler's flushes, reclaim's
            assert (m["pages_reclaimed"] > 0) == (r["workload"]["workload"] == "reclaim")
            assert r["checks"]["golden_tlb"]["hits"] == m["hits"]
            phases = [ph["phase"] for ph in r["timeline"]]
            assert phases == [ph for ph in FAST_PHASES if ph in phases], phases
            assert {"compile", "sim_loop", "golden_tlb"} <= set(phases)
            assert r["cpu_seconds"] >= r["timeline"][phases.index("sim_loop")]["cpu"] > 0
        assert (out / "sweep.csv").read_text().count("\n") == 3
        assert (out / "miss_rate.png").stat().st_size > 0
        # A passed point keeps its stream and report, not the simulator's scratch files.
        assert len(list(out.glob("runs/*/stream.npz"))) == 2
        assert not list(out.glob("runs/*/*.hex"))
        before = {p: p.stat().st_mtime for p in (out / "points").glob("*.json")}
        assert main(argv) == 0
        assert {p: p.stat().st_mtime for p in (out / "points").glob("*.json")} == before
    finally:
        ray.shutdown()


def test_plots_from_results(tmp_path):
    """Every figure is drawn from point results that have what it needs, and a figure whose
    data is missing is reported as not drawn, with the reason."""
    from cosim.explore.plots import make_plots
    from cosim.explore.run import HIST_EDGES
    rows = []
    for k, (entries, cores) in enumerate(((8, 1), (16, 2), (32, 4))):
        hist = [0] * (len(HIST_EDGES) - 1)
        hist[4 + k] = 10
        rows.append({"status": "ok", "design": {"entries": entries, "ways": entries,
                                                "replacement": "plru", "cores": cores,
                                                "latency": 1},
                     "workload": {"workload": "reclaim"},
                     "area": {"transistors": 1000 * entries},
                     "metrics": {"miss_rate": 0.5 / (k + 1), "shootdowns": 10,
                                 "inval_cycles": 20 * cores,
                                 "walk_latency_hist": [list(HIST_EDGES), hist]}})
    rows[0]["design"]["dev_entries"] = 8
    rows[0]["metrics"].update(dev_accesses=40, dev_hit_rate=0.7)
    written, skipped = make_plots(rows, tmp_path)
    assert sorted(p.name for p in written) == ["area_pareto.png", "device_tlb.png",
                                                "miss_rate.png", "shootdown_cost.png",
                                                "walk_latency_cdf.png"]
    assert not skipped and all(p.stat().st_size > 1000 for p in written)
    for r in rows:
        r["area"] = None
    rows[0]["metrics"]["dev_accesses"] = 0
    written, skipped = make_plots(rows, tmp_path / "b")
    assert skipped == {"area_pareto": "no point has a measured area",
                       "device_tlb": "no point drove the device TLB"}


def test_workload_kinds_name_kernel_scenarios_the_fast_path_runs():
    """One registry of workload kinds: each names a stream and a kernel scenario, and each
    scenario's operations are kernel-step operations of the fast path."""
    from cosim.explore.point import KERNEL_SCENARIOS, WORKLOADS
    from cosim.explore.run import kernel_env
    from cosim.fastrun import DEFAULT_OPS, KERNEL_OPS
    for name, spec in WORKLOADS.items():
        assert spec["kernel"] in KERNEL_SCENARIOS, name
    for kernel, ops in KERNEL_SCENARIOS.items():
        env = kernel_env(kernel)
        assert all(op in KERNEL_OPS for op in env.get("FAST_OPS", "").split(",") if op)
        assert (env["FAST_KERNEL"] == "none") == (kernel == "none")
    assert kernel_env("reclaim") == {"FAST_KERNEL": "reclaim"} and "fork" not in DEFAULT_OPS
    assert kernel_env("fork-cow")["FAST_OPS"] == "fork"


def test_storm_takes_ranges_and_its_segv_handler_gives_them_back():
    """The mprotect/munmap storm on the golden model: a fault in a range it took is served
    by giving the range back (the program's SIGSEGV handler); a fault elsewhere is a
    segmentation fault; the fork storm keeps two children."""
    from pyrmap.errors import SegmentationFault
    from pyrmap.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    from pyrmap.scenario import System
    from cosim.faststorm import LIVE_CHILDREN, Storm
    s = System(seed=1, nframes=256, ncores=2)
    mm = s.new_process()
    base = s.mmap(mm, 0, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    storm = Storm(s, None, "storm-1", ("fork", "mprotect", "munmap"))
    storm.attach([mm], [[(base, base + 16 * 4096)]])
    storm.step()
    taken = list(storm.taken)
    assert sorted(t.op for t in taken) == ["mprotect", "munmap"]
    munmapped = next(t for t in taken if t.op == "munmap")
    assert mm.find_vma(munmapped.lo) is None or mm.find_vma(munmapped.lo).vm_start > munmapped.lo
    for t in taken:
        storm.fault(mm, t.lo, AccessType.STORE)
    assert not storm.taken and storm.figures()["segv_restores"] == 2
    assert mm.find_vma(munmapped.lo).vm_start <= munmapped.lo
    with pytest.raises(SegmentationFault):
        storm.fault(mm, base + 64 * 4096, AccessType.LOAD)
    for _ in range(3):
        storm.step()
    f = storm.figures()
    assert f["forks"] == 4 and f["live_children"] == LIVE_CHILDREN and f["exits"] == 2
    assert f["mprotects"] + f["munmaps"] >= 4


@pytest.mark.sim
def test_fork_and_mprotect_storm_points_on_the_rtl(tmp_path, monkeypatch):
    """fork/COW and mprotect/munmap storms beside the engines on the RTL: COW faults,
    forks, ranges taken and given back, shootdowns; every checker of the run passes and the
    golden TLB agrees with every hit and miss.  The results folder is relative, as
    ``make explore`` gives it (the simulator, running in the point's folder, still finds
    where the stream goes)."""
    from cosim.explore.cli import main
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    assert main(["--entries", "8", "--accesses", "1500", "--pages", "16",
                 "--workload", "fork-cow,mprotect-munmap", "--period", "6000",
                 "--out", "res", "--jobs", "1", "--quiet"]) == 0
    results = {r["workload"]["workload"]: r for r in
               (json.loads(p.read_text()) for p in (out / "points").glob("*.json"))}
    for r in results.values():
        assert r["status"] == "ok" and r["checks"]["golden_tlb"]["verdict"] == "pass", r
        assert r["metrics"]["shootdowns"] > 0
    fork = results["fork-cow"]["metrics"]
    assert fork["forks"] > 0 and fork["cow_faults"] > 0
    prot = results["mprotect-munmap"]["metrics"]
    assert prot["mprotects"] > 0 and prot["munmaps"] > 0 and prot["segv_restores"] > 0


def _device_report(**perf_changes):
    perf = {"lookups": 38, "hits": 27, "misses": 11, "fills": 14, "invals": 53,
            "young_clears": 11}
    perf.update(perf_changes)
    return {"device": {"perf": perf, "driver": {"accesses": 38, "fills": 14, "invals": 53,
                                                "young_set": 11}},
            "device_figures": {"misses": 11, "faults": 14},
            "checkers": [{"name": "tlb", "verdict": "PASS"},
                         {"name": "scoreboard", "verdict": "PASS"}],
            "scoreboard": {"translations": 318}, "passed": True}


def test_device_counters_check_compares_the_rtl_with_the_driver():
    from cosim.explore.devpoint import device_counters_check, scoreboard_check
    assert device_counters_check(_device_report())["verdict"] == "pass"
    bad = device_counters_check(_device_report(misses=12, hits=26))
    assert bad["verdict"] == "fail" and "misses 12 vs requester misses 11" in bad["detail"]
    bad = device_counters_check(_device_report(invals=52))
    assert bad["verdict"] == "fail" and "invals 52 vs driver invals 53" in bad["detail"]
    assert device_counters_check({"device": None})["verdict"] == "not exercised"
    assert scoreboard_check(_device_report())["verdict"] == "pass"
    rep = _device_report()
    rep["checkers"][0]["verdict"] = "FAIL"
    assert scoreboard_check(rep)["verdict"] == "fail"


def test_dev_entries_is_a_design_axis():
    p = Point({"dev_entries": 2}, {"workload": "device-reclaim"})
    assert p.mmu["dev_entries"] == 2 and "/dev2/" in p.label()
    assert Point({}, {"workload": "device-reclaim"}).point_id != p.point_id
    with pytest.raises(PointError, match="named dev_entries"):
        Point({"device_entries": 2}, {})


@pytest.mark.sim
def test_device_point_on_the_step_path(tmp_path):
    """The device TLB axis: a device-reclaim point runs the reclaim scenario with its device
    on the RTL; the device's counters match the host driver's and every checker passes."""
    from cosim.explore.point import Point as P
    from cosim.explore.run import run_point
    r = run_point(P({"dev_entries": 2}, {"workload": "device-reclaim", "accesses": 120}),
                  tmp_path)
    assert r["status"] == "ok", r["error"]
    m = r["metrics"]
    assert m["dev_accesses"] == m["dev_hits"] + m["dev_misses"] > 0 and m["dev_invals"] > 0
    assert m["accesses"] > 0 and m["shootdowns"] > 0
    assert r["checks"]["device_counters"]["verdict"] == "pass"
    assert r["checks"]["scoreboard"]["verdict"] == "pass"
    assert r["workload"]["kind"] == "scenario"


def test_lru_bound_counts_squashed_attempts_as_lookups():
    """A squashed attempt missed and its restarted walk filled the entry its re-issue hits:
    the bound sees both lookups, so one miss on one page passes (OPT 1); a stream whose only
    miss is gone fails."""
    from cosim.explore.run import lru_bound_check
    arrays = {"core": np.zeros(3, np.int64), "start": np.array([1, 5, 9]),
              "va": np.array([0x4000, 0x4008, 0x4010], dtype=np.uint64),
              "fault": np.zeros(3, np.int64), "hit": np.array([0, 1, 1]),
              "squashed": np.array([1, 0, 0])}
    design = {"tlb_entries": 8, "tlb_ways": 8}
    assert lru_bound_check(Stream(arrays), design)["verdict"] == "pass"
    assert lru_bound_check(Stream(dict(arrays, hit=np.array([1, 1, 1]))),
                           design)["verdict"] == "fail"


def test_stream_recorder_finds_each_records_leaf_and_saves_what_it_loads(tmp_path):
    """Leaf PTE addresses are looked up once per page of a drained batch and given to every
    record of that page (-1 where no table maps it); a saved stream loads back equal, with
    every per-record array as int64 (or uint64 for the VA)."""
    from cosim.explore.stream import RECORD_KEYS, StreamRecorder, load_stream
    from pyrmap.physmem import PhysMem
    mem = PhysMem(8)
    root, l1, l0 = 1, 2, 3
    mem.write((root << 12) + 0 * 8, (l1 << 10) | _PAGE_V)
    mem.write((l1 << 12) + 0 * 8, (l0 << 10) | _PAGE_V)
    mem.write((l0 << 12) + 5 * 8, (7 << 10) | _PAGE_V | _PAGE_R | _PAGE_W)
    rec = StreamRecorder(mem)
    va = np.array([0x5008, 0x6000, 0x5010, 1 << 30], dtype=np.uint64)
    fields = {"va": va, "start": np.arange(4), "done": np.arange(4) + 3,
              "pa": np.array([0x7008, 0, 0x7010, 0]), "op": np.array([L, L, S, L]),
              "fault": np.array([0, 1, 0, 1]), "hit": np.array([0, 0, 1, 0]),
              "squashed": np.array([0, 0, 0, 1])}
    rec.records(1, fields, asid=3, root=root)
    rec.pte_write((l0 << 12) + 5 * 8, 2, 0, 1)
    rec.acked(1, 4, 3, 0x5000, 3)
    path = tmp_path / "s.npz"
    rec.save(path)
    s = load_stream(path)
    assert s["ptep"].tolist() == [(l0 << 12) + 40, (l0 << 12) + 48, (l0 << 12) + 40, -1]
    assert s["core"].tolist() == [1] * 4 and len(s) == 4
    for key in RECORD_KEYS:
        assert s[key].dtype == (np.uint64 if key == "va" else np.int64), key
    for key, value in fields.items():
        assert s[key].tolist() == np.asarray(value).tolist(), key
    assert s["inval_va"].tolist() == [0x5000] and s["pte_cycle"].tolist() == [2]


def test_timeline_records_each_phase_with_wall_and_cpu():
    from cosim.explore.timeline import Timeline
    t = Timeline()
    with t.phase("golden_tlb"):
        sum(range(200_000))
    with pytest.raises(ValueError), t.phase("metrics"):
        raise ValueError("a failing phase is timed too")
    t.add("sim_loop", 2.0, 1.5)
    assert [p["phase"] for p in t.as_list()] == ["golden_tlb", "metrics", "sim_loop"]
    assert t.seconds("golden_tlb")[1] > 0 and t.seconds("sim_loop") == (2.0, 1.5)
    assert t.total_cpu() >= 1.5


def test_golden_tlb_repeats_the_replacement_touch_of_a_page_looked_up_again():
    """Pages 1, 2, 1, 2, 1, 3, 2 in 2 PLRU entries: the fifth lookup (page 1, looked up
    before with no fill since) must touch page 1's way again, so page 3 evicts page 2 and the
    last access misses; a stream in which it hits fails."""
    def stream(last_hit):
        recs = [(0, 10 * k, 10 * k + 5, (vpn << 12) | 8, L, 0, h)
                for k, (vpn, h) in enumerate(zip((1, 2, 1, 2, 1, 3, 2),
                                                 (0, 0, 1, 1, 1, 0, last_hit)))]
        return _stream(recs, [((vpn << 12) >> 12 << 3, 0, PTE) for vpn in (1, 2, 3)])
    assert golden_tlb_check(stream(0), DESIGN)["verdict"] == "pass"
    out = golden_tlb_check(stream(1), DESIGN)
    assert out["verdict"] == "fail" and "record 6" in out["detail"]


@pytest.mark.parametrize("seed", range(6))
def test_golden_tlb_takes_repeated_lookups_as_hits_only_where_the_full_replay_does(seed):
    """Random streams over 4 pages, 2 cores, invalidations between: with the RTL's hit bits
    set to the golden TLB's own decisions (full replay) the check passes, taking many
    repeated lookups as hits without looking them up; with one bit flipped it fails with
    the full replay's disagreements."""
    from cosim.explore.golden import _repeats, _replay
    rng = np.random.default_rng(seed)
    recs, t = [], [0, 0]
    for _ in range(300):
        c = int(rng.integers(2))
        t[c] += int(rng.integers(1, 4))
        start, done = t[c], t[c] + int(rng.integers(0, 3))
        t[c] = done
        vpn = int(rng.choice([1, 1, 1, 2, 3, 4]))
        recs.append((c, start, done, (vpn << 12) | 8, int(rng.choice([L, L, S])), 0, 0))
    ptes = [((vpn << 12) >> 12 << 3, 0, PTE) for vpn in (1, 2, 3, 4)]
    invals = []
    for _ in range(6):
        c = int(rng.integers(2))
        invals.append((c, int(rng.integers(max(t))), int(InvalKind.VA_ASID),
                       int(rng.integers(1, 5)) << 12, c + 1))
    s = _stream(recs, ptes, invals)
    s.arrays.update(core_asid=np.array([1, 2]), core_root=np.array([0, 0]))
    _, model = _replay(s, DESIGN, 5, None)
    s.arrays["hit"] = model.astype(s["hit"].dtype)
    assert _repeats(s).sum() > 20
    out = golden_tlb_check(s, DESIGN)
    assert out == _replay(s, DESIGN, 5, None)[0] and out["verdict"] == "pass", out
    k = int(rng.integers(len(recs)))
    s.arrays["hit"][k] ^= 1
    out = golden_tlb_check(s, DESIGN)
    assert out == _replay(s, DESIGN, 5, None)[0] and out["verdict"] == "fail", out


def test_golden_tlb_looks_a_repeated_page_up_again_after_an_invalidation_between():
    """Page 1 loaded three times on one core, an invalidation of page 1 acknowledged between
    the second and third: the third must miss.  An RTL that ignored the invalidation (the
    third hits) fails, though that lookup repeats the one before it."""
    recs = [(0, 10 * k, 10 * k + 5, (1 << 12) | 8, L, 0, h) for k, h in enumerate((0, 1, 1))]
    ptes = [(1 << 3, 0, PTE)]
    inval = [(0, 17, int(InvalKind.VA_ASID), 1 << 12, 1)]
    assert golden_tlb_check(_stream(recs[:2] + [recs[2][:6] + (0,)], ptes, inval),
                            DESIGN)["verdict"] == "pass"
    out = golden_tlb_check(_stream(recs, ptes, inval), DESIGN)
    assert out["verdict"] == "fail" and "record 2" in out["detail"], out
