"""The bug zoo: every quirk of the project against its scenario, as a table.

``make bugzoo`` (``python -m cosim.bugzoo``) runs each quirk -- the hardware ones of
``hdl.config.MmuConfig``, the kernel ones of :class:`pyrmap.kernel.Quirks` and the device
driver's of :class:`pyrmap.devdriver.DevDriverConfig` -- against the scenario that exposes it,
with the quirk on (a checker must fail) and then off (the same scenario must pass), and prints

    quirk | layer | historical reference | scenario | detected | by | after | quirk off
          | co-simulation run | icarus | verilator

and then, unless ``--no-mutations`` or ``--only``, a row per engine mutation of
:mod:`cosim.mutate` (layer ``mutation``): the default fuzz run on a mutated copy of the
engine, the checker that killed it and after how many program steps, with the fuzz on the
unmutated engine as its "quirk off".

Scenarios come in two kinds:

* **litmus** (on the RTL, cycle level): a litmus file of ``litmus/`` run by
  :func:`cosim.litmus.runner.run_files` with the quirk in the ``Top`` configuration or in the
  run's kernel; the checker is the litmus condition that failed; "after" counts the simulated
  cycles up to the end of the first failing run.
* **scheduler** (pyrmap on SoftArch): a race of :mod:`pyrmap.quirk_races` (the quirk tests
  run the same functions), raced by the seeded scheduler over a fixed range of seeds; the
  checker is the :class:`pyrmap.checkers.InvariantViolation`'s; "after" counts the scheduling
  decisions of the race's scheduler (SoftArch has no clock), read from the machine the race
  hands to its ``observe``.  The same seed then runs with the quirk off.

Every quirk that fails a registered co-simulation scenario on the RTL
(:data:`cosim.scenarios.QUIRK_SCENARIOS`) also runs it, with the quirk on and off, on each
simulator asked for (``--sim icarus|verilator|both``, default both): the last columns name the
checker that failed the run and the simulated cycle of its violation (``tlb @ 1723``), or why
the row is not shown (``MISSED``, ``off FAILS``).  With ``--mmu cva6`` or ``both`` (the
default) the same run goes to every other core MMU of ``hdl.config.MMUS`` too (a column named
after it, on Verilator: CVA6's only simulator): a row whose run cannot be built there says
why, in the configuration's own words (a hardware quirk is a switch of our MMU; a symptom
that needs a walker setting A/D has no CVA6 run, since CVA6 is Svade).

The exit status is non-zero when a quirk is not detected, its scenario fails with it off, or
its co-simulation run misses it or fails with it off on a simulator.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from hdl.config import MMUS
from pyrmap import quirk_races

from .fastquirks import FastCatch, NotOnFastPath

__all__ = ["Quirk", "Outcome", "QUIRKS", "run_quirk", "rtl_cell", "format_table", "main"]

ROOT = Path(__file__).resolve().parent.parent
LITMUS = ROOT / "litmus"
SEEDS = range(40)


@dataclass(frozen=True)
class Quirk:
    """One quirk and how to expose it.

    Attributes
    ----------
    name : str
        The switch (a field of MmuConfig, Quirks or DevDriverConfig).
    layer : str
        ``"hdl"``, ``"kernel"`` or ``"devdriver"``.
    reference : str
        The historical bug: a commit id, an erratum, a spec rule.
    scenario : str or callable
        A litmus file name under ``litmus/``, or a race of :mod:`pyrmap.quirk_races`
        (``race(seed, on, *, observe)``).
    runs : int
        Litmus runs per setting.
    fast : FastCatch or NotOnFastPath
        How the fast path catches the quirk (:mod:`cosim.fastquirks`), or why it cannot.
    """
    name: str
    layer: str
    reference: str
    scenario: Union[str, Callable]
    runs: int = 10
    fast: Union[FastCatch, NotOnFastPath, None] = None

    @property
    def kind(self) -> str:
        return "litmus" if isinstance(self.scenario, str) else "scheduler"

    @property
    def scenario_name(self) -> str:
        """The litmus file, or ``quirk_races:<race>``."""
        if isinstance(self.scenario, str):
            return self.scenario
        return f"{self.scenario.__module__.rpartition('.')[2]}:{self.scenario.__name__}"


def other_mmus() -> tuple:
    """The core MMUs besides ours (``hdl.config.MMUS``): each has a column of co-simulation
    runs, on Verilator."""
    return tuple(m for m in MMUS if m != "ours")


#: The column of the quirks' fast-path runs (:mod:`cosim.fastquirks`, on Verilator).
FAST_COLUMN = "fast path"

#: The fast path's race-seeking knobs for an unmapping flush meeting a walk in flight of its
#: page (cosim.fastrun): a walker's memory response up to 64 cycles late while the memory
#: serves the kernel's PTE operations, migration aimed at the page an engine is on, 8-page
#: windows, a kernel step every 3,000 cycles; 300 accesses (with 1,500, seeds 1-6 catch both
#: quirks; without these knobs seeds 1-4 catch neither: bench/NOTES.md).
_WALK_RACE = {"FAST_WALK_DELAY": 64, "FAST_AIM": "engines", "FAST_PAGES": 8,
              "FAST_PERIOD": 3000, "FAST_ACCESSES": 300}
#: ... and for an access taken in the acknowledgement's cycle hitting the entry being
#: removed: migration aimed at the page an engine is on, accesses concentrated on a hot page
#: (with 6,000 accesses seeds 1-6 catch it; 1 of 4 without these knobs).
_HIT_RACE = {"FAST_AIM": "engines", "FAST_MODE": "zipf", "FAST_ACCESSES": 3000}
#: The device-driver rows' knobs: the device (DeviceMmu and its host driver) accesses the
#: shared file window every 200 cycles beside the engines and the kernel steps.
_DEVICE = {"FAST_DEVICE": 200}


@dataclass
class Outcome:
    """What one quirk's scenario did; ``rtl``: column -> the row of its co-simulation run
    (:func:`cosim.scenarios.quirk_outcome`): a simulator's name for our MMU, another MMU's
    name (:func:`other_mmus`) for its run on Verilator, for the runs made."""
    quirk: Quirk
    detected: bool = False
    checker: str = ""
    after: str = ""
    off_passed: bool = False
    detail: str = ""
    seconds: float = 0.0
    rtl: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.detected and self.off_passed and all(r["ok"] for r in self.rtl.values())

    @property
    def not_applicable(self) -> dict:
        """Column -> why the co-simulation run cannot be built there."""
        return {c: r["not_applicable"] for c, r in self.rtl.items()
                if r.get("not_applicable")}


QUIRKS: list[Quirk] = [
    Quirk("quirk_plain_ad_write", "hdl",
          "Svadu: A/D update must be atomic (herd LDRx+SWPptex+af)", "ad_cas_unmap.litmus",
          fast=FastCatch("frame", also=("tlb", "rmap"))),
    Quirk("quirk_ad_on_nonpresent", "hdl",
          "Intel KNL erratum KNL4 (Linux X86_BUG_PTE_LEAK)", "ad_cas_unmap.litmus",
          fast=FastCatch("frame", also=("tlb", "rmap"))),
    Quirk("quirk_fill_after_inval", "hdl",
          "RISC-V SFENCE.VMA: no walk begun before it fills after it", "walk_inflight.litmus",
          fast=FastCatch("tlb", seed=3, env=_WALK_RACE, also=("frame",))),
    Quirk("quirk_walk_answer_after_inval", "hdl",
          "RISC-V SFENCE.VMA: no walk begun before it answers after it", "walk_answer.litmus",
          fast=FastCatch("tlb", seed=3, env=_WALK_RACE)),
    Quirk("quirk_inval_clear_late", "hdl",
          "RISC-V SFENCE.VMA: no hit on an entry it removed", "inval_clear_late.litmus",
          runs=20,
          fast=FastCatch("tlb", seed=6, env=_HIT_RACE)),
    Quirk("nonatomic_ptep_get_and_clear", "kernel",
          "x86 ptep_get_and_clear is xchg (herd STRx+LDR-STRptex+db)",
          "clear_flush_kernel.litmus", runs=40,
          fast=FastCatch("dirt", seed=2, env={"FAST_OPS": "race", "FAST_WRITENOTIFY": 0,
                                              "FAST_YIELD": 64, "FAST_PERIOD": 300,
                                              "FAST_ACCESSES": 3000})),
    Quirk("page_check_address_lockless", "kernel", "479db0bf408e",
          quirk_races.lockless_race, fast=FastCatch("tlb")),
    Quirk("zap_flush_after_pte_unlock", "kernel", "1cf35d47712d", quirk_races.zap_race,
          fast=FastCatch("tlb")),
    Quirk("zap_rmap_before_flush", "kernel", "5df397dec7c4", quirk_races.zap_rmap_race,
          fast=FastCatch("tlb")),
    Quirk("notifier_release_unlink_first", "kernel", "3ad3d901bbcf",
          quirk_races.release_race,
          fast=NotOnFastPath("a page must be unmapped and freed within the few cycles "
                             "between exit's unlink of the notifier and its release; the "
                             "fast path's exit step (a device run's end, a device-mapped page "
                             "migrated beside exit) missed that window on seeds 1-6 with "
                             "yields of 2 to 255 cycles, where the step path's scheduler "
                             "places it")),
    Quirk("split_vma_keeps_pgoff", "kernel",
          "mm/mmap.c split_vma: the upper half's vm_pgoff += pages below the split",
          quirk_races.split_race,
          fast=FastCatch("rmap", env={"FAST_PAGES": 16, "FAST_PERIOD": 6000, "FAST_OPS": "split"},
                         also=("shadow", "dirt"))),
    Quirk("no_seq_retry", "devdriver", "e930bffe95e1 (KVM mmu_notifier_seq)",
          quirk_races.seq_race, fast=FastCatch("notifier", env=_DEVICE, also=("frame",))),
    Quirk("defer_inval_to_range_end", "devdriver", "CVE-2018-18281 (device twin)",
          quirk_races.defer_migrate, fast=FastCatch("tlb", env=_DEVICE,
                                                    also=("frame", "notifier"))),
    Quirk("no_count_check", "devdriver", "e930bffe95e1 (KVM mmu_notifier_count)",
          quirk_races.count_race, fast=FastCatch("notifier", env=_DEVICE)),
]


# --- scheduler scenarios -------------------------------------------------------------------------

def _run_scheduler(q: Quirk, out: Outcome) -> None:
    from pyrmap.checkers import InvariantViolation
    from pyrmap.rmap import KernelBug
    for seed in SEEDS:
        machines: list = []
        try:
            q.scenario(seed, True, observe=machines.append)
        except (InvariantViolation, KernelBug) as exc:
            out.detected = True
            out.checker = (exc.checker if isinstance(exc, InvariantViolation)
                           else type(exc).__name__)
            n = machines[0].sched.steps
            out.after = (f"{n} sched steps" if n else "sequential (0 sched steps)") + \
                f" (seed {seed})"
            out.detail = str(exc).splitlines()[0][:160]
        else:
            continue
        try:
            q.scenario(seed, False)
            out.off_passed = True
        except (InvariantViolation, KernelBug) as exc:
            out.detail += f" | quirk off: {str(exc).splitlines()[0][:120]}"
        return
    out.detail = f"no seed in {SEEDS} hit the race"


# --- litmus scenarios ----------------------------------------------------------------------------

def _run_litmus(q: Quirk, out: Outcome, sims: Sequence[str], runs: Optional[int],
                seed: int) -> None:
    """The litmus scenario on every simulator of ``sims``: detected (and passing off) only
    when it is on each."""
    from .litmus.runner import run_files
    path = str(LITMUS / q.scenario)
    n = runs or q.runs
    afters, details = [], []
    out.detected = out.off_passed = True
    for sim in sims:
        kw = dict(runs=n, sim=sim, seed=seed, arbitration="round_robin")
        if q.layer == "hdl":
            on = run_files([path], config={q.name: True}, **kw)[0]
        else:
            on = run_files([path], kernel_quirks=[q.name], **kw)[0]
        bad = ([f for f in on.failures if "error" not in f.split(":", 2)[1]]
               if on.failures else [])
        if not on.passed and on.first_bad_condition and on.first_bad_condition != "run error":
            out.checker = out.checker or f"litmus {on.first_bad_condition}"
            afters.append(f"{on.first_bad_cycles} cycles ({sim})")
            details.append((bad or on.failures)[0][:160])
        else:
            out.detected = False
            details.append(f"{sim}: " + (on.failures[0][:160] if on.failures else
                                         f"no forbidden outcome in {n} runs"))
        off = run_files([path], **kw)[0]
        if not off.passed:
            out.off_passed = False
            details.append(f"quirk off ({sim}): {off.failures[0][:120]}")
    out.after = ", ".join(afters)
    out.detail = " | ".join(details)


def run_quirk(q: Quirk, *, sim: Union[str, Sequence[str]] = "icarus",
              runs: Optional[int] = None, seed: int = 1, cosim: bool = False,
              mmus: Sequence[str] = ("ours",), fast: bool = False) -> Outcome:
    """Run ``q``'s scenario with the quirk on, then off, on the simulator(s) ``sim`` (a
    litmus scenario; a scheduler one runs on SoftArch); with ``cosim``, also the quirk's
    registered co-simulation run, on and off: on our MMU on each simulator of ``sim`` when
    ``mmus`` has ``"ours"``, on each other MMU of ``mmus`` on Verilator
    (:attr:`Outcome.rtl`); with ``fast``, also its fast-path run on Verilator (column
    :data:`FAST_COLUMN`, :func:`fast_row`).  Never raises for a scenario that fails (the
    :class:`Outcome` says so)."""
    from .scenarios import QUIRK_SCENARIOS, quirk_outcome
    sims = (sim,) if isinstance(sim, str) else tuple(sim)
    out = Outcome(q)
    t0 = time.monotonic()
    try:
        if q.kind == "litmus":
            _run_litmus(q, out, sims, runs, seed)
        else:
            _run_scheduler(q, out)
        if cosim and q.name in QUIRK_SCENARIOS:
            if "ours" in mmus:
                for s in sims:
                    out.rtl[s] = quirk_outcome(q.name, s)
            for mmu in other_mmus():
                if mmu in mmus:
                    out.rtl[mmu] = quirk_outcome(q.name, "verilator", mmu=mmu)
        if fast:
            out.rtl[FAST_COLUMN] = fast_row(q)
    except Exception as exc:  # noqa: BLE001 - a broken scenario is a row of the table
        out.detail = f"scenario broke: {type(exc).__name__}: {exc}"[:200]
    out.seconds = time.monotonic() - t0
    return out


def fast_row(q: Quirk) -> dict:
    """Quirk ``q`` on the fast path (:func:`cosim.fastquirks.fast_quirk_outcome`, on
    Verilator), or a row saying why it cannot apply there (``not_applicable``)."""
    if isinstance(q.fast, NotOnFastPath):
        return {"quirk": q.name, "not_applicable": q.fast.reason, "ok": True,
                "detected": False, "off_passed": True, "checker": None, "cycle": None}
    from .fastquirks import fast_quirk_outcome
    return fast_quirk_outcome(q)


def rtl_cell(row: Optional[dict]) -> str:
    """One simulator's cell of a co-simulation run: ``checker @ cycle`` when the run with
    the quirk failed, named by one of its checkers, and passed with it off; else why not."""
    if row is None:
        return "-"
    if row.get("not_applicable"):
        why = row["not_applicable"]
        why = why.split(": ", 1)[-1].split(": use ")[0]
        return f"n/a: {why}"
    if not row["detected"]:
        return f"MISSED ({row['checker'] or 'passed'})"
    if not row["off_passed"]:
        return "off FAILS"
    return f"{row['checker']} @ {row['cycle'] if row['cycle'] is not None else '?'}"


def rtl_run(name: str) -> str:
    """The registered co-simulation scenario that also catches quirk ``name`` on the RTL
    (:data:`cosim.scenarios.QUIRK_SCENARIOS`, proved by tests/test_cosim_scenarios.py), as
    ``"scenario seed N"``, or ``"-"``."""
    from .scenarios import QUIRK_SCENARIOS
    q = QUIRK_SCENARIOS.get(name)
    return f"{q.scenario} seed {q.seed}" if q is not None else "-"


def mutation_row(o, control=None) -> tuple:
    """One engine mutation (a :class:`cosim.mutate.MutantOutcome`) as a row of the table:
    layer ``mutation``, its kind as the reference, the default fuzz as the scenario, the
    checker that killed it and the program steps it took; "quirk off" is the unmutated
    engine's run of the same fuzz (``control``)."""
    from .mutate import MUTATIONS, OPEN_MUTATIONS, SEEDS, STEPS
    kind = next((m.kind for m in MUTATIONS + OPEN_MUTATIONS if m.name == o.name), "-")
    if not o.killed:
        after = "-"
    elif o.stage == "demo":
        after = f"{o.steps_run} program steps, then the demo (seed {o.seed})"
    else:
        after = f"{o.steps_run} program steps (seed {o.seed}, step {o.step})"
    off = "-" if control is None else "FAILS" if control.killed else "passes"
    return (o.name, "mutation", kind, f"default fuzz {SEEDS[0]}..{SEEDS[-1]} x {STEPS}",
            "yes" if o.killed else "NO", o.by or "-", after, off, "-")


def format_table(outcomes: list, mutants: list = (), control=None) -> str:
    """The table ``make bugzoo`` prints: a row per quirk (the co-simulation column comes from
    the scenario registry, then one column per simulator its runs went to, :func:`rtl_cell`),
    then a row per engine mutation (:func:`mutation_row`)."""
    from .build import SIMULATORS
    sims = [s for s in (*SIMULATORS, *other_mmus(), FAST_COLUMN)
            if any(s in o.rtl for o in outcomes)]
    head = ("quirk", "layer", "reference", "scenario", "detected", "by", "after", "quirk off",
            "co-simulation run", *sims)
    rows = [head]
    for o in outcomes:
        q = o.quirk
        rows.append((q.name, q.layer, q.reference, q.scenario_name, "yes" if o.detected else "NO",
                     o.checker or "-", o.after or "-", "passes" if o.off_passed else "FAILS",
                     rtl_run(q.name), *(rtl_cell(o.rtl.get(s)) for s in sims)))
    rows.extend(mutation_row(o, control) + ("-",) * len(sims) for o in mutants)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Optional[list] = None, prog: str = "python -m cosim.bugzoo") -> int:
    """Run every quirk against its scenario; print the table; exit 1 if one is missed."""
    import logging

    from pyrmap.cliargs import ArgumentParser, int_arg

    from .build import SIMULATORS
    names = [q.name for q in QUIRKS]
    p = ArgumentParser(prog=prog, description=main.__doc__)
    p.add_argument("--sim", choices=SIMULATORS + ("both",), default="both",
                   help="simulator of the litmus and co-simulation runs (default "
                        "%(default)s: every row on Icarus and on Verilator)")
    p.add_argument("--mmu", choices=(*MMUS, "both"), default="both",
                   help="core MMU(s) of the co-simulation runs (default %(default)s: every "
                        "one); CVA6's "
                        "run on Verilator only, whatever --sim says")
    p.add_argument("--fast", action="store_true",
                   help="also run each quirk on the fast path (Verilator; column 'fast path')")
    p.add_argument("--no-cosim", action="store_true",
                   help="skip the quirks' co-simulation runs (litmus and scheduler rows only)")
    p.add_argument("--runs", type=int_arg(1, 100_000), default=None,
                   help="litmus runs per setting")
    p.add_argument("--seed", type=int_arg(0), default=1)
    p.add_argument("--only", action="append", default=[], metavar="QUIRK", choices=names,
                   help=f"run only these quirks: {', '.join(names)}")
    p.add_argument("-v", "--verbose", action="store_true", help="print each scenario's detail")
    p.add_argument("--no-mutations", action="store_true",
                   help="leave out the engine mutations (cosim.mutate): by default each is "
                        "run through the default fuzz, with the unmutated engine as control")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    chosen = [q for q in QUIRKS if not args.only or q.name in args.only]
    missing = _unlisted_quirks()
    outcomes = []
    for q in chosen:
        sims = SIMULATORS if args.sim == "both" else (args.sim,)
        o = run_quirk(q, sim=sims, runs=args.runs, seed=args.seed, cosim=not args.no_cosim,
                      mmus=MMUS if args.mmu == "both" else (args.mmu,), fast=args.fast)
        outcomes.append(o)
        print(f"  {q.name}: {'detected' if o.detected else 'NOT detected'}"
              f"{', passes with it off' if o.off_passed else ', FAILS with it off'}"
              + "".join(f"; {s}: {rtl_cell(r)}" for s, r in o.rtl.items())
              + f" ({o.seconds:.1f} s)", file=sys.stderr)
    from pyrmap.profiles import DEFAULT_PROFILE, describe
    print(f"kernel {describe(DEFAULT_PROFILE)}; each kernel row undoes one fix (or switches "
          f"one quirk on) over it")
    mutants, control = [], None
    if not args.no_mutations and not args.only:
        from .mutate import MUTATIONS, run_mutations
        *mutants, control = run_mutations(list(MUTATIONS) + [None])
    print(format_table(outcomes, mutants, control))
    if args.verbose:
        for o in outcomes:
            print(f"{o.quirk.name}: {o.detail}")
    bad = [o for o in outcomes if not o.ok]
    from pyrmap.kernel import no_symptom_quirks
    for name, why in no_symptom_quirks().items():
        print(f"no symptom in this engine: {name} ({why})")
    if missing:
        print(f"quirks with no scenario in the zoo: {', '.join(missing)}")
    for mmu in other_mmus():
        rows = [o.rtl[mmu] for o in outcomes if mmu in o.rtl]
        runs = [r for r in rows if not r["not_applicable"]]
        if rows:
            print(f"on MMU {mmu}: {sum(r['ok'] for r in runs)} of {len(runs)} co-simulation "
                  f"runs that apply caught, each passing with the quirk off; "
                  f"{len(rows) - len(runs)} not applicable")
    print(f"{len(outcomes) - len(bad)} of {len(outcomes)} quirks detected, each passing with "
          f"the quirk off" if not bad else
          f"{len(bad)} of {len(outcomes)} quirks missed or failing with the quirk off: "
          f"{', '.join(o.quirk.name for o in bad)}")
    survived = [o.name for o in mutants if not o.killed]
    if mutants:
        print(f"{len(mutants) - len(survived)} of {len(mutants)} engine mutations killed by the "
              f"default fuzz, which passes on the unmutated engine"
              if not survived and not control.killed else
              f"engine mutations survived: {', '.join(survived) or 'none'}; the unmutated "
              f"engine {'FAILS' if control.killed else 'passes'} the default fuzz")
    return 1 if bad or missing or survived or (control is not None and control.killed) else 0


def _unlisted_quirks() -> list[str]:
    """Every quirk switch of the project that :data:`QUIRKS` does not cover."""
    import dataclasses
    from hdl.config import MmuConfig
    from pyrmap.kernel import Quirks
    from pyrmap.kernel import no_symptom_quirks
    known = {q.name for q in QUIRKS} | set(no_symptom_quirks())
    switches = [f.name for f in dataclasses.fields(MmuConfig) if f.name.startswith("quirk_")]
    switches += [f.name for f in dataclasses.fields(Quirks)]
    from pyrmap.devdriver import DRIVER_QUIRKS
    switches += DRIVER_QUIRKS
    return [s for s in switches if s not in known]


if __name__ == "__main__":
    sys.exit(main())
