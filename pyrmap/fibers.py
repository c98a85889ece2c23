"""Engine threads as greenlets: the switching mechanism shared by the two schedulers.

An engine thread (rmap, a fault handler, a syscall: ordinary blocking Python) runs as a
greenlet (PyPI ``greenlet``) in the OS thread of whoever started it.  Greenlets switch only
explicitly, so exactly one piece of Python runs at a time, and which one runs next is decided
by the code that switches: :class:`pyrmap.sched.Scheduler` (seeded, for SoftArch) and
:class:`cosim.host.HostEnv` (the cocotb scheduler's order, in co-simulation).

Public API
----------
:class:`Fibers`
    ``start`` a function as a greenlet owned by a task object; ``current`` (the owner of the
    running greenlet).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import greenlet

__all__ = ["Fibers"]


class Fibers:
    """The greenlets of one scheduler's engine threads, each with its owner (a task object)."""

    def __init__(self):
        self._owner: dict[greenlet.greenlet, Any] = {}

    def start(self, owner: Any, fn: Callable[..., Any], args: tuple = (),
              kwargs: Optional[dict] = None,
              parent: Optional[greenlet.greenlet] = None) -> greenlet.greenlet:
        """A greenlet that runs ``fn(*args, **kwargs)`` when first switched to.

        While it is alive :meth:`current` answers ``owner`` inside it.  When ``fn`` returns
        or raises, the greenlet dies and returns ``(True, result)`` or ``(False, exception)``
        to ``parent`` (default: the greenlet calling ``start``); the caller tells that final
        value from the values the thread switches with by ``greenlet.dead``.
        """
        def body():
            try:
                return True, fn(*args, **(kwargs or {}))
            except BaseException as exc:  # noqa: BLE001 - handed to the parent
                return False, exc
            finally:
                del self._owner[g]

        g = greenlet.greenlet(body, parent=parent or greenlet.getcurrent())
        self._owner[g] = owner
        return g

    def current(self, default: Any = None) -> Any:
        """The owner of the running greenlet, or ``default`` outside this set's greenlets."""
        return self._owner.get(greenlet.getcurrent(), default)
