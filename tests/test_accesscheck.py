"""Checker (a)'s cycle-level rule (cosim.accesscheck.judge_access), fed histories by hand:
frame, permission, the A/D state an access relies on, superpages, stale-but-legal, and an
incomplete history reported as an error."""

from __future__ import annotations

from cosim.accesscheck import Inval, PteChange, judge_access, translate
from pyrmap.pte import (_PAGE_A, _PAGE_D, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X,
                        AccessType)

ASID = 3
VA = 0x4000_0000
RW = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U | _PAGE_A | _PAGE_D


def pte(pfn: int, bits: int = RW) -> int:
    return (pfn << 10) | bits


def judge(changes, now, invals, *, start=100, pfn=0x20, op=AccessType.STORE, level=0,
          complete=True, va=VA, **kw):
    return judge_access(changes=changes, now=now, complete=complete, invals=invals,
                        asid=ASID, va=va, level=level, start=start,
                        paddr=translate(pte(pfn), level, va), op=op, **kw)


def mkclean(at=50):
    """page_mkclean's history: W and D cleared at ``at``, flush requested after it."""
    old = pte(0x20)
    new = pte(0x20, RW & ~(_PAGE_W | _PAGE_D))
    return [PteChange(at, old, new, "mkclean")], new


def test_store_through_a_retired_writable_value_after_mkclean_is_caught():
    changes, now = mkclean()
    flush = Inval(req=51, ack=55, asid=ASID, lo=VA, hi=VA + 0x1000)
    v = judge(changes, now, [flush])
    assert v.checked and "STORE (U) completed at frame 0x20" in v.problem, v
    assert "requested at cycle 51 and acknowledged at cycle 55" in v.problem
    # The same store that began before the acknowledgement is stale but legal.
    v = judge(changes, now, [flush], start=54)
    assert v.problem is None and not v.checked
    # A load is explained by the clean read-only value.
    assert judge(changes, now, [flush], op=AccessType.LOAD).problem is None


def test_a_flush_requested_before_the_change_retires_nothing():
    changes, now = mkclean(at=50)
    early = Inval(req=49, ack=55, asid=ASID, lo=VA, hi=VA + 0x1000)
    assert judge(changes, now, [early]).problem is None


def test_other_asid_or_other_page_does_not_cover():
    changes, now = mkclean()
    for inv in (Inval(51, 55, ASID + 1, VA, VA + 0x1000),
                Inval(51, 55, ASID, VA + 0x1000, VA + 0x2000)):
        assert not judge(changes, now, [inv]).checked
    assert judge(changes, now, [Inval(51, 55, None, 0, 1 << 64)]).problem


def test_a_store_relies_on_d_and_any_access_on_a():
    clean = pte(0x20, RW & ~_PAGE_D)
    changes = [PteChange(50, pte(0x20), clean, "clear D")]
    flush = Inval(51, 55, ASID, VA, VA + 0x1000)
    v = judge(changes, clean, [flush])
    assert v.checked and "completed at frame 0x20" in v.problem, v
    # Without the walkers' writes in the history, D cannot be judged.
    assert judge(changes, clean, [flush], with_ad=False).problem is None
    old = pte(0x20, RW & ~_PAGE_A)
    changes = [PteChange(50, pte(0x20), old, "mkold")]
    assert judge(changes, old, [flush], op=AccessType.LOAD).problem
    # The walker's CAS that set D again (after the flush) explains the store.
    changes.append(PteChange(101, old, pte(0x20), "core0 walker"))
    assert judge(changes, pte(0x20), [flush]).problem is None


def test_user_and_execute_permissions():
    sup = pte(0x20, RW & ~_PAGE_U)
    changes = [PteChange(50, pte(0x20), sup, "mprotect")]
    flush = Inval(51, 55, ASID, VA, VA + 0x1000)
    assert judge(changes, sup, [flush], op=AccessType.LOAD).problem
    assert judge(changes, sup, [flush], op=AccessType.LOAD, user=False).problem is None
    nx = pte(0x20, RW)
    x = pte(0x20, RW | _PAGE_X)
    changes = [PteChange(50, x, nx, "mprotect")]
    assert judge(changes, nx, [flush], op=AccessType.FETCH).problem


def test_frame_of_a_migrated_page_and_a_superpage():
    changes = [PteChange(50, pte(0x20), pte(0x40), "migrate")]
    flush = Inval(51, 55, ASID, VA, VA + 0x1000)
    assert judge(changes, pte(0x40), [flush]).problem
    assert judge(changes, pte(0x40), [flush], pfn=0x40).problem is None
    # A 2 MiB leaf: the access at an offset inside it, the flush of another 4 KiB page of it.
    va = VA + 0x3000
    big_old, big_new = pte(0x200), pte(0x400)
    changes = [PteChange(50, big_old, big_new, "migrate")]
    inside = Inval(51, 55, ASID, VA + 0x1F_F000, VA + 0x20_0000)
    v = judge(changes, big_new, [inside], level=1, va=va, pfn=0x200)
    assert v.checked and v.problem, v
    assert judge(changes, big_new, [inside], level=1, va=va, pfn=0x400).problem is None
    outside = Inval(51, 55, ASID, VA + 0x20_0000, VA + 0x20_1000)
    assert not judge(changes, big_new, [outside], level=1, va=va, pfn=0x200).checked


def test_device_accesses_are_judged_on_frame_and_write():
    changes, now = mkclean()
    flush = Inval(51, 55, ASID, VA, VA + 0x1000)
    assert judge(changes, now, [flush], device=True).problem
    assert judge(changes, now, [flush], device=True, op=AccessType.LOAD).problem is None


def test_an_incomplete_history_is_an_error_not_a_pass():
    """The oldest known value is still legal and the history does not reach further back:
    an access no known value explains cannot be judged -- reported, never passed; one a
    known legal value explains passes."""
    ro = pte(0x20, RW & ~(_PAGE_W | _PAGE_D))
    changes = [PteChange(80, ro, pte(0x30), "set")]
    flush = Inval(51, 55, ASID, VA, VA + 0x1000)      # before the history's first write
    v = judge(changes, pte(0x30), [flush], complete=False)
    assert v.checked and "cannot be judged" in v.problem, v
    assert judge(changes, pte(0x30), [flush], complete=False, pfn=0x30).problem is None
    # The same history, complete: every value is known and none was retired, so nothing
    # constrains the access (not counted as a check).
    v = judge(changes, pte(0x30), [flush], complete=True)
    assert not v.checked and v.problem is None
