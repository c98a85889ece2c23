"""DeviceMmu: a secondary MMU (GRU-style): a TLB without a walker, filled by the host."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from pyrmap.arch import DEVICE_COUNTERS

from .config import check_asid_bits, check_device_entries
from .layouts import (PA_WIDTH, PPN_WIDTH, VA_WIDTH, AccessType, FaultKind, inval_signature,
                      perf_signature)
from .tlb import Tlb, connect_inval
from .walker import leaf_paddr, va_canonical

__all__ = ["DeviceMmu", "DEVICE_COUNTERS"]


class DeviceMmu(wiring.Component):
    """The device's TLB and its host-facing ports (``dev__…`` in hdl/PORTS.md).

    The one TLB lookup port serves, in priority order each cycle: a young test-and-clear, a
    fill, a device request.  ``req.ready``/``fill.ready`` say who got it.  Every one of them
    touches the replacement state of the first entry it matches.  A fill takes two cycles: the
    first is that lookup; in the second the victim is chosen (first invalid way, else PLRU),
    the first entry mapping the fill's (vaddr, asid) is dropped and the new entry written
    over the victim; when no entry maps it, an entry of the same page (another ASID's, or a
    global one) is overwritten instead, if there is one.  Nothing else (no request, young test or invalidation) is served in the
    second cycle.

    * ``req`` → ``resp`` the next cycle: NONE with ``paddr`` (the entry's young bit is set);
      PAGE when the entry lacks the permission (R for a load, W for a store, X for a fetch) or
      the VA is not canonical; MISS when no entry maps it.  A miss raises the fault record
      (``fault.valid`` level, held until ``fault.ack``) unless one is already pending.
    * ``fill``: install (vaddr, asid) → ppn at ``level`` with ``perm`` (R W X U = bits 0..3) and
      ``g``.  Not accepted in a cycle where an invalidation is applied.
    * ``young``: hold ``valid``; ``ack`` pulses with ``young`` = the bit's old value (0 when no
      entry maps it), and the bit is cleared.
    * ``inval``: as :class:`hdl.core.CoreMmu`'s: no request is accepted in the cycle an
      invalidation is applied, so from the ack cycle on no response comes from an entry it
      removed.

    Parameters
    ----------
    entries : int
        Entries of the (fully associative) TLB.
    replacement : str
        ``"plru"`` (what :class:`hdl.top.Top` uses, as the golden model's DeviceTlb does),
        ``"random"`` or ``"fifo"``.
    asid_bits : int
    quirk_inval_clear_late : bool
        Bug: matching entries are cleared one cycle after the ack cycle (see
        :func:`hdl.tlb.connect_inval`).
    """

    def __init__(self, *, entries=8, replacement="plru", asid_bits=9,
                 quirk_inval_clear_late=False):
        check_device_entries(entries, "entries")
        check_asid_bits(asid_bits)
        if not isinstance(quirk_inval_clear_late, bool):
            raise TypeError(f"quirk_inval_clear_late must be a bool, not "
                            f"{quirk_inval_clear_late!r}")
        self.quirk_inval_clear_late = quirk_inval_clear_late
        self.tlb = Tlb(entries=entries, ways=entries, replacement=replacement,
                       asid_bits=asid_bits)
        aw = max(asid_bits, 1)
        self.asid_bits = asid_bits
        super().__init__({
            "req": In(wiring.Signature({"valid": Out(1), "ready": In(1), "vaddr": Out(VA_WIDTH),
                                        "op": Out(2), "asid": Out(aw)})),
            "resp": Out(wiring.Signature({"valid": Out(1), "paddr": Out(PA_WIDTH),
                                          "fault": Out(2)})),
            "fault": Out(wiring.Signature({"valid": Out(1), "vaddr": Out(VA_WIDTH),
                                           "asid": Out(aw), "op": Out(2), "ack": In(1)})),
            "fill": In(wiring.Signature({"valid": Out(1), "ready": In(1),
                                         "vaddr": Out(VA_WIDTH), "asid": Out(aw),
                                         "ppn": Out(PPN_WIDTH), "level": Out(2),
                                         "perm": Out(4), "g": Out(1)})),
            "young": In(wiring.Signature({"valid": Out(1), "vaddr": Out(VA_WIDTH),
                                          "asid": Out(aw), "ack": In(1), "young": In(1)})),
            "inval": In(inval_signature(asid_bits)),
            "perf": Out(perf_signature(DEVICE_COUNTERS)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tlb = tlb = self.tlb
        req, resp, fault, fill, young, iv, perf = (self.req, self.resp, self.fault, self.fill,
                                                   self.young, self.inval, self.perf)
        lk = tlb.lookup
        e = lk.entry

        # --- invalidation -------------------------------------------------------------------
        ack = Signal()
        apply = Signal()
        fill_pending = Signal()   # second cycle of a fill: the write, after the drop
        m.d.comb += [apply.eq(iv.valid & ~ack & ~fill_pending), iv.ack.eq(ack)]
        m.d.sync += ack.eq(apply)
        connect_inval(m, tlb.inval, iv, apply, late=self.quirk_inval_clear_late)
        with m.If(apply):
            m.d.sync += perf.invals.eq(perf.invals + 1)

        # --- who owns the lookup port this cycle --------------------------------------------
        young_ack = Signal()
        use_young = Signal()
        use_fill = Signal()
        use_req = Signal()
        m.d.comb += [
            use_young.eq(young.valid & ~young_ack & ~fill_pending),
            use_fill.eq(~use_young & fill.valid & ~apply & ~fill_pending),
            # no request in the cycle an invalidation is applied (its lookup would see the
            # entries being cleared)
            use_req.eq(~use_young & ~use_fill & ~fill_pending & ~apply),
            req.ready.eq(use_req),
            fill.ready.eq(use_fill),
            young.ack.eq(young_ack),
        ]
        m.d.sync += [young_ack.eq(use_young), resp.valid.eq(0)]

        pend = Signal(tlb.entry_layout)
        pend_vaddr = Signal(VA_WIDTH)
        with m.If(fill_pending):
            # Second cycle: the victim is chosen (after the first cycle's PLRU touch, before
            # the drop), the first entry mapping (vaddr, asid) is dropped, the new one written.
            m.d.comb += [lk.valid.eq(1), lk.vpn.eq(pend_vaddr[12:39]), lk.asid.eq(pend.asid),
                         lk.drop.eq(1),
                         tlb.fill.valid.eq(1), tlb.fill.entry.eq(pend),
                         # nothing to drop: reuse a same-page entry (other ASID, global) instead
                         tlb.fill.replace.eq(~lk.hit)]
            m.d.sync += fill_pending.eq(0)
        with m.If(use_young):
            m.d.comb += [lk.valid.eq(1), lk.touch.eq(1), lk.vpn.eq(young.vaddr[12:39]),
                         lk.asid.eq(young.asid), lk.clear_young.eq(1)]
            m.d.sync += young.young.eq(lk.hit & e.young)
            with m.If(lk.hit & e.young):
                m.d.sync += perf.young_clears.eq(perf.young_clears + 1)
        with m.Elif(use_fill):
            # First cycle: a lookup that touches the replacement state of the entry the fill
            # will drop.
            m.d.comb += [lk.valid.eq(1), lk.touch.eq(1), lk.vpn.eq(fill.vaddr[12:39]),
                         lk.asid.eq(fill.asid)]
            m.d.sync += [
                fill_pending.eq(1),
                pend_vaddr.eq(fill.vaddr),
                pend.vpn.eq(fill.vaddr[12:39]),
                pend.asid.eq(fill.asid),
                pend.ppn.eq(fill.ppn),
                pend.level.eq(fill.level),
                pend.r.eq(fill.perm[0]),
                pend.w.eq(fill.perm[1]),
                pend.x.eq(fill.perm[2]),
                pend.u.eq(fill.perm[3]),
                pend.g.eq(fill.g),
                pend.a.eq(1),
                pend.d.eq(fill.perm[1]),
            ]
            m.d.sync += perf.fills.eq(perf.fills + 1)
        with m.Elif(use_req):
            m.d.comb += [lk.vpn.eq(req.vaddr[12:39]), lk.asid.eq(req.asid)]
            with m.If(req.valid):
                m.d.comb += [lk.valid.eq(1), lk.touch.eq(1)]
                permitted = ((req.op == AccessType.LOAD) & e.r
                             | (req.op == AccessType.STORE) & e.w
                             | (req.op == AccessType.FETCH) & e.x)
                canonical = va_canonical(req.vaddr)
                m.d.sync += [resp.valid.eq(1), resp.paddr.eq(0),
                             perf.lookups.eq(perf.lookups + 1)]
                with m.If(~canonical):
                    m.d.sync += resp.fault.eq(FaultKind.PAGE)
                with m.Elif(lk.hit):
                    m.d.sync += perf.hits.eq(perf.hits + 1)
                    with m.If(permitted):
                        m.d.comb += lk.set_young.eq(1)
                        m.d.sync += [resp.fault.eq(FaultKind.NONE),
                                     resp.paddr.eq(leaf_paddr(e.ppn, e.level, req.vaddr))]
                    with m.Else():
                        m.d.sync += resp.fault.eq(FaultKind.PAGE)
                with m.Else():
                    m.d.sync += [resp.fault.eq(FaultKind.MISS), perf.misses.eq(perf.misses + 1)]
                    with m.If(~fault.valid | fault.ack):
                        m.d.sync += [fault.vaddr.eq(req.vaddr), fault.asid.eq(req.asid),
                                     fault.op.eq(req.op)]

        # The fault record: cleared by ack, raised by a miss (a miss in the ack cycle wins).
        raise_fault = use_req & req.valid & va_canonical(req.vaddr) & ~lk.hit
        with m.If(fault.ack):
            m.d.sync += fault.valid.eq(0)
        with m.If(raise_fault & (~fault.valid | fault.ack)):
            m.d.sync += fault.valid.eq(1)
        return m
