"""The mm's data structures: struct page, anon_vma, address_space, vm_area_struct, mm_struct.

Field names follow the 2008 kernel.  Every object reaches the :class:`pyrmap.kernel.Kernel` it
belongs to through ``.kernel`` (pages, mappings, anon_vmas) or ``.vm_mm.kernel`` (VMAs); the
kernel holds the arch, physical memory and global state, so the seed's function signatures
(``page_referenced(page, is_locked, mem_cont)``) need no extra argument.
"""

from __future__ import annotations

import enum
import itertools
from typing import TYPE_CHECKING, Optional

from .interval import IntervalIndex
from .pte import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel


class PG(enum.IntFlag):
    """page->flags."""
    locked = 1 << 0
    referenced = 1 << 1
    uptodate = 1 << 2
    dirty = 1 << 3
    lru = 1 << 4
    active = 1 << 5
    writeback = 1 << 6
    swapcache = 1 << 7
    mlocked = 1 << 8
    reclaim = 1 << 9
    pagetable = 1 << 10   # a page-table page (never on the LRU, never in rmap)


# vma->vm_flags
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_LOCKED = 0x00002000
VM_NONLINEAR = 0x00800000

_id = itertools.count()


class Page:
    """struct page for one frame.

    ``_mapcount`` starts at -1 (page_mapcount() = _mapcount + 1); ``_count`` is the reference
    count (page cache, swap cache, each mapping pte, isolation from the LRU, I/O).  ``mapping``
    is an :class:`AnonVma` for anonymous pages (the kernel's ``anon_vma | PAGE_MAPPING_ANON``),
    an :class:`AddressSpace` for file pages, or None.  ``private`` holds the swap entry of a page
    in the swap cache.
    """

    __slots__ = ("kernel", "pfn", "flags", "_mapcount", "_count", "mapping", "index",
                 "private", "_lock", "mem_cgroup", "__weakref__")

    def __init__(self, kernel: "Kernel", pfn: int):
        self.kernel = kernel
        self.pfn = pfn
        self.flags = PG(0)
        self._mapcount = -1
        self._count = 0
        self.mapping: Optional[object] = None
        self.index = 0
        self.private = None
        self._lock = None
        self.mem_cgroup = None

    def __repr__(self) -> str:
        kind = "anon" if PageAnon(self) else ("file" if self.mapping is not None else "-")
        return (f"<Page pfn={self.pfn:#x} {kind} index={self.index} map={self._mapcount + 1} "
                f"ref={self._count} {self.flags!s}>")

    # PG_locked as a sleeping lock from the arch environment.
    @property
    def lock(self):
        if self._lock is None:
            self._lock = self.kernel.arch.new_lock("PG_locked")
        return self._lock

    def test(self, flag: PG) -> bool:
        # As integers: ``&`` of two IntFlags makes a new member through the enum machinery,
        # and the page flags are tested on every page the kernel walks.
        return int.__and__(self.flags, flag) != 0

    def set(self, flag: PG) -> None:
        self.flags |= flag

    def clear(self, flag: PG) -> None:
        self.flags &= ~flag

    def test_and_clear(self, flag: PG) -> bool:
        was = self.test(flag)
        self.flags &= ~flag
        return was

    def test_and_set(self, flag: PG) -> bool:
        was = self.test(flag)
        self.flags |= flag
        return was


def page_mapcount(page: Page) -> int:
    return page._mapcount + 1


def page_mapped(page: Page) -> bool:
    return page._mapcount >= 0


def PageAnon(page: Page) -> bool:
    return isinstance(page.mapping, AnonVma)


def PageLocked(page: Page) -> bool:
    return page.lock.is_locked()


def page_count(page: Page) -> int:
    return page._count


class AnonVma:
    """struct anon_vma (2008): a lock and a flat list of every VMA related by fork or split."""

    def __init__(self, kernel: "Kernel"):
        self.kernel = kernel
        self.id = next(_id)
        self.lock = kernel.arch.new_lock("anon_vma->lock")
        self.head: list[Vma] = []
        self.freed = False
        self.mm_all_locks = False   # the LSB of head.next borrowed by mm_take_all_locks

    def __repr__(self) -> str:
        return f"<AnonVma {self.id} vmas={len(self.head)}{' freed' if self.freed else ''}>"


class AddressSpace:
    """struct address_space of one file: page cache, i_mmap, i_mmap_nonlinear, backing store.

    ``backing`` holds the file's contents on "disk", page by page (pgoff -> bytes of 4 KiB as a
    numpy array); writeback copies a page there, a read fault with a page-cache miss reads it.
    """

    def __init__(self, kernel: "Kernel", name: str, npages: int):
        self.kernel = kernel
        self.name = name
        self.npages = npages
        self.i_mmap: IntervalIndex[Vma] = IntervalIndex()
        self.i_mmap_nonlinear: list[Vma] = []
        self.i_mmap_lock = kernel.arch.new_lock("i_mmap_lock")
        self.page_tree: dict[int, Page] = {}
        self.backing: dict[int, object] = {}
        self.mm_all_locks = False   # AS_MM_ALL_LOCKS
        self.i_mmap_writable = 0
        #: mapping_cap_account_dirty: writeback tracks its dirty pages, so a shared writable
        #: mapping of it is installed read-only (False for shmem).
        self.account_dirty = True

    @property
    def nrpages(self) -> int:
        return len(self.page_tree)

    def __repr__(self) -> str:
        return f"<AddressSpace {self.name!r} pages={self.nrpages}>"


class Vma:
    """struct vm_area_struct: [vm_start, vm_end) of ``vm_mm`` with its flags and backing."""

    def __init__(self, mm: "MmStruct", start: int, end: int, flags: int,
                 pgoff: int = 0, mapping: Optional[AddressSpace] = None):
        if start & (PAGE_SIZE - 1) or end & (PAGE_SIZE - 1) or end <= start:
            raise ValueError(f"Bad VMA range [0x{start:x}, 0x{end:x})")
        self.vm_mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.vm_pgoff = pgoff
        self.vm_file = mapping          # the mapped file's address_space, or None (anonymous)
        self.anon_vma: Optional[AnonVma] = None
        self.vm_private_data = 0        # nonlinear scan cursor (try_to_unmap_file)
        self.id = next(_id)

    @property
    def kernel(self) -> "Kernel":
        return self.vm_mm.kernel

    @property
    def npages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def contains(self, addr: int) -> bool:
        return self.vm_start <= addr < self.vm_end

    def linear_page_index(self, addr: int) -> int:
        return ((addr - self.vm_start) >> PAGE_SHIFT) + self.vm_pgoff

    def __repr__(self) -> str:
        kind = self.vm_file.name if self.vm_file is not None else "anon"
        return (f"<Vma mm={self.vm_mm.asid} [0x{self.vm_start:x}, 0x{self.vm_end:x}) "
                f"{kind} pgoff={self.vm_pgoff} flags={self.vm_flags:#x}>")


class MmStruct:
    """struct mm_struct: one address space (ASID, page-table root, VMAs, locks, counters)."""

    def __init__(self, kernel: "Kernel", asid: int, pgd: int):
        self.kernel = kernel
        self.asid = asid
        self.pgd = pgd                  # pfn of the root page-table page (satp.PPN)
        self.mmap: list[Vma] = []       # sorted by vm_start
        self.mmap_sem = kernel.arch.new_rwsem("mmap_sem")
        self.page_table_lock = kernel.arch.new_lock("page_table_lock")
        self.file_rss = 0
        self.anon_rss = 0
        self.hiwater_rss = 0
        self.cpu_vm_mask: set[int] = set()
        self.mmu_notifier_mm = None     # pyrmap.mmu_notifier.MmuNotifierMm once registered
        self.mm_users = 1
        self.mm_count = 1
        self.on_mmlist = False
        self.mem_cgroup = None
        self.dead = False

    def find_vma(self, addr: int) -> Optional[Vma]:
        """The first VMA with vm_end > addr (the kernel's find_vma), or None."""
        for vma in self.mmap:
            if vma.vm_end > addr:
                return vma
        return None

    def __repr__(self) -> str:
        return f"<MmStruct asid={self.asid} vmas={len(self.mmap)} pgd={self.pgd:#x}>"
