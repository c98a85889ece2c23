"""``python -m pyrmap demo --seed N`` and ``python -m pyrmap fuzz --seed N --steps K``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrmap",
                                     description="The rmap engine on the SoftArch golden MMU.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="reclaim under memory pressure, every invariant checked")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--frames", type=int, default=52, help="physical memory in 4 KiB frames")
    demo.add_argument("--phases", type=int, default=10)
    demo.add_argument("--quirk", action="append", default=[],
                      help="switch on a historical bug (repeatable)")
    demo.add_argument("--svade", action="store_true",
                      help="Svade MMU (A/D faults) instead of hardware A/D updates")
    fuzz = sub.add_parser("fuzz", help="a seeded random program of mm operations, checked "
                                       "after every step (what the property tests run)")
    fuzz.add_argument("--seed", type=int, required=True)
    fuzz.add_argument("--steps", type=int, default=30)
    fuzz.add_argument("--nframes", type=int, default=64)
    fuzz.add_argument("--quirk", action="append", default=[])
    fuzz.add_argument("--sequential", action="store_true", help="no concurrent threads")
    fuzz.add_argument("--svade", action="store_true",
                      help="Svade MMU: A/D faults resolved by the engine instead of hardware "
                           "A/D updates")
    fuzz.add_argument("--ops", default=None,
                      help="comma-separated operations to draw from (default: all but the "
                           "opt-in dontneed_race)")
    args = parser.parse_args(argv)

    if args.cmd == "demo":
        from .demo import run_demo
        try:
            result = run_demo(args.seed, nframes=args.frames, phases=args.phases,
                              quirks=args.quirk or None, svadu=not args.svade)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0 if result.ok else 1

    from .checkers import InvariantViolation
    from .scenario import run_program
    try:
        ops = args.ops.split(",") if args.ops else None
        system = run_program(args.seed, args.steps, nframes=args.nframes,
                             quirks=args.quirk or None, concurrency=not args.sequential,
                             ops=ops, svadu=not args.svade,
                             on_step=lambda i, name: print(f"step {i}: {name}", flush=True))
    except InvariantViolation as exc:
        print(str(exc), file=sys.stderr)
        return 1
    idle = system.checkers.not_exercised()
    print(f"OK: {args.steps} steps, every check passed "
          f"({sum(c[1] for c in system.checkers.verdicts())} checks)"
          + (f"; not exercised: {', '.join(idle)}" if idle else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
