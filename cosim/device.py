"""DeviceDriver: a device workload through the RTL DeviceMmu, its faults served by the host.

A :class:`DeviceDriver` issues the device's accesses on ``dev__req`` (a coroutine; the
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

Members (ports): drives ``dev__req__valid/vaddr/op/asid`` and ``dev__fault__ack``; samples
``dev__req__ready``, ``dev__resp__*`` and ``dev__fault__*`` (through
:class:`cosim.devarch.DevArch`, which owns the port locks).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Iterable, Optional

from cocotb.triggers import RisingEdge

from pyrmap.devdriver import EFAULT, ENOMEM
from pyrmap.physmem import BusError
from pyrmap.pte import AccessType, FaultKind

__all__ = ["DeviceDriver", "DeviceOutcome", "DeviceError"]

MASK64 = (1 << 64) - 1


class DeviceError(RuntimeError):
    """The device saw something no correct MMU does (a wrong fault record, endless faults)."""


@dataclass
class DeviceOutcome:
    fault: FaultKind
    paddr: Optional[int]
    value: Optional[int]
    retries: int
    cycles: int


class DeviceDriver:
    """The device's workload on the RTL.

    Parameters
    ----------
    devarch : cosim.devarch.DevArch
    driver : pyrmap.devdriver.DeviceMmuDriver
        The host driver (registered on ``driver.mm``) whose fault path serves the misses.
    shadow : pyrmap.checkers.ShadowMemory, optional
    max_retries : int
        Faults on one access before :class:`DeviceError`.

    Members
    -------
    stats : collections.Counter
        accesses, loads, stores, misses, page_faults, efaults, retries, cycles,
        record_checks.
    """

    def __init__(self, devarch, driver, *, shadow=None, max_retries: int = 64):
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 1:
            raise TypeError(f"Retry limit must be a positive integer, not {max_retries!r}")
        if getattr(driver, "dev", None) is not devarch:
            raise ValueError(f"The host driver {driver!r} does not use this DevArch for its "
                             f"device operations")
        self.devarch = devarch
        self.arch = devarch.arch
        self.env = devarch.env
        self.driver = driver
        self.mm = driver.mm
        self.shadow = shadow
        self.max_retries = max_retries
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
        retries = cycles = 0
        while True:
            start = self.arch.cycle()
            fault, paddr, began = await self.devarch.access_async(vaddr, op, mm.asid)
            cycles += self.arch.cycle() - start
            if fault == FaultKind.NONE:
                value = self._complete(vaddr, op, data, paddr, began)
                self.stats["accesses"] += 1
                self.stats["cycles"] += cycles
                return DeviceOutcome(fault, paddr, value, retries, cycles)
            if fault == FaultKind.MISS:
                self.stats["misses"] += 1
                await self._take_record(vaddr, op)
            else:
                self.stats["page_faults"] += 1
            retries += 1
            if retries > self.max_retries:
                raise DeviceError(f"device: {op.name} 0x{vaddr:x} of {mm!r} faulted {retries} "
                                  f"times (seed {self.env.seed})")
            rc = await self.env.run("devfault", drv.device_fault, vaddr, op)
            if rc in (-EFAULT, -ENOMEM):
                self.stats["efaults" if rc == -EFAULT else "enomem"] += 1
                if drv.stopped:
                    self.stopped = True
                return DeviceOutcome(FaultKind.PAGE, None, None, retries, cycles)
            self.stats["retries"] += 1

    async def _take_record(self, vaddr: int, op: AccessType) -> None:
        """The fault record of a MISS: it must name this access (no other miss can be pending:
        every record is acknowledged before the next request); acknowledge it."""
        ports = self.devarch.ports
        rec = ports.fault_record()
        if rec is None:
            await RisingEdge(self.arch.clk)
            rec = ports.fault_record()
        want = (vaddr & MASK64, self.mm.asid & self.devarch.asid_mask, op)
        self.stats["record_checks"] += 1
        if rec != want:
            raise DeviceError(f"device: the fault record after the MISS of {op.name} "
                              f"0x{vaddr:x} is {rec}, expected {want}")
        await ports.ack_fault()

    def _complete(self, vaddr: int, op: AccessType, data, paddr: int, began: int):
        """The response instant: checks (a) and (b), then the data access."""
        self.devarch.check_access(self.mm.asid, self.mm.pgd, vaddr, began, paddr)
        self.driver.completed(vaddr, op, paddr)
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
        from pyrmap.workload import _coerce
        value = value_base
        done = 0
        for item in workload:
            if self.stopped or self.driver.stopped:
                self.stats["stopped_early"] += 1
                break
            acc = _coerce(item)
            data = None
            if acc.op == AccessType.STORE:
                value += 1
                data = acc.value if acc.value is not None else value
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
        try:
            fig["perf"] = self.devarch.counters()
        except Exception:  # noqa: BLE001 - counters are a courtesy in a report
            fig["perf"] = {}
        return fig
