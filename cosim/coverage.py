"""Functional coverage: named cover points with fixed bins, crosses, a report, merging.

A small, dependency-free model in the spirit of cocotb-coverage's ``CoverPoint`` /
``CoverCross``: every bin is declared up front (so an empty bin is visible), samples are
counted, and :meth:`Coverage.empty_bins` lists what a run never reached.  Coverage of several
runs (other seeds, other simulators) merges with :meth:`Coverage.merge`; it round-trips
through JSON (:meth:`Coverage.to_dict` / :meth:`Coverage.from_dict`).

Example::

    cov = Coverage("mmu")
    cov.point("outcome", ["hit", "walk"])
    cov.point("core", [0, 1])
    cov.cross("outcome_x_core", "outcome", "core")
    cov.sample(outcome="hit", core=1)
"""

from __future__ import annotations

import enum
import itertools
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Coverage", "CoverageError"]


class CoverageError(ValueError):
    """A sample outside the declared bins, or a malformed declaration."""


def _key(v: Any) -> str:
    return str(v.name if isinstance(v, enum.Enum) else v)


class Coverage:
    """A set of cover points and crosses.

    Parameters
    ----------
    name : str
        Shown in the report.
    """

    def __init__(self, name: str = "coverage"):
        self.name = name
        self.points: dict[str, dict[str, int]] = {}
        self.crosses: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {}

    # --- declaration ------------------------------------------------------------------------

    def point(self, name: str, bins: Iterable[Any]) -> None:
        """Declare a cover point with the given bins (values; enum members use their name)."""
        bins = [_key(b) for b in bins]
        if not bins:
            raise CoverageError(f"Cover point {name!r} has no bins")
        if len(set(bins)) != len(bins):
            raise CoverageError(f"Cover point {name!r} has duplicate bins {bins!r}")
        if name in self.points or name in self.crosses:
            raise CoverageError(f"Cover point {name!r} is declared twice")
        self.points[name] = {b: 0 for b in bins}

    def cross(self, name: str, *points: str, exclude: Iterable[Sequence[Any]] = ()) -> None:
        """Declare the cross of ``points``; ``exclude`` lists impossible bin tuples
        (``None`` in a position matches any bin of that point)."""
        if len(points) < 2:
            raise CoverageError(f"Cross {name!r} needs at least two cover points, not {points!r}")
        for p in points:
            if p not in self.points:
                raise CoverageError(f"Cross {name!r} names unknown cover point {p!r}")
        excl = [tuple(None if e is None else _key(e) for e in ex) for ex in exclude]
        bins = {}
        for combo in itertools.product(*(self.points[p] for p in points)):
            if any(all(e is None or e == c for e, c in zip(ex, combo)) for ex in excl):
                continue
            bins["/".join(combo)] = 0
        self.crosses[name] = (tuple(points), bins)

    # --- sampling ---------------------------------------------------------------------------

    def sample(self, **values: Any) -> None:
        """Count one sample.  Every named cover point must be given a declared bin; crosses
        whose points are all given are counted too (a combination excluded at declaration is
        ignored)."""
        keys = {}
        for name, v in values.items():
            if name not in self.points:
                raise CoverageError(f"Unknown cover point {name!r}")
            k = _key(v)
            if k not in self.points[name]:
                raise CoverageError(f"Cover point {name!r} has no bin {k!r} "
                                    f"(bins: {', '.join(self.points[name])})")
            self.points[name][k] += 1
            keys[name] = k
        for cname, (pts, bins) in self.crosses.items():
            if all(p in keys for p in pts):
                k = "/".join(keys[p] for p in pts)
                if k in bins:
                    bins[k] += 1

    # --- results ----------------------------------------------------------------------------

    def empty_bins(self) -> list[str]:
        """Every bin never sampled, as ``"point:bin"`` strings."""
        out = [f"{p}:{b}" for p, bins in self.points.items() for b, n in bins.items() if not n]
        out += [f"{c}:{b}" for c, (_, bins) in self.crosses.items()
                for b, n in bins.items() if not n]
        return out

    def merge(self, other: "Coverage") -> None:
        """Add ``other``'s counts (same declarations required)."""
        for p, bins in other.points.items():
            if p not in self.points or set(bins) != set(self.points[p]):
                raise CoverageError(f"Cannot merge cover point {p!r}: declarations differ")
            for b, n in bins.items():
                self.points[p][b] += n
        for c, (pts, bins) in other.crosses.items():
            if c not in self.crosses or set(bins) != set(self.crosses[c][1]):
                raise CoverageError(f"Cannot merge cross {c!r}: declarations differ")
            for b, n in bins.items():
                self.crosses[c][1][b] += n

    def to_dict(self) -> dict:
        return {"name": self.name, "points": self.points,
                "crosses": {c: {"points": list(p), "bins": b}
                            for c, (p, b) in self.crosses.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Coverage":
        cov = cls(d["name"])
        cov.points = {p: dict(b) for p, b in d["points"].items()}
        cov.crosses = {c: (tuple(v["points"]), dict(v["bins"])) for c, v in d["crosses"].items()}
        return cov

    def report(self) -> str:
        """A text report: per point and cross, hit bins / total and the empty bins."""
        lines = [f"coverage {self.name}"]
        groups = [(p, b) for p, b in self.points.items()]
        groups += [(c, b) for c, (_, b) in self.crosses.items()]
        total = hit = 0
        for name, bins in groups:
            n_hit = sum(1 for n in bins.values() if n)
            total += len(bins)
            hit += n_hit
            line = f"  {name:<28} {n_hit:>4}/{len(bins):<4}"
            if len(bins) <= 6:
                line += "  " + " ".join(f"{b}={n}" for b, n in bins.items())
            empty = [b for b, n in bins.items() if not n]
            if empty and len(bins) > 6:
                line += "  empty: " + ", ".join(empty[:12]) + (" ..." if len(empty) > 12 else "")
            lines.append(line)
        pct = 100.0 * hit / total if total else 100.0
        lines.append(f"  total {hit}/{total} bins ({pct:.1f}%)")
        return "\n".join(lines)
