"""Physical memory and the frame allocator.

``PhysMem`` is the one physical memory of the system: the engine reads and writes it directly
for page contents (copy, zero, swap I/O), the arch reads and writes PTEs in it, and under
co-simulation the RTL's memory port is answered from it.  Words are 64-bit little-endian.
"""

from __future__ import annotations

import numpy as np

from .pte import PAGE_SHIFT, PAGE_SIZE

WORDS_PER_PAGE = PAGE_SIZE // 8


class BusError(Exception):
    """An access outside physical memory (the hardware answers it with a bus error)."""

    def __init__(self, paddr: int):
        super().__init__(f"bus error at physical address 0x{paddr:09x}")
        self.paddr = paddr


class PhysMem:
    """``nframes`` 4 KiB frames of 64-bit words, backed by one numpy array.

    Parameters
    ----------
    nframes : int
        Number of frames; physical addresses [0, nframes * 4096) exist, every other address
        answers with :class:`BusError`.
    """

    def __init__(self, nframes: int):
        if not isinstance(nframes, int) or nframes <= 0:
            raise TypeError(f"Frame count must be a positive integer, not {nframes!r}")
        self.nframes = nframes
        self.words = np.zeros(nframes * WORDS_PER_PAGE, dtype=np.uint64)

    @property
    def size(self) -> int:
        return self.nframes * PAGE_SIZE

    def _index(self, paddr: int) -> int:
        if paddr & 7:
            raise ValueError(f"Physical address 0x{paddr:09x} is not 8-byte aligned")
        if not 0 <= paddr < self.size:
            raise BusError(paddr)
        return paddr >> 3

    def contains(self, paddr: int) -> bool:
        return 0 <= paddr < self.size

    def read(self, paddr: int) -> int:
        return int(self.words[self._index(paddr)])

    def write(self, paddr: int, val: int) -> None:
        self.words[self._index(paddr)] = np.uint64(val & 0xFFFF_FFFF_FFFF_FFFF)

    def frame(self, pfn: int) -> np.ndarray:
        """A view of frame ``pfn``'s 512 words."""
        if not 0 <= pfn < self.nframes:
            raise BusError(pfn << PAGE_SHIFT)
        return self.words[pfn * WORDS_PER_PAGE:(pfn + 1) * WORDS_PER_PAGE]

    def zero_frame(self, pfn: int) -> None:
        self.frame(pfn)[:] = 0

    def copy_frame(self, dst: int, src: int) -> None:
        self.frame(dst)[:] = self.frame(src)


class OutOfMemory(Exception):
    """No free frame (the caller decides whether to reclaim and retry)."""


class FrameAllocator:
    """A free list of frames; frames [0, reserved) are never handed out.

    Freed frames go to the tail and allocation takes from the head, so a freed frame is reused
    as late as possible unless ``reuse_first`` is set (tests set it to make use-after-free
    visible at once).
    """

    def __init__(self, nframes: int, reserved: int = 1, reuse_first: bool = False):
        if reserved >= nframes:
            raise ValueError(f"{reserved} reserved frames leave none of {nframes} to allocate")
        from collections import deque
        self.nframes = nframes
        self.reserved = reserved
        self.reuse_first = reuse_first
        self._free = deque(range(reserved, nframes))
        self._is_free = np.zeros(nframes, dtype=bool)
        self._is_free[reserved:] = True

    @property
    def nr_free(self) -> int:
        return len(self._free)

    def alloc(self) -> int:
        if not self._free:
            raise OutOfMemory("no free frame")
        pfn = self._free.popleft()
        self._is_free[pfn] = False
        return pfn

    def free(self, pfn: int) -> None:
        if not self.reserved <= pfn < self.nframes:
            raise ValueError(f"PFN {pfn:#x} is not an allocatable frame")
        if self._is_free[pfn]:
            raise ValueError(f"double free of PFN {pfn:#x}")
        self._is_free[pfn] = True
        if self.reuse_first:
            self._free.appendleft(pfn)
        else:
            self._free.append(pfn)

    def is_free(self, pfn: int) -> bool:
        return bool(self._is_free[pfn])
