"""A deterministic scheduler for engine threads.

Engine code (rmap, fault handlers, syscalls, CPU workloads) is ordinary synchronous Python.
The scheduler runs each piece as a greenlet (:mod:`pyrmap.fibers`) and passes a baton (a
switch to the next thread's greenlet), so that exactly one of them runs at any time.  A thread
gives the baton away only at a yield point (:meth:`Scheduler.yield_point`, called by every
SoftArch PTE operation, flush, CPU access and lock operation) or when it blocks on a lock.  At
a yield point a ``random.Random`` seeded with ``seed`` decides whether to switch (probability
``switch_prob``, itself drawn from the seed unless given) and to which of the other runnable
threads.  The same seed and the same program therefore give the same interleaving, recorded
in :attr:`Scheduler.trace`.

With ``strategy="pct"`` the choice is PCT's (probabilistic concurrency testing, Burckhardt
et al., ASPLOS 2010) instead: every thread gets a random priority, the highest-priority runnable
thread always runs, and at ``depth - 1`` change points drawn uniformly among the first ``k``
yield points of a :meth:`Scheduler.run` the running thread drops below every other.  A bug that
needs ``d <= depth`` ordering constraints between ``n`` threads is then found with probability at
least ``1 / (n * k**(d - 1))`` per run, when the run makes at most ``k`` scheduling decisions.
``k`` is the largest run seen so far by this scheduler (``pct_steps`` to start with);
:meth:`Scheduler.pct_report` states the bound of every run and whether ``k`` covered it.  A
thread that keeps the baton for ``spin_limit`` decisions in a row while others could run is
spinning on them (a wait loop around a yield point): it is dropped below every other too, and
counted.

A thread inside a window (``hot(thread_name)`` true: it changed a PTE and has not yet dropped
the lock or flushed; see :mod:`pyrmap.windows`) switches with probability ``hot_switch_prob``
instead of ``switch_prob`` under the random strategy, so that other threads land inside it.
So does a yield point whose reason is one of ``hot_points`` (the arch's atomic PTE changes,
set by :class:`pyrmap.scenario.System` with window coverage): a switch there lands another
thread between a PTE read and the atomic change that follows it, where a decision taken
from the read can go stale (a walker's D set by compare-and-swap, a fault on the same PTE).

When every unfinished thread is blocked, :meth:`Scheduler.run` raises :class:`Deadlock`,
naming who holds and who waits for what.  When a thread raises, the others are unwound (their
``finally`` blocks run one at a time, with the baton) and ``run`` re-raises the first
exception with the thread name and the seed added to its message.
"""

from __future__ import annotations

import collections
import random
from typing import Any, Callable, Optional

import greenlet

from .fibers import Fibers
from .locking import Deadlock, SoftLock, SoftRwSem

__all__ = ["Scheduler", "Task", "Deadlock", "Livelock", "STRATEGIES", "pct_bound"]

#: Scheduling strategies: seeded random switches, or PCT's priorities with change points.
STRATEGIES = ("random", "pct")


def pct_bound(nthreads: int, steps: int, depth: int) -> float:
    """PCT's lower bound on the probability that one run finds a bug of depth ``depth`` among
    ``nthreads`` threads making at most ``steps`` scheduling decisions: ``1/(n k^(d-1))``."""
    if nthreads < 1 or steps < 1 or depth < 1:
        raise ValueError(f"PCT bound needs positive threads, steps and depth, not "
                         f"{nthreads!r}, {steps!r}, {depth!r}")
    return 1.0 / (nthreads * steps ** (depth - 1))


class Livelock(RuntimeError):
    """The threads kept yielding for ``max_steps`` scheduling decisions without finishing."""


class _Abort(BaseException):
    """Unwinds an engine thread after another thread failed or the system deadlocked."""


class Task:
    """One engine thread.

    Attributes
    ----------
    name : str
    mm : MmStruct or None
        The kernel's ``current->mm`` (settable).
    signal_pending : bool
        Set by :meth:`Scheduler.send_signal` (settable).
    state : str
        "runnable", "blocked" or "done".
    result :
        The return value of the thread's function once done.
    """

    def __init__(self, sched: Optional["Scheduler"], name: str, fn: Optional[Callable],
                 args: tuple = (), mm=None):
        self.sched = sched
        self.name = name
        self.fn = fn
        self.args = args
        self.mm = mm
        self.signal_pending = False
        self.state = "runnable"
        self.waiting: Optional[tuple[Any, str]] = None
        self.result = None
        self.exc: Optional[BaseException] = None
        self.fiber: Optional[greenlet.greenlet] = None

    def __repr__(self) -> str:
        return f"<Task {self.name!r} {self.state}>"


class Scheduler:
    """Runs engine threads one at a time in a seeded order.

    Parameters
    ----------
    seed : int
        Seeds the choice of the next thread at every yield point.
    switch_prob : float, optional
        Probability that a yield point hands the baton to another thread.  By default drawn
        per seed, log-uniformly in [1/256, 1/2].
    max_steps : int
        Scheduling decisions after which :meth:`run` gives up with :class:`Livelock`.
    trace_len : int or None
        :attr:`trace` keeps the last ``trace_len`` (thread, why) pairs (None: all of them).
    strategy : str
        "random" (seeded random switches, the default) or "pct" (priorities and change points).
    depth : int
        PCT: the bug depth aimed at (``depth - 1`` change points per run).
    pct_steps : int
        PCT: the first estimate of the scheduling decisions of one run (``k``).
    spin_limit : int
        PCT: decisions in a row after which a thread that keeps the baton while others could
        run is dropped below every other.
    """

    def __init__(self, seed: int = 0, *, switch_prob: Optional[float] = None,
                 max_steps: int = 2_000_000, trace_len: Optional[int] = 200_000,
                 strategy: str = "random", depth: int = 3, pct_steps: int = 256,
                 spin_limit: int = 1000):
        if not isinstance(seed, int):
            raise TypeError(f"Seed must be an integer, not {seed!r}")
        if not isinstance(max_steps, int) or max_steps <= 0:
            raise TypeError(f"Step limit must be a positive integer, not {max_steps!r}")
        self.seed = seed
        self.max_steps = max_steps
        self.rng = random.Random(seed)
        if switch_prob is None:
            # Log-uniform in [1/256, 1/2]: some seeds switch often, others let a thread run
            # long stretches, so that a window deep inside one thread is hit by some seed.
            switch_prob = 2.0 ** -self.rng.uniform(1.0, 8.0)
        if not isinstance(switch_prob, (int, float)) or not 0.0 < switch_prob <= 1.0:
            raise ValueError(f"Switch probability must be in (0, 1], not {switch_prob!r}")
        self.switch_prob = float(switch_prob)
        self.tasks: list[Task] = []
        #: ``hot(thread_name) -> bool``: the thread is inside a window (settable).
        self.hot: Optional[Callable[[str], bool]] = None
        self.hot_switch_prob = 0.5
        #: Yield-point reasons at which a switch is drawn with ``hot_switch_prob`` too.
        self.hot_points: frozenset[str] = frozenset()
        if trace_len is not None and (not isinstance(trace_len, int) or trace_len <= 0):
            raise TypeError(f"Trace length must be a positive integer or None, not "
                            f"{trace_len!r}")
        self.trace: collections.deque[tuple[str, str]] = collections.deque(maxlen=trace_len)
        self.steps = 0
        self._fibers = Fibers()
        self._turn: Optional[Task] = None       # the task holding the baton (None: the caller)
        self._home: Optional[greenlet.greenlet] = None      # the greenlet running run()
        self._running = False
        self._aborting = False
        self._error: Optional[BaseException] = None
        self._error_task: Optional[Task] = None
        if strategy not in STRATEGIES:
            raise ValueError(f"Scheduling strategy must be one of {', '.join(STRATEGIES)}, "
                             f"not {strategy!r}")
        for what, value, low in (("PCT depth", depth, 1), ("PCT step estimate", pct_steps, 1),
                                 ("Spin limit", spin_limit, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{what} must be an integer of at least {low}, not {value!r}")
        self.strategy = strategy
        self.depth = depth
        self.pct_k = pct_steps
        self.spin_limit = spin_limit
        self._prio: dict[Task, float] = {}
        self._change_points: dict[int, int] = {}    # decision number in this run -> rank
        self._run_steps = 0
        self._run_threads = 0
        self._spin = 0
        self.spin_demotions = 0
        #: PCT: one (threads, k, decisions) triple per run of more than one thread.
        self.pct_runs: list[tuple[int, int, int]] = []

    # --- setting up ------------------------------------------------------------------------

    def spawn(self, name: str, fn: Callable, *args, mm=None) -> Task:
        """Add an engine thread running ``fn(*args)``; it first runs inside :meth:`run` (or at
        the next scheduling decision, when spawned by a running thread)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"Thread name must be a non-empty string, not {name!r}")
        if any(t.name == name for t in self.tasks):
            raise ValueError(f"Thread name {name!r} is already used")
        if not callable(fn):
            raise TypeError(f"Thread function must be callable, not {fn!r}")
        task = Task(self, name, fn, args, mm)
        self.tasks.append(task)
        if self.strategy == "pct":
            self._prio[task] = self.depth + self.rng.random()
            self._run_threads += self._running
        if self._running:
            self._start(task)
        return task

    def send_signal(self, task: Task) -> None:
        """Make a signal pending for ``task`` (mm_take_all_locks then fails with -EINTR)."""
        task.signal_pending = True

    def current(self) -> Optional[Task]:
        """The running task, or None outside the scheduler's threads."""
        return self._fibers.current()

    @property
    def running(self) -> bool:
        return self._running

    # --- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Run every thread to completion.

        Raises
        ------
        Deadlock
            Every unfinished thread is blocked on a lock.
        Livelock
            ``max_steps`` scheduling decisions passed.
        Exception
            The first exception an engine thread raised (the same object), with the thread
            name and the seed appended to its message and added as a note.
        """
        if self._running:
            raise RuntimeError("Scheduler.run called while it is already running")
        if self.current() is not None:
            raise RuntimeError("Scheduler.run called from one of its own threads")
        self._running = True
        self._aborting = False
        self._error = None
        if self.strategy == "pct":
            self._pct_begin()
        self._home = greenlet.getcurrent()
        try:
            for task in self.tasks:
                if task.state != "done" and task.fiber is None:
                    self._start(task)
            self._turn = self._pick()
            while self._turn is not None:       # back here each time a thread finishes
                self._turn.fiber.switch()
        finally:
            self._running = False
            self._home = None
            if self.strategy == "pct":
                self._pct_end()
        if self._error is not None:
            err, task = self._error, self._error_task
            self._error = None
            if task is not None:
                note = f"in engine thread {task.name!r}, scheduler seed {self.seed}"
                if err.args and isinstance(err.args[0], str):
                    err.args = (f"{err.args[0]} [{note}]",) + err.args[1:]
                err.add_note(note)
            raise err

    def _start(self, task: Task) -> None:
        """Make ``task`` a greenlet; it runs when the baton first comes to it, and when it
        finishes it returns to :meth:`run`, which hands the baton on."""
        task.fiber = self._fibers.start(task, self._body, (task,), parent=self._home)

    def _body(self, task: Task) -> None:
        try:
            if self._aborting:
                raise _Abort()
            task.result = task.fn(*task.args)
        except _Abort:
            pass
        except BaseException as exc:            # noqa: BLE001 -- reported by run()
            task.exc = exc
            if self._error is None:
                self._error, self._error_task = exc, task
            self._aborting = True
        finally:
            task.state = "done"
            task.waiting = None
            self._turn = self._next_after_exit()

    def _next_after_exit(self) -> Optional[Task]:
        if self._aborting:
            return next((t for t in self.tasks if t.state != "done"), None)
        nxt = self._pick()
        if nxt is None and any(t.state == "blocked" for t in self.tasks):
            self._deadlock()
            return next((t for t in self.tasks if t.state != "done"), None)
        return nxt

    # --- PCT -----------------------------------------------------------------------------

    def _pct_begin(self) -> None:
        live = [t for t in self.tasks if t.state != "done"]
        self._run_threads = len(live)
        self._run_steps = 0
        self._spin = 0
        k, d = self.pct_k, self.depth
        points = self.rng.sample(range(1, k + 1), min(d - 1, k))
        self._change_points = {step: rank for rank, step in enumerate(sorted(points), 1)}

    def _pct_end(self) -> None:
        if self._run_threads > 1:
            self.pct_runs.append((self._run_threads, self.pct_k, self._run_steps))
        self.pct_k = max(self.pct_k, self._run_steps)

    def _pct_step(self, me: Task) -> None:
        """One scheduling decision of a PCT run: a change point drops ``me`` below every
        initial priority (later change points lower still)."""
        self._run_steps += 1
        rank = self._change_points.get(self._run_steps)
        if rank is not None:
            self._prio[me] = self.depth - rank

    def _pct_pick(self, current: Optional[Task], others_only: bool = False) -> Optional[Task]:
        runnable = [t for t in self.tasks if t.state == "runnable"
                    and not (others_only and t is current)]
        if not runnable:
            return None
        best = max(runnable, key=lambda t: self._prio.get(t, 0.0))
        if current is not None and best is current and len(runnable) > 1:
            self._spin += 1
            if self._spin >= self.spin_limit:
                self._prio[current] = min(self._prio.values()) - 1.0
                self.spin_demotions += 1
                self._spin = 0
                best = max(runnable, key=lambda t: self._prio.get(t, 0.0))
        else:
            self._spin = 0
        return best

    def pct_report(self) -> dict:
        """PCT's guarantee for the runs so far: the depth, the runs, the smallest bound
        ``1/(n k^(d-1))`` over them (with the n and k of that run), how many runs made more
        decisions than their ``k`` (the bound is not guaranteed for those) and how many
        spinning threads were dropped."""
        if self.strategy != "pct":
            raise RuntimeError("pct_report: this scheduler's strategy is "
                               f"{self.strategy!r}, not 'pct'")
        runs = self.pct_runs
        worst = min(runs, key=lambda r: pct_bound(r[0], r[1], self.depth), default=None)
        return {"depth": self.depth, "runs": len(runs),
                "bound": pct_bound(worst[0], worst[1], self.depth) if worst else None,
                "threads": worst[0] if worst else 0, "k": worst[1] if worst else 0,
                "beyond_k": sum(1 for n, k, steps in runs if steps > k),
                "spin_demotions": self.spin_demotions}

    def _pick(self, current: Optional[Task] = None, why: str = "") -> Optional[Task]:
        """The next thread: ``current`` keeps running unless a switch is drawn (probability
        ``switch_prob``, or ``hot_switch_prob`` inside a window or at one of ``hot_points``,
        ``why`` being the yield point's reason); a switch, or a ``current`` that cannot run, picks uniformly among
        the other runnable threads.  Under PCT: the runnable thread of highest priority."""
        if self.strategy == "pct":
            return self._pct_pick(current)
        runnable = [t for t in self.tasks if t.state == "runnable" and t is not current]
        if current is not None and current.state == "runnable":
            p = self.switch_prob
            if runnable and (why in self.hot_points
                             or self.hot is not None and self.hot(current.name)):
                p = max(p, self.hot_switch_prob)
            if not runnable or self.rng.random() >= p:
                return current
        if not runnable:
            return None
        return runnable[0] if len(runnable) == 1 else self.rng.choice(runnable)

    def _deadlock(self) -> None:
        lines = []
        for t in self.tasks:
            if t.state == "blocked" and t.waiting is not None:
                obj, why = t.waiting
                if isinstance(obj, (SoftLock, SoftRwSem)):
                    lines.append(f"{t.name!r} waits for {obj.name!r} {id(obj) & 0xFFFFFF:06x} "
                                 f"({why}), {obj.holders()}")
                else:
                    lines.append(f"{t.name!r} waits for a condition ({why})")
        msg = (f"Deadlock (scheduler seed {self.seed}): every thread is blocked: "
               + "; ".join(lines))
        if self._error is None:
            self._error, self._error_task = Deadlock(msg), None
        self._aborting = True

    def _switch(self, me: Task, nxt: Task) -> None:
        """Give the baton to ``nxt`` and wait until it comes back to ``me``."""
        self._turn = nxt
        nxt.fiber.switch()
        if self._aborting:
            raise _Abort()

    def _step(self, name: str, why: str, me: Optional[Task] = None) -> None:
        self.trace.append((name, why))
        self.steps += 1
        if self.strategy == "pct" and me is not None:
            self._pct_step(me)
        if self.steps > self.max_steps and self._error is None:
            self._error = Livelock(f"Engine threads made {self.steps} scheduling decisions "
                                   f"without finishing (scheduler seed {self.seed})")
            self._error_task = None
            self._aborting = True
            raise _Abort()

    # --- called by engine threads ------------------------------------------------------------

    def yield_point(self, why: str = "") -> None:
        """Offer the baton; the seeded RNG decides whether another thread runs, and which.
        A no-op outside the scheduler's threads and while threads are being unwound."""
        me = self.current()
        if me is None or self._aborting:
            return
        self._step(me.name, why, me)
        nxt = self._pick(me, why)
        if nxt is not me:
            self._switch(me, nxt)

    def wait_until(self, pred: Callable[[], bool], why: str = "wait") -> None:
        """Yield until ``pred()`` is true, handing the baton to *another* thread each time.

        For waits on a condition that is not a lock (writeback to end, a migration entry to
        go).  Raises :class:`Deadlock` (after unwinding) when ``pred()`` is false and no other
        thread can run; outside the scheduler's threads, when ``pred()`` is false at once.
        """
        me = self.current()
        while not pred():
            if me is None:
                raise Deadlock(f"Waiting for {why!r} outside the scheduler's threads; nothing "
                               f"else can run")
            if self._aborting:
                raise _Abort()
            others = [t for t in self.tasks if t.state == "runnable" and t is not me]
            if not others:
                me.state, me.waiting = "blocked", (pred, why)
                self._deadlock()
                me.state, me.waiting = "runnable", None
                raise _Abort()
            self._step(me.name, why, me)
            if self.strategy == "pct":
                nxt = self._pct_pick(me, others_only=True)
            else:
                nxt = others[0] if len(others) == 1 else self.rng.choice(others)
            self._switch(me, nxt)

    def block(self, obj, why: str) -> None:
        """Block the calling thread on ``obj`` until :meth:`wake` is called for it; other
        threads run meanwhile.  Raises (after unwinding) when nothing else can run."""
        me = self.current()
        if me is None:
            raise RuntimeError("Scheduler.block called outside the scheduler's threads")
        if self._aborting:
            raise _Abort()
        self._step(me.name, "block " + why, me)
        me.state, me.waiting = "blocked", (obj, why)
        nxt = self._pick()
        if nxt is None:
            self._deadlock()
            me.state, me.waiting = "runnable", None
            raise _Abort()
        self._switch(me, nxt)

    def wake(self, obj) -> None:
        """Make every thread blocked on ``obj`` runnable (they re-check their condition)."""
        for t in self.tasks:
            if t.state == "blocked" and t.waiting is not None and t.waiting[0] is obj:
                t.state, t.waiting = "runnable", None
