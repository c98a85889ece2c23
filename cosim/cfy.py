"""The clear-flush-young question: does aging need the TLB flush?

``ptep_clear_flush_young`` clears a PTE's Accessed bit and, in the 2008 kernel (x86), flushes
the page from every TLB when the bit was set, so the next access re-walks and sets A again.
x86 dropped the flush in 2014 (b13b1d2d8692): clearing A is enough most of the time, and the
flush is expensive.  Without it a core keeps its cached entry with A=1 and does not set A
again while the entry lives, so the next aging pass may find the page old although the CPU
used it -- and reclaim may evict a page in active use.

``python -m cosim.cfy --sim verilator --seed N`` runs the reclaim scenario of
:mod:`cosim.scenarios.reclaim` on the RTL twice with the same seed and workload -- flush (2008) and no
flush (2014, ``KernelConfig.clear_flush_young_flushes = False``) -- under an
:class:`AgingMonitor`, and prints side by side:

* **references aging missed**: an aging pass (``page_referenced``) that returned 0 for a page
  the CPU accessed (a completed translation to that frame) after the previous pass on that
  page ended and before this one began;
* **pages reclaimed in active use**: a virtual page whose frame reclaim unmapped
  (``shrink_page_list``) and which the CPU faulted on again within ``window`` cycles;
* **flushes and invalidation cycles saved**: the flushes ``ptep_clear_flush_young`` issued and
  the cycles they took (request to last ack), the RTL's invalidation counts, all flushes.

The monitor's event methods (:meth:`AgingMonitor.on_access` and friends) are plain Python and
are unit-tested without a simulator; :meth:`AgingMonitor.attach` connects them to a running
system as an observer of the events the engine and the arch declare
(:data:`pyrmap.arch.EVENTS`): CPU accesses, frame allocations, ``page_referenced`` and
``try_to_unmap`` (a SWAP_FAIL on a young PTE consumed the reference) begin and end, reclaim
unmapping a page, ``ptep_clear_flush_young`` begin and end, and the flushes in between.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["AgingMonitor", "DEFAULT_WINDOW", "compare", "total", "format_table", "run_pair", "main"]

#: Cycles after a reclaim within which a fault on the same virtual page counts as "reclaimed
#: while in active use".
DEFAULT_WINDOW = 2000


class AgingMonitor:
    """Watches aging, reclaim and CPU accesses of one run; see the module docstring.

    Parameters
    ----------
    window : int
        A fault on a virtual page within ``window`` cycles of reclaim unmapping it counts as a
        page reclaimed in active use.

    Members
    -------
    stats : dict
        ``aging_passes``, ``passes_after_access`` (passes on a page accessed since its last
        pass), ``missed_references``, ``missed_all_tlb_hits`` (missed references whose
        accesses were all TLB hits: the stale-entry signature), ``reclaimed_pages``, ``reclaimed_vpages``,
        ``refaults_in_window``, ``refaults``, ``young_calls``, ``young_flushes``,
        ``young_flush_cycles``, ``accesses``.
    missed : list
        ``(pfn, access cycle, pass start cycle)`` of each missed reference (first 100).
    """

    def __init__(self, window: int = DEFAULT_WINDOW):
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"Refault window must be a positive number of cycles, not "
                             f"{window!r}")
        self.window = window
        self.stats = dict.fromkeys(
            ("aging_passes", "passes_after_access", "missed_references",
             "missed_all_tlb_hits", "reclaimed_pages",
             "reclaimed_vpages", "refaults_in_window", "refaults", "young_calls",
             "young_flushes", "young_flush_cycles", "accesses"), 0)
        self.missed: list[tuple[int, int, int]] = []
        # pfn -> {(mm key, vpage): first access through that mapping since the last pass}
        self._first_access: dict[int, dict] = {}
        self._vmap: dict[tuple[int, int], int] = {}   # (mm key, vpage) -> pfn last seen
        self._rev: dict[int, set] = {}                # pfn -> {(mm key, vpage)}
        self._reclaimed: dict[tuple[int, int], int] = {}  # (mm key, vpage) -> cycle
        self._mms: dict[int, Any] = {}                # keeps mm objects alive: ids stay unique
        self._attached = False
        #: ``resolver((mm key, vpage)) -> pfn or None``: what the page tables map now (set by
        #: :meth:`attach`); None trusts the last access seen.
        self.resolver = None

    # --- events (plain Python) -----------------------------------------------------------

    def _key(self, mm, vaddr: int) -> tuple[int, int]:
        self._mms[id(mm)] = mm
        return id(mm), vaddr >> 12

    def on_access(self, cycle: int, mm, vaddr: int, paddr: int, hit: bool = False) -> None:
        """A CPU access completed at ``cycle`` through a translation of ``vaddr`` to
        ``paddr``; ``hit``: served from a TLB entry (no walk, so A was not set)."""
        pfn = paddr >> 12
        self.stats["accesses"] += 1
        key = self._key(mm, vaddr)
        old = self._vmap.get(key)
        if old != pfn:
            if old is not None:
                # The PTE now maps another frame (COW, swap-in, migration): the accesses it
                # carried to the old one can no longer be seen through it.
                self._rev.get(old, set()).discard(key)
                self._first_access.get(old, {}).pop(key, None)
            self._vmap[key] = pfn
            self._rev.setdefault(pfn, set()).add(key)
        rec = self._first_access.setdefault(pfn, {}).setdefault(key, [cycle, True])
        rec[1] = rec[1] and bool(hit)

    def on_fault(self, cycle: int, mm, vaddr: int) -> None:
        """A CPU access to ``vaddr`` page-faulted at ``cycle``."""
        key = self._key(mm, vaddr)
        when = self._reclaimed.pop(key, None)
        if when is not None:
            self.stats["refaults"] += 1
            if cycle - when <= self.window:
                self.stats["refaults_in_window"] += 1

    def on_aging(self, pfn: int, start: int, end: int, referenced: int,
                 mapped: bool = True) -> None:
        """``page_referenced`` of frame ``pfn`` ran from cycle ``start`` to ``end`` and
        returned ``referenced``; ``mapped``: the page had PTEs when it began (a pass over an
        unmapped page cannot see PTE references and is not counted)."""
        self.stats["aging_passes"] += 1
        seen = self._first_access.pop(pfn, {})
        live = [rec for k, rec in seen.items() if self._vmap.get(k) == pfn and rec[0] < start
                and (self.resolver is None or self.resolver(k) == pfn)]
        if not live or not mapped:
            return          # not accessed since the last pass, only while this one ran, or
                            # no PTE to see it through
        first = min(rec[0] for rec in live)
        self.stats["passes_after_access"] += 1
        if not referenced:
            self.stats["missed_references"] += 1
            if all(rec[1] for rec in live):
                self.stats["missed_all_tlb_hits"] += 1
            if len(self.missed) < 100:
                self.missed.append((pfn, first, start))

    def on_reclaimed(self, pfn: int, cycle: int) -> None:
        """Reclaim unmapped frame ``pfn`` at ``cycle``: every virtual page last seen
        translating to it is now expected to fault."""
        self.stats["reclaimed_pages"] += 1
        for key in self._rev.pop(pfn, set()):
            if self._vmap.get(key) == pfn:
                del self._vmap[key]
                self._reclaimed[key] = cycle
                self.stats["reclaimed_vpages"] += 1
        self._first_access.pop(pfn, None)

    def on_reference_seen(self, pfn: int, start: int) -> None:
        """Something other than an aging pass consumed the Accessed bits of ``pfn`` at
        ``start`` (``try_to_unmap`` found a young PTE and failed): accesses before it are
        accounted for."""
        seen = self._first_access.get(pfn, {})
        for key in [k for k, rec in seen.items() if rec[0] < start]:
            del seen[key]

    def on_new_page(self, pfn: int) -> None:
        """Frame ``pfn`` was allocated to a new page: forget what the old one saw."""
        self._first_access.pop(pfn, None)
        for key in self._rev.pop(pfn, set()):
            if self._vmap.get(key) == pfn:
                del self._vmap[key]

    def on_young(self, flushed: bool, cycles: int) -> None:
        """``ptep_clear_flush_young`` returned; ``flushed``: it flushed, taking ``cycles``."""
        self.stats["young_calls"] += 1
        if flushed:
            self.stats["young_flushes"] += 1
            self.stats["young_flush_cycles"] += cycles

    # --- connection to a running system ----------------------------------------------------

    def attach(self, system) -> "AgingMonitor":
        """Connect to ``system`` (a :class:`cosim.system.CosimSystem` or a :class:`pyrmap.scenario.System`):
        observe the events its engine and arch report (:data:`pyrmap.arch.EVENTS`:
        ``cpu_access``, ``frame_alloc``, ``page_referenced_*``, ``try_to_unmap_*``,
        ``reclaim_unmapped``, ``clear_flush_young_*``, ``tlb_flush``), chained after the
        arch's observer.  :meth:`detach` stops observing."""
        from pyrmap.pte import FaultKind, pte_leaf, pte_pfn, pte_present
        from pyrmap.rmap import SWAP_FAIL
        arch = system.arch
        mem = system.kernel.mem
        mon = self
        prev = arch.observer
        # Operations in progress, per engine thread: (thread, pfn) -> (start cycle, mapped);
        # thread -> flush cycles of the clear_flush_young call running in it.
        aging: dict[tuple[str, int], tuple[int, bool]] = {}
        unmap: dict[tuple[str, int], int] = {}
        young: dict[str, int] = {}

        def observe(event: str, **d) -> None:
            if prev is not None:
                prev(event, **d)
            if not mon._attached:
                return
            if event == "cpu_access":
                r = d["result"]
                if r.fault == FaultKind.NONE:
                    mon.on_access(arch.cycle(), d["mm"], d["vaddr"], r.paddr, r.hit)
                elif r.fault == FaultKind.PAGE:
                    mon.on_fault(arch.cycle(), d["mm"], d["vaddr"])
            elif event == "frame_alloc":
                mon.on_new_page(d["pfn"])
            elif event == "page_referenced_start":
                aging[arch.current_thread(), d["page"].pfn] = (arch.cycle(), d["mapped"])
            elif event == "page_referenced_end":
                pfn = d["page"].pfn
                start, mapped = aging.pop((arch.current_thread(), pfn))
                mon.on_aging(pfn, start, arch.cycle(), d["referenced"], mapped)
            elif event == "try_to_unmap_start":
                unmap[arch.current_thread(), d["page"].pfn] = arch.cycle()
            elif event == "try_to_unmap_end":
                pfn = d["page"].pfn
                start = unmap.pop((arch.current_thread(), pfn))
                if d["migration"]:
                    # Migration rebuilds the PTEs old (pte_mkold) on purpose, in both modes.
                    mon.on_reference_seen(pfn, arch.cycle() + 1)
                elif d["result"] == SWAP_FAIL:
                    mon.on_reference_seen(pfn, start)
            elif event == "reclaim_unmapped":
                mon.on_reclaimed(d["page"].pfn, arch.cycle())
            elif event == "clear_flush_young_start":
                young[arch.current_thread()] = 0
            elif event == "tlb_flush":
                thread = arch.current_thread()
                if thread in young:
                    young[thread] += d["cycles"]
            elif event == "clear_flush_young_end":
                mon.on_young(d["flushed"], young.pop(arch.current_thread()))

        def resolver(key):
            # A software walk of the page tables in PhysMem itself: no simulated time, no
            # memory transaction (the engine's pte_offset would go through the arch).
            mm = self._mms.get(key[0])
            if mm is None or mm.pgd is None:
                return None
            table, addr = mm.pgd, key[1] << 12
            for level in (2, 1, 0):
                entry = mem.read((table << 12) + ((addr >> (12 + 9 * level)) & 511) * 8)
                if not pte_present(entry):
                    return None
                if level == 0 or pte_leaf(entry):
                    return pte_pfn(entry) if level == 0 else None
                table = pte_pfn(entry)
            return None

        self.resolver = resolver
        self._attached = True
        arch.observer = observe
        return self

    def detach(self) -> None:
        """Stop observing (the observer chain stays intact: events pass through)."""
        self.resolver = None
        self._attached = False

    def figures(self, system=None) -> dict:
        """The monitor's counts, plus the run's flush and invalidation totals when
        ``system`` is given."""
        out = {"window": self.window, "monitor": dict(self.stats),
               "missed_examples": self.missed[:10]}
        if system is not None:
            arch = system.arch
            c = arch.counters()
            invals = sum(max(arch.perf(core)["invals"], 0) for core in range(arch.ncores))
            k = system.kernel.stats
            out["run"] = {
                "cycles": arch.cycle(),
                "accesses": system.shadow.loads + system.shadow.stores,
                "flushes": c["flushes_driven"],
                "flush_cycles": c["flush_cycles"],
                "inval_requests": c["inval_requests"],
                "rtl_invals": invals,
                "page_faults": k.get("pgfault", 0),
                "swapped_out": k.get("pswpout", 0),
                "swapped_in": k.get("pswpin", 0),
                "reclaimed": k.get("vmscan_freed", 0),
                "found_young": k.get("rmap_young_found", 0),
            }
        return out


# ---------------------------------------------------------------------------------------------
# The comparison

ROWS = [
    ("aging passes on pages accessed since their last pass", "monitor", "passes_after_access"),
    ("references aging missed", "monitor", "missed_references"),
    ("  of which every access was a TLB hit", "monitor", "missed_all_tlb_hits"),
    ("pages unmapped by reclaim", "monitor", "reclaimed_pages"),
    ("pages reclaimed in active use (refault in window)", "monitor", "refaults_in_window"),
    ("refaults after reclaim (any time)", "monitor", "refaults"),
    ("ptep_clear_flush_young calls", "monitor", "young_calls"),
    ("flushes by ptep_clear_flush_young", "monitor", "young_flushes"),
    ("cycles of those flushes", "monitor", "young_flush_cycles"),
    ("all flushes", "run", "flushes"),
    ("all flush cycles", "run", "flush_cycles"),
    ("RTL invalidations (all cores)", "run", "rtl_invals"),
    ("CPU accesses", "run", "accesses"),
    ("page faults", "run", "page_faults"),
    ("swapped out / swapped in", "run", ("swapped_out", "swapped_in")),
    ("simulated cycles", "run", "cycles"),
]


def _value(rep: dict, group: str, key) -> Any:
    g = rep.get(group) or {}
    if isinstance(key, tuple):
        return " / ".join(str(g.get(k, "-")) for k in key)
    return g.get(key)


def compare(flush: dict, noflush: dict) -> dict:
    """Side by side figures of the two runs' reports (``AgingMonitor.figures``).

    Returns ``{"rows": [(label, flush, no flush)], "saved": {...}, "missed_only_without_flush":
    bool}``; ``saved`` holds flushes and invalidation cycles the no-flush mode saved (flush
    minus no flush) and the extra missed references and reclaims in use it cost."""
    rows = [(label, _value(flush, g, k), _value(noflush, g, k)) for label, g, k in ROWS]

    def diff(group, key):
        a, b = _value(flush, group, key), _value(noflush, group, key)
        return (a - b) if isinstance(a, int) and isinstance(b, int) else None

    saved = {
        "young_flushes": diff("monitor", "young_flushes"),
        "young_flush_cycles": diff("monitor", "young_flush_cycles"),
        "flushes": diff("run", "flushes"),
        "flush_cycles": diff("run", "flush_cycles"),
        "rtl_invals": diff("run", "rtl_invals"),
        "extra_missed_references": (-d if (d := diff("monitor", "missed_references"))
                                    is not None else None),
        "extra_refaults_in_window": (-d if (d := diff("monitor", "refaults_in_window"))
                                     is not None else None),
    }
    mf = _value(flush, "monitor", "missed_references") or 0
    mn = _value(noflush, "monitor", "missed_references") or 0
    return {"rows": rows, "saved": saved, "missed_only_without_flush": mn > mf}


def format_table(cmp: dict, title: str = "") -> str:
    w = max(len(r[0]) for r in cmp["rows"])
    lines = [title] if title else []
    lines.append(f"  {'':{w}s}  {'flush (2008)':>14s}  {'no flush (2014)':>16s}")
    for label, a, b in cmp["rows"]:
        lines.append(f"  {label:{w}s}  {str(a if a is not None else '-'):>14s}  "
                     f"{str(b if b is not None else '-'):>16s}")
    s = cmp["saved"]
    lines.append(f"no flush saved {s['young_flushes']} flushes of ptep_clear_flush_young "
                 f"({s['young_flush_cycles']} invalidation cycles); all flushes "
                 f"{s['flushes']}, flush cycles {s['flush_cycles']}, RTL invalidations "
                 f"{s['rtl_invals']}")
    def signed(v):
        return f"{v:+d}" if isinstance(v, int) else "-"
    lines.append(f"missed references without the flush: {signed(s['extra_missed_references'])}; "
                 f"pages reclaimed in active use: {signed(s['extra_refaults_in_window'])}")
    return "\n".join(lines)


def run_pair(sim: str, seed: int, *, phases: int = 3, accesses: int = 40, nframes: int = 32,
             window: int = DEFAULT_WINDOW, config_params: Optional[dict] = None) -> dict:
    """Run the reclaim scenario with and without the flush on ``sim``; return
    ``{"flush": report, "noflush": report, "compare": ..., "passed": bool, "commands": ...}``."""
    from . import build as cb
    config = cb.make_config(**(config_params or {}))
    out: dict[str, Any] = {"sim": sim, "seed": seed, "config": cb.config_params(config),
                           "params": {"phases": phases, "accesses": accesses,
                                      "nframes": nframes, "window": window}}
    passed = True
    for name, flag in (("flush", "1"), ("noflush", "0")):
        env = {"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": phases,
               "COSIM_ACCESSES": accesses, "COSIM_NFRAMES": nframes, "CFY_FLUSH": flag,
               "CFY_WINDOW": window, "COCOTB_TEST_FILTER": "test_cfy"}
        r = cb.run(config, sim, "cosim.tb.tb_cfy", seed=seed, testcase="test_cfy", env=env)
        rep = r.report or {"error": "; ".join(r.failures) or "no report",
                           "log_tail": r.log_tail(2000)}
        rep["command"] = r.command
        out[name] = rep
        passed = passed and r.passed and not rep.get("error")
    out["passed"] = passed
    if "monitor" in out["flush"] and "monitor" in out["noflush"]:
        out["compare"] = compare(out["flush"], out["noflush"])
    return out


def total(reports: Sequence[dict]) -> dict:
    """The sum of several runs' ``monitor`` and ``run`` counts (one mode, several seeds), in
    the shape :func:`compare` takes."""
    out: dict[str, dict] = {"monitor": {}, "run": {}}
    for rep in reports:
        for group in ("monitor", "run"):
            for k, v in (rep.get(group) or {}).items():
                if isinstance(v, int) and not isinstance(v, bool):
                    out[group][k] = out[group].get(k, 0) + v
    return out


def main(argv: Optional[Sequence[str]] = None, stdout=sys.stdout,
         prog: str = "python -m cosim.cfy") -> int:
    """``rmap-cosim cfy``: the clear-flush-young comparison on the RTL."""
    from pyrmap.cliargs import ArgumentParser, int_arg, writable_file
    p = ArgumentParser(prog=prog, description=main.__doc__)
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--seed", type=int_arg(0), default=1)
    p.add_argument("--seeds", type=int_arg(1, 1000), default=1,
                   help="run seeds SEED .. SEED+SEEDS-1 and compare their sums")
    p.add_argument("--phases", type=int_arg(1, 10_000), default=3)
    p.add_argument("--accesses", type=int_arg(1, 1_000_000), default=40)
    p.add_argument("--nframes", type=int_arg(16, 1 << 16), default=32)
    p.add_argument("--window", type=int_arg(1), default=DEFAULT_WINDOW)
    p.add_argument("--json", type=writable_file, default=None,
                   help="write both reports and the comparison here")
    try:
        a = p.parse_args(argv)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    seeds = list(range(a.seed, a.seed + a.seeds))
    results = []
    ok = True
    for seed in seeds:
        res = run_pair(a.sim, seed, phases=a.phases, accesses=a.accesses, nframes=a.nframes,
                       window=a.window)
        results.append(res)
        for name in ("flush", "noflush"):
            if res[name].get("error"):
                ok = False
                print(f"seed {seed}: {name} run failed: {res[name]['error'][:2000]}\n"
                      f"reproduce: {res[name].get('command')}", file=stdout)
        ok = ok and res["passed"]
        if len(seeds) > 1 and "compare" in res:
            row = dict((r[0], r[1:]) for r in res["compare"]["rows"])
            f, n = row["references aging missed"]
            fr, nr = row["pages reclaimed in active use (refault in window)"]
            print(f"seed {seed}: missed references {f} / {n}, reclaimed in active use "
                  f"{fr} / {nr} (flush / no flush)", file=stdout, flush=True)
    which = f"seed {a.seed}" if len(seeds) == 1 else f"seeds {seeds[0]}..{seeds[-1]} (sums)"
    title = (f"clear-flush-young on {a.sim}, {which}: reclaim scenario, {a.phases} "
             f"phases x {a.accesses} accesses per core, {a.nframes} frames, refault window "
             f"{a.window} cycles")
    out: dict[str, Any]
    if len(seeds) == 1:
        out = results[0]
    else:
        out = {"sim": a.sim, "seeds": seeds, "runs": results, "passed": ok}
        if all("compare" in r for r in results):
            out["compare"] = compare(total([r["flush"] for r in results]),
                                     total([r["noflush"] for r in results]))
    if "compare" in out:
        print(format_table(out["compare"], title), file=stdout)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"written to {a.json}", file=stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
