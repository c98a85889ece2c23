"""TrafficEngine: one core's loads, stores and fetches, generated in gateware."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.core import cpu_req_signature, cpu_resp_signature
from hdl.layouts import PA_WIDTH, AccessType, FaultKind

from .abi import CYCLE_WIDTH, RECORD_FIELDS, RECORD_WIDTH, Mode, SwOp
from .memory import data_signature

__all__ = ["TrafficEngine", "control_signature", "xorshift64"]


def xorshift64(x):
    """One step of Marsaglia's xorshift64 (13, 7, 17) on a 64-bit Value or int."""
    if isinstance(x, int):
        mask = (1 << 64) - 1
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        return x
    a = (x ^ (x << 13))[:64]
    b = a ^ (a >> 7)
    return (b ^ (b << 17))[:64]


def control_signature(asid_bits: int) -> wiring.Signature:
    """Configuration, control and status of one engine (as seen from the engine)."""
    aw = max(asid_bits, 1)
    return wiring.Signature({
        # configuration, held by software
        "mode": In(3), "base": In(64), "span_log2": In(6), "stride": In(32),
        "store_p": In(8), "fetch_p": In(8), "user": In(1), "sum": In(1),
        "asid": In(aw), "root": In(44), "seed": In(64),
        "trace_base": In(PA_WIDTH), "trace_len": In(32), "limit": In(48),
        # control
        "run": In(1), "load_seed": In(1), "resume": In(1),
        # status
        "faulted": Out(1), "fault_va": Out(64), "fault_op": Out(2), "fault_kind": Out(2),
        "done": Out(1), "count": Out(48), "squashes": Out(32),
    })


class TrafficEngine(wiring.Component):
    """Issues one core's accesses through its MMU port and performs them in memory.

    Each access: the address and kind are drawn (:class:`Mode`; a store when an 8-bit random
    number is below ``store_p``, else a fetch when below ``store_p + fetch_p``, else a load);
    the request goes to the MMU (``cpu.req``); on a successful translation the word at the
    physical address is read (load, fetch) or written (store, with a random 64-bit value) on
    ``data``; then one record goes to ``log``.  On a fault the record is logged and the engine
    stops with ``ctl.faulted`` high until ``ctl.resume`` pulses, then issues the same access
    again.  An invalidation acknowledged on the core (``inval_ack``) after the request was
    accepted and before the memory took the data access makes the engine issue the access again
    (an instruction the shootdown interrupted; ``ctl.squashes`` counts these); the squashed
    attempt is logged too, with ``squashed`` set (its translation as the MMU answered it; no
    data access was made), and does not count as an access.

    The engine runs while ``ctl.run`` is high, until ``ctl.count`` reaches ``ctl.limit``
    (``limit`` 0: no limit), then raises ``ctl.done``.  ``ctl.load_seed`` loads the generator,
    the stream position and the counters, and latches the configuration (``mode`` ...
    ``limit``): the engine runs on the latched copy, so no logic depends combinationally on
    the configuration inputs (a simulator re-evaluates such logic whenever it is driven).

    Parameters
    ----------
    asid_bits : int

    Members
    -------
    cpu : Out(cpu_req_signature) / cpu_resp : In(cpu_resp_signature)
        The core's MMU port.
    inval_ack : In(1)
        The core's invalidation acknowledgement.
    data : Out(data_signature())
        Data accesses (READ, WRITE) at physical addresses.
    log : Out
        ``valid``/``ready``, ``data``: :data:`simhw.abi.RECORD_FIELDS` packed.
    cycle : In(CYCLE_WIDTH)
        The cycle counter.
    ctl : Out(control_signature(asid_bits))
        Directions as declared: configuration and control in, status out.
    """

    def __init__(self, *, asid_bits: int = 9):
        self.asid_bits = asid_bits
        super().__init__({
            "cpu": Out(cpu_req_signature(asid_bits)),
            "cpu_resp": In(cpu_resp_signature()),
            "inval_ack": In(1),
            "data": Out(data_signature()),
            "log": Out(wiring.Signature({"valid": Out(1), "ready": In(1),
                                         "data": Out(RECORD_WIDTH)})),
            "cycle": In(CYCLE_WIDTH),
            "ctl": Out(control_signature(asid_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        ctl = self.ctl
        latched = {}
        for name in ("mode", "base", "span_log2", "stride", "store_p", "fetch_p", "user", "sum",
                     "asid", "root", "trace_base", "trace_len", "limit"):
            port = getattr(ctl, name)
            reg = Signal.like(port, name=f"cfg_{name}")
            latched[name] = reg
            with m.If(ctl.load_seed):
                m.d.sync += reg.eq(port)
        cfg = SimpleNamespace(**latched)
        c = ctl
        rng = Signal(64, init=1)
        nxt = Signal(64)
        m.d.comb += nxt.eq(xorshift64(rng))
        mask = Signal(64)
        m.d.comb += mask.eq(((Const(1, 65) << cfg.span_log2) - 1)[:64] & ~Const(7, 64))

        off = Signal(64)          # offset of the current access in the window
        op = Signal(2)
        va = Signal(64)
        pa = Signal(PA_WIDTH)
        hit = Signal()
        start = Signal(CYCLE_WIDTH)
        done_c = Signal(CYCLE_WIDTH)
        value = Signal(64)        # store data / loaded data
        last_load = Signal(64)
        fault = Signal(2)
        squash = Signal()
        squashed = Signal()       # the record being logged is a squashed attempt
        count = Signal(48)
        squashes = Signal(32)
        tidx = Signal(32)         # trace position
        m.d.comb += [c.count.eq(count), c.squashes.eq(squashes),
                     c.done.eq((cfg.limit != 0) & (count >= cfg.limit))]
        m.d.comb += va.eq(cfg.base + off)

        # The next access (non-trace modes), from the generator's current value.
        r = rng
        shift = Signal(6)
        m.d.comb += shift.eq((r[58:64] * cfg.span_log2)[6:12])
        next_off = Signal(64)
        with m.Switch(cfg.mode):
            with m.Case(Mode.ZIPF):
                m.d.comb += next_off.eq(r & (mask >> shift) & ~Const(7, 64))
            with m.Case(Mode.STRIDE):
                m.d.comb += next_off.eq((off + cfg.stride) & mask)
            with m.Case(Mode.CHASE):
                m.d.comb += next_off.eq((off + last_load + 8) & mask)
            with m.Default():
                m.d.comb += next_off.eq(r & mask)
        r8 = r[48:56]
        next_op = Signal(2)
        with m.If(r8 < cfg.store_p):
            m.d.comb += next_op.eq(AccessType.STORE)
        with m.Elif(r8 < cfg.store_p + cfg.fetch_p):
            m.d.comb += next_op.eq(AccessType.FETCH)
        with m.Else():
            m.d.comb += next_op.eq(AccessType.LOAD)

        m.d.comb += [
            self.cpu.vaddr.eq(va), self.cpu.op.eq(op), self.cpu.user.eq(cfg.user),
            self.cpu.sum.eq(cfg.sum), self.cpu.asid.eq(cfg.asid), self.cpu.root.eq(cfg.root),
            c.fault_va.eq(va), c.fault_op.eq(op), c.fault_kind.eq(fault),
        ]
        fields = {"start": start, "done": done_c, "va": va[:48], "pa": pa, "data": value,
                  "op": op, "fault": fault, "hit": hit, "squashed": squashed}
        m.d.comb += self.log.data.eq(Cat(*[fields[name][:w] for name, w in RECORD_FIELDS]))

        with m.FSM(name="traffic"):
            with m.State("IDLE"):
                with m.If(c.load_seed):
                    m.d.sync += [rng.eq(Mux(c.seed == 0, 1, c.seed)), count.eq(0),
                                 squashes.eq(0), off.eq(0), tidx.eq(0), last_load.eq(0)]
                with m.Elif(c.run & ~c.done):
                    m.next = "NEXT"
            with m.State("NEXT"):
                # Draw the access (trace mode: fetch its record first).
                with m.If(cfg.mode == Mode.TRACE):
                    m.next = "TRACE"
                with m.Else():
                    m.d.sync += [off.eq(next_off), op.eq(next_op), value.eq(nxt),
                                 rng.eq(nxt)]
                    m.next = "REQ"
            with m.State("TRACE"):
                m.d.comb += [self.data.req.valid.eq(1), self.data.req.op.eq(SwOp.READ),
                             self.data.req.addr.eq(cfg.trace_base + (tidx << 3))]
                with m.If(self.data.req.ready):
                    m.next = "TRACE_WAIT"
            with m.State("TRACE_WAIT"):
                with m.If(self.data.resp.valid):
                    rec = self.data.resp.rdata
                    m.d.sync += [off.eq(rec & mask), op.eq(Mux(rec[:2] == 3, 0, rec[:2])),
                                 value.eq(nxt), rng.eq(nxt),
                                 tidx.eq(Mux(tidx + 1 >= cfg.trace_len, 0, tidx + 1))]
                    m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += self.cpu.valid.eq(1)
                with m.If(self.cpu.ready):
                    m.d.sync += [start.eq(self.cycle), squash.eq(0)]
                    m.next = "RESP"
            with m.State("RESP"):
                with m.If(self.inval_ack):
                    m.d.sync += squash.eq(1)
                with m.If(self.cpu_resp.valid):
                    m.d.sync += [pa.eq(self.cpu_resp.paddr), hit.eq(self.cpu_resp.hit),
                                 fault.eq(self.cpu_resp.fault), done_c.eq(self.cycle)]
                    with m.If(squash | self.inval_ack):
                        m.d.sync += [squashes.eq(squashes + 1), squashed.eq(1)]
                        m.next = "LOG"
                    with m.Elif(self.cpu_resp.fault != FaultKind.NONE):
                        m.d.sync += value.eq(0)
                        m.next = "LOG"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [self.data.req.valid.eq(~self.inval_ack),
                             self.data.req.op.eq(Mux(op == AccessType.STORE, SwOp.WRITE,
                                                     SwOp.READ)),
                             self.data.req.addr.eq(pa), self.data.req.wdata.eq(value)]
                with m.If(self.inval_ack):
                    m.d.sync += [squashes.eq(squashes + 1), squashed.eq(1)]
                    m.next = "LOG"
                with m.Elif(self.data.req.ready):
                    m.d.sync += done_c.eq(self.cycle)
                    m.next = "DATA_WAIT"
            with m.State("DATA_WAIT"):
                with m.If(self.data.resp.valid):
                    with m.If(op != AccessType.STORE):
                        m.d.sync += [value.eq(self.data.resp.rdata),
                                     last_load.eq(self.data.resp.rdata)]
                    with m.If(self.data.resp.err):
                        m.d.sync += fault.eq(FaultKind.ACCESS)
                    m.next = "LOG"
            with m.State("LOG"):
                m.d.comb += self.log.valid.eq(1)
                with m.If(self.log.ready & squashed):
                    m.d.sync += [squashed.eq(0), fault.eq(FaultKind.NONE)]
                    m.next = "REQ"
                with m.Elif(self.log.ready):
                    with m.If(fault != FaultKind.NONE):
                        m.next = "FAULT"
                    with m.Else():
                        m.d.sync += count.eq(count + 1)
                        with m.If(c.run & ~((cfg.limit != 0) & (count + 1 >= cfg.limit))):
                            m.next = "NEXT"
                        with m.Else():
                            m.next = "IDLE"
            with m.State("FAULT"):
                m.d.comb += c.faulted.eq(1)
                with m.If(c.resume):
                    m.d.sync += fault.eq(0)
                    m.next = "REQ"
        return m

