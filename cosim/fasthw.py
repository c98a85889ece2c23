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

import ctypes
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import Lock as CoLock
from cocotb.triggers import RisingEdge, ValueChange

from pyrmap.physmem import WORDS_PER_PAGE, PhysMem
from simhw.abi import (PA_WIDTH, RECORD_FIELDS, RECORD_WIDTH, WRITE_RECORD_WIDTH, SwOp,
                       record_bytes, ring_file)

from .signals import peek

__all__ = ["MirrorMem", "FastHardware", "decode_records", "completed", "RECORD_NAMES",
           "RingFile", "hex_words", "field", "flush_c_streams", "memload_text"]

RECORD_NAMES = tuple(name for name, _ in RECORD_FIELDS)
_FIELDS = []
_pos = 0
for _name, _w in RECORD_FIELDS:
    _FIELDS.append((_name, _pos, _w))
    _pos += _w

#: Hex digit -> value; 255 for a byte that is not a lower-case hex digit (an X or Z bit).
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_LIBC = ctypes.CDLL(None)


def flush_c_streams() -> None:
    """Flush every C stream of this process: the simulator's ``$fwrite`` buffers (it runs in
    this process), so a ring file holds every record pushed so far."""
    _LIBC.fflush(None)


def hex_words(raw: bytes, width: int) -> np.ndarray:
    """Records of ``width`` bits, one hex line each (:mod:`simhw.filelog`), as an
    ``(n, ceil(width / 64))`` uint64 array, least significant word first."""
    line = record_bytes(width)
    digits = line - 1
    n = len(raw) // line
    if n * line != len(raw):
        raise ValueError(f"ring file block of {len(raw)} bytes is not a whole number of "
                         f"{line}-byte records")
    nib = _HEX[np.frombuffer(raw, dtype=np.uint8).reshape(n, line)[:, :digits]]
    if n and int(nib.max()) > 15:
        row = int(np.flatnonzero((nib > 15).any(axis=1))[0])
        raise ValueError(f"ring record {row} of the block is not hex: "
                         f"{raw[row * line:(row + 1) * line - 1]!r} (X or Z bits)")
    nwords = -(-width // 64)
    pad = nwords * 16 - digits
    if pad:
        nib = np.concatenate([np.zeros((n, pad), dtype=np.uint8), nib], axis=1)
    by = (nib[:, 0::2] << 4) | nib[:, 1::2]
    words = np.ascontiguousarray(by).view(">u8").reshape(n, nwords).astype(np.uint64)
    return words[:, ::-1]


def field(words: np.ndarray, lo: int, width: int) -> np.ndarray:
    """Bits ``[lo, lo + width)`` (width <= 64) of each record of :func:`hex_words`."""
    q, r = divmod(lo, 64)
    out = words[:, q] >> np.uint64(r)
    if r and r + width > 64:
        out = out | (words[:, q + 1] << np.uint64(64 - r))
    if width < 64:
        out = out & np.uint64((1 << width) - 1)
    return out


def completed(rec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The records of ``rec`` that are accesses (squashed attempts dropped)."""
    keep = rec["squashed"] == 0
    if keep.all():
        return rec
    return {name: values[keep] for name, values in rec.items()}
def decode_records(words: np.ndarray) -> dict[str, np.ndarray]:
    """Split access-log records (:func:`hex_words` of :data:`RECORD_WIDTH` bits) into one
    numpy array per field (uint64)."""
    return {name: field(words, lo, w) for name, lo, w in _FIELDS}


def memload_text(idx: np.ndarray, vals: np.ndarray) -> bytes:
    """The ``$readmemh`` text writing ``vals`` at word indices ``idx`` (ascending): an
    ``@<index>`` line before each run of consecutive indices, then one 16-digit hex line per
    word (built with numpy: a pushed page is one run)."""
    idx = np.asarray(idx, dtype=np.int64)
    n = len(idx)
    if not n:
        return b""
    lines = np.empty((n, 17), dtype=np.uint8)
    lines[:, :16] = np.frombuffer(np.asarray(vals, dtype=">u8").tobytes().hex().encode(),
                                  dtype=np.uint8).reshape(n, 16)
    lines[:, 16] = ord("\n")
    starts = np.concatenate(([0], np.flatnonzero(np.diff(idx) != 1) + 1, [n])).tolist()
    parts = []
    for lo, hi in zip(starts, starts[1:]):
        parts.append(b"@%x\n" % int(idx[lo]))
        parts.append(lines[lo:hi].tobytes())
    return b"".join(parts)


class RingFile:
    """The records one ring wrote to its file (:mod:`simhw.filelog`), read by position.

    Parameters
    ----------
    path : pathlib.Path
    width : int
        Bits per record.
    """

    def __init__(self, path: Path, width: int, flush: Callable[[], None] = flush_c_streams):
        self.path = path
        self.width = width
        self.line = record_bytes(width)
        self.fd = os.open(path, os.O_RDONLY)
        self.flush = flush

    def read_bytes(self, first: int, end: int) -> bytes:
        """The lines of records ``first .. end - 1`` (ring pointers: the ``k``-th record
        pushed is line ``k``).  ``flush`` runs first: a block read at a drain almost always
        ends with records still in the simulator's C stream buffers.  Should the file still be
        short, every C stream is flushed (:func:`flush_c_streams`) and the block read again."""
        n = end - first
        self.flush()
        raw = os.pread(self.fd, n * self.line, first * self.line)
        if len(raw) != n * self.line:
            flush_c_streams()
            raw = os.pread(self.fd, n * self.line, first * self.line)
        if len(raw) != n * self.line:
            raise RuntimeError(f"{self.path} holds {len(raw) // self.line} of the {n} records "
                               f"{first} .. {end - 1} the ring took")
        return raw

    def read(self, first: int, end: int) -> np.ndarray:
        """Records ``first .. end - 1``, as :func:`hex_words`."""
        return hex_words(self.read_bytes(first, end), self.width)

    def read_ints(self, first: int, end: int) -> list[int]:
        """Records ``first .. end - 1``, each one Python int (for a few records, where
        :func:`hex_words`' array set-up costs more than the decoding)."""
        raw = self.read_bytes(first, end)
        line = self.line
        try:
            return [int(raw[k:k + line - 1], 16) for k in range(0, len(raw), line)]
        except ValueError:
            hex_words(raw, self.width)           # names the record that is not hex
            raise

    def close(self) -> None:
        os.close(self.fd)


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

    def has_pending(self) -> bool:
        """The engine may have changed words since the last :meth:`pending`."""
        return bool(self._dirty)

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
#: A write-log block of at most this many records is decoded record by record.
_FEW = 16
_PA_MASK = (1 << PA_WIDTH) - 1


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
    workdir : pathlib.Path, optional
        Where the simulator writes the ring files (default: the working directory).

    Drives ``sw__req__*``, ``eng<i>__*`` (configuration and control), ``log<i>__rd_ptr``,
    ``wlog__rd_ptr``; samples ``sw__req__ready``, ``sw__resp__*``, ``eng<i>__*`` (status),
    ``log<i>__wr_ptr``, ``wlog__wr_ptr``, ``cycle``, ``event``; reads and writes the array
    ``memory.ram.ram.storage``; reads the rings' records from their files
    (:func:`simhw.fasttop.ring_file`), a block per drain.
    """

    def __init__(self, dut, ncores: int, mem: MirrorMem, *, log_depth: int,
                 wlog_depth: int = 256, workdir: Path | None = None):
        self.dut = dut
        self.ncores = ncores
        self.mem = mem
        self.log_depth = log_depth
        self.wlog_depth = wlog_depth
        where = Path(os.getcwd()) if workdir is None else Path(workdir)
        self.ring_files = [RingFile(where / ring_file(f"log{i}"), RECORD_WIDTH,
                                    self._flush_streams) for i in range(ncores)]
        self.wring_file = RingFile(where / ring_file("wlog"), WRITE_RECORD_WIDTH,
                                   self._flush_streams)
        #: The simulator time step in which the C streams were last flushed.
        self._flushed_at: Optional[int] = None
        #: The software port's request inputs as last driven (handle -> value).
        self._sw_req: dict = {}
        self._wr_ptrs = [getattr(dut, f"log{i}__wr_ptr") for i in range(ncores)]
        self._rd_ptrs = [getattr(dut, f"log{i}__rd_ptr") for i in range(ncores)]
        self._wwr_ptr, self._wrd_ptr = dut.wlog__wr_ptr, dut.wlog__rd_ptr
        self._cycle = dut.cycle
        self._status: dict = {}
        self.load_path = where / ring_file("memload")
        self.pushes = 0
        self._load_seq = 0
        self.rd = [0] * ncores
        self.wrd = 0
        self.words_pushed = 0
        self.records_drained = 0
        self.sw_ops = 0
        #: Every engine configuration input driven so far, port name -> value.
        self.configured: dict[str, int] = {}
        self._sw_lock = CoLock()
        self._resp_rise = RisingEdge(dut.sw__resp__valid)
        self._loaded_change = ValueChange(dut.loaded)

    # --- the engine's memory copy ------------------------------------------------------------

    async def push(self) -> int:
        """Write every word the engine changed into the gateware array, in one bulk write at
        the next clock edge (:meth:`write_words`).  Returns the number of words written.
        Takes the software port's turn, so two host threads' pushes and operations do not
        interleave."""
        if not self.mem.has_pending():
            return 0
        async with self._sw_lock:
            idx, vals = self.mem.pending()
            if not len(idx):
                return 0
            await self._load(memload_text(idx, vals))
            self.words_pushed += len(idx)
            return len(idx)

    async def write_words(self, first: int, values: np.ndarray) -> int:
        """Write ``values`` into the gateware array at word indices ``first ..`` in one bulk
        write at the next clock edge, outside the engine's copy (memory the engine does not
        own, such as a trace's records).  Returns the number of words written."""
        values = np.asarray(values, dtype=np.uint64)
        async with self._sw_lock:
            await self._load(memload_text(first + np.arange(len(values)), values))
            return len(values)

    async def _load(self, text: bytes) -> None:
        # The memory's bulk write: the words go to the file memload.hex, which the array
        # reads ($readmemh) at the first edge after a toggle of ``load``; ``loaded`` follows
        # ``load`` when it has.  cocotb wakes a coroutine on RisingEdge before the simulator
        # has necessarily evaluated that edge's always blocks, so returning after one edge
        # let the next push rewrite the file before this one was read (its words were lost:
        # the ``load`` write is deferred to the step's ReadWrite phase, the file write is
        # not).  Waiting for ``loaded`` makes the file this push's until it is read.
        self._load_seq ^= 1
        self.load_path.write_bytes(text)
        self.dut.load.value = self._load_seq
        while peek(self.dut.loaded) != self._load_seq:
            await self._loaded_change
        self.pushes += 1

    def cycle(self) -> int:
        return peek(self._cycle)

    def _flush_streams(self) -> None:
        # The rings' records are written at clock edges, before this side runs in that time
        # step: one flush of the simulator's C streams per time step serves every ring read
        # in it (a ring file still short is flushed again, RingFile.read_bytes).
        now = get_sim_time("step")
        if now != self._flushed_at:
            flush_c_streams()
            self._flushed_at = now

    # --- software port -------------------------------------------------------------------------

    async def sw_op(self, op: SwOp, addr: int, wdata: int = 0, cmp: int = 0) -> tuple[int, int]:
        """One software-port operation; returns (old value, cycle of its response).  Host
        threads' operations take turns (the port has one request in flight).  On return from
        an operation that wrote (WRITE, XCHG, a CAS that matched), the engine's copy holds every
        write the memory made up to the response, this operation's included, in the memory's
        order (:meth:`drain_writes`)."""
        async with self._sw_lock:
            return await self._sw_op(op, addr, wdata, cmp)

    async def _sw_op(self, op, addr, wdata, cmp):
        d = self.dut
        last = self._sw_req
        for port, value in ((d.sw__req__op, int(op)), (d.sw__req__addr, addr),
                            (d.sw__req__wdata, wdata), (d.sw__req__cmp, cmp)):
            # Only this method drives them: an input that already holds the value is left.
            if last.get(port) != value:
                port.value = value
                last[port] = value
        d.sw__req__valid.value = 1
        # One wake per operation: the request stays valid until the response shows (the memory
        # takes a request only when idle, and it is not idle again before the edge after the
        # response, by which time ``valid`` is low), and the coroutine wakes on the response
        # itself, in the time step of the edge that raised it (its values are that edge's).
        await self._resp_rise
        d.sw__req__valid.value = 0
        self.sw_ops += 1
        if peek(d.sw__resp__err):
            from pyrmap.physmem import BusError
            raise BusError(addr)
        rdata, cycle = peek(d.sw__resp__rdata), peek(self._cycle) - 1
        if op != SwOp.READ and (op != SwOp.CAS or rdata == cmp):
            # The operation's write is in the write log, after every walker write the memory
            # took before it: applying the log up to here leaves the engine's copy of the word
            # equal to the gateware's (applying the operation's value alone would let an
            # earlier walker write, drained later, overwrite it).  An operation that wrote
            # nothing leaves the log for the next drain.
            self.drain_writes()
        return rdata, cycle

    # --- rings -----------------------------------------------------------------------------

    def backlog(self, core: int) -> int:
        """Records in ``core``'s access log not drained yet (from the write pointer, which
        changes only at clock edges, and this side's read pointer)."""
        return (peek(self._wr_ptrs[core]) - self.rd[core]) & 0xFFFF_FFFF

    def write_backlog(self) -> int:
        """Records in the write log not drained yet."""
        return (peek(self._wwr_ptr) - self.wrd) & 0xFFFF_FFFF

    def drain(self, core: int) -> dict[str, np.ndarray] | None:
        """Every record of ``core``'s access log not drained yet, oldest first, decoded
        (:func:`decode_records`), read in one block from the ring's file; the ring's read
        pointer moves past them.  None: nothing new."""
        n = self.backlog(core)
        if not n:
            return None
        rd = self.rd[core]
        rec = decode_records(self.ring_files[core].read(rd, rd + n))
        self.rd[core] = rd + n
        self._rd_ptrs[core].value = (rd + n) & 0xFFFF_FFFF
        self.records_drained += n
        return rec

    def drain_writes(self) -> int:
        """Apply the memory's writes of its MMU and software ports (write log) to the engine's
        copy, in the order they happened.  Returns the number of records applied."""
        n = self.write_backlog()
        if not n:
            return 0
        if n <= _FEW:
            recs = self.wring_file.read_ints(self.wrd, self.wrd + n)
            idx = np.array([(r & _PA_MASK) >> 3 for r in recs], dtype=np.int64)
            vals = np.array([r >> PA_WIDTH for r in recs], dtype=np.uint64)
        else:
            w = self.wring_file.read(self.wrd, self.wrd + n)
            idx = (field(w, 0, PA_WIDTH) >> np.uint64(3)).astype(np.int64)
            vals = field(w, PA_WIDTH, 64)
        self.wrd += n
        self._wrd_ptr.value = self.wrd & 0xFFFF_FFFF
        self.mem.hardware_wrote(idx, vals)
        return n

    # --- engines -----------------------------------------------------------------------------

    def configure(self, core: int, **fields) -> None:
        """Drive engine ``core``'s configuration inputs (``eng<core>__<name>``); the values
        are kept in :attr:`configured` (port name -> value)."""
        for name, value in fields.items():
            port = f"eng{core}__{name}"
            getattr(self.dut, port).value = int(value)
            self.configured[port] = int(value)

    def status(self, core: int, name: str) -> int:
        h = self._status.get((core, name))
        if h is None:
            h = self._status[core, name] = getattr(self.dut, f"eng{core}__{name}")
        return peek(h)

