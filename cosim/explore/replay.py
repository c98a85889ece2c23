"""A recorded trace as a workload: its VMAs in an engine mm, its accesses through the MMU.

The program's address space is rebuilt in an mm of the engine (:meth:`TraceReplay.map_into`:
one private anonymous ``MAP_FIXED`` mapping per VMA of the trace, writable where the program
stored), so every first touch is a page fault the engine serves, and reclaim, writeback and
migration act on the trace's pages like on any other.  The accesses then replay:

* on the **fast path**, by the traffic engines' ``Mode.TRACE``: :meth:`TraceReplay.records`
  are the engine's 64-bit records (the access's word address ``va & ~7`` as the offset from
  ``base = 0`` in a window of ``2**38`` bytes, the access type in bits [1:0]), written into
  the gateware memory above the engine's frames (:meth:`TraceReplay.memory_layout`,
  :func:`write_records`), and :meth:`TraceReplay.engine_fields` configures an engine to
  replay them (wrapping after the last one);
* on the **golden model** (``SoftArch``) or the step path, as ``(AccessType, va)`` pairs for
  a :class:`pyrmap.workload.CpuWorkload` (:meth:`TraceReplay.accesses`).

The replay is word-granular: an access is one word access at ``va & ~7`` (the traffic engine
issues 8-byte words), so an access that straddles a page boundary touches its first page
only; lackey's ``M`` (load and store) replays as a store.  The models' page stream of the
same replay is :meth:`TraceReplay.pages`; the MPKI denominator, :meth:`TraceReplay.
instructions`.

Public API: :class:`TraceReplay`, :func:`write_records`, :data:`SPAN_LOG2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pyrmap.memory import TASK_SIZE
from pyrmap.mmap import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE
from pyrmap.pte import AccessType

from .trace import Trace, TraceOp, load

__all__ = ["TraceReplay", "write_records", "SPAN_LOG2", "MAP_FLAGS"]

#: The traffic engine's window for a trace: ``[0, 2**38)``, the Sv39 user half.
SPAN_LOG2 = TASK_SIZE.bit_length() - 1
#: How each VMA of a trace is mapped.
MAP_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
_WORD = ~np.uint64(7)


@dataclass(frozen=True)
class TraceReplay:
    """A loaded :class:`~cosim.explore.trace.Trace`, ready to replay.

    Parameters
    ----------
    trace : Trace
    """
    trace: Trace

    def __post_init__(self):
        if len(self.trace) == 0:
            raise ValueError("a trace with no accesses cannot be replayed")

    @classmethod
    def load(cls, path) -> "TraceReplay":
        return cls(load(path))

    def __len__(self) -> int:
        return len(self.trace)

    # --- the stream --------------------------------------------------------------------------

    def ops(self) -> np.ndarray:
        """The :class:`~pyrmap.pte.AccessType` of each access (``MODIFY`` is a ``STORE``)."""
        op = self.trace.op.astype(np.uint64)
        op[self.trace.op == TraceOp.MODIFY] = AccessType.STORE
        return op

    def _indices(self, accesses: int) -> np.ndarray:
        if accesses < 0:
            raise ValueError(f"accesses must be at least 0, not {accesses}")
        return np.arange(accesses, dtype=np.int64) % len(self.trace)

    def vaddrs(self, accesses: int) -> np.ndarray:
        """The word addresses of the first ``accesses`` replayed accesses (wrapping)."""
        return (self.trace.va & _WORD)[self._indices(accesses)]

    def pages(self, accesses: int) -> np.ndarray:
        """The 4 KiB page numbers of the first ``accesses`` replayed accesses, for the models
        (:mod:`cosim.explore.models`)."""
        return (self.vaddrs(accesses) >> np.uint64(12)).astype(np.int64)

    def instructions(self, accesses: int) -> int:
        """Instructions the program executed for its first ``accesses`` replayed accesses
        (wrapping: whole passes count the whole trace's instructions)."""
        n = len(self.trace)
        passes, rest = divmod(accesses, n)
        return passes * self.trace.instructions + int(self.trace.gap[:rest].sum(dtype=np.int64))

    def accesses(self, count: int) -> Iterator[tuple[AccessType, int]]:
        """``(AccessType, va)`` of the first ``count`` replayed accesses, for a
        :class:`pyrmap.workload.CpuWorkload`."""
        idx = self._indices(count)
        va = (self.trace.va & _WORD)[idx].tolist()
        op = self.ops()[idx].tolist()
        return ((AccessType(o), a) for o, a in zip(op, va))

    # --- the engine's side -------------------------------------------------------------------

    def map_into(self, system, mm) -> list[int]:
        """Map every VMA of the trace into ``mm`` through ``system``
        (:class:`pyrmap.scenario.System`): private anonymous memory at the trace's addresses,
        read-only where the program only loaded.  Returns the mapped addresses."""
        out = []
        for v in self.trace.vmas:
            out.append(system.mmap(mm, v.start, v.end - v.start, v.prot, MAP_FLAGS))
        return out

    # --- the fast path's side ----------------------------------------------------------------

    def records(self) -> np.ndarray:
        """The traffic engine's ``Mode.TRACE`` records, one per access (uint64)."""
        return (self.trace.va & _WORD) | self.ops()

    def record_frames(self) -> int:
        """4 KiB frames the records occupy."""
        return -(-len(self.trace) * 8 // 4096)

    def memory_layout(self, total_frames: int, min_engine_frames: int = 64) -> tuple[int, int]:
        """Where the records go in a memory of ``total_frames`` frames: at the top.  Returns
        ``(engine_frames, trace_base)``: the engine owns frames ``[0, engine_frames)``, the
        records start at physical address ``trace_base``.

        Raises
        ------
        ValueError
            The records leave the engine fewer than ``min_engine_frames`` frames.
        """
        need = self.record_frames()
        engine = total_frames - need
        if engine < min_engine_frames:
            raise ValueError(f"a trace of {len(self.trace)} accesses needs {need} frames of "
                             f"records; a memory of {total_frames} frames leaves the engine "
                             f"{engine}, fewer than {min_engine_frames}")
        return engine, engine << 12

    def engine_fields(self, trace_base: int, limit: int) -> dict:
        """The traffic engine's configuration (``FastHardware.configure(core, **fields)``)
        to replay the records at ``trace_base`` until ``limit`` accesses completed."""
        from simhw.abi import Mode
        if trace_base & 7:
            raise ValueError(f"trace_base must be word aligned, not 0x{trace_base:x}")
        return {"mode": Mode.TRACE, "base": 0, "span_log2": SPAN_LOG2, "trace_base": trace_base,
                "trace_len": len(self.trace), "limit": limit}


async def write_records(hw, trace_base: int, records: np.ndarray) -> int:
    """Write ``records`` into the gateware memory of ``hw`` (a
    :class:`cosim.fasthw.FastHardware`) from ``trace_base`` on, in one bulk write.  Returns
    the words written."""
    return await hw.write_words(trace_base >> 3, records)
