"""The Debian tools exploration runs (valgrind, yosys): found on PATH, or a clear error.

The Makefile installs each when it is missing (``make valgrind``, ``make yosys``: apt as root,
else the command to run), as ``make sims`` does Icarus.

Public API: :class:`ToolMissing`, :func:`tool_path`, :func:`tool_version`, :func:`ensure_tool`.
"""

from __future__ import annotations

import shutil
import subprocess

__all__ = ["ToolMissing", "tool_path", "tool_version", "ensure_tool"]

#: Tool -> (version flag, why it is needed beyond the obvious).
TOOLS = {"valgrind": ("--version", ""),
         "yosys": ("-V", " (Amaranth's bundled Yosys cannot synthesise)")}


class ToolMissing(RuntimeError):
    """A Debian tool (valgrind, yosys) is not installed."""


def tool_path(name: str) -> str:
    """The executable of ``name`` (a key of :data:`TOOLS`); :class:`ToolMissing` naming the
    make target that installs it when it is not on PATH."""
    if name not in TOOLS:
        raise ValueError(f"tool must be one of {', '.join(TOOLS)}, not {name!r}")
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed{TOOLS[name][1]}: run `make {name}` (or "
                          f"`sudo apt-get install -y {name}`)")
    return path


def tool_version(name: str) -> str:
    """``name``'s version line."""
    return subprocess.run([tool_path(name), TOOLS[name][0]], capture_output=True, text=True,
                          check=True).stdout.strip()


def ensure_tool(name: str) -> str:
    """``name``'s executable, installed first by ``make <name>`` when it is missing (the
    tests' set-up).  Raises :class:`ToolMissing` with make's message when that fails."""
    try:
        return tool_path(name)
    except ToolMissing:
        pass
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent.parent
    proc = subprocess.run(["make", "-s", name], cwd=root, capture_output=True, text=True)
    try:
        return tool_path(name)
    except ToolMissing as exc:
        raise ToolMissing(f"{exc}; `make {name}` said: {proc.stderr.strip()[-300:]}") from None
