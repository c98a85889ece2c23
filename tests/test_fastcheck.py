"""The fast path's log checkers (cosim.fastcheck) on hand-made records: records whose leaf
PTE was settled over their window are judged at once, with the counts of judging them one
by one; a wrong frame among them is reported with the one-by-one report.  An attempt the
engine re-executed is still judged when the MMU answered it after an acknowledgement covering
it, and the windows an invalidation met are counted."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.fastcheck import LogCheckers
from pyrmap.arch import InvalKind
from pyrmap.checkers import Checkers, InvariantViolation, lookup_pte
from pyrmap.kernel import Kernel
from pyrmap.memory import do_page_fault
from pyrmap.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pyrmap.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, MmStruct, Vma
from pyrmap.pagetable import pgd_alloc, pte_alloc
from pyrmap.physmem import PhysMem
from pyrmap.pte import _PAGE_A, _PAGE_D, PAGE_SHARED, AccessType, FaultKind, pfn_pte, pte_pfn
from pyrmap.scenario import System
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


# --- answers after an acknowledgement ----------------------------------------------------


def _unmapped():
    """A mapped, written anonymous page; its PTE cleared at cycle 100 and the page's
    invalidation acknowledged on core 0 at cycle 110."""
    s = System(seed=1, nframes=64)
    mm = s.new_process()
    va = s.mmap(mm, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    do_page_fault(mm, va, AccessType.STORE)
    ptep, pte, _ = lookup_pte(s.kernel.mem, mm.pgd, va)
    logs = LogCheckers(s.checkers, s.kernel.mem)
    logs.pte_changed(ptep, 100, pte, 0)
    s.kernel.mem.write(ptep, 0)
    logs.flushed(0, 110, [(InvalKind.VA_ASID, va, mm.asid)])
    return s, mm, logs, pte_pfn(pte) << 12, va


def _attempt(va, start, done, pa, fault=FaultKind.NONE, hit=0, squashed=1):
    one = {"start": start, "done": done, "va": va + 8, "pa": pa, "data": 0,
           "op": int(AccessType.LOAD), "fault": int(fault), "hit": hit, "squashed": squashed}
    return {k: np.array([v], dtype=np.uint64) for k, v in one.items()}


def test_an_answer_after_the_acknowledgement_through_the_removed_frame_fails():
    s, mm, logs, pa, va = _unmapped()
    with pytest.raises(InvariantViolation) as exc:
        logs.judge(0, _attempt(va, 90, 115, pa + 8), mm, mm.asid, mm.pgd)
    assert exc.value.checker == "tlb" and "after the invalidation acknowledged at cycle 110" \
        in str(exc.value)
    assert logs.counts["walks_across_unmap"] == 1


def test_answers_the_mmu_may_give_pass():
    s, mm, logs, pa, va = _unmapped()
    # answered before the acknowledgement (the engine re-executes it), and a walk made again
    # after it (a page fault on the cleared PTE)
    logs.judge(0, _attempt(va, 90, 105, pa + 8), mm, mm.asid, mm.pgd)
    logs.judge(0, _attempt(va, 90, 140, 0, fault=FaultKind.PAGE), mm, mm.asid, mm.pgd)
    assert not s.checkers.violations
    assert logs.counts["walks_across_unmap"] == 1 and logs.counts["squashed_attempts"] == 2
    # a request taken in the acknowledgement's cycle is counted (the window of a late clear)
    logs.judge(0, _attempt(va, 110, 112, 0, fault=FaultKind.PAGE, squashed=0), mm, mm.asid,
               mm.pgd)
    assert logs.counts["ack_cycle_requests"] == 1 and not s.checkers.violations


def test_a_pte_change_before_the_last_recorded_one_is_refused():
    """The judging reads a PTE history's last entry as its latest change: a change recorded
    out of cycle order is an error, not a silently wrong window."""
    s, mm, logs, pa, va = _unmapped()
    ptep, _, _ = lookup_pte(s.kernel.mem, mm.pgd, va)
    logs.pte_changed(ptep, 100, 0, 0)                 # the same cycle is in order
    with pytest.raises(RuntimeError, match="changed at cycle 99, before its change at cycle 100"):
        logs.pte_changed(ptep, 99, 0, 5)


@pytest.mark.parametrize("svadu", [True, False])
def test_the_golden_walk_tells_a_leaf_without_a_apart_only_where_the_walkers_do_not_set_it(
        svadu):
    """With Svadu the walkers set A and D, so a leaf's answer does not depend on them and the
    walks of a PTE aged and made young again are one; with Svade a clear A faults, so the
    aged value's answer is a page fault whatever the young value's was."""
    kernel, chk, mm, _, frames, pteps = _world()
    logs = LogCheckers(chk, kernel.arch.mem, svadu=svadu)
    young = kernel.arch.mem.read(pteps[0]) | _PAGE_A | _PAGE_D
    old = young & ~_PAGE_A
    load = int(AccessType.LOAD)
    assert logs._golden(mm.pgd, VA, load, pteps[0], young) == (0, frames[0])
    want = (0, frames[0]) if svadu else (int(FaultKind.PAGE), 0)
    assert logs._golden(mm.pgd, VA, load, pteps[0], old) == want
    assert len(logs._walk_keys([young, old, young])) == (1 if svadu else 2)


def test_a_window_judged_before_is_judged_again_once_its_history_changed():
    """A settled window's verdict is kept for the next drain's records of the same window
    only while the PTE's history is the same: once 40 more changes have pruned the value
    the cut saw, the next records of that window are counted not checked, never checked on
    the verdict kept from before."""
    from pyrmap.arch import InvalKind
    kernel, chk, mm, logs, frames, pteps = _world()
    logs.flushed(0, 5, [(InvalKind.ALL, 0, 0)])
    for ptep in pteps:
        val = kernel.arch.mem.read(ptep)
        logs.pte_changed(ptep, 6, val, val)
    logs.judge(0, _records(frames, n=50, t0=10), mm, mm.asid, mm.pgd)
    assert logs.counts["scoreboard_checks"] == 50 == logs.counts["settled"]
    logs.judge(0, _records(frames, n=50, seed=2, t0=300), mm, mm.asid, mm.pgd)
    assert logs.counts["scoreboard_checks"] == 100 and logs.counts["not_checked"] == 0
    for k in range(40):
        for ptep in pteps:
            val = kernel.arch.mem.read(ptep)
            logs.pte_changed(ptep, 600 + k, val, val)
    logs.judge(0, _records(frames, n=50, seed=3, t0=800), mm, mm.asid, mm.pgd)
    assert logs.counts["scoreboard_checks"] == 100 and logs.counts["not_checked"] == 50
    assert not logs.violations
