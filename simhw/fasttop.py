"""FastTop: the MMU (``hdl.top.Top``) inside the fast path's simulation-only gateware."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.config import MmuConfig
from hdl.layouts import inval_signature
from hdl.top import Top

from .abi import CYCLE_WIDTH, RECORD_WIDTH, WRITE_RECORD_WIDTH, ring_file
from .memory import SimMemory, sw_signature
from .ring import LogRing, ring_control_signature
from .traffic import TrafficEngine, control_signature

__all__ = ["FastTop"]


class FastTop(wiring.Component):
    """``Top`` with its memory, one traffic engine and one access log per core.

    Parameters
    ----------
    config : MmuConfig
        The MMU.
    words_log2 : int
        The memory holds ``2**words_log2`` 64-bit words (see :class:`simhw.memory.SimMemory`).
    latency : int
        Memory response latency in cycles.
    log_log2 : int
        log2 of each core's access-log ring depth.
    wlog_log2 : int
        log2 of the depth of the ring of the MMU's memory writes (walker A/D updates).
    verilog : bool
        Storage arrays for Verilog export (see :class:`simhw.ram.Ram`); the rings then also
        write their records to files in the simulator's working directory
        (:func:`simhw.abi.ring_file`: ``log<i>.hex``, ``wlog.hex``;
        :class:`simhw.filelog.FileLog`).

    Members
    -------
    eng{i} : Out(control_signature)
        Core ``i``'s traffic engine (configuration, control, status).
    cpu{i} : Out, with ``inval`` : In(inval_signature)
        Core ``i``'s invalidation port (passed to the MMU; the same names as on ``Top``:
        ``cpu{i}__inval__…``).
    device : bool
        Make the DeviceMmu's ports FastTop's (``dev`` below); without them its inputs are
        tied to 0 and a simulator drops its logic.
    dev : Out(the DeviceMmu's signature), with ``device`` only
        The device's TLB ports (``dev__…``, as on ``Top``: requests, fills, young tests,
        invalidations, the fault record and the counters), driven from software
        (:class:`cosim.devarch.DevArch`).
    log{i} : Out(ring_control_signature())
        Core ``i``'s access log (records: :data:`simhw.abi.RECORD_FIELDS`).
    wlog : Out(ring_control_signature())
        The MMU's memory writes (records: ``addr`` then ``data``).
    sw : In(sw_signature())
        The software port of the memory.
    mmu_delay : In(8)
        The largest extra delay of a walker's memory response (:class:`simhw.memory.
        SimMemory`'s ``mmu_delay``; 0: none).
    overtaken : Out(32)
        Walker memory answers whose word the software port changed while they waited
        (:class:`simhw.memory.SimMemory`'s ``overtaken``).
    load : In(1), loaded : Out(1)
        Verilog only: a toggle of ``load`` writes the words of the file ``memload.hex``
        (:func:`simhw.abi.ring_file`) into the memory at the next edge; ``loaded`` follows
        ``load`` once they are in (:class:`simhw.ram.Ram`'s bulk write).
    cycle : Out(CYCLE_WIDTH)
        Cycles since reset.
    event : Out(1)
        Some engine faulted, or some ring is half full: software has work.
    wake : Out(1)
        Toggles in every cycle where some engine's ``faulted`` or ``done``, or some ring's
        ``half``, rises (in the cycle it rises: its value differs from the value it had
        at the previous edge).  Software that waits on a change of ``wake`` waits on those
        rising edges with one simulator callback instead of one per signal.

    The submodules are ``top`` (the MMU: ``top.core<i>.tlb.e<j>`` …), ``memory`` (its array:
    ``memory.storage``), ``engine<i>``, ``ring<i>`` (array ``ring<i>.ram.ram.storage``) and
    ``wring``.
    """

    def __init__(self, config: MmuConfig, *, words_log2: int, latency: int = 0,
                 log_log2: int = 12, wlog_log2: int = 8, verilog: bool = False,
                 device: bool = False):
        if not isinstance(config, MmuConfig):
            raise TypeError(f"Config must be an MmuConfig, not {config!r}")
        self.config = config
        self.top = Top(config)
        n = config.ncores
        self.memory = SimMemory(words_log2=words_log2, ndata=n, latency=latency,
                                verilog=verilog,
                                load_file=ring_file("memload") if verilog else None)
        self.engines = [TrafficEngine(asid_bits=config.asid_bits) for _ in range(n)]
        self.rings = [LogRing(width=RECORD_WIDTH, depth_log2=log_log2, verilog=verilog,
                              file=ring_file(f"log{i}") if verilog else None)
                      for i in range(n)]
        self.wring = LogRing(width=WRITE_RECORD_WIDTH, depth_log2=wlog_log2,
                             verilog=verilog, file=ring_file("wlog") if verilog else None)
        members = {}
        for i in range(n):
            members[f"eng{i}"] = Out(control_signature(config.asid_bits))
            members[f"cpu{i}"] = Out(wiring.Signature({
                "inval": In(inval_signature(config.asid_bits))}))
            members[f"log{i}"] = Out(ring_control_signature())
        self.device = device
        if device:
            members["dev"] = Out(self.top.device.signature)
        members["wlog"] = Out(ring_control_signature())
        members["sw"] = In(sw_signature())
        members["mmu_delay"] = In(8)
        members["overtaken"] = Out(32)
        members["load"] = In(1)
        members["loaded"] = Out(1)
        members["cycle"] = Out(CYCLE_WIDTH)
        members["event"] = Out(1)
        members["wake"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self.config.ncores
        m.submodules.top = top = self.top
        m.submodules.memory = mem = self.memory
        m.submodules.wring = wring = self.wring
        cycle = Signal(CYCLE_WIDTH)
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += self.cycle.eq(cycle)
        wiring.connect(m, top.mem, mem.mmu)
        wiring.connect(m, wiring.flipped(self.sw), mem.sw)
        if self.device:
            wiring.connect(m, wiring.flipped(self.dev), top.dev)
        m.d.comb += [mem.load.eq(self.load), self.loaded.eq(mem.loaded),
                     mem.mmu_delay.eq(self.mmu_delay), self.overtaken.eq(mem.overtaken)]
        m.d.comb += [wring.push.valid.eq(mem.wlog.valid),
                     wring.push.data.eq(Cat(mem.wlog.addr, mem.wlog.data))]
        wiring.connect(m, wiring.flipped(self.wlog), wring.ctl)
        events = [wring.ctl.half]
        rising = [wring.ctl.half]
        for i in range(n):
            eng, ring = self.engines[i], self.rings[i]
            m.submodules[f"engine{i}"] = eng
            m.submodules[f"ring{i}"] = ring
            port = getattr(top, f"cpu{i}")
            wiring.connect(m, eng.cpu, port.req)
            wiring.connect(m, port.resp, eng.cpu_resp)
            wiring.connect(m, wiring.flipped(getattr(self, f"cpu{i}").inval), port.inval)
            m.d.comb += eng.inval_ack.eq(port.inval.ack)
            wiring.connect(m, eng.data, mem.data[i])
            wiring.connect(m, eng.log, ring.push)
            wiring.connect(m, wiring.flipped(getattr(self, f"log{i}")), ring.ctl)
            wiring.connect(m, wiring.flipped(getattr(self, f"eng{i}")), eng.ctl)
            m.d.comb += eng.cycle.eq(cycle)
            ctl = getattr(self, f"eng{i}")
            events += [ctl.faulted, ring.ctl.half]
            rising += [ctl.faulted, ctl.done, ring.ctl.half]
        m.d.comb += self.event.eq(Cat(*events).any())
        # wake = wake_q ^ (some watched signal is 1 now and was 0 at the previous edge).
        watched = Cat(*rising)
        before = Signal(len(watched))
        wake_q = Signal()
        m.d.sync += [before.eq(watched), wake_q.eq(self.wake)]
        m.d.comb += self.wake.eq(wake_q ^ (watched & ~before).any())
        return m
