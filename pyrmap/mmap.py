"""Address spaces and their syscalls (mm/mmap.c, mprotect.c, mremap.c, madvise.c, mlock.c,
kernel/fork.c, 2008).

The user-facing entry points take ``mm.mmap_sem`` themselves (for write; madvise for read),
unless the calling thread already holds it for write:

* :func:`mm_alloc`, :func:`file_create`
* :func:`do_mmap` (``MAP_SHARED``/``MAP_PRIVATE``, ``MAP_ANONYMOUS``, ``MAP_FIXED``,
  ``MAP_POPULATE``, ``MAP_LOCKED``), :func:`do_munmap`, :func:`mprotect`, :func:`mremap`,
  :func:`madvise` (``MADV_DONTNEED``), :func:`mlock`, :func:`munlock`
* :func:`dup_mm` (alias :func:`fork`), :func:`exit_mmap`, :func:`mmput`

Bad input raises the errno classes of :mod:`pyrmap.errors` with a message naming the bad
value, *before* anything changes: the VMA list, page tables and counters are as they were.
Deviations from Linux, for that reason: ``mprotect``/``mlock`` check the whole range before
changing any of it (Linux may change a prefix and then fail); an unaligned ``do_mmap`` hint
raises EINVAL.  ``madvise`` keeps Linux's rule: mapped parts are zapped, then ENOMEM reports
the hole.

VMAs live in ``mm.mmap`` sorted by address.  A file VMA is in ``mapping.i_mmap`` keyed by
``[vm_pgoff, vm_pgoff + npages - 1]`` (or in ``i_mmap_nonlinear``); every change of a VMA's
range or membership happens under ``i_mmap_lock`` (file) and ``anon_vma->lock`` (anonymous),
so rmap walkers always see consistent VMAs.  Anonymous shared mappings are backed by a
shmem-like file of their own (``"shmem:<n>"``).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from typing import Iterator, Optional

import numpy as np

from .errors import EACCES, EFAULT, EINVAL, ENOMEM
from .memory import (TASK_SIZE, copy_page_range, free_pgd_range, free_pgtables,
                     lock_nested, make_pages_present,
                     page_prot, pte_modify, tlb_finish_mmu, tlb_gather_mmu, unmap_vmas,
                     vma_wants_writenotify,
                     zap_page_range)
from .mm_types import (VM_EXEC, VM_LOCKED, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE,
                       VM_NONLINEAR, VM_READ, VM_SHARED, VM_WRITE, AddressSpace, MmStruct, Vma)
from .pagetable import pgd_alloc, pte_alloc, pte_lockptr, pte_offset, pte_range
from .physmem import WORDS_PER_PAGE, OutOfMemory
from .pte import (LEVEL_SHIFT, PAGE_SHIFT, PAGE_SIZE, SWP_MIGRATION_READ, _PAGE_W,
                  is_write_migration_entry, pte_dirty, pte_is_swap, pte_none, pte_present,
                  pte_to_swp_entry, swp_entry, swp_entry_to_pte)

__all__ = [
    "PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC", "MAP_SHARED", "MAP_PRIVATE",
    "MAP_FIXED", "MAP_ANONYMOUS", "MAP_LOCKED", "MAP_POPULATE", "MAP_NONBLOCK",
    "MADV_NORMAL", "MADV_DONTNEED", "MREMAP_MAYMOVE", "MREMAP_FIXED", "TASK_SIZE",
    "TASK_UNMAPPED_BASE", "MAX_MAP_COUNT", "mm_alloc", "file_create", "file_word",
    "calc_vm_prot_bits", "get_unmapped_area", "find_vma_intersection", "vma_link",
    "unlink_file_vma", "split_vma", "vma_merge_pair", "find_mergeable_anon_vma", "do_mmap",
    "do_munmap", "mprotect", "change_protection", "mremap", "madvise", "mlock", "munlock",
    "dup_mm", "fork", "exit_mmap", "mmput", "mmget",
]

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_LOCKED = 0x2000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
_MAP_KNOWN = (MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE
              | MAP_NONBLOCK)

MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2

#: Where the bottom-up search for a free range starts (x86: TASK_SIZE / 3).
TASK_UNMAPPED_BASE = 0x20_0000_0000
#: sysctl_max_map_count.
MAX_MAP_COUNT = 65530

_shmem_ids = itertools.count()


def _page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _check_int(what: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    return value


@contextlib.contextmanager
def _mmap_sem(mm: MmStruct, write: bool = True) -> Iterator[None]:
    """Hold mm.mmap_sem (write or read) for the body, unless this thread already holds it
    for write (a syscall called from inside another, e.g. mremap's munmap)."""
    sem = mm.mmap_sem
    if sem.is_write_locked() and sem.held_by_me():
        yield
        return
    if write:
        sem.down_write()
        try:
            yield
        finally:
            sem.up_write()
    else:
        sem.down_read()
        try:
            yield
        finally:
            sem.up_read()


def _check_mm(mm) -> MmStruct:
    if not isinstance(mm, MmStruct):
        raise TypeError(f"mm must be an MmStruct, not {mm!r}")
    if mm.dead:
        raise EINVAL(f"{mm!r} has exited")
    return mm


# ---------------------------------------------------------------------------------------------
# mm_struct and files.

def _alloc_hw_asid(kernel) -> int:
    """An ASID whose hardware tag (its low ``arch.asid_bits`` bits) no live mm uses and is
    not 0.  When the tags wrap around, every TLB is flushed once per reused tag, so no entry
    of a dead mm can hit for the new one (ASID rollover)."""
    bits = kernel.arch.asid_bits
    mask = (1 << bits) - 1
    live = {mm.asid & mask for mm in kernel.mms if not mm.dead}
    if len(live) >= mask:
        raise ENOMEM(f"No free ASID: {len(live)} address spaces use all {mask} hardware tags")
    while True:
        asid = kernel.alloc_asid()
        tag = asid & mask
        if tag and tag not in live:
            break
    if asid > mask:
        kernel.arch.flush_tlb_all()
        kernel.stats["asid_rollover_flushes"] += 1
    return asid


def mm_alloc(kernel) -> MmStruct:
    """A new, empty address space: a fresh ASID (its hardware tag unused by any live mm), a
    zeroed root page table, registered in ``kernel.mms``."""
    mm = MmStruct(kernel, _alloc_hw_asid(kernel), pgd_alloc(kernel))
    kernel.mms.append(mm)
    kernel.stats["mm_alloc"] += 1
    return mm


def mmget(mm: MmStruct) -> MmStruct:
    """Take a user reference (``atomic_inc(&mm->mm_users)``)."""
    if mm.mm_users <= 0:
        raise EINVAL(f"mmget of {mm!r}, which has no users left")
    mm.mm_users += 1
    return mm


def file_word(mapping_or_id, pgoff: int, word: int) -> int:
    """The initial contents of word ``word`` of page ``pgoff`` of a file made by
    :func:`file_create` with ``fill="pattern"``: ``file id << 48 | pgoff << 16 | word``,
    so a test can see which page of which file a load reached."""
    fid = mapping_or_id if isinstance(mapping_or_id, int) else mapping_or_id.file_id
    return (fid << 48) | ((pgoff & 0xFFFF_FFFF) << 16) | word


def file_create(kernel, name: str, npages: int, fill: str = "pattern") -> AddressSpace:
    """A file of ``npages`` pages, registered as ``kernel.files[name]``.

    ``fill`` is ``"pattern"`` (see :func:`file_word`) or ``"zero"``.  Its backing store
    (``mapping.backing``) holds every page, so reads are deterministic.

    Raises
    ------
    EINVAL
        Bad name, size or fill, or a file of that name exists.
    """
    if not isinstance(name, str) or not name:
        raise EINVAL(f"File name must be a non-empty string, not {name!r}")
    if not isinstance(npages, int) or isinstance(npages, bool) or npages <= 0:
        raise EINVAL(f"File size must be a positive number of pages, not {npages!r}")
    if fill not in ("pattern", "zero"):
        raise EINVAL(f"File fill must be 'pattern' or 'zero', not {fill!r}")
    if name in kernel.files:
        raise EINVAL(f"A file named {name!r} already exists")
    mapping = AddressSpace(kernel, name, npages)
    mapping.file_id = len(kernel.files) + 1
    words = np.arange(WORDS_PER_PAGE, dtype=np.uint64)
    for pgoff in range(npages):
        if fill == "zero":
            mapping.backing[pgoff] = np.zeros(WORDS_PER_PAGE, dtype=np.uint64)
        else:
            mapping.backing[pgoff] = np.uint64(file_word(mapping.file_id, pgoff, 0)) + words
    kernel.files[name] = mapping
    return mapping


def _shmem_file(kernel, npages: int) -> AddressSpace:
    while True:
        name = f"shmem:{next(_shmem_ids)}"
        if name not in kernel.files:
            mapping = file_create(kernel, name, npages, fill="zero")
            mapping.account_dirty = False
            return mapping


# ---------------------------------------------------------------------------------------------
# VMA list and rmap membership.

def calc_vm_prot_bits(prot: int) -> int:
    return ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0)
            | (VM_EXEC if prot & PROT_EXEC else 0))


def find_vma_intersection(mm: MmStruct, start: int, end: int) -> Optional[Vma]:
    vma = mm.find_vma(start)
    if vma is not None and vma.vm_start < end:
        return vma
    return None


def _vmas_in(mm: MmStruct, start: int, end: int) -> list[Vma]:
    return [v for v in mm.mmap if v.vm_end > start and v.vm_start < end]


def _neighbours(mm: MmStruct, start: int, end: int) -> tuple[Optional[Vma], Optional[Vma]]:
    prev = nxt = None
    for v in mm.mmap:
        if v.vm_end <= start:
            prev = v
        elif v.vm_start >= end:
            nxt = v
            break
    return prev, nxt


def _mmap_insert(mm: MmStruct, vma: Vma) -> None:
    keys = [v.vm_start for v in mm.mmap]
    i = bisect.bisect_left(keys, vma.vm_start)
    if i > 0 and mm.mmap[i - 1].vm_end > vma.vm_start or \
            i < len(mm.mmap) and mm.mmap[i].vm_start < vma.vm_end:
        raise AssertionError(f"{vma!r} overlaps an existing VMA of {mm!r}")
    mm.mmap.insert(i, vma)


def _file_interval(vma: Vma) -> tuple[int, int]:
    return vma.vm_pgoff, vma.vm_pgoff + vma.npages - 1


def __vma_link_file(vma: Vma) -> None:
    """Caller holds the mapping's i_mmap_lock."""
    mapping = vma.vm_file
    if mapping is None:
        return
    if vma.vm_flags & VM_SHARED:
        mapping.i_mmap_writable += 1
    if vma.vm_flags & VM_NONLINEAR:
        mapping.i_mmap_nonlinear.append(vma)
    else:
        mapping.i_mmap.insert(*_file_interval(vma), vma)


def __remove_shared_vm_struct(vma: Vma) -> None:
    """Caller holds the mapping's i_mmap_lock."""
    mapping = vma.vm_file
    if vma.vm_flags & VM_SHARED:
        mapping.i_mmap_writable -= 1
    if vma.vm_flags & VM_NONLINEAR:
        mapping.i_mmap_nonlinear.remove(vma)
    else:
        mapping.i_mmap.remove(vma)


def unlink_file_vma(vma: Vma) -> None:
    """Take a file VMA off its mapping's rmap (i_mmap or i_mmap_nonlinear) under
    ``i_mmap_lock``.  Does nothing for an anonymous VMA or one already unlinked."""
    mapping = vma.vm_file
    if mapping is None:
        return
    with mapping.i_mmap_lock:
        if vma in mapping.i_mmap or vma in mapping.i_mmap_nonlinear:
            __remove_shared_vm_struct(vma)


@contextlib.contextmanager
def _vma_locks(*vmas: Vma) -> Iterator[None]:
    """i_mmap_lock of the VMAs' file, then their anon_vma's lock (the seed's order)."""
    mapping = next((v.vm_file for v in vmas if v is not None and v.vm_file is not None), None)
    anon_vma = next((v.anon_vma for v in vmas if v is not None and v.anon_vma is not None),
                    None)
    if mapping is not None:
        mapping.i_mmap_lock.acquire()
    try:
        if anon_vma is not None:
            anon_vma.lock.acquire()
        try:
            yield
        finally:
            if anon_vma is not None:
                anon_vma.lock.release()
    finally:
        if mapping is not None:
            mapping.i_mmap_lock.release()


def vma_link(mm: MmStruct, vma: Vma) -> None:
    """Insert ``vma`` into ``mm.mmap``, its file's i_mmap and its anon_vma's list, under the
    rmap locks.  Caller holds mmap_sem for write."""
    from .rmap import __anon_vma_link
    with _vma_locks(vma):
        _mmap_insert(mm, vma)
        __vma_link_file(vma)
        __anon_vma_link(vma)


def _set_range(vma: Vma, start: int, end: int, pgoff: int) -> None:
    """Change a linked VMA's range.  Caller holds the rmap locks (:func:`_vma_locks`)."""
    mapping = vma.vm_file
    relink = (mapping is not None and not vma.vm_flags & VM_NONLINEAR
              and vma in mapping.i_mmap)
    if relink:
        mapping.i_mmap.remove(vma)
    vma.vm_start, vma.vm_end, vma.vm_pgoff = start, end, pgoff
    if relink:
        mapping.i_mmap.insert(*_file_interval(vma), vma)


def _copy_vma_struct(vma: Vma, start: int, end: int, pgoff: int) -> Vma:
    new = Vma(vma.vm_mm, start, end, vma.vm_flags, pgoff, vma.vm_file)
    new.anon_vma = vma.anon_vma
    new.vm_private_data = vma.vm_private_data
    return new


def split_vma(mm: MmStruct, vma: Vma, addr: int, new_below: bool) -> Vma:
    """Split ``vma`` at ``addr``; returns the new VMA: [vm_start, addr) when ``new_below``,
    else [addr, vm_end).  The new VMA shares the anon_vma (linked into its list) and the file
    (linked into i_mmap); both halves change under the rmap locks, so a walker sees either
    the old VMA or both halves.  Caller holds mmap_sem for write."""
    from .rmap import __anon_vma_link
    if not vma.vm_start < addr < vma.vm_end or addr & (PAGE_SIZE - 1):
        raise AssertionError(f"split of {vma!r} at 0x{addr:x}")
    off = (addr - vma.vm_start) >> PAGE_SHIFT
    if mm.kernel.quirks.split_vma_keeps_pgoff:
        off = 0                 # the quirk: the upper half keeps the old vm_pgoff
    with _vma_locks(vma):
        if new_below:
            new = _copy_vma_struct(vma, vma.vm_start, addr, vma.vm_pgoff)
            _set_range(vma, addr, vma.vm_end, vma.vm_pgoff + off)
        else:
            new = _copy_vma_struct(vma, addr, vma.vm_end, vma.vm_pgoff + off)
            _set_range(vma, vma.vm_start, addr, vma.vm_pgoff)
        _mmap_insert(mm, new)
        __vma_link_file(new)
        __anon_vma_link(new)
    mm.kernel.stats["vma_split"] += 1
    return new


def _can_merge(a: Vma, b: Vma) -> bool:
    """``a`` directly before ``b`` and the two can be one VMA."""
    return (a.vm_end == b.vm_start and a.vm_flags == b.vm_flags
            and a.vm_file is b.vm_file and not a.vm_flags & VM_NONLINEAR
            and a.vm_pgoff + a.npages == b.vm_pgoff
            and (a.anon_vma is None or b.anon_vma is None or a.anon_vma is b.anon_vma))


def vma_merge_pair(mm: MmStruct, a: Vma, b: Vma) -> Vma:
    """Make ``a`` swallow the adjacent, compatible ``b`` (vma_adjust with remove_next).
    ``a`` imports ``b``'s anon_vma if it had none.  Caller holds mmap_sem for write."""
    from .rmap import __anon_vma_link, __anon_vma_merge
    if not _can_merge(a, b):
        raise AssertionError(f"cannot merge {a!r} and {b!r}")
    with _vma_locks(a, b):
        if a.anon_vma is None and b.anon_vma is not None:
            a.anon_vma = b.anon_vma
            __anon_vma_link(a)
        _set_range(a, a.vm_start, b.vm_end, a.vm_pgoff)
        if b.vm_file is not None:
            __remove_shared_vm_struct(b)
        if b.anon_vma is not None:
            __anon_vma_merge(a, b)
        mm.mmap.remove(b)
    mm.kernel.stats["vma_merge"] += 1
    return a


def _merge_around(mm: MmStruct, vma: Vma) -> Vma:
    i = mm.mmap.index(vma)
    if i + 1 < len(mm.mmap) and _can_merge(vma, mm.mmap[i + 1]):
        vma_merge_pair(mm, vma, mm.mmap[i + 1])
    if i > 0 and _can_merge(mm.mmap[i - 1], vma):
        vma = vma_merge_pair(mm, mm.mmap[i - 1], vma)
    return vma


def find_mergeable_anon_vma(vma: Vma):
    """An adjacent VMA's anon_vma that ``vma`` may share (anon_vma_prepare): the neighbour
    touches it, maps the same file at the contiguous offset, and differs in flags only by
    what mprotect can change."""
    mm = vma.vm_mm
    try:
        i = mm.mmap.index(vma)
    except ValueError:
        return None
    prot = VM_READ | VM_WRITE | VM_EXEC

    def ok(a: Vma, b: Vma) -> bool:
        return (a.vm_end == b.vm_start and a.vm_file is b.vm_file
                and a.vm_pgoff + a.npages == b.vm_pgoff
                and not (a.vm_flags ^ b.vm_flags) & ~prot)

    if i + 1 < len(mm.mmap):
        near = mm.mmap[i + 1]
        if near.anon_vma is not None and ok(vma, near):
            return near.anon_vma
    if i > 0:
        near = mm.mmap[i - 1]
        if near.anon_vma is not None and ok(near, vma):
            return near.anon_vma
    return None


# ---------------------------------------------------------------------------------------------
# mmap / munmap

def get_unmapped_area(mm: MmStruct, addr: int, length: int) -> int:
    """A free, page-aligned range of ``length`` bytes: the hint ``addr`` if it is free,
    else the lowest gap at or above TASK_UNMAPPED_BASE, else the lowest gap above page 0.

    Raises ENOMEM when no gap is large enough."""
    if addr and addr + length <= TASK_SIZE and find_vma_intersection(mm, addr,
                                                                     addr + length) is None:
        return addr
    for base in (TASK_UNMAPPED_BASE, PAGE_SIZE):
        cur = base
        for v in mm.mmap:
            if v.vm_end <= cur:
                continue
            if v.vm_start >= cur + length:
                break
            cur = v.vm_end
        if cur + length <= TASK_SIZE:
            return cur
    raise ENOMEM(f"No free range of {length:#x} bytes in {mm!r}")


def _check_range(what: str, addr: int, length: int) -> None:
    if addr & (PAGE_SIZE - 1):
        raise EINVAL(f"{what}: address 0x{addr:x} is not page aligned")
    if addr < 0 or addr >= TASK_SIZE or length > TASK_SIZE - addr:
        raise EINVAL(f"{what}: range [0x{addr:x}, 0x{addr + length:x}) is outside the user "
                     f"address space [0, 0x{TASK_SIZE:x})")


def do_mmap(mm: MmStruct, addr: int, length: int, prot: int, flags: int,
            file: Optional[AddressSpace] = None, pgoff: int = 0) -> int:
    """mmap: map ``length`` bytes (rounded up to pages) and return the start address.

    Takes mmap_sem for write.  ``flags`` is MAP_SHARED or MAP_PRIVATE, plus MAP_ANONYMOUS
    (no ``file``) or a ``file`` from :func:`file_create` at page offset ``pgoff``; MAP_FIXED
    maps exactly at ``addr``, unmapping whatever was there first; without it ``addr`` is a
    hint (another free range is chosen when it is taken).  MAP_POPULATE / MAP_LOCKED fault
    the pages in (MAP_LOCKED also sets VM_LOCKED).  The VMA gets VM_MAY{READ,WRITE,EXEC}
    (and VM_SHARED|VM_MAYSHARE when shared); it may be merged with a compatible neighbour.
    No page is mapped until it is touched (unless populated).

    Raises
    ------
    EINVAL
        Zero length, unaligned ``addr``, unknown prot or flag bits, not exactly one of
        MAP_SHARED/MAP_PRIVATE, a file with MAP_ANONYMOUS or neither, a negative ``pgoff``,
        MAP_FIXED outside the user address space.
    ENOMEM
        Length beyond the address space, no free range, too many mappings.
    """
    _check_mm(mm)
    for what, v in (("Address", addr), ("Length", length), ("Protection", prot),
                    ("Flags", flags), ("Page offset", pgoff)):
        _check_int(what, v)
    if length <= 0:
        raise EINVAL(f"mmap: length {length} is not positive")
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
        raise EINVAL(f"mmap: protection {prot:#x} has bits other than PROT_READ, PROT_WRITE "
                     "and PROT_EXEC")
    if flags & ~_MAP_KNOWN:
        raise EINVAL(f"mmap: unknown flags {flags & ~_MAP_KNOWN:#x}")
    if bool(flags & MAP_SHARED) == bool(flags & MAP_PRIVATE):
        raise EINVAL(f"mmap: flags {flags:#x} must have exactly one of MAP_SHARED and "
                     "MAP_PRIVATE")
    if flags & MAP_ANONYMOUS:
        if file is not None:
            raise EINVAL(f"mmap: MAP_ANONYMOUS mapping given file {file.name!r}")
    elif file is None:
        raise EINVAL("mmap: needs a file or MAP_ANONYMOUS")
    elif not isinstance(file, AddressSpace):
        raise TypeError(f"mmap: file must be an AddressSpace, not {file!r}")
    if pgoff < 0:
        raise EINVAL(f"mmap: page offset {pgoff} is negative")
    if addr & (PAGE_SIZE - 1):
        raise EINVAL(f"mmap: address 0x{addr:x} is not page aligned")
    if addr < 0:
        raise EINVAL(f"mmap: address {addr} is negative")
    length = _page_align(length)
    if length > TASK_SIZE:
        raise ENOMEM(f"mmap: length {length:#x} exceeds the user address space "
                     f"({TASK_SIZE:#x} bytes)")
    if flags & MAP_FIXED and (addr >= TASK_SIZE or length > TASK_SIZE - addr):
        raise ENOMEM(f"mmap: MAP_FIXED range [0x{addr:x}, 0x{addr + length:x}) is outside "
                     f"the user address space [0, 0x{TASK_SIZE:x})")
    vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & MAP_SHARED:
        vm_flags |= VM_SHARED | VM_MAYSHARE
    if flags & MAP_LOCKED:
        vm_flags |= VM_LOCKED
    kernel = mm.kernel
    with _mmap_sem(mm):
        if flags & MAP_FIXED:
            splits = sum(1 for v in _vmas_in(mm, addr, addr + length)
                         if v.vm_start < addr or v.vm_end > addr + length)
            if len(mm.mmap) + splits + 1 > MAX_MAP_COUNT:
                raise ENOMEM(f"mmap: {mm!r} has {len(mm.mmap)} mappings, the limit is "
                             f"{MAX_MAP_COUNT}")
        else:
            if len(mm.mmap) + 1 > MAX_MAP_COUNT:
                raise ENOMEM(f"mmap: {mm!r} has {len(mm.mmap)} mappings, the limit is "
                             f"{MAX_MAP_COUNT}")
            addr = get_unmapped_area(mm, addr if addr < TASK_SIZE else 0, length)
        if flags & MAP_FIXED:
            _do_munmap_locked(mm, addr, length)
        mapping = file
        if file is None:
            if flags & MAP_SHARED:
                mapping = _shmem_file(kernel, length >> PAGE_SHIFT)
                pgoff = 0
            else:
                pgoff = addr >> PAGE_SHIFT
        vma = Vma(mm, addr, addr + length, vm_flags, pgoff, mapping)
        vma_link(mm, vma)
        vma = _merge_around(mm, vma)
        kernel.stats["mmap"] += 1
        if flags & (MAP_POPULATE | MAP_LOCKED) and not flags & MAP_NONBLOCK:
            make_pages_present(vma, addr, addr + length)
    return addr


def _do_munmap_locked(mm: MmStruct, start: int, length: int) -> None:
    """do_munmap with mmap_sem held for write and arguments checked (page aligned)."""
    end = start + length
    vmas = _vmas_in(mm, start, end)
    if not vmas:
        return
    splits = (vmas[0].vm_start < start) + (vmas[-1].vm_end > end)
    if len(mm.mmap) + splits > MAX_MAP_COUNT:
        raise ENOMEM(f"munmap: splitting would exceed {MAX_MAP_COUNT} mappings")
    first = vmas[0]
    if first.vm_start < start:
        split_vma(mm, first, start, new_below=True)
    last = _vmas_in(mm, start, end)[-1]
    if last.vm_end > end:
        split_vma(mm, last, end, new_below=False)
    detached = _vmas_in(mm, start, end)
    for v in detached:
        mm.mmap.remove(v)
    prev, nxt = _neighbours(mm, start, end)
    unmap_region(mm, detached, prev, nxt, start, end)
    mm.kernel.stats["munmap_vmas"] += len(detached)
    mm.kernel.arch.notify("returned", op="munmap", kind="unmap", mm=mm, start=start, end=end,
                          page=None)


def unmap_region(mm: MmStruct, vmas: list[Vma], prev: Optional[Vma], nxt: Optional[Vma],
                 start: int, end: int) -> None:
    """Zap the detached ``vmas`` over [start, end), take them off the rmap, free their page
    tables, then flush and free (tlb_finish_mmu)."""
    tlb = tlb_gather_mmu(mm, False)
    try:
        unmap_vmas(tlb, vmas, start, end)
        free_pgtables(tlb, vmas, prev.vm_end if prev is not None else 0,
                      nxt.vm_start if nxt is not None else 0)
    finally:
        tlb_finish_mmu(tlb, start, end)
    _release_shmem(vmas)


def _release_shmem(vmas) -> None:
    """An anonymous shared mapping's object dies with its last mapping: drop its page cache
    and forget the file.  Runs after tlb_finish_mmu (no TLB reaches its pages any more)."""
    from .filemap import truncate_inode_pages
    seen = set()
    for v in vmas:
        f = v.vm_file
        if f is None or id(f) in seen or not f.name.startswith("shmem:"):
            continue
        seen.add(id(f))
        if len(f.i_mmap) or f.i_mmap_nonlinear or f.kernel.files.get(f.name) is not f:
            continue
        truncate_inode_pages(f, 0)
        del f.kernel.files[f.name]
        f.kernel.stats["shmem_released"] += 1


def do_munmap(mm: MmStruct, addr: int, length: int) -> int:
    """munmap: remove every mapping of [addr, addr+length) (length rounded up to pages).

    Takes mmap_sem for write.  VMAs straddling an edge are split; unmapped parts of the
    range are fine.  On return no TLB maps the range and the pages are freed (if that was
    their last reference).  Returns 0.

    Raises
    ------
    EINVAL
        Unaligned ``addr``, length 0, a range outside the user address space.
    """
    _check_mm(mm)
    _check_int("Address", addr)
    _check_int("Length", length)
    if length <= 0:
        raise EINVAL(f"munmap: length {length} is not positive")
    length = _page_align(length)
    _check_range("munmap", addr, length)
    with _mmap_sem(mm):
        _do_munmap_locked(mm, addr, length)
    return 0


# ---------------------------------------------------------------------------------------------
# mprotect

def change_protection(vma: Vma, start: int, end: int, newflags: int) -> int:
    """Rewrite the present PTEs of [start, end) with the protection of ``newflags``.

    Inside ``invalidate_range_start/end``; each present PTE is cleared and set again under
    the pte lock (``ptep_modify_prot_start/commit``), keeping its frame, A and D; a dirty PTE
    of a shared writable mapping stays writable (it is already dirty).  Write migration
    entries become read ones.  The range is flushed after the pte lock is dropped.  Returns
    the number of PTEs changed."""
    mm = vma.vm_mm
    kernel = mm.kernel
    arch = kernel.arch
    from .mmu_notifier import mmu_notifier_range
    from .pgtable_generic import ptep_get_and_clear
    prot = page_prot(newflags, vma.vm_file)
    dirty_accountable = vma_wants_writenotify(newflags, vma.vm_file)
    changed = 0
    with mmu_notifier_range(mm, start, end):
        with pte_lockptr(mm, start):
            for a, ptep in pte_range(mm, start, end):
                old = arch.pte_load(ptep)
                if pte_present(old):
                    ptent = pte_modify(ptep_get_and_clear(mm, a, ptep), prot)
                    if dirty_accountable and pte_dirty(ptent):
                        ptent |= _PAGE_W
                    arch.set_pte_at(mm, a, ptep, ptent)
                    changed += 1
                elif pte_is_swap(old):
                    entry = pte_to_swp_entry(old)
                    if is_write_migration_entry(entry):
                        arch.set_pte_at(mm, a, ptep, swp_entry_to_pte(
                            swp_entry(SWP_MIGRATION_READ, entry.offset)))
                        changed += 1
        arch.flush_tlb_range(vma, start, end)
    kernel.stats["mprotect_ptes"] += changed
    if not newflags & VM_WRITE:
        kind = "wrprotect" if newflags & (VM_READ | VM_EXEC) else "unmap"
        arch.notify("returned", op="mprotect", kind=kind, mm=mm, start=start, end=end,
                    page=None)
    return changed


def _covering(mm: MmStruct, start: int, end: int, what: str) -> list[Vma]:
    """The VMAs covering [start, end) without a hole, or ENOMEM naming the first hole."""
    vmas = _vmas_in(mm, start, end)
    cur = start
    for v in vmas:
        if v.vm_start > cur:
            break
        cur = v.vm_end
    if cur < end:
        raise ENOMEM(f"{what}: [0x{start:x}, 0x{end:x}) is not fully mapped: nothing "
                     f"maps 0x{cur:x}")
    return vmas


def _fixup(mm: MmStruct, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    """Give [start, end) of ``vma`` the flags ``newflags``: split at the edges, set the
    flags, and merge with equal neighbours afterwards (mprotect_fixup/mlock_fixup)."""
    if start > vma.vm_start:
        split_vma(mm, vma, start, new_below=True)
    if end < vma.vm_end:
        split_vma(mm, vma, end, new_below=False)
    vma.vm_flags = newflags
    return vma


def mprotect(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """mprotect: give [start, start+length) protection ``prot``.

    Takes mmap_sem for write.  VMAs are split at the edges of the range and merged with
    equal neighbours afterwards; each changed part runs :func:`change_protection`
    (notifiers, PTE rewrite, TLB flush).  On return no TLB holds a permission the new
    protection lacks.  Returns 0.

    Raises
    ------
    EINVAL
        Unaligned ``start``, bits other than PROT_READ/WRITE/EXEC.
    ENOMEM
        Part of the range is not mapped, or it is outside the user address space.
    EACCES
        A VMA's VM_MAY* flags forbid the protection.
    """
    _check_mm(mm)
    for what, v in (("Address", start), ("Length", length), ("Protection", prot)):
        _check_int(what, v)
    if start & (PAGE_SIZE - 1):
        raise EINVAL(f"mprotect: address 0x{start:x} is not page aligned")
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
        raise EINVAL(f"mprotect: protection {prot:#x} has bits other than PROT_READ, "
                     "PROT_WRITE and PROT_EXEC")
    if length < 0:
        raise EINVAL(f"mprotect: length {length} is negative")
    if length == 0:
        return 0
    end = start + _page_align(length)
    if start < 0 or end > TASK_SIZE:
        raise ENOMEM(f"mprotect: [0x{start:x}, 0x{end:x}) is outside the user address "
                     f"space [0, 0x{TASK_SIZE:x})")
    want = calc_vm_prot_bits(prot)
    rwx = VM_READ | VM_WRITE | VM_EXEC
    with _mmap_sem(mm):
        vmas = _covering(mm, start, end, "mprotect")
        for v in vmas:
            newflags = want | (v.vm_flags & ~rwx)
            if newflags & ~(newflags >> 4) & rwx:
                raise EACCES(f"mprotect: {v!r} may not become {_prot_str(prot)}")
        if len(mm.mmap) + 2 > MAX_MAP_COUNT:
            raise ENOMEM(f"mprotect: splitting would exceed {MAX_MAP_COUNT} mappings")
        for v in vmas:
            newflags = want | (v.vm_flags & ~rwx)
            if newflags == v.vm_flags:
                continue
            s, e = max(start, v.vm_start), min(end, v.vm_end)
            v = _fixup(mm, v, s, e, newflags)
            change_protection(v, s, e, newflags)
        _merge_range(mm, start, end)
    mm.kernel.stats["mprotect"] += 1
    return 0


def _merge_range(mm: MmStruct, start: int, end: int) -> None:
    i = 0
    while i < len(mm.mmap):
        v = mm.mmap[i]
        if v.vm_end >= start and v.vm_start <= end and i + 1 < len(mm.mmap) \
                and mm.mmap[i + 1].vm_start <= end and _can_merge(v, mm.mmap[i + 1]):
            vma_merge_pair(mm, v, mm.mmap[i + 1])
            continue
        i += 1


def _prot_str(prot: int) -> str:
    names = [n for bit, n in ((PROT_READ, "PROT_READ"), (PROT_WRITE, "PROT_WRITE"),
                              (PROT_EXEC, "PROT_EXEC")) if prot & bit]
    return "|".join(names) or "PROT_NONE"


# ---------------------------------------------------------------------------------------------
# mremap

def move_page_tables(vma: Vma, old_addr: int, new_vma: Vma, new_addr: int, length: int) -> int:
    """Move the PTEs of [old_addr, old_addr+length) to ``new_addr`` (move_ptes).

    Inside ``invalidate_range_start/end`` of the old range, under the file's i_mmap_lock (so
    a file rmap walk cannot miss a moving PTE) and the pte lock (old and new are the same
    lock: one mm): each PTE is atomically cleared and stored at the new address; the old
    range is flushed *before* the pte lock is dropped (the fix of CVE-2018-18281).  Returns
    the number of PTEs moved."""
    mm = vma.vm_mm
    arch = mm.kernel.arch
    from .mmu_notifier import mmu_notifier_range
    from .pgtable_generic import ptep_get_and_clear
    # Allocate the destination tables first: pte_alloc takes the pte lock itself.
    step = 1 << LEVEL_SHIFT[1]
    a = old_addr
    while a < old_addr + length:
        if pte_offset(mm, a) is not None:
            lo = new_addr + (a - old_addr)
            hi = min(new_addr + length, lo + step)
            b = lo
            while b < hi:
                pte_alloc(mm, b)
                b = ((b >> LEVEL_SHIFT[1]) + 1) << LEVEL_SHIFT[1]
        a = ((a >> LEVEL_SHIFT[1]) + 1) << LEVEL_SHIFT[1]
    moved = 0
    mapping = vma.vm_file
    with mmu_notifier_range(mm, old_addr, old_addr + length):
        if mapping is not None:
            mapping.i_mmap_lock.acquire()
        try:
            with pte_lockptr(mm, old_addr):
                for a, old_ptep in pte_range(mm, old_addr, old_addr + length):
                    if pte_none(arch.pte_load(old_ptep)):
                        continue
                    pte = ptep_get_and_clear(mm, a, old_ptep)
                    na = new_addr + (a - old_addr)
                    arch.set_pte_at(mm, na, pte_offset(mm, na), pte)
                    moved += 1
                if moved:
                    arch.flush_tlb_range(vma, old_addr, old_addr + length)
        finally:
            if mapping is not None:
                mapping.i_mmap_lock.release()
    mm.kernel.stats["mremap_ptes_moved"] += moved
    return moved


def mremap(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int = 0,
           new_addr: int = 0) -> int:
    """mremap: resize [addr, addr+old_len), moving it if needed and allowed.

    Takes mmap_sem for write.  Shrinking unmaps the tail.  Growing happens in place when the
    range is the end of its VMA and the following space is free; otherwise, with
    MREMAP_MAYMOVE, a new VMA is made elsewhere (at ``new_addr`` with MREMAP_FIXED), the PTEs
    are moved (:func:`move_page_tables`) and the old range is unmapped.  Returns the new
    address.

    Raises
    ------
    EINVAL
        Unknown flags, unaligned addresses, new_len 0, MREMAP_FIXED without MREMAP_MAYMOVE,
        overlapping old and new ranges.
    EFAULT
        [addr, addr+old_len) is not inside one VMA.
    ENOMEM
        Cannot grow in place and MREMAP_MAYMOVE not given, or no room.
    """
    _check_mm(mm)
    for what, v in (("Address", addr), ("Old length", old_len), ("New length", new_len),
                    ("Flags", flags), ("New address", new_addr)):
        _check_int(what, v)
    if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED):
        raise EINVAL(f"mremap: unknown flags {flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED):#x}")
    if addr & (PAGE_SIZE - 1):
        raise EINVAL(f"mremap: address 0x{addr:x} is not page aligned")
    if old_len < 0 or new_len < 0:
        raise EINVAL(f"mremap: negative length ({old_len}, {new_len})")
    old_len = _page_align(old_len)
    new_len = _page_align(new_len)
    if new_len == 0:
        raise EINVAL("mremap: new length is 0")
    if addr >= TASK_SIZE or old_len > TASK_SIZE - addr or new_len > TASK_SIZE:
        raise EINVAL(f"mremap: range [0x{addr:x}, 0x{addr + old_len:x}) is outside the user "
                     "address space")
    if flags & MREMAP_FIXED:
        if not flags & MREMAP_MAYMOVE:
            raise EINVAL("mremap: MREMAP_FIXED needs MREMAP_MAYMOVE")
        if new_addr & (PAGE_SIZE - 1):
            raise EINVAL(f"mremap: new address 0x{new_addr:x} is not page aligned")
        if new_addr >= TASK_SIZE or new_len > TASK_SIZE - new_addr:
            raise EINVAL(f"mremap: new range [0x{new_addr:x}, 0x{new_addr + new_len:x}) is "
                         "outside the user address space")
        if new_addr < addr + old_len and addr < new_addr + new_len:
            raise EINVAL(f"mremap: new range [0x{new_addr:x}, 0x{new_addr + new_len:x}) "
                         f"overlaps the old one [0x{addr:x}, 0x{addr + old_len:x})")
    with _mmap_sem(mm):
        vma = mm.find_vma(addr)
        if vma is None or vma.vm_start > addr or (old_len and vma.vm_end < addr + old_len):
            raise EFAULT(f"mremap: [0x{addr:x}, 0x{addr + old_len:x}) is not inside one "
                         "mapping")
        if old_len == 0:
            raise EINVAL("mremap: old length 0 (duplicating a shared mapping) is not "
                         "supported")
        fixed = bool(flags & MREMAP_FIXED)
        if fixed:
            _do_munmap_locked(mm, new_addr, new_len)
        if old_len >= new_len:
            if old_len > new_len:
                _do_munmap_locked(mm, addr + new_len, old_len - new_len)
            if not fixed or new_addr == addr:
                mm.kernel.stats["mremap_shrink"] += 1
                return addr
            old_len = new_len
            vma = mm.find_vma(addr)
        if not fixed and vma.vm_end == addr + old_len:
            nxt = next((v for v in mm.mmap if v.vm_start >= vma.vm_end), None)
            limit = nxt.vm_start if nxt is not None else TASK_SIZE
            if limit - addr >= new_len:
                with _vma_locks(vma):
                    _set_range(vma, vma.vm_start, addr + new_len, vma.vm_pgoff)
                if vma.vm_flags & VM_LOCKED:
                    make_pages_present(vma, addr + old_len, addr + new_len)
                mm.kernel.stats["mremap_grow_in_place"] += 1
                return addr
        if not flags & MREMAP_MAYMOVE:
            raise ENOMEM(f"mremap: cannot grow [0x{addr:x}, 0x{addr + old_len:x}) to "
                         f"{new_len:#x} bytes in place and MREMAP_MAYMOVE is not set")
        if len(mm.mmap) + 2 > MAX_MAP_COUNT:
            raise ENOMEM(f"mremap: would exceed {MAX_MAP_COUNT} mappings")
        if not fixed:
            new_addr = get_unmapped_area(mm, 0, new_len)
        return _move_vma(mm, vma, addr, old_len, new_len, new_addr)


def _move_vma(mm: MmStruct, vma: Vma, old_addr: int, old_len: int, new_len: int,
              new_addr: int) -> int:
    new_pgoff = vma.vm_pgoff + ((old_addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma = _copy_vma_struct(vma, new_addr, new_addr + new_len, new_pgoff)
    vma_link(mm, new_vma)
    move_page_tables(vma, old_addr, new_vma, new_addr, old_len)
    _do_munmap_locked(mm, old_addr, old_len)
    if new_vma.vm_flags & VM_LOCKED and new_len > old_len:
        make_pages_present(new_vma, new_addr + old_len, new_addr + new_len)
    mm.kernel.stats["mremap_move"] += 1
    return new_addr


# ---------------------------------------------------------------------------------------------
# madvise, mlock

def madvise(mm: MmStruct, start: int, length: int, advice: int) -> int:
    """madvise: MADV_DONTNEED zaps [start, start+length) (anonymous pages are gone, file
    pages are read again on the next touch); MADV_NORMAL/RANDOM/SEQUENTIAL/WILLNEED are
    accepted and do nothing.

    Takes mmap_sem for *read* (it runs concurrently with faults).  For a nonlinear VMA the
    zap leaves file PTEs so the mapping's layout survives.  Returns 0.

    Raises
    ------
    EINVAL
        Unknown advice, unaligned ``start``, negative length, MADV_DONTNEED on a VM_LOCKED
        mapping (nothing is zapped then).
    ENOMEM
        Part of the range is not mapped (the mapped parts were zapped anyway, as in Linux).
    """
    _check_mm(mm)
    for what, v in (("Address", start), ("Length", length), ("Advice", advice)):
        _check_int(what, v)
    if advice not in (MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
                      MADV_DONTNEED):
        raise EINVAL(f"madvise: advice {advice} is not supported (MADV_NORMAL, MADV_RANDOM, "
                     "MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED)")
    if start & (PAGE_SIZE - 1):
        raise EINVAL(f"madvise: address 0x{start:x} is not page aligned")
    if length < 0:
        raise EINVAL(f"madvise: length {length} is negative")
    end = start + _page_align(length)
    if end == start:
        return 0
    if start < 0 or end > TASK_SIZE:
        raise ENOMEM(f"madvise: [0x{start:x}, 0x{end:x}) is outside the user address space")
    hole = None
    with _mmap_sem(mm, write=False):
        vmas = _vmas_in(mm, start, end)
        cur = start
        for v in vmas:
            if v.vm_start > cur and hole is None:
                hole = cur
            cur = v.vm_end
        if cur < end and hole is None:
            hole = cur
        if advice == MADV_DONTNEED:
            for v in vmas:
                if v.vm_flags & VM_LOCKED:
                    raise EINVAL(f"madvise: MADV_DONTNEED on locked mapping {v!r}")
            for v in vmas:
                s, e = max(start, v.vm_start), min(end, v.vm_end)
                if v.vm_flags & VM_NONLINEAR:
                    zap_page_range(v, s, e - s, {"nonlinear_vma": v})
                else:
                    zap_page_range(v, s, e - s)
            mm.kernel.stats["madvise_dontneed"] += 1
    if hole is not None:
        raise ENOMEM(f"madvise: [0x{start:x}, 0x{end:x}) is not fully mapped: nothing maps "
                     f"0x{hole:x}")
    return 0


def _do_mlock(mm: MmStruct, start: int, length: int, on: bool) -> int:
    what = "mlock" if on else "munlock"
    _check_mm(mm)
    _check_int("Address", start)
    _check_int("Length", length)
    if length < 0:
        raise EINVAL(f"{what}: length {length} is negative")
    length = _page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    end = start + length
    if end == start:
        return 0
    if start < 0 or end > TASK_SIZE:
        raise ENOMEM(f"{what}: [0x{start:x}, 0x{end:x}) is outside the user address space")
    with _mmap_sem(mm):
        vmas = _covering(mm, start, end, what)
        if len(mm.mmap) + 2 > MAX_MAP_COUNT:
            raise ENOMEM(f"{what}: splitting would exceed {MAX_MAP_COUNT} mappings")
        for v in vmas:
            newflags = (v.vm_flags | VM_LOCKED) if on else (v.vm_flags & ~VM_LOCKED)
            s, e = max(start, v.vm_start), min(end, v.vm_end)
            if newflags != v.vm_flags:
                v = _fixup(mm, v, s, e, newflags)
            if on:
                make_pages_present(v, s, e)
        _merge_range(mm, start, end)
    mm.kernel.stats[what] += 1
    return 0


def mlock(mm: MmStruct, start: int, length: int) -> int:
    """mlock: set VM_LOCKED on [start, start+length) (rounded out to pages) and fault every
    page in (private writable pages are COW-broken now).  Reclaim leaves locked pages mapped
    (try_to_unmap answers SWAP_FAIL).  Takes mmap_sem for write.  Returns 0.

    Raises ENOMEM when part of the range is not mapped (nothing changes then)."""
    return _do_mlock(mm, start, length, True)


def munlock(mm: MmStruct, start: int, length: int) -> int:
    """munlock: clear VM_LOCKED on the range.  Same rules as :func:`mlock`."""
    return _do_mlock(mm, start, length, False)


# ---------------------------------------------------------------------------------------------
# fork, exit

def dup_mm(oldmm: MmStruct) -> MmStruct:
    """fork: a new mm with a copy of every VMA of ``oldmm`` and of its PTEs (dup_mmap).

    Takes both mmap_sems for write.  Each child VMA joins the parent's anon_vma
    (``anon_vma_link``) and file rmap; VM_LOCKED is not inherited.  ``copy_page_range`` copies
    the PTEs (COW mappings write-protected in both, inside notifier ranges on the parent);
    finally the parent's TLBs are flushed (``flush_tlb_mm``), so on return no core can write
    a page now shared with the child.  Returns the child mm."""
    _check_mm(oldmm)
    kernel = oldmm.kernel
    mm = mm_alloc(kernel)
    failed = None
    oldmm.mmap_sem.down_write()
    try:
        lock_nested(mm.mmap_sem.down_write)
        try:
            _dup_mmap(mm, oldmm)
        except (ENOMEM, OutOfMemory) as exc:
            failed = exc
        finally:
            # Even a failed fork write-protected some parent PTEs: flush them.
            kernel.arch.flush_tlb_mm(oldmm)
            mm.mmap_sem.up_write()
    finally:
        oldmm.mmap_sem.up_write()
    if failed is not None:
        # Tear the half-built child down (its VMAs hold rmap links and page references) by
        # dropping its only user reference, as dup_mm's free_pt does (mmput): its root page
        # table is freed after the mm stopped being live, never while it still is.
        mmput(mm)
        kernel.stats["fork_failed"] += 1
        if isinstance(failed, ENOMEM):
            raise failed
        raise ENOMEM(f"fork: out of memory ({failed})") from failed
    kernel.stats["fork"] += 1
    kernel.arch.notify("returned", op="fork", kind="wrprotect", mm=oldmm, start=0,
                       end=TASK_SIZE, page=None)
    return mm


def _dup_mmap(mm: MmStruct, oldmm: MmStruct) -> None:
    """Copy every VMA and its PTEs; both mmap_sems held for write."""
    from .rmap import anon_vma_link
    for mpnt in list(oldmm.mmap):
        tmp = Vma(mm, mpnt.vm_start, mpnt.vm_end, mpnt.vm_flags & ~VM_LOCKED,
                  mpnt.vm_pgoff, mpnt.vm_file)
        tmp.anon_vma = mpnt.anon_vma
        tmp.vm_private_data = mpnt.vm_private_data
        anon_vma_link(tmp)
        if tmp.vm_file is not None:
            with tmp.vm_file.i_mmap_lock:
                __vma_link_file(tmp)
        mm.mmap.append(tmp)
        if copy_page_range(mm, oldmm, mpnt):
            raise ENOMEM(f"fork: out of memory copying {mpnt!r}")


fork = dup_mm


def exit_mmap(mm: MmStruct) -> None:
    """Tear the address space down.

    ``mmu_notifier_release`` first (secondary MMUs drop everything while the pages are still
    mapped), then every VMA is zapped (``unmap_vmas``, inside notifier ranges, which no one
    hears any more), taken off the rmap with its page tables (``free_pgtables``), the TLBs
    flushed and the pages freed (``tlb_finish_mmu``), and the root page table freed after
    the flush.  The mm leaves ``kernel.mms`` and the swap mmlist.

    As in the kernel, the caller has switched every core away from ``mm`` first (a core
    whose satp still names the freed root would walk a reused frame)."""
    from .mmu_notifier import mmu_notifier_release
    kernel = mm.kernel
    if mm.dead:
        raise EINVAL(f"exit_mmap of {mm!r}, which has already exited")
    mmu_notifier_release(mm)
    with _mmap_sem(mm):
        vmas = list(mm.mmap)
        tlb = tlb_gather_mmu(mm, True)
        try:
            unmap_vmas(tlb, vmas, 0, TASK_SIZE)
            mm.mmap.clear()
            free_pgtables(tlb, vmas, 0, TASK_SIZE)
            free_pgd_range(tlb, 0, TASK_SIZE, 0, TASK_SIZE)     # leftovers of earlier unmaps
            root = kernel.pages[mm.pgd]
            tlb.need_flush = True
            tlb.pages.append(root)
            kernel.stats["pagetable_pages"] -= 1
        finally:
            tlb_finish_mmu(tlb, 0, TASK_SIZE)
        mm.dead = True
    _release_shmem(vmas)
    try:
        from .swap import mmlist_del, put_swap_token
        mmlist_del(mm)
        put_swap_token(mm)
    except ImportError:  # pragma: no cover
        pass
    if mm in kernel.mms:
        kernel.mms.remove(mm)
    kernel.stats["exit_mmap"] += 1
    kernel.arch.notify("returned", op="exit", kind="exit", mm=mm, start=0, end=0, page=None)


def mmput(mm: MmStruct) -> None:
    """Drop a user reference; the last one runs :func:`exit_mmap`."""
    if mm.mm_users <= 0:
        raise EINVAL(f"mmput of {mm!r}, which has no users left")
    mm.mm_users -= 1
    if mm.mm_users == 0:
        exit_mmap(mm)
