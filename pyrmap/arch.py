"""The one seam between the engine and the MMU: PTE access, TLB flushes, locks, scheduling.

This is the project's asm/pgtable.h + asm/tlbflush.h.  The engine (rmap, the notifier core and
the mm around them) reads and changes page-table entries and flushes TLBs *only* through an
``Arch``.  Two implementations exist:

* :class:`pyrmap.softarch.SoftArch`: a Python MMU (cores with TLBs and walkers, a device TLB)
  with exactly the RTL's semantics, plus a seeded scheduler that interleaves engine threads.
  It is the fast mode and the golden model the RTL is scoreboarded against.
* ``cosim``'s implementation performs the same operations through the simulated hardware:
  PTE atomics as memory transactions ordered with the walkers', flushes as invalidation
  requests on every relevant core, returning after every acknowledgement.

Addresses of PTEs (``ptep``) are physical byte addresses of 8-byte words in :class:`PhysMem`.

Ordering contract shared by both implementations: every operation below is atomic with
respect to the hardware walkers (a walker's A/D compare-and-swap either sees the value before
the operation or after it, never a mix), and every flush returns only when no TLB entry that
matches it exists on any targeted core *and* no walk that began before the flush can still
install its result.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol


class InvalKind(enum.IntEnum):
    """The four invalidation kinds (the four rs1/rs2 cases of SFENCE.VMA)."""
    ALL = 0          # rs1=x0, rs2=x0: every entry, global ones too
    VA = 1           # rs1=va, rs2=x0: entries mapping va in any address space
    ASID = 2         # rs1=x0, rs2=asid: non-global entries of asid
    VA_ASID = 3      # rs1=va, rs2=asid: entries mapping va in asid, or global ones mapping va


@dataclass(frozen=True)
class TlbEntry:
    """A TLB entry as visible to checkers (both SoftArch and the RTL report this shape)."""
    vpn: int        # va >> 12, aligned down to the page size of `level`
    asid: int
    ppn: int        # pa >> 12 of the base of the page
    level: int      # 0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB
    perm: int       # R W X U bits in PTE positions (1..4)
    g: bool
    a: bool
    d: bool

    def covers(self, va: int) -> bool:
        shift = 12 + 9 * self.level
        return (va >> shift) == (self.vpn << 12) >> shift


class Lock(Protocol):
    """A sleeping/spinning lock supplied by the arch environment.

    ``acquire`` may let other engine threads (and, under cosim, simulated time) run while it
    waits.  Locks carry the name of their class in the seed's lock-order tree, so the debug
    wrapper in :mod:`pyrmap.locking` can check the order.
    """
    name: str

    def acquire(self) -> None: ...
    def release(self) -> None: ...
    def trylock(self) -> bool: ...
    def is_locked(self) -> bool: ...
    def held_by_me(self) -> bool: ...
    def __enter__(self) -> "Lock": ...
    def __exit__(self, *exc) -> None: ...


class RwSem(Protocol):
    """A reader/writer semaphore (mmap_sem)."""
    name: str

    def down_read(self) -> None: ...
    def up_read(self) -> None: ...
    def down_write(self) -> None: ...
    def up_write(self) -> None: ...
    def down_read_trylock(self) -> bool: ...
    def is_locked(self) -> bool: ...
    def is_write_locked(self) -> bool: ...
    def held_by_me(self) -> bool: ...


class Arch(abc.ABC):
    """The arch interface the engine is written against.

    Subclasses provide every abstract method.  ``mem`` is the one physical memory that the
    engine and the (simulated) hardware share.
    """

    ncores: int

    # --- PTE access ------------------------------------------------------------------------

    @abc.abstractmethod
    def pte_load(self, ptep: int) -> int:
        """Read the PTE at physical address ``ptep`` (a single atomic 64-bit load)."""

    @abc.abstractmethod
    def set_pte_at(self, mm, addr: int, ptep: int, val: int) -> None:
        """Plain store of ``val``.  Legal only on a PTE that no TLB can cache: a non-present
        one, or one that was cleared and flushed.  Never on a live present PTE."""

    @abc.abstractmethod
    def ptep_get_and_clear(self, mm, addr: int, ptep: int) -> int:
        """Atomic exchange with 0; returns the last value any walker saw, A/D included.
        No TLB flush."""

    @abc.abstractmethod
    def ptep_test_and_clear_young(self, vma, addr: int, ptep: int) -> int:
        """Atomically clear A; return 1 if it was set.  No TLB flush."""

    @abc.abstractmethod
    def ptep_set_wrprotect(self, mm, addr: int, ptep: int) -> None:
        """Atomically clear W.  No TLB flush (the caller flushes)."""

    @abc.abstractmethod
    def cmpxchg(self, ptep: int, old: int, new: int) -> int:
        """Atomic compare-and-swap of a PTE; returns the value found (== old on success)."""

    # --- TLB flushes -----------------------------------------------------------------------

    @abc.abstractmethod
    def flush_tlb_page(self, vma, addr: int) -> None:
        """Invalidate (addr, asid of vma's mm) on every core in ``vm_mm.cpu_vm_mask``; returns
        after every core acknowledged."""

    @abc.abstractmethod
    def flush_tlb_range(self, vma, start: int, end: int) -> None:
        """Invalidate every page of [start, end) of vma's mm on every core that may cache it."""

    @abc.abstractmethod
    def flush_tlb_mm(self, mm) -> None:
        """Invalidate every non-global entry of mm's ASID on every core that may cache it."""

    @abc.abstractmethod
    def flush_tlb_all(self) -> None:
        """Invalidate everything on every core."""

    # --- Environment: locks, threads, yield points ----------------------------------------

    @abc.abstractmethod
    def new_lock(self, name: str) -> Lock:
        """A new lock of lock class ``name`` (e.g. "anon_vma->lock", "pte lock")."""

    @abc.abstractmethod
    def new_rwsem(self, name: str) -> RwSem:
        """A new reader/writer semaphore of lock class ``name`` (e.g. "mmap_sem")."""

    @abc.abstractmethod
    def yield_point(self, why: str = "") -> None:
        """A place where another engine thread may run (a scheduling decision under SoftArch,
        simulated time passing under cosim)."""

    @abc.abstractmethod
    def signal_pending(self) -> bool:
        """True when the current engine thread has a signal pending (mm_take_all_locks)."""

    @abc.abstractmethod
    def current_thread(self) -> str:
        """Name of the engine thread that is running."""

    @abc.abstractmethod
    def current_task(self):
        """The running engine thread's task: an object with ``name``, ``mm`` (the kernel's
        ``current->mm``, settable, None by default) and ``signal_pending`` (settable)."""

    # --- Address spaces on cores -----------------------------------------------------------

    @abc.abstractmethod
    def switch_mm(self, core: int, mm) -> None:
        """Make ``mm`` current on ``core`` (satp := asid, root); adds core to cpu_vm_mask."""

    @abc.abstractmethod
    def tlb_entries(self, core: int) -> Iterable[TlbEntry]:
        """The valid entries of ``core``'s TLB, for checkers (no side effects)."""

    # Optional hook for checkers: called with (event, **details) by the engine at points the
    # checkers care about (a frame freed, writeback started, ...).  Default: no-op.
    observer: Callable[..., None] | None = None

    def notify(self, event: str, **details) -> None:
        if self.observer is not None:
            self.observer(event, **details)
