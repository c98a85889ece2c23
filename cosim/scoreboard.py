"""The scoreboard of the RTL MMU: every translation checked against the golden model.

Inputs (from the monitors, in simulated-time order):

* :class:`CpuTxn`: one CPU request and its response (``hit`` says whether the TLB served it);
* :class:`InvalTxn`: one invalidation, from the edge the DUT first saw ``valid`` to the ack;
* the memory log of :class:`cosim.memory.MemoryResponder` (every hardware and software memory
  operation in its total order).

Checks (each failure is a :class:`Violation` with a ``kind``):

``walk_mismatch``
    A response produced by a walk (``hit == 0``) is replayed with :func:`pyrmap.walk.sv39_walk`
    whose ``read`` answers exactly the values the RTL read (from the memory log, in order) and
    whose ``cas`` answers what the RTL's CAS found.  The fault kind, the physical address, the
    sequence of PTE addresses and every CAS (address, expected, new) must match, and the RTL
    must make no memory request the golden walk does not make.
``stale_hit``
    A TLB hit must be for a canonical address and must match an entry of the core's "may be
    cached" set: an entry is added when a walk that succeeded responds, unless an
    invalidation matching it was requested after the walk's first memory request and
    acknowledged before the response (the walk began before the request, so its fill must be
    dropped); it is removed when an invalidation matching it is acknowledged, unless the
    walk's first memory request came at or after the invalidation's request (it read the PTEs
    after the change the invalidation publishes).  A hit may use an entry until the ack that
    removes it, and not in the ack cycle or later (stale-but-legal hits end exactly there).
    A store hit needs D=1 (and W).
``stale_response``
    A walk's response in or after the ack cycle of an invalidation applied after the walk's
    first PTE read: the RTL must restart such a walk from the root.  (A walk's memory
    requests may hold several complete walks, each but the last cut short by an
    invalidation applied while it was in flight; the last is replayed and judged.)
``lost_update``
    A hardware WRITE overwrote a value other than the one that core last read from that
    address (a software change was lost: a stale PTE written back).
``ad_on_nonpresent``
    A hardware write landed on a non-present PTE (V=0).
``memory``
    After the run, memory must equal the initial memory with every software operation and
    every hardware CAS the replay predicted applied in log order: A/D were only ever set by a
    predicted CAS.
``perf``
    Performance counters against the events the testbench saw.
``protocol``
    Port protocol errors (from the monitors and the memory responder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

import numpy as np

from pyrmap.arch import InvalKind
from pyrmap.physmem import BusError
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_G, _PAGE_U, _PAGE_V, LEVEL_SHIFT, AccessType,
                        FaultKind, describe, va_canonical)
from pyrmap.walk import PERM_MASK, FaultCause, WalkResult, check_perm, sv39_walk

from pyrmap.checker_registry import register_checker

from .coverage import Coverage
from .memory import SW, MemOp, MemTxn

#: The scoreboard's checker name (the step path's MmuScoreboard and the fast path's replay).
SCOREBOARD = "scoreboard"
register_checker(
    SCOREBOARD, "(s) golden-walk scoreboard",
    "every RTL translation and fault equals the Sv39 walk replayed from the PTE values the "
    "walker read, every TLB hit uses an entry the TLB may still hold, and no walker writes "
    "back a stale PTE or sets A/D on a non-present one")

__all__ = ["SCOREBOARD", "CpuTxn", "InvalTxn", "Violation", "CachedEntry", "MmuScoreboard",
           "inval_matches", "new_mmu_coverage", "MmuBehaviour", "MMU_BEHAVIOURS"]


@dataclass(frozen=True)
class MmuBehaviour:
    """Where a core MMU's reading of the spec differs from ours, each a choice the spec
    allows; the scoreboard judges every MMU by its own (docs/cva6.md tabulates them).

    Attributes
    ----------
    aborts_walks : bool
        A walk in flight when an invalidation is applied stops where it is (its reads so far
        are followed by a new walk from the root PTE); ours finishes it and restarts.
    clean_store_faults_from_tlb : bool
        A store that hits a cached entry with W=1 and D=0 answers PAGE from the TLB (no walk);
        ours re-walks.
    caches_privilege_faults : bool
        A walk whose leaf fails only the U/SUM check fills the TLB (the check is on the hit
        path) and answers PAGE; ours fills nothing on a fault.
    va_asid_spares_global : bool
        An invalidation by VA and ASID leaves global entries (the spec orders no global
        mapping there); ours removes them too.
    answers_from_fill : bool
        A successful walk fills the TLB at the edge after its leaf read's response and
        answers from that entry after a lookup: an invalidation applied from the cycle after
        the fill acts on the entry like on any other (a matching one removes it and the
        request walks again; another one leaves it); ours answers from the walk.
    """
    aborts_walks: bool = False
    answers_from_fill: bool = False
    clean_store_faults_from_tlb: bool = False
    caches_privilege_faults: bool = False
    va_asid_spares_global: bool = False


#: The behaviour of each core MMU ``hdl.config.MMUS`` names.
MMU_BEHAVIOURS = {
    "ours": MmuBehaviour(),
    "cva6": MmuBehaviour(aborts_walks=True, clean_store_faults_from_tlb=True,
                         caches_privilege_faults=True, va_asid_spares_global=True,
                         answers_from_fill=True),
}


@dataclass
class CpuTxn:
    """One CPU translation request and its response (cycles are rising-edge numbers)."""
    core: int
    vaddr: int
    op: AccessType
    user: bool
    sum: bool
    asid: int
    root: int
    req_cycle: int                  # handshake edge
    resp_cycle: int = -1            # edge at which resp.valid was sampled
    paddr: int = 0
    fault: FaultKind = FaultKind.NONE
    hit: bool = False
    mxr: bool = False               # mstatus.MXR

    def describe(self) -> str:
        mode = ("U" if self.user else ("S+SUM" if self.sum else "S")) + \
            ("+MXR" if self.mxr else "")
        res = (f"paddr 0x{self.paddr:09x}" if self.fault == FaultKind.NONE
               else f"fault {FaultKind(self.fault).name}")
        return (f"core{self.core} {AccessType(self.op).name} 0x{self.vaddr:x} {mode} "
                f"asid {self.asid} root 0x{self.root:x} [cycles {self.req_cycle}..{self.resp_cycle}]"
                f" -> {'hit' if self.hit else 'walk'} {res}")


@dataclass
class InvalTxn:
    """One invalidation: ``req_cycle`` is the first edge at which the DUT saw ``valid``."""
    target: int                     # core index, or -1 for the device
    kind: InvalKind
    vaddr: int
    asid: int
    req_cycle: int
    ack_cycle: int = -1

    def describe(self) -> str:
        who = "dev" if self.target < 0 else f"core{self.target}"
        return (f"{who} inval {InvalKind(self.kind).name} va 0x{self.vaddr:x} asid {self.asid}"
                f" [cycles {self.req_cycle}..{self.ack_cycle}]")


@dataclass
class Violation:
    kind: str
    cycle: int
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] cycle {self.cycle}: {self.message}"


@dataclass
class CachedEntry:
    """A translation that a core's TLB may hold (from a walk's fill)."""
    core: int
    vaddr: int
    asid: int
    level: int
    pte: int                        # the leaf PTE after the walk's A/D update
    add_cycle: int
    walk_start: int                 # edge of the walk's first memory request
    remove_cycle: Optional[int] = None
    removed_by: Optional[InvalTxn] = None

    @property
    def g(self) -> bool:
        return bool(self.pte & _PAGE_G)

    def covers(self, va: int) -> bool:
        shift = LEVEL_SHIFT[self.level]
        return ((va >> shift) & ((1 << (39 - shift)) - 1)) == \
            ((self.vaddr >> shift) & ((1 << (39 - shift)) - 1))

    def translate(self, va: int) -> int:
        shift = LEVEL_SHIFT[self.level]
        ppn = (self.pte >> 10) & ((1 << 44) - 1)
        return ((ppn << 12) & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))

    def describe(self) -> str:
        return (f"entry va 0x{self.vaddr:x} asid {self.asid} L{self.level} {describe(self.pte)}"
                f" filled at cycle {self.add_cycle}"
                + (f", removed at cycle {self.remove_cycle} by {self.removed_by.describe()}"
                   if self.removed_by else ""))


def inval_matches(kind: InvalKind, vaddr: int, asid: int, *, entry_va_covers: bool,
                  entry_asid: int, entry_g: bool, spares_global: bool = False) -> bool:
    """Does an invalidation of ``kind`` remove an entry (the four SFENCE.VMA cases)?
    ``spares_global``: the VA+ASID case leaves global entries (``MmuBehaviour``)."""
    kind = InvalKind(kind)
    if kind == InvalKind.ALL:
        return True
    if kind == InvalKind.VA:
        return entry_va_covers
    if kind == InvalKind.ASID:
        return not entry_g and entry_asid == asid
    if spares_global:
        return entry_va_covers and not entry_g and entry_asid == asid
    return entry_va_covers and (entry_g or entry_asid == asid)


def _entry_matches(inv: InvalTxn, e: CachedEntry, spares_global: bool = False) -> bool:
    return inval_matches(inv.kind, inv.vaddr, inv.asid, entry_va_covers=e.covers(inv.vaddr),
                         entry_asid=e.asid, entry_g=e.g, spares_global=spares_global)


def new_mmu_coverage(ncores: int, svadu: bool = True) -> Coverage:
    """The MMU coverage model: hit/miss x page size x fault x A/D update x CAS retry x
    invalidation during a walk x core.  Bins that cannot happen in the A/D mode are left out
    (Svadu: no SVADE_AD fault; Svade: no A/D update, no CAS retry, no CAS bus error)."""
    cov = Coverage("rtl-mmu")
    cov.point("core", range(ncores))
    cov.point("outcome", ["hit", "walk"])
    cov.point("page", ["4K", "2M", "1G", "none"])
    cov.point("fault", ["NONE", "PAGE", "ACCESS"])
    cov.point("op", [a.name for a in AccessType])
    cov.point("ad_update", ["none", "A", "D", "AD"] if svadu else ["none"])
    cov.point("cas_retry", ["0", "1+"] if svadu else ["0"])
    cov.point("inval_during_walk", ["none"] + [k.name for k in InvalKind])
    skip = {FaultCause.SVADE_AD} if svadu else {FaultCause.CAS_BUS_ERROR}
    cov.point("cause", [c.name for c in FaultCause if c not in skip])
    cov.point("load_leaf", list(_LOAD_LEAF))
    cov.point("inval_kind", [k.name for k in InvalKind])
    cov.point("inval_removed", ["0", "1+"])
    cov.cross("outcome_x_page_x_core", "outcome", "page", "core",
              exclude=[("hit", "none", None)])
    cov.cross("fault_x_op", "fault", "op")
    cov.cross("ad_x_page", "ad_update", "page",
              exclude=[(None, "none")])
    cov.cross("inval_x_removed", "inval_kind", "inval_removed")
    cov.cross("load_leaf_x_fault", "load_leaf", "fault",
              exclude=[("R", "PAGE"), ("X_MXR", "PAGE"), ("X_no_MXR", "NONE"), (None, "ACCESS")])
    cov.cross("inval_during_walk_x_core", "inval_during_walk", "core")
    cov.cross("cas_retry_x_page", "cas_retry", "page", exclude=[(None, "none")])
    cov.cross("ad_x_op", "ad_update", "op",
              exclude=[(ad, op) for ad in ("D", "AD") for op in ("LOAD", "FETCH")])
    return cov


_PAGE_NAMES = ("4K", "2M", "1G")

#: The ``load_leaf`` cover point: a load whose leaf grants R; an execute-only leaf loaded with
#: mstatus.MXR (a translation) and without it (a page fault).
_LOAD_LEAF = ("R", "X_MXR", "X_no_MXR")


def _load_leaf(t: "CpuTxn", pte: int) -> dict:
    """``load_leaf`` of a load through the leaf ``pte`` (empty for other accesses)."""
    if t.op != AccessType.LOAD or not pte & _PAGE_V or not pte & 0xA:
        return {}
    if pte & 0x2:
        return {"load_leaf": "R"}
    return {"load_leaf": "X_MXR" if t.mxr else "X_no_MXR"}


class MmuScoreboard:
    """Checks the RTL's CPU translations, invalidations, memory and counters.

    Parameters
    ----------
    ncores : int
    svadu : bool
        The RTL's A/D mode (the replay uses the same).
    mem_log : list of MemTxn
        The responder's log (shared, appended to while the run goes on).
    by_src : mapping of int -> list of MemTxn
        The responder's per-requester hardware transactions.
    initial_words : numpy array or None
        A copy of memory before the run, for the final memory check.
    coverage : Coverage or None
        Sampled on every response (default: :func:`new_mmu_coverage`).
    asid_bits : int
    mmu : str
        The core MMU (a key of :data:`MMU_BEHAVIOURS`): the choices it makes where the spec
        leaves them open.
    """

    def __init__(self, ncores: int, *, svadu: bool, mem_log: list, by_src: Mapping,
                 initial_words: Optional[np.ndarray] = None,
                 coverage: Optional[Coverage] = None, asid_bits: int = 9, mmu: str = "ours"):
        if mmu not in MMU_BEHAVIOURS:
            raise ValueError(f"mmu must be one of {', '.join(MMU_BEHAVIOURS)}, not {mmu!r}")
        self.behaviour = MMU_BEHAVIOURS[mmu]
        self.ncores = ncores
        self.svadu = svadu
        self.asid_mask = (1 << asid_bits) - 1
        self.mem_log = mem_log
        self.by_src = by_src
        self.initial_words = None if initial_words is None else initial_words.copy()
        self.coverage = (coverage if coverage is not None
                         else new_mmu_coverage(ncores, svadu=svadu))
        self.violations: list[Violation] = []
        self.entries: list[list[CachedEntry]] = [[] for _ in range(ncores)]
        self.invals: list[list[InvalTxn]] = [[] for _ in range(ncores)]
        self._cursor = [0] * ncores            # next unconsumed hw txn per core
        self._predicted: set[int] = set()      # seq numbers of hw CASes the replay predicted
        self._last_read: dict[tuple[int, int], int] = {}
        self.events = {c: {k: 0 for k in ("requests", "hits", "walk_responses", "walks",
                                          "a_sets", "d_sets", "cas_retries", "invals",
                                          "faults", "squashable", "walk_span",
                                          "restarts", "bus_errors", "access_faults")}
                       for c in range(ncores)}
        self.responses = 0
        self._pending_invals: dict[int, list[InvalTxn]] = {}
        self._finished = False
        self.logger = logging.getLogger("cosim.scoreboard")

    # --- helpers ----------------------------------------------------------------------------

    def fail(self, kind: str, cycle: int, message: str) -> None:
        v = Violation(kind, cycle, message)
        self.violations.append(v)
        self.logger.error("%s", v)

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}

    # --- CPU responses ----------------------------------------------------------------------

    def on_cpu(self, t: CpuTxn) -> None:
        """Check one response.  Call in response order (per core)."""
        ev = self.events[t.core]
        ev["requests"] += 1
        self.responses += 1
        txns = self.by_src.get(t.core, [])
        new = txns[self._cursor[t.core]:]
        self._cursor[t.core] = len(txns)
        if t.hit:
            ev["hits"] += 1
            if new:
                self.fail("walk_mismatch", t.resp_cycle,
                          f"{t.describe()}: a TLB hit made {len(new)} memory requests, first "
                          f"{new[0].describe()}")
            self._check_hit(t)
            return
        ev["walk_responses"] += 1
        ev["walk_span"] += t.resp_cycle - t.req_cycle
        self._check_walk(t, new)

    def _check_hit(self, t: CpuTxn) -> None:
        asid = t.asid & self.asid_mask
        if not va_canonical(t.vaddr) and t.fault == FaultKind.NONE:
            self.fail("stale_hit", t.resp_cycle,
                      f"{t.describe()}: a TLB hit translated a non-canonical address")
            return
        # The entry must be live when the response leaves: from the ack cycle of the
        # invalidation that removed it on, no response may come from it.
        cands = [e for e in self.entries[t.core]
                 if e.add_cycle <= t.resp_cycle
                 and (e.remove_cycle is None or e.remove_cycle > t.resp_cycle)
                 and e.covers(t.vaddr) and (e.g or e.asid == asid)]
        level = None
        for e in cands:
            perm_ok = check_perm(e.pte & PERM_MASK, t.op, user=t.user, sum=t.sum, mxr=t.mxr)
            if t.fault == FaultKind.NONE:
                if not perm_ok or e.translate(t.vaddr) != t.paddr:
                    continue
                if t.op == AccessType.STORE and not (e.pte & _PAGE_D):
                    continue
                if not e.pte & _PAGE_A:
                    continue
            elif t.fault == FaultKind.PAGE:
                clean_store = (self.behaviour.clean_store_faults_from_tlb
                               and t.op == AccessType.STORE and not e.pte & _PAGE_D)
                if perm_ok and not clean_store:
                    continue
            else:
                continue
            level = e.level
            leaf = _load_leaf(t, e.pte)
            break
        else:
            removed = [e for e in self.entries[t.core]
                       if e.covers(t.vaddr) and (e.g or e.asid == asid)]
            hint = ""
            if removed:
                hint = "; translations once filled for it: " + "; ".join(
                    e.describe() for e in removed[-3:])
            self.fail("stale_hit", t.resp_cycle,
                      f"{t.describe()}: no translation that the TLB may hold at that time "
                      f"allows this hit{hint}")
        fault = FaultKind(t.fault).name if t.fault != FaultKind.MISS else "PAGE"
        self.coverage.sample(core=t.core, outcome="hit", op=AccessType(t.op).name,
                             page=_PAGE_NAMES[level] if level is not None else "none",
                             fault=fault, **(leaf if level is not None else {}))

    def _replay(self, t: CpuTxn, txns: list[MemTxn]):
        """Replay one golden walk of ``t`` over the RTL's memory transactions ``txns``.

        Returns ``(res, consumed, problems)``: the golden result (None when the RTL's requests
        left the walk's path), the transactions the walk consumed, and what disagreed."""
        it = iter(txns)
        consumed: list[MemTxn] = []
        problems: list[str] = []

        class _Stop(Exception):
            pass

        def take(what: str) -> MemTxn:
            try:
                m = next(it)
            except StopIteration:
                problems.append(f"the golden walk {what} but the RTL made no further memory "
                                f"request")
                raise _Stop()
            consumed.append(m)
            return m

        def read(addr: int) -> int:
            m = take(f"reads the PTE at 0x{addr:09x}")
            if m.op != MemOp.READ or m.addr != addr:
                problems.append(f"the golden walk reads the PTE at 0x{addr:09x}; the RTL did "
                                f"{m.describe()}")
                raise _Stop()
            if m.err:
                raise BusError(addr)
            return m.rdata

        def cas(addr: int, old: int, newv: int) -> int:
            m = take(f"compare-and-swaps 0x{addr:09x} from 0x{old:x} to 0x{newv:x}")
            # Tolerate (but report) the two broken update shapes so the replay can go on and
            # later hits are judged against what the RTL really cached: a re-read of the PTE
            # before the update, and a plain WRITE instead of the CAS.
            while m.op == MemOp.READ and m.addr == addr:
                problems.append(f"the RTL re-read the PTE before its A/D update: "
                                f"{m.describe()}")
                m = take(f"compare-and-swaps 0x{addr:09x} from 0x{old:x} to 0x{newv:x}")
            if m.op == MemOp.WRITE and m.addr == addr:
                problems.append(f"the golden walk compare-and-swaps the PTE at 0x{addr:09x} "
                                f"from 0x{old:x} to 0x{newv:x}; the RTL did a plain WRITE "
                                f"{m.describe()}")
                if m.err:
                    raise BusError(addr)
                return old                  # the write "succeeded" whatever it overwrote
            if m.op != MemOp.CAS or m.addr != addr or m.cmp != old or m.wdata != newv:
                problems.append(f"the golden walk compare-and-swaps the PTE at 0x{addr:09x} "
                                f"from 0x{old:x} to 0x{newv:x}; the RTL did {m.describe()}")
                raise _Stop()
            if m.err:
                raise BusError(addr)
            if m.rdata == m.cmp:
                self._predicted.add(m.seq)
            return m.rdata

        res: Optional[WalkResult] = None
        try:
            res = sv39_walk(read, cas, t.vaddr, t.op, user=t.user, sum=t.sum, root=t.root,
                            svadu=self.svadu, mxr=t.mxr)
        except _Stop:
            pass
        except RuntimeError as exc:          # CAS livelock in the golden model
            problems.append(str(exc))
        return res, consumed, problems

    def _applied(self, core: int, after: int, upto: int) -> list[InvalTxn]:
        """Invalidations of ``core`` applied at an edge in (after, upto]."""
        return [inv for inv in self.invals[core] + self._pending_invals.get(core, [])
                if after < inv.req_cycle <= upto]

    def _check_walk(self, t: CpuTxn, new: list[MemTxn]) -> None:
        """A walk's response.  The RTL restarts a walk from the root when an invalidation is
        applied while it is in flight, so ``new`` is one or more complete walks: each but the
        last must have had an invalidation applied during it, and the last must have read
        every PTE after every invalidation acknowledged by the response (``stale_response``).
        """
        ev = self.events[t.core]
        walks: list[tuple[WalkResult, list[MemTxn]]] = []
        rest = new
        problems: list[str] = []
        res: Optional[WalkResult] = None
        after = t.req_cycle                 # the walk began after this edge
        aborted: list[list[MemTxn]] = []      # the reads of walks stopped by an invalidation
        while True:
            res, consumed, problems = self._replay(t, rest)
            if (res is None and problems and self._aborted(t, consumed, after)):
                # A walk stopped by an invalidation, then a new walk from the root PTE.
                aborted.append(consumed[:-1])
                rest = rest[len(consumed) - 1:]
                after = consumed[-2].resp_cycle
                continue
            if res is not None:
                walks.append((res, consumed))
            if res is None or problems:
                break
            rest = rest[len(consumed):]
            if not rest:
                break
            # More requests: a restart, legal only if an invalidation was applied while that
            # walk was in flight (at the latest two edges before the next walk's first request).
            if not consumed or not self._applied(t.core, after, rest[0].req_cycle - 2):
                problems.append(f"the RTL made {len(rest)} memory request(s) the golden walk "
                                f"does not make, first {rest[0].describe()}, and no "
                                f"invalidation was applied during the walk before them")
                break
            after = consumed[-1].resp_cycle
        if res is not None:
            exp_fault = res.fault
            if FaultKind(t.fault) != exp_fault:
                problems.append(f"fault {FaultKind(t.fault).name}, golden walk "
                                f"{exp_fault.name} ({res.cause.value})")
            elif exp_fault == FaultKind.NONE and t.paddr != res.paddr:
                problems.append(f"paddr 0x{t.paddr:09x}, golden walk 0x{res.paddr:09x}")
        if problems:
            trail = "; ".join(m.describe() for m in new[:8])
            self.fail("walk_mismatch", t.resp_cycle,
                      f"{t.describe()}: " + "; ".join(problems) + f". RTL memory requests: "
                      f"[{trail}]")
            agree = (res is not None and FaultKind(t.fault) == res.fault
                     and (res.fault != FaultKind.NONE or t.paddr == res.paddr))
            if not agree:
                return
        assert res is not None
        last = walks[-1][1]
        walk_start = last[0].req_cycle if last else t.req_cycle
        if last:
            # From the ack on, no response derived from a PTE read older than the
            # invalidation: one applied after the walk's first read and acknowledged by the
            # response cycle must have restarted it.
            older = self._applied(t.core, walk_start, t.resp_cycle - 1)
            if self.behaviour.answers_from_fill and res.fault == FaultKind.NONE:
                filled = last[-1].resp_cycle + 1
                entry = CachedEntry(t.core, t.vaddr, t.asid & self.asid_mask, res.level,
                                    res.pte, filled, walk_start)
                older = [inv for inv in older if inv.req_cycle <= filled
                         or _entry_matches(inv, entry, self.behaviour.va_asid_spares_global)]
            if older:
                reads = "; ".join(m.describe() for m in last[:4])
                self.fail("stale_response", t.resp_cycle,
                          f"{t.describe()}: answered from PTEs read before "
                          f"{older[0].describe()}, acknowledged by the response cycle "
                          f"(the walk should have restarted): [{reads}]")
        ev["walks"] += 1
        ev["restarts"] += len(walks) - 1 + len(aborted)
        if res.fault == FaultKind.ACCESS:
            ev["access_faults"] += 1
        ev["bus_errors"] += sum(1 for stopped in aborted for m in stopped if m.err)
        for r, consumed in walks:
            ev["bus_errors"] += sum(1 for m in consumed if m.err)
            ev["cas_retries"] += r.cas_retries
            ev["a_sets"] += int(r.a_set)
            ev["d_sets"] += int(r.d_set)
        if res.fault != FaultKind.NONE:
            ev["faults"] += 1
        during = [inv for inv in self.invals[t.core]
                  if walk_start < inv.req_cycle <= t.resp_cycle]
        pending = [inv for inv in self._pending_invals.get(t.core, [])
                   if walk_start < inv.req_cycle <= t.resp_cycle]
        if res.fault == FaultKind.NONE or self._fills_on_fault(t, res):
            e = CachedEntry(t.core, t.vaddr, t.asid & self.asid_mask, res.level, res.pte,
                            t.resp_cycle, walk_start)
            killers = [inv for inv in during if inv.ack_cycle <= t.resp_cycle
                       and _entry_matches(inv, e, self.behaviour.va_asid_spares_global)]
            if killers:
                e.remove_cycle = t.resp_cycle
                e.removed_by = killers[0]
                ev["squashable"] += 1
            self.entries[t.core].append(e)
        self._sample_walk(t, res, (during + pending)[0] if (during or pending) else None)

    def _aborted(self, t: CpuTxn, consumed: list[MemTxn], after: int) -> bool:
        """Did the replay leave the walk's path because the MMU stopped the walk at an
        invalidation (``MmuBehaviour.aborts_walks``)?  Exactly when the request that left the
        path reads the root PTE of ``t`` (a new walk begins) and an invalidation was applied
        after ``after`` and by that request."""
        if not self.behaviour.aborts_walks or len(consumed) < 2:
            return False
        m = consumed[-1]
        root_pte = (t.root << 12) + ((t.vaddr >> 30) & 511) * 8
        return (m.op == MemOp.READ and m.addr == root_pte
                and bool(self._applied(t.core, after, m.req_cycle)))

    def _fills_on_fault(self, t: CpuTxn, res: WalkResult) -> bool:
        """A faulting walk the MMU caches (``MmuBehaviour.caches_privilege_faults``): the leaf
        failed only the U/SUM check, has A=1, grants the access's R/W/X and, for a store, has
        D=1 (CVA6's walker fills exactly then; its hit path checks U/SUM)."""
        if not self.behaviour.caches_privilege_faults or res.cause != FaultCause.PERMISSION:
            return False
        pte = res.pte
        as_owner = check_perm(pte & PERM_MASK, t.op, user=bool(pte & _PAGE_U), sum=False,
                              mxr=t.mxr)
        return (as_owner and bool(pte & _PAGE_A)
                and (t.op != AccessType.STORE or bool(pte & _PAGE_D)))

    def _sample_walk(self, t: CpuTxn, res: Optional[WalkResult], inv: Optional[InvalTxn]):
        if res is None:
            return
        if res.a_set and res.d_set:
            ad = "AD"
        elif res.d_set:
            ad = "D"
        elif res.a_set:
            ad = "A"
        else:
            ad = "none"
        self.coverage.sample(
            core=t.core, outcome="walk", op=AccessType(t.op).name,
            page=_PAGE_NAMES[res.level] if res.fault == FaultKind.NONE else "none",
            fault=res.fault.name, ad_update=ad, cas_retry="1+" if res.cas_retries else "0",
            inval_during_walk=InvalKind(inv.kind).name if inv else "none",
            cause=res.cause.name, **_load_leaf(t, res.pte))

    # --- invalidations ----------------------------------------------------------------------

    def on_inval_request(self, inv: InvalTxn) -> None:
        """An invalidation became visible to the DUT (first edge with ``valid``)."""
        self._pending_invals.setdefault(inv.target, []).append(inv)

    def on_inval_ack(self, inv: InvalTxn) -> None:
        """The DUT acknowledged ``inv`` at ``inv.ack_cycle``: matching entries are gone."""
        pend = self._pending_invals.get(inv.target, [])
        if inv in pend:
            pend.remove(inv)
        if inv.target < 0:
            return
        self.events[inv.target]["invals"] += 1
        self.invals[inv.target].append(inv)
        removed = 0
        for e in self.entries[inv.target]:
            # A walk whose first memory request came at or after the request read the PTEs
            # after software changed them (software invalidates after the change), so its
            # fill may survive the ack, even a fill at the very edge of the ack.
            if e.walk_start >= inv.req_cycle:
                continue
            if e.remove_cycle is None and _entry_matches(inv, e,
                                                          self.behaviour.va_asid_spares_global):
                e.remove_cycle = inv.ack_cycle
                e.removed_by = inv
                removed += 1
        self.coverage.sample(inval_kind=InvalKind(inv.kind).name,
                             inval_removed="1+" if removed else "0")

    # --- whole-run checks -------------------------------------------------------------------

    def check_hw_writes(self) -> None:
        """``lost_update`` and ``ad_on_nonpresent`` over every hardware write in the log."""
        last_read: dict[tuple[int, int], int] = {}
        for m in self.mem_log:
            if m.src == SW or m.err:
                continue
            key = (m.src, m.addr)
            if m.op == MemOp.READ:
                last_read[key] = m.rdata
                continue
            if not m.wrote:
                continue
            if not m.rdata & _PAGE_V:
                self.fail("ad_on_nonpresent", m.resp_cycle,
                          f"core{m.src} wrote 0x{m.wdata:x} ({describe(m.wdata)}) over the "
                          f"non-present PTE 0x{m.rdata:x} ({describe(m.rdata)}) at "
                          f"0x{m.addr:09x}: {m.describe()}")
            if m.op == MemOp.WRITE and key in last_read and last_read[key] != m.rdata:
                self.fail("lost_update", m.resp_cycle,
                          f"core{m.src} wrote back a stale PTE at 0x{m.addr:09x}: it read "
                          f"0x{last_read[key]:x} ({describe(last_read[key])}), the word had "
                          f"become 0x{m.rdata:x} ({describe(m.rdata)}) and the plain WRITE "
                          f"replaced it with 0x{m.wdata:x}: {m.describe()}")

    def check_memory(self, final_words: np.ndarray) -> None:
        """Memory equals the initial memory plus software operations plus predicted CASes."""
        if self.initial_words is None:
            return
        exp = self.initial_words.copy()
        for m in self.mem_log:
            if m.err or not m.wrote:
                continue
            if m.src != SW and m.seq not in self._predicted:
                continue
            exp[m.addr >> 3] = np.uint64(m.wdata)
        diff = np.nonzero(exp != final_words)[0]
        for idx in diff[:8]:
            addr = int(idx) << 3
            want, got = int(exp[idx]), int(final_words[idx])
            ad = (want ^ got) & ~(_PAGE_A | _PAGE_D) == 0
            writers = [m.describe() for m in self.mem_log
                       if m.addr == addr and m.src != SW and m.op != MemOp.READ][-3:]
            self.fail("memory", -1,
                      f"word 0x{addr:09x} is 0x{got:x} ({describe(got)}), expected 0x{want:x} "
                      f"({describe(want)})" + (": A/D set without a predicted CAS" if ad else "")
                      + (f"; hardware writes there: {writers}" if writers else ""))

    def check_counters(self, core: int, counters: Mapping[str, int]) -> None:
        """Compare the core's perf counters with the events the testbench saw.

        Exact: ``lookups`` (every request), ``hits`` (responses with hit=1), ``misses`` and
        ``misses`` (responses with hit=0), ``a_sets``/``d_sets`` (successful CASes that set
        A/D), ``cas_retries`` (failed CASes), ``invals`` (acks).  Bounded: ``walks`` between
        the walk responses plus the restarts seen in the memory log and the walk responses plus
        ``squashed`` (a restart of a walk that made no memory request leaves no trace);
        ``walk_cycles`` between the number of walks and the summed request-to-response spans
        of the walks; ``squashed`` at least the restarts seen and the walks whose fill the
        scoreboard knows had to be dropped.
        """
        ev = self.events[core]
        expect = {"lookups": ev["requests"], "hits": ev["hits"],
                  "misses": ev["walk_responses"],
                  "a_sets": ev["a_sets"], "d_sets": ev["d_sets"],
                  "cas_retries": ev["cas_retries"], "invals": ev["invals"]}
        for name, want in expect.items():
            if name in counters and counters[name] != want:
                self.fail("perf", -1, f"core{core} perf counter {name} is {counters[name]}, "
                                      f"the testbench saw {want}")
        if "walks" in counters:
            lo = ev["walk_responses"] + ev["restarts"]
            hi = ev["walk_responses"] + counters.get("squashed", ev["restarts"])
            if not lo <= counters["walks"] <= hi:
                self.fail("perf", -1, f"core{core} perf counter walks is {counters['walks']}, "
                                      f"outside [{lo}, {hi}] (walk responses plus the restarts "
                                      f"seen, plus perf.squashed)")
        if "walk_cycles" in counters:
            lo, hi = ev["walk_responses"], ev["walk_span"]
            if not lo <= counters["walk_cycles"] <= hi:
                self.fail("perf", -1, f"core{core} perf counter walk_cycles is "
                                      f"{counters['walk_cycles']}, outside [{lo}, {hi}] (walks, "
                                      f"summed request-to-response cycles of the walks)")
        floor = max(ev["squashable"], ev["restarts"])
        if "squashed" in counters and counters["squashed"] < floor:
            self.fail("perf", -1, f"core{core} perf counter squashed is "
                                  f"{counters['squashed']}, less than the {floor} walks an "
                                  f"invalidation had to restart or whose fill it had to drop")

    def finish(self) -> None:
        """The whole-run checks that need no initial memory (``lost_update``,
        ``ad_on_nonpresent``); once (later calls do nothing)."""
        if not self._finished:
            self._finished = True
            self.check_hw_writes()

    def verdict(self) -> dict:
        """The scoreboard's row of a run's checker table: every response replayed counts as
        a check."""
        from pyrmap.checkers import NOT_EXERCISED
        bad = len(self.violations)
        return {"name": "scoreboard", "checks": self.responses, "violations": bad,
                "verdict": "FAIL" if bad else "PASS" if self.responses else NOT_EXERCISED}

    def summary(self) -> dict:
        return {"responses": self.responses,
                "events": {str(c): dict(v) for c, v in self.events.items()},
                "violations": [str(v) for v in self.violations[:50]],
                "violation_kinds": sorted(self.kinds()),
                "entries_filled": sum(len(e) for e in self.entries)}
