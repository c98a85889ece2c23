"""Area and logic depth of a design point, from Debian's Yosys.

Amaranth's bundled Yosys cannot synthesise or measure (no ``read_verilog``, ``synth``,
``stat``, ``ltp``); Debian's ``yosys`` package can (``make yosys`` installs it).  The
exported Verilog of the configuration (:func:`hdl.export.export`, ``sim_build/<hash>/top.v``)
goes through::

    read_verilog top.v; synth -flatten -top top; dfflegalize -cell $_DFF_P_ 01; opt_clean
    ltp -noff; stat -json -tech cmos

``synth`` maps to Yosys's generic gate library (``$_AND_``, ``$_MUX_``, ``$_DFF_P_``, ...);
``dfflegalize`` turns every flip-flop into a plain ``$_DFF_P_`` so that ``stat -tech cmos``
can count transistors for all cells (without it the estimate is a lower bound); ``ltp -noff``
is the longest topological path through combinational cells, a proxy for logic depth.

The result is cached in ``sim_build/<hash>/area.json``, keyed by the gateware's sources
digest and Yosys's version; concurrent callers on the same configuration synthesise once.

Public API: :func:`area`, :func:`parse_ltp`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from .tools import tool_path, tool_version

__all__ = ["area", "parse_ltp", "SCRIPT"]

SCRIPT = ("read_verilog {top}; synth -flatten -top top; dfflegalize -cell $_DFF_P_ 01; "
          "opt_clean; tee -q -o {ltp} ltp -noff; tee -q -o {stat} stat -json -tech cmos")
_LTP = re.compile(r"Longest topological path in \S+ \(length=(\d+)\)")
_RECIPE = 1


def parse_ltp(text: str) -> int:
    """The length ``ltp`` reports; ``ValueError`` when the text has none."""
    m = _LTP.search(text)
    if m is None:
        raise ValueError(f"no 'Longest topological path' in yosys's ltp output: {text[:200]!r}")
    return int(m.group(1))


def area(config, *, cache: bool = True, out_dir=None) -> dict:
    """Synthesise ``config`` (an :class:`hdl.config.MmuConfig`) with Yosys and measure it.

    Returns
    -------
    dict
        ``cells`` (all cells after synthesis), ``cells_by_type`` (Yosys gate type ->
        count), ``flip_flops``, ``transistors`` (``stat -tech cmos`` estimate), ``ltp``
        (longest topological path, in cells), ``yosys`` (version), ``config_hash``,
        ``seconds`` (wall time of the synthesis that produced the figures, also when they
        come from the cache).

    Raises
    ------
    cosim.explore.tools.ToolMissing
        Yosys is not installed.
    RuntimeError
        Yosys failed (its last lines are in the message).
    """
    from cosim.build import SIM_BUILD, _locked
    from hdl.export import export, sources_digest
    version = tool_version("yosys")
    top = export(config, out_dir or SIM_BUILD)
    d = top.parent
    key = {"recipe": _RECIPE, "sources": sources_digest(), "yosys": version}
    path = d / "area.json"
    with _locked(d):
        if cache and path.exists():
            try:
                got = json.loads(path.read_text())
            except ValueError:
                got = {}
            if got.get("key") == key:
                return got["area"]
        result = _synthesise(top, version)
        result["config_hash"] = config.config_hash
        tmp = d / f".area.json.{os.getpid()}"
        tmp.write_text(json.dumps({"key": key, "area": result}, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    return result


def _synthesise(top: Path, version: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="yosys-") as tmp:
        ltp_file, stat_file = Path(tmp) / "ltp.txt", Path(tmp) / "stat.json"
        script = SCRIPT.format(top=top, ltp=ltp_file, stat=stat_file)
        t0 = time.monotonic()
        proc = subprocess.run([tool_path("yosys"), "-q", "-p", script], capture_output=True,
                              text=True)
        seconds = time.monotonic() - t0
        if proc.returncode or not stat_file.exists() or not ltp_file.exists():
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"yosys failed on {top} (exit status {proc.returncode}): {tail}")
        stat = json.loads(stat_file.read_text())["design"]
        ltp = parse_ltp(ltp_file.read_text())
    by_type = {k: int(v) for k, v in stat["num_cells_by_type"].items()}
    return {"cells": int(stat["num_cells"]), "cells_by_type": by_type,
            "flip_flops": sum(n for k, n in by_type.items() if "DFF" in k),
            "transistors": int(str(stat["estimated_num_transistors"]).rstrip("+")),
            "ltp": ltp, "yosys": version, "seconds": round(seconds, 2)}
