"""The one seam between the engine and the MMU, declared whole and split by role.

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

The seam has four roles, each an abstract class here, and :class:`Arch` is all four:

* :class:`PteOps` and :class:`Environment`: PTE operations, TLB flushes, locks, threads and
  yield points -- what the engine calls;
* :class:`CpuPort`: a core's address space (``switch_mm``, ``satp``) and its accesses
  (``cpu_access``) -- what CPU workloads call;
* :class:`DevicePort`: the secondary MMU's TLB (``dev_access``, ``dev_fill``, ``dev_young``,
  ``dev_inval``, ``dev_entries``, ``dev_ack_fault``) -- what the secondary-MMU driver calls;
* :class:`Inspection`: TLB entries, the PTE history (:class:`PteWrite` records), counters
  (names in :data:`ARCH_COUNTERS`, :data:`CORE_COUNTERS`, :data:`DEVICE_COUNTERS`) --
  what checkers and reports read.

An implementation that lacks one of these methods cannot be constructed (``TypeError``).
The attributes every arch has -- ``mem``, ``ncores``, ``svadu``, ``asid_bits`` -- are set by
:meth:`Arch.__init__`; ``lockdep`` is an abstract property.  The events the engine reports
through :meth:`Arch.notify` are declared once, in :data:`EVENTS`.

Ordering contract shared by both implementations: every operation below is atomic with
respect to the hardware walkers (a walker's A/D compare-and-swap either sees the value before
the operation or after it, never a mix), and every flush returns only when no TLB entry that
matches it exists on any targeted core *and* no walk that began before the flush can still
install its result.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Protocol


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


#: Counters of the arch's own operations (:meth:`Inspection.counters`): calls of each
#: flush_tlb_*, the flushes that reached at least one core and the cycles they took (0 on an
#: untimed arch), invalidation requests sent to cores, entries they removed (0 when the
#: hardware does not count them).
ARCH_COUNTERS = ("flush_tlb_page", "flush_tlb_range", "flush_tlb_mm", "flush_tlb_all",
                 "flushes_driven", "flush_cycles", "inval_requests", "entries_invalidated")
#: A core MMU's performance counters (the RTL's ``cpu{i}__perf__*`` ports, :meth:`Inspection.perf`).
CORE_COUNTERS = ("lookups", "hits", "misses", "walks", "walk_cycles", "a_sets", "d_sets",
                 "cas_retries", "invals", "squashed", "walk_mem")
#: Core counters only a timed MMU counts (an untimed model reports the others):
#: ``walk_mem`` counts the walker's memory requests (PTE reads and A/D compare-and-swaps,
#: those of walks restarted by an invalidation included).
TIMED_COUNTERS = ("walk_cycles", "walk_mem")
#: The device TLB's performance counters (``dev__perf__*``, :meth:`Inspection.dev_perf`).
DEVICE_COUNTERS = ("lookups", "hits", "misses", "fills", "invals", "young_clears")


@dataclass(frozen=True)
class Event:
    """An event the engine or the arch reports through :meth:`Arch.notify`: its name, the
    keyword details it carries, and what it means."""
    name: str
    fields: tuple[str, ...]
    doc: str
    #: ``fields`` as a set, for :meth:`Arch.notify`'s check of every event's details.
    field_set: frozenset = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "field_set", frozenset(self.fields))


#: Every event :meth:`Arch.notify` accepts, by name.  Observers (checkers, studies) match on
#: these names; :meth:`Arch.notify` refuses any other name.
EVENTS: dict[str, Event] = {e.name: e for e in (
    Event("frame_alloc", ("pfn",), "the frame allocator handed out frame pfn"),
    Event("frame_free", ("pfn", "page"), "frame pfn went back to the allocator"),
    Event("writeback_start", ("pfn", "page"), "writeback of page began (its contents are copied)"),
    Event("writeback_end", ("pfn", "page"), "writeback of page finished"),
    Event("swap_writepage", ("pfn", "entry"), "page was written to swap entry"),
    Event("cow_copy", ("mm", "address", "old_pfn", "new_pfn"),
          "a copy-on-write fault copied old_pfn to new_pfn for address of mm"),
    Event("page_referenced_start", ("page", "mapped"),
          "page_referenced began on page (mapped: it had PTEs)"),
    Event("page_referenced_end", ("page", "referenced"),
          "page_referenced returned referenced"),
    Event("try_to_unmap_start", ("page", "migration"), "try_to_unmap began"),
    Event("try_to_unmap_end", ("page", "migration", "result"),
          "try_to_unmap returned result (SWAP_SUCCESS, SWAP_AGAIN, SWAP_FAIL)"),
    Event("reclaim_unmapped", ("page",),
          "shrink_page_list unmapped a page that was mapped when it took it"),
    Event("clear_flush_young_start", ("vma", "address"), "ptep_clear_flush_young began"),
    Event("clear_flush_young_end", ("vma", "address", "young", "flushed"),
          "ptep_clear_flush_young returned young; flushed: it flushed the TLBs"),
    Event("tlb_flush", ("what", "cycles"),
          "a flush_tlb_* returned after cycles (0 on an untimed arch)"),
    Event("pte_write", ("ptep", "old", "new", "who"), "a PTE changed (software or hardware)"),
    Event("tlb_fill", ("core", "entry"), "a core TLB installed entry"),
    Event("tlb_inval", ("core", "kind", "vaddr", "asid", "removed"),
          "a core TLB invalidation request completed (removed: entries it removed, -1 where "
          "that is not known: the RTL)"),
    Event("walk_read", ("core", "ptep"),
          "a hardware page walk of core read the page-table entry at ptep"),
    Event("cpu_access", ("core", "mm", "vaddr", "op", "result"),
          "a CPU access completed or faulted (result: an AccessResult)"),
    Event("dev_access", ("vaddr", "op", "asid", "fault", "paddr"), "a device access"),
    Event("dev_fill", ("entry",), "the device TLB installed entry"),
    Event("returned", ("op", "kind", "mm", "start", "end", "page"),
          "an operation that promises its TLBs agree with the PTEs returned: op (try_to_unmap, "
          "page_mkclean, migration: page; munmap, mprotect, zap_page_range, fork: mm and "
          "[start, end); exit: mm); kind unmap, wrprotect or exit"),
    Event("dev_inval", ("kind", "vaddr", "asid", "removed"), "a device invalidation"),
    Event("lock_release", ("lock", "thread"),
          "thread released a lock of class lock (window coverage: a pte lock drop)"),
)}


@dataclass(frozen=True)
class PteWrite:
    """One remembered write to a PTE (:meth:`Inspection.pte_history`).

    ``value`` is the value written, ``who`` the writer (an engine thread and its operation,
    or a core's walker), ``op`` the kind of write; ``cycle`` and ``seq`` (the memory
    transaction's number) when the arch is timed, else None.
    """
    value: int
    who: str
    op: str = ""
    cycle: Optional[int] = None
    seq: Optional[int] = None

    def __str__(self) -> str:
        from .pte import describe
        where = "".join((f"#{self.seq} " if self.seq is not None else "",
                         f"cycle {self.cycle} " if self.cycle is not None else ""))
        op = f" {self.op}" if self.op else ""
        return f"{where}{self.who}{op}: {describe(self.value)}"


class PteOps(abc.ABC):
    """PTE operations and TLB flushes: what the engine changes the page tables with."""

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


class Environment(abc.ABC):
    """Locks, threads and yield points: the environment engine code runs in (the
    :class:`pyrmap.locking.LockEnv` of its locks)."""

    @property
    @abc.abstractmethod
    def lockdep(self):
        """The :class:`pyrmap.locking.LockDep` checking the lock order, or None."""

    @abc.abstractmethod
    def new_lock(self, name: str) -> Lock:
        """A new lock of lock class ``name`` (e.g. "anon_vma->lock", "pte lock")."""

    @abc.abstractmethod
    def new_rwsem(self, name: str) -> RwSem:
        """A new reader/writer semaphore of lock class ``name`` (e.g. "mmap_sem")."""

    @abc.abstractmethod
    def lock_block(self, lock, why: str) -> None:
        """Wait until ``lock`` may have been released (the caller re-checks); raise
        :class:`pyrmap.locking.Deadlock` when no other thread can ever release it."""

    @abc.abstractmethod
    def lock_wake(self, lock) -> None:
        """``lock`` was released: threads blocked on it may re-check."""

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

    @abc.abstractmethod
    def cycle(self) -> int:
        """The current clock cycle of the hardware (always 0 on an untimed arch)."""


class CpuPort(abc.ABC):
    """The cores: their address space (satp) and their accesses."""

    @abc.abstractmethod
    def switch_mm(self, core: int, mm) -> None:
        """Make ``mm`` current on ``core`` (satp := asid, root); adds core to cpu_vm_mask."""

    @abc.abstractmethod
    def satp(self, core: int) -> Optional[tuple[int, Optional[int]]]:
        """``(asid, root pfn)`` of ``core``."""

    @abc.abstractmethod
    def set_satp(self, core: int, asid: int, root: Optional[int]) -> None:
        """Write satp directly (no mm): for tests of the MMU alone."""

    @abc.abstractmethod
    def cpu_access(self, core: int, vaddr: int, op, *, user: bool = True, sum: bool = False,
                   data: Optional[int] = None):
        """Translate ``vaddr`` on ``core`` and access the 8-byte word at ``vaddr & ~7`` (a
        STORE writes ``data``); returns a :class:`pyrmap.softarch.AccessResult` (``fault``,
        ``paddr``, ``value``, ``hit``).  No fault handling."""


class DevicePort(abc.ABC):
    """The secondary MMU (a TLB without a walker, filled by the host on a MISS)."""

    @abc.abstractmethod
    def dev_access(self, vaddr: int, op, asid: int):
        """A device access: ``(FaultKind, paddr)``; a MISS raises the fault record."""

    @abc.abstractmethod
    def dev_ack_fault(self):
        """Consume the pending fault record ``(vaddr, asid, op)``, or None."""

    @abc.abstractmethod
    def dev_fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int,
                 g: bool = False):
        """Install a device TLB entry (perm: R W X U in PTE bit positions 1..4)."""

    @abc.abstractmethod
    def dev_young(self, vaddr: int, asid: int) -> bool:
        """Test and clear the young bit of the device entry mapping (vaddr, asid)."""

    @abc.abstractmethod
    def dev_inval(self, kind: InvalKind, vaddr: int = 0, asid: int = 0) -> int:
        """One device invalidation; returns after the ack (the number of entries removed, or
        0 when the hardware does not count them)."""

    @abc.abstractmethod
    def dev_entries(self) -> list[TlbEntry]:
        """The valid device TLB entries (``a`` is the young bit), no side effects."""


class Inspection(abc.ABC):
    """What checkers and reports read: TLB entries, PTE histories, counters."""

    @abc.abstractmethod
    def tlb_entries(self, core: int) -> Iterable[TlbEntry]:
        """The valid entries of ``core``'s TLB, for checkers (no side effects)."""

    @abc.abstractmethod
    def pte_history(self, ptep: int) -> list[PteWrite]:
        """The remembered writes to the PTE at ``ptep``, oldest first (empty when the arch
        keeps no history)."""

    @abc.abstractmethod
    def counters(self) -> dict[str, int]:
        """The arch's own operation counts, keyed by every name of :data:`ARCH_COUNTERS`."""

    @abc.abstractmethod
    def perf(self, core: int) -> dict[str, int]:
        """``core``'s MMU counters, keyed by :data:`CORE_COUNTERS` (an untimed arch leaves out
        :data:`TIMED_COUNTERS`)."""

    @abc.abstractmethod
    def dev_perf(self) -> dict[str, int]:
        """The device TLB's counters, keyed by :data:`DEVICE_COUNTERS`."""


class Arch(PteOps, Environment, CpuPort, DevicePort, Inspection):
    """The arch interface the engine is written against: every role of the seam.

    Parameters
    ----------
    mem : pyrmap.physmem.PhysMem
        The one physical memory that the engine and the (simulated) hardware share.
    ncores : int
        Cores, each with satp, a TLB and a walker.
    svadu : bool
        Hardware A/D updates (Svadu); False: Svade, the fault handler sets A/D.
    asid_bits : int
        ASID bits of the TLBs (0..16).

    Raises
    ------
    TypeError
        A subclass lacks a method of the seam (raised by ``abc`` at construction), or a
        parameter has the wrong type.
    """

    #: The observer of :data:`EVENTS` (``observer(event, **details)``); None: no one listens.
    observer: Callable[..., None] | None = None

    def __init__(self, mem, ncores: int, *, svadu: bool, asid_bits: int):
        if not isinstance(ncores, int) or isinstance(ncores, bool) or ncores <= 0:
            raise TypeError(f"Core count must be a positive integer, not {ncores!r}")
        if not isinstance(asid_bits, int) or isinstance(asid_bits, bool):
            raise TypeError(f"ASID bits must be an integer, not {asid_bits!r}")
        self.mem = mem
        self.ncores = ncores
        self.svadu = bool(svadu)
        self.asid_bits = asid_bits

    def notify(self, event: str, **details) -> None:
        """Report ``event`` (a name of :data:`EVENTS`) to the observer.

        Raises
        ------
        ValueError
            ``event`` is not declared in :data:`EVENTS`, or (with an observer) its details
            are not the declared fields.
        """
        spec = EVENTS.get(event)
        if spec is None:
            raise ValueError(f"Event {event!r} is not one of the declared events "
                             f"({', '.join(EVENTS)})")
        if self.observer is not None:
            if details.keys() != spec.field_set:
                raise ValueError(f"Event {event!r} carries {', '.join(spec.fields)}, not "
                                 f"{', '.join(details)}")
            self.observer(event, **details)
