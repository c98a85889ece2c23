"""The bug zoo's fast-path column: each quirk of :data:`cosim.bugzoo.QUIRKS` on the fast path.

Every row of the bug zoo says how the fast path (:mod:`cosim.fastrun`: the traffic engines in
gateware, every drained record judged, the quiescent checks after each kernel step) catches
its quirk -- :class:`FastCatch`: the checker that names the violation with a seed, and the
run's knobs -- or why it cannot apply there (:class:`NotOnFastPath`).

:func:`fast_quirk_outcome` runs one row: the reclaim workload with the quirk on (a hardware
quirk in the MMU's configuration, a kernel quirk in ``FAST_QUIRKS``) must fail with one of the
row's checkers, and the same seed and knobs with the quirk off must pass.  The runs are small
and hostile (:data:`QUIRK_ENV`: 128 frames, 4-page windows, a kernel step every 800 cycles,
half the accesses stores), so frames are freed and reused within a few hundred cycles and
every kernel operation meets the engines' accesses.

``python -m cosim.fastquirks QUIRK... --seeds N`` runs rows over seeds 1..N and prints, per
seed, whether the quirk was caught, whether the quirk-off run passed, and how often that run
reached the windows an invalidation meets (:data:`INVAL_WINDOWS`); ``--knobs default`` runs
the rows with :data:`QUIRK_ENV` alone, for the same figures without the row's knobs, and
``--set FAST_<KNOB>=VALUE`` sets a knob over either.

Example
-------
>>> from cosim.bugzoo import QUIRKS                                   # doctest: +SKIP
>>> zap = next(q for q in QUIRKS if q.name == "zap_flush_after_pte_unlock")  # doctest: +SKIP
>>> row = fast_quirk_outcome(zap)                                     # doctest: +SKIP
>>> row["detected"], row["checker"], row["off_passed"]               # doctest: +SKIP
(True, 'tlb', True)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .fastbuild import FastParams, fast_run, fully_passed

__all__ = ["FastCatch", "NotOnFastPath", "QUIRK_ENV", "QUIRK_PARAMS", "INVAL_WINDOWS",
           "fast_quirk_outcome", "main"]

#: The knobs of a fast-path quirk run (each row's ``env`` goes over them).
QUIRK_ENV: Mapping[str, int] = {"FAST_ACCESSES": 1500, "FAST_PAGES": 4, "FAST_PERIOD": 800,
                                "FAST_STORE": 500}


#: The quirk-off run's counts of the windows an invalidation meets (the report's
#: ``log_checks`` of :class:`cosim.fastcheck.LogCheckers`, and the memory's
#: ``walk_reads_overtaken``: walker answers whose PTE the kernel changed while they waited).
INVAL_WINDOWS = ("walks_across_unmap", "ack_cycle_requests", "walk_reads_overtaken")


@dataclass(frozen=True)
class FastCatch:
    """How the fast path catches a quirk.

    Attributes
    ----------
    checker : str
        The checker that names the violation with ``seed`` (a name of
        :data:`pyrmap.checker_registry.CHECKERS`, or ``"scoreboard"``).
    seed : int
        A seed whose run fails with the quirk on (runs are deterministic per seed).
    env : dict
        Knobs over :data:`QUIRK_ENV` (``FAST_*``).
    also : tuple of str
        Other checkers that catch the same quirk first with other seeds or knobs.
    """
    checker: str
    seed: int = 1
    env: Mapping = field(default_factory=dict)
    also: tuple = ()

    @property
    def checkers(self) -> tuple:
        return (self.checker,) + tuple(self.also)


@dataclass(frozen=True)
class NotOnFastPath:
    """A quirk the fast path does not catch, and why (printed in the zoo's column): what it
    needs that the fast path lacks, or, for a race its seeded workload has not been seen to
    reach, what was tried (the step path's scenario places that race on purpose)."""
    reason: str


#: The gateware of a quirk run: 128 frames, memory latency 1, 4096-record rings.
QUIRK_PARAMS = FastParams(words_log2=16, latency=1, log_log2=12)


def _run(layer: str, name: Optional[str], sim: str, seed: int, env_items: tuple):
    from hdl.config import MmuConfig
    env = dict(env_items)
    hdl = {}
    if name is not None and layer == "hdl":
        hdl[name] = True
    elif name is not None:
        env["FAST_QUIRKS"] = name
    ok, rep, where = fast_run(MmuConfig(**hdl), QUIRK_PARAMS, sim, seed=seed, env=env)
    return ok, rep or {}, where


_off_run = functools.lru_cache(maxsize=None)(
    lambda sim, seed, env_items: _run("kernel", None, sim, seed, env_items))


def fast_quirk_outcome(q, sim: str = "verilator", seed: Optional[int] = None,
                       knobs: Optional[Mapping] = None) -> dict:
    """Run bug-zoo row ``q`` (a :class:`cosim.bugzoo.Quirk` whose ``fast`` is a
    :class:`FastCatch`) on the fast path, quirk on then off, with the row's seed and knobs
    (``seed``, ``knobs``: instead of the row's; ``knobs`` go over :data:`QUIRK_ENV`).

    Returns
    -------
    dict
        ``quirk``, ``sim``, ``seed``, ``detected`` (the quirk-on run failed, naming one of the
        row's checkers), ``checker`` (the one it named), ``cycle`` (of the violation),
        ``off_passed`` (the quirk-off run passed with
        every checker exercised), ``ok`` (both), ``violation`` (its first line),
        ``windows`` and ``windows_off`` (the kernel windows each run reached, its report's
        ``windows``: :attr:`cosim.fastarch.FastArch.windows`), ``inval_windows`` (the
        quirk-off run's :data:`INVAL_WINDOWS` counts) and ``command`` (the environment that
        reproduces the quirk-on run).

    Raises
    ------
    ValueError
        ``q.fast`` is not a :class:`FastCatch` (the row says the fast path cannot show it).
    """
    catch = q.fast
    if not isinstance(catch, FastCatch):
        raise ValueError(f"Quirk {q.name!r} has no fast-path run: {catch!r}")
    seed = catch.seed if seed is None else seed
    env = dict(QUIRK_ENV)
    env.update(catch.env if knobs is None else knobs)
    items = tuple(sorted((k, str(v)) for k, v in env.items()))
    ok_on, on, where = _run(q.layer, q.name, sim, seed, items)
    ok_off, off, _ = _off_run(sim, seed, items)
    counts = dict(off.get("log_checks") or {}, walk_reads_overtaken=off.get(
        "walk_reads_overtaken", 0))
    checker = on.get("checker")
    detected = not ok_on and checker in catch.checkers
    off_passed = fully_passed(ok_off, off)[0]
    quirk_env = (f"FAST_QUIRKS={q.name} " if q.layer != "hdl" else f"(MmuConfig {q.name}=True) ")
    return {
        "quirk": q.name, "sim": sim, "seed": seed,
        "detected": detected, "checker": checker, "cycle": on.get("cycle"),
        "off_passed": off_passed, "ok": detected and off_passed,
        "violation": (on.get("error") or "").split("\n", 1)[0][:200],
        "windows": on.get("windows", {}), "windows_off": off.get("windows", {}),
        "command": quirk_env + " ".join(f"{k}={v}" for k, v in items) + f" seed {seed}",
        "run_dir": str(where),
        "inval_windows": {k: int(counts.get(k, 0)) for k in INVAL_WINDOWS},
    }


def main(argv: Optional[list] = None) -> int:
    """Run bug-zoo rows on the fast path over seeds 1..N; print a line per run; exit 1 when
    a quirk-off run fails."""
    import logging

    from pyrmap.cliargs import ArgumentParser, int_arg

    from .bugzoo import QUIRKS
    rows = {q.name: q for q in QUIRKS if isinstance(q.fast, FastCatch)}
    p = ArgumentParser(prog="python -m cosim.fastquirks", description=main.__doc__)
    p.add_argument("quirks", nargs="+", choices=sorted(rows), metavar="QUIRK",
                   help=f"rows of the bug zoo the fast path catches: {', '.join(sorted(rows))}")
    p.add_argument("--seeds", type=int_arg(1, 1000), default=4, help="seeds 1..N (default 4)")
    p.add_argument("--knobs", choices=("row", "default"), default="row",
                   help="the row's knobs over QUIRK_ENV (default), or QUIRK_ENV alone")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="a knob over those (FAST_ACCESSES=1500); repeatable")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    over = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("FAST_"):
            p.error(f"--set takes FAST_<KNOB>=VALUE, not {item!r}")
        over[key] = value
    logging.basicConfig(level=logging.WARNING)
    bad = 0
    for name in args.quirks:
        q = rows[name]
        caught = 0
        for seed in range(1, args.seeds + 1):
            knobs = dict({} if args.knobs == "default" else q.fast.env, **over)
            row = fast_quirk_outcome(q, args.sim, seed, knobs)
            caught += row["detected"]
            bad += not row["off_passed"]
            got = (f"caught by {row['checker']} @ {row['cycle']}" if row["detected"] else
                   f"MISSED ({row['checker'] or 'passed'})")
            print(f"{name} seed {seed} ({args.knobs} knobs): {got}; quirk off "
                  f"{'passes' if row['off_passed'] else 'FAILS'}; windows "
                  + ", ".join(f"{k} {v}" for k, v in row["inval_windows"].items()), flush=True)
        print(f"{name}: caught on {caught} of {args.seeds} seeds ({args.knobs} knobs)")
    return 1 if bad else 0


if __name__ == "__main__":
    # The zoo's rows hold this module's classes as cosim.fastquirks, not as __main__.
    import sys

    from cosim.fastquirks import main as _main
    sys.exit(_main())
