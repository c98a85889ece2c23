"""Invariant checkers: the oracles every scenario, property test and demo runs under.

The five checkers of DESIGN.md "Oracles and checkers", and a sixth, each able to fail (a quirk
or a bad input proves it):

(a) :class:`TlbChecker` — no translation outlives the operation that removed or downgraded it.
    ``after_range(...)`` / ``after_page(...)`` are called when an invalidating operation
    (munmap, mprotect, madvise, mremap, page_mkclean through msync, migration) *returns*:
    every TLB entry (any core, the device TLB) in what it covered must then be backed by the
    PTE as it is now; one that is not predates the operation's end (a refill copies the
    current PTE), so a later hit through it would complete through a removed translation.
    ``check()`` (at quiescent points) requires the same of every cached CPU entry, A included,
    and of every device TLB entry (whose A is the young bit, not checked).
(b) :class:`FrameChecker` — a frame is freed or reused only when nothing reaches it: hooked on
    the arch's ``frame_free`` / ``frame_alloc`` notifications, it looks at every core's TLB, the
    device TLB, every secondary-MMU client and every page table at that instant.
(c) :class:`ShadowMemory` — no write is lost: a model of what every virtual word must contain
    (per mm for private pages, per (file, pgoff) for shared ones, following fork's COW, the
    engine's COW copies, mremap, madvise and remap_file_pages), compared on every CPU and
    device load and against the file backing after msync.  ``writeback_check(page)`` is the
    "writeback only when clean and write-protected" rule: when a clean page goes to disk no
    translation may be able to write it without leaving a trace (a writable PTE).
(d) :class:`NotifierChecker` — every invalidate_range_start has its end (a tracking notifier
    client per mm) and no secondary translation is installed inside a window (the device
    driver, :class:`pyrmap.devdriver.DeviceMmuDriver`, reports a fill inside its window and
    an end without its start through this checker).
(e) :class:`RmapChecker` — rmap completeness: every present PTE of a page is reachable from
    ``page->mapping`` (the anon_vma list, i_mmap or i_mmap_nonlinear holds a vma of that mm
    mapping that address) and the mapcount equals the number of present PTEs.
(f) :class:`DirtChecker` — no unaccounted dirt: at a quiescent point every page whose data
    differs from its file or swap copy is dirty somewhere (PG_dirty, a PTE with D, a device
    entry with D), and a written file page no longer in memory has its last write on disk.  It
    sees a D bit lost on a page that is never read again (checker (c) would need a later load
    or a writeback of the page to see it).

:class:`Checkers` bundles them with one :class:`CheckContext` (seed, step, operation, the
command that reproduces the run) so that every :class:`InvariantViolation` says how to get it
back.  Checkers read page tables and TLBs without side effects: PTEs straight from physical
memory (never through the arch, whose loads are scheduling points), TLBs through
``arch.tlb_entries``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .checker_registry import CHECKERS, register_checker, verdict_lines  # noqa: F401 - re-exported
from .devdriver import DeviceMmuDriver as SecondaryMmu   # the secondary-MMU driver
from .mm_types import PG, AddressSpace, AnonVma, page_mapcount
from .pte import (PAGE_SHIFT, PAGE_SIZE, PPN_MASK, PPN_SHIFT, PTRS_PER_PTE, _PAGE_A, _PAGE_D,
                  _PAGE_R, _PAGE_V, _PAGE_W, _PAGE_X, describe)

__all__ = [
    "InvariantViolation", "CheckContext", "Checker", "RmapChecker", "FrameChecker",
    "TlbChecker", "NotifierChecker", "DirtChecker", "SecondaryMmu", "ShadowMemory", "Checkers",
    "present_leaves", "lookup_pte", "NOT_EXERCISED",
]

WORDS = PAGE_SIZE // 8

#: The verdict of a checker that made no check (never a PASS).
NOT_EXERCISED = "not exercised"


# ---------------------------------------------------------------------------------------------
# Violations and their context.

@dataclasses.dataclass
class CheckContext:
    """What a violation report says about the run: where it happened and how to get it back."""
    seed: Optional[int] = None
    step: int = 0
    operation: str = ""
    command: str = ""


class InvariantViolation(AssertionError):
    """An invariant failed.

    Members
    -------
    checker : str
        Name of the checker ("rmap", "frame", "tlb", "shadow", "notifier").
    message : str
        What is wrong, with addresses and frames.
    seed, step, operation, command :
        From the :class:`CheckContext` at the moment of the violation.
    history : list of str
        The PTE history of the address involved (when the arch records one).
    """

    def __init__(self, checker: str, message: str, ctx: CheckContext,
                 history: Iterable[str] = ()):
        self.checker = checker
        self.message = message
        self.seed = ctx.seed
        self.step = ctx.step
        self.operation = ctx.operation
        self.command = ctx.command
        self.history = list(history)
        lines = [f"[{checker}] {message}",
                 f"  seed={ctx.seed} step={ctx.step} operation={ctx.operation or '-'}"]
        if self.history:
            lines.append("  PTE history (oldest first):")
            lines.extend(f"    {h}" for h in self.history)
        if ctx.command:
            lines.append(f"  reproduce: {ctx.command}")
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Side-effect-free page-table reading (straight from PhysMem).

def _leaf_pfn_span(val: int, level: int) -> tuple[int, int]:
    base = (val & PPN_MASK) >> PPN_SHIFT
    return base, base + (PTRS_PER_PTE ** level)


def present_leaves(mem, root_pfn: int, maps: Optional[int] = None
                   ) -> Iterator[tuple[int, int, int, int]]:
    """Every present leaf PTE of the tree at ``root_pfn``: ``(va, ptep, value, level)``.
    With ``maps`` (a frame number), only the leaves that map that frame, in the same order:
    each table is filtered whole with array operations, so a scan for one frame costs a few
    of them per table instead of a step per leaf.

    Reads memory directly (no arch call, no scheduling point); only the lower (user) half of
    the Sv39 space is walked.
    """
    rwx = np.uint64(_PAGE_R | _PAGE_W | _PAGE_X)

    def nonzero_valid(pfn, level):
        frame = mem.frame(pfn)
        keep = (frame & np.uint64(_PAGE_V)) != 0
        if maps is not None:
            # Tables (no R/W/X) stay, to be walked; leaves only where they map ``maps``.
            base = (frame & np.uint64(PPN_MASK)) >> np.uint64(PPN_SHIFT)
            target = np.uint64(maps)
            keep &= (((frame & rwx) == 0)
                     | ((base <= target) & (target < base + np.uint64(PTRS_PER_PTE ** level))))
        return np.nonzero(keep)[0], frame

    idx2, f2 = nonzero_valid(root_pfn, 2)
    for i2 in idx2:
        if i2 >= PTRS_PER_PTE // 2:
            continue
        e2 = int(f2[i2])
        va2 = int(i2) << 30
        if e2 & (_PAGE_R | _PAGE_W | _PAGE_X):
            yield va2, (root_pfn << 12) + int(i2) * 8, e2, 2
            continue
        t1 = (e2 & PPN_MASK) >> PPN_SHIFT
        if not mem.contains(t1 << 12):
            continue
        idx1, f1 = nonzero_valid(t1, 1)
        for i1 in idx1:
            e1 = int(f1[i1])
            va1 = va2 | (int(i1) << 21)
            if e1 & (_PAGE_R | _PAGE_W | _PAGE_X):
                yield va1, (t1 << 12) + int(i1) * 8, e1, 1
                continue
            t0 = (e1 & PPN_MASK) >> PPN_SHIFT
            if not mem.contains(t0 << 12):
                continue
            idx0, f0 = nonzero_valid(t0, 0)
            for i0 in idx0:
                e0 = int(f0[i0])
                if e0 & (_PAGE_R | _PAGE_W | _PAGE_X):
                    yield va1 | (int(i0) << 12), (t0 << 12) + int(i0) * 8, e0, 0


def table_frames(mem, root_pfn: int) -> set[int]:
    """Every page-table frame of the tree at ``root_pfn`` (root included)."""
    found = {root_pfn}
    frontier = [(root_pfn, 2)]
    while frontier:
        pfn, level = frontier.pop()
        if level == 0:
            continue
        frame = mem.frame(pfn)
        for i in np.nonzero(frame & np.uint64(_PAGE_V))[0]:
            e = int(frame[i])
            if e & (_PAGE_R | _PAGE_W | _PAGE_X):
                continue
            child = (e & PPN_MASK) >> PPN_SHIFT
            if mem.contains(child << 12) and child not in found:
                found.add(child)
                frontier.append((child, level - 1))
    return found


def lookup_pte(mem, root_pfn: int, va: int) -> tuple[Optional[int], int, int]:
    """``(ptep, value, level)`` of the entry translating ``va``; ptep None when an upper level
    is not present (value 0)."""
    table = root_pfn
    for level in (2, 1, 0):
        ptep = (table << 12) + ((va >> (12 + 9 * level)) & (PTRS_PER_PTE - 1)) * 8
        if not mem.contains(ptep):
            return None, 0, level
        val = mem.read(ptep)
        if level and not val & _PAGE_V:
            return None, 0, level
        if val & (_PAGE_R | _PAGE_W | _PAGE_X) or level == 0:
            return ptep, val, level
        table = (val & PPN_MASK) >> PPN_SHIFT
    return None, 0, 0  # pragma: no cover


def _entry_span(entry) -> tuple[int, int]:
    level = entry.level
    return entry.ppn, entry.ppn + PTRS_PER_PTE ** level


def _entry_writable(entry) -> bool:
    """A store can complete through the entry without a walk: W and D (a CPU entry filled
    with D=0 re-walks on a store; a device entry's D mirrors its W)."""
    return bool(entry.perm & _PAGE_W) and bool(entry.d)


# ---------------------------------------------------------------------------------------------
# The checkers.

class Checker:
    """Base: a name, counters of checks and violations, and the way to report.

    A subclass declares ``name``, ``title`` and ``guarantee``; defining it registers it in
    :data:`pyrmap.checker_registry.CHECKERS`, the table every report takes its titles from.
    """
    name = "checker"
    title = ""
    guarantee = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register_checker(cls.name, cls.title, cls.guarantee)

    def __init__(self, owner: "Checkers"):
        self.owner = owner
        self.checks = 0
        self.violations = 0

    @property
    def kernel(self):
        return self.owner.kernel

    def fail(self, message: str, ptep: Optional[int] = None) -> None:
        self.violations += 1
        self.owner.report(self.name, message, ptep)

    @property
    def exercised(self) -> bool:
        """True once the checker made a check (a violation counts as one)."""
        return bool(self.checks or self.violations)

    @property
    def verdict(self) -> str:
        """``FAIL`` on a violation, :data:`NOT_EXERCISED` when no check was made, else
        ``PASS``: a checker that looked at nothing passed nothing."""
        if self.violations:
            return "FAIL"
        return "PASS" if self.checks else NOT_EXERCISED


class RmapChecker(Checker):
    """(e) rmap completeness and mapcount exactness.

    ``check()`` is valid only at a quiescent point (no thread inside an operation that holds a
    pte lock), because a mapcount and its ptes change together under that lock.
    """
    name = "rmap"
    title = "(e) rmap completeness"
    guarantee = ("every present PTE of a live mm is found by the rmap walk of its page, and "
                 "every mapcount equals the PTEs that map the page")

    def check(self) -> None:
        from .mm_types import page_mapped
        kernel = self.kernel
        mem = kernel.mem
        counts: dict[int, int] = {}
        for mm in self.owner.live_mms():
            for va, ptep, val, level in present_leaves(mem, mm.pgd):
                self.checks += 1
                pfn = (val & PPN_MASK) >> PPN_SHIFT
                if level != 0:
                    self.fail(f"superpage leaf at level {level} for 0x{va:x} in {mm!r}", ptep)
                    continue
                if not 0 <= pfn < len(kernel.pages):
                    self.fail(f"pte at 0x{va:x} of {mm!r} maps pfn {pfn:#x} outside memory", ptep)
                    continue
                page = kernel.pages[pfn]
                counts[pfn] = counts.get(pfn, 0) + 1
                if kernel.frames.is_free(pfn) or page._count <= 0:
                    self.fail(f"pte at 0x{va:x} of {mm!r} maps free frame {pfn:#x}", ptep)
                    continue
                if page.test(PG.pagetable):
                    self.fail(f"pte at 0x{va:x} of {mm!r} maps page-table frame {pfn:#x}", ptep)
                    continue
                if not self._reachable(page, mm, va):
                    self.fail(f"present pte at 0x{va:x} of {mm!r} -> {page!r} is not reachable "
                              f"from page->mapping {page.mapping!r}", ptep)
        for page in kernel.pages:
            n = counts.get(page.pfn, 0)
            if page._mapcount < -1:
                self.checks += 1
                self.fail(f"{page!r}: mapcount went negative ({page_mapcount(page)})")
            elif page_mapcount(page) != n and (n or page_mapped(page)):
                self.checks += 1
                self.fail(f"{page!r}: mapcount {page_mapcount(page)} but {n} present ptes map it")

    @staticmethod
    def _reachable(page, mm, va: int) -> bool:
        mapping = page.mapping
        if isinstance(mapping, AnonVma):
            if mapping.freed:
                return False
            for vma in mapping.head:
                if vma.vm_mm is mm and vma.contains(va) and \
                        vma.vm_start + ((page.index - vma.vm_pgoff) << PAGE_SHIFT) == va:
                    return True
            return False
        if isinstance(mapping, AddressSpace):
            for vma in mapping.i_mmap.stab(page.index):
                if vma.vm_mm is mm and vma.contains(va) and \
                        vma.vm_start + ((page.index - vma.vm_pgoff) << PAGE_SHIFT) == va:
                    return True
            for vma in mapping.i_mmap_nonlinear:
                if vma.vm_mm is mm and vma.contains(va):
                    return True
            return False
        return False


class FrameChecker(Checker):
    """(b) no frame is freed or reused while a PTE, a TLB entry or a secondary MMU reaches it.

    Runs on the arch notifications ``frame_free`` (before the frame goes back to the
    allocator) and ``frame_alloc`` (when it is handed out again).
    """
    name = "frame"
    title = "(b) no freed frame reachable"
    guarantee = ("when a frame is freed or reused, no PTE, CPU or device TLB entry, or "
                 "secondary MMU still reaches it")

    def on_event(self, event: str, pfn: int, page=None, **_) -> None:
        self.checks += 1
        what = "freed" if event == "frame_free" else "reused"
        for where in self.owner.reachers(pfn):
            self.fail(f"frame {pfn:#x} {what} while {where}", None)
            return


class TlbChecker(Checker):
    """(a) no translation survives the operation that removed or downgraded it.

    ``after_range(mm, start, end, kind)`` / ``after_page(page, kind)`` run when such an
    operation (munmap, mprotect, madvise, mremap, migration) *returns*: every TLB entry (CPU
    or device) in what it covered must then be backed by the PTE as it is now -- present,
    the same frame, no W the PTE lacks, and for a CPU entry no D the PTE lacks.  An entry
    that is not predates the operation's end (a refill could only copy the current PTE), so
    an access hitting it would complete through a translation the operation removed.  Other
    threads may legitimately refault the range meanwhile; such fresh entries pass.
    ``check()`` (quiescent points) applies the same rule, plus A, to every CPU entry.
    """
    name = "tlb"
    title = "(a) no stale translation"
    guarantee = ("when an operation that removed or downgraded a translation returns, no CPU "
                 "or device TLB entry is left that the PTE no longer backs")

    def __init__(self, owner):
        super().__init__(owner)
        #: Zaps in flight, ``(mm, start, end)``, as the scenario driving them records them.
        self.zapping: list[tuple[object, int, int]] = []
        #: Return checks of a zap left to a racing zap of an overlapping range.
        self.deferred = 0

    def _problem(self, src: str, entry, mm, strict_a: bool = False):
        """Why ``entry`` is not backed by mm's current PTE, or None; also ``(ptep, val)``."""
        va = entry.vpn << 12
        ptep, val, _ = lookup_pte(self.kernel.mem, mm.pgd, va)
        device = not src.startswith("core")
        if not val & _PAGE_V:
            return "the pte is not present", ptep, val
        if (val & PPN_MASK) >> PPN_SHIFT != entry.ppn:
            return f"the pte maps {(val & PPN_MASK) >> PPN_SHIFT:#x}", ptep, val
        if _entry_writable(entry) and not val & _PAGE_W:
            return "the pte is write-protected", ptep, val
        if not device and entry.d and not val & _PAGE_D:
            return "the pte is clean (a later write would not dirty it)", ptep, val
        if strict_a and not device and entry.a and not val & _PAGE_A:
            return "the pte is old but A was cleared without a flush", ptep, val
        return None, ptep, val

    def after_range(self, mm, start: int, end: int, kind: str, op: str = "") -> None:
        self.checks += 1
        for src, entry in self.owner.all_entries():
            if entry.asid != mm.asid and not entry.g:
                continue
            lo = entry.vpn << 12
            hi = lo + (PAGE_SIZE << (9 * entry.level))
            if hi <= start or lo >= end:
                continue
            if kind != "unmap" and not _entry_writable(entry):
                continue        # a read-only entry does not break a write-protection
            problem, ptep, val = self._problem(src, entry, mm)
            if problem:
                self.fail(f"{op or kind} of [0x{start:x}, 0x{end:x}) in {mm!r} returned while "
                          f"{src} still holds {entry}, but {problem}: {describe(val)}", ptep)
                return

    def after_page(self, page, kind: str, op: str = "") -> None:
        self.checks += 1
        by_asid = {mm.asid: mm for mm in self.owner.live_mms()}
        for src, entry in self.owner.all_entries():
            lo, hi = _entry_span(entry)
            if not lo <= page.pfn < hi:
                continue
            if kind != "unmap" and not _entry_writable(entry):
                continue        # a read-only entry does not break a write-protection
            mm = by_asid.get(entry.asid)
            if mm is None:
                if kind == "unmap" and any(m.asid == entry.asid and not m.dead
                                           for m in self.kernel.mms):
                    # That address space's exit is in flight (no users left, not torn down
                    # yet): its zap holds the pages it cleared and its flush ends every entry
                    # of it, which the exit's own return check sees done.
                    self.deferred += 1
                    continue
                self.fail(f"{op or kind} of {page!r} returned while {src} still holds {entry} "
                          f"of an address space that is gone")
                return
            if kind == "unmap" and any(z[0] is mm and z[1] <= entry.vpn << 12 < z[2]
                                       for z in self.zapping):
                # A zap in flight cleared that pte first: its flush, not ours, ends the
                # entry, and it holds the page until then (the page cannot be freed).
                self.deferred += 1
                continue
            problem, ptep, val = self._problem(src, entry, mm)
            if problem:
                self.fail(f"{op or kind} of {page!r} returned while {src} still holds {entry}, "
                          f"but {problem}: {describe(val)}", ptep)
                return

    def on_return(self, op: str, kind: str, mm=None, start: int = 0, end: int = 0,
                  page=None) -> None:
        """The engine's ``returned`` event: an operation that promises it (try_to_unmap,
        page_mkclean, migration: ``page``; munmap, mprotect, madvise's and truncation's zap,
        fork's write-protect: ``mm`` and [``start``, ``end``); exit: ``mm``, kind ``"exit"``)
        returned; every TLB entry covering what it changed must agree with the PTE.  A zap
        while another zap of an overlapping range is in flight (:attr:`zapping`) is left to
        that one: its flush, not ours, ends an entry a fault refilled in between."""
        if op == "zap_page_range" and sum(
                1 for z in self.zapping if z[0] is mm and z[1] < end and start < z[2]) > 1:
            self.deferred += 1
            return
        if page is not None:
            self.after_page(page, kind, op)
        elif kind == "exit":
            self.after_exit(mm, op)
        else:
            self.after_range(mm, start, end, kind, op)

    def after_exit(self, mm, op: str = "exit") -> None:
        """exit returned: no CPU or device TLB entry of ``mm``'s address space is left (its
        page tables and pages are gone)."""
        self.checks += 1
        for src, entry in self.owner.all_entries():
            if entry.asid == mm.asid and not entry.g:
                self.fail(f"{op} of {mm!r} returned while {src} still holds {entry}: a "
                          f"translation of an address space that is gone")
                return

    def check(self) -> None:
        by_asid = {mm.asid: mm for mm in self.owner.live_mms()}
        strict_a = self.kernel.config.clear_flush_young_flushes
        for src, entry in list(self.owner.core_entries()) + list(self.owner.device_entries()):
            mm = by_asid.get(entry.asid)
            if mm is None:
                continue
            self.checks += 1
            problem, ptep, val = self._problem(src, entry, mm, strict_a)
            if problem:
                self.fail(f"{src} holds {entry} for 0x{entry.vpn << 12:x} of {mm!r} but "
                          f"{problem}: {describe(val)}", ptep)
                return


class NotifierChecker(Checker):
    """(d) every invalidate_range_start has its end; no secondary fill inside a window.

    One tracking client is registered on each mm (``attach(mm)``); ``check()`` at quiescent
    points requires every window to be closed.
    """
    name = "notifier"
    title = "(d) notifier start/end pairs"
    guarantee = ("every invalidate_range_start has its end, and no secondary fill lands "
                 "inside an open window")

    def __init__(self, owner):
        super().__init__(owner)
        self.open: dict[int, list[tuple[int, int]]] = {}
        self.clients: dict[int, object] = {}

    def attach(self, mm) -> None:
        from .mmu_notifier import mmu_notifier_register_restarting
        client = _make_tracking_client(self)
        rc = mmu_notifier_register_restarting(client, mm)
        if rc:
            raise RuntimeError(f"mmu_notifier_register failed with {rc}")
        self.clients[id(mm)] = client
        self.open.setdefault(id(mm), [])

    def start(self, mm, start: int, end: int) -> None:
        self.checks += 1
        self.open.setdefault(id(mm), []).append((start, end))

    def end(self, mm, start: int, end: int) -> None:
        self.checks += 1
        windows = self.open.setdefault(id(mm), [])
        if (start, end) in windows:
            windows.remove((start, end))
        else:
            self.fail(f"invalidate_range_end(0x{start:x}, 0x{end:x}) on {mm!r} without a start "
                      f"(open: {[(hex(s), hex(e)) for s, e in windows]})")

    def in_window(self, mm, va: int) -> bool:
        return any(s <= va < e for s, e in self.open.get(id(mm), ()))

    def on_dev_fill(self, entry) -> None:
        """A device TLB entry was installed (the arch's ``dev_fill`` event): no part of it
        may lie in a window of its mm that is open (between invalidate_range_start and its
        end), judged from outside the secondary-MMU driver."""
        lo = entry.vpn << PAGE_SHIFT
        hi = lo + (PAGE_SIZE << (9 * entry.level))
        for mm in self.owner.live_mms():
            if mm.asid != entry.asid and not entry.g:
                continue
            self.checks += 1
            for s, e in self.open.get(id(mm), ()):
                if s < hi and lo < e:
                    self.fail(f"device fill of {entry} (0x{lo:x}) inside the open invalidate "
                              f"window [0x{s:x}, 0x{e:x}) of {mm!r}: invalidate_range_start "
                              f"was called and its end was not")
                    return

    def release(self, mm) -> None:
        self.open.pop(id(mm), None)

    def check(self) -> None:
        for mm in self.owner.live_mms():
            self.checks += 1
            windows = self.open.get(id(mm))
            if windows:
                self.fail(f"{mm!r}: invalidate_range_start without an end: "
                          f"{[(hex(s), hex(e)) for s, e in windows]}")


def _notifier_base():
    try:
        from .mmu_notifier import MmuNotifier
        return MmuNotifier
    except ImportError:  # pragma: no cover - the notifier core lands separately
        return object


def _make_tracking_client(checker: NotifierChecker):
    base = _notifier_base()

    class _Tracking(base):
        """Counts every start and end of the mm it is registered on."""

        def __init__(self):
            if base is not object:
                try:
                    super().__init__()
                except TypeError:
                    pass

        def invalidate_range_start(self, mm, start, end):
            checker.start(mm, start, end)

        def invalidate_range_end(self, mm, start, end):
            checker.end(mm, start, end)

        def invalidate_page(self, mm, address):
            pass

        def clear_flush_young(self, mm, address):
            return 0

        def release(self, mm):
            checker.release(mm)

    return _Tracking()


# ---------------------------------------------------------------------------------------------
# (c) the shadow memory.

@dataclasses.dataclass
class _Region:
    start: int
    end: int
    prot: int              # PROT_* bits: 1 read, 2 write, 4 exec
    shared: bool
    obj: object            # None: anonymous private; AddressSpace or _Shm: a shared object
    pgoff: int = 0

    def pgoff_of(self, va: int) -> int:
        return self.pgoff + ((va - self.start) >> PAGE_SHIFT)

    def cut(self, start: int, end: int) -> "_Region":
        return dataclasses.replace(self, start=start, end=end,
                                   pgoff=self.pgoff + ((start - self.start) >> PAGE_SHIFT))


class _Shm:
    """An anonymous shared mapping's object (what shmem would be): one per mmap, kept by fork."""
    _n = 0

    def __init__(self, npages: int = 0):
        _Shm._n += 1
        self.name = f"shm{_Shm._n}"
        self.npages = npages

    def __repr__(self) -> str:
        return f"<shm {self.name}>"


class _MmShadow:
    def __init__(self):
        self.regions: list[_Region] = []
        self.private: dict[int, np.ndarray] = {}   # vpn -> page contents (COW'd or anon)
        self.nonlinear: dict[int, int] = {}         # vpn -> pgoff (remap_file_pages)
        self.written: set[int] = set()              # vpns of private pages this mm stored to

    def clone(self) -> "_MmShadow":
        new = _MmShadow()
        new.regions = [dataclasses.replace(r) for r in self.regions]
        new.private = {v: a.copy() for v, a in self.private.items()}
        new.nonlinear = dict(self.nonlinear)
        new.written = set(self.written)
        return new

    def find(self, va: int) -> Optional[_Region]:
        for r in self.regions:
            if r.start <= va < r.end:
                return r
        return None

    def remove(self, start: int, end: int) -> list[_Region]:
        """Cut [start, end) out of the regions; returns the removed pieces."""
        kept, removed = [], []
        for r in self.regions:
            if r.end <= start or r.start >= end:
                kept.append(r)
                continue
            if r.start < start:
                kept.append(r.cut(r.start, start))
            if r.end > end:
                kept.append(r.cut(end, r.end))
            removed.append(r.cut(max(r.start, start), min(r.end, end)))
        kept.sort(key=lambda r: r.start)
        self.regions = kept
        return removed


class ShadowMemory(Checker):
    """(c) What every virtual word must contain, kept independently of the engine.

    The model follows the user-visible semantics of the operations (not the engine's data
    structures): anonymous private memory starts zero; a private file page shows the file
    until this mm first writes it, then its own copy; shared mappings (file or anonymous
    shared) show one page per (object, pgoff); fork copies private pages and shares shared
    objects; mremap moves; MADV_DONTNEED drops private copies; remap_file_pages re-points
    pages of a shared file mapping.  Drivers call the ``on_*`` hooks *after* the engine
    operation succeeded, with the address it returned.

    ``load(mm, va, value)`` compares a completed CPU load; ``store(mm, va, value)`` records a
    completed store; ``check_backing(file, pgoffs)`` compares the file's backing store (after
    msync).
    """
    name = "shadow"
    title = "(c) no lost write"
    guarantee = ("every load returns what the program last stored, and after msync the "
                 "backing store holds every write")

    def __init__(self, owner):
        super().__init__(owner)
        self.mms: dict[int, _MmShadow] = {}
        self.objects: dict[tuple[int, int], np.ndarray] = {}   # (id(obj), pgoff) -> contents
        self.initial: dict[int, dict[int, np.ndarray]] = {}     # id(file) -> pgoff -> contents
        self._keep: dict[int, object] = {}
        self.loads = 0
        self.stores = 0
        #: False once a writer stores without telling the shadow (:meth:`writes_untracked`):
        #: the shadow then no longer knows every word's last write.
        self.complete = True

    # --- objects -----------------------------------------------------------------------------

    def writes_untracked(self) -> None:
        """Declare a writer whose stores bypass the shadow (a device thread whose loads a VM
        thread's changes would make unpredictable).  Checks that need the last write of every
        word (the dirt checker's "lost write") stop judging; the rest go on."""
        self.complete = False

    def register_file(self, mapping) -> None:
        """Snapshot a file's initial contents; call before any write to it."""
        self._keep[id(mapping)] = mapping
        self.initial[id(mapping)] = {pgoff: _as_words(data).copy()
                                     for pgoff, data in mapping.backing.items()}

    def _object_page(self, obj, pgoff: int) -> np.ndarray:
        key = (id(obj), pgoff)
        page = self.objects.get(key)
        if page is None:
            self._keep[id(obj)] = obj
            init = self.initial.get(id(obj), {}).get(pgoff)
            if init is None and isinstance(obj, AddressSpace) and id(obj) not in self.initial:
                self.register_file(obj)
                init = self.initial[id(obj)].get(pgoff)
            page = init.copy() if init is not None else np.zeros(WORDS, dtype=np.uint64)
            self.objects[key] = page
        return page

    def _mm(self, mm) -> _MmShadow:
        s = self.mms.get(id(mm))
        if s is None:
            s = self.mms[id(mm)] = _MmShadow()
            self._keep[id(mm)] = mm
        return s

    # --- operations --------------------------------------------------------------------------

    def on_mmap(self, mm, addr: int, length: int, prot: int, shared: bool, file=None,
                pgoff: int = 0) -> None:
        s = self._mm(mm)
        end = addr + _page_align(length)
        self._forget(s, addr, end)
        s.remove(addr, end)
        obj = file
        if shared and file is None:
            obj = _Shm((end - addr) >> PAGE_SHIFT)
        s.regions.append(_Region(addr, end, prot, shared, obj, pgoff))
        s.regions.sort(key=lambda r: r.start)

    def on_munmap(self, mm, addr: int, length: int) -> None:
        s = self._mm(mm)
        end = addr + _page_align(length)
        self._forget(s, addr, end)
        s.remove(addr, end)

    def on_mprotect(self, mm, addr: int, length: int, prot: int) -> None:
        s = self._mm(mm)
        end = addr + _page_align(length)
        for r in s.remove(addr, end):
            r.prot = prot
            s.regions.append(r)
        s.regions.sort(key=lambda r: r.start)

    def on_mremap(self, mm, old: int, old_len: int, new: int, new_len: int) -> None:
        s = self._mm(mm)
        old_len, new_len = _page_align(old_len), _page_align(new_len)
        pieces = s.remove(old, old + old_len)
        moved = {v: a for v, a in s.private.items() if old >> PAGE_SHIFT <= v < (old + old_len) >> PAGE_SHIFT}
        nl = {v: p for v, p in s.nonlinear.items() if old >> PAGE_SHIFT <= v < (old + old_len) >> PAGE_SHIFT}
        for v in moved:
            del s.private[v]
        wmoved = {v for v in s.written if old >> PAGE_SHIFT <= v < (old + old_len) >> PAGE_SHIFT}
        s.written -= wmoved
        for v in nl:
            del s.nonlinear[v]
        self._forget(s, new, new + new_len)
        s.remove(new, new + new_len)
        delta = new - old
        keep = min(old_len, new_len)
        for r in pieces:
            if r.start - old >= keep:
                continue
            r = r.cut(r.start, min(r.end, old + keep))
            r.start += delta
            r.end += delta
            s.regions.append(r)
        if new_len > old_len and pieces:
            last = max(pieces, key=lambda r: r.end)
            grown = dataclasses.replace(last, start=new + old_len, end=new + new_len,
                                        pgoff=last.pgoff_of(last.end - PAGE_SIZE) + 1)
            s.regions.append(grown)
        s.regions.sort(key=lambda r: r.start)
        for v, a in moved.items():
            if (v << PAGE_SHIFT) - old < keep:
                s.private[v + (delta >> PAGE_SHIFT)] = a
        for v, p in nl.items():
            if (v << PAGE_SHIFT) - old < keep:
                s.nonlinear[v + (delta >> PAGE_SHIFT)] = p
        for v in wmoved:
            if (v << PAGE_SHIFT) - old < keep:
                s.written.add(v + (delta >> PAGE_SHIFT))

    def on_madvise_dontneed(self, mm, addr: int, length: int) -> None:
        s = self._mm(mm)
        end = addr + _page_align(length)
        for v in [v for v in s.private if addr >> PAGE_SHIFT <= v < end >> PAGE_SHIFT]:
            del s.private[v]
            s.written.discard(v)

    def on_cow_copy(self, mm, address: int) -> None:
        """The engine copied a page for a write fault of mm at ``address`` (the ``cow_copy``
        event, raised at the instant of the copy): a private file page is born now, with the
        file's contents of this instant.  (Until the mm's first store lands, a failed and
        retried fault may copy again: the last copy counts.)"""
        s = self.mms.get(id(mm))
        if s is None:
            return
        r = s.find(address)
        vpn = address >> PAGE_SHIFT
        if r is None or r.shared or not isinstance(r.obj, AddressSpace) or vpn in s.written:
            return
        s.private[vpn] = self._object_page(r.obj, r.pgoff_of(address)).copy()

    def on_fork(self, parent, child) -> None:
        self.mms[id(child)] = self._mm(parent).clone()
        self._keep[id(child)] = child

    def on_exit(self, mm) -> None:
        self.mms.pop(id(mm), None)

    def on_remap_file_pages(self, mm, start: int, size: int, pgoff: int) -> None:
        s = self._mm(mm)
        for i in range(_page_align(size) >> PAGE_SHIFT):
            s.nonlinear[(start >> PAGE_SHIFT) + i] = pgoff + i

    def _forget(self, s: _MmShadow, start: int, end: int) -> None:
        for v in [v for v in s.private if start >> PAGE_SHIFT <= v < end >> PAGE_SHIFT]:
            del s.private[v]
            s.written.discard(v)
        for v in [v for v in s.nonlinear if start >> PAGE_SHIFT <= v < end >> PAGE_SHIFT]:
            del s.nonlinear[v]

    # --- queries -------------------------------------------------------------------------

    def regions(self, mm) -> list[tuple[int, int, int, bool]]:
        """``(start, end, prot, shared)`` of every region of mm (what a workload may touch)."""
        return [(r.start, r.end, r.prot, r.shared) for r in self._mm(mm).regions]

    def _page_for(self, s: _MmShadow, va: int, write: bool) -> Optional[np.ndarray]:
        r = s.find(va)
        if r is None:
            return None
        vpn = va >> PAGE_SHIFT
        if r.shared:
            pgoff = s.nonlinear.get(vpn, r.pgoff_of(va))
            return self._object_page(r.obj, pgoff)
        page = s.private.get(vpn)
        if page is not None:
            return page
        if r.obj is None:
            base = np.zeros(WORDS, dtype=np.uint64)
        else:
            base = self._object_page(r.obj, r.pgoff_of(va)).copy()
        if write:
            s.private[vpn] = base
        return base

    def expected(self, mm, va: int) -> Optional[int]:
        page = self._page_for(self._mm(mm), va, False)
        return None if page is None else int(page[(va & (PAGE_SIZE - 1)) >> 3])

    def store(self, mm, va: int, value: int) -> None:
        self.stores += 1
        s = self._mm(mm)
        page = self._page_for(s, va, True)
        r = s.find(va)
        if r is not None and not r.shared:
            s.written.add(va >> PAGE_SHIFT)
        if page is None:
            self.fail(f"store to 0x{va:x} of {mm!r} completed outside every mapping")
            return
        page[(va & (PAGE_SIZE - 1)) >> 3] = np.uint64(value & (2 ** 64 - 1))

    def load(self, mm, va: int, value: int, paddr: Optional[int] = None) -> None:
        self.loads += 1
        self.checks += 1
        want = self.expected(mm, va)
        if want is None:
            self.fail(f"load from 0x{va:x} of {mm!r} completed outside every mapping")
            return
        if int(value) != want:
            ptep, _, _ = lookup_pte(self.kernel.mem, mm.pgd, va)
            where = f" (paddr 0x{paddr:09x})" if paddr is not None else ""
            self.fail(f"lost write: load from 0x{va:x} of {mm!r}{where} returned {int(value):#x}, "
                      f"the last write there was {want:#x}", ptep)

    def replay(self, mms, which: np.ndarray, va: np.ndarray, value: np.ndarray,
               store: np.ndarray, paddr: np.ndarray) -> bool:
        """Completed stores and loads, in the order the memory performed them: access ``i``
        is a store (``store[i]``) or a load of ``value[i]`` at ``va[i]`` by ``mms[which[i]]``,
        at physical address ``paddr[i]``.  The same verdicts, reports and counts as calling
        :meth:`store` and :meth:`load` one access at a time, which it does when a page is not
        settled (outside every mapping, or a private file page this mm has not written yet:
        its first store copies the file page as it is then) or a load disagrees (so the
        report is the one-by-one report); otherwise it compares every word's loads with the
        word's last store before them (or its value before the batch) at once.  Returns
        whether it did so."""
        n = len(va)
        if n == 0:
            return True
        va = va.astype(np.uint64)
        vpn = va >> np.uint64(PAGE_SHIFT)
        keys, inverse = np.unique((which.astype(np.uint64) << np.uint64(40)) | vpn,
                                  return_inverse=True)
        inverse = inverse.reshape(-1)
        stored = np.zeros(len(keys), dtype=bool)
        stored[inverse[store]] = True
        slots: dict[int, int] = {}
        pages: list[np.ndarray] = []
        slot_of_key = []
        for k, (key, wrote) in enumerate(zip(keys.tolist(), stored.tolist())):
            v = key & ((1 << 40) - 1)
            s = self._mm(mms[key >> 40])
            r = s.find(v << PAGE_SHIFT)
            if r is None or not (r.shared or r.obj is None or v in s.private):
                return self._replay_each(mms, which, va, value, store, paddr)
            # An anonymous private page is kept from its first access on (zero, as a page
            # not kept reads), so two cores of one mm resolve it to one array.
            page = self._page_for(s, v << PAGE_SHIFT, wrote or r.obj is None)
            if id(page) not in slots:
                slots[id(page)] = len(pages)
                pages.append(page)
            slot_of_key.append(slots[id(page)])
        word = (np.asarray(slot_of_key, dtype=np.int64)[inverse] * WORDS
                + ((va & np.uint64(PAGE_SIZE - 1)) >> np.uint64(3)).astype(np.int64))
        order = np.argsort(word, kind="stable")         # by word, memory order within one
        w, st, val = word[order], store[order], value.astype(np.uint64)[order]
        before = np.concatenate(pages)[w]
        pos = np.arange(n)
        first = np.maximum.accumulate(np.where(np.r_[True, w[1:] != w[:-1]], pos, 0))
        last_store = np.maximum.accumulate(np.where(st, pos, -1))
        has = last_store >= first
        want = np.where(has, val[np.maximum(last_store, 0)], before)
        if (~st & (val != want)).any():
            return self._replay_each(mms, which, va, value, store, paddr)
        nstores = int(st.sum())
        self.stores += nstores
        self.loads += n - nstores
        self.checks += n - nstores
        for key, wrote in zip(keys.tolist(), stored.tolist()):
            if wrote:
                s = self._mm(mms[key >> 40])
                v = key & ((1 << 40) - 1)
                if not s.find(v << PAGE_SHIFT).shared:
                    s.written.add(v)
        # Each stored word's last value, page by page (``w`` is sorted, so a page's words
        # are one run of the selection).
        sel = np.flatnonzero(np.r_[w[1:] != w[:-1], True] & has)
        if len(sel):
            ws, vs = w[sel], val[last_store[sel]]
            slot = ws // WORDS
            bounds = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1], True]).tolist()
            for lo, hi in zip(bounds, bounds[1:]):
                pages[int(slot[lo])][ws[lo:hi] % WORDS] = vs[lo:hi]
        return True

    def _replay_each(self, mms, which, va, value, store, paddr) -> bool:
        for j, a, x, st, pa in zip(which.tolist(), va.tolist(), value.tolist(), store.tolist(),
                                   paddr.tolist()):
            if st:
                self.store(mms[j], a, x)
            else:
                self.load(mms[j], a, x, pa)
        return False

    def check_backing(self, mapping, pgoffs: Iterable[int]) -> None:
        """After msync: the file's backing store equals the shadow for each pgoff given."""
        for pgoff in pgoffs:
            self.checks += 1
            want = self._object_page(mapping, pgoff)
            data = mapping.backing.get(pgoff)
            have = _as_words(data) if data is not None else np.zeros(WORDS, dtype=np.uint64)
            if not np.array_equal(have, want):
                i = int(np.nonzero(have != want)[0][0])
                self.fail(f"lost write: {mapping.name!r} page {pgoff} word {i} on backing store "
                          f"is {int(have[i]):#x}, the last write was {int(want[i]):#x}")
                return

    def shared_pgoffs(self, mm, start: int, end: int,
                      linear: bool = True) -> list[tuple[object, int]]:
        """``(file, pgoff)`` of every shared file page mapped by [start, end) of mm; with
        ``linear`` the vma's linear offsets (what msync writes), else the nonlinear ones."""
        s = self._mm(mm)
        out = []
        for r in s.regions:
            if not r.shared or not isinstance(r.obj, AddressSpace):
                continue
            for va in range(max(r.start, start), min(r.end, end), PAGE_SIZE):
                lin = r.pgoff_of(va)
                out.append((r.obj, lin if linear else s.nonlinear.get(va >> PAGE_SHIFT, lin)))
        return out

    def writeback_check(self, page) -> None:
        """No write may escape a writeback: when a page's contents go to the backing store
        with PG_dirty clear, every translation that can still write the page must leave a
        trace that makes the page dirty again.  A PTE with W is such a trace (page_mkclean
        counts a writable pte as dirty; try_to_unmap moves D to the page); a CPU TLB entry
        with W whose PTE is gone, write-protected or elsewhere is not (the core stores
        through it without touching memory's PTE).  A device entry is like a CPU one:
        the device never sets D, but while its PTE stays writable page_mkclean finds the PTE
        (and invalidates the device).  A page redirtied meanwhile (PG_dirty set) will be
        written again."""
        self.checks += 1
        if page.test(PG.dirty):
            return
        mem = self.kernel.mem
        by_asid = {mm.asid: mm for mm in self.owner.live_mms()}
        for src, entry in self.owner.all_entries():
            lo, hi = _entry_span(entry)
            if not lo <= page.pfn < hi or not _entry_writable(entry):
                continue
            mm = by_asid.get(entry.asid)
            if mm is None:
                continue        # an exiting mm: no thread of it runs any more
            va = entry.vpn << PAGE_SHIFT
            ptep, val, _ = lookup_pte(mem, mm.pgd, va)
            if val & _PAGE_V and val & _PAGE_W and (val & PPN_MASK) >> PPN_SHIFT == entry.ppn:
                continue        # page_mkclean will find the writable pte: the page redirties
            self.fail(f"writeback of clean {page!r} while {src} holds writable {entry} "
                      f"(0x{va:x} of {mm!r}) whose pte is {describe(val)}: a store through it "
                      f"would leave no trace", ptep)
            return


class DirtChecker(Checker):
    """(f) Every write is accounted: at a quiescent point nothing holds data newer than its
    backing copy without something saying so.

    * A page-cache page (of every live file, shmem included) whose frame differs from its
      file's backing copy, and a swap-cache page whose frame differs from its swap slot, must
      be *dirty somewhere*: ``PG_dirty``, a present PTE with D of a live mm that maps it, a
      device TLB entry with D, or a writable spte of a secondary-MMU driver (the driver marks
      the page dirty when it drops the spte, whether or not the device TLB still holds it).  Otherwise reclaim would drop the page (or migration would
      copy it clean) and the write would be gone without anything noticing.
    * A file page the program wrote (the shadow knows it) that is no longer in memory must
      have a backing copy equal to what the program wrote last -- judged only while the
      shadow is complete (no writer bypasses it: :meth:`ShadowMemory.writes_untracked`).

    ``check()`` is valid only at a quiescent point: a zap, an unmap or a writeback in flight
    moves D from a PTE to the page under locks the check does not take.
    """
    name = "dirt"
    title = "(f) no unaccounted dirt"
    guarantee = ("at every quiescent point a page whose data differs from its file or swap "
                 "copy is dirty somewhere (PG_dirty, a PTE with D, a device entry with D, a "
                 "writable spte), "
                 "and a written file page no longer in memory has its last write on disk")

    def _dirty_pfns(self) -> set[int]:
        mem = self.kernel.mem
        out = set()
        for mm in self.owner.live_mms():
            for _va, _ptep, val, level in present_leaves(mem, mm.pgd):
                if val & _PAGE_D:
                    out.update(range(*_leaf_pfn_span(val, level)))
        for _src, entry in self.owner.device_entries():
            if entry.d:
                out.update(range(*_entry_span(entry)))
        for sec in self.owner.secondaries:
            out.update(sec.writable_pfns())
        return out

    def check(self) -> None:
        kernel = self.kernel
        words = kernel.mem.words
        dirty = None
        shadow = self.owner.shadow

        def frame(pfn):
            return words[pfn * WORDS:(pfn + 1) * WORDS]

        def unaccounted(page, disk, where: str) -> bool:
            nonlocal dirty
            self.checks += 1
            if page.test(PG.dirty) or np.array_equal(frame(page.pfn), disk):
                return False
            if dirty is None:
                dirty = self._dirty_pfns()
            if page.pfn in dirty:
                return False
            i = int(np.nonzero(frame(page.pfn) != disk)[0][0])
            self.fail(f"lost dirt: {page!r} holds word {i} = {int(frame(page.pfn)[i]):#x}, "
                      f"{where} has {int(disk[i]):#x}, and nothing says the page is dirty "
                      f"(PG_dirty clear, no PTE or device entry with D, no writable spte): "
                      f"reclaim would drop the write")
            return True

        zero = np.zeros(WORDS, dtype=np.uint64)
        swap = kernel.swap
        mappings = {id(m): m for m in kernel.files.values()}
        for page in kernel.pages:           # every page-cache page, of any file
            mapping = page.mapping
            if isinstance(mapping, AddressSpace):
                if mapping.page_tree.get(page.index) is not page:
                    continue
                mappings.setdefault(id(mapping), mapping)
                data = mapping.backing.get(page.index)
                disk = _as_words(data) if data is not None else zero
                if unaccounted(page, disk, f"{mapping.name!r} page {page.index} on disk"):
                    return
            elif swap is not None and page.test(PG.swapcache) and page._count > 0:
                if unaccounted(page, swap.data[page.private.offset],
                               f"swap slot {page.private.offset}"):
                    return
        if not shadow.complete:
            return                          # a writer bypasses the shadow: no last write known
        for mapping in mappings.values():
            for (oid, pgoff), want in shadow.objects.items():
                if oid != id(mapping) or pgoff in mapping.page_tree or pgoff >= mapping.npages:
                    continue
                self.checks += 1
                data = mapping.backing.get(pgoff)
                have = _as_words(data) if data is not None else zero
                if not np.array_equal(have, want):
                    i = int(np.nonzero(have != want)[0][0])
                    self.fail(f"lost write: {mapping.name!r} page {pgoff} is not in memory and "
                              f"word {i} on disk is {int(have[i]):#x}, the last write was "
                              f"{int(want[i]):#x}")
                    return


def _page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _as_words(data) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype == np.uint64:
        return arr.reshape(-1)
    return np.frombuffer(arr.tobytes(), dtype=np.uint64)


# ---------------------------------------------------------------------------------------------
# The bundle.

class Checkers:
    """Every checker of one kernel, sharing one :class:`CheckContext`.

    Parameters
    ----------
    kernel : Kernel
    seed : int, optional
        Printed in every violation.
    command : str, optional
        The command that reproduces the run, printed in every violation.
    raise_on_violation : bool
        Raise :class:`InvariantViolation` at once (default).  When False, violations are only
        collected in ``self.violations`` (the demo shows every checker's verdict at the end).

    ``install()`` chains onto ``arch.observer`` for the frame and writeback events.
    """

    def __init__(self, kernel, *, seed: Optional[int] = None, command: str = "",
                 raise_on_violation: bool = True):
        self.kernel = kernel
        self.ctx = CheckContext(seed=seed, command=command)
        self.raise_on_violation = raise_on_violation
        self.violations: list[InvariantViolation] = []
        self.rmap = RmapChecker(self)
        self.frame = FrameChecker(self)
        self.tlb = TlbChecker(self)
        self.notifier = NotifierChecker(self)
        self.shadow = ShadowMemory(self)
        self.dirt = DirtChecker(self)
        self.secondaries: list = []            # pyrmap.devdriver.DeviceMmuDriver
        self._prev_observer: Optional[Callable] = None
        self._installed = False

    @property
    def all(self) -> list[Checker]:
        return [self.tlb, self.frame, self.shadow, self.notifier, self.rmap, self.dirt]

    # --- wiring ------------------------------------------------------------------------------

    def install(self) -> "Checkers":
        if self._installed:
            return self
        arch = self.kernel.arch
        self._prev_observer = arch.observer
        arch.observer = self._observe
        self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            self.kernel.arch.observer = self._prev_observer
            self._installed = False

    def _observe(self, event: str, **details) -> None:
        if self._prev_observer is not None:
            self._prev_observer(event, **details)
        if event in ("frame_free", "frame_alloc"):
            self.frame.on_event(event, **details)
        elif event == "writeback_start":
            self.shadow.writeback_check(details["page"])
        elif event == "cow_copy":
            self.shadow.on_cow_copy(details["mm"], details["address"])
        elif event == "returned":
            self.tlb.on_return(**details)
        elif event == "dev_fill":
            self.notifier.on_dev_fill(details["entry"])

    def add_secondary(self, mm, config=None) -> "SecondaryMmu":
        """Register a secondary-MMU driver (:class:`pyrmap.devdriver.DeviceMmuDriver`) on
        ``mm`` with this bundle as its checkers: it reports (b) and (d) itself, and checker
        (b) looks at its record of device translations whenever a frame is freed.

        Raises
        ------
        OSError
            Registration failed (``EINTR``, ``ENOMEM``); nothing changed.
        """
        from .devdriver import register_device
        n = sum(1 for sec in self.secondaries if sec.mm is mm)
        return register_device(mm, checkers=self, config=config,
                               name=f"dev{mm.asid}" + (f".{n}" if n else ""))

    def live_mms(self) -> list:
        return [mm for mm in self.kernel.mms
                if not mm.dead and mm.mm_users > 0]

    # --- reporting ---------------------------------------------------------------------------

    def report(self, checker: str, message: str, ptep: Optional[int] = None) -> None:
        violation = InvariantViolation(checker, message, self.ctx, self.pte_history(ptep))
        self.violations.append(violation)
        if self.raise_on_violation:
            raise violation

    def pte_history(self, ptep: Optional[int]) -> list[str]:
        if ptep is None:
            return []
        out = [str(w) for w in self.kernel.arch.pte_history(ptep)]
        out.append(f"now: {describe(self.kernel.mem.read(ptep))} at 0x{ptep:09x}")
        return out

    # --- what reaches a frame ----------------------------------------------------------------

    def core_entries(self) -> Iterator[tuple[str, object]]:
        arch = self.kernel.arch
        for core in range(arch.ncores):
            for entry in arch.tlb_entries(core):
                yield f"core{core} TLB", entry

    def device_entries(self) -> Iterator[tuple[str, object]]:
        for entry in self.kernel.arch.dev_entries():
            yield "device TLB", entry

    def all_entries(self) -> Iterator[tuple[str, object]]:
        yield from self.core_entries()
        yield from self.device_entries()

    def reachers(self, pfn: int, writable_only: bool = False) -> Iterator[str]:
        """Descriptions of everything that reaches frame ``pfn`` right now.

        With ``writable_only``, what could still *write* it: writable or dirty PTEs and TLB
        entries of mms that still have users (an exiting mm's stale entries are reachable
        but no thread of it runs any more)."""
        live = {mm.asid for mm in self.live_mms()}
        for src, entry in self.all_entries():
            lo, hi = _entry_span(entry)
            if not lo <= pfn < hi:
                continue
            if writable_only and (entry.asid not in live or
                                  not (_entry_writable(entry) or entry.d)):
                continue
            yield f"{src} holds {entry}"
        for sec in self.secondaries:
            if writable_only:
                continue
            va = sec.reaches(pfn)
            if va is not None:
                yield f"secondary MMU of {sec.mm!r} maps 0x{va:x} to it"
        mem = self.kernel.mem
        for mm in self.live_mms():
            for va, ptep, val, level in present_leaves(mem, mm.pgd, maps=pfn):
                if not writable_only or val & (_PAGE_W | _PAGE_D):
                    yield f"pte 0x{ptep:09x} (0x{va:x} of {mm!r}) maps it: {describe(val)}"
            if not writable_only and pfn in table_frames(mem, mm.pgd):
                yield f"it is a page-table page of {mm!r}"

    # --- driving -----------------------------------------------------------------------------

    def step(self, operation: str) -> None:
        """Start a new step (numbered) of the run; violations name it."""
        self.ctx.step += 1
        self.ctx.operation = operation

    def check_all(self) -> None:
        """Every quiescent-point check: rmap completeness, TLB coherence, closed windows,
        accounted dirt."""
        self.rmap.check()
        self.tlb.check()
        self.notifier.check()
        self.dirt.check()

    def verdicts(self) -> list[tuple[str, int, int, str]]:
        """``(checker, checks, violations, verdict)`` for each checker; the verdict is
        ``PASS``, ``FAIL`` or :data:`NOT_EXERCISED`."""
        return [(c.name, c.checks, c.violations, c.verdict) for c in self.all]

    def not_exercised(self) -> list[str]:
        """Names of the checkers that made no check."""
        return [c.name for c in self.all if not c.exercised]
