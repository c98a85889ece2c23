"""The lock-order tree as data and the debug wrapper that checks it."""

import pytest

from pyrmap.locking import (LOCK_ORDER, LockDep, LockError, LockOrderViolation, lock_class,
                            must_precede)
from pyrmap.physmem import PhysMem
from pyrmap.sched import Scheduler
from pyrmap.softarch import SoftArch


def arch(**kw):
    return SoftArch(PhysMem(4), **kw)


def test_tree_follows_the_seed_comment():
    names = [n for n, _ in LOCK_ORDER]
    assert names[:7] == ["i_mutex", "i_alloc_sem", "mmap_sem", "PG_locked", "i_mmap_lock",
                         "anon_vma->lock", "page_table_lock"]
    assert must_precede("mmap_sem", "page_table_lock")
    assert must_precede("PG_locked", "anon_vma->lock")
    assert must_precede("i_mmap_lock", "anon_vma->lock")
    assert not must_precede("anon_vma->lock", "i_mmap_lock")
    assert must_precede("page_table_lock", "swap_lock")
    assert must_precede("swap_lock", "mmlist_lock")
    # Siblings in the tree are not ordered against each other.
    assert not must_precede("lru_lock", "swap_lock") and not must_precede("swap_lock", "lru_lock")
    assert not must_precede("mmap_sem", "mmap_sem")
    assert lock_class("pte lock") == "page_table_lock"
    assert must_precede("mm->mmap_sem", "pte lock")


def test_right_order_passes():
    a = arch()
    sem = a.new_rwsem("mmap_sem")
    locks = [a.new_lock(n) for n in ("PG_locked", "i_mmap_lock", "anon_vma->lock",
                                     "page_table_lock", "swap_lock")]
    sem.down_read()
    for lk in locks:
        lk.acquire()
    assert [l.name for l in a.lockdep.held_by("main")] == ["mmap_sem"] + [l.name for l in locks]
    for lk in reversed(locks):
        lk.release()
    sem.up_read()
    assert a.lockdep.held_by("main") == []


def test_wrong_order_raises_naming_both_locks_and_the_thread():
    a = arch()
    av = a.new_lock("anon_vma->lock")
    im = a.new_lock("i_mmap_lock")
    av.acquire()
    with pytest.raises(LockOrderViolation,
                       match=r"^Thread 'main' takes 'i_mmap_lock' .* while holding "
                             r"'anon_vma->lock' .*; the lock order requires 'i_mmap_lock' "
                             r"before 'anon_vma->lock'$"):
        im.acquire()
    assert not im.is_locked()                 # the check comes before taking it
    av.release()
    im.acquire()                              # fine once nothing later is held
    im.release()


def test_mmap_sem_under_page_lock_raises():
    a = arch()
    pg = a.new_lock("PG_locked")
    sem = a.new_rwsem("mmap_sem")
    pg.acquire()
    with pytest.raises(LockOrderViolation, match=r"takes 'mmap_sem'.*holding 'PG_locked'"):
        sem.down_read()
    with pytest.raises(LockOrderViolation):
        sem.down_write()


def test_checker_off_lets_the_wrong_order_through():
    a = arch(lockdep=False)
    av, im = a.new_lock("anon_vma->lock"), a.new_lock("i_mmap_lock")
    av.acquire()
    im.acquire()                              # no checker, no error
    assert a.lockdep is None


def test_same_class_rules():
    a = arch()
    p1, p2 = a.new_lock("PG_locked"), a.new_lock("PG_locked")
    p1.acquire()
    p2.acquire()                              # migration holds two page locks
    p2.release()
    p1.release()
    t1, t2 = a.new_lock("page_table_lock"), a.new_lock("page_table_lock")
    t1.acquire()
    with pytest.raises(LockOrderViolation, match=r"takes a second 'page_table_lock' lock"):
        t2.acquire()
    t2.acquire(nested=True)                   # spin_lock_nested (mremap's move_ptes)
    t2.release()
    t1.release()
    s1, s2 = a.new_rwsem("mmap_sem"), a.new_rwsem("mmap_sem")
    s1.down_write()
    s2.down_write(nested=True)                # fork: oldmm then mm
    s2.up_write()
    s1.up_write()


def test_mm_all_locks_context_allows_many_anon_vma_and_i_mmap_locks():
    a = arch()
    lockdep = a.lockdep
    sem = a.new_rwsem("mmap_sem")
    ims = [a.new_lock("i_mmap_lock") for _ in range(3)]
    avs = [a.new_lock("anon_vma->lock") for _ in range(3)]
    sem.down_write()
    ims[0].acquire()
    with pytest.raises(LockOrderViolation, match=r"second 'i_mmap_lock'"):
        ims[1].acquire()
    lockdep.enter_mm_all_locks("main")        # mm_take_all_locks
    for lk in ims[1:] + avs:
        lk.acquire()
    for lk in ims + avs:                      # mm_drop_all_locks
        lk.release()
    lockdep.exit_mm_all_locks("main")
    avs[0].acquire()
    with pytest.raises(LockOrderViolation, match=r"second 'anon_vma->lock'"):
        avs[1].acquire()
    avs[0].release()
    sem.up_write()
    with pytest.raises(LockError, match=r"leaves the mm_take_all_locks context it is not in"):
        lockdep.exit_mm_all_locks("main")
    with lockdep.mm_all_locks("main"):
        avs[0].acquire()
        avs[1].acquire()
        avs[1].release()
        avs[0].release()


def test_trylock_is_recorded_but_not_order_checked():
    a = arch()
    pt = a.new_lock("page_table_lock")
    av = a.new_lock("anon_vma->lock")
    pt.acquire()
    assert av.trylock()                       # a trylock cannot deadlock
    assert [l.name for l in a.lockdep.held_by("main")] == ["page_table_lock", "anon_vma->lock"]
    av.release()
    pt.release()


def test_unknown_classes_are_not_ordered():
    a = arch()
    x = a.new_lock("gru driver lock")
    pt = a.new_lock("page_table_lock")
    pt.acquire()
    x.acquire()
    x.release()
    pt.release()


def test_violation_inside_an_engine_thread_names_it():
    sched = Scheduler(4)
    a = arch(sched=sched)
    pt = a.new_lock("page_table_lock")
    pg = a.new_lock("PG_locked")

    def reclaim():
        with pt:
            with pg:
                pass
    sched.spawn("kswapd", reclaim)
    with pytest.raises(LockOrderViolation,
                       match=r"Thread 'kswapd' takes 'PG_locked'.*holding 'page_table_lock'"
                             r".*scheduler seed 4"):
        sched.run()
    assert not pt.is_locked()                 # the with-block released it while unwinding


def test_page_lock_may_be_released_by_another_thread():
    sched = Scheduler(0)
    a = arch(sched=sched)
    pg = a.new_lock("PG_locked")
    pt = a.new_lock("page_table_lock")

    def submit():
        pg.acquire()                          # lock_page, then I/O completes elsewhere

    def complete():
        while not pg.is_locked():
            a.yield_point("wait for I/O")
        pg.release()

    sched.spawn("submit", submit)
    sched.spawn("irq", complete)
    sched.run()
    assert not pg.is_locked()
    assert a.lockdep.held_by("submit") == []
    pt.acquire()
    with pytest.raises(LockError, match=r"which it already|does not hold|not locked") as ei:
        pt.owner = "someone else"
        pt.release()
    assert "does not hold" in str(ei.value)


def test_lockdep_standalone():
    ld = LockDep()

    class L:
        def __init__(self, name):
            self.name = name
    a, b = L("mmap_sem"), L("tree_lock")
    ld.check("t", a)
    ld.acquired("t", a)
    ld.check("t", b)
    ld.acquired("t", b)
    with pytest.raises(LockOrderViolation):
        ld.check("t", L("inode_lock"))        # tree_lock nests inside inode_lock
    ld.released("t", b)
    ld.check("t", L("inode_lock"))
    assert ld.checks == 4
