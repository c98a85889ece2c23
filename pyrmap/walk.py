"""The Sv39 page-table walk, as one loop (the shape of Spike's ``mmu_t::walk``).

:func:`sv39_walk` is the walker of the golden model (:class:`pyrmap.softarch.SoftArch`) and the
reference the RTL walker is scoreboarded against.  It reads PTEs and updates A/D bits only
through the two callables it is given, so the same code runs on a plain :class:`PhysMem`, on
a memory that injects bus errors, or on one whose compare-and-swap fails on purpose.

Rules, in the order they are checked (RISC-V privileged spec, Sv39, with Svade/Svadu):

1. a non-canonical VA (bits 63..39 differ from bit 38) is a PAGE fault;
2. from level 2 down: a bus error reading the PTE is an ACCESS fault;
3. V=0, or W without R, or any of the reserved bits 54..63 set is a PAGE fault;
4. a non-leaf PTE with A, D or U set is a PAGE fault; a non-leaf PTE at level 0 is a PAGE fault;
5. a leaf whose low PPN bits are not zero (misaligned superpage) is a PAGE fault;
6. permissions: LOAD needs R (or X when mstatus.MXR is set), STORE needs W, FETCH needs X; a
   U-mode access needs U; an S-mode access to a U page needs SUM and is never allowed for
   FETCH -- else a PAGE fault;
7. A/D: under Svade a leaf with A=0, or a STORE to a leaf with D=0, is a PAGE fault; under Svadu
   ``new = pte | A | (D if STORE)``; if ``new != pte`` it is compare-and-swapped against the
   value the walk read; a bus error is an ACCESS fault; a mismatch restarts the walk from the
   root (counted in ``cas_retries``).  A stale value is never written back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from .physmem import BusError
from .pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X, LEVEL_SHIFT,
                  LEVELS, PAGE_SHIFT, PPN_MASK, PPN_SHIFT, PTE_SIZE, RESERVED_MASK, AccessType,
                  FaultKind, va_canonical, vpn)

__all__ = ["FaultCause", "WalkResult", "sv39_walk", "check_perm", "PERM_MASK",
           "MAX_CAS_RETRIES"]

#: The R W X U bits of a PTE, in PTE positions (what a TLB entry caches as ``perm``).
PERM_MASK = _PAGE_R | _PAGE_W | _PAGE_X | _PAGE_U

#: A walk that loses this many compare-and-swaps in a row is a livelock, not a race.
MAX_CAS_RETRIES = 1000


class FaultCause(enum.Enum):
    """Why a walk ended in a fault (finer than :class:`FaultKind`, for reports)."""
    NONE = "none"
    NON_CANONICAL = "non-canonical virtual address"
    PTE_BUS_ERROR = "bus error reading a PTE"
    INVALID = "PTE not valid (V=0)"
    W_WITHOUT_R = "PTE writable but not readable"
    RESERVED = "reserved PTE bits 54..63 set"
    NONLEAF_ADU = "non-leaf PTE with A, D or U set"
    NONLEAF_LEVEL0 = "non-leaf PTE at level 0"
    MISALIGNED = "misaligned superpage"
    PERMISSION = "permission denied"
    SVADE_AD = "A or D clear under Svade"
    CAS_BUS_ERROR = "bus error on the A/D compare-and-swap"


@dataclass
class WalkResult:
    """The outcome of one walk.

    Attributes
    ----------
    fault : FaultKind
        NONE, PAGE or ACCESS.
    cause : FaultCause
    paddr : int
        Physical address of ``vaddr`` (only when ``fault`` is NONE, else 0).
    level : int
        Level of the leaf (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB), or of the PTE that faulted.
    pte : int
        The leaf PTE after the A/D update (what a TLB fill caches); for a fault, the PTE that
        caused it (0 on a bus error or a non-canonical address).
    pte_addr : int
        Physical address of that PTE (0 when none was read).
    reads : list of (int, int)
        Every PTE read, in order, as (paddr, value); across restarts.
    cas : list of (int, int, int, int)
        Every compare-and-swap attempt as (paddr, expected, new, found); ``found == expected``
        means it succeeded.  A bus error is recorded with ``found = -1``.
    cas_retries : int
        Restarts caused by a compare-and-swap mismatch.
    """
    fault: FaultKind
    cause: FaultCause
    paddr: int = 0
    level: int = 0
    pte: int = 0
    pte_addr: int = 0
    reads: list = field(default_factory=list)
    cas: list = field(default_factory=list)
    cas_retries: int = 0

    @property
    def ok(self) -> bool:
        return self.fault == FaultKind.NONE

    @property
    def a_set(self) -> bool:
        """The walk's successful compare-and-swap set A."""
        return any(found == exp and (new & _PAGE_A) and not (exp & _PAGE_A)
                   for _, exp, new, found in self.cas)

    @property
    def d_set(self) -> bool:
        """The walk's successful compare-and-swap set D."""
        return any(found == exp and (new & _PAGE_D) and not (exp & _PAGE_D)
                   for _, exp, new, found in self.cas)


def check_perm(perm: int, op: AccessType, *, user: bool, sum: bool, mxr: bool = False) -> bool:
    """The leaf permission rule (step 6), on R W X U bits in PTE positions.

    Used by the walk and, on a TLB hit, against the entry's cached permissions.  ``mxr``
    (mstatus.MXR) makes an executable page loadable too.
    """
    need = _NEED.get(op)
    if need is None:
        raise ValueError(f"Access type must be an AccessType, not {op!r}")
    if mxr and op == AccessType.LOAD:
        need |= _PAGE_X
    if perm & _PAGE_U:
        if not user and (op == AccessType.FETCH or not sum):
            return False
    elif user:
        return False
    return bool(perm & need)


_NEED = {AccessType.LOAD: _PAGE_R, AccessType.STORE: _PAGE_W, AccessType.FETCH: _PAGE_X}


def sv39_walk(read: Callable[[int], int], cas: Callable[[int, int, int], int], vaddr: int,
              op: AccessType, *, user: bool, sum: bool, root: int, svadu: bool,
              mxr: bool = False) -> WalkResult:
    """Translate ``vaddr`` for an access ``op`` by walking the Sv39 tables rooted at ``root``.

    Parameters
    ----------
    read : callable(paddr) -> int
        Reads the 64-bit PTE at a physical address; may raise :class:`BusError`.
    cas : callable(paddr, old, new) -> int
        Atomic compare-and-swap; returns the value found (== old on success); may raise
        :class:`BusError`.
    vaddr : int
        The virtual address (64 bits; must be canonical).
    op : AccessType
    user : bool
        U-mode access (else S-mode).
    sum : bool
        sstatus.SUM: S-mode may load and store (never fetch) U pages.
    root : int
        satp.PPN: frame number of the root table.
    svadu : bool
        Hardware A/D update (Svadu) when True, else faults on A/D (Svade).
    mxr : bool
        mstatus.MXR: a LOAD may read an executable page without R.

    Returns
    -------
    WalkResult
        One success (fault NONE, the leaf after its A/D update) or one fault with its cause.
        The walk writes memory only through one successful ``cas`` of the leaf.

    Raises
    ------
    RuntimeError
        When the compare-and-swap fails :data:`MAX_CAS_RETRIES` times in a row.
    """
    op = AccessType(op)
    res = WalkResult(FaultKind.NONE, FaultCause.NONE)

    def fail(kind: FaultKind, cause: FaultCause, level: int, pte: int = 0,
             pte_addr: int = 0) -> WalkResult:
        res.fault, res.cause, res.level, res.pte, res.pte_addr = kind, cause, level, pte, pte_addr
        res.paddr = 0
        return res

    if not va_canonical(vaddr):
        return fail(FaultKind.PAGE, FaultCause.NON_CANONICAL, LEVELS - 1)

    while True:                                     # one iteration per (re)start from the root
        table = root
        level = LEVELS - 1
        while True:                                 # one iteration per level
            pte_addr = (table << PAGE_SHIFT) + vpn(vaddr, level) * PTE_SIZE
            try:
                pte = read(pte_addr)
            except BusError:
                return fail(FaultKind.ACCESS, FaultCause.PTE_BUS_ERROR, level, 0, pte_addr)
            res.reads.append((pte_addr, pte))
            if not pte & _PAGE_V:
                return fail(FaultKind.PAGE, FaultCause.INVALID, level, pte, pte_addr)
            if (pte & _PAGE_W) and not (pte & _PAGE_R):
                return fail(FaultKind.PAGE, FaultCause.W_WITHOUT_R, level, pte, pte_addr)
            if pte & RESERVED_MASK:
                return fail(FaultKind.PAGE, FaultCause.RESERVED, level, pte, pte_addr)
            ppn = (pte & PPN_MASK) >> PPN_SHIFT
            if not pte & (_PAGE_R | _PAGE_X):       # non-leaf (W without R was caught above)
                if pte & (_PAGE_A | _PAGE_D | _PAGE_U):
                    return fail(FaultKind.PAGE, FaultCause.NONLEAF_ADU, level, pte, pte_addr)
                if level == 0:
                    return fail(FaultKind.PAGE, FaultCause.NONLEAF_LEVEL0, level, pte, pte_addr)
                table = ppn
                level -= 1
                continue
            # A leaf.
            if ppn & ((1 << (9 * level)) - 1):
                return fail(FaultKind.PAGE, FaultCause.MISALIGNED, level, pte, pte_addr)
            if not check_perm(pte & PERM_MASK, op, user=user, sum=sum, mxr=mxr):
                return fail(FaultKind.PAGE, FaultCause.PERMISSION, level, pte, pte_addr)
            new = pte | _PAGE_A | (_PAGE_D if op == AccessType.STORE else 0)
            if new != pte:
                if not svadu:
                    return fail(FaultKind.PAGE, FaultCause.SVADE_AD, level, pte, pte_addr)
                try:
                    found = cas(pte_addr, pte, new)
                except BusError:
                    res.cas.append((pte_addr, pte, new, -1))
                    return fail(FaultKind.ACCESS, FaultCause.CAS_BUS_ERROR, level, pte,
                                pte_addr)
                res.cas.append((pte_addr, pte, new, found))
                if found != pte:
                    res.cas_retries += 1
                    if res.cas_retries >= MAX_CAS_RETRIES:
                        raise RuntimeError(
                            f"Walk of 0x{vaddr:x} lost {res.cas_retries} compare-and-swaps "
                            f"of the PTE at 0x{pte_addr:09x} in a row")
                    break                           # restart from the root
            offset = vaddr & ((1 << LEVEL_SHIFT[level]) - 1)
            res.fault, res.cause = FaultKind.NONE, FaultCause.NONE
            res.level, res.pte, res.pte_addr = level, new, pte_addr
            res.paddr = (ppn << PAGE_SHIFT) + offset
            return res
