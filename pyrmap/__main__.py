"""``python -m pyrmap demo --seed N`` and ``python -m pyrmap fuzz --seed N --steps K``.

Every flag is checked before anything runs: a bad one is a one-line error and exit status 2.
"""

from __future__ import annotations

import dataclasses
import sys

from .cliargs import ArgumentParser, choice_list, int_arg
from .faults import add_faults_argument
from .profiles import add_kernel_argument, describe

#: The smallest physical memory a System boots with (pyrmap.scenario.System).
MIN_FRAMES = 16
#: Upper bounds that keep a run within minutes (PhysMem allocates every frame up front).
MAX_FRAMES = 1 << 16
MAX_STEPS = 1_000_000


def _quirk_names() -> list[str]:
    from .kernel import Quirks
    return [f.name for f in dataclasses.fields(Quirks)]


def _parser() -> ArgumentParser:
    from .scenario import PROGRAM_OPS
    from .sched import STRATEGIES
    quirks = _quirk_names()
    parser = ArgumentParser(prog="python -m pyrmap",
                            description="The rmap engine on the SoftArch golden MMU.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="{demo,fuzz}")
    frames = int_arg(MIN_FRAMES, MAX_FRAMES, "physical memory is allocated up front")
    demo = sub.add_parser("demo", help="reclaim under memory pressure, every invariant checked")
    demo.add_argument("--seed", type=int_arg(0), default=1)
    demo.add_argument("--frames", type=frames, default=52,
                      help=f"physical memory in 4 KiB frames ({MIN_FRAMES}..{MAX_FRAMES}, "
                           f"default %(default)s)")
    demo.add_argument("--phases", type=int_arg(1, 10_000), default=10)
    demo.add_argument("--quirk", action="append", default=[], choices=quirks, metavar="NAME",
                      help=f"switch on a historical bug (repeatable): {', '.join(quirks)}")
    demo.add_argument("--svade", action="store_true",
                      help="Svade MMU (A/D faults) instead of hardware A/D updates")
    add_kernel_argument(demo)
    fuzz = sub.add_parser("fuzz", help="a seeded random program of mm operations, checked "
                                       "after every step (what the property tests run)")
    fuzz.add_argument("--seed", type=int_arg(0), required=True)
    fuzz.add_argument("--steps", type=int_arg(1, MAX_STEPS), default=30)
    fuzz.add_argument("--nframes", type=frames, default=64,
                      help=f"physical memory in 4 KiB frames ({MIN_FRAMES}..{MAX_FRAMES})")
    fuzz.add_argument("--quirk", action="append", default=[], choices=quirks, metavar="NAME",
                      help=f"switch on a historical bug (repeatable): {', '.join(quirks)}")
    fuzz.add_argument("--sequential", action="store_true", help="no concurrent threads")
    fuzz.add_argument("--svade", action="store_true",
                      help="Svade MMU: A/D faults resolved by the engine instead of hardware "
                           "A/D updates")
    add_faults_argument(fuzz)
    add_kernel_argument(fuzz)
    ops = list(PROGRAM_OPS)
    fuzz.add_argument("--ops", type=choice_list(ops), default=None,
                      help=f"comma-separated operations to draw from, of {', '.join(ops)} "
                           f"(default: all)")
    fuzz.add_argument("--sched", choices=STRATEGIES, default="random",
                      help="scheduling strategy: seeded random switches, or PCT priorities "
                           "with change points (prints PCT's probability bound)")
    fuzz.add_argument("--depth", type=int_arg(1, 16), default=3,
                      help="PCT: the bug depth aimed at (1..16)")
    fuzz.add_argument("--no-races", action="store_true",
                      help="no workloads on the mm an operation changes, no race operations")
    return parser


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)

    if args.cmd == "demo":
        from .demo import run_demo
        try:
            result = run_demo(args.seed, nframes=args.frames, phases=args.phases,
                              quirks=args.quirk or None, svadu=not args.svade,
                              kernel=args.kernel)
        except ValueError as exc:
            print(f"python -m pyrmap demo: error: {exc}", file=sys.stderr)
            return 2
        return 0 if result.ok else 1

    from .checkers import InvariantViolation
    from .scenario import ProgramStuck, run_program
    print(f"kernel {describe(args.kernel)}", flush=True)
    try:
        system = run_program(args.seed, args.steps, nframes=args.nframes,
                             quirks=args.quirk or None, concurrency=not args.sequential,
                             ops=args.ops, svadu=not args.svade, faults=args.faults,
                             strategy=args.sched, depth=args.depth, races=not args.no_races,
                             kernel=args.kernel,
                             on_step=lambda i, name: print(f"step {i}: {name}", flush=True))
    except InvariantViolation as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except ProgramStuck as exc:
        print(f"python -m pyrmap fuzz: error: argument --ops: {exc}", file=sys.stderr)
        return 2
    idle = system.checkers.not_exercised()
    print(f"OK: {args.steps} steps on kernel {describe(args.kernel)}, every check passed "
          f"({sum(c[1] for c in system.checkers.verdicts())} checks)"
          + (f"; not exercised: {', '.join(idle)}" if idle else ""))
    if args.sched == "pct":
        print(format_pct(system.sched.pct_report()))
    from .windows import format_windows
    print("window coverage (landings between a PTE change, its lock drop and its flush):")
    print(format_windows(system.windows, ()))
    return 0


def format_pct(rep: dict) -> str:
    """PCT's guarantee in one line (see :meth:`pyrmap.sched.Scheduler.pct_report`)."""
    if rep["bound"] is None:
        return f"PCT depth {rep['depth']}: no run had two threads"
    d = rep["depth"]
    return (f"PCT depth {d}: a bug of depth <= {d} is found with probability >= "
            f"1/(n*k^(d-1)) = 1/({rep['threads']}*{rep['k']}^{d - 1}) = {rep['bound']:.3g} "
            f"per run (the worst of {rep['runs']} runs; {rep['beyond_k']} ran past their k, "
            f"{rep['spin_demotions']} spinning threads dropped)")


if __name__ == "__main__":
    sys.exit(main())
