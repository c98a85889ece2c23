"""The fast path's host-side codecs (cosim.fasthw): the ring files' hex records decode to the
records' fields, record by record as in blocks, and the bulk push's ``$readmemh`` text lists
every word at its index; a signal read (cosim.signals.peek) names a signal holding X or Z."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cosim.fasthw import RingFile, decode_records, hex_words, memload_text
from cosim.signals import peek
from simhw.abi import RECORD_FIELDS, RECORD_WIDTH, WRITE_RECORD_WIDTH, record_bytes


def _readmemh(text: bytes, size: int) -> np.ndarray:
    """What ``$readmemh`` writes: ``@<hex index>`` moves the address, a value fills it."""
    out = np.zeros(size, dtype=np.uint64)
    addr = 0
    for line in text.decode().split():
        if line.startswith("@"):
            addr = int(line[1:], 16)
        else:
            out[addr] = int(line, 16)
            addr += 1
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memload_text_writes_every_word_at_its_index(seed):
    rng = random.Random(seed)
    idx = np.array(sorted(rng.sample(range(4096), 300) + list(range(600, 700))), dtype=np.int64)
    idx = np.unique(idx)
    vals = np.array([rng.getrandbits(64) for _ in idx], dtype=np.uint64)
    want = np.zeros(4096, dtype=np.uint64)
    want[idx] = vals
    text = memload_text(idx, vals)
    assert np.array_equal(_readmemh(text, 4096), want)
    # one address line per run of consecutive indices
    runs = 1 + int((np.diff(idx) != 1).sum())
    assert text.count(b"@") == runs
    assert memload_text(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)) == b""


def test_hex_records_decode_to_their_fields():
    rng = random.Random(7)
    recs = [{name: rng.getrandbits(w) for name, w in RECORD_FIELDS} for _ in range(50)]
    lines = []
    for r in recs:
        word, pos = 0, 0
        for name, w in RECORD_FIELDS:
            word |= r[name] << pos
            pos += w
        lines.append(f"{word:0{record_bytes(RECORD_WIDTH) - 1}x}\n")
    fields = decode_records(hex_words("".join(lines).encode(), RECORD_WIDTH))
    for name, _ in RECORD_FIELDS:
        assert fields[name].tolist() == [r[name] for r in recs], name
    with pytest.raises(ValueError, match="not hex"):
        hex_words(lines[0].replace(lines[0][3], "x").encode(), RECORD_WIDTH)


def test_ring_file_reads_records_by_position_as_ints_and_as_words(tmp_path):
    rng = random.Random(3)
    width = WRITE_RECORD_WIDTH
    digits = record_bytes(width) - 1
    recs = [rng.getrandbits(width) for _ in range(40)]
    path = tmp_path / "wlog.hex"
    path.write_text("".join(f"{r:0{digits}x}\n" for r in recs))
    ring = RingFile(path, width)
    try:
        assert ring.read_ints(5, 12) == recs[5:12]
        words = ring.read(5, 12)
        assert [int(w[0]) | int(w[1]) << 64 for w in words] == recs[5:12]
        with pytest.raises(RuntimeError, match="holds 0 of the 2 records 40 .. 41"):
            ring.read_ints(40, 42)
    finally:
        ring.close()
    lines = path.read_text().splitlines()
    lines[7] = "z" + lines[7][1:]
    path.write_text("".join(line + "\n" for line in lines))
    ring = RingFile(path, width)
    try:
        with pytest.raises(ValueError, match="record 2 of the block is not hex"):
            ring.read_ints(5, 9)
    finally:
        ring.close()


class _Sim:
    def __init__(self, bits):
        self.bits = bits

    def get_signal_val_binstr(self):
        return self.bits


class _Handle:
    def __init__(self, bits):
        self._handle = _Sim(bits)
        self._path = "fasttop.wlog__wr_ptr"


def test_peek_reads_unsigned_and_names_a_signal_that_is_not_binary():
    assert peek(_Handle("1" * 40)) == (1 << 40) - 1
    assert peek(_Handle("0101")) == 5
    with pytest.raises(ValueError, match=r"fasttop.wlog__wr_ptr holds '01x1'"):
        peek(_Handle("01x1"))


def test_ring_file_reads_after_its_flush_and_flushes_every_stream_when_still_short(tmp_path):
    """A ring file is read after the ring's ``flush`` (the driver's once-a-time-step flush of
    the simulator's streams); records it did not bring to the file are a clear error."""
    width = WRITE_RECORD_WIDTH
    digits = record_bytes(width) - 1
    recs = [random.Random(5).getrandbits(width) for _ in range(4)]
    path = tmp_path / "wlog.hex"
    path.write_text("")
    flushes = []

    def flush():
        flushes.append(1)
        path.write_text("".join(f"{r:0{digits}x}\n" for r in recs))
    ring = RingFile(path, width, flush)
    try:
        assert ring.read_ints(0, 4) == recs and flushes == [1]
        with pytest.raises(RuntimeError, match="holds 4 of the 5 records 0 .. 4"):
            ring.read_ints(0, 5)
    finally:
        ring.close()
