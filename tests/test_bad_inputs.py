"""Bad input to every entry point: exit status 2, one line on stderr naming the flag or the
parameter and what it accepts, no traceback, no hang, nothing simulated.

The table is the trial a new user ran (flags, output paths, configurations); the litmus-file
inputs have their own tests in test_litmus.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BAD = [
    # python -m pyrmap
    (["pyrmap", "fuzz", "--seed", "1", "--quirk", "nope"],
     "argument --quirk: invalid choice: 'nope' (choose from 'page_check_address_lockless'"),
    (["pyrmap", "fuzz", "--seed", "1", "--nframes", "4"],
     "argument --nframes: must be at least 16, not 4"),
    (["pyrmap", "fuzz", "--seed", "1", "--ops", "frob"],
     "argument --ops: unknown name 'frob'; known: mmap_anon, mmap_file"),
    (["pyrmap", "fuzz", "--seed", "1", "--steps", "-5"],
     "argument --steps: must be at least 1, not -5"),
    (["pyrmap", "fuzz", "--seed", "1", "--ops", "munmap", "--steps", "3"],
     "argument --ops: None of the operations munmap applies"),
    (["pyrmap", "fuzz"], "the following arguments are required: --seed"),
    (["pyrmap", "fuzz", "--seed", "1", "--faults", "nope=0.1"],
     "argument --faults: Unknown fault 'nope'; known: swap_write, alloc, eintr, bus_error"),
    (["cosim", "run", "reclaim", "--faults", "alloc=1"],
     "argument --faults: alloc must be below 1: a certain failure is never survived"),
    (["pyrmap", "fuzz", "--seed", "1", "--faults", "bus_error=1"],
     "argument --faults: bus_error must be below 1: a certain failure is never survived"),
    (["cosim", "run", "reclaim", "--path", "fast", "--faults", "swap_write=0.1"],
     "--faults is injected on the step path only"),
    (["pyrmap", "demo", "--phases", "0"], "argument --phases: must be at least 1, not 0"),
    (["pyrmap", "demo", "--frames", "1e9"], "argument --frames: must be an integer, not '1e9'"),
    (["pyrmap", "demo", "--seed", "-1"], "argument --seed: must be at least 0, not -1"),
    # python -m cosim run / demo / list
    (["cosim", "run", "nosuch"], "unknown scenario 'nosuch'; known: reclaim, fuzz"),
    (["cosim", "run", "reclaim", "--json", "/proc/x.json"],
     "argument --json: cannot write /proc/x.json"),
    (["cosim", "run", "reclaim", "--json", "/tmp"], "argument --json: cannot write '/tmp': it is a "
                                                    "directory"),
    (["cosim", "run", "reclaim", "--tlb-entries", "4096"],
     "tlb_entries must be at most 256, not 4096 (TLB entries are registers"),
    (["cosim", "run", "reclaim", "--tlb-entries", "128"],
     "tlb_ways must be at most 64, not 128"),
    (["cosim", "run", "reclaim", "--cores", "99"],
     "argument --cores: must be at most 16 (the memory arbiter serves at most 16 cores)"),
    (["cosim", "run", "reclaim", "--quirk", "nope"],
     "unknown quirk 'nope'; kernel quirks: page_check_address_lockless"),
    (["cosim", "run", "reclaim", "--steps", "-5"], "argument --steps: must be at least 1"),
    (["cosim", "run", "reclaim", "--timeout", "0"], "argument --timeout: must be at least 1"),
    (["cosim", "run", "reclaim", "--sim", "modelsim"],
     "argument --sim: invalid choice: 'modelsim' (choose from 'verilator', 'icarus')"),
    (["cosim", "demo", "--seed", "x"], "argument --seed: must be an integer, not 'x'"),
    (["cosim", "frob"], "argument COMMAND: invalid choice: 'frob'"),
    # python -m cosim litmus: flags and --config (the files are test_litmus.py's)
    (["cosim", "litmus", "litmus/bbm.litmus", "--config", "bogus=1"],
     "argument --config: Unknown parameter 'bogus'; known: ncores, tlb_entries"),
    (["cosim", "litmus", "litmus/bbm.litmus", "--config", "quirk_fill_after_inval=yesplease"],
     "argument --config: quirk_fill_after_inval must be a bool (true/false, yes/no, 1/0)"),
    (["cosim", "litmus", "litmus/bbm.litmus", "--config", "ncores=abc"],
     "argument --config: ncores must be an integer, not 'abc'"),
    (["cosim", "litmus", "litmus/bbm.litmus", "--config", "tlb_entries"],
     "argument --config: Parameter 'tlb_entries' has no value"),
    # the other cosim entry points
    (["cosim.cfy", "--phases", "0"], "argument --phases: must be at least 1, not 0"),
    (["cosim.cfy", "--json", "/proc/x.json"], "argument --json: cannot write /proc/x.json"),
    (["cosim.bugzoo", "--only", "nope"], "argument --only: invalid choice: 'nope'"),
    (["cosim.bugzoo", "--runs", "0"], "argument --runs: must be at least 1, not 0"),
    (["cosim.bench", "--repeat", "0"], "argument --repeat: must be at least 1, not 0"),
    (["cosim.bench", "--name", "a/b"], "argument --name: a results name is a file name"),
    (["cosim.build", "--config", "ways=4"], "argument --config: Unknown parameter 'ways'"),
    (["cosim.build", "--env", "NOEQUALS"], "argument --env: expected NAME=VALUE"),
    (["cosim.stress", "--seeds", "0"], "argument --seeds: must be at least 1, not 0"),
    (["cosim.stress", "--json", "/proc/x.json"], "argument --json: cannot write /proc/x.json"),
    (["cosim.stress", "--nframes", "4"], "argument --nframes: must be at least 16, not 4"),
    # python -m hdl.export
    (["hdl.export", "--out-dir", "/proc/x"], "argument --out-dir: cannot write into /proc/x"),
    (["hdl.export", "--tlb-entries", "4096"], "argument --tlb-entries: must be at most 256"),
    (["hdl.export", "--asid-bits", "17"],
     "argument --asid-bits: must be at most 16 (satp.ASID has 16 bits), not 17"),
    (["hdl.export", "--quirk", "nope"], "argument --quirk: invalid choice: 'nope'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(argv, message):
    r = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, text=True,
                       capture_output=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0], lines[0]
    assert "error" in lines[0]
    assert "build" not in r.stdout and "simulated" not in r.stdout, "nothing may run"


@pytest.mark.parametrize("argv", [["pyrmap", "fuzz", "--help"], ["cosim", "run", "--help"],
                                  ["hdl.export", "--help"], ["cosim.cfy", "--help"]])
def test_help_exits_0(argv):
    r = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, text=True,
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout and not r.stderr, r.stderr
