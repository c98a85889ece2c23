"""Verilog export of a Top configuration, and Yosys cell statistics.

Usage::

    python -m hdl.export [--cores N] [--tlb-entries N] [--tlb-ways N] [--replacement R]
                         [--superpage-entries N] [--asid-bits N] [--svade] [--dev-entries N]
                         [--arbitration A] [--quirk NAME ...] [--out-dir DIR] [--stat]

writes ``sim_build/<config_hash>/top.v`` (plus ``config.json``) and prints its path.  With
``--stat`` it also prints a Yosys cell-count summary (``synth -flatten``, generic cells) so TLB
designs can be compared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

from .config import ARBITRATIONS, REPLACEMENTS, MmuConfig

__all__ = ["verilog_text", "export", "yosys_stat", "main", "QUIRKS"]

#: The hardware quirks (``--quirk NAME`` switches ``MmuConfig.quirk_NAME``).
QUIRKS = tuple(f.name.removeprefix("quirk_") for f in dataclasses.fields(MmuConfig)
               if f.name.startswith("quirk_"))
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "sim_build"


def _top(config):
    from .top import Top
    return Top(config)


def verilog_text(config: MmuConfig, name: str = "top") -> str:
    """The Verilog of ``config`` (stable: no source locations, internal attributes stripped)."""
    return verilog_and_states(config, name)[0]


#: Widest decoded signal whose values are listed (an FSM of up to 64 states).
_MAX_DECODED_BITS = 6


def verilog_and_states(config: MmuConfig, name: str = "top") -> tuple[str, dict]:
    """The Verilog of ``config`` and the names of its decoded signals' values.

    Returns
    -------
    (str, dict)
        The text :func:`verilog_text` returns, and ``{module: {signal: {value: name}}}`` for
        every signal that has a decoder (each FSM's state register: ``walk_state`` in
        ``top.core0.walker`` maps 0 to ``"IDLE"``), the module named by its hierarchy as in
        the Verilog.  Waves builds show these names beside the numbers.
    """
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    from amaranth.hdl import Fragment, Value, ValueCastable
    from amaranth.hdl._ir import PortDirection
    from amaranth.lib import wiring
    top = _top(config)
    ports = {}
    # The ports verilog.convert derives from a Component's signature.
    for path, member, value in top.signature.flatten(top):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if isinstance(value, Value):
            ports["__".join(map(str, path))] = (
                value, PortDirection.Input if member.flow == wiring.In else PortDirection.Output)
    text, name_map = verilog.convert_fragment(Fragment.get(top, None), ports, name,
                                              emit_src=False, strip_internal_attrs=True)
    states: dict = {}
    for signal, path in name_map.items():
        width = len(signal)
        if signal.decoder is None or not 0 < width <= _MAX_DECODED_BITS:
            continue
        names = {}
        for value in range(1 << width):
            try:
                label = signal.decoder(value)
            except (KeyError, IndexError, ValueError):
                continue
            # An FSM's decoder answers "NAME/value"; an enum's answers the member's name.
            label = str(label).removesuffix(f"/{value}")
            if label and label != str(value):
                names[value] = label
        if names:
            states.setdefault(".".join(path[:-1]), {})[path[-1]] = names
    return text, states


def sources_digest() -> str:
    """A hash of the gateware's sources (``hdl/*.py`` and ``pyrmap/pte.py``): a cached
    ``top.v`` produced by other sources is regenerated."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.glob("*.py")) + [root.parent / "pyrmap" / "pte.py"]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def export(config: MmuConfig, out_dir: Path | str = DEFAULT_OUT) -> Path:
    """Write ``<out_dir>/<config_hash>/top.v`` and return its path.

    The file is reused when ``sources.sha`` beside it names the current
    :func:`sources_digest`; otherwise it is regenerated (atomically: a concurrent reader never
    sees half a file).
    """
    d = Path(out_dir) / config.config_hash
    path = d / "top.v"
    stamp = d / "sources.sha"
    digest = sources_digest()
    if path.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return path
    d.mkdir(parents=True, exist_ok=True)
    text = verilog_text(config)
    tmp = d / f"top.v.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    (d / "config.json").write_text(json.dumps(config.as_dict(), indent=2, sort_keys=True) + "\n")
    stamp.write_text(digest + "\n")
    return path


def yosys_stat(config: MmuConfig) -> dict:
    """Cell counts of ``config`` from Amaranth's bundled Yosys.

    The bundled Yosys has no ``synth``/``stat``; this runs ``proc; flatten; opt; wreduce``
    (coarse cells), then ``simplemap`` (single-bit gates) and counts cells in the JSON.

    Returns ``{"cells": coarse cell count, "ff_bits": flip-flop bits, "gates": single-bit
    cells after simplemap, "by_type": {coarse cell type: count}}``.
    """
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth._toolchain.yosys import find_yosys
    from amaranth.back import rtlil
    text = rtlil.convert(_top(config), name="top", emit_src=False)
    yosys = find_yosys(lambda ver: ver >= (0, 40))
    # The WebAssembly Yosys sees no host files: both netlists come back on stdout.
    script = (f"read_rtlil <<rtlil\n{text}\nrtlil\n"
              "hierarchy -top top; proc; flatten; opt; wreduce; opt_clean\nwrite_json\n"
              "simplemap; opt_clean\nwrite_json\n")
    out = yosys.run(["-q", "-s", "-"], stdin=script, ignore_warnings=True)
    decoder = json.JSONDecoder()
    coarse, end = decoder.raw_decode(out, out.index("{"))
    fine, _ = decoder.raw_decode(out, out.index("{", end))
    return _count(coarse, fine)


def _cells(netlist):
    return netlist["modules"]["top"]["cells"].values()


def _count(coarse, fine) -> dict:
    by_type = {}
    ff_bits = 0
    for cell in _cells(coarse):
        if cell["type"] == "$scopeinfo":
            continue
        by_type[cell["type"]] = by_type.get(cell["type"], 0) + 1
        if "dff" in cell["type"].lower():
            width = cell["parameters"].get("WIDTH", 1)
            ff_bits += int(width, 2) if isinstance(width, str) else int(width)
    gates = sum(1 for _ in _cells(fine))
    return {"cells": sum(by_type.values()), "ff_bits": ff_bits, "gates": gates,
            "by_type": by_type}


def _parser():
    from pyrmap.cliargs import ArgumentParser, int_arg, writable_dir

    from .config import MAX_CORES, MAX_DEV_ENTRIES, MAX_SUPERPAGE_ENTRIES, MAX_TLB_ENTRIES
    p = ArgumentParser(
        prog="python -m hdl.export",
        description="Write the Verilog of a Top configuration (or of several: --tlb-entries, "
                    "--tlb-ways and --replacement take several values; every combination is "
                    "exported, and with --stat compared in one table).")
    d = MmuConfig()
    size = "TLB entries are registers compared in parallel"
    p.add_argument("--cores", type=int_arg(1, MAX_CORES, "the memory arbiter serves at most "
                                                       "16 cores"), default=d.ncores)
    p.add_argument("--tlb-entries", type=int_arg(1, MAX_TLB_ENTRIES, size), nargs="+",
                   default=[d.tlb_entries])
    p.add_argument("--tlb-ways", type=int_arg(1, MAX_TLB_ENTRIES, size), nargs="+",
                   default=None, help="default: = --tlb-entries (fully associative)")
    p.add_argument("--replacement", choices=REPLACEMENTS, nargs="+", default=[d.replacement])
    p.add_argument("--superpage-entries", type=int_arg(1, MAX_SUPERPAGE_ENTRIES, size),
                   default=d.superpage_entries)
    p.add_argument("--asid-bits", type=int_arg(0, 16, "satp.ASID has 16 bits"),
                   default=d.asid_bits)
    p.add_argument("--svade", action="store_true", help="Svade: page fault instead of A/D update")
    p.add_argument("--dev-entries", type=int_arg(1, MAX_DEV_ENTRIES, size),
                   default=d.dev_entries)
    p.add_argument("--arbitration", choices=ARBITRATIONS, default=d.arbitration)
    p.add_argument("--quirk", action="append", choices=QUIRKS, default=[],
                   help="switch on a hardware quirk (repeatable)")
    p.add_argument("--out-dir", type=writable_dir, default=str(DEFAULT_OUT),
                   help="where <config hash>/top.v goes (checked writable first)")
    p.add_argument("--stat", action="store_true", help="print a Yosys cell-count summary")
    return p


def configs_from_args(args) -> list:
    """Every combination of the multi-valued options, as MmuConfigs (or the error a
    combination raised, as a string)."""
    out = []
    for entries in args.tlb_entries:
        for ways in (args.tlb_ways or [entries]):
            for replacement in args.replacement:
                try:
                    out.append(MmuConfig(
                        ncores=args.cores, tlb_entries=entries, tlb_ways=ways,
                        replacement=replacement, superpage_entries=args.superpage_entries,
                        asid_bits=args.asid_bits, svadu=not args.svade,
                        dev_entries=args.dev_entries, arbitration=args.arbitration,
                        **{f"quirk_{q}": True for q in args.quirk}))
                except (TypeError, ValueError) as e:
                    out.append(f"{entries} entries / {ways} ways / {replacement}: {e}")
    return out


def config_from_args(args) -> MmuConfig:
    """The one configuration the options name (raises if they name several or a bad one)."""
    configs = configs_from_args(args)
    if len(configs) != 1:
        raise ValueError(f"The options name {len(configs)} configurations, not one")
    if isinstance(configs[0], str):
        raise ValueError(configs[0].split(": ", 1)[1])
    return configs[0]


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    configs = configs_from_args(args)
    bad = [c for c in configs if isinstance(c, str)]
    good = [c for c in configs if not isinstance(c, str)]
    for msg in bad:
        print(f"error: {msg if len(configs) > 1 else msg.split(': ', 1)[1]}", file=sys.stderr)
    if not good:
        return 2
    for config in good:
        print(export(config, args.out_dir))
    if args.stat:
        rows = []
        for config in good:
            st = yosys_stat(config)
            rows.append((config, st))
        if len(rows) == 1:
            config, st = rows[0]
            print(f"config {config.config_hash}: {st['cells']} cells, {st['ff_bits']} "
                  f"flip-flop bits, {st['gates']} single-bit gates")
            for kind, n in sorted(st["by_type"].items(), key=lambda kv: -kv[1]):
                print(f"  {kind:<16} {n}")
        else:
            print(f"{'config':<14}{'entries':>8}{'ways':>6}  {'replacement':<12}{'cells':>8}"
                  f"{'ff bits':>9}{'gates':>9}")
            for config, st in rows:
                print(f"{config.config_hash:<14}{config.tlb_entries:>8}{config.tlb_ways:>6}  "
                      f"{config.replacement:<12}{st['cells']:>8}{st['ff_bits']:>9}"
                      f"{st['gates']:>9}")
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
