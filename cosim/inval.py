"""InvalDriver: one invalidation port of ``hdl.top.Top`` (``cpu{i}__inval`` or ``dev__inval``).

The one driver of an invalidation port (``hdl/PORTS.md``): :meth:`InvalDriver.invalidate`
drives (kind, vaddr, asid), holds ``valid`` until the ``ack`` pulse and returns at the edge
after which ``ack`` reads 1: from then on no matching entry exists and no walk that began
before the request can install its result.  Users: :class:`cosim.arch.CosimArch` (the
flushes), :class:`cosim.devarch.DevArch` (the device's), the random MMU stimulus
(:mod:`cosim.tb.agents`) and the litmus runner.
"""

from __future__ import annotations

from typing import Callable

from cocotb.triggers import Lock as CoLock

from pyrmap.arch import InvalKind

from .cycles import CycleClock
from .memory import cycle_now
from .ports import PortTimeout, handles
from .signals import peek

__all__ = ["InvalDriver"]

MASK64 = (1 << 64) - 1


class InvalDriver:
    """The driver of one invalidation port.

    Parameters
    ----------
    dut : cocotb handle
        ``top``.
    prefix : str
        ``"cpu{i}"`` or ``"dev"``.
    asid_bits : int
        ASIDs are cut to this width (at least one bit: the port's width).
    timeout : int
        Cycles to wait for the ack; :class:`~cosim.ports.PortTimeout` after.

    Members (ports)
    ---------------
    drives ``{prefix}__inval__valid/kind/vaddr/asid``; samples ``{prefix}__inval__ack``.

    Members
    -------
    acks : int
        Requests acknowledged so far.
    lock : cocotb Lock
        Held by :meth:`invalidate_all`; one sequence of requests at a time.
    """

    def __init__(self, dut, prefix: str, *, asid_bits: int = 16, timeout: int = 100_000,
                 cycle: Callable[[], int] = cycle_now):
        self.dut = dut
        self.prefix = prefix
        self.clock = CycleClock.of(dut)
        self.asid_mask = (1 << max(asid_bits, 1)) - 1
        self.timeout = timeout
        self.cycle = cycle
        self.acks = 0
        self.lock = CoLock()
        self.port = handles(dut, f"{prefix}__inval", ("valid", "kind", "vaddr", "asid", "ack"))

    async def invalidate(self, kind: InvalKind, vaddr: int, asid: int) -> int:
        """One request; returns the cycles from presenting it to the ack.

        Raises
        ------
        PortTimeout
            No ack within ``timeout`` cycles.
        """
        self.port.kind.value = int(kind)
        self.port.vaddr.value = vaddr & MASK64
        self.port.asid.value = asid & self.asid_mask
        self.port.valid.value = 1
        waited = 0
        while True:
            await self.clock.edge()
            waited += 1
            if peek(self.port.ack):
                self.acks += 1
                break
            if waited > self.timeout:
                raise PortTimeout(f"{self.prefix}: no ack of invalidation "
                                  f"{InvalKind(kind).name} va=0x{vaddr:x} asid={asid} "
                                  f"within {self.timeout} cycles")
        self.port.valid.value = 0
        return waited

    async def invalidate_all(self, reqs, on_ack: Callable = None,
                             on_request: Callable = None) -> int:
        """Every request of ``reqs`` (``(kind, vaddr, asid)``) in order, under :attr:`lock`;
        ``on_request(kind, vaddr, asid)`` just before each is presented (the DUT sees it at
        the next edge), ``on_ack(kind, vaddr, asid)`` after each ack.  Returns the cycles
        from the first request to the last ack."""
        async with self.lock:
            start = self.cycle()
            for kind, va, asid in reqs:
                if on_request is not None:
                    on_request(kind, va, asid)
                await self.invalidate(kind, va, asid)
                if on_ack is not None:
                    on_ack(kind, va, asid)
            return self.cycle() - start
