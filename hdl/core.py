"""CoreMmu: one core's MMU = Tlb + PageWalker + CPU port + invalidation port + counters."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from pyrmap.arch import CORE_COUNTERS

from .config import check_asid_bits
from .layouts import (PA_WIDTH, PPN_WIDTH, VA_WIDTH, AccessType, FaultKind, inval_signature,
                      mem_signature, perf_signature, tlb_entry_value)
from .tlb import Tlb, connect_inval
from .walker import PageWalker, leaf_paddr, sv39_permits, va_canonical

__all__ = ["CoreMmu", "CORE_COUNTERS", "cpu_req_signature", "cpu_resp_signature",
           "core_members"]


def cpu_req_signature(asid_bits):
    aw = max(asid_bits, 1)
    return wiring.Signature({"valid": Out(1), "ready": In(1), "vaddr": Out(VA_WIDTH),
                             "op": Out(2), "user": Out(1), "sum": Out(1), "mxr": Out(1),
                             "asid": Out(aw),
                             "root": Out(PPN_WIDTH)})


def cpu_resp_signature():
    return wiring.Signature({"valid": Out(1), "paddr": Out(PA_WIDTH), "fault": Out(2),
                             "hit": Out(1)})


def core_members(asid_bits) -> dict:
    """The members of a core MMU component (``req``, ``resp``, ``inval``, ``mem``, ``perf``):
    :class:`CoreMmu`'s, and any other core :class:`hdl.top.Top` can build
    (:class:`hdl.cva6.Cva6CoreMmu`)."""
    return {
        "req": In(cpu_req_signature(asid_bits)),
        "resp": Out(cpu_resp_signature()),
        "inval": In(inval_signature(asid_bits)),
        "mem": Out(mem_signature()),
        "perf": Out(perf_signature(CORE_COUNTERS)),
    }


class CoreMmu(wiring.Component):
    """The MMU of one core (ports as ``cpu{i}__…`` in hdl/PORTS.md).

    A request is accepted while idle (``req.ready``) and no invalidation is being applied.  It
    hits when a TLB entry maps (vaddr, asid), the VA is canonical, the entry grants the access
    (R/W/X, U/SUM/MXR), has A=1 and, for a store, D=1: then ``resp`` pulses the next cycle with
    ``hit=1``.  Otherwise a matching entry is dropped and the walker runs; ``resp`` pulses when
    it finishes, and a successful walk fills the TLB.

    The invalidation port applies a request in the cycle it sees ``valid`` (and did not just
    acknowledge one); ``ack`` pulses the next cycle.  The guarantee, from the ack cycle on:
    no matching entry exists (a request accepted in the ack cycle cannot hit one), and no
    response leaves ``resp`` that was derived from a PTE read or a TLB entry older than the
    invalidation.  The core keeps it by itself: it accepts no request in the cycle an
    invalidation is applied (its lookup would see the entries before the clear), and a walk
    that was in flight when an invalidation was applied, including one finishing in that very
    cycle, neither fills nor answers: it is restarted from the root (``perf.squashed``), so its
    response comes from PTEs read after the invalidation.

    Parameters
    ----------
    tlb_entries, tlb_ways, replacement, superpage_entries, asid_bits
        See :class:`hdl.tlb.Tlb`.
    svadu, quirk_plain_ad_write, quirk_ad_on_nonpresent
        See :class:`hdl.walker.PageWalker`.
    quirk_fill_after_inval : bool
        Bug: walks in flight are neither restarted nor squashed; their fill lands after the
        invalidation was acknowledged (and wins over an invalidation in the same cycle), and
        their response leaves the port.
    quirk_walk_answer_after_inval : bool
        Bug: a walk in flight when an invalidation is applied is not restarted; its fill is
        dropped but its response, derived from PTEs read before the invalidation, leaves the
        port after the ack (the requester would have to re-execute the access).
    quirk_inval_clear_late : bool
        Bug: matching entries are cleared one cycle after the ack cycle, so a request
        accepted in the ack cycle hits an invalidated entry.

    Members
    -------
    req : In(cpu_req_signature)
        ``valid``/``ready``, ``vaddr``, ``op`` (AccessType), ``user``, ``sum``
        (sstatus.SUM), ``mxr`` (mstatus.MXR), ``asid``, ``root`` (satp.PPN).
    resp : Out(cpu_resp_signature)
        One-cycle ``valid`` pulse with ``paddr`` (0 on a fault), ``fault`` (FaultKind) and
        ``hit`` (served from the TLB).
    inval : In(inval_signature)
        ``valid`` (hold until ``ack``), ``kind`` (InvalKind), ``vaddr``, ``asid``; ``ack`` pulse.
    mem : Out(mem_signature())
        The walker's memory port.
    perf : Out
        32-bit counters ``CORE_COUNTERS``: ``lookups`` (requests), ``hits`` (served from the
        TLB), ``misses`` (requests that walked), ``walks`` (walks started, restarts included),
        ``walk_cycles`` (cycles a walk was pending), ``a_sets``/``d_sets`` (updates that set
        A/D), ``cas_retries``, ``invals`` (requests applied), ``squashed`` (walks an
        invalidation discarded and restarted), ``walk_mem`` (the walker's memory requests).
    """

    def __init__(self, *, tlb_entries=8, tlb_ways=None, replacement="plru", superpage_entries=4,
                 asid_bits=9, svadu=True, quirk_plain_ad_write=False,
                 quirk_fill_after_inval=False, quirk_ad_on_nonpresent=False,
                 quirk_walk_answer_after_inval=False, quirk_inval_clear_late=False):
        check_asid_bits(asid_bits)
        for name, value in (("quirk_fill_after_inval", quirk_fill_after_inval),
                            ("quirk_walk_answer_after_inval", quirk_walk_answer_after_inval),
                            ("quirk_inval_clear_late", quirk_inval_clear_late)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self.tlb = Tlb(entries=tlb_entries, ways=tlb_ways, replacement=replacement,
                       superpage_entries=superpage_entries, asid_bits=asid_bits)
        self.walker = PageWalker(svadu=svadu, quirk_plain_ad_write=quirk_plain_ad_write,
                                 quirk_ad_on_nonpresent=quirk_ad_on_nonpresent)
        self.asid_bits = asid_bits
        self.quirk_fill_after_inval = quirk_fill_after_inval
        self.quirk_walk_answer_after_inval = quirk_walk_answer_after_inval
        self.quirk_inval_clear_late = quirk_inval_clear_late
        super().__init__(core_members(asid_bits))

    def elaborate(self, platform):
        m = Module()
        m.submodules.tlb = tlb = self.tlb
        m.submodules.walker = walker = self.walker
        wiring.connect(m, wiring.flipped(self.mem), walker.mem)

        req, resp, iv, perf = self.req, self.resp, self.inval, self.perf

        # --- invalidation -------------------------------------------------------------------
        ack = Signal()
        apply = Signal()
        m.d.comb += [apply.eq(iv.valid & ~ack), iv.ack.eq(ack)]
        m.d.sync += ack.eq(apply)
        connect_inval(m, tlb.inval, iv, apply, late=self.quirk_inval_clear_late)
        with m.If(apply):
            m.d.sync += perf.invals.eq(perf.invals + 1)

        # --- the request being served -------------------------------------------------------
        vaddr = Signal(VA_WIDTH)
        op = Signal(2)
        user = Signal()
        sum_ = Signal()
        mxr = Signal()
        asid = Signal.like(req.asid)
        root = Signal(PPN_WIDTH)
        squashed = Signal()   # an invalidation was applied while this walk was in flight

        m.d.sync += resp.valid.eq(0)
        with m.If(apply):
            m.d.sync += squashed.eq(1)      # the FSM clears it when a walk (re)starts

        e = tlb.lookup.entry
        hit_ok = (tlb.lookup.hit & va_canonical(req.vaddr) & e.a
                  & sv39_permits(req.op, req.user, req.sum, req.mxr, e.r, e.w, e.x, e.u)
                  & ((req.op != AccessType.STORE) | e.d))

        m.d.comb += [
            tlb.lookup.vpn.eq(req.vaddr[12:39]),
            tlb.lookup.asid.eq(req.asid),
            walker.start.vaddr.eq(vaddr),
            walker.start.op.eq(op),
            walker.start.user.eq(user),
            walker.start.sum.eq(sum_),
            walker.start.mxr.eq(mxr),
            walker.start.root.eq(root),
        ]

        restart = not (self.quirk_fill_after_inval or self.quirk_walk_answer_after_inval)

        with m.FSM(name="core"):
            with m.State("IDLE"):
                # No request in the cycle an invalidation is applied: its lookup would see
                # the entries the invalidation is clearing.
                m.d.comb += req.ready.eq(~apply)
                with m.If(req.valid & ~apply):
                    m.d.comb += [tlb.lookup.valid.eq(1), tlb.lookup.touch.eq(1)]
                    m.d.sync += perf.lookups.eq(perf.lookups + 1)
                    with m.If(hit_ok):
                        m.d.sync += [
                            resp.valid.eq(1),
                            resp.hit.eq(1),
                            resp.fault.eq(FaultKind.NONE),
                            resp.paddr.eq(leaf_paddr(e.ppn, e.level, req.vaddr)),
                            perf.hits.eq(perf.hits + 1),
                        ]
                    with m.Else():
                        # A hit that cannot serve the access (a store to a clean entry, a
                        # permission the entry lacks) is dropped and re-walked.
                        m.d.comb += tlb.lookup.drop.eq(1)
                        m.d.sync += [
                            vaddr.eq(req.vaddr), op.eq(req.op), user.eq(req.user),
                            sum_.eq(req.sum), mxr.eq(req.mxr), asid.eq(req.asid),
                            root.eq(req.root),
                            perf.misses.eq(perf.misses + 1),
                        ]
                        m.next = "WALK_START"

            with m.State("WALK_START"):
                # The walk reads nothing before the next cycle: an invalidation applied now
                # or earlier is older than all of its reads.
                m.d.comb += walker.start.valid.eq(1)
                m.d.sync += squashed.eq(0)
                m.d.sync += perf.walk_cycles.eq(perf.walk_cycles + 1)
                with m.If(walker.start.ready):
                    m.d.sync += perf.walks.eq(perf.walks + 1)
                    m.next = "WALK"

            with m.State("WALK"):
                m.d.sync += perf.walk_cycles.eq(perf.walk_cycles + 1)
                with m.If(walker.done.valid):
                    killed = squashed | apply
                    install = walker.done.fault == FaultKind.NONE
                    if not self.quirk_fill_after_inval:
                        install = install & ~killed
                        with m.If(killed):
                            m.d.sync += perf.squashed.eq(perf.squashed + 1)
                    m.d.comb += [tlb.fill.valid.eq(install), tlb.fill.replace.eq(1)]
                    answer = [resp.valid.eq(1), resp.hit.eq(0),
                              resp.fault.eq(walker.done.fault),
                              resp.paddr.eq(walker.done.paddr)]
                    if restart:
                        with m.If(killed):
                            # Read before the invalidation: walk again from the root; the
                            # new walk's reads all come after it.
                            m.next = "WALK_START"
                        with m.Else():
                            m.d.sync += answer
                            m.next = "IDLE"
                    else:
                        m.d.sync += answer
                        m.next = "IDLE"

        # The fill entry, as one continuous assignment (see layouts.tlb_entry_value).
        pte = walker.done.pte
        m.d.comb += tlb.fill.entry.eq(tlb_entry_value(
            tlb.entry_layout, vpn=vaddr[12:39], asid=asid, ppn=pte.ppn,
            level=walker.done.level, r=pte.r, w=pte.w, x=pte.x, u=pte.u, g=pte.g, a=pte.a,
            d=pte.d))

        with m.If(self.mem.req.valid & self.mem.req.ready):
            m.d.sync += perf.walk_mem.eq(perf.walk_mem + 1)
        ev = walker.events
        with m.If(ev.a_set):
            m.d.sync += perf.a_sets.eq(perf.a_sets + 1)
        with m.If(ev.d_set):
            m.d.sync += perf.d_sets.eq(perf.d_sets + 1)
        with m.If(ev.cas_retry):
            m.d.sync += perf.cas_retries.eq(perf.cas_retries + 1)
        return m
