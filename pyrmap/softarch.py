"""SoftArch: the golden MMU in Python, and the engine's environment (locks, threads).

SoftArch implements :class:`pyrmap.arch.Arch` with exactly the semantics the RTL ``Top`` has
(hdl/PORTS.md): N cores, each with satp, a TLB and a walker (:func:`pyrmap.walk.sv39_walk`),
per-core performance counters, and one device TLB (a secondary MMU without a walker).  It is
the fast mode of every engine test and the model cosim scoreboards compare the RTL against.

Atomicity: every PTE operation, walk, TLB operation and CPU access is atomic with respect to
every other (one internal lock; engine threads under a :class:`~pyrmap.sched.Scheduler` run one
at a time anyway).  Each of them is a yield point *before* it takes effect, so a seeded
scheduler interleaves engine threads between any two of them.

TLB rules (the RTL's):

* A hit is an entry that covers the VA (anywhere inside a 2 MiB / 1 GiB entry) and is global
  or tagged with satp.ASID.
* A hit serves the access only if the entry has A, grants it (R for a LOAD, W for a STORE, X
  for a FETCH; U for a U-mode access; an S-mode access to a U page needs SUM and is never a
  FETCH) and, for a STORE, has D.  Otherwise the entry is dropped and the access re-walks (the
  walk sets D, or faults under Svade or when the PTE forbids the access).
* Entries are filled only by successful walks and carry A and D from the final PTE value.
  Clearing A or D in memory does not change a cached entry until it is invalidated (stale but
  legal until the flush that ends it).
* Replacement: an invalid way first, else ``plru`` (tree pseudo-LRU per set, the same tree
  and bit convention as hdl/tlb.py), ``random`` (seeded Python RNG; the RTL's LFSR advances
  every cycle, so only ``plru`` and ``fifo`` match the RTL entry for entry) or ``fifo`` (round
  robin per set).  With more than one set, superpages go to a separate fully-associative
  array of ``superpage_entries`` entries.  A lookup updates the replacement state even when
  the hit cannot serve the access.

Observer events (:data:`pyrmap.arch.EVENTS`, only when an observer is set): ``tlb_fill``,
``tlb_inval``, ``tlb_flush``, ``cpu_access``, ``pte_write``, ``dev_access``, ``dev_fill``,
``dev_inval``, ``lock_release``.
"""

from __future__ import annotations

import collections
import random
import threading
from dataclasses import dataclass
from typing import Iterable, Optional

from .arch import (ARCH_COUNTERS, CORE_COUNTERS, DEVICE_COUNTERS, TIMED_COUNTERS, Arch,
                   InvalKind, PteWrite, TlbEntry)
from .locking import Deadlock, LockDep, SoftLock, SoftRwSem, lock_class
from .physmem import BusError, PhysMem
from .pte import (_PAGE_A, _PAGE_D, _PAGE_G, _PAGE_R, _PAGE_W, _PAGE_X, ASID_BITS_MAX,
                  LEVEL_SHIFT, LEVELS, PAGE_SHIFT, PAGE_SIZE, PPN_BITS, AccessType, FaultKind,
                  pte_pfn, va_canonical)
from .sched import Scheduler, Task
from .replacement import REPLACEMENT_POLICIES
from .walk import PERM_MASK, WalkResult, check_perm, sv39_walk

__all__ = ["SoftArch", "Tlb", "DeviceTlb", "AccessResult", "REPLACEMENTS",
           "FLUSH_RANGE_MAX_PAGES"]

REPLACEMENTS = tuple(REPLACEMENT_POLICIES)
#: The core counters an untimed model counts.
_CORE_COUNTERS = tuple(k for k in CORE_COUNTERS if k not in TIMED_COUNTERS)
#: flush_tlb_range invalidates page by page up to this many pages, else the whole ASID.
FLUSH_RANGE_MAX_PAGES = 32
_MASK64 = (1 << 64) - 1
_VA39 = (1 << 39) - 1


def _positive_int(what: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TypeError(f"{what} must be a positive integer, not {value!r}")
    return value


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _entry_vpn(vaddr: int, level: int) -> int:
    """va >> 12 aligned down to the page size of ``level`` (the TlbEntry.vpn convention)."""
    return ((vaddr & ((1 << 39) - 1)) >> LEVEL_SHIFT[level]) << (9 * level)


@dataclass
class AccessResult:
    """Outcome of a CPU access or translation.

    ``value`` is the loaded word for LOAD/FETCH (None for a STORE, a fault or a translation
    only); ``hit`` is True when served from the TLB without a walk; ``walk`` is the walk's
    result when there was one.
    """
    fault: FaultKind
    paddr: int
    value: Optional[int]
    hit: bool
    walk: Optional[WalkResult] = None


class _Array:
    """One set-associative array of TLB entries with its replacement state (the model
    implementation of the policy, :data:`pyrmap.replacement.REPLACEMENT_POLICIES`)."""

    def __init__(self, nsets: int, ways: int, replacement: str, rng: random.Random):
        self.nsets = nsets
        self.ways = ways
        self.replacement = replacement
        self.slots: list[list[Optional[TlbEntry]]] = [[None] * ways for _ in range(nsets)]
        self.young: list[list[bool]] = [[False] * ways for _ in range(nsets)]
        self.policy = REPLACEMENT_POLICIES[replacement].model(nsets, ways, rng)

    def touch(self, s: int, way: int) -> None:
        self.policy.touch(s, way)

    def victim(self, s: int) -> int:
        row = self.slots[s]
        for way, e in enumerate(row):
            if e is None:
                return way
        return self.policy.choose(s)

    def entries(self) -> Iterable[tuple[int, int, TlbEntry]]:
        for s, row in enumerate(self.slots):
            for way, e in enumerate(row):
                if e is not None:
                    yield s, way, e

    def remove(self, s: int, way: int) -> None:
        self.slots[s][way] = None
        self.young[s][way] = False


class Tlb:
    """A TLB with the RTL's organisation.

    Parameters
    ----------
    entries : int
        Entries of the main array.
    ways : int
        Ways per set; ``ways == entries`` is fully associative, ``ways == 1`` direct mapped.
    replacement : {"plru", "random", "fifo"}
    asid_bits : int
        0..16; with 0, ASID tags are ignored (every entry matches every ASID).
    superpage_entries : int
        Size of the fully-associative superpage array used when the main array has more than
        one set.
    rng : random.Random
        Drives ``random`` replacement.

    Raises
    ------
    TypeError, ValueError
        For parameters the RTL cannot be built with.
    """

    def __init__(self, entries: int = 8, ways: int = 8, replacement: str = "plru",
                 asid_bits: int = 9, superpage_entries: int = 4,
                 rng: Optional[random.Random] = None):
        _positive_int("TLB entries", entries)
        _positive_int("TLB ways", ways)
        if entries % ways:
            raise ValueError(f"TLB has {entries} entries, which is not a multiple of {ways} ways")
        nsets = entries // ways
        if not _is_pow2(nsets):
            raise ValueError(f"TLB has {nsets} sets ({entries} entries / {ways} ways), which is "
                             f"not a power of 2")
        if replacement not in REPLACEMENTS:
            raise ValueError(f"Replacement must be one of "
                             f"{', '.join(repr(r) for r in REPLACEMENTS)}, not {replacement!r}")
        policy = REPLACEMENT_POLICIES[replacement]
        if policy.pow2_ways and not _is_pow2(ways):
            raise ValueError(f"{policy.label} replacement needs a power-of-2 number of ways, "
                             f"not {ways}")
        if not isinstance(asid_bits, int) or isinstance(asid_bits, bool):
            raise TypeError(f"ASID bits must be an integer, not {asid_bits!r}")
        if not 0 <= asid_bits <= ASID_BITS_MAX:
            raise ValueError(f"ASID bits must be between 0 and {ASID_BITS_MAX}, not {asid_bits}")
        _positive_int("Superpage entries", superpage_entries)
        if nsets > 1 and policy.pow2_ways and not _is_pow2(superpage_entries):
            raise ValueError(f"{policy.label} replacement needs a power-of-2 number of "
                             f"superpage entries, not {superpage_entries}")
        self.entries_n = entries
        self.ways = ways
        self.nsets = nsets
        self.replacement = replacement
        self.asid_bits = asid_bits
        self.asid_mask = (1 << asid_bits) - 1
        self.rng = rng if rng is not None else random.Random(0)
        self.main = _Array(nsets, ways, replacement, self.rng)
        self.superpages = (_Array(1, superpage_entries, replacement, self.rng)
                           if nsets > 1 else None)

    def _arrays(self) -> list[_Array]:
        return [self.main] if self.superpages is None else [self.main, self.superpages]

    def _match(self, e: TlbEntry, vaddr: int, asid: int) -> bool:
        """``vaddr`` already cut to VA[38:0] (the RTL matches VA[38:12])."""
        return e.covers(vaddr) and (e.g or self.asid_bits == 0 or e.asid == asid & self.asid_mask)

    def lookup(self, vaddr: int, asid: int, *, touch: bool = True):
        """The first entry mapping ``vaddr`` for ``asid`` as (array, set, way, entry), or None.
        Updates the replacement state when ``touch``."""
        vaddr &= _VA39
        vpn = vaddr >> PAGE_SHIFT
        s = vpn & (self.nsets - 1)
        row = self.main.slots[s]
        for way, e in enumerate(row):
            if e is not None and self._match(e, vaddr, asid):
                if touch:
                    self.main.touch(s, way)
                return self.main, s, way, e
        arrays = [self.superpages] if self.superpages is not None else []
        for arr in arrays:
            for way, e in enumerate(arr.slots[0]):
                if e is not None and self._match(e, vaddr, asid):
                    if touch:
                        arr.touch(0, way)
                    return arr, 0, way, e
        return None

    def fill(self, entry: TlbEntry, drop=None) -> tuple[_Array, int, int]:
        """Install ``entry``.

        Without ``drop``: over an entry of the same page and address space if there is one,
        else in an invalid way, else over the replacement policy's victim.  With ``drop`` (a
        lookup result): the victim is chosen first, then the dropped entry is removed, then the
        new one written (the RTL does all three in one cycle)."""
        if entry.level > 0 and self.superpages is not None:
            arr, s = self.superpages, 0
        else:
            arr = self.main
            s = (entry.vpn & (self.nsets - 1)) if entry.level == 0 else 0
        way = None
        if drop is None:
            for w, e in enumerate(arr.slots[s]):
                if (e is not None and e.vpn == entry.vpn and e.level == entry.level
                        and (e.g or entry.g or e.asid == entry.asid)):
                    way = w
                    break
        if way is None:
            way = arr.victim(s)
        if drop is not None:
            drop[0].remove(drop[1], drop[2])
        arr.slots[s][way] = entry
        arr.young[s][way] = False
        arr.touch(s, way)
        return arr, s, way

    def inval(self, kind: InvalKind, vaddr: int = 0, asid: int = 0) -> int:
        """Remove the entries an SFENCE.VMA of ``kind`` removes; returns how many."""
        kind = InvalKind(kind)
        asid &= self.asid_mask
        vaddr &= _VA39
        removed = 0
        for arr in self._arrays():
            for s, way, e in list(arr.entries()):
                if kind == InvalKind.ALL:
                    hit = True
                elif kind == InvalKind.VA:
                    hit = e.covers(vaddr)
                elif kind == InvalKind.ASID:
                    hit = not e.g and (self.asid_bits == 0 or e.asid == asid)
                else:
                    hit = e.covers(vaddr) and (e.g or self.asid_bits == 0 or e.asid == asid)
                if hit:
                    arr.remove(s, way)
                    removed += 1
        return removed

    def valid_entries(self) -> list[TlbEntry]:
        return [e for arr in self._arrays() for _, _, e in arr.entries()]


def _make_entry(vaddr: int, asid: int, ppn: int, level: int, perm: int, g: bool, a: bool,
                d: bool, asid_mask: int) -> TlbEntry:
    return TlbEntry(vpn=_entry_vpn(vaddr, level), asid=asid & asid_mask, ppn=ppn, level=level,
                    perm=perm & PERM_MASK, g=bool(g), a=bool(a), d=bool(d))


class _Core:
    def __init__(self, index: int, tlb: Tlb):
        self.index = index
        self.tlb = tlb
        self.asid = 0
        self.root: Optional[int] = None
        self.mm = None
        self.perf: collections.Counter[str] = collections.Counter({k: 0 for k in _CORE_COUNTERS})


class DeviceTlb:
    """The secondary MMU's TLB (GRU-style: no walker; the host fills it on a MISS).

    Fully associative with ``entries`` entries and PLRU replacement; entries carry a young bit
    that a hit sets and the host tests and clears.  A LOAD needs R, a STORE W, a FETCH X in the
    entry's permissions (U is not checked: the device acts for the user); a non-canonical VA
    is a PAGE fault.  A miss answers MISS and raises the fault record (vaddr, asid, op) in
    :attr:`fault` unless one is already pending; :meth:`ack_fault` consumes it.  A fill first
    drops any entry mapping its (vaddr, asid), so it replaces rather than duplicates; a new
    entry is not young until an access hits it.
    """

    def __init__(self, entries: int = 8, asid_bits: int = 9, rng: Optional[random.Random] = None):
        _positive_int("Device TLB entries", entries)
        if not _is_pow2(entries):
            raise ValueError(f"Device TLB has {entries} entries, which is not a power of 2 "
                             f"(PLRU replacement)")
        self.tlb = Tlb(entries, entries, "plru", asid_bits, rng=rng)
        self.perf: collections.Counter[str] = collections.Counter({k: 0 for k in DEVICE_COUNTERS})
        self.fault: Optional[tuple[int, int, AccessType]] = None

    def ack_fault(self) -> Optional[tuple[int, int, AccessType]]:
        """Consume the pending fault record (vaddr, asid, op), or None."""
        rec, self.fault = self.fault, None
        return rec

    def access(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int]:
        op = AccessType(op)
        self.perf["lookups"] += 1
        found = self.tlb.lookup(vaddr, asid)        # the RTL looks up VA[38:12] regardless
        if not va_canonical(vaddr):
            return FaultKind.PAGE, 0
        if found is None:
            self.perf["misses"] += 1
            if self.fault is None:
                self.fault = (vaddr, asid, op)
            return FaultKind.MISS, 0
        arr, s, way, e = found
        self.perf["hits"] += 1
        need = {AccessType.LOAD: _PAGE_R, AccessType.STORE: _PAGE_W, AccessType.FETCH: _PAGE_X}[op]
        if not e.perm & need:
            return FaultKind.PAGE, 0
        arr.young[s][way] = True
        return FaultKind.NONE, (e.ppn << PAGE_SHIFT) + (vaddr & (LEVEL_SIZE_MASK[e.level]))

    def fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int, g: bool) -> TlbEntry:
        if not 0 <= level < LEVELS:
            raise ValueError(f"Level must be 0, 1 or 2, not {level!r}")
        if perm & ~PERM_MASK:
            raise ValueError(f"Device permissions {perm:#x} have bits outside R W X U "
                             f"(PTE bits 1..4)")
        if not 0 <= ppn < (1 << PPN_BITS):
            raise ValueError(f"PPN {ppn:#x} does not fit in {PPN_BITS} bits")
        if ppn & ((1 << (9 * level)) - 1):
            raise ValueError(f"PPN {ppn:#x} is not aligned to a level-{level} page")
        entry = _make_entry(vaddr, asid, ppn, level, perm, g, True, bool(perm & _PAGE_W),
                            self.tlb.asid_mask)
        self.tlb.fill(entry, drop=self.tlb.lookup(vaddr, asid))
        self.perf["fills"] += 1
        return entry

    def young(self, vaddr: int, asid: int) -> bool:
        found = self.tlb.lookup(vaddr, asid)
        if found is None:
            return False
        arr, s, way, _ = found
        old = arr.young[s][way]
        arr.young[s][way] = False
        if old:
            self.perf["young_clears"] += 1
        return old

    def inval(self, kind: InvalKind, vaddr: int = 0, asid: int = 0) -> int:
        self.perf["invals"] += 1
        return self.tlb.inval(kind, vaddr, asid)

    def entries(self) -> list[TlbEntry]:
        """Valid entries; ``a`` is the young bit, ``d`` is W (a device store needs only W)."""
        out = []
        for arr in self.tlb._arrays():
            for s, way, e in arr.entries():
                out.append(TlbEntry(e.vpn, e.asid, e.ppn, e.level, e.perm, e.g,
                                    arr.young[s][way], e.d))
        return out


LEVEL_SIZE_MASK = tuple((1 << s) - 1 for s in LEVEL_SHIFT)


class SoftArch(Arch):
    """The golden MMU and the engine environment.

    Parameters
    ----------
    mem : PhysMem
        The physical memory shared with the engine.
    ncores : int
        Cores, each with satp, a TLB, a walker and counters.
    seed : int
        Seeds random TLB replacement.
    svadu : bool
        Hardware A/D updates (else Svade: A/D faults).
    tlb_entries, tlb_ways, replacement, asid_bits, superpage_entries :
        The per-core TLB (see :class:`Tlb`).
    dev_entries : int
        Entries of the device TLB (:attr:`dev`).
    sched : Scheduler, optional
        Interleaves engine threads; every PTE operation, flush, CPU access and lock operation
        is a yield point.  Settable later (``arch.sched = Scheduler(seed)``).
    lockdep : bool
        Check the lock order (:mod:`pyrmap.locking`).
    history : bool
        Keep the last ``history_depth`` values written to each PTE, with who wrote them.

    Raises
    ------
    TypeError, ValueError
        For parameters the RTL cannot be built with.
    """

    def __init__(self, mem: PhysMem, ncores: int = 2, *, seed: int = 0, svadu: bool = True,
                 tlb_entries: int = 8, tlb_ways: int = 8, replacement: str = "plru",
                 asid_bits: int = 9, dev_entries: int = 8, superpage_entries: int = 4,
                 sched: Optional[Scheduler] = None, lockdep: bool = True,
                 history: bool = False, history_depth: int = 16):
        if not isinstance(mem, PhysMem):
            raise TypeError(f"Memory must be a PhysMem, not {mem!r}")
        _positive_int("Core count", ncores)
        if not isinstance(seed, int):
            raise TypeError(f"Seed must be an integer, not {seed!r}")
        if sched is not None and not isinstance(sched, Scheduler):
            raise TypeError(f"Scheduler must be a Scheduler, not {sched!r}")
        _positive_int("History depth", history_depth)
        super().__init__(mem, ncores, svadu=svadu, asid_bits=asid_bits)
        self.seed = seed
        self.rng = random.Random(seed)
        self.cores = [_Core(i, Tlb(tlb_entries, tlb_ways, replacement, asid_bits,
                                   superpage_entries, rng=self.rng))
                      for i in range(ncores)]
        self.dev = DeviceTlb(dev_entries, asid_bits, rng=self.rng)
        self.sched = sched
        self._lockdep: Optional[LockDep] = LockDep() if lockdep else None
        self.stats: collections.Counter[str] = collections.Counter()
        self.history: Optional[dict[int, collections.deque]] = {} if history else None
        self.history_depth = history_depth
        self._atomic = threading.RLock()
        self._main_task = Task(None, "main", None)
        #: Injected bus errors on the walks' memory reads and CASes
        #: (a :class:`pyrmap.faults.FaultInjector`, kind ``bus_error``), or None.
        self.faults = None

    # --- environment -------------------------------------------------------------------------

    @property
    def lockdep(self) -> Optional[LockDep]:
        return self._lockdep

    def cycle(self) -> int:
        """SoftArch is untimed: always 0."""
        return 0

    def current_task(self) -> Task:
        """The running engine thread's task (``name``, ``mm``, ``signal_pending``); outside a
        scheduler, one "main" task."""
        if self.sched is not None:
            task = self.sched.current()
            if task is not None:
                return task
        return self._main_task

    def current_thread(self) -> str:
        return self.current_task().name

    def signal_pending(self) -> bool:
        return bool(self.current_task().signal_pending)

    def yield_point(self, why: str = "") -> None:
        if self.sched is not None:
            self.sched.yield_point(why)

    def new_lock(self, name: str) -> SoftLock:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Lock class name must be a non-empty string, not {name!r}")
        return SoftLock(self, name, any_thread_may_release=lock_class(name) == "PG_locked")

    def new_rwsem(self, name: str) -> SoftRwSem:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Lock class name must be a non-empty string, not {name!r}")
        return SoftRwSem(self, name)

    def lock_block(self, lock, why: str) -> None:
        if self.sched is not None and self.sched.current() is not None:
            self.sched.block(lock, why)
            return
        raise Deadlock(f"Thread {self.current_thread()!r} blocks on {lock.name!r} ({why}), "
                       f"{lock.holders()}, and no scheduler runs the holder")

    def lock_wake(self, lock) -> None:
        if self.observer is not None:
            self.notify("lock_release", lock=lock.name, thread=self.current_thread())
        if self.sched is not None:
            self.sched.wake(lock)

    # --- PTE access ----------------------------------------------------------------------------

    def _record(self, ptep: int, old: int, new: int, who: str) -> None:
        if self.history is not None:
            h = self.history.get(ptep)
            if h is None:
                h = self.history[ptep] = collections.deque(maxlen=self.history_depth)
            h.append(PteWrite(new, who))
        if self.observer is not None:
            self.notify("pte_write", ptep=ptep, old=old, new=new, who=who)

    def pte_history(self, ptep: int) -> list[PteWrite]:
        """The last values written to the PTE at ``ptep``, oldest first."""
        if self.history is None:
            return []
        return list(self.history.get(ptep, ()))

    def describe_history(self, ptep: int) -> str:
        """The PTE's recent writes, one per line, for violation messages."""
        from .pte import describe
        lines = [f"  {describe(w.value):<40} by {w.who}" for w in self.pte_history(ptep)]
        if not lines:
            return (f"  (no history of PTE 0x{ptep:09x}"
                    f"{'' if self.history is not None else ': SoftArch(history=True)'})")
        return f"writes to PTE 0x{ptep:09x}, oldest first:\n" + "\n".join(lines)

    def _sw(self, what: str) -> str:
        return f"sw {what} thread {self.current_thread()}"

    def pte_load(self, ptep: int) -> int:
        self.yield_point("pte_load")
        with self._atomic:
            return self.mem.read(ptep)

    def set_pte_at(self, mm, addr: int, ptep: int, val: int) -> None:
        self.yield_point("set_pte_at")
        with self._atomic:
            old = self.mem.read(ptep)
            self.mem.write(ptep, val)
            self._record(ptep, old, val, self._sw("set_pte_at"))

    def ptep_get_and_clear(self, mm, addr: int, ptep: int) -> int:
        self.yield_point("ptep_get_and_clear")
        with self._atomic:
            old = self.mem.read(ptep)
            self.mem.write(ptep, 0)
            self._record(ptep, old, 0, self._sw("xchg"))
            return old

    def ptep_test_and_clear_young(self, vma, addr: int, ptep: int) -> int:
        self.yield_point("ptep_test_and_clear_young")
        with self._atomic:
            old = self.mem.read(ptep)
            if not old & _PAGE_A:
                return 0
            self.mem.write(ptep, old & ~_PAGE_A)
            self._record(ptep, old, old & ~_PAGE_A, self._sw("test_and_clear_young"))
            return 1

    def ptep_set_wrprotect(self, mm, addr: int, ptep: int) -> None:
        self.yield_point("ptep_set_wrprotect")
        with self._atomic:
            old = self.mem.read(ptep)
            if old & _PAGE_W:
                self.mem.write(ptep, old & ~_PAGE_W)
                self._record(ptep, old, old & ~_PAGE_W, self._sw("wrprotect"))

    def cmpxchg(self, ptep: int, old: int, new: int) -> int:
        self.yield_point("cmpxchg")
        with self._atomic:
            found = self.mem.read(ptep)
            if found == old:
                self.mem.write(ptep, new)
                self._record(ptep, found, new, self._sw("cmpxchg"))
            return found

    # --- cores -----------------------------------------------------------------------------------

    def _core(self, core: int) -> _Core:
        if not isinstance(core, int) or not 0 <= core < self.ncores:
            raise ValueError(f"Core must be 0..{self.ncores - 1}, not {core!r}")
        return self.cores[core]

    def switch_mm(self, core: int, mm) -> None:
        """satp := (mm.asid, mm.pgd) on ``core``; the core joins ``mm.cpu_vm_mask``.

        The core stays in the previous mm's mask: with ASIDs its entries survive the switch,
        so flushes of that mm must still reach it."""
        c = self._core(core)
        if mm is None:
            c.asid, c.root, c.mm = 0, None, None
            return
        if self.asid_bits and mm.asid >> self.asid_bits:
            raise ValueError(f"ASID {mm.asid} does not fit in {self.asid_bits} ASID bits")
        c.asid = mm.asid & ((1 << self.asid_bits) - 1)
        c.root = mm.pgd
        c.mm = mm
        mm.cpu_vm_mask.add(core)

    def set_satp(self, core: int, asid: int, root: Optional[int]) -> None:
        """Write satp directly (no mm): for tests of the MMU alone."""
        c = self._core(core)
        if self.asid_bits and asid >> self.asid_bits:
            raise ValueError(f"ASID {asid} does not fit in {self.asid_bits} ASID bits")
        c.asid, c.root, c.mm = asid, root, None

    def satp(self, core: int) -> tuple[int, Optional[int]]:
        c = self._core(core)
        return c.asid, c.root

    def perf(self, core: int) -> dict[str, int]:
        """The core's performance counters (the RTL's ``perf`` ports, minus walk_cycles)."""
        return dict(self._core(core).perf)

    def dev_perf(self) -> dict[str, int]:
        return dict(self.dev.perf)

    def counters(self) -> dict[str, int]:
        return {k: self.stats[k] for k in ARCH_COUNTERS}

    def tlb_entries(self, core: int) -> list[TlbEntry]:
        return self._core(core).tlb.valid_entries()

    def _hw_cas(self, core: int):
        who = f"hw-cas core{core}"

        def cas(paddr: int, old: int, new: int) -> int:
            found = self._hw_read(paddr)
            if found == old:
                self.mem.write(paddr, new)
                self._record(paddr, found, new, who)
            return found
        return cas

    def _hw_read(self, paddr: int) -> int:
        """A walk's read of memory: a bus error when ``faults`` injects one."""
        if self.faults is not None and self.faults.fail("bus_error"):
            raise BusError(paddr)
        return self.mem.read(paddr)

    def _translate(self, c: _Core, vaddr: int, op: AccessType, user: bool,
                   sum: bool, mxr: bool = False) -> AccessResult:
        if c.root is None:
            raise RuntimeError(f"Core {c.index} has no address space (call switch_mm first)")
        perf = c.perf
        perf["lookups"] += 1
        vaddr &= _MASK64
        found = c.tlb.lookup(vaddr, c.asid)         # the RTL looks up VA[38:12] regardless
        if found is not None:
            arr, s, way, e = found
            if (va_canonical(vaddr) and e.a
                    and check_perm(e.perm, op, user=user, sum=sum, mxr=mxr)
                    and (op != AccessType.STORE or e.d)):
                perf["hits"] += 1
                paddr = (e.ppn << PAGE_SHIFT) + (vaddr & LEVEL_SIZE_MASK[e.level])
                return AccessResult(FaultKind.NONE, paddr, None, True)
            # A hit that cannot serve the access (a store to a clean entry, a permission the
            # entry lacks) is dropped and re-walked, as the RTL does.
            arr.remove(s, way)
        perf["misses"] += 1
        perf["walks"] += 1
        w = sv39_walk(self._hw_read, self._hw_cas(c.index), vaddr, op, user=user, sum=sum,
                      root=c.root, svadu=self.svadu, mxr=mxr)
        perf["cas_retries"] += w.cas_retries
        perf["a_sets"] += w.a_set
        perf["d_sets"] += w.d_set
        if not w.ok:
            return AccessResult(w.fault, 0, None, False, w)
        pte = w.pte
        entry = _make_entry(vaddr, c.asid, pte_pfn(pte), w.level, pte & PERM_MASK,
                            bool(pte & _PAGE_G), bool(pte & _PAGE_A), bool(pte & _PAGE_D),
                            c.tlb.asid_mask)
        c.tlb.fill(entry)
        if self.observer is not None:
            self.notify("tlb_fill", core=c.index, entry=entry)
        return AccessResult(FaultKind.NONE, w.paddr, None, False, w)

    def translate(self, core: int, vaddr: int, op: AccessType, *, user: bool = True,
                  sum: bool = False, mxr: bool = False) -> AccessResult:
        """Translate as the core's MMU does (TLB, then walk and fill), without a data access.
        ``sum`` and ``mxr`` are sstatus.SUM and mstatus.MXR."""
        c = self._core(core)
        op = AccessType(op)
        self.yield_point(f"translate core{core}")
        with self._atomic:
            return self._translate(c, vaddr, op, user, sum, mxr)

    def cpu_access(self, core: int, vaddr: int, op: AccessType, *, user: bool = True,
                   sum: bool = False, data: Optional[int] = None,
                   mxr: bool = False) -> AccessResult:
        """Translate ``vaddr`` on ``core`` and access the 8-byte word at ``vaddr & ~7``.

        A STORE writes ``data``; LOAD and FETCH return the word in ``value``.  Translation and
        data access are one atomic step.  A bus error on the data access is an ACCESS fault.
        """
        c = self._core(core)
        op = AccessType(op)
        if op == AccessType.STORE:
            if not isinstance(data, int):
                raise TypeError(f"A store needs integer data, not {data!r}")
        elif data is not None:
            raise TypeError(f"Only a store takes data, not a {op.name}")
        self.yield_point(f"cpu_access core{core} {op.name}")
        with self._atomic:
            res = self._translate(c, vaddr, op, user, sum, mxr)
            if res.fault == FaultKind.NONE:
                word = res.paddr & ~7
                try:
                    if op == AccessType.STORE:
                        self.mem.write(word, data)
                    else:
                        res.value = self.mem.read(word)
                except BusError:
                    res.fault = FaultKind.ACCESS
                    res.value = None
            if self.observer is not None:
                if res.walk is not None:
                    for ptep, _ in res.walk.reads:
                        self.notify("walk_read", core=core, ptep=ptep)
                self.notify("cpu_access", core=core, mm=c.mm, vaddr=vaddr, op=op, result=res)
            return res

    def inval(self, core: int, kind: InvalKind, vaddr: int = 0, asid: int = 0) -> int:
        """One invalidation request on ``core`` (an SFENCE.VMA of ``kind``); returns the number
        of entries removed.  Walks are atomic here, so none is ever restarted."""
        c = self._core(core)
        kind = InvalKind(kind)
        with self._atomic:
            c.perf["invals"] += 1
            removed = c.tlb.inval(kind, vaddr, asid)
            self.stats["inval_requests"] += 1
            self.stats["entries_invalidated"] += removed
            if self.observer is not None:
                self.notify("tlb_inval", core=core, kind=kind, vaddr=vaddr, asid=asid,
                            removed=removed)
            return removed

    # --- TLB flushes ---------------------------------------------------------------------------

    def _targets(self, mm) -> list[int]:
        return sorted(i for i in mm.cpu_vm_mask if 0 <= i < self.ncores)

    def _flushed(self, what: str, cores) -> None:
        if not cores:
            return
        self.stats["flushes_driven"] += 1
        if self.observer is not None:
            self.notify("tlb_flush", what=what, cycles=0)

    def flush_tlb_page(self, vma, addr: int) -> None:
        self.yield_point("flush_tlb_page")
        mm = vma.vm_mm
        with self._atomic:
            self.stats["flush_tlb_page"] += 1
            for core in self._targets(mm):
                self.inval(core, InvalKind.VA_ASID, addr, mm.asid)
            self._flushed("page", self._targets(mm))

    def flush_tlb_range(self, vma, start: int, end: int) -> None:
        self.yield_point("flush_tlb_range")
        mm = vma.vm_mm
        with self._atomic:
            self.stats["flush_tlb_range"] += 1
            start &= ~(PAGE_SIZE - 1)
            npages = max(0, (end - start + PAGE_SIZE - 1) >> PAGE_SHIFT)
            for core in self._targets(mm):
                if npages > FLUSH_RANGE_MAX_PAGES:
                    self.inval(core, InvalKind.ASID, 0, mm.asid)
                else:
                    for i in range(npages):
                        self.inval(core, InvalKind.VA_ASID, start + i * PAGE_SIZE, mm.asid)
            self._flushed("range", self._targets(mm))

    def flush_tlb_mm(self, mm) -> None:
        self.yield_point("flush_tlb_mm")
        with self._atomic:
            self.stats["flush_tlb_mm"] += 1
            for core in self._targets(mm):
                self.inval(core, InvalKind.ASID, 0, mm.asid)
            self._flushed("mm", self._targets(mm))

    def flush_tlb_all(self) -> None:
        self.yield_point("flush_tlb_all")
        with self._atomic:
            self.stats["flush_tlb_all"] += 1
            for core in range(self.ncores):
                self.inval(core, InvalKind.ALL)
            self._flushed("all", range(self.ncores))

    # --- device TLB ----------------------------------------------------------------------------

    def dev_access(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int]:
        """A device access: (NONE, paddr), (PAGE, 0) when the entry lacks the permission, or
        (MISS, 0) with the fault record raised in ``dev.fault`` (if none was pending)."""
        self.yield_point("dev_access")
        with self._atomic:
            fault, paddr = self.dev.access(vaddr, op, asid)
            if self.observer is not None:
                self.notify("dev_access", vaddr=vaddr, op=AccessType(op), asid=asid,
                            fault=fault, paddr=paddr)
            return fault, paddr

    def dev_ack_fault(self) -> Optional[tuple[int, int, AccessType]]:
        """Consume the device's pending fault record (vaddr, asid, op), or None."""
        with self._atomic:
            return self.dev.ack_fault()

    def dev_fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int,
                 g: bool = False) -> TlbEntry:
        """Install a device TLB entry (perm: R W X U in PTE bit positions 1..4)."""
        self.yield_point("dev_fill")
        with self._atomic:
            entry = self.dev.fill(vaddr, asid, ppn, level, perm, g)
            if self.observer is not None:
                self.notify("dev_fill", entry=entry)
            return entry

    def dev_young(self, vaddr: int, asid: int) -> bool:
        """Test and clear the young bit of the device entry mapping (vaddr, asid)."""
        self.yield_point("dev_young")
        with self._atomic:
            return self.dev.young(vaddr, asid)

    def dev_inval(self, kind: InvalKind, vaddr: int = 0, asid: int = 0) -> int:
        self.yield_point("dev_inval")
        with self._atomic:
            removed = self.dev.inval(InvalKind(kind), vaddr, asid)
            if self.observer is not None:
                self.notify("dev_inval", kind=InvalKind(kind), vaddr=vaddr, asid=asid,
                            removed=removed)
            return removed

    def dev_entries(self) -> list[TlbEntry]:
        return self.dev.entries()
