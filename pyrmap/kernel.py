"""The kernel instance: the arch, physical memory, struct pages, quirks, configuration, counters.

One :class:`Kernel` is one machine.  Engine objects reach it through ``.kernel``.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

from .faults import FaultInjector
from .mm_types import PG, Page
from .physmem import FrameAllocator


def _undoes(commit: str, title: str, no_symptom: str = ""):
    """A quirk field that undoes the upstream fix ``commit`` (its subject line ``title``):
    :mod:`pyrmap.profiles` builds the kernel profiles from these.  ``no_symptom`` says why
    the engine cannot show the bug (then no scenario is expected to catch the quirk)."""
    meta = {"fix": commit, "title": title}
    if no_symptom:
        meta["no_symptom"] = no_symptom
    return dataclasses.field(default=False, metadata=meta)


def no_symptom_quirks() -> dict[str, str]:
    """Quirk -> why the engine cannot show its bug (no scenario catches it)."""
    return {f.name: f.metadata["no_symptom"] for f in dataclasses.fields(Quirks)
            if "no_symptom" in f.metadata}


@dataclasses.dataclass
class Quirks:
    """Named switches that re-introduce real historical bugs.  All off by default.

    Each has a test that sees a checker fail when it is on.  A switch declared with
    :func:`_undoes` restores the 2008 code that a later upstream fix changed; the kernel
    profiles (:mod:`pyrmap.profiles`) are made of those, in the order the fixes landed.
    """
    #: 479db0bf408e: page_check_address skips a pte that looks not-present without taking the
    #: pte lock, so page_mkclean misses a pte that is transiently cleared under the lock.
    page_check_address_lockless: bool = _undoes("479db0bf408e",
                                                "mm: dirty page tracking race fix")
    #: d9d332e0874f: anon_vma_prepare adds the VMA to a newly allocated anon_vma's list
    #: without that anon_vma's lock (a recycled anon_vma may be locked by an rmap walk).
    anon_vma_prepare_unlocked: bool = _undoes(
        "d9d332e0874f", "anon_vma_prepare: properly lock even newly allocated anon_vma",
        no_symptom="the unlocked list add hurts only an rmap walk holding the lock of a "
                   "recycled anon_vma (SLAB_DESTROY_BY_RCU); the engine allocates anon_vmas "
                   "fresh, so no walk can hold a new one's lock")
    #: 3ad3d901bbcf: __mmu_notifier_release unlinks the notifier before calling ->release,
    #: so a racing invalidate_page skips it and the page is freed while the secondary maps it.
    notifier_release_unlink_first: bool = _undoes(
        "3ad3d901bbcf", "mm: mmu_notifier: fix freed page still mapped in secondary MMU")
    #: 1cf35d47712d: zap_pte_range flushes the TLB only after dropping the pte lock, so a
    #: concurrent page_mkclean finds no pte while a dirty writable TLB entry is still live.
    zap_flush_after_pte_unlock: bool = _undoes(
        "1cf35d47712d", "mm: split 'tlb_flush_mmu()' into tlb flushing and memory freeing parts")
    #: 5df397dec7c4: zap_pte_range calls page_remove_rmap before its TLB flush, so a
    #: concurrent page_mkclean sees an unmapped page and skips it while a dirty writable TLB
    #: entry is still live.  The fix delays the rmap removal of a dirty file page until after
    #: the flush (which 1cf35d47712d made happen under the pte lock; with that undone there is
    #: no flush under the lock to delay to, and the rmap goes at once).
    zap_rmap_before_flush: bool = _undoes(
        "5df397dec7c4", "mm: delay page_remove_rmap() until after the TLB has been flushed")
    #: A non-atomic read-then-write of a PTE instead of an exchange: a D bit set by a walker
    #: between the read and the write is lost.
    nonatomic_ptep_get_and_clear: bool = False
    #: split_vma gives the upper half the old vm_pgoff instead of advancing it by the pages
    #: below the split: the linear index rmap computes for its pages (vm_start + (index -
    #: vm_pgoff) pages) no longer lands on their PTEs, so try_to_unmap and page_mkclean miss
    #: them.
    split_vma_keeps_pgoff: bool = False

    def enabled(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]


@dataclasses.dataclass
class KernelConfig:
    #: ptep_clear_flush_young flushes the TLB when A was set (x86 2008).  False: clear A only
    #: (x86 since b13b1d2d8692, 2014).
    clear_flush_young_flushes: bool = True
    #: Number of swap slots on the swap device.
    swap_slots: int = 1024
    #: Frames [0, reserved_frames) are never allocated.
    reserved_frames: int = 1
    #: Hand out the most recently freed frame first (makes use-after-free visible at once).
    reuse_freed_first: bool = True


class Kernel:
    """Parameters
    ----------
    arch : pyrmap.arch.Arch
        The MMU the engine runs on; ``arch.mem`` is the physical memory.
    quirks : Quirks, optional
    config : KernelConfig, optional
    """

    def __init__(self, arch, quirks: Optional[Quirks] = None,
                 config: Optional[KernelConfig] = None):
        self.arch = arch
        self.mem = arch.mem
        self.quirks = quirks or Quirks()
        self.config = config or KernelConfig()
        self.frames = FrameAllocator(self.mem.nframes, self.config.reserved_frames,
                                     reuse_first=self.config.reuse_freed_first)
        self.pages = [Page(self, pfn) for pfn in range(self.mem.nframes)]
        self.stats: collections.Counter[str] = collections.Counter()
        self.mms: list = []
        self.files: dict[str, object] = {}
        self._next_asid = 1
        self.swap = None          # pyrmap.swap.SwapInfo, created by pyrmap.swap.swapon
        self.swap_token_mm = None  # the mm holding the swap token (pyrmap.swap.grab_swap_token)
        self.lru = None           # pyrmap.vmscan.Lru, created lazily by the reclaim code
        #: Injected faults (pyrmap.faults); none unless a FaultPlan is given to the System.
        self.faults = FaultInjector()

    def pfn_to_page(self, pfn: int) -> Page:
        return self.pages[pfn]

    def alloc_asid(self) -> int:
        asid = self._next_asid
        self._next_asid += 1
        return asid

    # --- page allocation and reference counting -------------------------------------------

    def alloc_page(self) -> Page:
        """A zeroed frame with refcount 1.  Raises :class:`pyrmap.physmem.OutOfMemory`."""
        pfn = self.frames.alloc()
        self.mem.zero_frame(pfn)
        page = self.pages[pfn]
        if page._count != 0 or page._mapcount != -1:
            raise AssertionError(f"allocated a page still in use: {page!r}")
        page.flags = PG(0)
        page.mapping = None
        page.index = 0
        page.private = None
        page._count = 1
        self.stats["pages_allocated"] += 1
        self.arch.notify("frame_alloc", pfn=pfn)
        return page

    def get_page(self, page: Page) -> None:
        if page._count <= 0:
            raise AssertionError(f"get_page on a free page: {page!r}")
        page._count += 1

    def put_page(self, page: Page) -> None:
        """Drop a reference; the frame returns to the allocator when the last one goes.

        The caller guarantees what the kernel's callers guarantee: no TLB reaches the frame
        once its last reference is dropped.  Checker (b) verifies it through the
        ``frame_free`` notification, which fires before the frame can be reused.
        """
        if page._count <= 0:
            raise AssertionError(f"put_page on a free page: {page!r}")
        page._count -= 1
        if page._count == 0:
            if page._mapcount != -1:
                raise AssertionError(f"freeing a mapped page: {page!r}")
            self.arch.notify("frame_free", pfn=page.pfn, page=page)
            page.flags = PG(0)
            page.mapping = None
            page.private = None
            self.frames.free(page.pfn)
            self.stats["pages_freed"] += 1
