"""``make stress`` (cosim.stress): its short form on Verilator (two seeds in parallel worker
processes, every checker on), resume, the per-seed wall-clock limit, the ETA and the
summary's plain statement of whether the full size was met."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosim import stress as st

pytestmark = pytest.mark.sim

SHORT = ["--sim", "verilator", "--accesses", "1500", "--nframes", "128"]


def test_stress_short_form(tmp_path):
    out = tmp_path / "stress.json"
    text = io.StringIO()
    assert st.main(SHORT + ["--seeds", "2", "--jobs", "2", "--json", str(out)], out=text) == 0
    summary = json.loads(out.read_text())
    assert summary["passed"] and summary["total_violations"] == 0 and summary["jobs"] == 2
    run = summary["runs"][0]
    assert run["total_violations"] == 0 and run["seeds_passed"] == 2
    assert [r["seed"] for r in run["runs"]] == [1, 2]
    for r in run["runs"]:
        assert r["accesses"] >= 1500 and r["cycles"] > r["accesses"]
        assert r["cpu_seconds"] > 0 and r["peak_rss_mb"] > 0
        # every checker on and exercised: each made checks and passed
        assert set(r["verdicts"]) == set(r["checks"]) >= {"tlb", "frame", "shadow"}
        assert all(v == "PASS" for v in r["verdicts"].values()), r["verdicts"]
        assert all(n > 0 for n in r["checks"].values()), r["checks"]
        assert r["not_exercised"] == []
        # a passed seed keeps its report and log, not its rings' record files
        assert not list(Path(r["run_dir"]).glob("*.hex"))
        assert (Path(r["run_dir"]) / "report.json").exists()
        # written as the seed ended, beside its log
        assert json.loads((tmp_path / "stress-seeds" / f"verilator-seed{r['seed']}.json")
                          .read_text())["passed"]
    # a short form is not the full stress, and the summary says so
    assert summary["meets_full_size"] is False and "NOT the full size" in summary["verdict"]
    # progress from the first second: the plan with an ETA before any seed ends
    lines = text.getvalue().splitlines()
    first_end = next(i for i, line in enumerate(lines) if ": PASS" in line)
    assert any("ETA" in line for line in lines[:first_end])


def test_stress_resumes_and_names_a_seed_past_its_limit(tmp_path):
    out = tmp_path / "stress.json"
    assert st.main(SHORT + ["--seeds", "1", "--json", str(out), "--quiet"],
                   out=io.StringIO()) == 0
    first = json.loads((tmp_path / "stress-seeds" / "verilator-seed1.json").read_text())
    # rerun with one more seed and a limit no seed can meet: seed 1 is reused (not run
    # again), seed 2 is killed at its limit and named with the command that reproduces it
    text = io.StringIO()
    assert st.main(SHORT + ["--seeds", "2", "--json", str(out), "--timeout", "1"],
                   out=text) == 1
    summary = json.loads(out.read_text())
    by_seed = {r["seed"]: r for r in summary["runs"][0]["runs"]}
    assert by_seed[1]["reused"] and by_seed[1]["run_dir"] == first["run_dir"]
    assert by_seed[2]["timed_out"] and not by_seed[2]["passed"]
    assert "seed 2" in by_seed[2]["first_violation"]
    assert "--first-seed 2 " in by_seed[2]["reproduce"]
    assert "resuming: 1 of 2 seeds" in text.getvalue()
    assert by_seed[2]["reproduce"] in text.getvalue()
    assert not summary["passed"] and summary["verdict"].startswith("FAIL: 1 of 2")
    # --fresh starts over: nothing is reused
    assert st.main(SHORT + ["--seeds", "1", "--json", str(out), "--quiet", "--fresh"],
                   out=io.StringIO()) == 0
    assert "reused" not in json.loads(out.read_text())["runs"][0]["runs"][0]


def _entry(sim, seed, accesses, passed=True):
    return {"seed": seed, "sim": sim, "passed": passed, "accesses": accesses, "violations": 0,
            "not_exercised": [], "wall_seconds": 1.0, "cpu_seconds": 1.0, "peak_rss_mb": 1.0}


def test_summary_meets_the_full_size_only_when_every_seed_of_it_passed():
    tasks = [st.SeedRun(sim, seed, size["accesses"], 1024)
             for sim, size in st.FULL_SIZE.items() for seed in range(1, size["seeds"] + 1)]
    done = {t: _entry(t.sim, t.seed, t.accesses) for t in tasks}
    s = st._summarize(tasks, done)
    assert s["meets_full_size"] and s["passed"] and s["verdict"].startswith("PASS at the full")
    bad = {**done, tasks[3]: _entry(tasks[3].sim, tasks[3].seed, 10, passed=False)}
    s = st._summarize(tasks, bad)
    assert not s["meets_full_size"] and s["verdict"].startswith("FAIL: 1 of 40")
    s = st._summarize(tasks[:-1], {t: done[t] for t in tasks[:-1]})   # 19 Icarus seeds
    assert s["passed"] and not s["meets_full_size"] and "NOT the full size" in s["verdict"]
    s = st._summarize(tasks, {t: done[t] for t in tasks[1:]})
    assert not s["passed"] and s["verdict"] == "NOT FINISHED: 39 of 40 seeds ended"


def test_eta_gives_the_queued_seeds_to_the_first_free_worker():
    rates = {"verilator": 1000.0, "icarus": 100.0}
    queued = [st.SeedRun("verilator", s, 100_000 - int(st.START_SECONDS * 1000), 1024)
              for s in range(3)]
    assert st._eta(queued, [], rates, jobs=2) == pytest.approx(200.0)
    assert st._eta(queued, [], rates, jobs=3) == pytest.approx(100.0)
    assert st._eta([], [], rates, jobs=2) == 0.0

    class Running:                   # a worker 50 s into a seed, half of it checked
        task = st.SeedRun("verilator", 9, 100_000, 1024)

        def last_progress(self):
            return 50_000, "50,000 accesses checked"

        def elapsed(self):
            return 50.0

    # before any seed ended, the running seed's own rate (1,000/s) is the estimate ...
    assert st._eta([], [Running()], {"verilator": 10.0}, jobs=2) == pytest.approx(50.0)
    # ... and after, the rate measured on the seeds that ended
    assert st._eta([], [Running()], {"verilator": 500.0}, jobs=2,
                   settled=frozenset({"verilator"})) == pytest.approx(100.0)


@pytest.mark.slow
def test_stress_full():
    """make stress: Verilator 10**6 checked accesses x 20 seeds, Icarus 10**5 x 20."""
    assert st.main([]) == 0


def test_stress_stopped_by_a_signal_stops_its_workers_and_can_resume(tmp_path):
    out = tmp_path / "stress.json"
    p = subprocess.Popen([sys.executable, "-m", "cosim.stress", *SHORT, "--accesses", "10000000",
                          "--seeds", "2", "--jobs", "2", "--json", str(out)], cwd=st.ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = 0
    for line in p.stdout:
        started += ": started (" in line
        if started == 2:
            break
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    rest = p.communicate(timeout=120)[0]
    assert p.returncode == 130, rest
    assert "rerun the same command to resume" in rest
    # no worker is left running
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout
    summary = json.loads(out.read_text())
    assert summary["interrupted"] and not summary["passed"]
    assert summary["verdict"].startswith("NOT FINISHED")
