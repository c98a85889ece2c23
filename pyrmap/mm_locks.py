"""mm_take_all_locks / mm_drop_all_locks (mm/mmap.c, 2008, commit 7906d00cd1).

Holding mmap_sem for write stops faults and every pte/vma change made under mmap_sem; adding
every ``i_mmap_lock`` and every ``anon_vma->lock`` of the mm's VMAs also stops truncation and
every rmap walk (try_to_unmap, page_referenced, page_mkclean) that could reach the mm.  With
all of them held nothing can be inside an ``invalidate_range_start``/``end`` section or an rmap
walk of this mm, which is what :func:`pyrmap.mmu_notifier.mmu_notifier_register` needs.

Each mapping and anon_vma is locked once even when several VMAs share it: the anon_vma is
marked through ``anon_vma.mm_all_locks`` (the kernel borrows the low bit of ``head.next``), the
mapping through ``mapping.mm_all_locks`` (``AS_MM_ALL_LOCKS``).  The locks are taken in the
lock-order tree's order (every i_mmap_lock, then every anon_vma->lock), and one global mutex
per kernel (``mm_all_locks_mutex``) serialises concurrent takers, which is what makes taking
many locks of one class safe.
"""

from __future__ import annotations

import errno
import weakref

__all__ = ["mm_take_all_locks", "mm_drop_all_locks", "EINTR"]

EINTR = errno.EINTR

_mutexes: "weakref.WeakKeyDictionary[object, object]" = weakref.WeakKeyDictionary()


def _mm_all_locks_mutex(kernel):
    lock = _mutexes.get(kernel)
    if lock is None:
        lock = kernel.arch.new_lock("mm_all_locks_mutex")
        _mutexes[kernel] = lock
    return lock


def _bug(msg: str):
    from .rmap import KernelBug
    return KernelBug(msg)


def _check_mmap_sem_write(mm, who: str) -> None:
    sem = mm.mmap_sem
    if not sem.is_write_locked():
        raise _bug(f"{who} needs mmap_sem held for write on {mm!r}")


def vm_lock_anon_vma(mm, anon_vma) -> None:
    if not anon_vma.mm_all_locks:
        anon_vma.lock.acquire()
        if anon_vma.mm_all_locks:
            raise _bug(f"{anon_vma!r} marked by another mm_take_all_locks")
        anon_vma.mm_all_locks = True


def vm_lock_mapping(mm, mapping) -> None:
    if not mapping.mm_all_locks:
        # The kernel sets AS_MM_ALL_LOCKS before spinning; only this mutex-serialised path
        # reads the mark, so setting it once the lock is held is equivalent, and an acquire
        # that raises leaves no mark behind for the unwinding to trip on.
        mapping.i_mmap_lock.acquire()
        mapping.mm_all_locks = True


def vm_unlock_anon_vma(anon_vma) -> None:
    if anon_vma.mm_all_locks:
        anon_vma.mm_all_locks = False
        anon_vma.lock.release()


def vm_unlock_mapping(mapping) -> None:
    if mapping.mm_all_locks:
        mapping.i_mmap_lock.release()
        mapping.mm_all_locks = False


def mm_take_all_locks(mm) -> int:
    """Take every i_mmap_lock and anon_vma->lock reachable from ``mm``'s VMAs.

    Caller holds ``mm.mmap_sem`` for write (raises :class:`pyrmap.rmap.KernelBug` otherwise)
    and no other VM lock; a thread must not nest two calls.  The current thread's pending
    signal is checked before each VMA in both passes.

    Returns
    -------
    int
        0 with every lock held (release them with :func:`mm_drop_all_locks`), or ``-EINTR``
        when a signal was pending: then every lock taken so far has been dropped again and
        nothing is held.
    """
    _check_mmap_sem_write(mm, "mm_take_all_locks")
    kernel = mm.kernel
    arch = kernel.arch
    _mm_all_locks_mutex(kernel).acquire()
    lockdep = arch.lockdep
    if lockdep is not None:
        # Several i_mmap_lock / anon_vma->lock at once are legal only in this context.
        lockdep.enter_mm_all_locks(arch.current_thread())
    taken = False
    # An injected signal (pyrmap.faults) interrupts this call at its first check, if any.
    interrupted = None
    try:
        for vma in mm.mmap:
            if interrupted is None:
                interrupted = kernel.faults.fail("eintr")
            if arch.signal_pending() or interrupted:
                kernel.stats["mm_take_all_locks_eintr"] += 1
                return -EINTR
            if vma.vm_file is not None:
                vm_lock_mapping(mm, vma.vm_file)
        for vma in mm.mmap:
            if arch.signal_pending():
                kernel.stats["mm_take_all_locks_eintr"] += 1
                return -EINTR
            if vma.anon_vma is not None:
                vm_lock_anon_vma(mm, vma.anon_vma)
        taken = True
        kernel.stats["mm_take_all_locks"] += 1
        return 0
    finally:
        if not taken:                 # -EINTR, or an exception: leave nothing held
            mm_drop_all_locks(mm)


def mm_drop_all_locks(mm) -> None:
    """Drop every lock :func:`mm_take_all_locks` took (also after a partial take).

    Caller holds ``mm.mmap_sem`` for write and the mm_all_locks mutex (taken by
    :func:`mm_take_all_locks`); on return neither the marks nor the locks remain.
    """
    _check_mmap_sem_write(mm, "mm_drop_all_locks")
    for vma in mm.mmap:
        if vma.anon_vma is not None:
            vm_unlock_anon_vma(vma.anon_vma)
        if vma.vm_file is not None:
            vm_unlock_mapping(vma.vm_file)
    arch = mm.kernel.arch
    lockdep = arch.lockdep
    if lockdep is not None:
        lockdep.exit_mm_all_locks(arch.current_thread())
    _mm_all_locks_mutex(mm.kernel).release()
