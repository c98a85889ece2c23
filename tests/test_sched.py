"""The deterministic scheduler: same seed same interleaving, locks under contention, deadlock
and livelock detection, exceptions, signals, current task."""

import re

import pytest

from pyrmap.locking import Deadlock
from pyrmap.physmem import PhysMem
from pyrmap.pte import AccessType
from pyrmap.sched import Livelock, Scheduler, pct_bound
from pyrmap.softarch import SoftArch


def make(seed, **kw):
    sched = Scheduler(seed)
    arch = SoftArch(PhysMem(8), sched=sched, **kw)
    return sched, arch


def counter_program(seed, nthreads=3, rounds=4):
    """Threads increment a shared counter non-atomically inside a lock."""
    sched, arch = make(seed)
    lock = arch.new_lock("page_table_lock")
    state = {"n": 0, "inside": None, "order": []}

    def worker(name):
        for _ in range(rounds):
            arch.yield_point("before")
            with lock:
                assert state["inside"] is None, f"{name} entered while {state['inside']} inside"
                state["inside"] = name
                v = state["n"]
                arch.yield_point("in critical section")
                state["n"] = v + 1
                state["order"].append(name)
                state["inside"] = None
    for i in range(nthreads):
        sched.spawn(f"t{i}", worker, f"t{i}")
    sched.run()
    return sched, state


def test_same_seed_same_interleaving_other_seed_differs():
    s1, st1 = counter_program(7)
    s2, st2 = counter_program(7)
    s3, st3 = counter_program(8)
    assert s1.trace == s2.trace and st1["order"] == st2["order"]
    assert s1.trace != s3.trace
    assert st1["n"] == st3["n"] == 12


def test_threads_really_interleave_and_the_lock_excludes():
    seen_switch = False
    for seed in range(5):
        sched, st = counter_program(seed)
        assert st["n"] == 12, f"seed {seed}"
        names = [n for n, _ in sched.trace]
        seen_switch |= any(a != b for a, b in zip(names, names[1:]))
    assert seen_switch


def test_contention_blocks_and_wakes():
    blocked = 0
    for seed in range(10):
        sched, _ = counter_program(seed)
        blocked += sum(1 for _, why in sched.trace if why.startswith("block "))
    assert blocked > 0        # some seed made a thread wait for the lock


def test_arch_operations_are_yield_points():
    sched, arch = make(3)
    arch.set_satp(0, 1, 1)

    def t():
        arch.pte_load(0x1000)
        arch.cmpxchg(0x1000, 0, 0)
        arch.translate(0, 0x1000, AccessType.LOAD)
        arch.flush_tlb_all()
    sched.spawn("a", t)
    sched.run()
    whys = [why for _, why in sched.trace]
    assert whys == ["pte_load", "cmpxchg", "translate core0", "flush_tlb_all"]


def abba(seed):
    sched, arch = make(seed, lockdep=False)
    a, b = arch.new_lock("A"), arch.new_lock("B")

    def ab():
        with a:
            arch.yield_point("holding A")
            with b:
                pass

    def ba():
        with b:
            arch.yield_point("holding B")
            with a:
                pass
    sched.spawn("ab", ab)
    sched.spawn("ba", ba)
    sched.run()


def test_abba_deadlock_is_detected_and_named():
    outcomes = {}
    for seed in range(12):
        try:
            abba(seed)
            outcomes[seed] = "ok"
        except Deadlock as e:
            outcomes[seed] = str(e)
    deadlocks = [m for m in outcomes.values() if m != "ok"]
    assert deadlocks and "ok" in outcomes.values(), outcomes
    msg = deadlocks[0]
    assert re.search(r"'ab' waits for 'B' \w+ \(lock B\), held by 'ba'", msg), msg
    assert re.search(r"'ba' waits for 'A' \w+ \(lock A\), held by 'ab'", msg), msg
    assert "scheduler seed" in msg
    # Deterministic: the same seed deadlocks again.
    seed = next(s for s, m in outcomes.items() if m != "ok")
    with pytest.raises(Deadlock):
        abba(seed)


def test_waiting_for_a_lock_nobody_will_release():
    sched, arch = make(0)
    lock = arch.new_lock("anon_vma->lock")

    def leaker():
        lock.acquire()              # never released

    def waiter():
        while not lock.is_locked():
            arch.yield_point("wait for the leaker")
        with lock:
            pass
    sched.spawn("leaker", leaker)
    sched.spawn("waiter", waiter)
    with pytest.raises(Deadlock, match=r"'waiter' waits for .*held by 'leaker'"):
        sched.run()


def test_exception_carries_thread_and_seed_and_unwinds_others():
    sched, arch = make(5)
    lock = arch.new_lock("page_table_lock")
    cleaned = []

    def bad():
        while not lock.is_locked():
            arch.yield_point("wait for good")
        raise KeyError("boom")

    def good():
        try:
            with lock:
                for _ in range(50):
                    arch.yield_point("spin")
        finally:
            cleaned.append("good")
    sched.spawn("good", good)
    sched.spawn("bad", bad)
    with pytest.raises(KeyError, match=r"boom \[in engine thread 'bad', scheduler seed 5\]"):
        sched.run()
    assert cleaned == ["good"]
    assert not lock.is_locked()


def test_signal_and_current_task():
    sched, arch = make(1)
    seen = {}
    mm = object()

    def victim():
        for _ in range(20):
            if arch.signal_pending():
                seen["signalled"] = arch.current_thread()
                return
            arch.yield_point("wait for signal")

    def sender(target):
        seen["mm"] = arch.current_task().mm
        sched.send_signal(target)
    t = sched.spawn("victim", victim)
    sched.spawn("sender", sender, t, mm=mm)
    sched.run()
    assert seen == {"signalled": "victim", "mm": mm}
    assert arch.current_task().name == "main"        # outside the threads


def test_spawn_from_a_running_thread():
    sched, arch = make(2)
    out = []

    def child():
        out.append("child")

    def parent():
        sched.spawn("child", child)
        arch.yield_point("after spawn")
        out.append("parent")
    sched.spawn("parent", parent)
    sched.run()
    assert sorted(out) == ["child", "parent"]


def test_rwsem_readers_share_writer_excludes():
    shared_seen = False
    for seed in range(8):
        sched, arch = make(seed)
        sem = arch.new_rwsem("mmap_sem")
        st = {"readers": 0, "writer": False, "max_readers": 0}

        def reader():
            for _ in range(3):
                sem.down_read()
                assert not st["writer"], f"seed {seed}"
                st["readers"] += 1
                st["max_readers"] = max(st["max_readers"], st["readers"])
                arch.yield_point("reading")
                st["readers"] -= 1
                sem.up_read()

        def writer():
            for _ in range(3):
                sem.down_write()
                assert st["readers"] == 0 and not st["writer"], f"seed {seed}"
                st["writer"] = True
                arch.yield_point("writing")
                st["writer"] = False
                sem.up_write()
        sched.spawn("r1", reader)
        sched.spawn("r2", reader)
        sched.spawn("w", writer)
        sched.run()
        shared_seen |= st["max_readers"] == 2
    assert shared_seen


def test_livelock_is_reported():
    sched = Scheduler(0, max_steps=100)
    arch = SoftArch(PhysMem(4), sched=sched)

    def spin():
        while True:
            arch.yield_point("spin")
    sched.spawn("spinner", spin)
    with pytest.raises(Livelock, match=r"100 scheduling decisions|101 scheduling decisions"):
        sched.run()


def test_spawn_errors():
    sched = Scheduler(0)
    sched.spawn("a", lambda: None)
    with pytest.raises(ValueError, match=r"^Thread name 'a' is already used$"):
        sched.spawn("a", lambda: None)
    with pytest.raises(TypeError, match=r"^Thread function must be callable, not 3$"):
        sched.spawn("b", 3)
    with pytest.raises(TypeError, match=r"^Seed must be an integer, not 'x'$"):
        Scheduler("x")


def test_results_and_rerun():
    sched = Scheduler(0)
    t = sched.spawn("a", lambda x: x * 2, 21)
    sched.run()
    assert t.result == 42 and t.state == "done"
    t2 = sched.spawn("b", lambda: "again")
    sched.run()
    assert t2.result == "again"


def test_switch_prob_validation():
    with pytest.raises(ValueError, match=r"^Switch probability must be in \(0, 1\], not 0$"):
        Scheduler(0, switch_prob=0)
    assert 1 / 256 <= Scheduler(11).switch_prob <= 1 / 2
    assert Scheduler(11).switch_prob == Scheduler(11).switch_prob


def test_some_seed_reaches_a_window_deep_inside_a_long_thread():
    """A one-step thread lands after many different steps of a 60-step thread across seeds
    (uniform switching at every step would almost never get past the first few)."""
    positions = set()
    for seed in range(64):
        sched = Scheduler(seed)
        state = {"step": 0, "at": None}

        def long():
            for i in range(60):
                state["step"] = i
                sched.yield_point("long")

        def short():
            sched.yield_point("short")
            state["at"] = state["step"]
        sched.spawn("long", long)
        sched.spawn("short", short)
        sched.run()
        positions.add(state["at"])
    assert max(positions) >= 30, sorted(positions)
    assert len(positions) >= 15, sorted(positions)


def test_fixed_switch_prob_one_always_switches_between_two_threads():
    sched = Scheduler(0, switch_prob=1.0)

    def f():
        for _ in range(5):
            sched.yield_point("y")
    sched.spawn("a", f)
    sched.spawn("b", f)
    sched.run()
    names = [n for n, _ in sched.trace]
    assert all(x != y for x, y in zip(names, names[1:]))


def test_trace_is_bounded():
    sched = Scheduler(0, trace_len=10)

    def f():
        for i in range(50):
            sched.yield_point(f"y{i}")
    sched.spawn("a", f)
    sched.run()
    assert list(sched.trace) == [("a", f"y{i}") for i in range(40, 50)]
    assert sched.steps == 50
    with pytest.raises(TypeError, match=r"^Trace length must be a positive integer or None"):
        Scheduler(0, trace_len=0)


def random_lock_program(seed, nthreads=4, nlocks=3, steps=30):
    """Threads take random subsets of locks in the tree's order, checking exclusion."""
    import random
    sched, arch = make(seed)
    classes = ["mmap_sem", "PG_locked", "i_mmap_lock", "anon_vma->lock", "page_table_lock"]
    locks = {c: arch.new_lock(c) if c != "mmap_sem" else arch.new_rwsem(c) for c in classes}
    inside = {c: None for c in classes}
    readers = {"n": 0}
    log = []

    def worker(name, rng):
        for _ in range(steps):
            take = sorted(rng.sample(range(len(classes)), rng.randrange(1, nlocks + 1)))
            held = []
            for i in take:
                c = classes[i]
                if c == "mmap_sem":
                    if rng.random() < 0.5:
                        locks[c].down_read()
                        readers["n"] += 1
                        held.append((c, "r"))
                        assert inside[c] is None, f"seed {seed}: reader under a writer"
                        continue
                    locks[c].down_write()
                    assert readers["n"] == 0, f"seed {seed}: writer with readers"
                else:
                    locks[c].acquire()
                assert inside[c] is None, f"seed {seed}: {name} and {inside[c]} both in {c}"
                inside[c] = name
                held.append((c, "x"))
                arch.yield_point(f"holding {c}")
            log.append((name, tuple(c for c, _ in held)))
            for c, mode in reversed(held):
                if mode == "r":
                    readers["n"] -= 1
                    locks[c].up_read()
                    continue
                inside[c] = None
                if c == "mmap_sem":
                    locks[c].up_write()
                else:
                    locks[c].release()
    master = __import__("random").Random(seed)
    for i in range(nthreads):
        sched.spawn(f"w{i}", worker, f"w{i}", __import__("random").Random(master.random()))
    sched.run()
    return sched, log


@pytest.mark.parametrize("seed", range(6))
def test_random_lock_programs_in_tree_order_never_deadlock(seed):
    sched, log = random_lock_program(seed)
    assert len(log) == 4 * 30, f"seed {seed}"
    sched2, log2 = random_lock_program(seed)
    assert list(sched.trace) == list(sched2.trace) and log == log2, f"seed {seed}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 200))
def test_random_lock_programs_stress(seed):
    _, log = random_lock_program(seed, nthreads=6, steps=60)
    assert len(log) == 6 * 60, f"seed {seed}"


def test_wait_until_hands_over_and_detects_a_condition_nobody_will_set():
    sched = Scheduler(0, switch_prob=1 / 256)
    st = {"done": False, "seen": None}

    def writer():
        for _ in range(5):
            sched.yield_point("io")
        st["done"] = True

    def waiter():
        sched.wait_until(lambda: st["done"], "writeback")
        st["seen"] = True
    sched.spawn("waiter", waiter)
    sched.spawn("writer", writer)
    sched.run()
    assert st["seen"] is True

    sched = Scheduler(0)
    sched.spawn("waiter", lambda: sched.wait_until(lambda: False, "migration entry"))
    with pytest.raises(Deadlock, match=r"'waiter' waits for a condition \(migration entry\)"):
        sched.run()
    with pytest.raises(Deadlock, match=r"outside the scheduler's threads"):
        Scheduler(0).wait_until(lambda: False, "x")
    Scheduler(0).wait_until(lambda: True, "x")            # true at once: returns


# --- PCT ------------------------------------------------------------------------------------

def _window_program(seed, strategy="pct", depth=2):
    """t0 opens a window (x = 1) for one yield point in a stretch of twelve; t1 reads x once
    among its own yields: a bug of depth 2 (t0 preempted inside the window, t1 run then)."""
    sched = Scheduler(seed, strategy=strategy, depth=depth, pct_steps=32)
    arch = SoftArch(PhysMem(8), sched=sched)
    state = {"x": 0, "seen": False}

    def t0():
        for i in range(12):
            arch.yield_point("t0")
            state["x"] = 1 if i == 6 else 0

    def t1():
        for _ in range(6):
            arch.yield_point("t1")
        state["seen"] = state["x"] == 1
    sched.spawn("t0", t0)
    sched.spawn("t1", t1)
    sched.run()
    return sched, state["seen"]


def test_pct_is_deterministic_and_finds_a_depth_two_bug_at_least_as_often_as_its_bound():
    a, b = _window_program(11), _window_program(11)
    assert list(a[0].trace) == list(b[0].trace) and a[1] == b[1]
    runs = [_window_program(seed) for seed in range(300)]
    found = sum(seen for _, seen in runs)
    rep = runs[0][0].pct_report()
    assert rep["depth"] == 2 and rep["runs"] == 1 and rep["beyond_k"] == 0
    bound = rep["bound"]
    assert bound == pct_bound(2, 32, 2) == 1 / 64
    assert found >= 300 * bound, (found, bound)


def test_pct_without_change_points_never_preempts():
    """Depth 1: no change point, the higher-priority thread runs to its end first."""
    for seed in range(20):
        sched, seen = _window_program(seed, depth=1)
        names = [n for n, _ in sched.trace]
        first = names[0]
        assert names == sorted(names, key=lambda n: n != first), names
        assert not seen


def test_pct_drops_a_spinning_thread():
    """A thread of highest priority that spins on a flag another thread sets would spin
    forever under strict priorities: after spin_limit decisions it is dropped."""
    demoted = 0
    for seed in range(8):
        sched = Scheduler(seed, strategy="pct", depth=1, spin_limit=10, max_steps=5000)
        arch = SoftArch(PhysMem(8), sched=sched)
        flag = {"set": False}

        def spinner():
            while not flag["set"]:
                arch.yield_point("spin")

        def setter():
            arch.yield_point("before")
            flag["set"] = True
        sched.spawn("a", spinner)
        sched.spawn("b", setter)
        sched.run()
        assert flag["set"]
        demoted += sched.pct_report()["spin_demotions"]
    assert demoted > 0


def test_pct_validation_and_report():
    with pytest.raises(ValueError, match="Scheduling strategy must be one of random, pct, "
                                         "not 'fair'"):
        Scheduler(0, strategy="fair")
    with pytest.raises(ValueError, match="PCT depth must be an integer of at least 1, not 0"):
        Scheduler(0, strategy="pct", depth=0)
    with pytest.raises(ValueError, match="Spin limit must be an integer of at least 2"):
        Scheduler(0, strategy="pct", spin_limit=1)
    with pytest.raises(RuntimeError, match="strategy is 'random', not 'pct'"):
        Scheduler(0).pct_report()
    with pytest.raises(ValueError, match="PCT bound needs positive"):
        pct_bound(0, 5, 2)
    assert pct_bound(4, 100, 3) == 1 / (4 * 100 ** 2)
