"""PageWalker: the Sv39 hardware page-table walker with atomic A/D updates (Svadu) or Svade.

One loop from the root down, as in the privileged spec's algorithm (and Spike's ``walk()``):

1. A non-canonical VA is a page fault (no memory access).
2. Read the PTE at ``root * 4096 + vpn[2] * 8``; a bus error is an *access* fault.
3. V=0, W without R, or any of bits 54..63 set: page fault.
4. A non-leaf (R=X=0) with A, D or U set, or at level 0: page fault; else descend.
5. A leaf: R/W/X for the access type (a load may use X instead of R when MXR is set); U=0 for
   a U-mode access, or U=1 for an S-mode fetch, or U=1 for an S-mode load/store without SUM:
   page fault.  A superpage whose low PPN bits are not
   zero: page fault.
6. A=0, or a store with D=0: Svade (``svadu=False``) raises a page fault; Svadu compare-and-swaps
   the exact PTE value read in step 2 with ``pte | A | (D if store)``.  A CAS mismatch restarts the
   walk from the root (counted on ``events.cas_retry``); a bus error on the CAS is an access
   fault.  Nothing is written before every check of the leaf passed.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from pyrmap.pte import VA_BITS

from .layouts import (PA_WIDTH, PPN_WIDTH, PTE_LAYOUT, VA_WIDTH, AccessType, FaultKind, MemOp,
                      mem_signature)

__all__ = ["PageWalker", "sv39_permits", "va_canonical", "leaf_paddr"]


def va_canonical(vaddr):
    """Sv39: bits 63..39 all equal bit 38."""
    top = vaddr[VA_BITS - 1:]
    return (top == 0) | top.all()


def sv39_permits(op, user, sum_, mxr, r, w, x, u):
    """True when a leaf with R/W/X/U grants access ``op`` at privilege ``user`` (SUM ``sum_``,
    MXR ``mxr``: a load may read an executable page)."""
    kind = Mux(op == AccessType.LOAD, r | (mxr & x), Mux(op == AccessType.STORE, w,
                                             Mux(op == AccessType.FETCH, x, 0)))
    priv = Mux(user, u, ~u | (sum_ & (op != AccessType.FETCH)))
    return kind & priv


def leaf_paddr(ppn, level, vaddr):
    """The physical address of ``vaddr`` through a leaf of ``ppn`` at ``level``."""
    base = Cat(vaddr[:12], ppn)[:PA_WIDTH]
    return Mux(level == 0, base,
               Mux(level == 1, Cat(vaddr[:21], base[21:]), Cat(vaddr[:30], base[30:])))


class PageWalker(wiring.Component):
    """Sv39 walker (see the module docstring for the rules).

    Parameters
    ----------
    svadu : bool
        Hardware A/D update by CAS (True) or Svade page faults (False).
    quirk_plain_ad_write : bool
        Bug: the A/D update is a plain WRITE of the PTE value read by the walk, | A/D: a
        concurrent software change of the PTE is lost (resurrected).
    quirk_ad_on_nonpresent : bool
        Bug (KNL4): the A/D update re-reads the PTE and writes ``reread | A/D`` without checking
        V, so A/D land on a PTE that software just cleared.  Takes precedence over
        ``quirk_plain_ad_write``.

    Members
    -------
    start : In
        ``valid``/``ready`` (ready while idle), ``vaddr``, ``op``, ``user``, ``sum``, ``mxr``,
        ``root``.
    done : Out
        One-cycle pulse ``valid`` with ``fault`` (NONE/PAGE/ACCESS), ``paddr`` (0 on a fault), ``pte`` (the leaf
        as it is in memory after the update) and ``level``.
    mem : Out(mem_signature())
        READ / WRITE / CAS, one outstanding.
    events : Out
        One-cycle pulses ``a_set``, ``d_set`` (an update set A / D), ``cas_retry``.
    busy : Out(1)
        A walk is in flight.
    """

    def __init__(self, *, svadu=True, quirk_plain_ad_write=False, quirk_ad_on_nonpresent=False):
        for name, value in (("svadu", svadu), ("quirk_plain_ad_write", quirk_plain_ad_write),
                            ("quirk_ad_on_nonpresent", quirk_ad_on_nonpresent)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self.svadu = svadu
        self.quirk_plain_ad_write = quirk_plain_ad_write
        self.quirk_ad_on_nonpresent = quirk_ad_on_nonpresent
        super().__init__({
            "start": In(wiring.Signature({
                "valid": Out(1), "ready": In(1), "vaddr": Out(VA_WIDTH), "op": Out(2),
                "user": Out(1), "sum": Out(1), "mxr": Out(1), "root": Out(PPN_WIDTH)})),
            "done": Out(wiring.Signature({
                "valid": Out(1), "fault": Out(2), "paddr": Out(PA_WIDTH),
                "pte": Out(PTE_LAYOUT), "level": Out(2)})),
            "mem": Out(mem_signature()),
            "events": Out(wiring.Signature({"a_set": Out(1), "d_set": Out(1),
                                            "cas_retry": Out(1)})),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        st = self.start
        vaddr = Signal(VA_WIDTH)
        op = Signal(2)
        user = Signal()
        sum_ = Signal()
        mxr = Signal()
        root = Signal(PPN_WIDTH)
        level = Signal(2)
        addr = Signal(PA_WIDTH)
        pte = Signal(PTE_LAYOUT)
        new = Signal(64)     # the value the A/D update writes
        fault = Signal(2)
        store = Signal()
        m.d.comb += store.eq(op == AccessType.STORE)

        def vpn_at(lvl):
            return Mux(lvl == 2, vaddr[30:39], Mux(lvl == 1, vaddr[21:30], vaddr[12:21]))

        def pte_addr(ppn, lvl):
            return Cat(Const(0, 3), vpn_at(lvl), ppn)[:PA_WIDTH]

        req = self.mem.req
        resp = self.mem.resp
        m.d.comb += self.busy.eq(1)

        with m.FSM(name="walk") as fsm:
            with m.State("IDLE"):
                m.d.comb += [st.ready.eq(1), self.busy.eq(0)]
                with m.If(st.valid):
                    m.d.sync += [vaddr.eq(st.vaddr), op.eq(st.op), user.eq(st.user),
                                 sum_.eq(st.sum), mxr.eq(st.mxr), root.eq(st.root),
                                 level.eq(2)]
                    m.d.sync += addr.eq(Cat(Const(0, 3), st.vaddr[30:39], st.root)[:PA_WIDTH])
                    with m.If(va_canonical(st.vaddr)):
                        m.next = "READ"
                    with m.Else():
                        m.d.sync += fault.eq(FaultKind.PAGE)
                        m.next = "DONE"

            with m.State("READ"):
                m.d.comb += [req.valid.eq(1), req.op.eq(MemOp.READ), req.addr.eq(addr)]
                with m.If(req.ready):
                    m.next = "READ_WAIT"

            with m.State("READ_WAIT"):
                with m.If(resp.valid):
                    m.d.sync += pte.eq(resp.rdata)
                    with m.If(resp.err):
                        m.d.sync += fault.eq(FaultKind.ACCESS)
                        m.next = "DONE"
                    with m.Else():
                        m.next = "CHECK"

            with m.State("CHECK"):
                leaf = pte.r | pte.x
                invalid = self.pte_invalid(pte)
                bad_nonleaf = pte.a | pte.d | pte.u | (level == 0)
                permitted = sv39_permits(op, user, sum_, mxr, pte.r, pte.w, pte.x, pte.u)
                misaligned = Mux(level == 2, pte.ppn[:18] != 0,
                                 Mux(level == 1, pte.ppn[:9] != 0, 0))
                need_a = ~pte.a
                need_d = store & ~pte.d
                pte_bits = pte.as_value()
                m.d.sync += new.eq(pte_bits | (1 << 6) | Mux(store, 1 << 7, 0))
                with m.If(invalid):
                    m.d.sync += fault.eq(FaultKind.PAGE)
                    m.next = "DONE"
                with m.Elif(~leaf):
                    with m.If(bad_nonleaf):
                        m.d.sync += fault.eq(FaultKind.PAGE)
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [level.eq(level - 1),
                                     addr.eq(pte_addr(pte.ppn, level - 1))]
                        m.next = "READ"
                with m.Elif(~permitted | misaligned):
                    m.d.sync += fault.eq(FaultKind.PAGE)
                    m.next = "DONE"
                with m.Elif(need_a | need_d):
                    if not self.svadu:
                        m.d.sync += fault.eq(FaultKind.PAGE)
                        m.next = "DONE"
                    elif self.quirk_ad_on_nonpresent:
                        m.next = "REREAD"
                    elif self.quirk_plain_ad_write:
                        m.next = "WRITE"
                    else:
                        m.next = "CAS"
                with m.Else():
                    m.d.sync += fault.eq(FaultKind.NONE)
                    m.next = "DONE"

            with m.State("CAS"):
                m.d.comb += [req.valid.eq(1), req.op.eq(MemOp.CAS), req.addr.eq(addr),
                             req.cmp.eq(pte.as_value()), req.wdata.eq(new)]
                with m.If(req.ready):
                    m.next = "CAS_WAIT"

            with m.State("CAS_WAIT"):
                with m.If(resp.valid):
                    with m.If(resp.err):
                        m.d.sync += fault.eq(FaultKind.ACCESS)
                        m.next = "DONE"
                    with m.Elif(resp.rdata == pte.as_value()):
                        self._updated(m, pte, new, store, fault)
                        m.next = "DONE"
                    with m.Else():
                        # Somebody changed the PTE since we read it: walk again from the root.
                        m.d.comb += self.events.cas_retry.eq(1)
                        m.d.sync += [level.eq(2), addr.eq(pte_addr(root, 2))]
                        m.next = "READ"

            # quirk_ad_on_nonpresent: re-read, then write reread | A | D, V unchecked.
            with m.State("REREAD"):
                m.d.comb += [req.valid.eq(1), req.op.eq(MemOp.READ), req.addr.eq(addr)]
                with m.If(req.ready):
                    m.next = "REREAD_WAIT"

            with m.State("REREAD_WAIT"):
                with m.If(resp.valid):
                    with m.If(resp.err):
                        m.d.sync += fault.eq(FaultKind.ACCESS)
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += new.eq(resp.rdata | (new & 0xC0))
                        m.next = "WRITE"

            # quirk_plain_ad_write (and the tail of quirk_ad_on_nonpresent): a plain store.
            with m.State("WRITE"):
                m.d.comb += [req.valid.eq(1), req.op.eq(MemOp.WRITE), req.addr.eq(addr),
                             req.wdata.eq(new)]
                with m.If(req.ready):
                    m.next = "WRITE_WAIT"

            with m.State("WRITE_WAIT"):
                with m.If(resp.valid):
                    with m.If(resp.err):
                        m.d.sync += fault.eq(FaultKind.ACCESS)
                    with m.Else():
                        # The TLB is filled from the PTE the walk checked, plus A/D.
                        self._updated(m, pte, pte.as_value() | (new & 0xC0), store, fault)
                    m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                m.next = "IDLE"

        m.d.comb += [
            self.done.fault.eq(fault),
            self.done.pte.eq(pte),
            self.done.level.eq(level),
            self.done.paddr.eq(Mux(fault == FaultKind.NONE, leaf_paddr(pte.ppn, level, vaddr), 0)),
        ]
        return m

    def pte_invalid(self, pte):
        """Step 3 of the walk: V=0, W without R, or a reserved bit set (a page fault at any
        level, leaf or not)."""
        return ~pte.v | (~pte.r & pte.w) | (pte.reserved != 0)

    def _updated(self, m, pte, value, store, fault):
        m.d.comb += [self.events.a_set.eq(~pte.a), self.events.d_set.eq(store & ~pte.d)]
        m.d.sync += [pte.eq(value), fault.eq(FaultKind.NONE)]
