"""The MMU gateware (Amaranth 0.5): Tlb, PageWalker, CoreMmu, DeviceMmu, MemArbiter, Top.

Port contract of :class:`Top`: hdl/PORTS.md.  Layouts shared with the testbench:
:mod:`hdl.layouts`.  Verilog: ``python -m hdl.export``.
"""

import hashlib as _hashlib
from pathlib import Path as _Path

from .config import MmuConfig


def _sources_digest() -> str:
    here = _Path(__file__).resolve().parent
    h = _hashlib.sha256()
    for path in sorted(here.glob("*.py")) + [here.parent / "pyrmap" / "pte.py"]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


#: A hash of the gateware's Python sources (``hdl/*.py`` and ``pyrmap/pte.py``) as they were
#: when this process imported the package: what its elaborations are made of, even when the
#: files change on disk later (a checkout under a long-running process).
SOURCES_DIGEST = _sources_digest()

__all__ = ["SOURCES_DIGEST", "MmuConfig", "Top", "Tlb", "PageWalker", "CoreMmu", "DeviceMmu", "MemArbiter"]


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
