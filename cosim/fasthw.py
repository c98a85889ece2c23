"""Drivers of the fast path's simulation-only gateware (``simhw.fasttop.FastTop``).

* :class:`MirrorMem` is the engine's :class:`~pyrmap.physmem.PhysMem` on the fast path.  The
  gateware memory is the one the hardware uses; the engine's copy is kept equal to it in both
  directions: what the engine writes (page tables, zeroed and copied frames, swap-in data) is
  pushed into the gateware array before the next software-port operation and before the
  engines resume (frames the engine touched are compared with the last pushed copy, word by
  word); what the hardware writes (stores in the access logs, the walkers' A/D updates in the
  write log) is applied to the engine's copy when the logs are drained, which happens before
  every software-port operation, so the engine never reads a stale word of a frame it owns.
* :class:`FastHardware` drives FastTop's software port, engine controls and rings, and reads
  and writes the storage arrays through the simulator (an instant, between two edges).

Public API: :class:`MirrorMem`, :class:`FastHardware`, :func:`decode_records`,
:func:`completed`.
"""

from __future__ import annotations

import numpy as np
from cocotb.triggers import Lock as CoLock
from cocotb.triggers import RisingEdge

from pyrmap.physmem import WORDS_PER_PAGE, PhysMem
from simhw.memory import SwOp
from simhw.traffic import RECORD_FIELDS

__all__ = ["MirrorMem", "FastHardware", "decode_records", "completed", "RECORD_NAMES"]

RECORD_NAMES = tuple(name for name, _ in RECORD_FIELDS)
_SHIFTS = []
_pos = 0
for _name, _w in RECORD_FIELDS:
    _SHIFTS.append((_name, _pos, (1 << _w) - 1))
    _pos += _w


def decode_records(words: list[int]) -> dict[str, np.ndarray]:
    """Split packed access-log records into one numpy array per field (uint64)."""
    out = {}
    for name, shift, mask in _SHIFTS:
        out[name] = np.fromiter(((w >> shift) & mask for w in words), dtype=np.uint64,
                                count=len(words))
    return out


def completed(rec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The records of ``rec`` that are accesses (squashed attempts dropped)."""
    keep = rec["squashed"] == 0
    if keep.all():
        return rec
    return {name: values[keep] for name, values in rec.items()}


class MirrorMem(PhysMem):
    """A PhysMem that knows which of its words the gateware does not hold yet.

    ``synced`` is the engine's knowledge of the gateware array; :meth:`pending` returns (and
    forgets) the words the engine changed since; :meth:`hardware_wrote` applies words the
    hardware wrote to both copies.
    """

    def __init__(self, nframes: int):
        super().__init__(nframes)
        self.synced = self.words.copy()
        self._dirty: set[int] = set()

    def write(self, paddr: int, val: int) -> None:
        super().write(paddr, val)
        self._dirty.add(paddr >> 12)

    def frame(self, pfn: int) -> np.ndarray:
        # A view the caller may write through: compare the frame at the next push.
        self._dirty.add(pfn)
        return super().frame(pfn)

    def pending(self) -> tuple[np.ndarray, np.ndarray]:
        """(word indices, values) the engine changed since the last call, now marked pushed."""
        if not self._dirty:
            return _EMPTY, _EMPTY
        idx_parts = []
        for pfn in sorted(self._dirty):
            lo = pfn * WORDS_PER_PAGE
            a = self.words[lo:lo + WORDS_PER_PAGE]
            b = self.synced[lo:lo + WORDS_PER_PAGE]
            diff = np.flatnonzero(a != b)
            if diff.size:
                idx_parts.append(diff + lo)
        self._dirty.clear()
        if not idx_parts:
            return _EMPTY, _EMPTY
        idx = np.concatenate(idx_parts)
        vals = self.words[idx]
        self.synced[idx] = vals
        return idx, vals

    def hardware_wrote(self, idx: np.ndarray, vals: np.ndarray) -> None:
        """The hardware wrote ``vals`` at word indices ``idx`` (in order; later wins)."""
        if len(idx):
            self.words[idx] = vals
            self.synced[idx] = vals


_EMPTY = np.zeros(0, dtype=np.uint64)


class FastHardware:
    """FastTop's simulation-only ports, seen from the scheduler.

    Parameters
    ----------
    dut : cocotb handle of ``fasttop``
    ncores : int
    mem : MirrorMem
    log_depth : int
        Slots of each access-log ring.
    wlog_depth : int
        Slots of the write-log ring.

    Drives ``sw__req__*``, ``eng<i>__*`` (configuration and control), ``log<i>__rd_ptr``,
    ``wlog__rd_ptr``; samples ``sw__req__ready``, ``sw__resp__*``, ``eng<i>__*`` (status),
    ``log<i>__wr_ptr``, ``wlog__wr_ptr``, ``cycle``, ``event``; reads and writes the arrays
    ``memory.ram.ram.storage``, ``ring<i>.ram.ram.storage``, ``wring.ram.ram.storage``.
    """

    def __init__(self, dut, ncores: int, mem: MirrorMem, *, log_depth: int,
                 wlog_depth: int = 256):
        self.dut = dut
        self.ncores = ncores
        self.mem = mem
        self.log_depth = log_depth
        self.wlog_depth = wlog_depth
        self.array = dut.memory.ram.ram.storage
        self.ring_arrays = [getattr(dut, f"ring{i}").ram.ram.storage for i in range(ncores)]
        self.wring_array = dut.wring.ram.ram.storage
        self.rd = [0] * ncores
        self.wrd = 0
        self.words_pushed = 0
        self.records_drained = 0
        self.sw_ops = 0
        self.clk = dut.clk
        self._sw_lock = CoLock()

    # --- the engine's memory copy ------------------------------------------------------------

    def push(self) -> int:
        """Write every word the engine changed into the gateware array (now).  Returns the
        number of words written."""
        idx, vals = self.mem.pending()
        arr = self.array
        for i, v in zip(idx.tolist(), vals.tolist()):
            arr[i].value = v
        self.words_pushed += len(idx)
        return len(idx)

    def push_all(self) -> None:
        """Write the whole engine copy (at the start: the gateware array starts zeroed)."""
        arr = self.array
        for i in np.flatnonzero(self.mem.words).tolist():
            arr[i].value = int(self.mem.words[i])
        self.mem.synced[:] = self.mem.words
        self.mem.pending()

    def cycle(self) -> int:
        return int(self.dut.cycle.value)

    # --- software port -------------------------------------------------------------------------

    async def sw_op(self, op: SwOp, addr: int, wdata: int = 0, cmp: int = 0) -> tuple[int, int]:
        """One software-port operation; returns (old value, cycle of its response).  Host
        threads' operations take turns (the port has one request in flight)."""
        async with self._sw_lock:
            return await self._sw_op(op, addr, wdata, cmp)

    async def _sw_op(self, op, addr, wdata, cmp):
        d = self.dut
        d.sw__req__op.value = int(op)
        d.sw__req__addr.value = addr
        d.sw__req__wdata.value = wdata
        d.sw__req__cmp.value = cmp
        d.sw__req__valid.value = 1
        while True:
            await RisingEdge(self.clk)
            if int(d.sw__req__ready.value):
                break
        d.sw__req__valid.value = 0
        while True:
            await RisingEdge(self.clk)
            if int(d.sw__resp__valid.value):
                break
        self.sw_ops += 1
        if int(d.sw__resp__err.value):
            from pyrmap.physmem import BusError
            raise BusError(addr)
        return int(d.sw__resp__rdata.value), int(d.cycle.value) - 1

    # --- rings -----------------------------------------------------------------------------

    def drain(self, core: int) -> list[int]:
        """Every record of ``core``'s access log not drained yet, oldest first (raw words);
        the ring's read pointer moves past them."""
        d = self.dut
        wr = int(getattr(d, f"log{core}__wr_ptr").value)
        rd = self.rd[core]
        if wr == rd:
            return []
        arr = self.ring_arrays[core]
        depth = self.log_depth
        words = [int(arr[k % depth].value) for k in range(rd, wr)]
        self.rd[core] = wr
        getattr(d, f"log{core}__rd_ptr").value = wr & 0xFFFF_FFFF
        self.records_drained += len(words)
        return words

    def drain_writes(self) -> int:
        """Apply the walkers' memory writes (write log) to the engine's copy."""
        d = self.dut
        wr = int(d.wlog__wr_ptr.value)
        if wr == self.wrd:
            return 0
        arr = self.wring_array
        idx, vals = [], []
        for k in range(self.wrd, wr):
            w = int(arr[k % self.wlog_depth].value)
            idx.append((w & ((1 << 56) - 1)) >> 3)
            vals.append(w >> 56)
        self.wrd = wr
        d.wlog__rd_ptr.value = wr & 0xFFFF_FFFF
        self.mem.hardware_wrote(np.array(idx, dtype=np.int64), np.array(vals, dtype=np.uint64))
        return len(idx)

    # --- engines -----------------------------------------------------------------------------

    def configure(self, core: int, **fields) -> None:
        for name, value in fields.items():
            getattr(self.dut, f"eng{core}__{name}").value = int(value)

    def status(self, core: int, name: str) -> int:
        return int(getattr(self.dut, f"eng{core}__{name}").value)

