"""The scenarios of the co-simulation: one registry of name, summary, the quirks each one
catches, its knobs and its coroutine.

A scenario is an ``async def name(dut, seed, p, progress, out)`` that brings up a
:class:`cosim.system.CosimSystem` (or a :class:`cosim.system.RaceRun`), stores it in
``out["system"]`` and drives it; it is registered, in one place, by decorating it with
:func:`scenario`::

    @scenario("writeback", "shared file pages written while writeback cleans them",
              env={"COSIM_PHASES": 2, "COSIM_ACCESSES": 30})
    async def writeback_scenario(dut, seed, p, progress, out): ...

Everything else is generated from :data:`SCENARIOS`: ``rmap-cosim list`` and ``run``'s help,
:data:`QUIRK_SCENARIOS` (every quirk -> the scenario that catches it on the RTL), the bug zoo's
RTL column, and the one cocotb test that runs a scenario by name
(``cosim.tb.tb_scenarios.test_scenario``).

The coroutines live in :mod:`cosim.scenarios.reclaim` (reclaim, fuzz),
:mod:`cosim.scenarios.layout` (writeback, migrate_fork, mprotect, munmap, mremap, nonlinear,
svade) and :mod:`cosim.scenarios.races` (the quirk races swept over start offsets).

Example
-------
>>> r = run_scenario("writeback", "icarus", seed=1)           # doctest: +SKIP
>>> r.passed, r.report["kernel"]["pages_written"]              # doctest: +SKIP
(True, 14)
>>> on, off = run_quirk("zap_flush_after_pte_unlock")          # doctest: +SKIP
>>> on.report["violation"].splitlines()[1][:9], off.passed     # doctest: +SKIP
('[shadow] ', True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

__all__ = ["Scenario", "QuirkScenario", "SCENARIOS", "QUIRK_SCENARIOS", "TB_MODULE",
           "scenario", "catches", "play", "run_scenario", "run_quirk", "quirk_outcome",
           "violation_checker", "violation_cycle", "unexercised_quirks"]

#: The cocotb test module whose ``test_scenario`` runs any registered scenario.
TB_MODULE = "cosim.tb.tb_scenarios"


@dataclass(frozen=True)
class QuirkScenario:
    """How one quirk fails at cycle level: the registered scenario that catches it.

    Attributes
    ----------
    quirk : str
        The switch: a field of :class:`pyrmap.kernel.Quirks` (``layer="kernel"``) or of
        ``hdl.config.MmuConfig`` (``layer="hdl"``).
    layer : str
    scenario : str
        A name of :data:`SCENARIOS` (filled in by :func:`scenario`).
    seed : int
        A seed whose run fails with the quirk on (the sweeps are deterministic per seed).
    checker : str
        The checker that names the violation with ``seed`` (``"shadow"``, ``"frame"``,
        ``"tlb"``...).
    env : dict
        Knobs on top of the scenario's defaults.
    also : tuple of str
        Other checkers that catch the same quirk first with other seeds (a walker's plain
        write that resurrects a PTE is a lost write when the page is dropped unwritten, a
        freed frame when the PTE keeps mapping it).
    needs : dict
        ``hdl.config.MmuConfig`` parameters the quirk's symptom needs (the lost dirty bit of
        ``nonatomic_ptep_get_and_clear`` needs ``svadu=True``, a walker that sets D by CAS);
        a core MMU that cannot have them does not run the row (:meth:`not_applicable`).
    """
    quirk: str
    layer: str
    scenario: str
    seed: int
    checker: str
    env: Mapping[str, Any] = field(default_factory=dict)
    also: tuple = ()
    needs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checkers(self) -> tuple:
        """Every checker that legitimately reports this quirk."""
        return (self.checker,) + tuple(self.also)

    def params(self, on: bool = True, mmu: str = "ours") -> tuple[dict, dict]:
        """``(env, hdl)`` of the run with the quirk ``on`` or off, on core MMU ``mmu`` (a name
        of ``hdl.config.MMUS``): the MMU's parameters, then the scenario's, what the quirk
        needs and the quirk itself (a combination the configuration refuses is
        :meth:`not_applicable`)."""
        from hdl.config import mmu_params
        env = dict(SCENARIOS[self.scenario].env, **self.env)
        hdl = {**mmu_params(mmu), **SCENARIOS[self.scenario].hdl, **self.needs}
        if self.layer == "kernel":
            if on:
                env["COSIM_QUIRKS"] = self.quirk
        elif on:
            hdl[self.quirk] = True
        return env, hdl

    def not_applicable(self, mmu: str) -> str | None:
        """Why the quirk's run cannot be built on core MMU ``mmu`` (the configuration's own
        refusal: a hardware quirk is a switch of our MMU; a need such as ``svadu=True`` that
        the MMU does not have), or None when it can."""
        from cosim.build import make_config
        try:
            make_config(**self.params(True, mmu)[1])
        except ValueError as exc:
            return str(exc)
        return None


def catches(quirk: str, layer: str, *, seed: int = 1, checker: str, env=None,
            also: tuple = (), needs=None) -> QuirkScenario:
    """A quirk a scenario catches (for :func:`scenario`'s ``quirks``)."""
    if layer not in ("kernel", "hdl"):
        raise ValueError(f"Quirk layer must be 'kernel' or 'hdl', not {layer!r}")
    return QuirkScenario(quirk, layer, "", seed, checker, dict(env or {}), tuple(also),
                         dict(needs or {}))


@dataclass(frozen=True)
class Scenario:
    """One registered scenario.

    Attributes
    ----------
    name : str
        ``COSIM_SCENARIO``; ``rmap-cosim run NAME``.
    summary : str
        What it exercises (``rmap-cosim list``).
    run : callable
        The coroutine ``run(dut, seed, p, progress, out)``.
    env : dict
        Default knobs of :func:`run_scenario` (``COSIM_PHASES``, ``COSIM_ACCESSES``,
        ``COSIM_NFRAMES``, ``COSIM_STEPS``), small enough for ``make test``;
        ``COSIM_NFRAMES`` is also the CLI's default memory size.
    hdl : dict
        ``hdl.config.MmuConfig`` parameters the scenario needs (merged under the caller's).
    steps : str
        What ``--steps`` counts in this scenario ("" when it takes none).
    quirks : tuple of QuirkScenario
        The quirks it catches on the RTL.
    """
    name: str
    summary: str
    run: Callable
    env: Mapping[str, Any] = field(default_factory=dict)
    hdl: Mapping[str, Any] = field(default_factory=dict)
    steps: str = ""
    quirks: tuple = ()


#: name -> :class:`Scenario`, in registration order (the order of ``rmap-cosim list``).
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, summary: str, *, env=None, hdl=None, steps: str = "",
             quirks: tuple = ()):
    """Decorator: register the coroutine as scenario ``name``.

    Raises
    ------
    ValueError
        ``name`` is registered already, or one of ``quirks`` is caught by another scenario
        too (a quirk has one scenario in :data:`QUIRK_SCENARIOS`).
    """
    def register(fn: Callable) -> Callable:
        if name in SCENARIOS:
            raise ValueError(f"Scenario {name!r} is already registered")
        qs = tuple(replace(q, scenario=name) for q in quirks)
        for q in qs:
            if q.quirk in QUIRK_SCENARIOS:
                raise ValueError(f"Quirk {q.quirk!r} is already caught by scenario "
                                 f"{QUIRK_SCENARIOS[q.quirk].scenario!r}")
        SCENARIOS[name] = Scenario(name, " ".join(summary.split()), fn, dict(env or {}),
                                   dict(hdl or {}), steps, qs)
        for q in qs:
            QUIRK_SCENARIOS[q.quirk] = q
        return fn
    return register


#: Every quirk -> the :class:`QuirkScenario` that exposes it on the RTL (from the registry).
QUIRK_SCENARIOS: dict[str, QuirkScenario] = {}


def run_scenario(name: str, sim: str = "icarus", *, seed: int = 1, env=None, hdl=None,
                 tag: str = ""):
    """Run scenario ``name`` on ``sim`` with ``seed``.

    Parameters
    ----------
    env : dict, optional
        Knobs over the scenario's defaults (``COSIM_PHASES``, ``COSIM_QUIRKS``...).
    hdl : dict, optional
        ``MmuConfig`` parameters over the scenario's (``quirk_*``, ``tlb_entries``...).
    tag : str
        Distinguishes the run directory of otherwise identical runs.

    Returns
    -------
    cosim.build.RunResult
        Never raises for a failing run: see ``passed`` and ``report["violation"]``.

    Raises
    ------
    ValueError
        Unknown scenario or simulator.
    """
    from cosim import build as cb
    if name not in SCENARIOS:
        raise ValueError(f"Unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if sim not in cb.SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(cb.SIMULATORS)}, not {sim!r}")
    sc = SCENARIOS[name]
    run_env = {k: str(v) for k, v in dict(sc.env, **(env or {})).items()}
    run_env["COSIM_SCENARIO"] = name
    run_env["COCOTB_TEST_FILTER"] = "test_scenario"
    config = cb.make_config(**dict(sc.hdl, **(hdl or {})))
    extra = run_env.get("COSIM_QUIRKS", "").replace(",", "+")
    label = "-".join(filter(None, [sim, name, str(seed), extra, tag,
                                   os.environ.get("PYTEST_XDIST_WORKER", "")]))
    test_dir = cb.SIM_BUILD / config.config_hash / "runs" / f"scn-{label}"
    return cb.run(config, sim, TB_MODULE, seed=seed, test_dir=test_dir, env=run_env)


def run_quirk(quirk: str, sim: str = "icarus", seed: int | None = None, mmu: str = "ours"):
    """Run the scenario of ``quirk`` with the quirk on, then the same seed with it off, on
    core MMU ``mmu``.

    Returns ``(on, off)``, two :class:`cosim.build.RunResult`; the quirk is shown when
    ``on`` failed with :func:`violation_checker` in ``QUIRK_SCENARIOS[quirk].checkers`` (for
    the table's seed: ``.checker``) and ``off`` passed.

    Raises
    ------
    ValueError
        Unknown quirk, or one that does not apply to ``mmu``
        (:meth:`QuirkScenario.not_applicable`).
    """
    if quirk not in QUIRK_SCENARIOS:
        raise ValueError(f"Unknown quirk {quirk!r}; known: {', '.join(QUIRK_SCENARIOS)}")
    q = QUIRK_SCENARIOS[quirk]
    why = q.not_applicable(mmu)
    if why is not None:
        raise ValueError(f"Quirk {quirk!r} does not apply to mmu={mmu!r}: {why}")
    seed = q.seed if seed is None else seed
    env_on, hdl_on = q.params(True, mmu)
    env_off, hdl_off = q.params(False, mmu)
    on = run_scenario(q.scenario, sim, seed=seed, env=env_on, hdl=hdl_on, tag=quirk)
    off = run_scenario(q.scenario, sim, seed=seed, env=env_off, hdl=hdl_off, tag="off")
    return on, off


def unexercised_quirks(report: Mapping | None, quirks) -> list[str]:
    """Why a run with ``quirks`` on cannot claim to have looked for them: one line per quirk
    of :data:`QUIRK_SCENARIOS` none of whose checkers made a check in the run (its
    ``report["checkers"]``).  A run that passed with such a quirk on proved nothing; the CLI
    fails it.  Empty when every quirk's checker was exercised (or the run has no report)."""
    from pyrmap.checker_registry import checker_title
    if not report:
        return []
    checks = {c["name"]: c["checks"] + c.get("violations", 0)
              for c in report.get("checkers", [])}
    out = []
    for quirk in quirks:
        q = QUIRK_SCENARIOS.get(quirk) or QUIRK_SCENARIOS.get(f"quirk_{quirk}")
        if q is None:
            continue
        if not any(checks.get(name, 0) for name in q.checkers):
            titles = " or ".join(checker_title(name) for name in q.checkers)
            out.append(f"quirk {q.quirk} is caught by {titles}, which made no check in this "
                       f"run: not exercised (its scenario: python -m cosim run {q.scenario} "
                       f"--seed {q.seed} --quirk {q.quirk})")
    return out


def violation_checker(report: Mapping | None) -> str | None:
    """The checker named by a run's violation (``"[shadow] lost write..."`` -> ``"shadow"``),
    or None when the run had none."""
    import re
    if not report or not report.get("violation"):
        return None
    m = re.search(r"^\[(\w+)\] ", report["violation"], re.M)
    return m.group(1) if m else None


def violation_cycle(report: Mapping | None) -> int | None:
    """The simulated cycle at which a run's violation was seen (``"at cycle N"``, or the
    scoreboard's ``"[scoreboard] [kind] cycle N:"``), or None."""
    import re
    if not report or not report.get("violation"):
        return None
    m = re.search(r"at cycle (\d+)|^\[scoreboard\] \[\w+\] cycle (\d+):", report["violation"],
                  re.M)
    return int(m.group(1) or m.group(2)) if m else None


def quirk_outcome(quirk: str, sim: str = "icarus", seed: int | None = None,
                  mmu: str = "ours") -> dict:
    """:func:`run_quirk` on core MMU ``mmu`` summed up for a table (the bug zoo's row).

    Returns
    -------
    dict
        ``quirk``, ``layer``, ``scenario``, ``seed``, ``sim``, ``mmu``; ``not_applicable``
        (why the quirk cannot run on ``mmu``, else None: then nothing ran, ``detected`` is
        False and ``ok`` True); ``detected`` (the quirk-on run
        failed, naming one of the quirk's checkers), ``checker`` (the one it named),
        ``cycle`` (of
        the violation), ``iterations`` (sweep iterations up to it, for the race scenarios),
        ``off_passed`` (the same seed passed with the quirk off), ``ok`` (both),
        ``violation`` (the report's text) and ``command`` (reproduces the quirk-on run).
    """
    q = QUIRK_SCENARIOS.get(quirk)
    if q is None:
        raise ValueError(f"Unknown quirk {quirk!r}; known: {', '.join(QUIRK_SCENARIOS)}")
    row = {"quirk": quirk, "layer": q.layer, "scenario": q.scenario,
           "seed": q.seed if seed is None else seed, "sim": sim, "mmu": mmu,
           "not_applicable": q.not_applicable(mmu)}
    if row["not_applicable"] is not None:
        return dict(row, detected=False, checker=None, cycle=None, iterations=None,
                    off_passed=False, violation=None, command=None, ok=True)
    on, off = run_quirk(quirk, sim, seed, mmu)
    checker = violation_checker(on.report)
    out = {
        **row,
        "detected": (not on.passed) and checker in q.checkers,
        "checker": checker, "cycle": violation_cycle(on.report),
        "iterations": (on.report or {}).get("iterations"),
        "off_passed": off.passed,
        "violation": (on.report or {}).get("violation") or (None if on.passed else
                                                            on.log_tail(2000)),
        "command": on.command,
    }
    out["ok"] = out["detected"] and out["off_passed"]
    return out


async def play(dut, seed: int, p: dict) -> tuple:
    """Run registered scenario ``p["scenario"]`` on ``dut`` (inside a cocotb test).

    Returns
    -------
    (system, report)
        The scenario's :class:`cosim.system.CosimSystem` (or :class:`cosim.system.RaceRun`)
        and its report (:func:`cosim.system.report`, plus ``extra``, ``segv`` and
        ``kernel_stats``); ``report["violation"]`` is the violation found, or None.

    Raises
    ------
    ValueError
        Unknown scenario.
    Exception
        Whatever broke the scenario before it had a system to report on.
    """
    import time

    from cosim.system import CosimViolation, Progress, report
    from pyrmap.checkers import InvariantViolation
    if p["scenario"] not in SCENARIOS:
        raise ValueError(f"Unknown scenario {p['scenario']!r}; known: {', '.join(SCENARIOS)}")
    progress = Progress()
    t0 = time.monotonic()
    out: dict = {}
    error = None
    try:
        await SCENARIOS[p["scenario"]].run(dut, seed, p, progress, out)
    except (CosimViolation, InvariantViolation) as exc:
        error = str(exc)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if "system" not in out or out["system"].kernel is None:
            raise
    s = out["system"]
    rep = report(s, seed, p, time.monotonic() - t0, error)
    rep["segv"] = sum(w.stats.get("segv", 0) for w in s.workloads)
    rep["extra"] = out.get("extra", {})
    rep["kernel_stats"] = {k: v for k, v in dict(s.kernel.stats).items()
                           if isinstance(v, int) and v}
    progress("violation:\n" + error if error else "passed")
    return s, rep


# The scenario modules register themselves on import.
from . import reclaim, races, layout, race_fuzz  # noqa: E402,F401
