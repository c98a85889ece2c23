"""pyrmap.mmu_notifier and pyrmap.mm_locks: registration, callbacks, ordering, release, unregister."""

import pytest

from pyrmap import mm_locks
from pyrmap import mmu_notifier as mn
from pyrmap.kernel import Quirks
from pyrmap.mm_types import VM_SHARED, VM_MAYSHARE
from pyrmap.mmu_notifier import (EINTR, ENOMEM, MmuNotifier, RecordingNotifier,
                                 mmu_notifier_register, mmu_notifier_unregister)
from pyrmap.pte import AccessType, pte_young
from pyrmap.rmap import KernelBug
from pyrmap.sched import Scheduler

from reclaim_fixtures import (ANON_FLAGS, RW, access, add_vma, install, make_kernel, new_file,
                              new_mm, pte_of)

BASE = 0x6000_0000
PAGE = 4096


def setup(sched=None, quirks=None):
    """An mm with two anon VMAs sharing one anon_vma and two file VMAs of one file."""
    k = make_kernel(sched=sched)
    if quirks is not None:
        k.quirks = quirks
    mm = new_mm(k)
    a = add_vma(mm, BASE, 2)
    b = add_vma(mm, BASE + 0x10000, 2, anon_vma=a.anon_vma)
    f = new_file(k, "f", 8)
    add_vma(mm, BASE + 0x20000, 2, ANON_FLAGS | VM_SHARED | VM_MAYSHARE, mapping=f)
    add_vma(mm, BASE + 0x30000, 2, ANON_FLAGS | VM_SHARED | VM_MAYSHARE, mapping=f, pgoff=4)
    return k, mm, a, b, f


def nothing_locked(mm, anon, f):
    return (not anon.lock.is_locked() and not f.i_mmap_lock.is_locked()
            and not mm.mmap_sem.is_locked() and not anon.mm_all_locks and not f.mm_all_locks)


# ---------------------------------------------------------------------------------------------
# mm_take_all_locks / mm_drop_all_locks

def test_mm_take_all_locks_takes_each_lock_once_and_drop_releases_all():
    k, mm, a, b, f = setup()
    with pytest.raises(KernelBug, match="needs mmap_sem held for write"):
        mm_locks.mm_take_all_locks(mm)
    mm.mmap_sem.down_write()
    assert mm_locks.mm_take_all_locks(mm) == 0
    assert a.anon_vma.lock.held_by_me() and a.anon_vma.mm_all_locks
    assert f.i_mmap_lock.held_by_me() and f.mm_all_locks
    mm_locks.mm_drop_all_locks(mm)
    mm.mmap_sem.up_write()
    assert nothing_locked(mm, a.anon_vma, f)
    assert k.stats["mm_take_all_locks"] == 1


def test_mm_take_all_locks_eintr_unwinds():
    k, mm, a, b, f = setup()
    task = k.arch.current_task()
    calls = []
    real = k.arch.signal_pending

    def signal_pending():                 # the signal arrives after the first VMA's locks
        calls.append(1)
        return len(calls) > 3

    k.arch.signal_pending = signal_pending
    mm.mmap_sem.down_write()
    assert mm_locks.mm_take_all_locks(mm) == -EINTR
    assert f.i_mmap_lock.is_locked() is False and not f.mm_all_locks
    mm.mmap_sem.up_write()
    assert nothing_locked(mm, a.anon_vma, f)
    assert k.stats["mm_take_all_locks_eintr"] == 1
    k.arch.signal_pending = real
    assert not task.signal_pending


# ---------------------------------------------------------------------------------------------
# Registration

def test_no_notifiers_means_no_ops():
    k, mm, a, b, f = setup()
    assert not mn.mm_has_notifiers(mm)
    mn.mmu_notifier_invalidate_page(mm, BASE)
    with mn.mmu_notifier_range(mm, BASE, BASE + PAGE):
        pass
    assert mn.mmu_notifier_clear_flush_young(mm, BASE) == 0
    mn.mmu_notifier_release(mm)
    assert not any(key.startswith("mmu_notifier") for key in k.stats)


def test_register_then_every_callback_in_most_recent_first_order():
    k, mm, a, b, f = setup()
    log = []
    first = RecordingNotifier("first", on_event=lambda e: log.append(("first", e.kind)))
    second = RecordingNotifier("second", on_event=lambda e: log.append(("second", e.kind)))
    count = mm.mm_count
    assert mmu_notifier_register(first, mm) == 0
    assert mmu_notifier_register(second, mm) == 0
    assert first.registered and second.registered and mm.mm_count == count + 2
    assert nothing_locked(mm, a.anon_vma, f)
    mn.mmu_notifier_invalidate_page(mm, BASE)
    with mn.mmu_notifier_range(mm, BASE, BASE + 2 * PAGE):
        log.append(("vm", "body"))
    assert log == [("second", "invalidate_page"), ("first", "invalidate_page"),
                   ("second", "range_start"), ("first", "range_start"), ("vm", "body"),
                   ("second", "range_end"), ("first", "range_end")]
    assert first.events[1].start == BASE and first.events[1].end == BASE + 2 * PAGE
    with pytest.raises(KernelBug, match="already registered"):
        mmu_notifier_register(first, mm)
    with pytest.raises(TypeError, match="Notifier must be an MmuNotifier, not 3"):
        mmu_notifier_register(3, mm)


def test_register_with_signal_pending_returns_eintr_and_changes_nothing():
    k, mm, a, b, f = setup()
    rec = RecordingNotifier()
    k.arch.current_task().signal_pending = True
    try:
        assert mmu_notifier_register(rec, mm) == -EINTR
    finally:
        k.arch.current_task().signal_pending = False
    assert not rec.registered and mm.mm_count == 1 and not mn.mm_has_notifiers(mm)
    assert nothing_locked(mm, a.anon_vma, f)
    mn.mmu_notifier_invalidate_page(mm, BASE)
    assert rec.events == []
    assert mmu_notifier_register(rec, mm) == 0


def test_register_enomem_through_the_allocation_hook():
    k, mm, a, b, f = setup()
    rec = RecordingNotifier()
    with mn.fail_allocations(k):
        assert mmu_notifier_register(rec, mm) == -ENOMEM
    assert not rec.registered and mm.mmu_notifier_mm is None and mm.mm_count == 1
    assert nothing_locked(mm, a.anon_vma, f)
    assert mmu_notifier_register(rec, mm) == 0


def test___mmu_notifier_register_needs_mmap_sem_write():
    k, mm, a, b, f = setup()
    rec = RecordingNotifier()
    with pytest.raises(KernelBug, match="needs mmap_sem held for write"):
        mn.__mmu_notifier_register(rec, mm)
    mm.mmap_sem.down_write()
    assert mn.__mmu_notifier_register(rec, mm) == 0
    mm.mmap_sem.up_write()
    assert rec.registered


def _windows_vs_register(seed, register):
    """A VM thread opens and closes invalidation windows (under mmap_sem read, as munmap or
    mprotect do with it held) while a driver thread registers.  Returns the notifier."""
    sched = Scheduler(seed)
    k, mm, a, b, f = setup(sched=sched)
    rec = RecordingNotifier()      # raises KernelBug on an end without a start

    def vm():
        for i in range(6):
            mm.mmap_sem.down_read()
            with mn.mmu_notifier_range(mm, BASE, BASE + PAGE):
                k.arch.yield_point("inside the window")
                k.arch.yield_point("inside the window")
            mm.mmap_sem.up_read()

    sched.spawn("vm", vm)
    sched.spawn("driver", lambda: register(rec, mm))
    sched.run()
    return rec


@pytest.mark.parametrize("seed", range(8))
def test_register_never_sees_an_unmatched_end(seed):
    rec = _windows_vs_register(seed, mmu_notifier_register)
    assert rec.registered and rec.depth == 0
    kinds = rec.kinds()
    assert kinds[::2] == ["range_start"] * (len(kinds) // 2)


def test_register_without_the_locks_sees_an_unmatched_end(monkeypatch):
    """Mutation: registering without mmap_sem and mm_take_all_locks lets a driver join in
    the middle of a window; the recording notifier then fails on the unmatched end."""
    monkeypatch.setattr(mn, "mm_take_all_locks", lambda mm: 0)
    monkeypatch.setattr(mn, "mm_drop_all_locks", lambda mm: None)
    failures = 0
    for seed in range(8):
        try:
            _windows_vs_register(seed, mn.__mmu_notifier_register)
        except KernelBug as e:
            assert "without a matching invalidate_range_start" in str(e)
            failures += 1
    assert failures, "no seed let the unlocked registration land inside a window"


# ---------------------------------------------------------------------------------------------
# Unregister

def test_unregister_calls_release_once_and_then_nothing():
    k, mm, a, b, f = setup()
    rec = RecordingNotifier()
    other = RecordingNotifier("other")
    mmu_notifier_register(rec, mm)
    mmu_notifier_register(other, mm)
    mmu_notifier_unregister(rec, mm)
    assert rec.kinds() == ["release"] and not rec.registered and mm.mm_count == 2
    mn.mmu_notifier_invalidate_page(mm, BASE)
    with mn.mmu_notifier_range(mm, BASE, BASE + PAGE):
        pass
    mn.mmu_notifier_release(mm)
    assert rec.kinds() == ["release"]
    assert other.kinds() == ["invalidate_page", "range_start", "range_end", "release"]
    # After exit released it, unregister does not call release again.
    mmu_notifier_unregister(other, mm)
    assert other.kinds().count("release") == 1 and mm.mm_count == 1


def test_unregister_misuse_raises_and_changes_nothing():
    """Unregistering twice, or from an mm it is not registered on, or never registered: a
    clear error, and mm_count, the list and the notifier are as they were."""
    from pyrmap.mm_types import MmStruct
    from pyrmap.pagetable import pgd_alloc
    k, mm, a, b, f = setup()
    mm2 = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
    k.mms.append(mm2)
    rec = RecordingNotifier()
    never = RecordingNotifier("never")
    before = mm.mm_count
    with pytest.raises(KernelBug, match=r"mmu_notifier_unregister of .* not registered on "
                                        r"any mm \(never registered, or unregistered"):
        mmu_notifier_unregister(never, mm)
    assert mm.mm_count == before and never.kinds() == []
    mmu_notifier_register(rec, mm)
    counts = (mm.mm_count, mm2.mm_count)
    with pytest.raises(KernelBug, match=r"it is registered on "):
        mmu_notifier_unregister(rec, mm2)
    assert (mm.mm_count, mm2.mm_count) == counts and rec.registered and rec.kinds() == []
    mmu_notifier_unregister(rec, mm)
    assert mm.mm_count == counts[0] - 1 and rec.kinds() == ["release"]
    with pytest.raises(KernelBug, match="unregistered already"):
        mmu_notifier_unregister(rec, mm)
    assert mm.mm_count == counts[0] - 1 and rec.kinds() == ["release"]
    # Once unregistered it may be registered again (on another mm too).
    assert mmu_notifier_register(rec, mm2) == 0 and rec.registered


def test_registering_a_released_notifier_again_without_unregister_is_a_bug():
    k, mm, a, b, f = setup()
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    mn.mmu_notifier_release(mm)             # exit unlinked it; its pin on mm remains
    assert not rec.registered
    with pytest.raises(KernelBug, match="never unregistered"):
        mmu_notifier_register(rec, mm)
    mmu_notifier_unregister(rec, mm)


def test_unregister_from_a_callback_is_a_bug():
    k, mm, a, b, f = setup()

    class Bad(MmuNotifier):
        def invalidate_page(self, mm, address):
            mmu_notifier_unregister(self, mm)

    bad = Bad()
    mmu_notifier_register(bad, mm)
    with pytest.raises(KernelBug, match="synchronize_rcu called inside a read-side section"):
        mn.mmu_notifier_invalidate_page(mm, BASE)


def _unregister_during_callback(seed):
    sched = Scheduler(seed)
    k, mm, a, b, f = setup(sched=sched)
    log = []

    class Slow(MmuNotifier):
        def invalidate_page(self, mm, address):
            log.append("callback begins")
            for _ in range(5):
                k.arch.yield_point("slow secondary MMU")
            log.append("callback ends")

    slow = Slow()
    assert mmu_notifier_register(slow, mm) == 0

    def vm():
        mn.mmu_notifier_invalidate_page(mm, BASE)

    def driver():
        k.arch.yield_point("let the VM start")
        log.append("unregister begins")
        mmu_notifier_unregister(slow, mm)
        log.append("unregistered")

    sched.spawn("vm", vm)
    sched.spawn("driver", driver)
    sched.run()
    assert not slow.registered
    return log


def test_unregister_waits_for_a_running_callback():
    overlapped = 0
    for seed in range(10):
        log = _unregister_during_callback(seed)
        if "callback begins" in log:
            assert log.index("callback ends") < log.index("unregistered"), f"seed {seed}: {log}"
            if log.index("callback begins") < log.index("unregister begins") < log.index(
                    "callback ends"):
                overlapped += 1
    assert overlapped, "no seed started unregister while the callback ran"


# ---------------------------------------------------------------------------------------------
# Release at exit

def _release_with_racing_invalidate(quirk):
    """Exit releases the notifiers; inside the first ->release, another CPU's reclaim
    invalidates a page of the mm (try_to_unmap in the window of bug 3)."""
    k, mm, a, b, f = setup(quirks=Quirks(notifier_release_unlink_first=quirk))
    seen = {}
    kvm = RecordingNotifier("kvm")

    class Racer(RecordingNotifier):
        def release(self, mm):
            super().release(mm)
            seen["registered_in_release"] = self.registered
            mn.mmu_notifier_invalidate_page(mm, BASE)

    racer = Racer("racer")
    mmu_notifier_register(kvm, mm)
    mmu_notifier_register(racer, mm)        # first on the list
    mn.mmu_notifier_release(mm)
    assert not kvm.registered and not racer.registered and not mn.mm_has_notifiers(mm)
    return seen, racer, kvm


def test_release_calls_release_before_unlinking():
    seen, racer, kvm = _release_with_racing_invalidate(quirk=False)
    assert seen["registered_in_release"] is True
    assert racer.kinds() == ["release", "invalidate_page"]
    assert kvm.kinds() == ["invalidate_page", "release"]


def test_release_unlink_first_quirk_lets_an_invalidate_miss_the_notifier():
    seen, racer, kvm = _release_with_racing_invalidate(quirk=True)
    assert seen["registered_in_release"] is False
    assert racer.kinds() == ["release"], "the unlinked notifier missed the invalidation"
    assert kvm.kinds() == ["invalidate_page", "release"]


# ---------------------------------------------------------------------------------------------
# Ranges, young, the *_notify PTE helpers

def test_range_context_manager_always_pairs_start_with_end():
    k, mm, a, b, f = setup()
    rec = RecordingNotifier()
    mmu_notifier_register(rec, mm)
    with pytest.raises(RuntimeError, match="body failed"):
        with mn.mmu_notifier_range(mm, BASE, BASE + PAGE):
            raise RuntimeError("body failed")
    assert rec.kinds() == ["range_start", "range_end"] and rec.depth == 0
    with pytest.raises(ValueError, match=r"Invalidation range \[0x60000000, 0x60000000\) is empty"):
        with mn.mmu_notifier_range(mm, BASE, BASE):
            pass
    with pytest.raises(KernelBug, match="without a matching invalidate_range_start"):
        mn.mmu_notifier_invalidate_range_end(mm, BASE, BASE + PAGE)


def _mapped(k, mm, a):
    page = k.alloc_page()
    ptep = install(a, BASE, page, RW)
    return page, ptep


def test_clear_flush_young_notify_ors_both_and_evaluates_both():
    k, mm, a, b, f = setup()
    page, ptep = _mapped(k, mm, a)
    young = RecordingNotifier("young", young={BASE})
    old = RecordingNotifier("old")
    mmu_notifier_register(old, mm)
    mmu_notifier_register(young, mm)          # called first, answers young
    # Primary A clear, secondary young: 1.
    assert mn.ptep_clear_flush_young_notify(a, BASE, ptep) == 1
    assert young.kinds() == old.kinds() == ["clear_flush_young"]
    # Primary A set, no secondary young: 1, and the secondaries were still asked.
    access(mm, BASE, AccessType.LOAD)
    assert mn.ptep_clear_flush_young_notify(a, BASE, ptep) == 1
    assert not pte_young(pte_of(mm, BASE))
    assert young.kinds() == old.kinds() == ["clear_flush_young"] * 2
    assert mn.ptep_clear_flush_young_notify(a, BASE, ptep) == 0


def test_clear_flush_notify_invalidates_secondaries_after_the_cpu_flush():
    k, mm, a, b, f = setup()
    page, ptep = _mapped(k, mm, a)
    for core in (0, 1):
        access(mm, BASE, AccessType.STORE, 7, core=core)
    at_callback = {}

    def check(ev):
        at_callback["pte"] = pte_of(mm, BASE)
        at_callback["tlb"] = [e for c in (0, 1) for e in k.arch.tlb_entries(c) if e.covers(BASE)]
        at_callback["ptl_held"] = mm.page_table_lock.held_by_me()

    rec = RecordingNotifier(on_event=check)
    mmu_notifier_register(rec, mm)
    with mm.page_table_lock:
        old = mn.ptep_clear_flush_notify(a, BASE, ptep)
    assert old & 0x80, "the dirty bit comes back from the atomic clear"
    assert rec.kinds() == ["invalidate_page"] and rec.events[0].start == BASE
    assert at_callback == {"pte": 0, "tlb": [], "ptl_held": True}


def test_mm_take_all_locks_holds_many_locks_of_one_class_inside_the_lockdep_context():
    k, mm, a, b, f = setup()
    g = new_file(k, "g", 4)
    add_vma(mm, BASE + 0x40000, 1, ANON_FLAGS | VM_SHARED | VM_MAYSHARE, mapping=g)
    other = add_vma(mm, BASE + 0x50000, 1)              # a second anon_vma
    assert other.anon_vma is not a.anon_vma
    mm.mmap_sem.down_write()
    assert mm_locks.mm_take_all_locks(mm) == 0
    held = {lock.name for lock in k.arch.lockdep.held_by("main")}
    assert held >= {"mmap_sem", "i_mmap_lock", "anon_vma->lock"}
    assert sum(lk.name == "anon_vma->lock" for lk in k.arch.lockdep.held_by("main")) == 2
    assert sum(lk.name == "i_mmap_lock" for lk in k.arch.lockdep.held_by("main")) == 2
    mm_locks.mm_drop_all_locks(mm)
    assert [lk.name for lk in k.arch.lockdep.held_by("main")] == ["mmap_sem"]
    mm.mmap_sem.up_write()


def test_mm_take_all_locks_outside_the_lockdep_context_is_a_lock_order_violation(monkeypatch):
    from pyrmap.locking import LockOrderViolation
    k, mm, a, b, f = setup()
    add_vma(mm, BASE + 0x50000, 1)                      # a second anon_vma
    monkeypatch.setattr(k.arch.lockdep, "enter_mm_all_locks", lambda thread: None)
    monkeypatch.setattr(k.arch.lockdep, "exit_mm_all_locks", lambda thread: None)
    mm.mmap_sem.down_write()
    with pytest.raises(LockOrderViolation, match="second 'anon_vma->lock'"):
        mm_locks.mm_take_all_locks(mm)
