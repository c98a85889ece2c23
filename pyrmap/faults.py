"""Injected faults the kernel must survive with nothing lost.

A :class:`FaultPlan` names, for each kind of fault, the probability that one opportunity for
it fails; a :class:`FaultInjector` draws those failures from a seeded generator per kind (so a
run is reproducible from its seed and plan, and switching one kind on does not move the
others' draws) and counts what it injected.  The kernel consults ``kernel.faults`` at three
places:

``swap_write``
    :func:`pyrmap.filemap.writepage` of a swap-cache page: the write fails (-EIO); the page
    is redirtied and stays in the swap cache, so reclaim keeps it and writes it later.
``alloc``
    :func:`pyrmap.vmscan.alloc_page_reclaim`: an attempt to allocate fails as if no frame were
    free; direct reclaim runs and the allocation is retried (never the last attempt, so an
    injected failure alone cannot turn into an out-of-memory error).
``eintr``
    :func:`pyrmap.mm_locks.mm_take_all_locks`: a signal arrives while the locks are taken;
    every lock is dropped and -EINTR returned; :func:`pyrmap.devdriver.register_device`
    restarts the registration, as a syscall restarts after its signal was handled.

One kind is the machine's, not the kernel's: the memory the MMU's walkers read answers with
a bus error, drawn per memory transaction of a walk (the RTL's memory port,
:class:`cosim.memory.MemoryResponder`, or SoftArch's walk):

``bus_error``
    a page-table read or A/D compare-and-swap of a walk fails (nothing is written); the walker
    reports an access fault and :func:`pyrmap.memory.do_access_fault` handles it (the kernel
    reads the page-table path itself; the error was transient, the access is retried).

The checkers (no lost write, rmap completeness, notifier pairs...) run as usual: a fault the
kernel does not survive shows up as a violation.
"""

from __future__ import annotations

import collections
import dataclasses
import random

__all__ = ["FaultPlan", "FaultInjector", "FAULT_KINDS", "add_faults_argument"]

#: Every kind of injectable fault, with what it does (the ``--faults`` help).
FAULT_KINDS = {
    "swap_write": "a swap-out write fails (the page is redirtied and kept)",
    "alloc": "an allocation under reclaim fails (direct reclaim, then a retry)",
    "eintr": "a signal interrupts mm_take_all_locks (-EINTR, registration restarts)",
    "bus_error": "a walk's memory read or A/D CAS gets a bus error (access fault, retried)",
}


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """Probability of each fault kind per opportunity (0 = off, the default).

    Raises
    ------
    ValueError
        A probability outside [0, 1] (``alloc``, ``eintr`` and ``bus_error`` below 1: a
        certain failure could never be survived).
    """
    swap_write: float = 0.0
    alloc: float = 0.0
    eintr: float = 0.0
    bus_error: float = 0.0

    def __post_init__(self):
        for kind in FAULT_KINDS:
            p = getattr(self, kind)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{kind} must be a probability in [0, 1], not {p!r}")
        for kind in ("alloc", "eintr", "bus_error"):
            if getattr(self, kind) >= 1.0:
                raise ValueError(f"{kind} must be below 1: a certain failure is never "
                                 f"survived, not {getattr(self, kind)!r}")

    @classmethod
    def parse(cls, text: str) -> "FaultPlan":
        """``"swap_write=0.3,alloc=0.1"`` as a plan (an empty text is no faults).

        Raises
        ------
        ValueError
            An unknown kind (the known ones are listed), a missing ``=`` or a bad number.
        """
        values = {}
        for item in filter(None, (i.strip() for i in text.split(","))):
            kind, eq, value = item.partition("=")
            kind = kind.strip()
            if kind not in FAULT_KINDS:
                raise ValueError(f"Unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if not eq:
                raise ValueError(f"Fault {kind!r} has no probability (write {kind}=0.1)")
            try:
                values[kind] = float(value)
            except ValueError:
                raise ValueError(f"{kind} must be a probability in [0, 1], not "
                                 f"{value.strip()!r}") from None
        return cls(**values)

    def text(self) -> str:
        """The plan as :meth:`parse` reads it (empty when no fault is on)."""
        return ",".join(f"{k}={getattr(self, k):g}" for k in FAULT_KINDS if getattr(self, k))

    def __bool__(self) -> bool:
        return any(getattr(self, k) for k in FAULT_KINDS)


def add_faults_argument(parser) -> None:
    """The ``--faults KIND=P,...`` flag of every command line that runs the kernel (parsed
    into a :class:`FaultPlan`, a bad one being a usage error)."""
    from .cliargs import parsed_by
    parser.add_argument("--faults", type=parsed_by(FaultPlan.parse), default=None,
                        metavar="KIND=P,...",
                        help="inject faults with these probabilities: "
                             + "; ".join(f"{k}: {v}" for k, v in FAULT_KINDS.items()))


class FaultInjector:
    """Draws the failures of ``plan`` from ``seed``; :attr:`injected` counts them per kind."""

    def __init__(self, plan: FaultPlan = FaultPlan(), seed: int = 0):
        self.plan = plan
        self.injected: collections.Counter[str] = collections.Counter()
        self._rng = {kind: random.Random(f"{seed}/{kind}") for kind in FAULT_KINDS}

    def fail(self, kind: str) -> bool:
        """Whether this opportunity for ``kind`` fails (counted when it does)."""
        p = getattr(self.plan, kind)
        if p and self._rng[kind].random() < p:
            self.injected[kind] += 1
            return True
        return False
