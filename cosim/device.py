"""The device's side of the RTL: its port driver and its requests, their faults served by the host.

:class:`DeviceDriver` is the one driver of the DeviceMmu's ports (``dev__req``, ``dev__fill``,
``dev__young``, ``dev__inval``, ``dev__fault``; ``hdl/PORTS.md``).

A :class:`DeviceRequester` issues the device's accesses on ``dev__req`` (a coroutine; the
device is hardware, not a host thread) for the mm its :class:`pyrmap.devdriver.DeviceMmuDriver`
serves.  For each access it

1. sends (vaddr, op, asid) and waits for the response pulse;
2. on ``NONE``: checks the access at cycle level (checker (a): an access that began after a
   device invalidation was acknowledged must not complete through what it removed; checker
   (b): never through a free frame), then performs the 8-byte load or store on the shared
   :class:`~pyrmap.physmem.PhysMem` in the same instant, comparing loads with the shadow
   memory (checker (c)) and recording stores in it;
3. on ``MISS``: reads the fault record the DeviceMmu raised (``dev__fault__*``: it must name
   this access), acknowledges it, runs the driver's fault path
   (:meth:`~pyrmap.devdriver.DeviceMmuDriver.device_fault`) in a host thread and retries; on
   ``PAGE`` (the entry lacks the permission, e.g. a store through a read-only entry) the same
   without a record.  ``-EFAULT`` (unmapped meanwhile, or the device was stopped by
   ``release``) or ``-ENOMEM`` drops the access; a stopped device ends the workload.

With ``data=False`` (the fast path, :mod:`cosim.fastrun`) step 2 makes the checks and no data
access: there the data lives in the gateware memory, and the cores' loads and stores are
judged from their logs in the memory's order, which a word the device wrote from software
would not be part of.

Members (ports): drives ``dev__req__valid/vaddr/op/asid`` and ``dev__fault__ack``; samples
``dev__req__ready``, ``dev__resp__*`` and ``dev__fault__*`` (through
:class:`cosim.devarch.DevArch`, which owns the port locks).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from cocotb.triggers import NextTimeStep, ReadOnly

from pyrmap.arch import DEVICE_COUNTERS, InvalKind
from pyrmap.devdriver import EFAULT, ENOMEM
from pyrmap.physmem import BusError
from pyrmap.pte import AccessType, FaultKind
from pyrmap.workload import FaultRetry

from .cycles import CycleClock
from .inval import InvalDriver
from .ports import PortTimeout, read_counters

__all__ = ["DeviceDriver", "SettledDeviceDriver", "DeviceRequester", "DeviceOutcome",
           "DeviceError", "pte_perm_to_port", "DEVICE_INPUTS", "check_device_entries"]

MASK64 = (1 << 64) - 1
#: The DeviceMmu's valid/ack inputs, driven 0 from reset until a device runs.
DEVICE_INPUTS = ("dev__req__valid", "dev__fill__valid", "dev__young__valid",
                 "dev__inval__valid", "dev__fault__ack")


def pte_perm_to_port(perm: int) -> int:
    """R W X U in PTE positions (bits 1..4) -> the fill port's ``perm`` (bits 0..3)."""
    return (perm >> 1) & 0xF


class DeviceDriver:
    """The one driver of the DeviceMmu's ports (``dev__…`` of ``top``), one operation at a
    time per port.

    Members (ports)
    ---------------
    drives ``req__valid/vaddr/op/asid``, ``fill__valid/vaddr/asid/ppn/level/perm/g``,
    ``young__valid/vaddr/asid``, ``inval__valid/kind/vaddr/asid``, ``fault__ack``; samples
    ``req__ready``, ``resp__*``, ``fault__valid/vaddr/asid/op``, ``fill__ready``,
    ``young__ack/young``, ``inval__ack``.
    """

    TIMEOUT = 1000

    def __init__(self, dut, *, asid_bits: int = 16, cycle: Optional[Callable[[], int]] = None):
        from .memory import cycle_now
        self.dut = dut
        #: The clock-cycle count the request's acceptance is stamped with.
        self.cycle = cycle or cycle_now
        self.clock = CycleClock.of(dut)
        self.invals = InvalDriver(dut, "dev", asid_bits=asid_bits, timeout=self.TIMEOUT)

    def _s(self, name):
        return getattr(self.dut, f"dev__{name}")

    async def _wait(self, name: str, what: str) -> None:
        for _ in range(self.TIMEOUT):
            await self.clock.edge()
            if int(self._s(name).value):
                return
        raise PortTimeout(f"dev {what}: {name} not seen in {self.TIMEOUT} cycles")

    async def access(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int]:
        """One request on ``dev__req``: ``(fault, paddr)`` at the response pulse."""
        fault, paddr, _ = await self.request(vaddr, op, asid)
        return fault, paddr

    async def request(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int, int]:
        """One request on ``dev__req``: ``(fault, paddr, accepted)`` at the response pulse,
        ``accepted`` the cycle the port took the request (:attr:`cycle` after the edge at
        which ``ready`` read 1, as :class:`cosim.cpu.CpuRequester` counts it)."""
        self._s("req__vaddr").value = vaddr
        self._s("req__op").value = int(op)
        self._s("req__asid").value = asid
        self._s("req__valid").value = 1
        await self._wait("req__ready", "request")
        accepted = self.cycle()
        self._s("req__valid").value = 0
        if not int(self._s("resp__valid").value):
            await self._wait("resp__valid", "response")
        return (FaultKind(int(self._s("resp__fault").value)), int(self._s("resp__paddr").value),
                accepted)

    async def _taken(self, ready: str, what: str) -> None:
        """Return at the edge that took the request whose ``valid`` is held (``ready`` read
        1 at it)."""
        await self._wait(ready, what)

    def fault_record(self):
        """The pending fault record (vaddr, asid, op) or None (sampled now)."""
        if not int(self._s("fault__valid").value):
            return None
        return (int(self._s("fault__vaddr").value), int(self._s("fault__asid").value),
                AccessType(int(self._s("fault__op").value)))

    async def ack_fault(self) -> None:
        """Pulse ``fault__ack`` for one cycle (the record is gone the cycle after)."""
        self._s("fault__ack").value = 1
        await self.clock.edge()
        self._s("fault__ack").value = 0
        await self.clock.edge()

    async def fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int, g: bool):
        self._s("fill__vaddr").value = vaddr
        self._s("fill__asid").value = asid
        self._s("fill__ppn").value = ppn
        self._s("fill__level").value = level
        self._s("fill__perm").value = pte_perm_to_port(perm)
        self._s("fill__g").value = int(g)
        self._s("fill__valid").value = 1
        await self._taken("fill__ready", "fill")
        self._s("fill__valid").value = 0

    async def young(self, vaddr: int, asid: int) -> bool:
        self._s("young__vaddr").value = vaddr
        self._s("young__asid").value = asid
        self._s("young__valid").value = 1
        await self._wait("young__ack", "young")
        self._s("young__valid").value = 0
        return bool(int(self._s("young__young").value))

    async def inval(self, kind: InvalKind, vaddr: int, asid: int) -> None:
        """One invalidation on ``dev__inval`` (:class:`cosim.inval.InvalDriver`); returns at
        the ack."""
        await self.invals.invalidate(kind, vaddr, asid)

    def counters(self) -> dict[str, int]:
        """The DeviceMmu's counters (``dev__perf__*``, :data:`pyrmap.arch.DEVICE_COUNTERS`)."""
        return read_counters(self.dut, "dev", DEVICE_COUNTERS)


class SettledDeviceDriver(DeviceDriver):
    """The device's port driver for a design whose clock runs inside it (the fast path,
    :func:`cosim.fastbuild.clocked_verilog`).

    There a coroutine woken by a rising edge of ``clk`` may read the values after that
    edge's evaluation (the new cycle's), where a cocotb-driven clock gives the values the
    edge sampled; so a ``ready`` read then need not be the one an edge took.  This driver
    reads ``ready`` and the response in the ReadOnly phase of a time step (the values the
    next edge samples, whichever the wake order) and drops ``valid`` right after the edge
    that took the request: one request per handshake, as :class:`DeviceDriver` makes them.
    """

    async def _taken(self, ready: str, what: str) -> None:
        for _ in range(self.TIMEOUT):
            await ReadOnly()
            took = int(self._s(ready).value)
            await self.clock.edge()
            if took:
                return
        raise PortTimeout(f"dev {what}: {ready} not seen in {self.TIMEOUT} cycles")

    async def request(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int, int]:
        """As :meth:`DeviceDriver.request`; ``accepted`` is the cycle that begins at the edge
        that took the request."""
        self._s("req__vaddr").value = vaddr
        self._s("req__op").value = int(op)
        self._s("req__asid").value = asid
        self._s("req__valid").value = 1
        await self._taken("req__ready", "request")
        self._s("req__valid").value = 0
        for waited in range(self.TIMEOUT):
            await ReadOnly()
            if not waited:
                accepted = self.cycle()
            if int(self._s("resp__valid").value):
                break
            await self.clock.edge()
        else:
            raise PortTimeout(f"dev response: resp__valid not seen in {self.TIMEOUT} cycles")
        out = (FaultKind(int(self._s("resp__fault").value)), int(self._s("resp__paddr").value),
               accepted)
        await NextTimeStep()          # out of ReadOnly: the caller may drive ports again
        return out


def check_device_entries(tlb, driver) -> int:
    """Every entry of the RTL device TLB (``driver.device_entries()``) is backed by the
    current PTE of ``driver.mm``; a failure goes to ``tlb`` (checker (a), a
    :class:`pyrmap.checkers.Checker`).  Call at a quiescent point.  Returns the number of
    entries checked."""
    entries = driver.device_entries()
    for entry in entries:
        problem, ptep, _ = tlb._problem("device TLB", entry, driver.mm)
        if problem:
            tlb.fail(f"device TLB holds {entry} of {driver.mm!r} but {problem}", ptep)
    return len(entries)


class DeviceError(RuntimeError):
    """The device saw something no correct MMU does (a wrong fault record, endless faults)."""


@dataclass
class DeviceOutcome:
    fault: FaultKind
    paddr: Optional[int]
    value: Optional[int]
    retries: int
    cycles: int


class DeviceRequester:
    """The device's workload on the RTL.

    Parameters
    ----------
    devarch : cosim.devarch.DevArch
    driver : pyrmap.devdriver.DeviceMmuDriver
        The host driver (registered on ``driver.mm``) whose fault path serves the misses.
    shadow : pyrmap.checkers.ShadowMemory, optional
    max_retries : int
        Faults on one access before :class:`DeviceError`.
    data : bool
        Make each completed access's 8-byte load or store (default); False: check the
        translation only (see the module's docstring).

    Members
    -------
    stats : collections.Counter
        accesses, loads, stores, translations (``data=False``), misses, page_faults,
        efaults, retries, cycles, record_checks.
    """

    def __init__(self, devarch, driver, *, shadow=None, max_retries: int = 64,
                 data: bool = True):
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 1:
            raise TypeError(f"Retry limit must be a positive integer, not {max_retries!r}")
        if driver.dev is not devarch:
            raise ValueError(f"The host driver {driver!r} does not use this DevArch for its "
                             f"device operations")
        self.devarch = devarch
        self.arch = devarch.arch
        self.env = devarch.env
        self.driver = driver
        self.mm = driver.mm
        self.shadow = shadow
        self.max_retries = max_retries
        self.data = data
        self.stats: collections.Counter[str] = collections.Counter()
        self.stopped = False
        self.log = logging.getLogger("cosim.dev.workload")

    async def access(self, vaddr: int, op: AccessType, data: Optional[int] = None
                     ) -> DeviceOutcome:
        """One device access with its fault handling; see the module docstring."""
        op = AccessType(op)
        if op == AccessType.STORE and not isinstance(data, int):
            raise TypeError(f"A store needs integer data, not {data!r}")
        mm, drv = self.mm, self.driver
        cycles = 0
        retry = FaultRetry(self.max_retries, lambda faults: DeviceError(
            f"device: {op.name} 0x{vaddr:x} of {mm!r} faulted {faults} times "
            f"(seed {self.env.seed})"))
        for _ in retry:
            start = self.arch.cycle()
            fault, paddr, began = await self.devarch.access_async(vaddr, op, mm.asid)
            cycles += self.arch.cycle() - start
            if fault == FaultKind.NONE:
                value = self._complete(vaddr, op, data, paddr, began)
                self.stats["accesses"] += 1
                self.stats["cycles"] += cycles
                return DeviceOutcome(fault, paddr, value, retry.faults, cycles)
            if fault == FaultKind.MISS:
                self.stats["misses"] += 1
                await self._take_record(vaddr, op)
            else:
                self.stats["page_faults"] += 1
            retry.fault()
            rc = await self.env.run("devfault", drv.device_fault, vaddr, op)
            if rc in (-EFAULT, -ENOMEM):
                self.stats["efaults" if rc == -EFAULT else "enomem"] += 1
                if drv.stopped:
                    self.stopped = True
                return DeviceOutcome(FaultKind.PAGE, None, None, retry.faults, cycles)
            self.stats["retries"] += 1

    async def _take_record(self, vaddr: int, op: AccessType) -> None:
        """The fault record of a MISS: it must name this access (no other miss can be pending:
        every record is acknowledged before the next request); acknowledge it."""
        ports = self.devarch.ports
        rec = ports.fault_record()
        if rec is None:
            await self.arch.clock.edge()
            rec = ports.fault_record()
        want = (vaddr & MASK64, self.mm.asid & self.devarch.asid_mask, op)
        self.stats["record_checks"] += 1
        if rec != want:
            raise DeviceError(f"device: the fault record after the MISS of {op.name} "
                              f"0x{vaddr:x} is {rec}, expected {want}")
        await ports.ack_fault()

    def _complete(self, vaddr: int, op: AccessType, data, paddr: int, began: int):
        """The response instant: checks (a) and (b), then the data access."""
        self.devarch.check_access(self.mm.asid, self.mm.pgd, vaddr, began, paddr, op=op)
        self.driver.completed(vaddr, op, paddr)
        if not self.data:
            self.stats["translations"] += 1
            return None
        word = paddr & ~7
        try:
            if op == AccessType.STORE:
                self.arch.mem.write(word, data & MASK64)
                self.stats["stores"] += 1
                if self.shadow is not None:
                    self.shadow.store(self.mm, vaddr & ~7, data)
                return None
            value = self.arch.mem.read(word)
            self.stats["loads"] += 1
            if self.shadow is not None:
                self.shadow.load(self.mm, vaddr & ~7, value, word)
            return value
        except BusError:
            self.stats["data_bus_errors"] += 1
            return None

    async def run(self, workload: Iterable, *, value_base: int = 0xD5 << 48) -> int:
        """Issue every access of ``workload`` (:class:`pyrmap.workload.Access` or
        ``(op, vaddr[, value])``); a store writes a fresh value.  Ends early when the device
        is stopped.  Returns the number of accesses that completed."""
        from pyrmap.workload import with_store_values
        done = 0
        for acc, data in with_store_values(workload, value_base):
            if self.stopped or self.driver.stopped:
                self.stats["stopped_early"] += 1
                break
            out = await self.access(acc.vaddr, acc.op, data)
            done += out.fault == FaultKind.NONE
        return done

    def figures(self) -> dict:
        """The device's figures: the host driver's (:func:`pyrmap.devdriver.device_figures`
        keys) with the workload's accesses, misses and permission faults, and the
        DeviceMmu's counters."""
        from pyrmap.devdriver import device_figures
        fig = device_figures(self.driver)
        fig["accesses"] = self.stats["accesses"]
        fig["misses"] = self.stats["misses"]
        fig["page_faults"] = self.stats["page_faults"]
        fig["efaults"] = self.stats["efaults"]
        fig["access_checks"] = self.devarch.checks
        fig["perf"] = self.devarch.counters()
        return fig
