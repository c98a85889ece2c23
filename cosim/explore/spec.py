"""A sweep's specification: design and workload axes, each a value or a list; the grid of
points is their product.

TOML (read with :mod:`tomllib`) or JSON::

    [sweep]
    seed = 1                     # or a list: one point per seed
    [design]
    entries = [8, 16, 32]
    ways = [1, 4, "full"]        # "full": ways = entries (fully associative)
    replacement = ["plru", "fifo"]
    cores = 2
    latency = 1
    [workload]
    workload = ["uniform", "zipf", "reclaim"]
    accesses = 20000
    pages = 64

A combination whose ways exceed its entries is left out of the grid (and counted); any other
value the MMU cannot be built with is an error naming the axis, the value and the rule.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path

from .point import DESIGN_AXES, UNSUPPORTED_AXES, WORKLOAD_AXES, Point, PointError

__all__ = ["load_spec", "grid", "SpecError", "parse_axis_values"]


class SpecError(ValueError):
    """A specification the sweep cannot run (one line: the file or axis and the rule)."""


def load_spec(path) -> dict:
    """``{"sweep": {...}, "design": {...}, "workload": {...}}`` from a TOML or JSON file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read the sweep specification {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".json":
            spec = json.loads(text)
        else:
            spec = tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}:"
                        f" {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: the specification must be a table, not {type(spec).__name__}")
    unknown = set(spec) - {"sweep", "design", "workload"}
    if unknown:
        raise SpecError(f"{path}: unknown section(s) {sorted(unknown)}; known: sweep, design, "
                        f"workload")
    return {k: dict(spec.get(k, {})) for k in ("sweep", "design", "workload")}


def _values(name, value) -> list:
    vals = value if isinstance(value, list) else [value]
    if not vals:
        raise SpecError(f"axis {name!r} has no values")
    return vals


def parse_axis_values(text: str) -> list:
    """``"8,16,full"`` -> ``[8, 16, "full"]`` (ints, booleans and names)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        low = item.lower()
        if low in ("true", "false"):
            out.append(low == "true")
            continue
        try:
            out.append(int(item, 0))
        except ValueError:
            out.append(item)
    return out


def grid(spec: dict) -> tuple[list[Point], int]:
    """The points of ``spec`` (in a stable order) and the number of combinations left out
    because their ways exceed their entries."""
    design, workload = spec.get("design", {}), spec.get("workload", {})
    for name in design:
        if name in UNSUPPORTED_AXES:
            raise SpecError(f"design axis {name!r} is not supported: {UNSUPPORTED_AXES[name]}")
        if name not in DESIGN_AXES:
            raise SpecError(f"unknown design axis {name!r}; known: {', '.join(DESIGN_AXES)}")
    for name in workload:
        if name not in WORKLOAD_AXES:
            raise SpecError(f"unknown workload axis {name!r}; known: "
                            f"{', '.join(WORKLOAD_AXES)}")
    unknown = set(spec.get("sweep", {})) - {"seed"}
    if unknown:
        raise SpecError(f"unknown [sweep] key(s) {sorted(unknown)}; known: seed")
    seeds = _values("seed", spec.get("sweep", {}).get("seed", 1))
    dnames = list(design)
    wnames = list(workload)
    points, skipped = [], 0
    for dvals in itertools.product(*(_values(n, design[n]) for n in dnames)):
        d = dict(zip(dnames, dvals))
        if d.get("ways") == "full":
            d["ways"] = d.get("entries", 8)
        elif isinstance(d.get("ways"), str):
            raise SpecError(f"ways must be an integer or 'full', not {d['ways']!r}")
        if isinstance(d.get("ways"), int) and d["ways"] > d.get("entries", 8):
            skipped += 1
            continue
        for wvals in itertools.product(*(_values(n, workload[n]) for n in wnames)):
            for seed in seeds:
                try:
                    points.append(Point(dict(d), dict(zip(wnames, wvals)), seed))
                except PointError as exc:
                    raise SpecError(str(exc)) from None
    seen, unique = set(), []
    for p in points:
        if p.point_id not in seen:
            seen.add(p.point_id)
            unique.append(p)
    return unique, skipped
