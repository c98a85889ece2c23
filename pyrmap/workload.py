"""CPU workloads: loads and stores issued on an MMU core, with every result checked.

A :class:`CpuWorkload` runs as one engine thread (``Scheduler.spawn(name, wl.run)``): it makes
its mm current on its core (``arch.switch_mm``), then issues accesses through
``arch.cpu_access``.  A PAGE fault runs the engine's ``do_page_fault`` in the same thread and
the access is retried; a ``SegmentationFault`` means the workload touched memory it should
not have (a workload bug): it is reported as :class:`WorkloadError`.  Stores write fresh
values and update the shadow memory; loads are compared with it (checker (c)).

Accesses come from one of three sources:

* :func:`random_accesses` — random with locality: a small hot set of pages, re-drawn now and
  then, inside the regions the shadow says are mapped (stores only where writable);
* a scripted list of ``(op, vaddr[, value])``;
* a trace file (:func:`parse_trace`) of lines ``core op vaddr [value]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Callable, Iterable, Iterator, Optional, Sequence

from .arch import Arch
from .pte import PAGE_SIZE, AccessType, FaultKind

__all__ = ["Access", "CpuWorkload", "DeviceWorkload", "WorkloadError", "random_accesses",
           "parse_trace",
           "PROT_READ", "PROT_WRITE", "PROT_EXEC"]

PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

_OPS = {"load": AccessType.LOAD, "l": AccessType.LOAD, "r": AccessType.LOAD,
        "ld": AccessType.LOAD, "read": AccessType.LOAD,
        "store": AccessType.STORE, "s": AccessType.STORE, "w": AccessType.STORE,
        "st": AccessType.STORE, "write": AccessType.STORE}


class WorkloadError(RuntimeError):
    """The workload did something no correct program does (touched unmapped memory), or the
    machine answered in a way no fault handler can fix (an access fault, endless faults)."""


@dataclasses.dataclass(frozen=True)
class Access:
    """One CPU access: ``op`` LOAD or STORE at ``vaddr``; ``value`` is the store's data, or for
    a load the value it must return (None: whatever the shadow says)."""
    op: AccessType
    vaddr: int
    value: Optional[int] = None


def _coerce(item) -> Access:
    if isinstance(item, Access):
        return item
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise TypeError(f"An access must be (op, vaddr) or (op, vaddr, value), not {item!r}")
    op = item[0]
    if isinstance(op, str):
        if op.lower() not in _OPS:
            raise ValueError(f"Unknown access op {op!r}; use load or store")
        op = _OPS[op.lower()]
    op = AccessType(op)
    if op == AccessType.FETCH:
        raise ValueError("Workloads issue loads and stores, not fetches")
    return Access(op, int(item[1]), None if len(item) == 2 else int(item[2]))


def parse_trace(lines: Iterable[str] | str) -> dict[int, list[Access]]:
    """Parse a trace: one access per line, ``core op vaddr [value]``.

    ``op`` is ``load``/``store`` (or ``l``/``s``, ``r``/``w``); numbers are decimal or
    ``0x`` hex; ``#`` starts a comment.  ``lines`` is an iterable of lines or a path.

    Returns
    -------
    dict
        core -> list of :class:`Access`, in trace order.

    Raises
    ------
    ValueError
        A malformed line, with its number.
    """
    if isinstance(lines, str):
        with open(lines) as f:
            return parse_trace(f.readlines())
    out: dict[int, list[Access]] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            raise ValueError(f"Trace line {n}: expected 'core op vaddr [value]', got {raw.strip()!r}")
        try:
            core = int(fields[0], 0)
            vaddr = int(fields[2], 0)
            value = int(fields[3], 0) if len(fields) == 4 else None
        except ValueError:
            raise ValueError(f"Trace line {n}: bad number in {raw.strip()!r}") from None
        if fields[1].lower() not in _OPS:
            raise ValueError(f"Trace line {n}: unknown op {fields[1]!r}; use load or store")
        if core < 0:
            raise ValueError(f"Trace line {n}: core {core} is negative")
        out.setdefault(core, []).append(Access(_OPS[fields[1].lower()], vaddr, value))
    return out


def random_accesses(rng: random.Random, regions: Callable[[], Sequence[tuple]], count: int,
                    *, store_ratio: float = 0.5, hot_pages: int = 4,
                    redraw: float = 0.05, words: int = 4) -> Iterator[Access]:
    """``count`` random accesses with locality.

    ``regions()`` returns the current ``(start, end, prot, shared)`` regions of the mm (it is
    re-read before every access, so concurrent munmap/mprotect done by the same driver are
    honoured).  A hot set of ``hot_pages`` pages is drawn and re-drawn with probability
    ``redraw`` per access; within a page only the first ``words`` words are used, so loads
    often see earlier stores.  Store values are left to the workload (fresh per store).
    """
    hot: list[int] = []
    for _ in range(count):
        regs = [r for r in regions() if r[2] & PROT_READ]
        if not regs:
            return
        pages = [(va, r) for r in regs for va in range(r[0], r[1], PAGE_SIZE)]
        if not hot or rng.random() < redraw or not any(p in {va for va, _ in pages} for p in hot):
            hot = [va for va, _ in rng.sample(pages, min(hot_pages, len(pages)))]
        by_va = dict(pages)
        candidates = [va for va in hot if va in by_va]
        va = rng.choice(candidates)
        prot = by_va[va][2]
        store = bool(prot & PROT_WRITE) and rng.random() < store_ratio
        addr = va + 8 * rng.randrange(words)
        yield Access(AccessType.STORE if store else AccessType.LOAD, addr)


class CpuWorkload:
    """One core's workload: accesses from ``source`` on ``mm``, checked against the shadow.

    Parameters
    ----------
    kernel : Kernel
    core : int
        The MMU core it runs on.
    mm : MmStruct
    source : iterable
        Accesses (:class:`Access` or ``(op, vaddr[, value])`` tuples).
    checkers : pyrmap.checkers.Checkers, optional
        Stores update ``checkers.shadow``; loads are compared with it.
    name : str, optional
    max_faults : int
        Faults allowed for one access before it is declared stuck.
    value_base : int, optional
        Stores write ``value_base + 1``, ``+ 2``, ... (give each workload its own block so
        that no value is ever stored twice).
    switch : bool
        Make ``mm`` current on the core first (``arch.switch_mm``).
    segv_ok : callable, optional
        ``segv_ok(mm, vaddr, op) -> bool``: a segmentation fault there is what a correct
        program may get (an operation is changing that range, or it no longer allows the
        access); the access is then dropped and counted as ``segv``.  Otherwise a
        segmentation fault is a :class:`WorkloadError`.

    Members
    -------
    stats : dict
        loads, stores, faults, retries of this workload.
    """

    def __init__(self, kernel, core: int, mm, source: Iterable, *, checkers=None,
                 name: Optional[str] = None, max_faults: int = 64, value_base: Optional[int] = None,
                 switch: bool = True, segv_ok: Optional[Callable] = None):
        if not isinstance(core, int) or not 0 <= core < kernel.arch.ncores:
            raise ValueError(f"Core {core!r} does not exist; the MMU has {kernel.arch.ncores} cores")
        if not isinstance(max_faults, int) or max_faults < 1:
            raise TypeError(f"Fault limit must be a positive integer, not {max_faults!r}")
        self.kernel = kernel
        self.core = core
        self.mm = mm
        self.source = source
        self.checkers = checkers
        self.name = name or f"cpu{core}"
        self.max_faults = max_faults
        self.switch = switch
        self.segv_ok = segv_ok
        self._next = value_base if value_base is not None else ((core + 1) << 48)
        self.stats = {"loads": 0, "stores": 0, "faults": 0}

    def _stuck(self, acc: Access) -> Callable[[int], Exception]:
        return lambda faults: WorkloadError(
            f"{self.name}: {acc.op.name} at 0x{acc.vaddr:x} of {self.mm!r} still faults after "
            f"{self.max_faults} faults")

    def fresh_value(self) -> int:
        self._next += 1
        return self._next

    def run(self) -> dict:
        """The thread body: switch to the mm, issue every access.  Returns ``self.stats``."""
        arch = self.kernel.arch
        task = arch.current_task()
        if task.mm is None:
            task.mm = self.mm
        if self.switch:
            arch.switch_mm(self.core, self.mm)
        for item in self.source:
            self.access(_coerce(item))
        return self.stats

    def access(self, acc: Access) -> Optional[int]:
        """Issue one access, faulting and retrying as a CPU does.  Returns the loaded or
        stored value (None: a segmentation fault that ``segv_ok`` allows)."""
        arch = self.kernel.arch
        value = acc.value
        if acc.op == AccessType.STORE and value is None:
            value = self.fresh_value()
        retry = FaultRetry(self.max_faults, self._stuck(acc))
        for _ in retry:
            if acc.op == AccessType.STORE:
                res = arch.cpu_access(self.core, acc.vaddr, acc.op, user=True, data=value)
            else:
                res = arch.cpu_access(self.core, acc.vaddr, acc.op, user=True)
            if res.fault == FaultKind.NONE:
                break
            if res.fault == FaultKind.ACCESS:
                # A bus error under the walk: the kernel checks its page tables read, and the
                # access is retried (a persistent one ends as a stuck access).
                self.stats["access_faults"] = self.stats.get("access_faults", 0) + 1
                retry.fault()
                from .memory import do_access_fault
                do_access_fault(self.mm, acc.vaddr, acc.op)
                continue
            if res.fault != FaultKind.PAGE:
                raise WorkloadError(f"{self.name}: {acc.op.name} at 0x{acc.vaddr:x} of "
                                    f"{self.mm!r} got a {FaultKind(res.fault).name} fault")
            self.stats["faults"] += 1
            retry.fault()
            if not fault_in(self.name, self.mm, acc, self.segv_ok):
                self.stats["segv"] = self.stats.get("segv", 0) + 1
                return None
        shadow = self.checkers.shadow if self.checkers is not None else None
        if acc.op == AccessType.STORE:
            self.stats["stores"] += 1
            if shadow is not None:
                shadow.store(self.mm, acc.vaddr & ~7, value)
            return value
        self.stats["loads"] += 1
        if shadow is not None:
            shadow.load(self.mm, acc.vaddr & ~7, res.value, res.paddr)
        if acc.value is not None and res.value != acc.value:
            raise WorkloadError(f"{self.name}: load at 0x{acc.vaddr:x} returned "
                                f"{res.value:#x}, the trace expects {acc.value:#x}")
        return res.value


def with_store_values(items: Iterable, value_base: int) -> Iterator[tuple["Access", Optional[int]]]:
    """``(access, data)`` for every item of a device's accesses (:class:`Access` or
    ``(op, vaddr[, value])``): a store without a value writes a fresh one,
    ``value_base + 1``, ``+ 2``, ...; a load has no data."""
    value = value_base
    for item in items:
        acc = _coerce(item)
        data = None
        if acc.op == AccessType.STORE:
            value += 1
            data = acc.value if acc.value is not None else value
        yield acc, data


class FaultRetry:
    """The fault-and-retry loop around one access, shared by every requester: the CPU and
    device workloads here, :meth:`pyrmap.devdriver.DeviceMmuDriver.access` and the RTL
    device (:class:`cosim.device.DeviceRequester`).

    Iterate for the turns of the loop; in each, make the attempt and ``break`` when it
    completed, else call :meth:`fault` -- it counts the fault and raises ``stuck(faults)``
    once there are more than ``limit`` -- then resolve the fault and let the loop turn.
    :meth:`forgive` takes the last fault back (waiting is not faulting again).

    Parameters
    ----------
    limit : int
        Faults allowed for one access.
    stuck : callable
        ``stuck(faults) -> Exception``: what a livelocked access raises.
    """

    def __init__(self, limit: int, stuck: Callable[[int], Exception]):
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise TypeError(f"Fault limit must be a positive integer, not {limit!r}")
        self.limit = limit
        self.stuck = stuck
        self.faults = 0

    def __iter__(self):
        return itertools.count()

    def fault(self) -> int:
        """Count one fault; raise ``stuck`` beyond the limit.  Returns the faults so far."""
        self.faults += 1
        if self.faults > self.limit:
            raise self.stuck(self.faults)
        return self.faults

    def forgive(self) -> None:
        self.faults -= 1


def fault_in(who: str, mm, acc: "Access", segv_ok: Optional[Callable] = None) -> bool:
    """Resolve a fault of ``acc`` through the engine's fault handler, as a CPU's or
    ``get_user_pages``'s fault does.  Returns False for a segmentation fault that
    ``segv_ok(mm, vaddr, op)`` allows; any other one is a workload bug
    (:class:`WorkloadError`)."""
    from .errors import SegmentationFault
    from .memory import do_page_fault
    try:
        do_page_fault(mm, acc.vaddr, acc.op)
    except SegmentationFault as exc:
        if segv_ok is not None and segv_ok(mm, acc.vaddr, acc.op):
            return False
        raise WorkloadError(f"{who}: workload bug: {acc.op.name} at 0x{acc.vaddr:x} of "
                            f"{mm!r} is a segmentation fault ({exc})") from exc
    return True


class DeviceWorkload:
    """The device's workload: accesses through the secondary MMU (the device TLB) on behalf
    of ``secondary.mm``, checked against the shadow like a CPU's.

    A MISS (or a permission fault) is the device fault the host driver resolves: the driver
    (:class:`pyrmap.checkers.SecondaryMmu`) installs the translation from the primary page
    table; when the primary PTE is missing or read-only, the primary fault handler runs first
    (what ``get_user_pages`` does), then the driver retries.  Device stores go straight to
    memory: the driver marked the page dirty when it installed a writable translation.

    Parameters
    ----------
    kernel : Kernel
    secondary : SecondaryMmu
        The registered driver of the mm the device works for.
    source : iterable
        Accesses, as for :class:`CpuWorkload`.
    checkers : Checkers, optional
    segv_ok : callable, optional
        As for :class:`CpuWorkload`.
    """

    def __init__(self, kernel, secondary, source: Iterable, *, checkers=None,
                 name: str = "device", max_faults: int = 64, value_base: int = 0xDE << 48,
                 segv_ok: Optional[Callable] = None):
        if not isinstance(kernel.arch, Arch):
            raise TypeError(f"A device workload runs on an Arch (its device port), "
                            f"not {type(kernel.arch).__name__}")
        self.kernel = kernel
        self.secondary = secondary
        self.mm = secondary.mm
        self.source = source
        self.checkers = checkers
        self.name = name
        self.max_faults = max_faults
        self.segv_ok = segv_ok
        self._next = value_base
        self.stats = {"loads": 0, "stores": 0, "faults": 0, "fills": 0}

    def run(self) -> dict:
        for item in self.source:
            self.access(_coerce(item))
        return self.stats

    def _stuck(self, acc: Access) -> Callable[[int], Exception]:
        return lambda faults: WorkloadError(
            f"{self.name}: {acc.op.name} at 0x{acc.vaddr:x} of {self.mm!r} still faults after "
            f"{self.max_faults} faults")

    def access(self, acc: Access) -> int:
        arch = self.kernel.arch
        mem = self.kernel.mem
        write = acc.op == AccessType.STORE
        retry = FaultRetry(self.max_faults, self._stuck(acc))
        for _ in retry:
            fault, paddr = arch.dev_access(acc.vaddr, acc.op, self.mm.asid)
            if fault == FaultKind.NONE:
                break
            arch.dev_ack_fault()
            self.stats["faults"] += 1
            retry.fault()
            if self.secondary.released:
                raise WorkloadError(f"{self.name}: the mm {self.mm!r} was released")
            if self.secondary.fault(acc.vaddr, write=write):
                self.stats["fills"] += 1
                continue
            if self.secondary.windows:
                retry.forgive()             # waiting is not faulting again
                self.stats["faults"] -= 1
                self.stats["waits"] = self.stats.get("waits", 0) + 1
                if self.stats["waits"] > 100_000:
                    raise WorkloadError(f"{self.name}: an invalidation window on {self.mm!r} "
                                        f"never closed")
                arch.yield_point("device waits for the invalidation window to close")
                continue
            if not fault_in(self.name, self.mm, acc, self.segv_ok):
                self.stats["segv"] = self.stats.get("segv", 0) + 1
                return None
        shadow = self.checkers.shadow if self.checkers is not None else None
        word = paddr & ~7
        if write:
            self._next += 1
            value = acc.value if acc.value is not None else self._next
            mem.write(word, value)
            self.stats["stores"] += 1
            if shadow is not None:
                shadow.store(self.mm, acc.vaddr & ~7, value)
            return value
        value = mem.read(word)
        self.stats["loads"] += 1
        if shadow is not None:
            shadow.load(self.mm, acc.vaddr & ~7, value, word)
        return value
