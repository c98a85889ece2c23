"""The secondary-MMU device driver: a GRU-style device TLB kept coherent through mmu notifiers.

:class:`DeviceMmuDriver` is the host driver of a device that accesses a process's memory
through its own TLB (the DeviceMmu: a TLB without a walker).  It is an
:class:`~pyrmap.mmu_notifier.MmuNotifier` registered on the process's mm, and it never pins a
page: the notifiers tell it to drop a translation before the page can be freed, swapped,
migrated or write-protected.

The fault path (:meth:`DeviceMmuDriver.device_fault`), KVM's protocol of e930bffe95e1::

    s = seq                            # sample before resolving
    down_read(mmap_sem); pte = walk(mm, va); up_read(mmap_sem)
    if pte absent or lacks the permission:
        do_page_fault(mm, va, op)      # fault it in through the engine (get_user_pages)
        retry
    lock(mmu_lock)
    if count != 0 or seq != s:         # an invalidation ran or is running: refuse the fill
        unlock(mmu_lock); retry
    dev_fill(va, pfn, perm)            # the device TLB entry, installed under mmu_lock
    unlock(mmu_lock)

The callbacks (each under ``mmu_lock``, each returning after the device acknowledged):

``invalidate_page``
    ``seq += 1``, then the device invalidation of the page; a page the device could write is
    marked dirty (the device never sets D in the primary PTE).
``invalidate_range_start`` / ``invalidate_range_end``
    start: ``count += 1`` and the device invalidation of the range; end: ``seq += 1`` and
    ``count -= 1``.  No fill lands while ``count != 0``.
``clear_flush_young``
    Tests and clears the young bit of the device entry (the young port) and, when it was set,
    flushes the entry; returns it.
``release``
    Invalidates every entry of the mm's ASID, marks the device stopped (later faults answer
    ``-EFAULT``); a second call is harmless (unregister racing exit).

The device operations go through ``dev``, a :class:`pyrmap.arch.DevicePort`: the arch
itself (default: ``kernel.arch``) or, on the RTL, :class:`cosim.devarch.DevArch`.

Quirks (:class:`DevDriverConfig`), each caught by a checker:

``no_seq_retry``
    The fault path fills without looking at ``count`` and ``seq`` (the race e930bffe95e1
    closed): a translation resolved before an invalidation is installed after it, to a page
    that may already be free.  Checker (b) (a fill or an access to a free frame) and (d) (a
    fill inside an open window) catch it.
``defer_inval_to_range_end``
    invalidate_page and invalidate_range_start only queue the device invalidation, which
    runs at the next invalidate_range_end (or the next fault): the device twin of
    CVE-2018-18281.  Checkers (a) (munmap returned while the device TLB still holds the
    translation) and (b) (the frame freed while the device reaches it) catch it.
``no_count_check``
    The fault path checks ``seq`` but not ``count``: a translation resolved before an
    ``invalidate_range_start`` is filled while that window is still open (``seq`` moves only
    at its end).  Checker (d) catches the fill inside the open window, from outside the
    driver (the arch's ``dev_fill`` event).

Checks made by the driver itself (reported through ``checkers`` when given, else raised as
:class:`~pyrmap.rmap.KernelBug`): the start/end counter never goes negative and an end always
follows its start (d); no fill while a window is open (d); no fill of a free frame (b); no
device access through a free frame (b).

Figures: :meth:`DeviceMmuDriver.figures` and :func:`device_figures` (for the demo).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
from typing import Iterable, Optional

from .arch import DevicePort, InvalKind
from .mmu_notifier import (MmuNotifier, mmu_notifier_register, mmu_notifier_register_restarting,
                           mmu_notifier_unregister)
from .pte import (PAGE_SHIFT, PAGE_SIZE, _PAGE_R, _PAGE_U, _PAGE_W, _PAGE_X, AccessType,
                  FaultKind, pte_leaf, pte_pfn, pte_present)

__all__ = ["DRIVER_QUIRKS", "DevDriverConfig", "DeviceMmuDriver", "device_figures", "FIGURE_LABELS",
           "EFAULT", "EINTR", "ENOMEM", "register_device", "run_device"]

EFAULT = errno.EFAULT
EINTR = errno.EINTR
ENOMEM = errno.ENOMEM

_PERM = _PAGE_R | _PAGE_W | _PAGE_X | _PAGE_U
_NEED = {AccessType.LOAD: _PAGE_R, AccessType.STORE: _PAGE_W, AccessType.FETCH: _PAGE_X}

#: The device figures the demo prints, in order: (key of :func:`device_figures`, label).
FIGURE_LABELS = (
    ("accesses", "device accesses"),
    ("faults", "device faults"),
    ("fills", "fills"),
    ("fills_refused", "fills refused by the retry protocol"),
    ("gup_faults", "faulted in through the engine"),
    ("invalidations", "invalidations (notifier callbacks)"),
    ("dev_invals", "device invalidation requests"),
    ("young_harvested", "young bits harvested"),
    ("releases", "releases"),
)


def _bug(msg: str):
    from .rmap import KernelBug
    return KernelBug(msg)


#: The driver's quirks (fields of :class:`DevDriverConfig`).
DRIVER_QUIRKS = ("no_seq_retry", "defer_inval_to_range_end", "no_count_check")


@dataclasses.dataclass
class DevDriverConfig:
    """The driver's knobs and quirks (all quirks off by default).

    Members
    -------
    no_seq_retry : bool
        Quirk: fill without the sequence-count check (e930bffe95e1).
    defer_inval_to_range_end : bool
        Quirk: queue the device invalidation until range_end (CVE-2018-18281's twin).
    no_count_check : bool
        Quirk: the fill looks at the sequence count but not at the open windows (the
        ``mmu_notifier_count`` half of e930bffe95e1).
    flush_young : bool
        clear_flush_young also invalidates an entry it found young (default, as KVM flushed
        after clearing its sptes' accessed bits).
    range_pages : int
        invalidate_range_start of more pages than this invalidates the whole ASID.
    max_retries : int
        Refused fills and engine faults on one device fault before :class:`RuntimeError`.
    """
    no_seq_retry: bool = False
    defer_inval_to_range_end: bool = False
    no_count_check: bool = False
    flush_young: bool = True
    range_pages: int = 16
    max_retries: int = 10_000

    def __post_init__(self):
        for name in ("range_pages", "max_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TypeError(f"{name.replace('_', ' ').capitalize()} must be a positive "
                                f"integer, not {value!r}")

    def quirks(self) -> list[str]:
        return [n for n in DRIVER_QUIRKS if getattr(self, n)]


class DeviceMmuDriver(MmuNotifier):
    """The host driver of the device TLB working for one mm.

    Parameters
    ----------
    mm : MmStruct
        The process whose memory the device accesses (``mm_users > 0`` to register).
    dev : pyrmap.arch.DevicePort, optional
        The device operations; default ``mm.kernel.arch``.
    config : DevDriverConfig, optional
    checkers : pyrmap.checkers.Checkers, optional
        Violations found by the driver's own checks are reported through it (checker (b) as
        ``frame``, (d) as ``notifier``); without it they raise ``KernelBug``.
    name : str

    Members
    -------
    seq : int
        ``mmu_notifier_seq``: moved by every invalidate_page and range_end.
    count : int
        ``mmu_notifier_count``: open invalidate_range_start windows.
    stopped : bool
        ``release`` ran: the device is frozen, faults answer ``-EFAULT``.
    sptes : dict
        ``vpn -> (pfn, writable)`` of every fill not yet invalidated (the driver's record;
        the device TLB may have evicted some).
    stats : collections.Counter
        faults, fills, fills_refused, gup_faults, invalidations, invalidate_page,
        range_start, range_end, dev_invals, young_tests, young_harvested, releases, accesses.

    Raises
    ------
    TypeError
        ``dev`` is not a :class:`~pyrmap.arch.DevicePort`, or ``config`` is not a :class:`DevDriverConfig`.
    """

    def __init__(self, mm, *, dev=None, config: Optional[DevDriverConfig] = None,
                 checkers=None, name: str = "dev0"):
        super().__init__()
        if config is None:
            config = DevDriverConfig()
        if not isinstance(config, DevDriverConfig):
            raise TypeError(f"Config must be a DevDriverConfig, not {config!r}")
        dev = mm.kernel.arch if dev is None else dev
        if not isinstance(dev, DevicePort):
            raise TypeError(f"Device operations must be a pyrmap.arch.DevicePort, not {dev!r}")
        self.mm = mm
        self.kernel = mm.kernel
        self.dev = dev
        self.config = config
        self.checkers = checkers
        self.name = name
        self.mmu_lock = self.kernel.arch.new_lock(f"{name} mmu_lock")
        self.seq = 0
        self.count = 0
        self.min_count = 0
        self.stopped = False
        self.sptes: dict[int, tuple[int, bool]] = {}
        self.open_windows: list[tuple[int, int]] = []     # recorded under mmu_lock
        self.pending: list[tuple[int, int]] = []          # quirk: deferred invalidations
        self.stats: collections.Counter[str] = collections.Counter()
        self.events: list[tuple] = []                     # (callback, start, end) in order

    def __repr__(self) -> str:
        return (f"<DeviceMmuDriver {self.name} asid={self.mm.asid} seq={self.seq} "
                f"count={self.count}{' stopped' if self.stopped else ''}>")

    # --- registration --------------------------------------------------------------------

    def register(self) -> int:
        """``mmu_notifier_register(self, mm)``: 0, ``-EINTR`` (a signal was pending) or
        ``-ENOMEM``; on failure nothing changed (the driver is not registered, its counters
        are untouched).  Caller holds no VM lock."""
        return mmu_notifier_register(self, self.mm)

    def unregister(self) -> None:
        """``mmu_notifier_unregister``: ``release`` runs (if exit has not run it) and on
        return no callback of the driver is running or will run."""
        mmu_notifier_unregister(self, self.mm)

    # --- compatibility with pyrmap.workload.DeviceWorkload ---------------------------------

    @property
    def released(self) -> bool:
        return self.stopped

    @property
    def windows(self) -> int:
        return self.count

    @property
    def map(self) -> dict[int, tuple[int, bool]]:
        """``vpn -> (pfn, writable)``: :attr:`sptes` (the name checkers and tests use)."""
        return self.sptes

    @property
    def calls(self) -> list[tuple]:
        """The callbacks seen, as ``("invalidate_page", address)``,
        ``("invalidate_range_start", start, end)``, ``("invalidate_range_end", start, end)``,
        ``("clear_flush_young", address)``, ``("release",)``."""
        names = {"range_start": "invalidate_range_start", "range_end": "invalidate_range_end"}
        out = []
        for kind, a, b in self.events:
            if kind in names:
                out.append((names[kind], a, b))
            elif kind == "release":
                out.append(("release",))
            else:
                out.append((kind, a))
        return out

    def fault(self, va: int, write: bool = False) -> bool:
        """One attempt of the fault path without faulting the page in: True when the entry
        was installed, False when the device must retry (refused by the protocol, or the
        primary PTE is absent or lacks the permission: then the caller faults it in)."""
        op = AccessType.STORE if write else AccessType.LOAD
        self.stats["faults"] += 1
        return self._attempt(va, op) == "filled"

    # --- the fault path --------------------------------------------------------------------

    def device_fault(self, vaddr: int, op: AccessType) -> int:
        """Resolve the device fault of ``op`` at ``vaddr`` and install the device entry.

        Runs in a host thread; takes no lock on entry and holds none on return.  Samples
        ``seq``, resolves the translation from the primary page table under ``mmap_sem``
        (read), faults the page in through the engine when the PTE is absent or lacks the
        permission (``do_page_fault``, as get_user_pages would), and fills under
        ``mmu_lock`` only when no invalidation ran or is running since the sample; else it
        retries.  No page reference is kept: the notifiers guard the entry.

        Returns
        -------
        int
            0 when the entry was installed; ``-EFAULT`` when the device was stopped
            (``release``), the mm has no users left, or the access is a segmentation fault
            or bus error for the process; ``-ENOMEM`` when faulting the page in ran out of
            memory.

        Raises
        ------
        RuntimeError
            ``config.max_retries`` attempts without a fill (a livelock).
        """
        op = AccessType(op)
        self.stats["faults"] += 1
        for _ in range(self.config.max_retries):
            what = self._attempt(vaddr, op)
            if what == "filled":
                return 0
            if what == "stopped":
                return -EFAULT
            if what == "refused":
                self.kernel.arch.yield_point("device fault: fill refused, retry")
                continue
            # The primary PTE cannot serve the access: fault it in through the engine.
            rc = self._gup(vaddr, op)
            if rc:
                return rc
        raise RuntimeError(f"{self.name}: {op.name} at 0x{vaddr:x} of {self.mm!r} not resolved "
                           f"after {self.config.max_retries} attempts (seq {self.seq}, count "
                           f"{self.count})")

    def _attempt(self, vaddr: int, op: AccessType) -> str:
        """One pass: "filled", "refused", "absent" (fault it in) or "stopped"."""
        if self.stopped or self.mm.mm_users <= 0:
            return "stopped"
        if self.pending:
            self._flush_pending()
        seq = self.seq                                     # sample, then resolve
        mm = self.mm
        mm.mmap_sem.down_read()
        try:
            if self.stopped or mm.dead:
                return "stopped"
            pte = self._walk(vaddr)
        finally:
            mm.mmap_sem.up_read()
        if pte is None or not pte_leaf(pte) or not pte & _NEED[op]:
            return "absent"
        pfn = pte_pfn(pte)
        perm = pte & _PERM
        self._resolved(vaddr, op, pfn)
        with self.mmu_lock:
            if self.stopped:
                return "stopped"
            busy = self.seq != seq or (self.count and not self.config.no_count_check)
            if not self.config.no_seq_retry and busy:
                self.stats["fills_refused"] += 1
                return "refused"
            self._fill(vaddr, op, pfn, perm)
        return "filled"

    def _walk(self, vaddr: int) -> Optional[int]:
        """The leaf PTE of ``vaddr`` through the arch (caller holds mmap_sem), or None."""
        from .pagetable import pte_offset
        ptep = pte_offset(self.mm, vaddr)
        if ptep is None:
            return None
        pte = self.kernel.arch.pte_load(ptep)
        return pte if pte_present(pte) else None

    def _resolved(self, vaddr: int, op: AccessType, pfn: int) -> None:
        """Hook between resolving and filling (tests widen the race window here)."""
        self.kernel.arch.yield_point("device fault: resolved, before the fill")

    def _fill(self, vaddr: int, op: AccessType, pfn: int, perm: int) -> None:
        """Install the entry.  Caller holds ``mmu_lock``."""
        page_va = vaddr & ~(PAGE_SIZE - 1)
        # A fill inside an open invalidate window is judged from outside the driver: checker
        # (d) sees every device fill (the arch's dev_fill event) against the windows its own
        # notifier client saw open.
        kernel = self.kernel
        if not 0 <= pfn < len(kernel.pages) or kernel.frames.is_free(pfn) or \
                kernel.pages[pfn]._count <= 0:
            self._report("frame", f"{self.name}: device fill of 0x{page_va:x} with frame "
                         f"{pfn:#x}, which is free (a translation resolved before an "
                         f"invalidation installed after it)")
        writable = bool(perm & _PAGE_W)
        if op == AccessType.STORE and 0 <= pfn < len(kernel.pages) and \
                kernel.pages[pfn]._count > 0:
            from .filemap import set_page_dirty
            set_page_dirty(kernel.pages[pfn])              # get_user_pages(write=1)
        self.dev.dev_fill(page_va, self.mm.asid, pfn, 0, perm, False)
        self.sptes[page_va >> PAGE_SHIFT] = (pfn, writable)
        self.stats["fills"] += 1

    def _gup(self, vaddr: int, op: AccessType) -> int:
        """Fault the page in through the engine, holding a user reference of the mm."""
        from .errors import BusErrorSignal, OutOfMemoryError, SegmentationFault
        from .memory import do_page_fault
        mm = self.mm
        if mm.mm_users <= 0 or mm.dead:                    # mmget_not_zero
            return -EFAULT
        mm.mm_users += 1
        self.stats["gup_faults"] += 1
        try:
            do_page_fault(mm, vaddr, op)
        except (SegmentationFault, BusErrorSignal):
            self.stats["segv"] += 1
            return -EFAULT
        except OutOfMemoryError:
            self.stats["oom"] += 1
            return -ENOMEM
        finally:
            from .mmap import mmput
            mmput(mm)
        return 0

    # --- device accesses (SoftArch: synchronous) ------------------------------------------

    def access(self, vaddr: int, op: AccessType, data: Optional[int] = None,
               shadow=None) -> Optional[int]:
        """One device access through the device TLB (``dev.dev_access``), resolving every
        fault with :meth:`device_fault` and retrying; then the 8-byte data access on physical
        memory.  Returns the loaded word (None for a store); ``shadow`` records stores and
        checks loads (checker (c)).

        Raises
        ------
        OSError
            ``EFAULT``: the device was stopped or the access is not allowed to the process;
            ``ENOMEM``: no memory to fault the page in.
        """
        op = AccessType(op)
        dev = self.dev
        if op == AccessType.STORE and not isinstance(data, int):
            raise TypeError(f"A store needs integer data, not {data!r}")
        from .workload import FaultRetry
        retry = FaultRetry(self.config.max_retries, lambda faults: RuntimeError(
            f"{self.name}: {op.name} at 0x{vaddr:x} never completed ({faults} faults)"))
        for _ in retry:
            fault, paddr = dev.dev_access(vaddr, op, self.mm.asid)
            if fault == FaultKind.NONE:
                break
            dev.dev_ack_fault()
            retry.fault()
            rc = self.device_fault(vaddr, op)
            if rc:
                raise OSError(-rc, f"{self.name}: {op.name} at 0x{vaddr:x}: device fault "
                                   f"failed")
        self.completed(vaddr, op, paddr)
        mem = self.kernel.mem
        word = paddr & ~7
        if op == AccessType.STORE:
            mem.write(word, data)
            if shadow is not None:
                shadow.store(self.mm, vaddr & ~7, data)
            return None
        value = mem.read(word)
        if shadow is not None:
            shadow.load(self.mm, vaddr & ~7, value, word)
        return value

    def completed(self, vaddr: int, op: AccessType, paddr: int) -> None:
        """A device access completed through ``paddr``: count it; checker (b): the frame must
        not be free."""
        self.stats["accesses"] += 1
        pfn = paddr >> PAGE_SHIFT
        kernel = self.kernel
        if 0 <= pfn < len(kernel.pages) and (kernel.frames.is_free(pfn) or
                                             kernel.pages[pfn]._count <= 0):
            self._report("frame", f"{self.name}: device {AccessType(op).name} at 0x{vaddr:x} "
                         f"completed through frame {pfn:#x}, which is free")

    # --- device invalidation -----------------------------------------------------------------

    def _zap(self, start: int, end: int) -> None:
        """Invalidate [start, end) on the device and wait for the ack; then forget the sptes,
        marking the pages the device could write dirty.  Caller holds ``mmu_lock``."""
        asid = self.mm.asid
        start &= ~(PAGE_SIZE - 1)
        npages = (end - start + PAGE_SIZE - 1) >> PAGE_SHIFT
        if npages > self.config.range_pages:
            self.dev.dev_inval(InvalKind.ASID, 0, asid)
            self.stats["dev_invals"] += 1
        else:
            for i in range(npages):
                self.dev.dev_inval(InvalKind.VA_ASID, start + i * PAGE_SIZE, asid)
                self.stats["dev_invals"] += 1
        self._forget(start, end)

    def _forget(self, start: int, end: int) -> None:
        from .filemap import set_page_dirty
        pages = self.kernel.pages
        for vpn in [v for v in self.sptes if start <= (v << PAGE_SHIFT) < end]:
            pfn, writable = self.sptes.pop(vpn)
            if writable and 0 <= pfn < len(pages) and pages[pfn]._count > 0:
                set_page_dirty(pages[pfn])

    def _invalidate(self, start: int, end: int) -> None:
        """Caller holds ``mmu_lock``."""
        if self.config.defer_inval_to_range_end:
            self.pending.append((start, end))
            self.stats["deferred"] += 1
        else:
            self._zap(start, end)

    def _flush_pending(self) -> None:
        with self.mmu_lock:
            pending, self.pending = self.pending, []
            for start, end in pending:
                self._zap(start, end)

    # --- callbacks ---------------------------------------------------------------------------

    def invalidate_page(self, mm, address: int) -> None:
        """The primary PTE of ``address`` was cleared and the CPUs flushed; the caller holds
        the pte lock and the page.  On return the device TLB no longer maps the page."""
        self.events.append(("invalidate_page", address, None))
        self.stats["invalidations"] += 1
        self.stats["invalidate_page"] += 1
        page = address & ~(PAGE_SIZE - 1)
        with self.mmu_lock:
            self.seq += 1
            self._invalidate(page, page + PAGE_SIZE)

    def invalidate_range_start(self, mm, start: int, end: int) -> None:
        """Open a window on [start, end): on return the device maps nothing in it, and no
        fill lands in it until the matching :meth:`invalidate_range_end`."""
        self.events.append(("range_start", start, end))
        self.stats["invalidations"] += 1
        self.stats["range_start"] += 1
        with self.mmu_lock:
            self.count += 1
            self.open_windows.append((start, end))
            self._invalidate(start, end)

    def invalidate_range_end(self, mm, start: int, end: int) -> None:
        """Close the window: ``seq += 1``, ``count -= 1`` (an end without its start is
        reported and leaves the counter at 0)."""
        self.events.append(("range_end", start, end))
        self.stats["range_end"] += 1
        with self.mmu_lock:
            if self.pending:
                pending, self.pending = self.pending, []
                for lo, hi in pending:
                    self._zap(lo, hi)
            self.seq += 1
            if (start, end) in self.open_windows:
                self.open_windows.remove((start, end))
            if self.count <= 0:
                self.min_count = min(self.min_count, self.count - 1)
                self._report("notifier", f"{self.name}: invalidate_range_end(0x{start:x}, "
                             f"0x{end:x}) without its start (count {self.count}) on {mm!r}")
                return
            self.count -= 1

    def clear_flush_young(self, mm, address: int) -> int:
        """Test and clear the device entry's young bit; flush the entry when it was set.
        Caller holds the pte lock.  Returns 1 if the device had the page young."""
        self.events.append(("clear_flush_young", address, None))
        self.stats["young_tests"] += 1
        page = address & ~(PAGE_SIZE - 1)
        with self.mmu_lock:
            young = bool(self.dev.dev_young(page, self.mm.asid))
            if young:
                self.stats["young_harvested"] += 1
                if self.config.flush_young:
                    self.dev.dev_inval(InvalKind.VA_ASID, page, self.mm.asid)
                    self.stats["dev_invals"] += 1
                    self._forget(page, page + PAGE_SIZE)
        return int(young)

    def release(self, mm) -> None:
        """The mm is exiting (or the driver unregistering): drop every device entry of the
        ASID, stop the device.  Pages are still mapped when it is called."""
        self.events.append(("release", None, None))
        self.stats["releases"] += 1
        with self.mmu_lock:
            self.stopped = True
            self.pending = []
            self.dev.dev_inval(InvalKind.ASID, 0, self.mm.asid)
            self.stats["dev_invals"] += 1
            self._forget(0, 1 << 64)

    # --- for checkers and reports ----------------------------------------------------------

    def reaches(self, pfn: int) -> Optional[int]:
        """The VA of an spte mapping ``pfn`` that no invalidation dropped yet, or None."""
        for vpn, (p, _) in self.sptes.items():
            if p == pfn:
                return vpn << PAGE_SHIFT
        return None

    def writable_pfns(self) -> set[int]:
        """The frames of the writable sptes no invalidation dropped yet: the device may have
        written them (its TLB entry may be gone already: an entry evicted for capacity leaves
        its spte), and each is marked dirty when its spte is dropped (:meth:`_forget`), before
        reclaim, writeback's page_mkclean or migration can judge the page."""
        return {pfn for pfn, writable in self.sptes.values() if writable}

    def device_entries(self) -> list:
        """The device TLB entries of this mm's ASID."""
        return [e for e in self.dev.dev_entries() if e.asid == self.mm.asid]

    def _report(self, checker: str, message: str) -> None:
        self.stats["violations"] += 1
        if self.checkers is None:
            raise _bug(message)
        {"frame": self.checkers.frame, "notifier": self.checkers.notifier}[checker].fail(message)

    def figures(self) -> dict:
        """The driver's figures (the keys of :data:`FIGURE_LABELS`, plus the counter's)."""
        s = self.stats
        return {"accesses": s["accesses"], "faults": s["faults"], "fills": s["fills"],
                "fills_refused": s["fills_refused"], "gup_faults": s["gup_faults"],
                "invalidations": s["invalidations"], "dev_invals": s["dev_invals"],
                "young_harvested": s["young_harvested"], "releases": s["releases"],
                "seq": self.seq, "count": self.count}


def device_figures(source) -> dict:
    """The device figures for a report: device accesses, faults, fills, fills refused by the
    retry protocol, faults resolved through the engine, invalidations (notifier callbacks),
    device invalidation requests, young bits harvested, releases -- summed over drivers.

    ``source`` is a :class:`DeviceMmuDriver`, an iterable of them, or a
    :class:`pyrmap.scenario.System`, whose device workloads (``device_workloads``) add the
    accesses they made through other drivers.  Labels: :data:`FIGURE_LABELS`.
    """
    from .scenario import System
    if isinstance(source, DeviceMmuDriver):
        drivers: Iterable = [source]
        workloads: Iterable = ()
    elif isinstance(source, System):
        drivers, workloads = source.checkers.secondaries, source.device_workloads
    else:
        drivers, workloads = list(source), ()
    out = {key: 0 for key, _ in FIGURE_LABELS}
    n = 0
    for d in drivers:
        if not isinstance(d, DeviceMmuDriver):
            continue
        n += 1
        for key, value in d.figures().items():
            if key in out:
                out[key] += value
    for wl in workloads:
        out["accesses"] += wl.stats["loads"] + wl.stats["stores"]
    out["drivers"] = n
    return out


def register_device(mm, *, checkers=None, config: Optional[DevDriverConfig] = None, dev=None,
                    name: str = "dev0") -> DeviceMmuDriver:
    """Build a :class:`DeviceMmuDriver` for ``mm``, register it, and (with ``checkers``)
    add it to ``checkers.secondaries`` so that checker (b) sees its sptes.

    Raises
    ------
    OSError
        Registration failed (``EINTR``: a signal was pending; ``ENOMEM``); nothing changed.
    """
    drv = DeviceMmuDriver(mm, dev=dev, config=config, checkers=checkers, name=name)
    rc = mmu_notifier_register_restarting(drv, mm)
    if rc:
        raise OSError(-rc, f"mmu_notifier_register of {name} on {mm!r} failed")
    if checkers is not None:
        checkers.secondaries.append(drv)
    return drv


def run_device(driver: DeviceMmuDriver, accesses: Iterable, *, shadow=None,
               value_base: int = 0xDE << 48) -> dict:
    """A device thread: every access of ``accesses`` (:class:`pyrmap.workload.Access` or
    ``(op, vaddr[, value])``) through :meth:`DeviceMmuDriver.access`; a store writes a fresh
    value.  An access the process may not make (``EFAULT``: unmapped meanwhile, or the
    device stopped) is counted in ``efaults`` and skipped, one that found no memory
    (``ENOMEM``) in ``enomem``; the thread ends when the device is stopped.  Returns the driver's figures."""
    from .workload import with_store_values
    for acc, data in with_store_values(accesses, value_base):
        if driver.stopped:
            driver.stats["stopped_early"] += 1
            break
        try:
            driver.access(acc.vaddr, acc.op, data, shadow=shadow)
        except OSError as exc:
            if exc.errno not in (EFAULT, ENOMEM):
                raise
            driver.stats["efaults" if exc.errno == EFAULT else "enomem"] += 1
    return driver.figures()
