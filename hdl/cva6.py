"""CVA6's Sv39 MMU behind our port contract (hdl/PORTS.md): one per core, ``mmu="cva6"``.

The SystemVerilog comes from the pinned ``pythondata-cpu-cva6`` wheel (``pip install
'.[cva6]'``; nothing is fetched at build time, nothing is copied here); ``hdl/sv/cva6_core_mmu.sv``
flattens CVA6's ``mmu`` ports and fixes what a CPU would (translation on, PMP entry 0 covering
all of physical memory with R/W/X, every physical address executable).  :class:`Cva6CoreMmu`
is the shim: the same members as :class:`hdl.core.CoreMmu`, so :class:`hdl.top.Top` builds
either, and cosim drives both the same way.

What the shim does (and what it cannot change; docs/cva6.md tabulates every difference):

* **Requests are held until answered.**  A request is accepted while idle and no invalidation
  is applied (``req.ready``); from the accept cycle on it is presented to CVA6 (``lsu_req`` for
  loads and stores, ``fetch_req`` for fetches) until CVA6 answers.  A data request is taken off
  in the cycle CVA6 answers it (else CVA6 would look it up again).  A DTLB hit answers the next
  cycle; a miss walks, fills the DTLB and answers from the refilled entry.  A fetch is answered
  by the ITLB in the cycle of the hit; the shim registers that answer (next cycle on ``resp``).
* **``hit``** is 1 when the walker made no memory read for this request.
* **Faults.**  CVA6's page-fault causes (12, 13, 15) are PAGE, its access-fault causes ACCESS.
  CVA6's walker has no bus-error input: on ``mem.resp.err`` the shim answers the walker a zero
  PTE (CVA6 then raises a page fault) and reports ACCESS for that request.
* **Invalidation.**  Applied in the first cycle ``inval.valid`` is seen while ``ack`` is low:
  the shim pulses CVA6's ``flush_i`` (the pipeline flush, which stops a walk in flight: it
  neither fills nor answers) and ``flush_tlb_i`` (sfence.vma: VA kinds pass ``vaddr``, ASID
  kinds ``asid``, 0 otherwise; CVA6 reads 0 as "any", an over-flush the spec allows), and
  takes the held request off CVA6's port in that cycle, so no lookup sees the entries being
  cleared.  ``ack`` pulses the next cycle: from then on no entry matches, the killed walk
  cannot fill (CVA6's TLB drops a fill in a flush cycle), and the held request is looked up
  again and re-walked, so no response is derived from a PTE read or entry older than the
  invalidation.
* **Memory.**  Each core's walker reads through a one-entry buffer that grants CVA6's request
  at once and presents it to :class:`hdl.arbiter.MemArbiter` (CVA6 may drop a request it was
  not granted when flushed; the buffer never lets it withdraw one the arbiter took).  The
  walker only reads: Svade, no A/D writes.
* **Counters.**  ``lookups``, ``hits``, ``misses``, ``walks`` (CVA6's itlb/dtlb miss pulses),
  ``walk_cycles``, ``invals``, ``squashed`` (invalidations applied while a walk was in
  flight); ``a_sets``, ``d_sets``, ``cas_retries`` are 0 (CVA6 never writes a PTE).

Hierarchy for checkers: core ``i``'s CVA6 TLBs are ``core{i}.mmu.i_mmu.i_dtlb`` and
``...i_itlb`` (registers ``tags_q``, ``content_q``), decoded by ``cosim.cva6``.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring

from pyrmap.arch import InvalKind

from .layouts import PA_WIDTH, PPN_WIDTH, VA_WIDTH, AccessType, FaultKind, MemOp

__all__ = ["PACKAGE", "PIN", "Cva6CoreMmu", "sources", "MissingCva6"]

#: The PyPI distribution that carries CVA6's sources, and the pinned version (pyproject's
#: ``cva6`` extra).
PACKAGE = "pythondata-cpu-cva6"
PIN = "4.2.0.post435"
#: The wheel's files the MMU needs, in compile order (packages first), relative to its
#: ``system_verilog`` directory.
WHEEL_FILES = (
    "core/include/cv64a6_imafdc_sv39_config_pkg.sv",
    "core/include/riscv_pkg.sv",
    "corev_apu/riscv-dbg/src/dm_pkg.sv",
    "common/submodules/common_cells/src/cf_math_pkg.sv",
    "core/include/ariane_pkg.sv",
    "common/submodules/common_cells/src/lzc.sv",
    "core/pmp/src/pmp_entry.sv",
    "core/pmp/src/pmp.sv",
    "core/mmu_sv39/tlb.sv",
    "core/mmu_sv39/ptw.sv",
    "core/mmu_sv39/mmu.sv",
)
WRAPPER = Path(__file__).resolve().parent / "sv" / "cva6_core_mmu.sv"
#: CVA6 exception causes that are page faults (instruction, load, store/AMO).
PAGE_FAULT_CAUSES = (12, 13, 15)


class MissingCva6(RuntimeError):
    """The ``pythondata-cpu-cva6`` wheel is not installed."""


def sources() -> list[Path]:
    """The SystemVerilog files of ``mmu="cva6"`` (the wheel's, then the wrapper), in order.

    Raises
    ------
    MissingCva6
        The pinned wheel is not installed (the message says how to install it).
    """
    try:
        import pythondata_cpu_cva6 as pd
    except ImportError:
        raise MissingCva6(f"mmu='cva6' needs the {PACKAGE} wheel: pip install "
                          f"'{PACKAGE}=={PIN}' (or: pip install -e '.[cva6]', make venv)") from None
    root = Path(pd.data_location)
    files = [root / f for f in WHEEL_FILES]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise MissingCva6(f"{PACKAGE} {pd.version_str} lacks {', '.join(missing)}; "
                          f"install the pinned version {PIN}")
    return files + [WRAPPER]


class Cva6CoreMmu(wiring.Component):
    """One core: CVA6's MMU (ITLB, DTLB, walker) behind the shim described in the module.

    Parameters
    ----------
    tlb_entries : int
        Entries of CVA6's ITLB and of its DTLB (each fully associative, PLRU): a power of two,
        at least 2.
    asid_bits : int
        ASID width (0..16); 0: the ASID is tied to 0 (every entry matches every address space).

    Members
    -------
    req, resp, inval, mem, perf
        As :class:`hdl.core.CoreMmu`'s.
    """

    def __init__(self, *, tlb_entries: int = 8, asid_bits: int = 9):
        if (not isinstance(tlb_entries, int) or tlb_entries < 2
                or tlb_entries & (tlb_entries - 1)):
            raise ValueError(f"tlb_entries must be a power of two of at least 2 for CVA6's "
                             f"PLRU TLB, not {tlb_entries!r}")
        from .core import core_members
        self.tlb_entries = tlb_entries
        self.asid_bits = asid_bits
        super().__init__(core_members(asid_bits))

    def elaborate(self, platform):
        m = Module()
        req, resp, iv, perf, mem = self.req, self.resp, self.inval, self.perf, self.mem
        aw = max(self.asid_bits, 1)

        # --- invalidation: applied while valid and not acked; ack the next cycle ----------
        ack = Signal()
        apply = Signal()
        m.d.comb += [apply.eq(iv.valid & ~ack), iv.ack.eq(ack)]
        m.d.sync += ack.eq(apply)
        with m.If(apply):
            m.d.sync += perf.invals.eq(perf.invals + 1)
        with m.If(mem.req.valid & mem.req.ready):
            m.d.sync += perf.walk_mem.eq(perf.walk_mem + 1)
        by_va = (iv.kind == InvalKind.VA) | (iv.kind == InvalKind.VA_ASID)
        by_asid = (iv.kind == InvalKind.ASID) | (iv.kind == InvalKind.VA_ASID)
        flush_vaddr = Signal(VA_WIDTH)
        flush_asid = Signal(aw)
        m.d.comb += [flush_vaddr.eq(Mux(by_va, iv.vaddr, 0)),
                     flush_asid.eq(Mux(by_asid & (self.asid_bits > 0), iv.asid, 0))]

        # --- the request: accepted while idle, held until CVA6 answers ----------------------
        busy = Signal()
        lat = {name: Signal.like(getattr(req, name), name=f"held_{name}")
               for name in ("vaddr", "op", "user", "sum", "mxr", "asid", "root")}
        accept = Signal()
        m.d.comb += [req.ready.eq(~busy & ~apply), accept.eq(req.valid & req.ready)]
        cur = {name: Mux(busy, s, getattr(req, name)) for name, s in lat.items()}
        is_fetch = cur["op"] == AccessType.FETCH
        present = (busy | accept) & ~apply

        lsu_valid = Signal()
        lsu_paddr = Signal(PA_WIDTH)
        lsu_ex_valid = Signal()
        lsu_ex_cause = Signal(64)
        fetch_valid = Signal()
        fetch_paddr = Signal(PA_WIDTH)
        fetch_ex_valid = Signal()
        fetch_ex_cause = Signal(64)
        walk_start = Signal()
        cva_req = Signal()
        cva_addr = Signal(PA_WIDTH)
        cva_gnt = Signal()
        cva_rvalid = Signal()
        cva_rdata = Signal(64)

        m.submodules.mmu = Instance(
            "cva6_core_mmu",
            p_TLB_ENTRIES=self.tlb_entries, p_ASID_WIDTH=aw,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_flush=apply, i_flush_vaddr=flush_vaddr, i_flush_asid=flush_asid,
            i_satp_ppn=cur["root"][:PPN_WIDTH],
            i_asid=cur["asid"] if self.asid_bits else Const(0, aw),
            i_user=cur["user"], i_sum=cur["sum"], i_mxr=cur["mxr"],
            i_lsu_req=present & ~is_fetch & ~lsu_valid, i_lsu_vaddr=cur["vaddr"],
            i_lsu_is_store=cur["op"] == AccessType.STORE,
            o_lsu_valid=lsu_valid, o_lsu_paddr=lsu_paddr, o_lsu_ex_valid=lsu_ex_valid,
            o_lsu_ex_cause=lsu_ex_cause,
            i_fetch_req=present & is_fetch, i_fetch_vaddr=cur["vaddr"],
            o_fetch_valid=fetch_valid, o_fetch_paddr=fetch_paddr,
            o_fetch_ex_valid=fetch_ex_valid, o_fetch_ex_cause=fetch_ex_cause,
            o_walk_start=walk_start,
            o_mem_req=cva_req, o_mem_addr=cva_addr, i_mem_gnt=cva_gnt,
            i_mem_rvalid=cva_rvalid, i_mem_rdata=cva_rdata,
        )

        # --- the walker's reads: a one-entry buffer in front of the arbiter ---------------
        rd_addr = Signal(PA_WIDTH)
        walked = Signal()      # the walker read memory for the request being served
        err_seen = Signal()    # one of those reads was a bus error
        with m.FSM(name="rd"):
            with m.State("IDLE"):
                m.d.comb += cva_gnt.eq(cva_req)
                with m.If(cva_req):
                    m.d.sync += rd_addr.eq(cva_addr & ~7)
                    m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += [mem.req.valid.eq(1), mem.req.op.eq(MemOp.READ),
                             mem.req.addr.eq(rd_addr)]
                with m.If(mem.req.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(mem.resp.valid):
                    m.d.comb += [cva_rvalid.eq(1),
                                 cva_rdata.eq(Mux(mem.resp.err, 0, mem.resp.rdata))]
                    m.next = "IDLE"

        # --- answers ------------------------------------------------------------------------
        def kind(ex_valid, cause):
            page = 0
            for c in PAGE_FAULT_CAUSES:
                page = page | (cause == c)
            return Mux(~ex_valid, FaultKind.NONE,
                       Mux(err_seen, FaultKind.ACCESS,
                           Mux(page, FaultKind.PAGE, FaultKind.ACCESS)))

        d_done = busy & ~is_fetch & lsu_valid
        f_done = present & is_fetch & fetch_valid
        d_fault = Signal(2)
        m.d.comb += d_fault.eq(kind(lsu_ex_valid, lsu_ex_cause))
        f_resp = Signal()
        f_paddr = Signal(PA_WIDTH)
        f_fault = Signal(2)
        f_hit = Signal()
        f_kind = kind(fetch_ex_valid, fetch_ex_cause)
        m.d.sync += f_resp.eq(f_done)
        with m.If(f_done):
            m.d.sync += [f_fault.eq(f_kind), f_hit.eq(~walked),
                         f_paddr.eq(Mux(f_kind == FaultKind.NONE, fetch_paddr, 0))]
        with m.If(d_done):
            m.d.comb += [resp.valid.eq(1), resp.fault.eq(d_fault), resp.hit.eq(~walked),
                         resp.paddr.eq(Mux(d_fault == FaultKind.NONE, lsu_paddr, 0))]
        with m.Elif(f_resp):
            m.d.comb += [resp.valid.eq(1), resp.fault.eq(f_fault), resp.hit.eq(f_hit),
                         resp.paddr.eq(f_paddr)]

        with m.If(accept):
            m.d.sync += [busy.eq(~f_done), walked.eq(0), err_seen.eq(0),
                         perf.lookups.eq(perf.lookups + 1)]
            m.d.sync += [s.eq(getattr(req, name)) for name, s in lat.items()]
        with m.Elif(d_done | f_done):
            m.d.sync += busy.eq(0)
        with m.If(cva_gnt & busy):
            m.d.sync += walked.eq(1)
        with m.If(cva_rvalid & mem.resp.err & busy & ~apply):
            m.d.sync += err_seen.eq(1)
        with m.If(apply):
            m.d.sync += err_seen.eq(0)
        with m.If(resp.valid):
            with m.If(resp.hit):
                m.d.sync += perf.hits.eq(perf.hits + 1)
            with m.Else():
                m.d.sync += perf.misses.eq(perf.misses + 1)

        # --- walks ------------------------------------------------------------------------
        walking = Signal()
        with m.If(walk_start):
            m.d.sync += [walking.eq(1), perf.walks.eq(perf.walks + 1)]
        with m.Elif(apply | d_done | f_done):
            m.d.sync += walking.eq(0)
        with m.If(apply & walking):
            m.d.sync += perf.squashed.eq(perf.squashed + 1)
        with m.If(walking):
            m.d.sync += perf.walk_cycles.eq(perf.walk_cycles + 1)
        return m
