"""FastArch: the engine's arch seam on the fast path.

The same :class:`cosim.arch.CosimArch` (flushes through the invalidation ports, locks and
threads of the host environment, TLB state read from the RTL), with the memory in gateware:

* every PTE operation goes through FastTop's **software port** at a clock edge (load, plain
  store, exchange, compare-and-swap; test-and-clear-young and write-protect as a read and a
  compare-and-swap, retried until the swap succeeds), serialised with the walkers' own
  compare-and-swaps by the memory, so it is atomic with respect to them;
* before each one that changes a PTE, the access logs and the write log are drained (their
  records are judged by the log checkers, with the PTE history up to that instant); before
  each one, the words the engine changed are pushed into the gateware array; after it, the
  engine's copy takes the memory's writes up to the response, the operation's own among
  them, in the memory's order (:meth:`cosim.fasthw.FastHardware.sw_op`);
* after each flush the logs are drained too (once the data accesses the memory took before
  the acknowledgement reached their logs), and each core's acknowledgement cycle is recorded
  for the log checkers (:class:`cosim.fastcheck.LogCheckers`); the flush of
  ``ptep_clear_flush_young`` (A cleared, the same frame still mapped) records its
  acknowledgements but is not drained: it cuts off no frame the engine could read next.

A PTE load, and the read half of test-and-clear-young and write-protect, are answered from
the engine's copy without the port, once the write log is drained
(:meth:`cosim.fasthw.FastHardware.drain_writes`): the memory reports every write of its MMU
and software ports in that log in the cycle it makes it, so the drained copy holds the value
the gateware held at the last clock edge, and the load is that edge's read.  The change of
test-and-clear-young or write-protect is a compare-and-swap through the port against that
value; a walker's A/D update since then makes it fail, and it is retried with the value the
memory answered, so the change stays atomic with respect to the walkers.  When the bit is
already clear in the drained copy nothing changes and no port operation is made.

``cpu_access`` is not offered: on the fast path the traffic engines issue the CPU accesses.
"""

from __future__ import annotations

import collections
from typing import Callable, Optional

from pyrmap.pte import _PAGE_A, _PAGE_D, _PAGE_V, _PAGE_W, pte_pfn
from simhw.abi import SwOp

from .arch import CosimArch, TlbReader
from .device import SettledDeviceDriver

__all__ = ["FastArch"]

MASK64 = (1 << 64) - 1
#: The bit test-and-clear-young and write-protect clear.
_AND_BITS = {"mkold": _PAGE_A, "wrprotect": _PAGE_W}


class FastArch(CosimArch):
    """The arch of a fast-path run.

    Parameters
    ----------
    dut : cocotb handle of ``fasttop``
    mem : cosim.fasthw.MirrorMem
    env : cosim.host.HostEnv
    hw : cosim.fasthw.FastHardware
    ncores, asid_bits, tlb_entries, sp_entries, svadu, dev_entries
        As :class:`CosimArch`; the MMU is ``dut.top`` (``dev_entries``: the device TLB's
        registers to read, 0 for a run without a device).
    latency : int
        The memory's latency (the cycle a software operation took effect is that many
        cycles before its response).

    Members
    -------
    windows : collections.Counter
        The kernel windows reached (the run's report prints them): ``rw`` -- a plain store
        to a present PTE that the same thread loaded last (a non-atomic read-then-write);
        ``rw_writable_clean`` -- of those, the PTE read was writable and clean (a store's
        walk would set D in it); ``rw_landed`` -- the hardware changed the PTE between the
        read and the write; ``rw_landed_d`` -- that change set D, which the write then
        overwrote; ``mkclean_unflushed`` -- page_mkclean returned while another thread had
        cleared a PTE of the page and not flushed since.
    device_port_driver : type
        The driver :class:`cosim.devarch.DevArch` drives the device's ports with: the one
        for a clock inside the design (:class:`cosim.device.SettledDeviceDriver`).
    """

    device_port_driver = SettledDeviceDriver

    def __init__(self, dut, mem, env, hw, *, ncores: int, asid_bits: int = 9,
                 tlb_entries: int = 8, sp_entries: int = 4, svadu: bool = True,
                 latency: int = 0, dev_entries: int = 0):
        super().__init__(dut, mem, env, ncores=ncores, asid_bits=asid_bits, memory=None,
                         tlb_entries=tlb_entries, sp_entries=sp_entries,
                         dev_entries=dev_entries, svadu=svadu)
        self.hw = hw
        self.latency = latency
        self.tlb_reader = TlbReader(dut.top, ncores, asid_bits, tlb_entries, sp_entries,
                                    dev_entries)
        #: Called in the scheduler before every software-port operation that changes a PTE
        #: and after every flush: drain the logs and judge their records (set by the run).
        self.on_drain: Optional[Callable[[], None]] = None
        #: Called with (ptep, cycle, old, new) for every PTE the software port changed.
        self.on_pte_change: Optional[Callable[[int, int, int, int], None]] = None
        #: Called with (core, ack cycle, [(kind, va, asid), ...]) per core and flush.
        self.on_flush: Optional[Callable] = None
        #: (thread, vpn, asid) of the last test-and-clear-young that found the page young,
        #: until the next PTE operation or page flush; and whether the flush under way follows
        #: it (:meth:`flush_tlb_page`).
        self._aging: Optional[tuple] = None
        self._flush_cuts_nothing = False
        #: Kernel windows the run reached (:meth:`_read_then_write`, :meth:`notify`).
        self.windows: collections.Counter = collections.Counter()
        #: thread -> (ptep, value) of its last PTE load (:meth:`_read_then_write`).
        self._loaded: dict = {}
        #: frame -> thread that cleared a present PTE of it and has not flushed since.
        self._unflushed: dict = {}

    def _drain(self) -> None:
        if self.on_drain is not None:
            self.on_drain()

    def pte_load(self, ptep: int) -> int:
        self.hw.drain_writes()
        self.stats["pte_load_copy"] += 1
        val = self.mem.read(ptep)
        if self.env.in_host_thread():
            self._loaded[self.env.current_thread()] = (ptep, val)
        return val

    def _read_then_write(self, thread: str, ptep: int, old: int) -> None:
        """Count a plain store to a present PTE the same thread loaded last: a non-atomic
        read-then-write window (``windows["rw"]``), those that found the PTE writable and
        clean (a store's walk would set D in it: ``rw_writable_clean``), and those in which
        the hardware changed the PTE between the read and the write (``rw_landed``: the
        value the store replaced is not the one read), D among them (``rw_landed_d``: a
        walker's D update the store overwrote)."""
        loaded = self._loaded.pop(thread, None)
        if loaded is None or loaded[0] != ptep or not loaded[1] & _PAGE_V:
            return
        self.windows["rw"] += 1
        if loaded[1] & _PAGE_W and not loaded[1] & _PAGE_D:
            self.windows["rw_writable_clean"] += 1
        if old != loaded[1]:
            self.windows["rw_landed"] += 1
            if old & _PAGE_D and not loaded[1] & _PAGE_D:
                self.windows["rw_landed_d"] += 1

    def notify(self, event: str, **details) -> None:
        """The arch's event, and the count of page_mkclean calls that returned while
        another thread had cleared a PTE of the page and not flushed yet
        (``windows["mkclean_unflushed"]``: a TLB may still write the page that
        page_mkclean found unmapped)."""
        page = details.get("page")
        if event == "returned" and page is not None and self._unflushed and details.get(
                "op") == "page_mkclean":
            owner = self._unflushed.get(page.pfn)
            if owner is not None and owner != self.env.current_thread():
                self.windows["mkclean_unflushed"] += 1
        super().notify(event, **details)

    def _do_flush(self, what: str, cores, reqs: list) -> None:
        super()._do_flush(what, cores, reqs)
        if self._unflushed and self.env.in_host_thread():
            me = self.env.current_thread()
            self._unflushed = {pfn: t for pfn, t in self._unflushed.items() if t != me}

    def ptep_test_and_clear_young(self, vma, addr: int, ptep: int) -> int:
        young = super().ptep_test_and_clear_young(vma, addr, ptep)
        # ptep_clear_flush_young flushes the page next, with nothing between: that flush cuts
        # off no frame (the PTE maps the same one), so it needs no drain (_flush).
        self._aging = ((self.env.current_thread(), addr >> 12, vma.vm_mm.asid) if young
                       else None)
        return young

    def flush_tlb_page(self, vma, addr: int) -> None:
        aging, self._aging = self._aging, None
        self._flush_cuts_nothing = aging == (self.env.current_thread(), addr >> 12,
                                             vma.vm_mm.asid)
        try:
            super().flush_tlb_page(vma, addr)
        finally:
            self._flush_cuts_nothing = False

    def _pte_op(self, op: str, ptep: int, a: int = 0, b: int = 0) -> int:
        self._aging = None
        if op != "store" and self._loaded and self.env.in_host_thread():
            self._loaded.pop(self.env.current_thread(), None)    # not a read-then-write
        if op in _AND_BITS and self.env.in_host_thread():
            # The read half from the drained copy (see the module's docstring); the
            # compare-and-swap in _at_edge starts from it.
            self.hw.drain_writes()
            a = self.mem.read(ptep)
            if not a & _AND_BITS[op]:
                self.stats[f"pte_{op}_copy"] += 1
                return a
        return super()._pte_op(op, ptep, a, b)

    async def _at_edge(self, op: str, ptep: int, a: int, b: int, thread: str) -> int:
        # The logs are drained before every change the port makes (so no record is judged
        # with a later change in the PTE history except by its cycle), not before a read,
        # nor before clearing A: no check reads A (the scoreboard compares neither A nor D,
        # the stale-translation check reads acknowledgements and frames, the shadow data),
        # and the change's entry in the history carries its cycle.
        if op in ("store", "xchg", "cmpxchg"):
            self._drain()
        await self.hw.push()
        self.stats[f"pte_{op}"] += 1
        self._who = thread
        sw = self.hw.sw_op
        back = self.latency
        if op == "load":
            old, cyc = await sw(SwOp.READ, ptep)
            new = old
        elif op == "store":
            old, cyc = await sw(SwOp.WRITE, ptep, a & MASK64)
            new = a & MASK64
            self._read_then_write(thread, ptep, old)
            if old & _PAGE_V and not new & _PAGE_V:
                self._unflushed[pte_pfn(old)] = thread
        elif op == "xchg":
            old, cyc = await sw(SwOp.XCHG, ptep, 0)
            new = 0
            if old & _PAGE_V:
                self._unflushed[pte_pfn(old)] = thread
        elif op == "cmpxchg":
            old, cyc = await sw(SwOp.CAS, ptep, b & MASK64, a & MASK64)
            if old != a:
                self.stats["pte_cmpxchg_failed"] += 1
            new = b & MASK64 if old == a else old
        else:
            # Atomic AND: compare-and-swap the cleared value against ``a`` (the drained
            # copy's value, _pte_op); on a race, again against the value the memory answered.
            bit = _AND_BITS[op]
            old, cyc = a, self.hw.cycle() + back
            while True:
                new = old & ~bit
                if new == old:
                    break
                if op != "mkold":
                    self._drain()
                found, cyc = await sw(SwOp.CAS, ptep, new, old)
                if found == old:
                    break
                old = found
                self.stats["pte_and_retries"] += 1
        cyc -= back
        if new != old or op == "store":
            if self.on_pte_change is not None:
                self.on_pte_change(ptep, cyc, old, new)
        self._changed(ptep, op, old, new)
        return old

    async def _inval_core(self, core: int, reqs, result: dict) -> None:
        await super()._inval_core(core, reqs, result)
        # Still in the time step of the edge that showed the last ack: the counter reads its
        # value of the ack cycle.
        if self.on_flush is not None:
            self.on_flush(core, self.hw.cycle(), list(reqs))

    async def _flush(self, cores, reqs) -> dict:
        # Read before the first await: the host thread that set it is the one waiting here.
        cuts_nothing = self._flush_cuts_nothing
        result = await super()._flush(cores, reqs)
        if cuts_nothing:
            self.stats["flush_aging_undrained"] += 1
            return result
        # A data access the memory took before the acknowledgement reaches its log a few
        # cycles later: let it land, then drain, so the engine's copy of every frame the
        # flush cut off is complete before the engine reads it (swap-out, migration copy).
        await self.clock.cycles(self.latency + 4)
        self._drain()
        return result

    def cpu_access(self, core, vaddr, op, *, user=True, sum=False, data=None):
        raise RuntimeError("on the fast path the traffic engines issue CPU accesses; "
                           "cpu_access belongs to the step path")
