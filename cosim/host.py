"""Host threads: the engine's synchronous code run inside a cocotb simulation.

The engine (rmap, the notifier core, the mm around them) is ordinary blocking Python.  Under
co-simulation each engine thread (a fault handler, the reclaim thread, a syscall) runs as a
host thread: a greenlet (:mod:`pyrmap.fibers`) whose parent is the cocotb task that started it.
Whenever the thread must let simulated time pass -- a PTE operation performed by the memory
model, a TLB flush waiting for its acknowledgements, a contended lock, a yield point -- it
switches to that task with one coroutine to run; the task awaits the coroutine and switches
back with its result (one round trip per operation, never one per cycle).

Guarantees
----------
* One piece of Python runs at a time: the scheduler or one host thread, all in the
  simulator's own OS thread.  A host thread runs only between two switches and cannot be
  preempted, so the engine's lock state needs no OS-level locking.
* Determinism: host threads are resumed in the order in which the cocotb scheduler finishes
  their coroutines, and every random choice is drawn from the environment's seeded
  generator, so the same seed (and design) gives the same interleaving, the same simulated
  cycles and the same results.
* A host thread whose task is killed (the test ends, or :meth:`HostEnv.stop`) raises
  :class:`ThreadKilled` from its pending round trip and unwinds (its ``finally`` blocks run)
  before the scheduler goes on.

Public API
----------
:class:`HostEnv`
    ``spawn`` / ``run`` a function as a host thread, ``wait_cycles``, ``call`` (one round
    trip), ``yield_point``, ``new_lock`` / ``new_rwsem``, ``current`` (the running
    :class:`HostThread`), ``stop``.
:class:`HostThread`
    Name, pending-signal flag, statistics of one engine thread.
Locks are :mod:`pyrmap.locking`'s ``SoftLock`` / ``SoftRwSem`` (the same primitives as
SoftArch, with the same lock-order checking); :class:`HostEnv` is their ``LockEnv``: a waiter
sleeps in simulated time until the lock is released, then re-checks.
"""

from __future__ import annotations

import collections
import logging
import random
from typing import Any, Callable, Optional

import cocotb
import greenlet
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, First

from pyrmap.fibers import Fibers
from pyrmap.locking import Deadlock, LockDep, LockError, SoftLock, SoftRwSem, lock_class

from .cycles import CycleClock

__all__ = ["HostEnv", "HostThread", "SCHEDULER", "LockError", "Deadlock", "ThreadKilled"]


def get_sim_steps_to_ns(steps: int) -> float:
    from cocotb.simtime import convert
    return convert(steps, "step", to="ns")


class ThreadKilled(BaseException):
    """Raised in a host thread whose task was killed (the test ended while it waited)."""


class HostThread:
    """One engine thread.

    Members
    -------
    name : str
        Shown in reports and lock errors ("reclaim", "fault/core0", ...).
    signal_pending : bool
        What ``signal_pending()`` answers while this thread runs (mm_take_all_locks -EINTR).
    resumes : int
        Round trips to the scheduler this thread made.
    mm :
        ``current->mm`` (the Arch ``current_task`` contract).
    task, result, error :
        Set by :meth:`HostEnv.spawn`: the cocotb task, and what the function returned or
        raised (see :meth:`join`).
    """

    def __init__(self, name: str):
        self.name = name
        self.signal_pending = False
        self.resumes = 0
        self.lock_waits = 0
        self.done = False
        self.mm = None      # the mm the thread acts on, for engines that ask current->mm

        self.task = None
        self.result = None
        self.error: Optional[BaseException] = None

    async def join(self) -> Any:
        """Wait until the thread finished; return its result or raise its exception."""
        if self.task is None:
            raise RuntimeError(f"host thread {self.name!r} was not started with spawn()")
        await self.task
        if self.error is not None:
            raise self.error
        return self.result

    def __repr__(self) -> str:
        return f"<HostThread {self.name!r}>"


#: Stands for "the cocotb scheduler itself" (a coroutine, not a host thread).
SCHEDULER = HostThread("scheduler")


class HostEnv:
    """The environment host threads run in: one clock, one seeded generator, the locks.

    Parameters
    ----------
    clk : cocotb handle or :class:`cosim.cycles.CycleClock`
        The clock every wait counts cycles of: a clock signal (its rising edges) or the
        design's :class:`~cosim.cycles.CycleClock`.
    seed : int
        Seeds the generator behind yield points (and anything else the run draws).
    yield_cycles : tuple of int, optional
        ``(lo, hi)``: a yield point waits a uniformly drawn number of cycles in [lo, hi]; a
        draw of 0 returns at once without a round trip.  Default ``(0, 3)``.
    """

    def __init__(self, clk, seed: int, yield_cycles: tuple[int, int] = (0, 3),
                 lockdep: bool = True, lock_timeout: int = 200_000):
        if not isinstance(seed, int):
            raise TypeError(f"Seed must be an integer, not {seed!r}")
        lo, hi = yield_cycles
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            raise ValueError(f"Yield cycles must be 0 <= lo <= hi, not {yield_cycles!r}")
        self.clock = clk if isinstance(clk, CycleClock) else CycleClock(clk)
        self.seed = seed
        self.rng = random.Random(seed)
        self.yield_cycles = (lo, hi)
        self.lockdep: Optional[LockDep] = LockDep() if lockdep else None
        #: A thread waiting this many cycles for one lock raises :class:`Deadlock`.
        self.lock_timeout = lock_timeout
        #: The event each lock a host thread sleeps on sets when it is released.
        self._release_events: dict = {}
        self._names: collections.Counter[str] = collections.Counter()
        self._now = 0
        #: Set by :meth:`stop`: every host thread's next round trip raises ThreadKilled.
        self.stopping: Optional[str] = None
        self._spared: set = set()
        self._fibers = Fibers()
        self.threads: list[HostThread] = []
        self.stats: collections.Counter[str] = collections.Counter()
        self.log = logging.getLogger("cosim.host")
        #: Called with (thread, exception) when a spawned thread dies with an exception.
        self.on_error: Optional[Callable[[HostThread, BaseException], None]] = None

    # --- threads ---------------------------------------------------------------------------

    def current(self) -> HostThread:
        """The running host thread, or :data:`SCHEDULER` in coroutine context."""
        return self._fibers.current(SCHEDULER)

    def now_steps(self) -> int:
        """Simulated time in simulator steps.  Host threads get the time at which they were
        last resumed (it cannot change while they run) without touching the simulator."""
        if self.in_host_thread():
            return self._now
        return get_sim_time("step")

    def now_ns(self) -> float:
        return get_sim_steps_to_ns(self.now_steps())

    def in_host_thread(self) -> bool:
        return self._fibers.current() is not None

    async def run(self, name: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` as host thread ``name``; await its return value.

        Exceptions raised by ``fn`` propagate to the awaiting coroutine."""
        return await self._run(self._new_thread(name), fn, *args, **kwargs)

    def _new_thread(self, name: str) -> HostThread:
        """Thread names are lock owners, so they are made unique ("fault/core0#2")."""
        self._names[name] += 1
        n = self._names[name]
        return HostThread(name if n == 1 else f"{name}#{n}")

    async def _run(self, thread: HostThread, fn, *args, **kwargs) -> Any:
        """The scheduler side of one host thread: start it, then serve its requests.

        The thread is a greenlet whose parent is the greenlet running this coroutine: it runs
        until it switches back with a request (:meth:`call`) or finishes; this coroutine then
        awaits the request's coroutine (other tasks and threads run meanwhile) and switches
        to the thread again with the reply.
        """
        self.threads.append(thread)
        self.stats["threads"] += 1

        g = self._fibers.start(thread, fn, args, kwargs)
        self._now = get_sim_time("step")
        request = g.switch()                    # the host thread runs until it posts
        while not g.dead:
            coro_fn, args_, kwargs_ = request
            try:
                reply = (True, await coro_fn(*args_, **kwargs_))
            except Exception as exc:  # noqa: BLE001 - raised in the host thread
                reply = (False, exc)
            except BaseException:
                # This task is being killed (the test ends, or the task was cancelled): the
                # host thread must unwind before the scheduler goes on, never next to it.
                self._kill(thread, g)
                raise
            self._now = get_sim_time("step")
            request = g.switch(reply)
        thread.done = True
        ok, value = request
        if ok:
            return value
        raise value

    @staticmethod
    def _kill(thread: HostThread, g: greenlet.greenlet) -> None:
        """Raise :class:`ThreadKilled` in ``thread`` from its pending call and run it until it
        has finished; calls it makes while unwinding raise it too."""
        while not g.dead:
            g.throw(ThreadKilled(f"host thread {thread.name!r} killed"))
        thread.done = True

    def spawn(self, name: str, fn: Callable[..., Any], *args, **kwargs) -> HostThread:
        """Start ``fn`` as a host thread in the background; returns its :class:`HostThread`
        (``await thread.join()`` returns ``fn``'s result or raises its exception).

        An exception in the thread does not fail the cocotb test by itself (cocotb aborts a
        test when a background task raises): it is kept in ``thread.error`` and reported to
        :attr:`on_error`; whoever joins the thread decides."""
        thread = self._new_thread(name)

        async def guarded():
            try:
                thread.result = await self._run(thread, fn, *args, **kwargs)
            except (Exception, ThreadKilled) as exc:  # noqa: BLE001 - kept for join()
                thread.error = exc
                if self.on_error is not None and not isinstance(exc, ThreadKilled):
                    self.on_error(thread, exc)
        thread.task = cocotb.start_soon(guarded())
        return thread

    def stop(self, reason: str, spare=()) -> None:
        """Stop the run: from now on the next round trip of every host thread but those in
        ``spare`` raises :class:`ThreadKilled` (it unwinds, releasing its locks in
        ``finally`` blocks), so a violation ends the scenario instead of letting the other
        threads run on."""
        if self.stopping is None:
            self.stopping = reason
            self._spared = set(spare)

    # --- letting simulated time pass -----------------------------------------------------

    def call(self, coro_fn: Callable[..., Any], *args, **kwargs) -> Any:
        """From a host thread: run ``await coro_fn(*args, **kwargs)`` in the scheduler (one
        round trip) and return its result (or raise its exception).  From coroutine context
        this is an error: await the coroutine instead."""
        thread = self._fibers.current()
        if thread is None:
            raise RuntimeError(
                f"{getattr(coro_fn, '__qualname__', coro_fn)} needs simulated time but was "
                f"called from a coroutine, not from a host thread (run it with HostEnv.run)")
        if self.stopping is not None and thread not in self._spared:
            raise ThreadKilled(f"host thread {thread.name!r} stopped: {self.stopping}")
        thread.resumes += 1
        self.stats["resumes"] += 1
        ok, value = greenlet.getcurrent().parent.switch((coro_fn, args, kwargs))
        if ok:
            return value
        raise value

    async def _cycles(self, n: int) -> None:
        if n > 0:
            await self.clock.cycles(n)

    def wait_cycles(self, n: int) -> None:
        """Block the current host thread for ``n`` clock cycles (one round trip)."""
        if n < 0:
            raise ValueError(f"Cycle count must be non-negative, not {n}")
        self.call(self._cycles, n)

    def yield_point(self, why: str = "") -> None:
        """Let simulated time (and so other threads and the hardware) run for a seeded random
        number of cycles.  A no-op outside host threads and when the draw is 0."""
        if not self.in_host_thread():
            return
        n = self.rng.randint(*self.yield_cycles)
        self.stats["yield_points"] += 1
        if n:
            self.wait_cycles(n)

    def signal_pending(self) -> bool:
        return self.current().signal_pending

    def current_thread(self) -> str:
        return self.current().name

    # --- locks (pyrmap.locking.LockEnv) --------------------------------------------------

    def new_lock(self, name: str, env=None):
        """A :class:`pyrmap.locking.SoftLock` whose waiters sleep in simulated time.
        ``PG_locked`` may be released by another thread (I/O completion), as in the kernel.
        ``env``: the environment the lock calls (default this one; an arch that delegates to
        this one passes itself, so that releases reach its observer)."""
        return SoftLock(env or self, name,
                        any_thread_may_release=(lock_class(name) == "PG_locked"))

    def new_rwsem(self, name: str, env=None):
        """A :class:`pyrmap.locking.SoftRwSem` whose waiters sleep in simulated time (``env``
        as for :meth:`new_lock`)."""
        return SoftRwSem(env or self, name)

    def lock_block(self, lock, why: str) -> None:
        """Sleep until ``lock`` is released (:meth:`lock_wake`); the caller re-checks.

        Raises
        ------
        LockError
            Called from a coroutine: only host threads may sleep on a lock.
        Deadlock
            The lock was not released within :attr:`lock_timeout` cycles.
        """
        thread = self.current()
        if thread is SCHEDULER:
            raise LockError(f"{why}: {lock!r} is held by {lock.holders()} and a coroutine "
                            f"cannot sleep on it; only host threads may")
        ev = self._release_events.get(lock)
        if ev is None:
            ev = self._release_events[lock] = Event()
        thread.lock_waits += 1
        self.stats["lock_waits"] += 1
        timeout = self.lock_timeout

        async def wait():
            await First(ev.wait(), self.clock.cycles(timeout))
            return ev.is_set()
        if not self.call(wait):
            raise Deadlock(f"Thread {thread.name!r} waited {timeout} cycles for {lock!r} "
                           f"({why}), held by {lock.holders()}")

    def lock_wake(self, lock) -> None:
        ev = self._release_events.pop(lock, None)
        if ev is not None:
            ev.set()
