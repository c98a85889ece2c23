"""DevArch: the device operations of the secondary-MMU driver, performed on the RTL DeviceMmu.

:class:`DevArch` gives :class:`pyrmap.devdriver.DeviceMmuDriver` the same device operations
SoftArch has (``dev_fill``, ``dev_inval``, ``dev_young``, ``dev_entries``, ``dev_access``),
each performed through the ``dev__…`` ports of ``hdl.top.Top`` (``hdl/PORTS.md``) in
simulated time: called from a host thread (:mod:`cosim.host`), each is one round trip that
drives the port, holds ``valid`` until the handshake or acknowledgement, and returns after it.

* ``dev_fill`` drives ``dev__fill__*`` until ``fill.ready`` took it (the entry is written the
  cycle after; the next lookup sees it).
* ``dev_inval`` drives ``dev__inval__*`` and returns after ``dev__inval__ack``: from then on
  no entry matching the request exists.  Each acknowledged request is logged with its cycle
  for the cycle-level access check (:meth:`DevArch.check_access`, checker (a)).
* ``dev_young`` drives ``dev__young__*`` and returns the old young bit with the ack.
* ``dev_entries`` reads the RTL's device entry registers (``dev.tlb.e<i>``) through
  :class:`cosim.arch.CosimArch`'s reader.

Each port has its own cocotb lock, so two host threads never drive one port at once; the
DeviceMmu itself arbitrates between ports (young > fill > request).
"""

from __future__ import annotations

import collections
import logging

from cocotb.triggers import Lock as CoLock

from pyrmap.arch import DevicePort, InvalKind, TlbEntry
from pyrmap.pte import AccessType, FaultKind

from .accesscheck import Inval, inval_record

__all__ = ["DevArch"]


class DevArch(DevicePort):
    """The RTL device operations for the secondary-MMU driver (a :class:`pyrmap.arch.DevicePort`).

    Parameters
    ----------
    arch : cosim.arch.CosimArch
        Supplies the dut, the host environment, the clock and the TLB reader.

    Members
    -------
    ports : cosim.device.DeviceDriver
        The driver of the ``dev__…`` ports (coroutines).
    stats : collections.Counter
        fills, invals, young_tests, young_set, accesses, fill_cycles, inval_cycles.
    inval_log : list of cosim.accesscheck.Inval
        Every acknowledged invalidation (request and ack cycles, asid, VA range).

    Raises
    ------
    ValueError
        The dut has no device ports.
    """

    def __init__(self, arch):
        dut = arch.dut
        for port in ("dev__req__valid", "dev__fill__valid", "dev__inval__valid",
                     "dev__young__valid"):
            if not hasattr(dut, port):
                raise ValueError(f"The design has no {port} port (no DeviceMmu)")
        self.arch = arch
        self.dut = dut
        self.env = arch.env
        self.ports = arch.device_port_driver(dut, asid_bits=arch.asid_bits, cycle=arch.cycle)
        self.asid_mask = (1 << max(arch.asid_bits, 1)) - 1
        self.stats: collections.Counter[str] = collections.Counter()
        self.inval_log: list[Inval] = []
        self.checks = 0
        self.checker = None          # a pyrmap.checkers.Checker for check_access failures
        self._locks = {name: CoLock() for name in ("req", "fill", "inval", "young")}
        self.log = logging.getLogger("cosim.dev")

    # --- coroutines (the scheduler side) ----------------------------------------------------

    async def fill_async(self, vaddr: int, asid: int, ppn: int, level: int, perm: int,
                         g: bool) -> None:
        async with self._locks["fill"]:
            start = self.arch.cycle()
            await self.ports.fill(vaddr, asid & self.asid_mask, ppn, level, perm, g)
            self.stats["fill_cycles"] += self.arch.cycle() - start

    async def inval_async(self, kind: InvalKind, vaddr: int, asid: int) -> None:
        async with self._locks["inval"]:
            start = self.arch.cycle()
            await self.ports.inval(InvalKind(kind), vaddr, asid & self.asid_mask)
            done = self.arch.cycle()
            self.stats["inval_cycles"] += done - start
        self.inval_log.append(inval_record(kind, vaddr, asid, start, done))
        self.arch._tlb_cache_key = None

    async def young_async(self, vaddr: int, asid: int) -> bool:
        async with self._locks["young"]:
            return await self.ports.young(vaddr, asid & self.asid_mask)

    async def access_async(self, vaddr: int, op: AccessType, asid: int):
        """One request on ``dev__req``: ``(fault, paddr, accepted)`` at the response, with the
        cycle the port accepted the request (when the access began, for checker (a))."""
        async with self._locks["req"]:
            fault, paddr, accepted = await self.ports.request(vaddr, AccessType(op),
                                                              asid & self.asid_mask)
            self.stats["accesses"] += 1
            return FaultKind(fault), paddr, accepted

    async def ack_fault_async(self):
        """Read the pending fault record and acknowledge it: ``(vaddr, asid, op)`` or None."""
        async with self._locks["req"]:
            rec = self.ports.fault_record()
            if rec is not None:
                await self.ports.ack_fault()
            return rec

    # --- the driver's device operations (host threads) -------------------------------------

    def _call(self, what: str, coro, *args):
        if not self.env.in_host_thread():
            raise RuntimeError(f"dev_{what} needs simulated time; call it from a host thread "
                               f"(HostEnv.run), not from a coroutine")
        return self.env.call(coro, *args)

    def dev_fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int,
                 g: bool = False) -> None:
        """Install a device entry (perm: R W X U in PTE bit positions); returns once the
        DeviceMmu took it.  The checkers hear of it (the arch's ``dev_fill`` event, as
        SoftArch raises it), whoever drives the port."""
        self.stats["fills"] += 1
        self._call("fill", self.fill_async, vaddr, asid, ppn, level, perm, g)
        self.arch.notify_dev_fill(vaddr, asid, ppn, level, perm, g)

    def dev_inval(self, kind: InvalKind, vaddr: int = 0, asid: int = 0) -> int:
        """One device invalidation; returns after the ack (0: the RTL does not count)."""
        self.stats["invals"] += 1
        self._call("inval", self.inval_async, kind, vaddr, asid)
        return 0

    def dev_young(self, vaddr: int, asid: int) -> bool:
        """Test and clear the young bit of the entry mapping (vaddr, asid)."""
        self.stats["young_tests"] += 1
        young = bool(self._call("young", self.young_async, vaddr, asid))
        self.stats["young_set"] += int(young)
        return young

    def dev_access(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int]:
        """A device access from a host thread (the device workload normally issues them
        from a coroutine, :class:`cosim.device.DeviceRequester`)."""
        fault, paddr, _ = self._call("access", self.access_async, vaddr, op, asid)
        return fault, paddr

    def dev_ack_fault(self):
        """Consume the DeviceMmu's pending fault record ``(vaddr, asid, op)``, or None."""
        self.stats["ack_faults"] += 1
        return self._call("ack_fault", self.ack_fault_async)

    def dev_entries(self) -> list[TlbEntry]:
        """The RTL device TLB's valid entries (no side effects)."""
        return self.arch.dev_entries()

    def counters(self) -> dict[str, int]:
        """The DeviceMmu's ``dev__perf__*`` counters."""
        return self.ports.counters()

    # --- checker (a) for device accesses, at cycle level -----------------------------------

    def check_access(self, asid: int, root: int, va: int, start: int, paddr: int, *,
                     op: AccessType) -> None:
        """An access that began (request presented at cycle ``start``) must complete through
        a translation -- frame, and W for a store -- that no device invalidation acknowledged
        before it began had retired (:mod:`cosim.accesscheck`, the cores' rule)."""
        self.arch.check_completed("device", self.inval_log, self.checker, self._counted, asid,
                              root, va, start, paddr, op, device=True)

    def _counted(self) -> None:
        self.checks += 1
