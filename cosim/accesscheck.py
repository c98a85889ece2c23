"""Checker (a) at cycle level: which translations an access may still complete through.

One routine serves the cores (:meth:`cosim.arch.CosimArch.check_access`) and the device
(:meth:`cosim.devarch.DevArch.check_access`).

The rule
--------
Each value a leaf PTE held (every software change and every walker A/D compare-and-swap, in
the memory model's log) was live from its write until the next write.  A value is *retired*
for an access that began (request accepted) at cycle ``start`` when an invalidation covering
the translation was requested at or after the cycle the value ended and acknowledged at or
before ``start``: the hardware then guarantees that no entry derived from it survives and no
walk that read it can still fill.  An access must complete through a value that is not
retired -- the current one, or an older one whose covering invalidation came later
(stale-but-legal) -- with

* the frame: the response's physical address is that value's translation of the virtual
  address (4 KiB, 2 MiB and 1 GiB leaves);
* the permission: present, R/W/X for the operation, U against the privilege (SUM for
  supervisor loads and stores of user pages);
* the A/D state the access relies on: A set, and D for a store (a TLB entry with D lets a store
  complete without touching the PTE, so a store through a retired dirty value after
  page_mkclean leaves no trace).  Judged only when the history includes the walkers' A/D
  writes (a memory model's log); the device sets neither, so its accesses are judged on frame
  and W.

A check is counted when some value was retired (the access could have been wrong).  When
the oldest recorded value is still legal and the history does not reach further back
(truncated, or started after the PTE was last written), the older values are unknown: an
access none of the known legal values explains is reported as an incomplete history, never
passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from pyrmap.pte import _PAGE_A, _PAGE_D, _PAGE_V, _PAGE_W, AccessType, describe
from pyrmap.walk import PERM_MASK, check_perm

__all__ = ["Inval", "PteChange", "AccessVerdict", "PteLog", "inval_record", "judge_access",
           "translate"]

_LEAF = 0xE            # R W X


@dataclass(frozen=True)
class Inval:
    """One acknowledged invalidation: requested at cycle ``req``, acknowledged at ``ack``,
    removing translations of ``asid`` (None: every address space) in VA [``lo``, ``hi``)."""
    req: int
    ack: int
    asid: Optional[int]
    lo: int
    hi: int

    def covers(self, asid: int, lo: int, hi: int) -> bool:
        return (self.asid is None or self.asid == asid) and self.lo < hi and lo < self.hi


def inval_record(kind, va: int, asid: int, req: int, ack: int) -> Inval:
    """The :class:`Inval` of one request of ``kind`` (:class:`pyrmap.arch.InvalKind`)."""
    from pyrmap.arch import InvalKind
    kind = InvalKind(kind)
    if kind == InvalKind.ALL:
        return Inval(req, ack, None, 0, 1 << 64)
    if kind == InvalKind.ASID:
        return Inval(req, ack, asid, 0, 1 << 64)
    lo = va & ~0xFFF
    return Inval(req, ack, None if kind == InvalKind.VA else asid, lo, lo + 0x1000)


@dataclass(frozen=True)
class PteChange:
    """One write of a PTE: at ``cycle`` the word went from ``old`` to ``new`` (``who``
    wrote it)."""
    cycle: int
    old: int
    new: int
    who: str = ""


@dataclass
class AccessVerdict:
    """What :func:`judge_access` found.

    ``checked``: some value was retired (the check could fail); ``problem``: None when the
    access is explained by a legal value, else why not; ``legal``: the legal values;
    ``cut``: the acknowledgement that retired the newest retired value."""
    checked: bool
    problem: Optional[str] = None
    legal: tuple = ()
    cut: Optional[Inval] = None


class PteLog:
    """Every write of every word in a memory model's log, indexed by address.

    Reads the log incrementally (each :meth:`changes` call consumes what was appended since
    the last), from ``memory.log[from_seq]`` on; a new ``from_seq`` (a fresh kernel on the
    same memory) starts the index again.
    """

    def __init__(self, memory):
        self.memory = memory
        self.from_seq = 0
        self._cursor = 0
        self._by_addr: dict[int, list[PteChange]] = {}

    def changes(self, addr: int, from_seq: int = 0) -> list[PteChange]:
        """The writes of ``addr`` (software and walkers), oldest first."""
        if from_seq != self.from_seq:
            self.from_seq = from_seq
            self._cursor = from_seq
            self._by_addr = {}
        log = self.memory.log
        for txn in log[self._cursor:]:
            if txn.wrote:
                who = txn.who or ("sw" if txn.src < 0 else f"core{txn.src} walker")
                self._by_addr.setdefault(txn.addr, []).append(
                    PteChange(txn.resp_cycle, txn.rdata, txn.wdata, who))
        self._cursor = len(log)
        return self._by_addr.get(addr, [])


def translate(val: int, level: int, va: int) -> int:
    """The physical address ``val`` (a leaf at ``level``) gives ``va``."""
    shift = 12 + 9 * level
    ppn = (val >> 10) & ((1 << 44) - 1)
    return ((ppn << 12) & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))


def _explains(val: int, level: int, va: int, paddr: int, op: AccessType, user: bool,
              sum: bool, device: bool, with_ad: bool) -> bool:
    if not val & _PAGE_V or not val & _LEAF:
        return False
    if translate(val, level, va) >> 12 != paddr >> 12:
        return False
    if device:
        return op != AccessType.STORE or bool(val & _PAGE_W)
    if not check_perm(val & PERM_MASK, op, user=user, sum=sum):
        return False
    if with_ad:
        if not val & _PAGE_A:
            return False
        if op == AccessType.STORE and not val & _PAGE_D:
            return False
    return True


def judge_access(*, changes: Sequence[PteChange], now: int, complete: bool,
                 invals: Sequence[Inval], asid: int, va: int, level: int, start: int,
                 paddr: int, op: AccessType, user: bool = True, sum: bool = False,
                 device: bool = False, with_ad: bool = True) -> AccessVerdict:
    """Judge one completed access against the PTE's history.

    Parameters
    ----------
    changes : sequence of PteChange
        The writes of the leaf PTE, oldest first.
    now : int
        The PTE's value now.
    complete : bool
        ``changes`` reaches back to the PTE's first value (the ``old`` of the first change is
        all there was before it).
    invals : sequence of Inval
        Acknowledged invalidations of the requester, in acknowledgement order.
    asid, va, level :
        The translation: its address space, the accessed address, the leaf's level.
    start : int
        Cycle at which the access began: its request accepted by the port (a core's or the
        device's; an invalidation acknowledged in that cycle or before precedes it).
    paddr : int
        The physical address it completed with.
    op, user, sum :
        The access.
    device : bool
        Judge a device access (frame and W only).
    with_ad : bool
        The history includes the walkers' A/D writes: require A, and D for a store.
    """
    size = 1 << (12 + 9 * level)
    lo = va & ~(size - 1)
    hi = lo + size
    covering = [i for i in invals if i.ack <= start and i.covers(asid, lo, hi)]
    # Values with the cycle each stopped being live (None: still live).
    values: list[tuple[int, Optional[int]]] = [(ch.old, ch.cycle) for ch in changes]
    values.append((now, None))
    # The newest covering request retires every value that ended at or before it.
    last_req = max((i.req for i in covering), default=None)
    if last_req is None:
        return AccessVerdict(False)
    legal = [v for v, end in values if end is None or end > last_req]
    retired = len(legal) < len(values)
    oldest_known_legal = len(legal) == len(values)
    if not retired and complete:
        return AccessVerdict(False)
    cut = max((i for i in covering if i.req == last_req), key=lambda i: i.ack)
    for v in legal:
        if _explains(v, level, va, paddr, op, user, sum, device, with_ad):
            return AccessVerdict(retired, None, tuple(legal), cut)
    if oldest_known_legal and not complete:
        return AccessVerdict(True, "the PTE history does not reach back to the invalidation "
                             "acknowledged at cycle %d (requested at cycle %d): the access "
                             "cannot be judged, which is an error, not a pass"
                             % (cut.ack, cut.req), tuple(legal), cut)
    if not retired:
        return AccessVerdict(False)
    mode = "device" if device else ("U" if user else ("S+SUM" if sum else "S"))
    allowed = "; ".join(describe(v) for v in legal) or "nothing"
    return AccessVerdict(True, f"{AccessType(op).name} ({mode}) completed at frame "
                               f"{paddr >> 12:#x}, which no translation still legal at its "
                               f"start allows: since the invalidation requested at cycle "
                               f"{cut.req} and acknowledged at cycle {cut.ack} the PTE was "
                               f"only {allowed}", tuple(legal), cut)
