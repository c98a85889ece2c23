"""The fast path's log checkers (cosim.fastcheck) on hand-made records: records whose leaf
PTE was settled over their window are judged at once, with the counts of judging them one
by one; a wrong frame among them is reported with the one-by-one report."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.fastcheck import LogCheckers
from pyrmap.checkers import Checkers, InvariantViolation
from pyrmap.kernel import Kernel
from pyrmap.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, MmStruct, Vma
from pyrmap.pagetable import pgd_alloc, pte_alloc
from pyrmap.physmem import PhysMem
from pyrmap.pte import PAGE_SHARED, AccessType, pfn_pte
from pyrmap.softarch import SoftArch

VA = 0x40000000


def _world():
    """A kernel with one mm mapping two anonymous pages; the log checkers over its memory."""
    from pyrmap.rmap import anon_vma_prepare, page_add_new_anon_rmap
    kernel = Kernel(SoftArch(PhysMem(48), 2, seed=0, history=True))
    chk = Checkers(kernel, seed=7).install()
    mm = MmStruct(kernel, kernel.alloc_asid(), pgd_alloc(kernel))
    kernel.mms.append(mm)
    vma = Vma(mm, VA, VA + 2 * 4096, VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE)
    mm.mmap.append(vma)
    anon_vma_prepare(vma)
    frames, pteps = [], []
    for i in range(2):
        page = kernel.alloc_page()
        ptep = pte_alloc(mm, VA + i * 4096)
        kernel.arch.set_pte_at(mm, VA + i * 4096, ptep, pfn_pte(page.pfn, PAGE_SHARED))
        page_add_new_anon_rmap(page, vma, VA + i * 4096)
        frames.append(page.pfn)
        pteps.append(ptep)
    return kernel, chk, mm, LogCheckers(chk, kernel.arch.mem), frames, pteps


def _records(frames, n=200, seed=1, t0=10):
    rng = np.random.default_rng(seed)
    page = rng.integers(0, 2, n)
    off = rng.integers(0, 512, n).astype(np.uint64) * np.uint64(8)
    start = np.arange(t0, t0 + 4 * n, 4, dtype=np.uint64)
    return {"start": start, "done": start + np.uint64(2),
            "va": np.uint64(VA) + page.astype(np.uint64) * np.uint64(4096) + off,
            "pa": (np.array(frames, dtype=np.uint64)[page] << np.uint64(12)) + off,
            "op": np.full(n, int(AccessType.LOAD), dtype=np.uint64),
            "fault": np.zeros(n, dtype=np.uint64), "hit": np.ones(n, dtype=np.uint64),
            "data": np.zeros(n, dtype=np.uint64), "squashed": np.zeros(n, dtype=np.uint64)}


def test_settled_records_are_judged_at_once_with_the_same_counts():
    kernel, chk, mm, logs, frames, pteps = _world()
    logs.judge(0, _records(frames), mm, mm.asid, mm.pgd)
    assert logs.counts["scoreboard_checks"] == 200 == logs.counts["settled"]
    assert not logs.violations
    # A PTE change inside the records' window: those records are judged one by one (the
    # window's values are the PTE's old and new value), with the same counts.
    logs.pte_changed(pteps[0], 400, kernel.arch.mem.read(pteps[0]),
                     kernel.arch.mem.read(pteps[0]))
    logs.judge(0, _records(frames, seed=2), mm, mm.asid, mm.pgd)
    assert logs.counts["scoreboard_checks"] == 400 and 200 < logs.counts["settled"] < 400
    assert not logs.violations


def test_a_wrong_frame_among_settled_records_gets_the_one_by_one_report():
    kernel, chk, mm, logs, frames, pteps = _world()
    rec = _records(frames)
    bad = int(np.flatnonzero(rec["va"] < np.uint64(VA + 4096))[5])
    rec["pa"][bad] = (np.uint64(frames[1]) << np.uint64(12)) | (rec["pa"][bad] & np.uint64(0xFFF))
    with pytest.raises(InvariantViolation, match=rf"core 0: LOAD of 0x{int(rec['va'][bad]):x} "
                                                 rf"\(asid {mm.asid}\) began at cycle "
                                                 rf"{int(rec['start'][bad])}.*the RTL answered "
                                                 rf"PA 0x{frames[1]:06x}"):
        logs.judge(0, rec, mm, mm.asid, mm.pgd)
    assert logs.counts["settled"] < 200


def test_an_invalidation_before_the_records_is_their_cut_and_one_among_them_is_judged_one_by_one():
    from pyrmap.arch import InvalKind
    kernel, chk, mm, logs, frames, pteps = _world()
    logs.flushed(0, 5, [(InvalKind.ALL, 0, 0)])          # before every record began
    logs.judge(0, _records(frames), mm, mm.asid, mm.pgd)
    assert logs.counts["settled"] == 200 == logs.counts["stale_checks"] == chk.tlb.checks
    # Acknowledged while the next records run: the records of its page are judged one by
    # one (those begun before it have an older cut than those begun after), the same counts.
    logs.flushed(0, 2000, [(InvalKind.VA, VA, 0)])
    logs.judge(0, _records(frames, seed=3, t0=1800), mm, mm.asid, mm.pgd)
    assert logs.counts["scoreboard_checks"] == 400 == logs.counts["stale_checks"]
    assert 200 < logs.counts["settled"] < 400 and not logs.violations
