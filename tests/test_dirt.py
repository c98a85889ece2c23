"""Checker (f), no unaccounted dirt (pyrmap.checkers.DirtChecker): a page whose data is newer
than its disk copy must be dirty somewhere, and a written file page that left memory must have
its last write on disk.  It passes the engine's states and fails broken ones."""

import numpy as np
import pytest

from pyrmap.checker_registry import CHECKERS
from pyrmap.checkers import InvariantViolation, lookup_pte
from pyrmap.filemap import remove_from_page_cache
from pyrmap.mm_types import PG
from pyrmap.pagemap import lock_page, unlock_page
from pyrmap.pte import _PAGE_D, pte_pfn
from pyrmap.scenario import (MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE, System)

RW = PROT_READ | PROT_WRITE


def shmem_store(seed=1):
    """A shmem page faulted in by a load (writable and clean), then stored to: the walker
    set D by compare-and-swap; PG_dirty is still clear."""
    s = System(seed=seed, nframes=64)
    p = s.new_process()
    a = s.mmap(p, 0, 4096, RW, MAP_SHARED | MAP_ANONYMOUS)
    s.spawn_workload(0, p, [("load", a), ("store", a, 0x55)])
    s.run()
    ptep, pte, _ = lookup_pte(s.kernel.mem, p.pgd, a)
    return s, p, a, ptep, pte


def test_registered_with_title_and_guarantee():
    assert CHECKERS["dirt"].title == "(f) no unaccounted dirt"
    assert "dirty somewhere" in CHECKERS["dirt"].guarantee


def test_a_d_bit_in_the_pte_accounts_for_the_store():
    s, p, a, ptep, pte = shmem_store()
    page = s.kernel.pages[pte_pfn(pte)]
    assert pte & _PAGE_D and not page.test(PG.dirty)
    assert s.checkers.dirt.checks > 0 and s.checkers.dirt.verdict == "PASS"


def test_a_lost_d_bit_fails():
    """The D bit vanishes from the PTE (what a decision taken from a read before the atomic
    clear does): nothing says the page is dirty any more, reclaim would drop the store."""
    s, p, a, ptep, pte = shmem_store()
    s.kernel.mem.write(ptep, pte & ~_PAGE_D)
    with pytest.raises(InvariantViolation, match=r"\[dirt\] lost dirt: .* holds word 0 = 0x55"):
        s.checkers.dirt.check()


def test_pg_dirty_accounts_for_it_too():
    s, p, a, ptep, pte = shmem_store()
    s.kernel.mem.write(ptep, pte & ~_PAGE_D)
    s.kernel.pages[pte_pfn(pte)].set(PG.dirty)
    before = s.checkers.dirt.checks
    s.checkers.dirt.check()
    assert s.checkers.dirt.checks > before and s.checkers.dirt.violations == 0


def test_a_written_file_page_out_of_memory_needs_its_write_on_disk():
    """A shared file page stored to, written back by msync and unmapped: clean and equal to
    its disk copy (passes).  The disk loses the write: the resident page now differs from it
    with nothing dirty (fails); out of memory, the disk copy differs from the last write
    (fails)."""
    s = System(seed=2, nframes=64)
    f = s.create_file("f", 2)
    p = s.new_process()
    a = s.mmap(p, 0, 4096, RW, MAP_SHARED, file=f)
    s.spawn_workload(0, p, [("store", a, 0x77)])
    s.run()
    s.msync(p, a, 4096)
    s.munmap(p, a, 4096)
    s.run()
    page = f.page_tree[0]
    assert not page.test(PG.dirty) and int(np.asarray(f.backing[0])[0]) == 0x77
    s.checkers.dirt.check()
    assert s.checkers.dirt.violations == 0
    f.backing[0] = np.zeros(512, dtype=np.uint64)
    with pytest.raises(InvariantViolation, match=r"\[dirt\] lost dirt"):
        s.checkers.dirt.check()
    lock_page(page)
    remove_from_page_cache(page)
    unlock_page(page)
    with pytest.raises(InvariantViolation, match=r"\[dirt\] lost write: 'f' page 0 is not in "
                                                 r"memory and word 0 on disk is 0x0, the last "
                                                 r"write was 0x77"):
        s.checkers.dirt.check()


def test_the_random_programs_exercise_it():
    from pyrmap.scenario import run_program
    s = run_program(3, 12)
    assert s.checkers.dirt.checks > 0 and s.checkers.dirt.verdict == "PASS"


def test_lost_write_is_not_judged_once_a_writer_bypasses_the_shadow():
    """A device run without the shadow (its stores unknown to it) makes the last write of a
    word unknown: the lost-write part stops judging rather than reporting the device's own
    store as a lost CPU write; declared through the shadow, in one place."""
    from pyrmap.quirk_races import DevSys
    ds = DevSys(0, nframes=30)
    assert ds.s.shadow.complete
    ds.spawn_device(1, shadow=False)
    assert not ds.s.shadow.complete
    ds2 = DevSys(0, nframes=30)
    ds2.spawn_device(1, store_ratio=0.0, shadow=False)
    assert ds2.s.shadow.complete


def test_a_writable_spte_accounts_for_device_stores_after_its_entry_is_gone():
    """A device store through a writable entry filled on a load fault leaves PG_dirty and
    the PTE's D clear: the dirt is the driver's (its writable spte, marked dirty when
    dropped), even after the device TLB lost the entry for capacity.  A driver that forgot
    the spte without marking the page dirty would lose the store: (f) fails."""
    from pyrmap.arch import InvalKind
    from pyrmap.pte import AccessType
    from pyrmap.quirk_races import DevSys
    ds = DevSys(1)
    s = ds.s
    a = s.mmap(ds.p, 0, 4096, RW, MAP_SHARED | MAP_ANONYMOUS)
    ds.drv.access(a, AccessType.LOAD)
    ds.drv.access(a, AccessType.STORE, 0x77)
    ptep, pte, _ = lookup_pte(s.kernel.mem, ds.p.pgd, a)
    page = s.kernel.pages[pte_pfn(pte)]
    assert not pte & _PAGE_D and not page.test(PG.dirty)
    assert s.arch.dev_inval(InvalKind.VA_ASID, a, ds.p.asid) == 1   # evicted, driver unaware
    s.checkers.dirt.check()
    assert s.checkers.dirt.violations == 0
    ds.drv.sptes.clear()
    with pytest.raises(InvariantViolation, match=r"\[dirt\] lost dirt: .* = 0x77"):
        s.checkers.dirt.check()


def test_the_seed_one_program_with_a_device_passes():
    """Seed 1's program lets a device write a shmem page through an entry the device TLB
    then evicts; the store is the driver's to account for (it was reported as lost)."""
    from pyrmap.scenario import run_program
    s = run_program(1, 150)
    assert s.checkers.dirt.checks > 0 and s.checkers.dirt.verdict == "PASS"
