"""Checkers of the fast path, on the drained access logs, at cycle level.

Every record of a core's access log (:data:`simhw.abi.RECORD_FIELDS`: the cycle the MMU
took the request, the cycle the memory took the data access, VA, PA, op, data, fault, hit) is
judged once, when it is drained, against the PTE history the software port recorded up to that
instant (records are drained before every software-port operation, so no later PTE change is
in the history a record is judged with, except by its cycle):

* **golden-walk scoreboard** (``scoreboard``): the translation (PA, or the fault kind) equals
  the Sv39 walk (:func:`pyrmap.walk.sv39_walk`) of a value the leaf PTE held between the last
  invalidation covering the address acknowledged on that core before the request (or the
  start of the history) and the data access; A and D are not compared (the hardware sets them);
* **stale translation** (checker (a), counted on ``checkers.tlb``): an access that began at or
  after such an acknowledgement completed through a frame only an older value mapped; no
  access straddles an acknowledgement of its own core (the engine re-executes those); and
  no answer leaves the MMU port from an acknowledgement on through a frame only a value older
  than it mapped, though the engine re-executes the attempt it answered (a squashed attempt
  whose response came at or after an acknowledgement covering it, on its core, after it began:
  the MMU must have walked again);
* **shadow memory** (checker (c), ``checkers.shadow``): in the order the memory performed them,
  stores update and loads are compared with the independent shadow of every virtual word.

At quiescent points (no host thread runs: after each kernel step once no fault is being
handled, and at the end) :meth:`LogCheckers.quiescent` runs **rmap completeness** (checker
(e)) and **notifier pairs** (checker (d)) on the engine's copy of memory, just drained: the
PTEs it reads are exact then (every software-port operation applied them, every walker write
is in the drained write log but A/D updates still in flight, which neither check reads), so
no PTE goes through the software port.

Two counts say how often the run reached the windows of an invalidation meeting the
translations it removes (``counts``): ``walks_across_unmap``, walks of a page in flight across
the acknowledgement of that page's invalidation, its PTE changed after the walk began (an
attempt the engine re-executed, its answer a walk); and ``ack_cycle_requests``, requests the MMU
took in the very cycle an invalidation of their page was acknowledged (the cycle a late clear
would let them hit the entry being removed).  Both only for single-request flushes, whose
acknowledgement cycle is recorded exactly.

The history is pruned: each PTE keeps its last :data:`HISTORY` values and each core its last
:data:`FLUSHES` acknowledgements; a record whose window reaches past what is kept is counted
as not checked, never as a pass.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np

from pyrmap.arch import InvalKind
from pyrmap.checkers import lookup_pte
from pyrmap.pte import _PAGE_A, _PAGE_D, AccessType, FaultKind, describe
from pyrmap.walk import sv39_walk

from .fasthw import completed
from .scoreboard import SCOREBOARD

__all__ = ["LogCheckers", "HISTORY", "FLUSHES", "SCOREBOARD"]

HISTORY = 32
FLUSHES = 4096
_AD = _PAGE_A | _PAGE_D
_STORE = int(AccessType.STORE)


#: :meth:`LogCheckers._window_verdict`'s answers.
_MATCH, _NO_MATCH, _PRUNED = "match", "no match", "pruned"


class LogCheckers:
    """The fast path's judgement of drained records.

    Parameters
    ----------
    checkers : pyrmap.checkers.Checkers
        The run's checkers: stale translations count on ``tlb``, data on ``shadow``; a
        scoreboard mismatch is reported under :data:`SCOREBOARD`.
    mem : PhysMem
        The engine's memory (upper page-table levels are read from it).
    svadu : bool
    enabled : bool
        False: records are counted and applied to memory, nothing is judged (the bench's
        "checkers off").
    """

    def __init__(self, checkers, mem, *, svadu: bool = True, enabled: bool = True):
        self.checkers = checkers
        self.mem = mem
        self.svadu = svadu
        self.enabled = enabled
        self.history: dict[int, collections.deque] = {}
        #: Per core: ({vpn: deque of (cycle, asid or None, requests)}, deque of the ALL/ASID
        #: invalidations as (cycle, asid or None, requests)).
        self.acks: list[tuple[dict, collections.deque]] = []
        #: Per core: the cycles of its recent single-request page invalidations' acks.
        self._single_acks: collections.defaultdict = collections.defaultdict(
            lambda: collections.deque(maxlen=64))
        self.counts: collections.Counter[str] = collections.Counter()
        self._walk_cache: dict = {}
        #: Changes recorded per PTE address (a history's version, :meth:`_judge_settled`).
        self._changes: collections.Counter[int] = collections.Counter()
        #: Verdicts of settled windows (:meth:`_window_verdict`), by window.
        self._windows: dict = {}
        #: The bits of a leaf PTE the golden walk's answer depends on (:meth:`_golden`).
        self._walk_mask = ~_AD if svadu else -1
        self._ptep_cache: dict = {}
        self.violations: list[str] = []

    # --- what the software port and the flushes tell ------------------------------------------

    def pte_changed(self, ptep: int, cycle: int, old: int, new: int) -> None:
        """The software port changed the PTE at ``ptep`` from ``old`` to ``new`` at ``cycle``.
        The port takes one operation at a time, so a PTE's changes come in cycle order; the
        judging relies on it (a history's last entry is its latest change)."""
        h = self.history.get(ptep)
        if h is None:
            h = self.history[ptep] = collections.deque(maxlen=HISTORY)
            h.append((-1, old))
        elif cycle < h[-1][0]:
            raise RuntimeError(f"PTE at 0x{ptep:x} changed at cycle {cycle}, before its change "
                               f"at cycle {h[-1][0]}: the software port's changes must come "
                               f"in cycle order")
        h.append((cycle, new))
        self._changes[ptep] += 1

    def flushed(self, core: int, cycle: int, reqs) -> None:
        """Core ``core`` acknowledged the invalidations ``reqs`` (kind, va, asid) at ``cycle``."""
        while len(self.acks) <= core:
            self.acks.append(({}, collections.deque(maxlen=FLUSHES)))
        by_page, wide = self.acks[core]
        for kind, va, asid in reqs:
            if kind in (InvalKind.ALL, InvalKind.ASID):
                wide.append((cycle, None if kind == InvalKind.ALL else asid, len(reqs)))
            else:
                h = by_page.get(va >> 12)
                if h is None:
                    h = by_page[va >> 12] = collections.deque(maxlen=8)
                h.append((cycle, asid if kind == InvalKind.VA_ASID else None, len(reqs)))
                if len(reqs) == 1:
                    self._single_acks[core].append(cycle)

    def tables_changed(self) -> None:
        """Page-table pages may have been freed or reused (munmap, exit): forget the leaf
        addresses found so far."""
        self._ptep_cache.clear()
        self._windows.clear()

    # --- judging -------------------------------------------------------------------------

    def judge(self, core: int, rec: dict, mm, asid: int, root: int) -> dict:
        """Judge ``core``'s drained records (:func:`cosim.fasthw.decode_records`, oldest
        first).  Returns the fields of the accesses (squashed attempts dropped: they made no
        data access) for the caller's data pass."""
        attempts = len(rec["va"])
        if self.enabled and attempts and rec["squashed"].any() and core < len(self.acks):
            self._judge_squashed(core, rec, asid, root)
        rec = completed(rec)
        n = len(rec["va"])
        self.counts["squashed_attempts"] += attempts - n
        self.counts["records"] += n
        faults = rec["fault"] != 0
        self.counts["faults"] += int(faults.sum())
        self.counts["hits"] += int(rec["hit"].sum())
        if not self.enabled or n == 0:
            return rec
        acks = self.acks[core] if core < len(self.acks) else ()
        if self._single_acks[core]:
            self._count_ack_cycle(core, rec, asid)
        rest = np.flatnonzero(~self._judge_settled(rec, acks, root, asid))
        judge = self._judge_one
        for start, done, va, pa, op, fault in zip(
                *(rec[f][rest].tolist() for f in ("start", "done", "va", "pa", "op", "fault"))):
            judge(core, mm, asid, root, start, done, va, pa, op, fault, acks)
        return rec

    def _judge_settled(self, rec: dict, acks, root: int, asid: int) -> np.ndarray:
        """Judge at once the records whose window was settled: every invalidation of their
        page (or of the whole TLB or their ASID) acknowledged on this core and kept came
        before each of them began, and their leaf PTE's recorded changes all precede their
        data access.  Each such record then has the same cut (the last of those
        acknowledgements) and the same window of PTE values as every other record of its
        (page, op, fault, frame): one walk judges them all, with the same counts as judging
        them one by one (``settled`` counts them).  Returns which records were judged; the
        others (and any of a group that fails, so its report is the one-by-one report) are
        left to :meth:`_judge_one`."""
        n = len(rec["va"])
        cols = (rec["va"] >> np.uint64(12), rec["op"], rec["fault"], rec["pa"] >> np.uint64(12))
        order = np.lexsort(cols[::-1])
        keys = [c[order] for c in cols]
        change = np.zeros(n, dtype=bool)
        change[0] = True
        for c in keys:
            change[1:] |= c[1:] != c[:-1]
        heads = np.flatnonzero(change)
        sizes = np.diff(np.append(heads, n)).tolist()
        first_start = np.minimum.reduceat(rec["start"][order], heads).tolist()
        first_done = np.minimum.reduceat(rec["done"][order], heads).tolist()
        judged = [False] * len(heads)
        unchecked = checks = stale = 0
        by_page, wide = acks if acks else ({}, ())
        windows = self._windows
        for g, (vpn, op, fault, frame) in enumerate(zip(*(c[heads].tolist() for c in keys))):
            cut, late = None, False
            for hist in (by_page.get(vpn, ()), wide):
                for cyc, fasid, _ in reversed(hist):
                    if fasid is not None and fasid != asid:
                        continue
                    late = late or cyc > first_start[g]
                    cut = cyc if cut is None or cyc > cut else cut
                    break
            if late:
                continue
            va = vpn << 12
            ptep, level = self._leaf(root, va)
            if ptep is None or level != 0:
                unchecked += sizes[g]
                judged[g] = True
                continue
            hist = self.history.get(ptep)
            if hist is not None and hist[-1][0] > first_done[g]:   # changes in cycle order
                continue
            # The verdict is the window's: the same cut and the same PTE history (or, with
            # none, the same PTE value) give the same one, in any drain.
            key = (root, vpn, op, fault, frame, cut, ptep,
                   self._changes[ptep] if hist is not None else self.mem.read(ptep))
            verdict = windows.get(key)
            if verdict is None:
                verdict = self._window_verdict(root, va, op, fault, frame, cut, ptep, hist)
                if len(windows) > 1 << 16:
                    windows.clear()
                windows[key] = verdict
            if verdict is _NO_MATCH:
                continue
            judged[g] = True
            if verdict is _PRUNED:
                unchecked += sizes[g]
                continue
            checks += sizes[g]
            if cut is not None and not fault:
                stale += sizes[g]
        self.counts["not_checked"] += unchecked
        self.counts["scoreboard_checks"] += checks
        self.counts["stale_checks"] += stale
        self.checkers.tlb.checks += stale
        self.counts["settled"] += unchecked + checks
        settled = np.zeros(n, dtype=bool)
        settled[order] = np.repeat(np.array(judged, dtype=bool), sizes)
        return settled

    def _window_verdict(self, root: int, va: int, op: int, fault: int, frame: int, cut,
                        ptep: int, hist) -> str:
        """Whether the walk of some value the leaf PTE at ``ptep`` held from the
        acknowledgement at ``cut`` on (None: from the start of its history ``hist``) answers
        ``(fault, frame)``: :data:`_MATCH`, :data:`_NO_MATCH`, or :data:`_PRUNED` (the history
        no longer reaches back to ``cut``).  ``hist`` None: no change was recorded, and the
        PTE's value now is the only one."""
        if hist is None:
            values = [self.mem.read(ptep)]
        else:
            # From the latest change back to the last one at or before the cut.
            lo = -1 if cut is None else cut
            values, prev = [], None
            for cyc, val in reversed(hist):
                if cyc <= lo:
                    prev = val
                    break
                values.append(val)
            if prev is not None:
                values.append(prev)
            elif cut is not None and hist[0][0] > -1:
                return _PRUNED
        want = (fault, frame)
        golden = self._golden
        if any(golden(root, va, op, ptep, v) == want for v in self._walk_keys(values)):
            return _MATCH
        return _NO_MATCH

    def _cut(self, acks, asid: int, va: int, start: int, done: int, core: int):
        """The last acknowledgement on ``core`` covering (asid, va) at or before ``start``
        (None: none kept); reports an access that straddles one."""
        if not acks:
            return None
        by_page, wide = acks
        cut = None
        for hist in (by_page.get(va >> 12, ()), wide):
            for cyc, fasid, nreq in reversed(hist):
                if fasid is not None and fasid != asid:
                    continue
                if cyc > start:
                    if cyc <= done and nreq == 1:
                        self._fail_stale(
                            f"core {core}: access to 0x{va:x} (asid {asid}) began at cycle "
                            f"{start} and took its data at cycle {done}, across the "
                            f"invalidation acknowledged at cycle {cyc}; it should have been "
                            f"issued again", None)
                    continue
                if cut is None or cyc > cut:
                    cut = cyc
                break
        return cut

    def _count_ack_cycle(self, core: int, rec: dict, asid: int) -> None:
        """Count the requests taken in the cycle a single-request invalidation of their page
        was acknowledged on their core (``ack_cycle_requests``)."""
        starts = rec["start"]
        lo, hi = int(starts.min()), int(starts.max())
        cycles = [c for c in self._single_acks[core] if lo <= c <= hi]
        if not cycles:
            return
        at = np.flatnonzero(np.isin(starts, np.array(cycles, dtype=np.uint64)))
        by_page = self.acks[core][0]
        for start, va in zip(starts[at].tolist(), rec["va"][at].tolist()):
            if any(cyc == start and nreq == 1 and (fasid is None or fasid == asid)
                   for cyc, fasid, nreq in by_page.get(va >> 12, ())):
                self.counts["ack_cycle_requests"] += 1

    def _judge_squashed(self, core: int, rec: dict, asid: int, root: int) -> None:
        """The attempts the engine re-executed: one answered (``done``: its response cycle) at
        or after a single-request acknowledgement covering it that came after it began must
        be the answer of a walk made after that acknowledgement's invalidation."""
        by_page, wide = self.acks[core]
        keep = rec["squashed"] != 0
        for start, done, va, pa, op, fault, hit in zip(
                *(rec[f][keep].tolist() for f in ("start", "done", "va", "pa", "op", "fault",
                                                   "hit"))):
            cut = None
            for cyc, fasid, nreq in reversed(by_page.get(va >> 12, ())):
                if nreq == 1 and start < cyc <= done and (fasid is None or fasid == asid):
                    cut = cyc
                    break
            if cut is None:
                continue
            ptep, level = self._leaf(root, va)
            hist = self.history.get(ptep) if ptep is not None and level == 0 else None
            if hist is None:
                continue
            if not hit and any(start < c <= cut for c, _ in hist):
                self.counts["walks_across_unmap"] += 1
            if fault:
                continue
            prev = [val for c, val in hist if c <= cut][-1:]
            if not prev:
                self.counts["not_checked"] += 1          # pruned past the window
                continue
            values = prev + [val for c, val in hist if cut < c <= done]
            self.counts["answer_checks"] += 1
            self.checkers.tlb.checks += 1
            if any(self._golden(root, va, op, ptep, v) == (0, pa >> 12) for v in values):
                continue
            older = {self._golden(root, va, op, ptep, v)[1] for c, v in hist if c <= cut}
            if pa >> 12 in older:
                self._fail_stale(
                    f"core {core}: the {AccessType(op).name} of 0x{va:x} (asid {asid}) that "
                    f"began at cycle {start} was answered at cycle {done} with PA 0x{pa:09x}, "
                    f"after the invalidation acknowledged at cycle {cut}: frame "
                    f"{pa >> 12:#x} is mapped only by the PTE values that invalidation "
                    f"removed (" + ", ".join(describe(v) for v in values) + " since)", ptep)

    def _leaf(self, root: int, va: int):
        key = (root, va >> 12)
        hit = self._ptep_cache.get(key)
        if hit is None:
            ptep, _, level = lookup_pte(self.mem, root, va)
            hit = (ptep, level)
            if ptep is not None:
                self._ptep_cache[key] = hit
        return hit

    def _walk_keys(self, values) -> list:
        """One value of ``values`` (PTE values) per value :meth:`_golden` tells apart, the
        first of each: a hot page's history is mostly the same PTE aged and made young
        again."""
        if len(values) < 2:
            return values
        mask = self._walk_mask
        return list({v & mask: v for v in reversed(values)}.values())

    def _golden(self, root: int, va: int, op: int, ptep: int, leaf: int):
        """(fault kind, frame) of the walk of ``va`` for ``op`` with the leaf PTE at ``ptep``
        holding ``leaf`` (the upper levels as the engine's memory holds them now); cached by
        the leaf without its A and D bits where the walkers set them (Svadu: the walk's
        answer does not depend on them), by the whole leaf where they do not (Svade: a clear
        A, or D for a store, faults)."""
        key = (root, va >> 12, op, ptep, leaf & self._walk_mask)
        out = self._walk_cache.get(key)
        if out is None:
            mem = self.mem

            def read(pa):
                return leaf if pa == ptep else mem.read(pa)

            res = sv39_walk(read, lambda pa, old, new: old, va & ~0xFFF, AccessType(op),
                            user=True, sum=False, root=root, svadu=self.svadu)
            out = (int(res.fault), res.paddr >> 12 if res.ok else 0)
            if len(self._walk_cache) > 1 << 16:
                self._walk_cache.clear()
            self._walk_cache[key] = out
        return out

    def _judge_one(self, core, mm, asid, root, start, done, va, pa, op, fault, acks):
        cut = self._cut(acks, asid, va, start, done, core)
        ptep, level = self._leaf(root, va)
        if ptep is None or level != 0:
            self.counts["not_checked"] += 1
            return
        hist = self.history.get(ptep)
        if hist is None:
            values = [self.mem.read(ptep)]
            older = []
        else:
            lo = -1 if cut is None else cut
            values, older = [], []
            prev = None
            for cyc, val in hist:
                if cyc <= lo:
                    prev = val
                    continue
                if cyc > done:
                    break
                values.append(val)
            if prev is None:
                if cut is not None and hist[0][0] > -1:
                    self.counts["not_checked"] += 1      # pruned past the window
                    return
            else:
                values.insert(0, prev)
            if cut is not None:
                older = [val for cyc, val in hist if cyc <= cut]
        got = (fault, pa >> 12)
        ok = any(self._golden(root, va, op, ptep, v) == got for v in self._walk_keys(values))
        self.counts["scoreboard_checks"] += 1
        sb = self.checkers
        if cut is not None and not fault:                # FaultKind.NONE
            sb.tlb.checks += 1
            self.counts["stale_checks"] += 1
        if ok:
            return
        frames = {self._golden(root, va, op, ptep, v)[1] for v in older}
        what = (f"core {core}: {AccessType(op).name} of 0x{va:x} (asid {asid}) began at cycle "
                f"{start}, done at cycle {done}: the RTL answered "
                + (f"PA 0x{pa:09x}" if fault == FaultKind.NONE else FaultKind(fault).name)
                + f"; the leaf PTE at 0x{ptep:09x} held "
                + ", ".join(describe(v) for v in values) + " in that window")
        if cut is not None and fault == FaultKind.NONE and pa >> 12 in frames:
            self._fail_stale(what + f"; frame {pa >> 12:#x} was removed by the invalidation "
                             f"acknowledged at cycle {cut}", ptep)
        else:
            self.counts["scoreboard_violations"] += 1
            self.violations.append(what)
            self.checkers.report(SCOREBOARD, what, ptep)

    def _fail_stale(self, msg: str, ptep: Optional[int]) -> None:
        self.counts["stale_violations"] += 1
        self.violations.append(msg)
        self.checkers.tlb.fail(msg, ptep)

    # --- quiescent points ------------------------------------------------------------------

    def quiescent(self) -> None:
        """The quiescent checks (the caller drained every log first and no host thread is
        inside an operation): rmap completeness, notifier pairs and accounted dirt."""
        if not self.enabled:
            return
        self.counts["quiescent_points"] += 1
        self.checkers.rmap.check()
        self.checkers.notifier.check()
        self.checkers.dirt.check()

    # --- data -------------------------------------------------------------------------------

    def data(self, batches) -> None:
        """The data pass over one drain: ``batches`` is ``[(mm, rec), ...]`` per core; stores
        and loads go to the shadow in the order the memory took them (by ``done``)."""
        if not self.enabled:
            return
        parts = [(mm, rec) for mm, rec in batches if len(rec["done"])]
        if not parts:
            return
        dones = np.concatenate([rec["done"] for _, rec in parts])
        which = np.concatenate([np.full(len(rec["done"]), i) for i, (_, rec) in
                                enumerate(parts)])
        order = np.lexsort((which, dones))
        cols = {f: np.concatenate([rec[f] for _, rec in parts])[order]
                for f in ("fault", "va", "data", "op", "pa")}
        ok = cols["fault"] == 0
        self.checkers.shadow.replay([mm for mm, _ in parts], which[order][ok], cols["va"][ok],
                                    cols["data"][ok], cols["op"][ok] == _STORE, cols["pa"][ok])
