"""Simulation-only gateware for the fast path: never part of the MMU.

The fast path puts the memory, the CPU traffic and the access logs into the simulated design,
so that Python wakes only for faults, kernel work and block drains of the logs:

* :class:`simhw.memory.SimMemory`: one word-addressed memory holding page tables and data; it
  answers the MMU's memory port (``hdl.top.Top.mem``) with a configurable latency, the traffic
  engines' data ports, and a software port for the engine's PTE operations (read, write,
  exchange, compare-and-swap), all serialised: one operation at a time, so a software
  operation is atomic with respect to the walkers' compare-and-swap.
* :class:`simhw.ring.LogRing`: a ring of fixed-width records that Python drains in blocks.
* :class:`simhw.traffic.TrafficEngine`: one per core, issues loads, stores and fetches
  through the core's MMU port and does the data access in the memory; stops on a fault.
* :class:`simhw.fasttop.FastTop`: ``hdl.top.Top`` with the above around it.
"""

import hashlib as _hashlib
from pathlib import Path as _Path


def _sources_digest() -> str:
    here = _Path(__file__).resolve().parent
    h = _hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


#: A hash of this package's sources as they were when this process imported it: what its
#: elaborations are made of, even when the files change on disk later (a checkout under a
#: long-running sweep worker), as :data:`hdl.SOURCES_DIGEST` is for the MMU.
SOURCES_DIGEST = _sources_digest()
