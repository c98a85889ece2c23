"""``rmap-cosim sweep [SPEC] [--entries 8,16 --ways 1,full ...]``: a TLB design sweep on the
RTL's fast path, cross-checked point by point against the golden model's TLB.

SPEC is a TOML or JSON file (:mod:`cosim.explore.spec`); each axis flag (comma-separated
values) replaces that axis of the specification, so flags alone make a quick grid.  Results
go to ``--out`` (default ``explore-results/``): ``points/<id>.json`` per point, ``sweep.csv``
and the PNG figures.  A point whose result exists is skipped (``--no-resume`` runs it
again).  Exit status: 0 when every point passed, 1 when one failed, 2 for bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from pyrmap.cliargs import ArgumentParser, int_arg

from .point import DESIGN_AXES, WORKLOAD_AXES, WORKLOADS
from .spec import SpecError, grid, load_spec, parse_axis_values

__all__ = ["main"]


def _parser(prog: str) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("spec", nargs="?", metavar="SPEC", help="sweep specification (.toml/.json)")
    for name in DESIGN_AXES:
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"axis_{name}", metavar="V,V..",
                       help=f"design axis {name}")
    for name in WORKLOAD_AXES:
        extra = f" ({', '.join(WORKLOADS)})" if name == "workload" else ""
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"axis_{name}", metavar="V,V..",
                       help=f"workload axis {name}{extra}")
    p.add_argument("--seed", default=None, metavar="S,S..", help="seed(s) (default 1)")
    p.add_argument("--out", default="explore-results", help="results folder")
    p.add_argument("--jobs", type=int_arg(1, 64), default=2,
                   help="points at once on this machine (default 2)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run each point as a Ray task on the cluster at ADDRESS ('local': "
                        "a local instance)")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--area", action="store_true",
                   help="measure each design's area and logic depth with Yosys (make yosys)")
    p.add_argument("--no-resume", action="store_true", help="run points whose result exists")
    p.add_argument("--dry-run", action="store_true", help="list the points and stop")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def build_spec(args) -> dict:
    spec = load_spec(args.spec) if args.spec else {"sweep": {}, "design": {}, "workload": {}}
    for name in DESIGN_AXES:
        text = getattr(args, f"axis_{name}")
        if text is not None:
            spec["design"][name] = parse_axis_values(text)
    for name in WORKLOAD_AXES:
        text = getattr(args, f"axis_{name}")
        if text is not None:
            spec["workload"][name] = parse_axis_values(text)
    if args.seed is not None:
        spec["sweep"]["seed"] = parse_axis_values(args.seed)
    return spec


def main(argv: Optional[Sequence[str]] = None, prog: str = "rmap-cosim sweep",
         out=None) -> int:
    out = out if out is not None else sys.stdout
    p = _parser(prog)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        points, skipped = grid(build_spec(args))
    except SpecError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if not points:
        print(f"{prog}: error: the grid has no points", file=sys.stderr)
        return 2
    if args.area:
        from .tools import ToolMissing, tool_path
        try:
            tool_path("yosys")
        except ToolMissing as exc:
            print(f"{prog}: error: --area: {exc}", file=sys.stderr)
            return 2
    results = Path(args.out)
    print(f"{prog}: {len(points)} points" + (f" ({skipped} left out: ways > entries)"
                                             if skipped else "")
          + f", results in {results}/", file=out, flush=True)
    if args.dry_run:
        for pt in points:
            print(f"  {pt.point_id}  {pt.label()}  seed {pt.seed}", file=out)
        return 0
    from .plots import make_plots
    from .sweep import run_sweep
    progress = _Progress(len(points), quiet=args.quiet, out=out)
    with progress:
        summary = run_sweep(points, results, jobs=args.jobs, sim=args.sim,
                            resume=not args.no_resume, ray_address=args.ray, area=args.area,
                            on_result=progress.update)
    written, not_drawn = make_plots(summary["results"], results)
    print(f"{summary['points']} points: {summary['ran']} ran, {summary['reused']} reused, "
          f"{summary['failed']} failed, in {summary['seconds']:.0f} s wall, "
          f"{summary['cpu_seconds']:.0f} s CPU", file=out)
    if summary["phase_cpu"]:
        print("CPU by phase: " + ", ".join(f"{name} {sec:.0f} s" for name, sec
                                             in summary["phase_cpu"].items()), file=out)
    for r in summary["results"]:
        if r["status"] != "ok":
            print(f"FAILED {r['point_id']} ({r['command']}): {r['error']}", file=out)
    print(f"CSV:   {summary['csv']}", file=out)
    print(f"JSON:  {results / 'points'}/<point_id>.json", file=out)
    for path in written:
        print(f"plot:  {path}", file=out)
    for name, why in not_drawn.items():
        print(f"plot:  {name} not drawn ({why})", file=out)
    return 1 if summary["failed"] else 0


class _Progress:
    """A rich progress bar with an ETA (plain lines when quiet or without a terminal)."""

    def __init__(self, total: int, *, quiet: bool, out):
        self.total = total
        self.quiet = quiet
        self.out = out
        self.bar = None

    def __enter__(self):
        if not self.quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                TextColumn("{task.description}"))
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def update(self, result: dict, done: int, total: int) -> None:
        d = result["design"]
        line = (f"{result['point_id']} {d['entries']}e/{d['ways']}w/{d['replacement']} "
                f"{result['workload']['workload']}: {result['status']}")
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=line)
        else:
            print(f"[{done}/{total}] {line}", file=self.out, flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
