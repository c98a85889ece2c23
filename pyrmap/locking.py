"""Locks of the engine, and the seed's lock-order tree as data, checked by a debug wrapper.

The comment at the top of the seed's rmap.c gives the order in which the mm takes its locks.
:data:`LOCK_ORDER` keeps it as a tree of lock-class names: ``(name, depth)`` in the kernel's
order, where a class is nested inside the nearest class above it with a smaller depth.  A
class must be taken *before* every class below it in its subtree; classes in different
subtrees (``lru_lock`` and ``swap_lock``) are not ordered against each other.  (The seed text
prints the list flattened; the depths are the kernel's indentation of that comment.)

:class:`LockDep` tracks, per engine thread, the locks held, and raises
:class:`LockOrderViolation` -- naming both locks and the thread -- when a thread takes a class
that must come before one it already holds.  It allows what the kernel allows:

* several ``PG_locked`` pages at once (migration holds the old and the new page);
* several ``anon_vma->lock`` and ``i_mmap_lock`` while the thread is inside the
  mm_take_all_locks context (:meth:`LockDep.enter_mm_all_locks`), which the kernel marks with
  the borrowed bits of ``anon_vma->head.next`` and ``AS_MM_ALL_LOCKS``;
* a second lock of any class taken with ``nested=True`` (``spin_lock_nested``,
  ``down_write_nested``: fork's two mmap_sems, mremap's two page-table locks).

:class:`SoftLock` and :class:`SoftRwSem` are the lock primitives of :class:`SoftArch`.  They
run against a small environment (:class:`LockEnv`: the current thread's name, yield points,
block/wake) so that the cosim arch can reuse them with waits that let simulated time pass.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Iterator, Optional, Protocol

__all__ = ["LOCK_ORDER", "LOCK_ALIASES", "LockError", "LockOrderViolation", "Deadlock",
           "LockDep", "LockEnv", "SoftLock", "SoftRwSem", "lock_class", "must_precede"]

#: The seed's lock-order tree: (lock class, depth), outermost first.
LOCK_ORDER: list[tuple[str, int]] = [
    ("i_mutex", 0),
    ("i_alloc_sem", 1),
    ("mmap_sem", 2),
    ("PG_locked", 3),
    ("i_mmap_lock", 4),
    ("anon_vma->lock", 5),
    ("page_table_lock", 6),
    ("lru_lock", 7),
    ("swap_lock", 7),
    ("mmlist_lock", 8),
    ("private_lock", 8),
    ("inode_lock", 8),
    ("sb_lock", 9),
    ("tree_lock", 9),
]

#: Other spellings of the same classes (the seed's comment uses several).
LOCK_ALIASES: dict[str, str] = {
    "inode->i_mutex": "i_mutex",
    "inode->i_alloc_sem": "i_alloc_sem",
    "mm->mmap_sem": "mmap_sem",
    "page->flags PG_locked": "PG_locked",
    "lock_page": "PG_locked",
    "mapping->i_mmap_lock": "i_mmap_lock",
    "mm->page_table_lock": "page_table_lock",
    "pte lock": "page_table_lock",
    "pte_lock": "page_table_lock",
    "ptl": "page_table_lock",
    "zone->lru_lock": "lru_lock",
    "mapping->private_lock": "private_lock",
    "mapping->tree_lock": "tree_lock",
}

#: Classes of which one thread may hold several inside the mm_take_all_locks context.
MM_ALL_LOCKS_CLASSES = frozenset({"anon_vma->lock", "i_mmap_lock"})
#: Classes of which one thread may always hold several.
MULTI_CLASSES = frozenset({"PG_locked"})


def lock_class(name: str) -> str:
    """The canonical lock-class name for ``name``."""
    return LOCK_ALIASES.get(name, name)


def _ancestors() -> dict[str, frozenset[str]]:
    result: dict[str, frozenset[str]] = {}
    stack: list[tuple[str, int]] = []
    for name, depth in LOCK_ORDER:
        while stack and stack[-1][1] >= depth:
            stack.pop()
        result[name] = frozenset(n for n, _ in stack)
        stack.append((name, depth))
    return result


_ANCESTORS = _ancestors()


def must_precede(first: str, second: str) -> bool:
    """True when lock class ``first`` must be taken before ``second`` (an ancestor in the tree)."""
    return lock_class(first) in _ANCESTORS.get(lock_class(second), frozenset())


class LockError(RuntimeError):
    """Misuse of a lock: release of a lock not held, unlock by a thread that is not the owner."""


class LockOrderViolation(RuntimeError):
    """A thread took locks against the seed's lock order."""


class Deadlock(RuntimeError):
    """Every engine thread is blocked (or a thread waits for a lock only it can release)."""


class LockDep:
    """Per-thread bookkeeping of held locks, checked against :data:`LOCK_ORDER`.

    Parameters
    ----------
    enabled : bool
        When False, nothing is tracked or checked.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.held: dict[str, list] = collections.defaultdict(list)
        self._all_locks: collections.Counter[str] = collections.Counter()
        self.checks = 0

    def check(self, thread: str, lock, *, nested: bool = False) -> None:
        """Raise :class:`LockOrderViolation` if ``thread`` may not take ``lock`` now.

        Called before the thread blocks on ``lock`` (so a wrong order is found even on a run
        where it does not deadlock).
        """
        if not self.enabled:
            return
        self.checks += 1
        cls = lock_class(lock.name)
        for other in self.held.get(thread, ()):
            ocls = lock_class(other.name)
            if ocls == cls:
                if nested or cls in MULTI_CLASSES:
                    continue
                if cls in MM_ALL_LOCKS_CLASSES and self._all_locks[thread]:
                    continue
                raise LockOrderViolation(
                    f"Thread {thread!r} takes a second {cls!r} lock ({lock!r}) while holding "
                    f"{other!r}; two locks of one class need nested=True or the "
                    f"mm_take_all_locks context")
            if must_precede(cls, ocls):
                raise LockOrderViolation(
                    f"Thread {thread!r} takes {cls!r} ({lock!r}) while holding {ocls!r} "
                    f"({other!r}); the lock order requires {cls!r} before {ocls!r}")

    def acquired(self, thread: str, lock) -> None:
        if self.enabled:
            self.held[thread].append(lock)

    def released(self, thread: str, lock) -> None:
        if not self.enabled:
            return
        held = self.held.get(thread, [])
        for i in range(len(held) - 1, -1, -1):
            if held[i] is lock:
                del held[i]
                return
        # The lock was taken by another thread (allowed for PG_locked) or before lockdep was on.

    def held_by(self, thread: str) -> list:
        return list(self.held.get(thread, ()))

    def enter_mm_all_locks(self, thread: str) -> None:
        """Mark ``thread`` as inside mm_take_all_locks (until :meth:`exit_mm_all_locks`)."""
        self._all_locks[thread] += 1

    def exit_mm_all_locks(self, thread: str) -> None:
        if self._all_locks[thread] <= 0:
            raise LockError(f"Thread {thread!r} leaves the mm_take_all_locks context it is not in")
        self._all_locks[thread] -= 1

    @contextlib.contextmanager
    def mm_all_locks(self, thread: str) -> Iterator[None]:
        self.enter_mm_all_locks(thread)
        try:
            yield
        finally:
            self.exit_mm_all_locks(thread)


class LockEnv(Protocol):
    """What a lock needs from its environment (SoftArch, or the cosim arch)."""
    lockdep: Optional[LockDep]

    def current_thread(self) -> str: ...
    def yield_point(self, why: str = "") -> None: ...

    def lock_block(self, lock, why: str) -> None:
        """Wait until ``lock`` may have been released (then the caller re-checks).  Raise
        :class:`Deadlock` when no other thread can ever release it."""

    def lock_wake(self, lock) -> None:
        """``lock`` was released: threads blocked on it may re-check."""


class SoftLock:
    """A sleeping lock of lock class ``name`` (spinlocks and PG_locked alike).

    Contract: ``acquire`` is a yield point; it checks the lock order before waiting; when the
    lock is held by another thread the caller blocks (other threads run) until it is free.
    ``release`` raises :class:`LockError` unless the calling thread holds the lock -- except
    for ``PG_locked``, which the kernel may unlock from another thread (I/O completion), when
    ``any_thread_may_release`` is set.
    """

    def __init__(self, env: LockEnv, name: str, *, any_thread_may_release: bool = False):
        self.env = env
        self.name = name
        self.owner: Optional[str] = None
        self.any_thread_may_release = any_thread_may_release
        self.contended = 0

    def __repr__(self) -> str:
        who = f" held by {self.owner!r}" if self.owner is not None else ""
        return f"<{self.name} {id(self) & 0xFFFFFF:06x}{who}>"

    def holders(self) -> str:
        return f"held by {self.owner!r}" if self.owner is not None else "free"

    def acquire(self, *, nested: bool = False) -> None:
        env = self.env
        env.yield_point(f"lock {self.name}")
        me = env.current_thread()
        if self.owner == me:
            raise Deadlock(f"Thread {me!r} takes {self!r}, which it already holds")
        if env.lockdep is not None:
            env.lockdep.check(me, self, nested=nested)
        while self.owner is not None:
            self.contended += 1
            env.lock_block(self, f"lock {self.name}")
        self.owner = me
        if env.lockdep is not None:
            env.lockdep.acquired(me, self)

    def trylock(self) -> bool:
        me = self.env.current_thread()
        if self.owner is not None:
            return False
        self.owner = me
        if self.env.lockdep is not None:
            self.env.lockdep.acquired(me, self)
        return True

    def release(self) -> None:
        me = self.env.current_thread()
        if self.owner is None:
            raise LockError(f"Thread {me!r} releases {self.name!r}, which is not locked")
        if self.owner != me and not self.any_thread_may_release:
            raise LockError(f"Thread {me!r} releases {self!r}, which it does not hold")
        owner, self.owner = self.owner, None
        if self.env.lockdep is not None:
            self.env.lockdep.released(owner, self)
        self.env.lock_wake(self)

    def is_locked(self) -> bool:
        return self.owner is not None

    def held_by_me(self) -> bool:
        return self.owner is not None and self.owner == self.env.current_thread()

    def __enter__(self) -> "SoftLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class SoftRwSem:
    """A reader/writer semaphore of lock class ``name`` (mmap_sem).

    Writers are preferred as in the kernel's rwsem: once a writer waits, new readers wait too
    (so a thread that takes it for read twice can deadlock against a writer, as in Linux).
    ``down_*`` are yield points and check the lock order; ``up_*`` raise :class:`LockError`
    unless the calling thread holds the semaphore in that mode.
    """

    def __init__(self, env: LockEnv, name: str):
        self.env = env
        self.name = name
        self.readers: collections.Counter[str] = collections.Counter()
        self.writer: Optional[str] = None
        self.writers_waiting = 0

    def __repr__(self) -> str:
        return f"<{self.name} {id(self) & 0xFFFFFF:06x} {self.holders()}>"

    def holders(self) -> str:
        if self.writer is not None:
            return f"write-held by {self.writer!r}"
        if self.readers:
            return "read-held by " + ", ".join(repr(r) for r in sorted(self.readers))
        return "free"

    def _check(self, me: str, nested: bool) -> None:
        if self.writer == me:
            raise Deadlock(f"Thread {me!r} takes {self!r}, which it holds for write")
        if self.env.lockdep is not None:
            self.env.lockdep.check(me, self, nested=nested)

    def down_read(self, *, nested: bool = False) -> None:
        env = self.env
        env.yield_point(f"down_read {self.name}")
        me = env.current_thread()
        self._check(me, nested)
        while self.writer is not None or self.writers_waiting:
            env.lock_block(self, f"down_read {self.name}")
        self.readers[me] += 1
        if env.lockdep is not None:
            env.lockdep.acquired(me, self)

    def down_read_trylock(self) -> bool:
        me = self.env.current_thread()
        if self.writer is not None or self.writers_waiting:
            return False
        self.readers[me] += 1
        if self.env.lockdep is not None:
            self.env.lockdep.acquired(me, self)
        return True

    def up_read(self) -> None:
        me = self.env.current_thread()
        if not self.readers[me]:
            del self.readers[me]
            raise LockError(f"Thread {me!r} calls up_read on {self!r} without holding it")
        self.readers[me] -= 1
        if not self.readers[me]:
            del self.readers[me]
        if self.env.lockdep is not None:
            self.env.lockdep.released(me, self)
        self.env.lock_wake(self)

    def down_write(self, *, nested: bool = False) -> None:
        env = self.env
        env.yield_point(f"down_write {self.name}")
        me = env.current_thread()
        self._check(me, nested)
        if self.readers[me]:
            raise Deadlock(f"Thread {me!r} takes {self!r} for write while holding it for read")
        del self.readers[me]
        self.writers_waiting += 1
        try:
            while self.writer is not None or self.readers:
                env.lock_block(self, f"down_write {self.name}")
        finally:
            self.writers_waiting -= 1
        self.writer = me
        if env.lockdep is not None:
            env.lockdep.acquired(me, self)

    def down_write_trylock(self) -> bool:
        me = self.env.current_thread()
        if self.writer is not None or self.readers:
            return False
        self.writer = me
        if self.env.lockdep is not None:
            self.env.lockdep.acquired(me, self)
        return True

    def up_write(self) -> None:
        me = self.env.current_thread()
        if self.writer != me:
            raise LockError(f"Thread {me!r} calls up_write on {self!r} without holding it "
                            f"for write")
        self.writer = None
        if self.env.lockdep is not None:
            self.env.lockdep.released(me, self)
        self.env.lock_wake(self)

    def downgrade_write(self) -> None:
        me = self.env.current_thread()
        if self.writer != me:
            raise LockError(f"Thread {me!r} downgrades {self!r} without holding it for write")
        self.writer = None
        self.readers[me] += 1
        self.env.lock_wake(self)

    def is_locked(self) -> bool:
        return self.writer is not None or bool(self.readers)

    def is_write_locked(self) -> bool:
        return self.writer is not None

    def held_by_me(self) -> bool:
        me = self.env.current_thread()
        return self.writer == me or self.readers.get(me, 0) > 0
