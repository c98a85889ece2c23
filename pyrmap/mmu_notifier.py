"""The mmu-notifier core (mm/mmu_notifier.c, include/linux/mmu_notifier.h, 2008, cddb8a5c14).

A secondary MMU (a KVM shadow page table, a GRU-style device TLB) subclasses
:class:`MmuNotifier` and registers it on an mm; the VM then calls it whenever it changes or
drops a primary translation, before the page can be freed or reused.

Callbacks and their context (the driver's contract):

``release(mm)``
    The mm is exiting (``exit_mmap``) or the notifier is being unregistered.  Tear down every
    secondary mapping: all pages are about to be freed.
``clear_flush_young(mm, address) -> int``
    Called right after the primary A bit was cleared.  Clear and flush the secondary accessed
    state; return 1 if the secondary MMU had the page young.
``invalidate_page(mm, address)``
    The primary pte was cleared and every CPU TLB flushed; called with the pte lock held and
    before the page reference is dropped.  Drop the secondary translation.
``invalidate_range_start(mm, start, end)`` / ``invalidate_range_end(mm, start, end)``
    Always paired.  Between them the VM clears ptes of [start, end) and may free their pages:
    drop secondary translations in start and install none in the range until the matching end.

Readers walk the notifier list inside a read-side section (the kernel's ``rcu_read_lock``);
:func:`mmu_notifier_unregister` and :func:`mmu_notifier_release` wait for every reader of the
mm (``synchronize_rcu``) before they return, so once :func:`mmu_notifier_unregister` returns
no callback of that notifier is running or will run.  Notifiers are kept most recent first
(``hlist_add_head``), and callbacks run in that order.

Every entry point is a no-op (and costs one attribute test) when the mm has no notifiers.
"""

from __future__ import annotations

import contextlib
import errno
import weakref
from typing import Iterator, NamedTuple, Optional

from .mm_locks import mm_drop_all_locks, mm_take_all_locks
from .pgtable_generic import ptep_clear_flush, ptep_clear_flush_young

__all__ = [
    "MmuNotifier", "MmuNotifierMm", "RecordingNotifier", "NotifierEvent",
    "mm_has_notifiers", "mmu_notifier_register", "__mmu_notifier_register",
    "mmu_notifier_register_restarting",
    "mmu_notifier_unregister", "mmu_notifier_release", "__mmu_notifier_release",
    "mmu_notifier_invalidate_page", "mmu_notifier_invalidate_range_start",
    "mmu_notifier_invalidate_range_end", "mmu_notifier_range", "mmu_notifier_clear_flush_young",
    "ptep_clear_flush_notify", "ptep_clear_flush_young_notify", "fail_allocations",
    "allocation_fails",
    "ENOMEM", "EINTR",
]

ENOMEM = errno.ENOMEM
EINTR = errno.EINTR


def _bug(msg: str):
    from .rmap import KernelBug
    return KernelBug(msg)


class MmuNotifier:
    """Base class of a secondary-MMU driver's notifier (``struct mmu_notifier`` + its ops).

    Override the callbacks the driver needs; the defaults do nothing (and
    :meth:`clear_flush_young` answers 0), like a NULL op in the kernel.  A notifier is on at
    most one mm at a time.
    """

    def __init__(self):
        self._mm = None          # the mm whose list holds us (hlist_unhashed when None)
        #: The mm whose mm_struct this notifier pins: set by register, kept when exit's
        #: release unlinks it, cleared by unregister (which drops the pin).
        self._pinned = None

    @property
    def registered(self) -> bool:
        """True while the notifier is on an mm's list (``!hlist_unhashed``)."""
        return self._mm is not None

    def release(self, mm) -> None:
        pass

    def clear_flush_young(self, mm, address: int) -> int:
        return 0

    def invalidate_page(self, mm, address: int) -> None:
        pass

    def invalidate_range_start(self, mm, start: int, end: int) -> None:
        pass

    def invalidate_range_end(self, mm, start: int, end: int) -> None:
        pass


class MmuNotifierMm:
    """``struct mmu_notifier_mm``: an mm's notifier list, its lock and its read-side state.

    Members
    -------
    list : list of MmuNotifier
        Most recently registered first.
    lock : Lock
        ``mmu_notifier_mm->lock``: serialises list changes (readers do not take it).
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.list: list[MmuNotifier] = []
        self.lock = kernel.arch.new_lock("mmu_notifier_mm->lock")
        self._readers: list[str] = []   # threads inside a read-side section

    # rcu_read_lock / rcu_read_unlock / synchronize_rcu, scoped to this mm's list.
    @contextlib.contextmanager
    def read_section(self) -> Iterator[list[MmuNotifier]]:
        """A read-side section; yields a snapshot of the list to iterate."""
        me = self.kernel.arch.current_thread()
        self._readers.append(me)
        try:
            yield list(self.list)
        finally:
            self._readers.remove(me)

    def synchronize(self) -> None:
        """Wait until no read-side section of this mm is running (``synchronize_rcu``)."""
        arch = self.kernel.arch
        me = arch.current_thread()
        if me in self._readers:
            raise _bug("synchronize_rcu called inside a read-side section of the same mm "
                       f"by thread {me!r} (an unregister from a notifier callback?)")
        while self._readers:
            arch.yield_point("synchronize_rcu")


# Fault injection for the -ENOMEM path of registration.
_failing: "weakref.WeakSet[object]" = weakref.WeakSet()


@contextlib.contextmanager
def fail_allocations(kernel) -> Iterator[None]:
    """Test hook: inside the block, the engine's small-object allocations on ``kernel`` fail:
    :func:`mmu_notifier_register` returns ``-ENOMEM`` (no :class:`MmuNotifierMm`) and so does
    :func:`pyrmap.rmap.anon_vma_prepare` (no anon_vma)."""
    _failing.add(kernel)
    try:
        yield
    finally:
        _failing.discard(kernel)


def allocation_fails(kernel) -> bool:
    """True inside :func:`fail_allocations` for ``kernel``."""
    return kernel in _failing


def _mmu_notifier_mm_alloc(kernel) -> Optional[MmuNotifierMm]:
    if allocation_fails(kernel):
        return None
    return MmuNotifierMm(kernel)


def mm_has_notifiers(mm) -> bool:
    return mm.mmu_notifier_mm is not None and bool(mm.mmu_notifier_mm.list)


# ---------------------------------------------------------------------------------------------
# Registration.

def _do_mmu_notifier_register(mn: MmuNotifier, mm, take_mmap_sem: bool) -> int:
    if not isinstance(mn, MmuNotifier):
        raise TypeError(f"Notifier must be an MmuNotifier, not {mn!r}")
    if mm.mm_users <= 0:
        raise _bug(f"mmu_notifier_register on {mm!r} with mm_users {mm.mm_users}")
    if mn.registered:
        raise _bug(f"{mn!r} is already registered on {mn._mm!r}")
    if mn._pinned is not None:
        raise _bug(f"{mn!r} was registered on {mn._pinned!r} and never unregistered; "
                   f"unregister it before registering it again")
    kernel = mm.kernel
    new = _mmu_notifier_mm_alloc(kernel)
    if new is None:
        kernel.stats["mmu_notifier_register_enomem"] += 1
        return -ENOMEM
    if take_mmap_sem:
        mm.mmap_sem.down_write()
    try:
        ret = mm_take_all_locks(mm)
        if ret:
            return ret
        try:
            if mm.mmu_notifier_mm is None:
                mm.mmu_notifier_mm = new
            mm.mm_count += 1          # pins the mm_struct until unregister's mmdrop
            mnm = mm.mmu_notifier_mm
            with mnm.lock:
                mnm.list.insert(0, mn)
                mn._mm = mm
                mn._pinned = mm
        finally:
            mm_drop_all_locks(mm)
    finally:
        if take_mmap_sem:
            mm.mmap_sem.up_write()
    kernel.stats["mmu_notifier_registered"] += 1
    return 0


def mmu_notifier_register(mn: MmuNotifier, mm) -> int:
    """Attach ``mn`` to ``mm`` so that it sees every later invalidation.

    Caller holds no VM lock and keeps ``mm.mm_users > 0`` (so exit cannot run concurrently).
    Takes ``mmap_sem`` for write and every rmap lock of the mm (:func:`mm_take_all_locks`).
    On success no invalidate_range_start/end section, rmap walk or page-table change of the mm
    was running when ``mn`` was inserted, so the driver sees every later start together with
    its end, never an unmatched end.

    Returns
    -------
    int
        0; ``-ENOMEM`` when the notifier list could not be allocated; ``-EINTR`` when a
        signal was pending.  On failure nothing changed: ``mn`` is not registered and no lock
        is held.
    """
    return _do_mmu_notifier_register(mn, mm, True)


#: Restarts of an interrupted registration before giving up (a fault plan below 1 passes).
MAX_REGISTER_RESTARTS = 64


def mmu_notifier_register_restarting(mn: MmuNotifier, mm) -> int:
    """:func:`mmu_notifier_register`, restarted after ``-EINTR`` once the signal has been
    handled (none is pending any more), as a syscall restarts (-ERESTARTSYS).  A signal still
    pending ends it with ``-EINTR``; so does :data:`MAX_REGISTER_RESTARTS` restarts.  Same
    locking contract and return values as :func:`mmu_notifier_register`."""
    kernel = mm.kernel
    rc = mmu_notifier_register(mn, mm)
    restarts = 0
    while (rc == -EINTR and not kernel.arch.signal_pending()
           and restarts < MAX_REGISTER_RESTARTS):
        restarts += 1
        kernel.stats["mmu_notifier_register_restarts"] += 1
        rc = mmu_notifier_register(mn, mm)
    return rc


def __mmu_notifier_register(mn: MmuNotifier, mm) -> int:
    """:func:`mmu_notifier_register` for a caller that already holds mmap_sem for write."""
    return _do_mmu_notifier_register(mn, mm, False)


def mmu_notifier_unregister(mn: MmuNotifier, mm) -> None:
    """Detach ``mn`` from ``mm``, calling its ``release`` if exit has not already done so.

    Caller holds no VM lock and must not call it from a callback of ``mm``'s notifiers.
    On return no callback of ``mn`` is running or will run, and the mm_struct pin taken by
    registration is dropped.  The driver must have dropped every secondary translation (its
    ``release`` is the place).  ``release`` runs while ``mn`` is still on the list (so a
    racing invalidation still reaches it), and ``mn`` is unlinked after it; with
    ``kernel.quirks.notifier_release_unlink_first`` the 2008 order (unlink, then release) is
    used, as in :func:`__mmu_notifier_release`.  As in the kernel of 3ad3d901bbcf, an
    unregister racing with exit's release may call ``release`` twice; drivers tolerate it.

    Raises
    ------
    KernelBug
        ``mn`` is not registered on ``mm``: never registered, registered on another mm, or
        already unregistered.  Nothing changed (no ``release``, no mmdrop).
    """
    if mn._pinned is not mm:
        if mn._pinned is None:
            why = "it is not registered on any mm (never registered, or unregistered already)"
        else:
            why = f"it is registered on {mn._pinned!r}"
        raise _bug(f"mmu_notifier_unregister of {mn!r} from {mm!r}: {why}")
    if mm.mm_count <= 0:
        raise _bug(f"mmu_notifier_unregister on {mm!r} with mm_count {mm.mm_count}")
    mnm = mm.mmu_notifier_mm
    if mnm is None:
        raise _bug(f"mmu_notifier_unregister: {mm!r} never had a notifier registered")
    unlink_first = mm.kernel.quirks.notifier_release_unlink_first
    mnm.lock.acquire()
    if mn._mm is mm:
        if unlink_first:
            mnm.list.remove(mn)
            mn._mm = None
            mnm.lock.release()
            with mnm.read_section():
                mn.release(mm)
        else:
            mnm.lock.release()
            with mnm.read_section():
                mn.release(mm)
            with mnm.lock:
                if mn._mm is mm:
                    mnm.list.remove(mn)
                    mn._mm = None
    else:
        mnm.lock.release()
    mnm.synchronize()
    mn._pinned = None
    mm.mm_count -= 1                  # mmdrop
    mm.kernel.stats["mmu_notifier_unregistered"] += 1


# ---------------------------------------------------------------------------------------------
# Release at exit.

def __mmu_notifier_release(mm) -> None:
    """Call every notifier's ``release`` and empty the list (``exit_mmap``; mm has notifiers).

    Fixed order (3ad3d901bbcf): every ``release`` runs while the notifiers are still on the
    list, so an invalidation racing with exit still reaches them; then the list is emptied.
    With ``kernel.quirks.notifier_release_unlink_first`` the 2008 order is used instead: each
    notifier is unlinked and only then released, so a racing ``invalidate_page`` misses it.
    On return no callback of any of the mm's notifiers is running.
    """
    mnm = mm.mmu_notifier_mm
    kernel = mm.kernel
    if kernel.quirks.notifier_release_unlink_first:
        mnm.lock.acquire()
        while mnm.list:
            mn = mnm.list.pop(0)
            mn._mm = None
            with mnm.read_section():
                mnm.lock.release()
                mn.release(mm)
            mnm.lock.acquire()
        mnm.lock.release()
    else:
        with mnm.read_section() as notifiers:
            for mn in notifiers:
                mn.release(mm)
        with mnm.lock:
            while mnm.list:
                mn = mnm.list.pop(0)
                mn._mm = None
    mnm.synchronize()
    kernel.stats["mmu_notifier_release"] += 1


def mmu_notifier_release(mm) -> None:
    """Called from exit_mmap before any page of ``mm`` is freed; no-op without notifiers."""
    if mm_has_notifiers(mm):
        __mmu_notifier_release(mm)


# ---------------------------------------------------------------------------------------------
# Invalidations.

def mmu_notifier_invalidate_page(mm, address: int) -> None:
    """Tell every secondary MMU that the pte of ``address`` was cleared and flushed.

    Caller holds the pte lock and still holds the page reference."""
    if not mm_has_notifiers(mm):
        return
    mm.kernel.stats["mmu_notifier_invalidate_page"] += 1
    with mm.mmu_notifier_mm.read_section() as notifiers:
        for mn in notifiers:
            mn.invalidate_page(mm, address)


def mmu_notifier_invalidate_range_start(mm, start: int, end: int) -> None:
    """Open an invalidation window on [start, end): pair it with
    :func:`mmu_notifier_invalidate_range_end` (or use :func:`mmu_notifier_range`)."""
    if not mm_has_notifiers(mm):
        return
    mm.kernel.stats["mmu_notifier_range_start"] += 1
    with mm.mmu_notifier_mm.read_section() as notifiers:
        for mn in notifiers:
            mn.invalidate_range_start(mm, start, end)


def mmu_notifier_invalidate_range_end(mm, start: int, end: int) -> None:
    """Close the window opened by :func:`mmu_notifier_invalidate_range_start`."""
    if not mm_has_notifiers(mm):
        return
    mm.kernel.stats["mmu_notifier_range_end"] += 1
    with mm.mmu_notifier_mm.read_section() as notifiers:
        for mn in notifiers:
            mn.invalidate_range_end(mm, start, end)


@contextlib.contextmanager
def mmu_notifier_range(mm, start: int, end: int) -> Iterator[None]:
    """``with mmu_notifier_range(mm, start, end):`` brackets a page-table change of
    [start, end) with start and end; end runs even when the body raises."""
    if start >= end:
        raise ValueError(f"Invalidation range [0x{start:x}, 0x{end:x}) is empty")
    mmu_notifier_invalidate_range_start(mm, start, end)
    try:
        yield
    finally:
        mmu_notifier_invalidate_range_end(mm, start, end)


def mmu_notifier_clear_flush_young(mm, address: int) -> int:
    """OR of every notifier's ``clear_flush_young`` (all of them are called); 0 without
    notifiers.  Caller holds the pte lock."""
    if not mm_has_notifiers(mm):
        return 0
    young = 0
    with mm.mmu_notifier_mm.read_section() as notifiers:
        for mn in notifiers:
            young |= int(bool(mn.clear_flush_young(mm, address)))
    return young


def ptep_clear_flush_notify(vma, address: int, ptep: int) -> int:
    """:func:`pyrmap.pgtable_generic.ptep_clear_flush`, then ``invalidate_page``.

    Caller holds the pte lock.  On return the pte is clear, no CPU TLB maps ``address`` and
    every secondary MMU has dropped its translation.  Returns the old pte."""
    pte = ptep_clear_flush(vma, address, ptep)
    mmu_notifier_invalidate_page(vma.vm_mm, address)
    return pte


def ptep_clear_flush_young_notify(vma, address: int, ptep: int) -> int:
    """:func:`pyrmap.pgtable_generic.ptep_clear_flush_young` OR
    :func:`mmu_notifier_clear_flush_young`; both are always evaluated.  Caller holds the pte
    lock."""
    young = ptep_clear_flush_young(vma, address, ptep)
    young |= mmu_notifier_clear_flush_young(vma.vm_mm, address)
    return young


# ---------------------------------------------------------------------------------------------
# A test client.

class NotifierEvent(NamedTuple):
    """One callback a :class:`RecordingNotifier` saw."""
    kind: str          # "release", "clear_flush_young", "invalidate_page", "range_start", "range_end"
    mm: object
    start: Optional[int] = None
    end: Optional[int] = None
    thread: str = ""


class RecordingNotifier(MmuNotifier):
    """A notifier that records every callback in :attr:`events`, for tests and checkers.

    Parameters
    ----------
    name : str
        Shown in ``repr`` and useful when several are registered.
    young : iterable of int, optional
        Addresses :meth:`clear_flush_young` answers young for (once each: the answer clears
        them, as a secondary MMU clearing its accessed bit would).
    on_event : callable, optional
        Called with each :class:`NotifierEvent` after it is recorded (e.g. to check the
        primary state at the moment of the callback).

    Members
    -------
    events : list of NotifierEvent
    depth : int
        Open invalidate_range_start windows; :meth:`invalidate_range_end` without a start
        raises, so an unmatched end is caught where it happens.
    """

    def __init__(self, name: str = "rec", young=(), on_event=None):
        super().__init__()
        self.name = name
        self.young = set(young)
        self.on_event = on_event
        self.events: list[NotifierEvent] = []
        self.depth = 0

    def __repr__(self) -> str:
        return f"<RecordingNotifier {self.name} events={len(self.events)}>"

    def _record(self, kind, mm, start=None, end=None):
        thread = mm.kernel.arch.current_thread()
        ev = NotifierEvent(kind, mm, start, end, thread)
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def release(self, mm) -> None:
        self._record("release", mm)

    def clear_flush_young(self, mm, address: int) -> int:
        self._record("clear_flush_young", mm, address)
        if address in self.young:
            self.young.discard(address)
            return 1
        return 0

    def invalidate_page(self, mm, address: int) -> None:
        self._record("invalidate_page", mm, address)

    def invalidate_range_start(self, mm, start: int, end: int) -> None:
        self.depth += 1
        self._record("range_start", mm, start, end)

    def invalidate_range_end(self, mm, start: int, end: int) -> None:
        if self.depth <= 0:
            raise _bug(f"{self!r}: invalidate_range_end(0x{start:x}, 0x{end:x}) without a "
                       "matching invalidate_range_start")
        self.depth -= 1
        self._record("range_end", mm, start, end)
