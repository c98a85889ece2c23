"""Every checker passes a consistent state and fails a broken one (hand-built fixtures: a
Kernel on SoftArch, an mm and VMAs set up directly, PTEs through the arch)."""

import numpy as np
import pytest

from pyrmap.checkers import Checkers, InvariantViolation, lookup_pte, present_leaves
from pyrmap.kernel import Kernel
from pyrmap.mm_types import (AddressSpace, MmStruct, Vma, VM_MAYREAD, VM_MAYSHARE,
                             VM_MAYWRITE, VM_READ, VM_SHARED, VM_WRITE)
from pyrmap.pagetable import pgd_alloc, pte_alloc
from pyrmap.physmem import PhysMem
from pyrmap.pte import (PAGE_SHARED, PAGE_SIZE, AccessType, FaultKind, _PAGE_D,
                        pfn_pte, pte_wrprotect)
from pyrmap.softarch import SoftArch

VA = 0x40000000
RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE


def make_kernel(nframes=48):
    arch = SoftArch(PhysMem(nframes), 2, seed=0, history=True)
    return Kernel(arch)


def make_mm(kernel):
    mm = MmStruct(kernel, kernel.alloc_asid(), pgd_alloc(kernel))
    kernel.mms.append(mm)
    return mm


def map_anon(kernel, mm, va=VA, npages=1):
    """An anonymous VMA with every page present (what do_anonymous_page leaves)."""
    from pyrmap.rmap import anon_vma_prepare, page_add_new_anon_rmap
    vma = Vma(mm, va, va + npages * PAGE_SIZE, RW)
    mm.mmap.append(vma)
    anon_vma_prepare(vma)
    pages = []
    for i in range(npages):
        addr = va + i * PAGE_SIZE
        page = kernel.alloc_page()
        ptep = pte_alloc(mm, addr)
        kernel.arch.set_pte_at(mm, addr, ptep, pfn_pte(page.pfn, PAGE_SHARED))
        page_add_new_anon_rmap(page, vma, addr)
        pages.append((page, ptep))
    return vma, pages


def map_file(kernel, mm, mapping, va=VA, pgoff=0, npages=1):
    from pyrmap.rmap import page_add_file_rmap
    vma = Vma(mm, va, va + npages * PAGE_SIZE, RW | VM_SHARED | VM_MAYSHARE, pgoff, mapping)
    mm.mmap.append(vma)
    mapping.i_mmap.insert(pgoff, pgoff + npages - 1, vma)
    out = []
    for i in range(npages):
        page = kernel.alloc_page()
        page.mapping, page.index = mapping, pgoff + i
        mapping.page_tree[pgoff + i] = page
        kernel.get_page(page)
        ptep = pte_alloc(mm, va + i * PAGE_SIZE)
        kernel.arch.set_pte_at(mm, va, ptep, pfn_pte(page.pfn, PAGE_SHARED))
        page_add_file_rmap(page)
        out.append((page, ptep))
    return vma, out


@pytest.fixture
def system():
    kernel = make_kernel()
    chk = Checkers(kernel, seed=7, command="python -m pyrmap fuzz --seed 7").install()
    mm = make_mm(kernel)
    kernel.arch.switch_mm(0, mm)
    return kernel, chk, mm


# --- page-table reading ------------------------------------------------------------------------

def test_present_leaves_and_lookup(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm, npages=3)
    leaves = list(present_leaves(kernel.mem, mm.pgd))
    assert [va for va, *_ in leaves] == [VA, VA + PAGE_SIZE, VA + 2 * PAGE_SIZE]
    ptep, val, level = lookup_pte(kernel.mem, mm.pgd, VA + PAGE_SIZE + 8)
    assert ptep == pages[1][1] and level == 0 and val >> 10 == pages[1][0].pfn
    assert lookup_pte(kernel.mem, mm.pgd, 0x1000)[0] is None


def test_present_leaves_of_one_frame_are_the_leaves_that_map_it(system):
    """``maps=pfn`` filters each table whole: the same leaves, in the same order, as a
    filter of the full walk, for every frame (mapped or not); a level-1 leaf (a 2 MiB
    superpage written by hand) maps every frame of its span."""
    kernel, chk, mm = system
    map_anon(kernel, mm, npages=3)
    f = AddressSpace(kernel, "f", 4)
    map_file(kernel, mm, f, va=VA + 0x100000, pgoff=0, npages=2)
    map_file(kernel, mm, f, va=VA + 0x200000, pgoff=0, npages=2)
    mem = kernel.mem
    t1 = int(mem.frame(mm.pgd)[(VA >> 30) & 511]) >> 10
    mem.write((t1 << 12) + (((VA >> 21) & 511) + 8) * 8, (32 << 10) | int(PAGE_SHARED))
    full = list(present_leaves(mem, mm.pgd))
    assert len(full) == 8 and [leaf[3] for leaf in full].count(1) == 1
    for pfn in range(mem.nframes + 8):
        want = [leaf for leaf in full
                if leaf[2] >> 10 <= pfn < (leaf[2] >> 10) + 512 ** leaf[3]]
        assert list(present_leaves(mem, mm.pgd, maps=pfn)) == want, pfn
    assert [leaf[3] for leaf in present_leaves(mem, mm.pgd, maps=32 + 100)] == [1]


# --- (e) rmap completeness -----------------------------------------------------------------

def test_rmap_passes_consistent_anon_and_file(system):
    kernel, chk, mm = system
    map_anon(kernel, mm, npages=2)
    f = AddressSpace(kernel, "f", 4)
    map_file(kernel, mm, f, va=VA + 0x100000, pgoff=1, npages=2)
    chk.check_all()
    assert chk.rmap.checks >= 4 and chk.rmap.violations == 0


def test_rmap_fails_unreachable_anon_pte(system):
    kernel, chk, mm = system
    vma, _ = map_anon(kernel, mm)
    vma.anon_vma.head.remove(vma)
    with pytest.raises(InvariantViolation, match=r"\[rmap\] present pte at 0x40000000 .* not "
                                                 r"reachable") as exc:
        chk.rmap.check()
    assert exc.value.seed == 7 and "python -m pyrmap fuzz --seed 7" in str(exc.value)
    assert any("now:" in h for h in exc.value.history)


def test_rmap_fails_file_pte_outside_i_mmap(system):
    kernel, chk, mm = system
    f = AddressSpace(kernel, "f", 4)
    vma, _ = map_file(kernel, mm, f)
    f.i_mmap.remove(vma)
    with pytest.raises(InvariantViolation, match="not reachable from page->mapping"):
        chk.rmap.check()


def test_rmap_fails_wrong_index(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    pages[0][0].index += 1
    with pytest.raises(InvariantViolation, match="not reachable"):
        chk.rmap.check()


def test_rmap_fails_mapcount_mismatch(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    pages[0][0]._mapcount += 1
    with pytest.raises(InvariantViolation, match=r"mapcount 2 but 1 present ptes map it"):
        chk.rmap.check()


def test_rmap_fails_mapped_page_without_pte(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    kernel.mem.write(pages[0][1], 0)
    with pytest.raises(InvariantViolation, match=r"mapcount 1 but 0 present ptes"):
        chk.rmap.check()


# --- (b) frames ----------------------------------------------------------------------------

def _warm(kernel, core, va, op=AccessType.STORE):
    res = kernel.arch.cpu_access(core, va, op, data=1 if op == AccessType.STORE else None)
    assert res.fault == FaultKind.NONE
    return res


def test_frame_free_with_live_tlb_entry_fails(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    _warm(kernel, 0, VA)
    # Clear the pte and drop the rmap but "forget" the flush: the TLB still reaches the frame.
    kernel.arch.ptep_get_and_clear(mm, VA, ptep)
    page._mapcount = -1
    with pytest.raises(InvariantViolation, match=rf"\[frame\] frame {page.pfn:#x} freed while "
                                                 r"core0 TLB holds"):
        kernel.put_page(page)


def test_unmap_return_leaves_an_exiting_address_space_to_its_exit_and_fails_a_gone_one(system):
    """try_to_unmap returning while a TLB holds an entry of an address space with no users
    left: while its exit is in flight (not torn down yet), the exit's zap holds the page and
    its flush ends the entry, so the check is left to the exit's return; once it is torn down
    the entry is stale."""
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    _warm(kernel, 0, VA)
    kernel.arch.ptep_get_and_clear(mm, VA, ptep)
    mm.mm_users = 0                                     # exit_mmap under way
    deferred = chk.tlb.deferred
    chk.tlb.after_page(page, "unmap", "try_to_unmap")
    assert chk.tlb.deferred == deferred + 1 and not chk.violations
    mm.dead = True                                      # exit_mmap done, the entry left
    with pytest.raises(InvariantViolation, match=r"try_to_unmap of .* returned while core0 "
                                                 r"TLB still holds .* of an address space that "
                                                 r"is gone"):
        chk.tlb.after_page(page, "unmap", "try_to_unmap")


def test_frame_free_after_flush_passes(system):
    kernel, chk, mm = system
    vma, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    _warm(kernel, 0, VA)
    kernel.arch.ptep_get_and_clear(mm, VA, ptep)
    kernel.arch.flush_tlb_page(vma, VA)
    page._mapcount = -1
    kernel.put_page(page)
    assert chk.frame.checks >= 1 and chk.frame.violations == 0


def test_frame_free_while_pte_maps_it_fails(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    page._mapcount = -1     # as if the rmap forgot the pte
    with pytest.raises(InvariantViolation, match=r"freed while pte .* maps it"):
        kernel.put_page(page)


def test_frame_free_while_secondary_maps_it_fails(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    sec = chk.add_secondary(mm)
    assert sec.fault(VA, write=True)
    assert [e.ppn for e in kernel.arch.dev_entries()] == [page.pfn]
    kernel.arch.ptep_get_and_clear(mm, VA, ptep)   # no notifier call: the secondary keeps it
    page._mapcount = -1
    with pytest.raises(InvariantViolation, match=r"freed while device TLB holds"):
        kernel.put_page(page)


def test_secondary_drops_on_invalidate_page(system):
    kernel, chk, mm = system
    vma, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    sec = chk.add_secondary(mm)
    assert sec.fault(VA)
    from pyrmap.mmu_notifier import ptep_clear_flush_notify
    with mm.page_table_lock:
        ptep_clear_flush_notify(vma, VA, ptep)
    assert sec.map == {} and kernel.arch.dev_entries() == []
    assert ("invalidate_page", VA) in sec.calls
    page._mapcount = -1
    kernel.put_page(page)
    assert chk.frame.violations == 0


# --- (a) TLB coherence ---------------------------------------------------------------------

def test_tlb_check_fails_wrprotect_without_flush(system):
    kernel, chk, mm = system
    vma, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    _warm(kernel, 1 - 1, VA)
    chk.tlb.check()                       # coherent: passes
    kernel.arch.ptep_set_wrprotect(mm, VA, ptep)
    with pytest.raises(InvariantViolation, match=r"\[tlb\] core0 TLB holds .* write-protected"):
        chk.tlb.check()


def test_tlb_check_fails_clean_without_flush(system):
    kernel, chk, mm = system
    _, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    _warm(kernel, 0, VA)
    old = kernel.mem.read(ptep)
    assert old & _PAGE_D
    kernel.arch.cmpxchg(ptep, old, old & ~_PAGE_D)
    with pytest.raises(InvariantViolation, match="the pte is clean"):
        chk.tlb.check()


def test_tlb_after_range_unmap(system):
    kernel, chk, mm = system
    vma, pages = map_anon(kernel, mm, npages=2)
    _warm(kernel, 0, VA + PAGE_SIZE, AccessType.LOAD)
    # The entry still matches its pte (a refault after the zap would look the same): fine.
    chk.tlb.after_range(mm, VA, VA + 2 * PAGE_SIZE, "unmap", "munmap")
    kernel.arch.ptep_get_and_clear(mm, VA + PAGE_SIZE, pages[1][1])      # zapped, no flush
    chk.tlb.after_range(mm, VA, VA + PAGE_SIZE, "unmap", "munmap")       # other page: fine
    with pytest.raises(InvariantViolation, match=r"munmap of \[0x40000000, 0x40002000\) .* "
                                                 r"returned while core0 TLB still holds .* "
                                                 r"the pte is not present"):
        chk.tlb.after_range(mm, VA, VA + 2 * PAGE_SIZE, "unmap", "munmap")


def test_tlb_after_range_wrprotect_and_after_page(system):
    kernel, chk, mm = system
    vma, pages = map_anon(kernel, mm)
    page, ptep = pages[0]
    _warm(kernel, 0, VA, AccessType.LOAD)              # a read-only use of a writable pte
    kernel.arch.ptep_set_wrprotect(mm, VA, ptep)
    chk.tlb.after_range(mm, VA, VA + PAGE_SIZE, "wrprotect", "mprotect")
    chk.tlb.after_page(page, "wrprotect", "page_mkclean")
    kernel.arch.flush_tlb_page(vma, VA)
    kernel.arch.set_pte_at(mm, VA, ptep, kernel.mem.read(ptep) | 0x4)   # writable again
    _warm(kernel, 0, VA)                               # a writable, dirty entry
    kernel.arch.ptep_set_wrprotect(mm, VA, ptep)       # downgraded without a flush
    with pytest.raises(InvariantViolation, match=r"page_mkclean of .* returned while core0 TLB "
                                                 r"still holds .* the pte is write-protected"):
        chk.tlb.after_page(page, "wrprotect", "page_mkclean")


# --- (d) notifier pairing ------------------------------------------------------------------

def test_notifier_pairing(system):
    kernel, chk, mm = system
    from pyrmap.mmu_notifier import (mmu_notifier_invalidate_range_end,
                                     mmu_notifier_invalidate_range_start, mmu_notifier_range)
    chk.notifier.attach(mm)
    with mmu_notifier_range(mm, VA, VA + PAGE_SIZE):
        assert chk.notifier.in_window(mm, VA)
    chk.notifier.check()
    mmu_notifier_invalidate_range_start(mm, VA, VA + 2 * PAGE_SIZE)
    with pytest.raises(InvariantViolation, match=r"invalidate_range_start without an end"):
        chk.notifier.check()
    mmu_notifier_invalidate_range_end(mm, VA, VA + 2 * PAGE_SIZE)
    chk.notifier.check()
    with pytest.raises(InvariantViolation, match=r"invalidate_range_end\(0x40000000, "
                                                 r"0x40001000\) .* without a start"):
        mmu_notifier_invalidate_range_end(mm, VA, VA + PAGE_SIZE)


def test_secondary_refuses_fill_inside_window(system):
    kernel, chk, mm = system
    map_anon(kernel, mm)
    sec = chk.add_secondary(mm)
    from pyrmap.mmu_notifier import mmu_notifier_range
    with mmu_notifier_range(mm, VA, VA + PAGE_SIZE):
        assert not sec.fault(VA)
    assert sec.fault(VA)


# --- (c) writeback only when clean and write-protected -----------------------------------------

def test_writeback_check(system):
    from pyrmap.mm_types import PG
    kernel, chk, mm = system
    f = AddressSpace(kernel, "f", 2)
    vma, pages = map_file(kernel, mm, f)
    page, ptep = pages[0]
    _warm(kernel, 0, VA)                  # core0: writable, dirty entry; the pte has W and D
    chk.shadow.writeback_check(page)      # the pte's D bit records the write: fine
    page.set(PG.dirty)
    old = kernel.mem.read(ptep)
    kernel.arch.cmpxchg(ptep, old, pte_wrprotect(old) & ~_PAGE_D)   # cleaned, no flush
    chk.shadow.writeback_check(page)      # dirty: it will be written again, fine
    page.clear(PG.dirty)
    with pytest.raises(InvariantViolation, match=r"writeback of clean .* while core0 TLB holds "
                                                 r"writable .* would leave no trace"):
        kernel.arch.notify("writeback_start", pfn=page.pfn, page=page)


def test_writeback_check_device_entry(system):
    kernel, chk, mm = system
    f = AddressSpace(kernel, "f", 2)
    vma, pages = map_file(kernel, mm, f)
    page, ptep = pages[0]
    sec = chk.add_secondary(mm)
    assert sec.fault(VA, write=True)
    from pyrmap.mm_types import PG
    assert page.test(PG.dirty)            # get_user_pages(write): the page is dirty at once
    chk.shadow.writeback_check(page)      # the pte is writable: page_mkclean would find it
    page.clear(PG.dirty)
    old = kernel.mem.read(ptep)           # cleaned for I/O without invalidating the device
    kernel.arch.cmpxchg(ptep, old, pte_wrprotect(old) & ~_PAGE_D)
    with pytest.raises(InvariantViolation, match=r"device TLB holds writable .* whose pte is "
                                                 r"VR--U--- ppn=0x2"):
        chk.shadow.writeback_check(page)


def test_collecting_mode_keeps_every_violation():
    kernel = make_kernel()
    chk = Checkers(kernel, seed=3, raise_on_violation=False)
    chk.shadow.on_mmap(object(), VA, PAGE_SIZE, 3, False)
    mm = make_mm(kernel)
    chk.shadow.on_mmap(mm, VA, PAGE_SIZE, 3, False)
    chk.shadow.load(mm, VA, 5)
    chk.shadow.load(mm, VA, 6)
    assert len(chk.violations) == 2
    assert [v[3] for v in chk.verdicts() if v[0] == "shadow"] == ["FAIL"]


# --- (c) the shadow model ------------------------------------------------------------------

class _Mm:
    def __init__(self, n):
        self.asid = n
        self.pgd = 0

    def __repr__(self):
        return f"<mm{self.asid}>"


def _shadow():
    kernel = make_kernel()
    return kernel, Checkers(kernel, seed=11).shadow


def test_shadow_private_anon_and_fork_cow():
    kernel, sh = _shadow()
    a, b = _Mm(1), _Mm(2)
    sh.on_mmap(a, VA, 2 * PAGE_SIZE, 3, False)
    assert sh.expected(a, VA) == 0
    sh.store(a, VA, 5)
    sh.on_fork(a, b)
    sh.store(b, VA, 6)
    assert (sh.expected(a, VA), sh.expected(b, VA)) == (5, 6)
    sh.load(a, VA, 5)
    with pytest.raises(InvariantViolation, match=r"lost write: load from 0x40000000 of <mm2> "
                                                 r"returned 0x5, the last write there was 0x6"):
        sh.load(b, VA, 5)


def test_shadow_shared_anon_survives_fork():
    kernel, sh = _shadow()
    a, b = _Mm(1), _Mm(2)
    sh.on_mmap(a, VA, PAGE_SIZE, 3, True)
    sh.on_fork(a, b)
    sh.store(b, VA + 8, 9)
    assert sh.expected(a, VA + 8) == 9


def test_shadow_file_private_cow_and_shared():
    kernel, sh = _shadow()
    f = AddressSpace(kernel, "f", 4)
    f.backing[1] = np.arange(512, dtype=np.uint64)
    sh.register_file(f)
    a, b = _Mm(1), _Mm(2)
    sh.on_mmap(a, VA, 2 * PAGE_SIZE, 3, True, f, 0)
    sh.on_mmap(b, VA, 2 * PAGE_SIZE, 3, False, f, 0)
    assert sh.expected(b, VA + PAGE_SIZE + 16) == 2        # file contents
    sh.store(a, VA + PAGE_SIZE + 16, 77)
    assert sh.expected(b, VA + PAGE_SIZE + 16) == 77       # private, not yet written: sees it
    sh.store(b, VA + PAGE_SIZE, 1)                         # COW
    sh.store(a, VA + PAGE_SIZE + 16, 78)
    assert sh.expected(b, VA + PAGE_SIZE + 16) == 77
    sh.on_madvise_dontneed(b, VA + PAGE_SIZE, PAGE_SIZE)   # back to the file
    assert sh.expected(b, VA + PAGE_SIZE + 16) == 78
    # Backing vs shadow: the shared write is not on "disk" yet.
    with pytest.raises(InvariantViolation, match=r"'f' page 1 word 2 on backing store is 0x2, "
                                                 r"the last write was 0x4e"):
        sh.check_backing(f, [1])
    f.backing[1] = sh._object_page(f, 1).copy()
    sh.check_backing(f, [1])


def test_shadow_mremap_munmap_mprotect_nonlinear():
    kernel, sh = _shadow()
    a = _Mm(1)
    sh.on_mmap(a, VA, 3 * PAGE_SIZE, 3, False)
    sh.store(a, VA + PAGE_SIZE, 4)
    sh.on_mprotect(a, VA, PAGE_SIZE, 1)
    assert sh.regions(a) == [(VA, VA + PAGE_SIZE, 1, False),
                             (VA + PAGE_SIZE, VA + 3 * PAGE_SIZE, 3, False)]
    new = VA + 0x100000
    sh.on_mremap(a, VA, 3 * PAGE_SIZE, new, 4 * PAGE_SIZE)
    assert sh.expected(a, new + PAGE_SIZE) == 4 and sh.expected(a, VA + PAGE_SIZE) is None
    assert sh.regions(a)[-1][1] == new + 4 * PAGE_SIZE
    sh.on_munmap(a, new + PAGE_SIZE, PAGE_SIZE)
    assert sh.expected(a, new + PAGE_SIZE) is None
    with pytest.raises(InvariantViolation, match="completed outside every mapping"):
        sh.store(a, new + PAGE_SIZE, 1)
    f = AddressSpace(kernel, "g", 4)
    sh.on_mmap(a, VA, 2 * PAGE_SIZE, 3, True, f, 0)
    sh.store(a, VA, 10)                                   # pgoff 0
    sh.on_remap_file_pages(a, VA + PAGE_SIZE, PAGE_SIZE, 0)
    assert sh.expected(a, VA + PAGE_SIZE) == 10
    assert sh.shared_pgoffs(a, VA, VA + 2 * PAGE_SIZE, linear=False) == [(f, 0), (f, 0)]
    assert sh.shared_pgoffs(a, VA, VA + 2 * PAGE_SIZE) == [(f, 0), (f, 1)]


def test_shadow_private_copy_taken_at_the_cow_instant():
    """A shared writer changing the file page between the engine's COW copy and the private
    mapping's first store must not be seen by the private mapping."""
    kernel, sh = _shadow()
    f = AddressSpace(kernel, "f", 1)
    sh.register_file(f)
    a, b = _Mm(1), _Mm(2)
    sh.on_mmap(a, VA, PAGE_SIZE, 3, True, f, 0)
    sh.on_mmap(b, VA, PAGE_SIZE, 3, False, f, 0)
    sh.store(a, VA, 1)
    sh.on_cow_copy(b, VA)              # the engine copies the page for b's write fault
    sh.store(a, VA, 2)                 # a shared write lands before b's store retires
    sh.store(b, VA + 8, 3)
    assert (sh.expected(b, VA), sh.expected(a, VA)) == (1, 2)
    sh.on_cow_copy(b, VA)              # after b stored, a stray copy event changes nothing
    assert sh.expected(b, VA + 8) == 3


def _replay_world(seed):
    """Two mms (one forked from the other): a private anonymous mapping, a shared file
    mapping in both, and a private file mapping in one; a random stream of completed stores
    and loads over them, each load returning the word's last store (or its first value)."""
    kernel, sh = _shadow()
    f = AddressSpace(kernel, "f", 4)
    f.backing[0] = np.arange(512, dtype=np.uint64) + 100
    sh.register_file(f)
    a, b = _Mm(1), _Mm(2)
    sh.on_mmap(a, VA, 2 * PAGE_SIZE, 3, False)
    sh.on_mmap(a, VA + 0x10000, PAGE_SIZE, 3, True, f, 0)
    sh.on_fork(a, b)
    sh.on_mmap(b, VA + 0x20000, PAGE_SIZE, 3, False, f, 0)
    rng = np.random.default_rng(seed)
    n = 400
    which = rng.integers(0, 2, n)
    bases = np.array([VA, VA + PAGE_SIZE, VA + 0x10000, VA + 0x20000], dtype=np.uint64)
    region = rng.integers(0, 3 if seed % 2 else 4, n)
    region[(region == 3) & (which == 0)] = 2          # only b maps the private file page
    va = bases[region] + rng.integers(0, 8, n).astype(np.uint64) * np.uint64(8)
    store = rng.random(n) < 0.4
    value = rng.integers(1, 1 << 60, n).astype(np.uint64)
    return kernel, sh, [a, b], which, va, value, store


def _expected_loads(seed):
    """The stream of :func:`_replay_world` with each load's value what the one-by-one
    shadow expects at its turn."""
    _, sh, mms, which, va, value, store = _replay_world(seed)
    for i in range(len(va)):
        if store[i]:
            sh.store(mms[which[i]], int(va[i]), int(value[i]))
        else:
            value[i] = sh.expected(mms[which[i]], int(va[i]))
    return value


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_shadow_replay_judges_a_batch_as_one_by_one(seed):
    """ShadowMemory.replay gives the same pages, counts and verdict as store/load one at a
    time (vectorised on settled pages, one by one when a private file page is not yet
    written: even seeds), and a lost write is reported with the one-by-one report."""
    value = _expected_loads(seed)
    _, one, ones, which, va, _, store = _replay_world(seed)
    for i in range(len(va)):
        if store[i]:
            one.store(ones[which[i]], int(va[i]), int(value[i]))
        else:
            one.load(ones[which[i]], int(va[i]), int(value[i]), 0)
    kernel, sh, mms, *_ = _replay_world(seed)
    at_once = sh.replay(mms, which, va, value, store, np.zeros(len(va), dtype=np.uint64))
    assert at_once == bool(seed % 2)
    assert (sh.loads, sh.stores, sh.checks) == (one.loads, one.stores, one.checks)
    assert one.loads > 0 and one.stores > 0 and one.checks == one.loads
    for m, o in zip(mms, ones):
        for base in (VA, VA + PAGE_SIZE, VA + 0x10000, VA + 0x20000)[:3 + (m is mms[1])]:
            for w in range(8):
                assert sh.expected(m, base + 8 * w) == one.expected(o, base + 8 * w)
        assert sh._mm(m).written == one._mm(o).written
    lost = ~store & (np.arange(len(va)) > len(va) // 2)
    bad = value.copy()
    bad[np.flatnonzero(lost)[0]] ^= np.uint64(1)
    kernel, sh, mms, *_ = _replay_world(seed)
    with pytest.raises(InvariantViolation, match=r"lost write: load from 0x"):
        sh.replay(mms, which, va, bad, store, np.zeros(len(va), dtype=np.uint64))
