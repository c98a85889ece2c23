"""The MMU gateware (Amaranth 0.5): Tlb, PageWalker, CoreMmu, DeviceMmu, MemArbiter, Top.

Port contract of :class:`Top`: hdl/PORTS.md.  Layouts shared with the testbench:
:mod:`hdl.layouts`.  Verilog: ``python -m hdl.export``.
"""

from .config import MmuConfig

__all__ = ["MmuConfig", "Top", "Tlb", "PageWalker", "CoreMmu", "DeviceMmu", "MemArbiter"]


def __getattr__(name):
    # Lazy, so `import hdl.config` / `hdl.layouts` do not elaborate anything.
    if name == "Top":
        from .top import Top
        return Top
    if name == "Tlb":
        from .tlb import Tlb
        return Tlb
    if name == "PageWalker":
        from .walker import PageWalker
        return PageWalker
    if name == "CoreMmu":
        from .core import CoreMmu
        return CoreMmu
    if name == "DeviceMmu":
        from .device import DeviceMmu
        return DeviceMmu
    if name == "MemArbiter":
        from .arbiter import MemArbiter
        return MemArbiter
    raise AttributeError(f"module 'hdl' has no attribute {name!r}")
