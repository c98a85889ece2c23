"""SimMemory: the fast path's physical memory, in gateware."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.layouts import PA_WIDTH, mem_signature

from .abi import SwOp
from .ram import Ram

__all__ = ["SimMemory", "sw_signature", "data_signature", "MAX_WORDS_LOG2"]

#: Largest memory: 2**24 words (128 MiB).  Simulators hold the array in host memory.
MAX_WORDS_LOG2 = 24

def sw_signature() -> wiring.Signature:
    """The software port (initiator view): as :func:`hdl.layouts.mem_signature` with a 2-bit
    ``op`` taking :class:`simhw.abi.SwOp` (READ, WRITE, CAS, XCHG); ``rdata`` is the old value."""
    return mem_signature()


def data_signature() -> wiring.Signature:
    """A traffic engine's data port (initiator view): READ or WRITE of one word."""
    return mem_signature()


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TypeError(f"{name} must be an integer of at least {minimum}, not {value!r}")


class SimMemory(wiring.Component):
    """A memory of ``2**words_log2`` 64-bit words at physical addresses [0, 8 * 2**words_log2).

    Requests come from the software port (first priority), the MMU port (second) and the data
    ports (round robin among them, last).  One operation runs at a time: a request is taken in
    a cycle where the memory is idle (``ready`` of that port high); in the next cycle the word is
    read and written (WRITE; CAS when the word equals ``cmp``; XCHG), and the response pulses
    ``latency`` cycles after that (``latency`` 0: in that same cycle, so an operation takes two
    cycles).  An address
    outside the memory answers with ``err`` and writes nothing; ``rdata`` always holds the old
    value (READ data; CAS: success iff it equals ``cmp``).

    ``mmu_delay`` (an input, 0 by default) makes the MMU port's memory far away: each of its
    operations (the walkers' reads and compare-and-swaps) still reads and writes the word in
    the cycle after it is taken, but its response comes an extra ``0 ... mmu_delay`` cycles
    later (uniform, from a free-running 16-bit LFSR; at least one cycle after the access),
    and the memory takes the other ports' requests meanwhile.  So a software operation can
    change a PTE, and an invalidation can be acknowledged, while a walk waits for the old
    value it already read: the window of a walk in flight across an unmapping flush.  With
    ``mmu_delay`` 0 the MMU port is served like the others.

    Every write the MMU port and the software port make (a walker's WRITE or successful CAS;
    a software WRITE, XCHG or successful CAS) is reported on ``wlog`` in the cycle it happens,
    so the software's copy of memory can follow them in the order they happened: a walker's
    write taken before a software operation is applied before the operation's own, never
    after it.

    Parameters
    ----------
    words_log2 : int
        log2 of the word count (1 ... ``MAX_WORDS_LOG2``).
    ndata : int
        Number of data ports (one per traffic engine; 0 allowed).
    latency : int
        Cycles between the access and the response pulse (0 ... 255).
    verilog : bool
        Storage for Verilog export (see :class:`simhw.ram.Ram`).
    load_file : str, optional
        Verilog only: the file ``load`` writes into the array (:class:`simhw.ram.Ram`).

    Members
    -------
    mmu : In(mem_signature(src=True))
        Answers ``hdl.top.Top.mem`` (READ, WRITE, CAS).
    sw : In(sw_signature())
        The software port (:class:`simhw.abi.SwOp`).
    data : In(data_signature()) array of ``ndata``
        The traffic engines' data accesses (READ, WRITE).
    wlog : Out
        ``valid`` pulse with ``addr`` and ``data`` of each MMU-port or software-port write.
    busy : Out(1)
        An operation is in progress (the MMU port's delayed response aside).
    mmu_delay : In(8)
        The MMU port's largest extra response delay, in cycles (see above).
    overtaken : Out(32)
        MMU-port answers whose word the software port wrote while they waited (see above).
    load : In(1), loaded : Out(1)
        Software's bulk write of ``load_file``: a toggle of ``load`` requests one, ``loaded``
        follows ``load`` once it is done (:class:`simhw.ram.Ram`; ignored without a file).
    """

    def __init__(self, *, words_log2: int, ndata: int = 0, latency: int = 0,
                 verilog: bool = False, load_file: str | None = None):
        _check_int("Words log2", words_log2, 1)
        if words_log2 > MAX_WORDS_LOG2:
            raise ValueError(f"Words log2 is {words_log2}, which is more than "
                             f"{MAX_WORDS_LOG2} (a {8 << MAX_WORDS_LOG2 >> 20} MiB memory)")
        _check_int("Data port count", ndata, 0)
        _check_int("Latency", latency, 0)
        if latency > 255:
            raise ValueError(f"Latency is {latency} cycles, which is more than 255")
        self.words_log2 = words_log2
        self.ndata = ndata
        self.latency = latency
        self.verilog = bool(verilog)
        #: The storage array (:class:`simhw.ram.Ram`).
        self.ram = Ram(width=64, abits=words_log2, verilog=verilog, load_file=load_file)
        members = {
            "mmu": In(mem_signature(src=True)),
            "sw": In(sw_signature()),
            "wlog": Out(wiring.Signature({"valid": Out(1), "addr": Out(PA_WIDTH),
                                          "data": Out(64)})),
            "busy": Out(1),
            "mmu_delay": In(8),
            "overtaken": Out(32),
            "load": In(1),
            "loaded": Out(1),
        }
        if ndata:
            members["data"] = In(data_signature()).array(ndata)
        super().__init__(members)

    @property
    def size(self) -> int:
        """Bytes of memory."""
        return 8 << self.words_log2

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = self.ram
        m.d.comb += [ram.load.eq(self.load), self.loaded.eq(ram.loaded)]

        ports = [self.sw, self.mmu] + [self.data[i] for i in range(self.ndata)]
        nports = len(ports)
        SW, MMU = 0, 1
        cur = Signal(range(nports))
        op = Signal(2)
        addr = Signal(PA_WIDTH)
        wdata = Signal(64)
        cmp = Signal(64)
        err = Signal()
        old = Signal(64)
        wait = Signal(8)
        rr = Signal(range(max(self.ndata, 1)))     # round robin among the data ports
        # The MMU port's delayed response (mmu_delay): pending, countdown, data, error.
        far = Signal()
        far_wait = Signal(9)
        far_old = Signal(64)
        far_err = Signal()
        far_addr = Signal(PA_WIDTH)
        far_hit = Signal()           # a software write changed the word since it was read
        sw_wrote_far = Signal()
        overtaken = Signal(32)
        m.d.comb += self.overtaken.eq(overtaken)
        with m.If(sw_wrote_far):
            m.d.sync += far_hit.eq(1)
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        extra = Signal(8)
        m.d.comb += extra.eq((lfsr[:8] * (self.mmu_delay + 1))[8:16])

        def in_range(a):
            return (a >> (self.words_log2 + 3)) == 0

        # Choose: sw, then mmu, then the data ports starting at `rr`.
        choice = Signal(range(nports))
        any_valid = Signal()
        with m.If(self.sw.req.valid):
            m.d.comb += [choice.eq(SW), any_valid.eq(1)]
        with m.Elif(self.mmu.req.valid & ~far):
            m.d.comb += [choice.eq(MMU), any_valid.eq(1)]
        with m.Else():
            for start in range(self.ndata):
                with m.If(rr == start):
                    order = [(start + k) % self.ndata for k in range(self.ndata)]
                    for i in reversed(order):
                        with m.If(self.data[i].req.valid):
                            m.d.comb += [choice.eq(2 + i), any_valid.eq(1)]

        resp_data = Signal(64)
        resp_err = Signal()
        for p in ports[:1] + ports[2:]:
            m.d.comb += [p.resp.rdata.eq(resp_data), p.resp.err.eq(resp_err)]
        m.d.comb += [self.mmu.resp.rdata.eq(Mux(far, far_old, resp_data)),
                     self.mmu.resp.err.eq(Mux(far, far_err, resp_err))]
        with m.If(far):
            with m.If(far_wait <= 1):
                m.d.comb += self.mmu.resp.valid.eq(1)
                m.d.sync += [far.eq(0), far_hit.eq(0)]
                with m.If(far_hit | sw_wrote_far):
                    m.d.sync += overtaken.eq(overtaken + 1)
            with m.Else():
                m.d.sync += far_wait.eq(far_wait - 1)
        m.d.comb += [
            ram.raddr.eq(addr[3:3 + self.words_log2]),
            ram.waddr.eq(addr[3:3 + self.words_log2]),
            ram.wdata.eq(wdata),
            self.wlog.addr.eq(addr),
            self.wlog.data.eq(wdata),
        ]

        def respond(m):
            for i, p in enumerate(ports):
                with m.If(cur == i):
                    m.d.comb += p.resp.valid.eq(1)

        with m.FSM(name="mem"):
            with m.State("IDLE"):
                for i, p in enumerate(ports):
                    with m.If(any_valid & (choice == i)):
                        m.d.comb += p.req.ready.eq(1)
                        m.d.sync += [op.eq(p.req.op), addr.eq(p.req.addr),
                                     wdata.eq(p.req.wdata), cmp.eq(p.req.cmp)]
                        if i >= 2:
                            m.d.sync += rr.eq((i - 2 + 1) % self.ndata)
                with m.If(any_valid):
                    m.d.sync += cur.eq(choice)
                    m.next = "ACCESS"
                # The read port addresses the request's word from the next cycle on.
                for i, p in enumerate(ports):
                    with m.If(any_valid & (choice == i)):
                        m.d.comb += ram.raddr.eq(p.req.addr[3:3 + self.words_log2])
            with m.State("ACCESS"):
                m.d.comb += self.busy.eq(1)
                ok = in_range(addr)
                data_op = Signal(2)
                # The data ports know READ and WRITE only.
                m.d.comb += data_op.eq(op)
                with m.If((cur >= 2) & (op > SwOp.WRITE)):
                    m.d.comb += data_op.eq(SwOp.READ)
                # The MMU port's op 3 is not an operation: answer it as a bus error.
                bad = (cur == MMU) & (op == SwOp.XCHG)
                good = Signal()
                m.d.comb += good.eq(ok & ~bad)
                writes = good & ((data_op == SwOp.WRITE) | (data_op == SwOp.XCHG)
                                 | ((data_op == SwOp.CAS) & (ram.rdata == cmp)))
                m.d.comb += [ram.we.eq(writes), self.wlog.valid.eq(writes & (cur <= MMU)),
                             sw_wrote_far.eq(writes & (cur == SW) & far & (addr == far_addr))]
                with m.If((cur == MMU) & (self.mmu_delay != 0)):
                    # Far: the response waits in its own register; the memory is free.
                    m.d.sync += [far.eq(1), far_old.eq(Mux(good, ram.rdata, 0)),
                                 far_err.eq(~good), far_wait.eq(self.latency + extra),
                                 far_addr.eq(addr), far_hit.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    if self.latency == 0:
                        m.d.comb += [resp_data.eq(Mux(good, ram.rdata, 0)),
                                     resp_err.eq(~good)]
                        respond(m)
                        m.next = "IDLE"
                    else:
                        m.d.sync += [old.eq(Mux(good, ram.rdata, 0)), err.eq(~good),
                                     wait.eq(self.latency)]
                        m.next = "WAIT"
            if self.latency:
                with m.State("WAIT"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += wait.eq(wait - 1)
                    with m.If(wait == 1):
                        m.d.comb += [resp_data.eq(old), resp_err.eq(err)]
                        respond(m)
                        m.next = "IDLE"
        return m
