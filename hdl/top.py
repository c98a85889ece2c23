"""Top: ``ncores`` CoreMmus + one DeviceMmu + the MemArbiter, ports exactly as hdl/PORTS.md."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .arbiter import MemArbiter
from .config import MmuConfig
from .core import CORE_COUNTERS, CoreMmu, cpu_req_signature, cpu_resp_signature
from .device import DeviceMmu
from .layouts import inval_signature, mem_signature, perf_signature

__all__ = ["Top"]


def _core_signature(asid_bits):
    return wiring.Signature({
        "req": In(cpu_req_signature(asid_bits)),
        "resp": Out(cpu_resp_signature()),
        "inval": In(inval_signature(asid_bits)),
        "perf": Out(perf_signature(CORE_COUNTERS)),
    })


class Top(wiring.Component):
    """The whole MMU the cocotb side simulates.

    Parameters
    ----------
    config : MmuConfig, optional
        All parameters at once; or pass them as keyword arguments (the fields of
        :class:`hdl.config.MmuConfig`: ``ncores``, ``tlb_entries``, ``tlb_ways``, ``replacement``,
        ``superpage_entries``, ``asid_bits``, ``svadu``, ``dev_entries``, ``arbitration`` and the
        ``quirk_*`` switches).

    Members
    -------
    cpu0 … cpu{ncores-1} : the cores' ``req``/``resp``/``inval``/``perf`` ports.
    mem : Out(mem_signature(src=True)), the one memory port.
    dev : the DeviceMmu's ports.

    The submodules are named ``core0`` …, ``dev``, ``arbiter``; each core's TLB entries are the
    registers ``core<i>.tlb.e<j>`` / ``sp<j>``, the device's ``dev.tlb.e<j>``.  With
    ``mmu="cva6"`` each core is a :class:`hdl.cva6.Cva6CoreMmu` (CVA6's MMU behind a shim,
    same ports).
    """

    def __init__(self, config: MmuConfig | None = None, **params):
        if config is None:
            config = MmuConfig(**params)
        elif params:
            config = config.replace(**params)
        if not isinstance(config, MmuConfig):
            raise TypeError(f"Config must be an MmuConfig, not {config!r}")
        self.config = c = config
        if c.mmu == "cva6":
            from .cva6 import Cva6CoreMmu
            self.cores = [Cva6CoreMmu(tlb_entries=c.tlb_entries, asid_bits=c.asid_bits)
                          for _ in range(c.ncores)]
        else:
            self.cores = [self._our_core(c) for _ in range(c.ncores)]
        self.device = DeviceMmu(entries=c.dev_entries, replacement="plru",
                                asid_bits=c.asid_bits,
                                quirk_inval_clear_late=c.quirk_inval_clear_late)
        self.arbiter = MemArbiter(c.ncores, arbitration=c.arbitration)
        members = {f"cpu{i}": Out(_core_signature(c.asid_bits)) for i in range(c.ncores)}
        members["mem"] = Out(mem_signature(src=True))
        members["dev"] = Out(self.device.signature)
        super().__init__(members)

    @staticmethod
    def _our_core(c: MmuConfig) -> CoreMmu:
        return CoreMmu(tlb_entries=c.tlb_entries, tlb_ways=c.tlb_ways,
                       replacement=c.replacement, superpage_entries=c.superpage_entries,
                       asid_bits=c.asid_bits, svadu=c.svadu,
                       quirk_plain_ad_write=c.quirk_plain_ad_write,
                       quirk_fill_after_inval=c.quirk_fill_after_inval,
                       quirk_ad_on_nonpresent=c.quirk_ad_on_nonpresent,
                       quirk_walk_answer_after_inval=c.quirk_walk_answer_after_inval,
                       quirk_inval_clear_late=c.quirk_inval_clear_late)

    def elaborate(self, platform):
        m = Module()
        m.submodules.arbiter = arb = self.arbiter
        m.submodules.dev = dev = self.device
        for i, core in enumerate(self.cores):
            m.submodules[f"core{i}"] = core
            port = getattr(self, f"cpu{i}")
            wiring.connect(m, wiring.flipped(port.req), core.req)
            wiring.connect(m, wiring.flipped(port.inval), core.inval)
            wiring.connect(m, core.resp, wiring.flipped(port.resp))
            wiring.connect(m, core.perf, wiring.flipped(port.perf))
            wiring.connect(m, core.mem, arb.ports[i])
        wiring.connect(m, arb.mem, wiring.flipped(self.mem))
        wiring.connect(m, wiring.flipped(self.dev), dev)
        return m
