"""Readable waves: named FSM states, no Yosys temporaries, and a GTKWave save file.

A waves build compiles ``top_waves.v``, made from ``top.v`` by :func:`waves_verilog`:

* every decoded signal (each FSM's state register, as :func:`hdl.export.verilog_and_states`
  lists them) gets a companion ``<signal>_name`` wire holding the state's name in ASCII
  (``"READ_WAIT"``), so the dump itself carries the names: GTKWave and Surfer show it with
  their ASCII format;
* every Yosys temporary (an escaped name with a ``$`` in it: ``\\$17``, ``\\port$4277$12``,
  ``\\inval__ack$160``) is renamed with a leading underscore, which Verilator leaves out of its
  trace (its ``--trace-underscore`` is off); Icarus dumps the list :func:`public_nets` names,
  which leaves them out too.

After the run, :func:`write_save_file` writes a GTKWave save file next to the dump with the
main signals grouped per core and port, taken from the dump's own variables (so every trace it
names exists).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["NAME_SUFFIX", "waves_verilog", "hide_temporaries", "add_state_names",
           "public_nets", "icarus_dump_module", "dump_variables", "state_changes", "write_save_file",
           "is_temporary"]

#: The companion of a decoded signal ``s``: ``s_name``, its value's name in ASCII.
NAME_SUFFIX = "_name"

_ESCAPED_TEMP = re.compile(r"\\([^\s\\]*\$[^\s]*)(?=\s)")
_MODULE = re.compile(r"^module (\\\S+ |\w+)\s*\(", re.M)
_DECL = re.compile(r"^\s*(?:wire|reg)\s+(?:signed\s+)?(?:\[[^\]]*\]\s*)?(\\\S+ |\w+)\s*(?:=[^;]*)?;",
                   re.M)


def is_temporary(name: str) -> bool:
    """True for a Yosys temporary: a ``$`` in the last part of the (hierarchical) name.
    (Verilator's own ``$rootio`` scope, a copy of the top level's ports, is not one.)"""
    return "$" in name.rsplit(".", 1)[-1]


def hide_temporaries(text: str) -> str:
    """Rename every escaped identifier with a ``$`` in it to start with an underscore (the same
    rename everywhere, so declarations, uses and port connections still agree)."""
    return _ESCAPED_TEMP.sub(lambda mo: "\\_" + mo.group(1), text)


def _modules(text: str) -> dict[str, tuple[int, int]]:
    """``{hierarchical module name: (start, end of its endmodule)}``."""
    out = {}
    for mo in _MODULE.finditer(text):
        name = mo.group(1).strip().lstrip("\\")
        end = text.index("endmodule", mo.end())
        out[name] = (mo.start(), end)
    return out


def add_state_names(text: str, states: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Give each decoded signal a ``<signal>_name`` wire: its value's name in ASCII.

    Parameters
    ----------
    states : mapping
        ``{module: {signal: {value: name}}}`` (:func:`hdl.export.verilog_and_states`; values
        may be JSON's string keys).

    Raises
    ------
    ValueError
        A module or signal of ``states`` is not in ``text``, or ``<signal>_name`` already is.
    """
    modules = _modules(text)
    inserts = []
    for module, signals in states.items():
        if module not in modules:
            raise ValueError(f"Module {module!r} of the state names is not in the Verilog")
        start, end = modules[module]
        body = text[start:end]
        declared = {m.group(1).strip() for m in _DECL.finditer(body)}
        lines = ["  // Waves only: each state register's value by name, in ASCII."]
        for signal, names in sorted(signals.items()):
            companion = signal + NAME_SUFFIX
            if signal not in declared:
                raise ValueError(f"Signal {signal!r} is not declared in module {module!r}")
            if companion in declared:
                raise ValueError(f"Module {module!r} already declares {companion!r}")
            by_value = sorted((int(v), str(n)) for v, n in names.items())
            width = 8 * max(len(n) for _, n in by_value + [(0, "?")])
            choice = "".join(f"{signal} == {v} ? \"{n}\" : " for v, n in by_value) + '"?"'
            lines += [f"  wire [{width - 1}:0] {companion};",
                      f"  assign {companion} = {choice};"]
        inserts.append((end, "\n".join(lines) + "\n"))
    for pos, block in sorted(inserts, reverse=True):
        text = text[:pos] + block + text[pos:]
    return text


def waves_verilog(text: str, states: Mapping[str, Mapping[str, Mapping]]) -> str:
    """``top.v`` as a waves build compiles it: state names added, temporaries hidden."""
    return hide_temporaries(add_state_names(text, states))


def public_nets(text: str) -> list[str]:
    """Every net of every module that is not a temporary, by hierarchical name
    (``top.core0.walker.walk_state``; an escaped name keeps its backslash and ends with a
    space, as a Verilog hierarchical reference needs).  Module names are their hierarchy
    (Amaranth names them so); memories (arrays) are left out, as dumps leave them out."""
    out = []
    for module, (start, end) in _modules(text).items():
        for mo in _DECL.finditer(text, start, end):
            name = mo.group(1)
            if is_temporary(name):
                continue
            out.append(f"{module}.{name}")
    return out


def icarus_dump_module(text: str) -> str:
    """A Verilog-2005 module for Icarus that dumps :func:`public_nets` of ``text`` to the file
    the ``+cosim_waves=PATH`` plusarg names (the runner's own dump module needs
    SystemVerilog, and would dump the temporaries)."""
    nets = ",\n      ".join(public_nets(text))
    return ("// Verilog-2005 waves dump for Icarus: every net but the Yosys temporaries.\n"
            "module cosim_waves_dump();\n"
            "  reg [8*512-1:0] path;\n"
            "  initial begin\n"
            "    if ($value$plusargs(\"cosim_waves=%s\", path)) begin\n"
            "      $dumpfile(path);\n"
            f"      $dumpvars(0,\n      {nets});\n"
            "    end\n"
            "  end\n"
            "endmodule\n")


def dump_variables(path: Path | str) -> dict[str, int]:
    """``{full name: width}`` of every variable of a VCD or FST dump (read with wellen, the
    library Surfer reads dumps with)."""
    import pywellen
    return {v.full_name: v.bitwidth or 1 for v in pywellen.Waveform(str(path)).all_vars()}


def state_changes(path: Path | str, name: str) -> list[tuple[int, str]]:
    """``[(time, state name)]`` of the ASCII companion ``name`` in a dump (each change)."""
    import pywellen
    for v in pywellen.Waveform(str(path)).all_vars():
        if v.full_name == name:
            return [(t, value.to_bytes((v.bitwidth + 7) // 8, "big").lstrip(b"\0").decode())
                    for t, value in v.tv if isinstance(value, int)]
    raise KeyError(f"{path} has no variable {name!r}")


_CORE = re.compile(r"(?:^|\.)(?:cpu|core)(\d+)(?:__|\.|$)")


def _group_of(name: str) -> str | None:
    """The save file's group of a variable's full name, or None when it stays out."""
    parts = name.split(".")
    leaf = parts[-1]
    scope = ".".join(parts[:-1])
    mo = _CORE.search(leaf) or _CORE.search(scope)
    in_top = len(parts) >= 2 and parts[-2] == "top"
    if leaf.endswith(NAME_SUFFIX):
        if mo:
            return f"core {mo.group(1)}"
        if ".dev" in f".{scope}":
            return "device"
        return "memory port"
    if not in_top:
        return None
    if leaf in ("clk", "rst"):
        return "clock"
    if mo:
        return f"core {mo.group(1)}" + (" counters" if "__perf__" in leaf else "")
    if leaf.startswith("dev__"):
        return "device"
    if leaf.startswith("mem__"):
        return "memory port"
    return None


def write_save_file(dump: Path | str, out: Path | str | None = None) -> Path:
    """Write a GTKWave save file for ``dump`` and return its path (``<dump>.gtkw`` by default).

    Groups: clock; one per core (its CPU port, invalidation port, MMU and walker states) and
    its performance counters (closed); the device; the memory port (with the arbiter's
    state).  Every trace is a variable of the dump;
    state names show as ASCII, one-bit signals as bits, the rest in hex.

    Raises
    ------
    ValueError
        The dump has none of the top level's ports (not a dump of ``top``).
    """
    from vcd.gtkw import GTKWSave
    dump = Path(dump)
    out = Path(out) if out is not None else dump.with_suffix(".gtkw")
    variables = dump_variables(dump)
    groups: dict[str, list[tuple[str, int]]] = {}
    for name, width in variables.items():
        group = _group_of(name)
        if group is not None:
            groups.setdefault(group, []).append((name, width))
    if not any(g.startswith("core ") for g in groups):
        raise ValueError(f"{dump} has no core port of the top level: not a dump of top")

    def order(g):
        kind, _, n = g.partition(" ")
        num, _, rest = n.partition(" ")
        return ({"clock": 0, "core": 1, "device": 2, "memory": 3}.get(kind, 4),
                int(num) if num.isdigit() else 0, rest)

    with open(out, "w") as fh:
        save = GTKWSave(fh)
        save.comment(f"rmap-cosim waves: {dump.name}; states as ASCII, grouped per core/port")
        save.dumpfile(str(dump.resolve()))
        save.savefile(str(out.resolve()))
        for group in sorted(groups, key=order):
            with save.group(group, closed=group == "clock" or group.endswith("counters")):
                for name, width in _ordered(groups[group]):
                    ref = name if width == 1 else f"{name}[{width - 1}:0]"
                    fmt = "ascii" if name.endswith(NAME_SUFFIX) else (
                        "bin" if width == 1 else "hex")
                    save.trace(ref, datafmt=fmt)
    return out


def _ordered(items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """State names first, then valid/ready before the payload, each by name."""
    def key(item):
        name = item[0]
        leaf = name.rsplit(".", 1)[-1]
        return (not leaf.endswith(NAME_SUFFIX), name.count("."),
                not leaf.endswith(("valid", "ready", "ack")), name)
    return sorted(items, key=key)
