"""CpuDriver: one core's loads and stores, translated by the RTL MMU, performed on PhysMem.

A :class:`CpuDriver` drives ``cpu{i}__req__*`` of one core of ``hdl.top.Top`` and samples
``cpu{i}__resp__*`` (``hdl/PORTS.md``).  For each access of its workload it

1. sends (vaddr, op, user, sum, satp.asid, satp.root) -- satp as ``CosimArch.switch_mm`` set
   it -- and waits for the response pulse;
2. on ``NONE``: performs the 8-byte data load or store on the shared
   :class:`~pyrmap.physmem.PhysMem` at the translated physical address *in the same instant*
   as the response (no simulated time between the translation and the data access), and
   compares every load with the shadow memory (checker (c)) or records every store in it;
3. on ``PAGE``: runs the engine's fault handler in a host thread (:mod:`cosim.host`), then
   retries the access; on ``ACCESS`` (bus error) records it and gives up on that access.

A shootdown needs nothing from the driver: from the cycle the RTL acknowledges an
invalidation, no response leaves the port that was derived from a PTE read or a TLB entry older
than it (the MMU restarts a walk in flight itself, hdl/PORTS.md), so the data access performed
at the response instant never goes through a translation the shootdown removed.

Signals are sampled right after the rising edge, which gives their values in the cycle that
edge ended (a synchronous receiver's view): a request is accepted at the edge after which
``ready`` reads 1, and the response is the cycle after which ``resp__valid`` reads 1.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from cocotb.triggers import Lock as CoLock
from cocotb.triggers import RisingEdge

from pyrmap.physmem import BusError
from pyrmap.pte import AccessType, FaultKind

__all__ = ["Access", "AccessOutcome", "CpuDriver", "WorkloadError"]

MASK64 = (1 << 64) - 1


class WorkloadError(RuntimeError):
    """An access that can never complete (a fault the handler cannot resolve)."""


@dataclass(frozen=True)
class Access:
    """One access of a workload: ``data`` is the value a STORE writes."""
    vaddr: int
    op: AccessType
    data: Optional[int] = None
    mm: Any = None          # the mm to run in (switch_mm first); None: the core's current


@dataclass
class AccessOutcome:
    fault: FaultKind
    paddr: Optional[int]
    value: Optional[int]
    hit: bool
    retries: int
    cycles: int


class CpuDriver:
    """Drives core ``core``'s CPU port.

    Parameters
    ----------
    dut : cocotb handle
        ``top``.
    core : int
    arch : cosim.arch.CosimArch
        Supplies satp (``arch.satp(core)``), memory, the clock and the host environment.
    fault_handler : callable, optional
        ``fault_handler(mm, vaddr, op) -> int`` runs in a host thread on a PAGE fault (the
        kernel's do_page_fault); a negative return or an exception it raises is a
        :class:`WorkloadError` unless it is a SIGSEGV the workload expects.
    shadow : pyrmap.checkers.ShadowMemory, optional
        Every store is recorded in it and every load compared against it.
    user, sum : bool
        Privilege of the accesses (U-mode by default).
    max_retries : int
        Faults on one access before :class:`WorkloadError` (a livelock).

    Members
    -------
    stats : collections.Counter
        accesses, loads, stores, hits, misses, page_faults, access_faults, retries, cycles.
    """

    def __init__(self, dut, core: int, arch, *, fault_handler: Optional[Callable] = None,
                 shadow=None, user: bool = True, sum: bool = False, max_retries: int = 16,
                 on_access: Optional[Callable[..., None]] = None):
        if not isinstance(core, int) or not 0 <= core < arch.ncores:
            raise ValueError(f"Core must be 0..{arch.ncores - 1}, not {core!r}")
        if not isinstance(max_retries, int) or max_retries < 1:
            raise TypeError(f"Retry limit must be a positive integer, not {max_retries!r}")
        self.dut = dut
        self.core = core
        self.arch = arch
        self.env = arch.env
        self.mem = arch.mem
        self.clk = dut.clk
        self.fault_handler = fault_handler
        self.shadow = shadow
        self.user = user
        self.sum = sum
        self.max_retries = max_retries
        self.on_access = on_access
        self.stats: collections.Counter[str] = collections.Counter()
        self.log = logging.getLogger(f"cosim.core{core}.cpu")
        p = f"cpu{core}__"
        self._p = p
        self.req_valid = getattr(dut, p + "req__valid")
        self.req_ready = getattr(dut, p + "req__ready")
        self.req_vaddr = getattr(dut, p + "req__vaddr")
        self.req_op = getattr(dut, p + "req__op")
        self.req_user = getattr(dut, p + "req__user")
        self.req_sum = getattr(dut, p + "req__sum")
        self.req_asid = getattr(dut, p + "req__asid")
        self.req_root = getattr(dut, p + "req__root")
        self.resp_valid = getattr(dut, p + "resp__valid")
        self.resp_paddr = getattr(dut, p + "resp__paddr")
        self.resp_fault = getattr(dut, p + "resp__fault")
        self.resp_hit = getattr(dut, p + "resp__hit")
        self.req_valid.value = 0
        self.stopped = False
        self._port = CoLock()

    # --- one translation -----------------------------------------------------------------

    async def translate(self, vaddr: int, op: AccessType, *, timeout: int = 100_000):
        """Send one request; return ``(fault, paddr, hit, cycles)`` at the response pulse.

        On return, simulated time stands right after the edge that ended the response cycle;
        the caller may act on memory before any further edge (the data access is atomic with
        the translation)."""
        satp = self.arch.satp(self.core)
        if satp is None:
            raise RuntimeError(f"Core {self.core} has no address space (switch_mm first)")
        asid, root = satp
        self.last_start = self.arch.cycle()
        self.last_satp = satp
        self.req_vaddr.value = vaddr & MASK64
        self.req_op.value = int(op)
        self.req_user.value = int(self.user)
        self.req_sum.value = int(self.sum)
        self.req_asid.value = asid
        self.req_root.value = root
        self.req_valid.value = 1
        cycles = 0
        accepted = False
        while True:
            await RisingEdge(self.clk)
            cycles += 1
            if not accepted and int(self.req_ready.value):
                accepted = True
                self.req_valid.value = 0
            if accepted and int(self.resp_valid.value):
                fault = FaultKind(int(self.resp_fault.value))
                paddr = int(self.resp_paddr.value)
                hit = bool(int(self.resp_hit.value))
                return fault, paddr, hit, cycles
            if cycles > timeout:
                raise TimeoutError(f"core {self.core}: no response to {AccessType(op).name} "
                                   f"0x{vaddr:x} within {timeout} cycles")

    async def raw_access(self, vaddr: int, op: AccessType, data: Optional[int] = None,
                         user: Optional[bool] = None, sum: Optional[bool] = None):
        """One translation and, when it succeeds, the data access at the same instant; no
        fault handling, no shadow.  What ``CosimArch.cpu_access`` runs for an engine thread.

        Returns a :class:`pyrmap.softarch.AccessResult`."""
        from pyrmap.softarch import AccessResult
        op = AccessType(op)
        async with self._port:
            saved = (self.user, self.sum)
            if user is not None:
                self.user = user
            if sum is not None:
                self.sum = sum
            try:
                fault, paddr, hit, cycles = await self.translate(vaddr, op)
            finally:
                self.user, self.sum = saved
            self.stats["translations"] += 1
            self.stats["cycles"] += cycles
            if fault != FaultKind.NONE:
                self.stats["page_faults" if fault == FaultKind.PAGE else "access_faults"] += 1
                return AccessResult(fault, 0, None, hit)
            self.arch.check_access(self.core, self.last_satp[0], self.last_satp[1], vaddr,
                                   self.last_start, paddr)
            self.arch.record_fill(self.core, self.last_satp, vaddr, paddr, op)
            word = paddr & ~7
            value = None
            try:
                if op == AccessType.STORE:
                    self.mem.write(word, data & MASK64)
                    self.stats["stores"] += 1
                else:
                    value = self.mem.read(word)
                    self.stats["loads" if op == AccessType.LOAD else "fetches"] += 1
            except BusError:
                self.stats["data_bus_errors"] += 1
                return AccessResult(FaultKind.ACCESS, paddr, None, hit)
            self.stats["accesses"] += 1
            self.stats["hits" if hit else "misses"] += 1
            return AccessResult(FaultKind.NONE, paddr, value, hit)

    # --- one access ------------------------------------------------------------------------

    async def access(self, vaddr: int, op: AccessType, data: Optional[int] = None,
                     mm=None) -> AccessOutcome:
        """Translate and perform one access, handling page faults; see the module docstring.

        Raises
        ------
        WorkloadError
            The fault handler failed, or the access faulted ``max_retries`` times.
        pyrmap.checkers.InvariantViolation
            A load returned something other than the last value written (shadow memory).
        """
        op = AccessType(op)
        if op == AccessType.STORE and not isinstance(data, int):
            raise TypeError(f"A store needs integer data, not {data!r}")
        if mm is not None and self.arch.current_mm[self.core] is not mm:
            self.arch.switch_mm(self.core, mm)
        mm = self.arch.current_mm[self.core]
        retries = 0
        total = 0
        while True:
            async with self._port:
                fault, paddr, hit, cycles = await self.translate(vaddr, op)
                if fault == FaultKind.NONE:
                    self.arch.check_access(self.core, self.last_satp[0], self.last_satp[1],
                                           vaddr, self.last_start, paddr)
                    self.arch.record_fill(self.core, self.last_satp, vaddr, paddr, op)
                    value = self._data(mm, vaddr, op, data, paddr)
            total += cycles
            self.stats["translations"] += 1
            if fault == FaultKind.NONE:
                self.stats["accesses"] += 1
                self.stats["hits" if hit else "misses"] += 1
                self.stats["cycles"] += total
                out = AccessOutcome(fault, paddr, value, hit, retries, total)
                if self.on_access is not None:
                    self.on_access(self.core, mm, vaddr, op, out)
                return out
            if fault == FaultKind.ACCESS:
                self.stats["access_faults"] += 1
                return AccessOutcome(fault, None, None, hit, retries, total)
            # PAGE fault: the kernel resolves it in a host thread, then we retry.
            self.stats["page_faults"] += 1
            retries += 1
            if retries > self.max_retries:
                raise WorkloadError(f"core {self.core}: {op.name} 0x{vaddr:x} of {mm!r} faulted "
                                    f"{retries} times (seed {self.env.seed})")
            if self.fault_handler is None:
                raise WorkloadError(f"core {self.core}: page fault on {op.name} 0x{vaddr:x} "
                                    f"and no fault handler")
            ret = await self.env.run(f"fault/core{self.core}", self._fault, mm, vaddr, op)
            if isinstance(ret, int) and ret < 0:
                raise WorkloadError(f"core {self.core}: the fault handler failed ({ret}) on "
                                    f"{op.name} 0x{vaddr:x} of {mm!r}")
            self.stats["retries"] += 1

    def _fault(self, mm, vaddr, op):
        task = self.env.current()
        task.mm = mm
        return self.fault_handler(mm, vaddr, op)

    def _data(self, mm, vaddr: int, op: AccessType, data, paddr: int) -> Optional[int]:
        word = paddr & ~7
        try:
            if op == AccessType.STORE:
                self.mem.write(word, data)
                self.stats["stores"] += 1
                if self.shadow is not None:
                    self.shadow.store(mm, vaddr & ~7, data)
                return None
            value = self.mem.read(word)
            self.stats["loads" if op == AccessType.LOAD else "fetches"] += 1
            if self.shadow is not None:
                self.shadow.load(mm, vaddr & ~7, value, word)
            return value
        except BusError:
            self.stats["data_bus_errors"] += 1
            return None

    # --- a workload ------------------------------------------------------------------------

    async def run(self, workload: Iterable, *, limit: Optional[int] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Issue every access of ``workload`` (:class:`Access` objects, or ``(vaddr, op,
        data)`` / ``(vaddr, op, data, mm)`` tuples) in order; return how many completed.

        Stops early when :attr:`stopped` is set (another part of the run failed)."""
        n = 0
        for item in workload:
            if self.stopped or (limit is not None and n >= limit):
                break
            if isinstance(item, Access):
                a = item
            else:
                a = Access(*item)
            await self.access(a.vaddr, a.op, a.data, a.mm)
            n += 1
            if progress is not None:
                progress(self.core, n)
        return n

    def perf(self) -> dict[str, int]:
        """The core's RTL performance counters (``cpu{i}__perf__*``)."""
        return self.arch.perf(self.core)
