"""Kernel storms beside the fast path's traffic engines: fork/COW and mprotect/munmap.

Each kernel step of :class:`cosim.fastrun.FastRun` whose operations (``FAST_OPS``) name a
storm operation runs :meth:`Storm.step` as a host thread, concurrently with the engines:

* ``fork``: the process of one core (round robin over the cores' processes) forks; the fork
  write-protects every private anonymous PTE of the parent and flushes the cores that run it,
  so the engine's next store to each page takes a copy-on-write fault.  The child lives
  until two later forks have happened (while it lives, a COW fault copies the page; after it
  exits, the parent's fault reuses it), then exits.
* ``mprotect``: 4 pages of one core's window lose their write permission (read-only pages
  lose every permission);
* ``munmap``: 4 pages of one core's window are unmapped.

What mprotect or munmap took away comes back either at the next step or, sooner, when an
engine touches it: its segmentation fault runs :meth:`Storm.fault`, which acts as the user
program's SIGSEGV handler of a garbage collector or a checkpointer (it restores the range:
``mprotect`` to the old protection, or ``mmap(MAP_FIXED)`` of the same object and offset)
and retries the fault.  A segmentation fault anywhere else is the workload's bug and
propagates.  Every restore goes through the engine (mm operations, shootdowns), so the
checkers judge the storm as any kernel work.

:meth:`Storm.figures` counts what happened: forks, fork failures (ENOMEM), exits, ranges
write-protected or unmapped, and restores by the handler and by the step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyrmap.errors import ENOMEM, SegmentationFault
from pyrmap.memory import do_page_fault
from pyrmap.mm_types import VM_EXEC, VM_READ, VM_SHARED, VM_WRITE
from pyrmap.mmap import (MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PROT_EXEC,
                         PROT_NONE, PROT_READ, PROT_WRITE)

__all__ = ["Storm", "STORM_OPS", "CHUNK_PAGES", "LIVE_CHILDREN"]

#: The storm operations a kernel step can run (``FAST_OPS``).
STORM_OPS = ("fork", "mprotect", "munmap")
#: Pages one mprotect or munmap takes away.
CHUNK_PAGES = 4
#: Forked children alive at once (the oldest exits when a fork would make more).
LIVE_CHILDREN = 2
#: A fault waiting for another thread's restore of its range retries this often (cycles) ...
_WAIT_CYCLES = 8
#: ... at most this many times.
_WAIT_TRIES = 100_000


def _prot(vma) -> int:
    f = vma.vm_flags
    return ((PROT_READ if f & VM_READ else 0) | (PROT_WRITE if f & VM_WRITE else 0)
            | (PROT_EXEC if f & VM_EXEC else 0))


@dataclass
class _Taken:
    """A range a storm operation took away, and how to give it back."""
    mm: object
    lo: int
    hi: int
    op: str                  # "mprotect" or "munmap"
    prot: int
    flags: int = 0
    file: object = None
    pgoff: int = 0


class Storm:
    """The storm operations of one fast run.

    Parameters
    ----------
    system : pyrmap.scenario.System
    env : cosim.host.HostEnv
    seed : int
        Seeds the storm's own choices (which core, which range).
    ops : sequence of str
        The kernel step's operations; those of :data:`STORM_OPS` run here.
    """

    def __init__(self, system, env, seed: int, ops):
        self.system = system
        self.env = env
        self.rng = random.Random(seed)
        self.ops = tuple(op for op in ops if op in STORM_OPS)
        self.mms: list = []
        self.regions: list = []
        self.children: list = []
        self.taken: list[_Taken] = []
        self.restoring: list[_Taken] = []
        self.steps = 0
        self.counts = {"forks": 0, "fork_failed": 0, "exits": 0, "mprotects": 0,
                       "munmaps": 0, "segv_restores": 0, "step_restores": 0}

    @property
    def active(self) -> bool:
        """Some storm operation is on."""
        return bool(self.ops)

    def attach(self, mms, regions) -> None:
        """The cores' processes and, per core, the ``(start, end)`` ranges its engine uses."""
        self.mms = list(mms)
        self.regions = [list(r) for r in regions]

    # --- a kernel step (a host thread) ---------------------------------------------------

    def step(self) -> None:
        """One storm step: give back what the last step took (unless a fault did), then the
        step's operations."""
        self.steps += 1
        while self.taken:
            self._restore(self.taken[0], "step_restores")
        for op in self.ops:
            if op == "fork":
                self._fork()
            else:
                self._take(op)

    def _fork(self) -> None:
        procs = list(dict.fromkeys(self.mms))
        parent = procs[self.steps % len(procs)]
        s = self.system
        while len(self.children) >= LIVE_CHILDREN:
            s.exit(self.children.pop(0))
            self.counts["exits"] += 1
        try:
            self.children.append(s.fork(parent))
            self.counts["forks"] += 1
        except ENOMEM:
            self.counts["fork_failed"] += 1

    def _take(self, op: str) -> None:
        core = self.rng.randrange(len(self.mms))
        mm = self.mms[core]
        start, end = self.rng.choice(self.regions[core])
        npages = (end - start) >> 12
        first = self.rng.randrange(max(1, npages - CHUNK_PAGES + 1))
        lo = start + first * 4096
        vma = mm.find_vma(lo)
        if vma is None or vma.vm_start > lo:
            return                       # a hole (another storm range): nothing to take
        hi = min(lo + CHUNK_PAGES * 4096, end, vma.vm_end)
        if any(t.mm is mm and t.lo < hi and lo < t.hi for t in self.taken + self.restoring):
            return
        prot = _prot(vma)
        s = self.system
        if op == "mprotect":
            t = _Taken(mm, lo, hi, op, prot)
            self.taken.append(t)
            s.mprotect(mm, lo, hi - lo, PROT_READ if prot & PROT_WRITE else PROT_NONE)
            self.counts["mprotects"] += 1
        else:
            shared = bool(vma.vm_flags & VM_SHARED)
            flags = (MAP_FIXED | (MAP_SHARED if shared else MAP_PRIVATE)
                     | (0 if vma.vm_file is not None else MAP_ANONYMOUS))
            t = _Taken(mm, lo, hi, op, prot, flags, vma.vm_file,
                       vma.linear_page_index(lo) if vma.vm_file is not None else 0)
            self.taken.append(t)
            s.munmap(mm, lo, hi - lo)
            self.counts["munmaps"] += 1

    def _restore(self, t: _Taken, counter: str) -> None:
        """Give ``t`` back (the caller removed nobody else's claim: ``t`` is in ``taken``)."""
        self.taken.remove(t)
        self.restoring.append(t)
        try:
            s = self.system
            if t.op == "mprotect":
                s.mprotect(t.mm, t.lo, t.hi - t.lo, t.prot)
            else:
                s.mmap(t.mm, t.lo, t.hi - t.lo, t.prot, t.flags, file=t.file, pgoff=t.pgoff)
            self.counts[counter] += 1
        finally:
            self.restoring.remove(t)

    # --- an engine's fault (a host thread) --------------------------------------------------

    def fault(self, mm, va: int, op) -> None:
        """Serve an engine's page fault; a segmentation fault in a range the storm took away
        restores the range (the program's SIGSEGV handler) and retries."""
        for _ in range(_WAIT_TRIES):
            try:
                do_page_fault(mm, va, op)
                return
            except SegmentationFault:
                mine = [t for t in self.taken if t.mm is mm and t.lo <= va < t.hi]
                if mine:
                    self._restore(mine[0], "segv_restores")
                elif any(t.mm is mm and t.lo <= va < t.hi for t in self.restoring):
                    self.env.wait_cycles(_WAIT_CYCLES)    # another thread gives it back
                else:
                    raise
        raise RuntimeError(f"a fault at 0x{va:x} waited {_WAIT_TRIES} times for a storm range "
                           f"to be given back")

    def figures(self) -> dict:
        return dict(self.counts, steps=self.steps, live_children=len(self.children))
