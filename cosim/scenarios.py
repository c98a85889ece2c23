"""Issue 4's scenarios on the RTL: their parameters, how to run one, and the quirk table.

The scenarios themselves are cocotb coroutines in :mod:`cosim.tb.tb_scenarios` (one cocotb
test, ``test_scenario``, picks one by ``COSIM_SCENARIO``).  This module is the host side:

* :data:`SCENARIOS` -- name -> :class:`Scenario` (what it exercises, its default knobs and
  the ``hdl`` configuration it needs, e.g. ``svadu=False`` for ``svade``);
* :func:`run_scenario` -- build (or reuse) the RTL and run one scenario on Icarus or
  Verilator, returning :class:`cosim.build.RunResult` (``report`` holds the JSON figures,
  ``report["violation"]`` the first violation with seed, cycle and reproducing command);
* :data:`QUIRK_SCENARIOS` -- every quirk of the pyrmap and hdl issues -> the scenario that
  exposes it on the RTL (:class:`QuirkScenario`: scenario name, parameters, the checker that
  must fire); :func:`run_quirk` runs it with the quirk on and then off.

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
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Scenario", "QuirkScenario", "SCENARIOS", "QUIRK_SCENARIOS", "TB_MODULE",
           "run_scenario", "run_quirk", "quirk_outcome", "violation_checker",
           "violation_cycle", "unexercised_quirks"]

TB_MODULE = "cosim.tb.tb_scenarios"


@dataclass(frozen=True)
class Scenario:
    """One scenario of :mod:`cosim.tb.tb_scenarios`.

    Attributes
    ----------
    name : str
        ``COSIM_SCENARIO``.
    summary : str
        What it exercises.
    env : dict
        Default knobs (``COSIM_PHASES``, ``COSIM_ACCESSES``, ``COSIM_NFRAMES``,
        ``COSIM_STEPS``), small enough for ``make test``.
    hdl : dict
        ``hdl.config.MmuConfig`` parameters the scenario needs (merged under the caller's).
    """
    name: str
    summary: str
    env: Mapping[str, Any] = field(default_factory=dict)
    hdl: Mapping[str, Any] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("writeback", "shared file pages written by every core while writeback keeps "
             "cleaning them (msync -> page_mkclean)",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 30}),
    Scenario("migrate_fork", "anonymous, shmem and file pages mapped across a fork tree "
             "(selftests/mm/rmap.c) migrated while the cores read and write them",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 25, "COSIM_NFRAMES": 48}),
    Scenario("mprotect", "mprotect(PROT_READ) while the cores write the region",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 25}),
    Scenario("munmap", "munmap while the cores read the region",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 25}),
    Scenario("mremap", "mremap (moving) while the cores write the region",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 25}),
    Scenario("nonlinear", "remap_file_pages of a shmem object under reclaim",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 25, "COSIM_NFRAMES": 24}),
    Scenario("svade", "writeback and reclaim on a Svade MMU: the engine sets A/D on faults",
             {"COSIM_PHASES": 2, "COSIM_ACCESSES": 25, "COSIM_NFRAMES": 28},
             {"svadu": False}),
    Scenario("lockless_race", "page_mkclean vs a clear-then-set PTE rewrite under its lock, "
             "swept over start offsets", {"COSIM_STEPS": 32}),
    Scenario("zap_race", "MADV_DONTNEED's zap vs writeback vs a CPU writing through its TLB, "
             "swept over start offsets", {"COSIM_STEPS": 32}),
    Scenario("release_race", "exit's mmu_notifier_release vs reclaim of a page the device TLB "
             "maps, swept over start offsets", {"COSIM_STEPS": 32}),
    Scenario("dirty_race", "a store whose walker CASes D vs try_to_unmap, swept over start "
             "offsets (cosim.tb.tb_cosim's)", {"COSIM_STEPS": 48}),
]}


@dataclass(frozen=True)
class QuirkScenario:
    """How one quirk fails at cycle level.

    Attributes
    ----------
    quirk : str
        The switch: a field of :class:`pyrmap.kernel.Quirks` (``layer="kernel"``) or of
        ``hdl.config.MmuConfig`` (``layer="hdl"``).
    layer : str
    scenario : str
        A name of :data:`SCENARIOS`.
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
    """
    quirk: str
    layer: str
    scenario: str
    seed: int
    checker: str
    env: Mapping[str, Any] = field(default_factory=dict)
    also: tuple = ()

    @property
    def checkers(self) -> tuple:
        """Every checker that legitimately reports this quirk."""
        return (self.checker,) + tuple(self.also)

    def params(self, on: bool = True) -> tuple[dict, dict]:
        """``(env, hdl)`` of the run with the quirk ``on`` or off."""
        env = dict(SCENARIOS[self.scenario].env, **self.env)
        hdl = dict(SCENARIOS[self.scenario].hdl)
        if self.layer == "kernel":
            if on:
                env["COSIM_QUIRKS"] = self.quirk
        elif on:
            hdl[self.quirk] = True
        return env, hdl


QUIRK_SCENARIOS: dict[str, QuirkScenario] = {q.quirk: q for q in [
    QuirkScenario("page_check_address_lockless", "kernel", "lockless_race", 1, "shadow"),
    QuirkScenario("zap_flush_after_pte_unlock", "kernel", "zap_race", 1, "shadow"),
    QuirkScenario("notifier_release_unlink_first", "kernel", "release_race", 1, "frame"),
    QuirkScenario("nonatomic_ptep_get_and_clear", "kernel", "dirty_race", 1, "shadow"),
    QuirkScenario("quirk_plain_ad_write", "hdl", "dirty_race", 1, "shadow", also=("frame",)),
    QuirkScenario("quirk_fill_after_inval", "hdl", "dirty_race", 1, "tlb"),
    QuirkScenario("quirk_ad_on_nonpresent", "hdl", "dirty_race", 1, "frame", also=("shadow",)),
]}


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


def run_quirk(quirk: str, sim: str = "icarus", seed: int | None = None):
    """Run the scenario of ``quirk`` with the quirk on, then the same seed with it off.

    Returns ``(on, off)``, two :class:`cosim.build.RunResult`; the quirk is shown when
    ``on`` failed with :func:`violation_checker` in ``QUIRK_SCENARIOS[quirk].checkers`` (for
    the table's seed: ``.checker``) and ``off`` passed."""
    if quirk not in QUIRK_SCENARIOS:
        raise ValueError(f"Unknown quirk {quirk!r}; known: {', '.join(QUIRK_SCENARIOS)}")
    q = QUIRK_SCENARIOS[quirk]
    seed = q.seed if seed is None else seed
    env_on, hdl_on = q.params(True)
    env_off, hdl_off = q.params(False)
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
    """The simulated cycle at which a run's violation was seen (``"at cycle N"``), or None."""
    import re
    if not report or not report.get("violation"):
        return None
    m = re.search(r"at cycle (\d+)", report["violation"])
    return int(m.group(1)) if m else None


def quirk_outcome(quirk: str, sim: str = "icarus", seed: int | None = None) -> dict:
    """:func:`run_quirk` summed up for a table (the bug zoo's row).

    Returns
    -------
    dict
        ``quirk``, ``layer``, ``scenario``, ``seed``, ``sim``; ``detected`` (the quirk-on run
        failed, naming one of the quirk's checkers), ``checker`` (the one it named),
        ``cycle`` (of
        the violation), ``iterations`` (sweep iterations up to it, for the race scenarios),
        ``off_passed`` (the same seed passed with the quirk off), ``ok`` (both),
        ``violation`` (the report's text) and ``command`` (reproduces the quirk-on run).
    """
    q = QUIRK_SCENARIOS.get(quirk)
    on, off = run_quirk(quirk, sim, seed)
    checker = violation_checker(on.report)
    out = {
        "quirk": quirk, "layer": q.layer, "scenario": q.scenario,
        "seed": q.seed if seed is None else seed, "sim": sim,
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
