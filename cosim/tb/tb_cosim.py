"""cocotb tests of the host-thread environment (cosim.host); they need only a ``clk`` port.

Run by tests/test_cosim.py on a one-register stub and on ``Top``.
"""

from __future__ import annotations

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from cosim.host import Deadlock, HostEnv, LockError

SEED = int(os.environ.get("COSIM_SEED", "1"))


def _cycle(env):
    return int(cocotb.simtime.get_sim_time("ns") // 10)


async def _start(dut):
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)


@cocotb.test()
async def test_host_lock_waiter_lets_time_pass(dut):
    """A thread waiting for a held lock sleeps in simulated time and gets it on release."""
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0))
    lock = env.new_lock("page_table_lock")
    trace = []

    def holder():
        with lock:
            trace.append(("holder in", _cycle(env)))
            env.wait_cycles(50)
            trace.append(("holder out", _cycle(env)))

    def waiter():
        env.wait_cycles(5)
        lock.acquire()
        trace.append(("waiter in", _cycle(env)))
        assert lock.held_by_me()
        lock.release()

    t1 = env.spawn("holder", holder)
    t2 = env.spawn("waiter", waiter)
    await t1
    await t2
    names = [t[0] for t in trace]
    assert names == ["holder in", "holder out", "waiter in"], trace
    assert trace[2][1] >= trace[0][1] + 50, trace
    assert env.stats["lock_waits"] >= 1
    assert not lock.is_locked()


@cocotb.test()
async def test_host_rwsem_readers_share_writer_excludes(dut):
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0))
    sem = env.new_rwsem("mmap_sem")
    log = []

    def reader(n):
        sem.down_read()
        log.append((f"r{n}+", _cycle(env)))
        env.wait_cycles(20)
        log.append((f"r{n}-", _cycle(env)))
        sem.up_read()

    def writer():
        env.wait_cycles(3)
        sem.down_write()
        log.append(("w+", _cycle(env)))
        assert sem.is_write_locked()
        sem.up_write()

    tasks = [env.spawn("r1", reader, 1), env.spawn("r2", reader, 2), env.spawn("w", writer)]
    for t in tasks:
        await t
    order = [e[0] for e in log]
    # both readers inside together, the writer after both left
    assert order.index("r2+") < order.index("r1-"), log
    assert order.index("w+") > max(order.index("r1-"), order.index("r2-")), log


@cocotb.test()
async def test_host_yield_points_deterministic_per_seed(dut):
    """The same seed gives the same interleaving (relative cycles); another seed differs."""
    await _start(dut)

    async def one(seed):
        await ClockCycles(dut.clk, 1)     # start every run at the same phase of the clock
        env = HostEnv(dut.clk, seed, yield_cycles=(0, 5))
        lock = env.new_lock("anon_vma->lock")
        trace = []
        t0 = _cycle(env)

        def worker(name):
            for i in range(12):
                env.yield_point("loop")
                with lock:
                    trace.append((name, i, _cycle(env) - t0))

        tasks = [env.spawn(f"w{k}", worker, f"w{k}") for k in range(3)]
        for t in tasks:
            await t
        return trace

    a = await one(SEED)
    b = await one(SEED)
    c = await one(SEED + 1000)
    assert a == b, f"seed {SEED}: two runs differ"
    assert a != c, f"seeds {SEED} and {SEED + 1000} gave the same interleaving"


@cocotb.test()
async def test_host_lock_misuse_is_an_error(dut):
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0), lock_timeout=300)
    lock = env.new_lock("page_table_lock")
    errors = []

    def owner():
        lock.acquire()
        env.wait_cycles(10)

    def thief():
        try:
            lock.release()
        except LockError as exc:
            errors.append(str(exc))

    def starved():
        try:
            lock.acquire()
        except Deadlock as exc:
            errors.append(str(exc))

    await env.spawn("owner", owner)
    await env.spawn("thief", thief)
    await env.spawn("starved", starved)
    assert len(errors) == 2, errors
    assert "does not hold" in errors[0], errors
    assert "waited 300 cycles" in errors[1] and "'owner'" in errors[1], errors
    # A coroutine may not sleep on a contended lock.
    try:
        lock.acquire()
    except LockError as exc:
        assert "coroutine" in str(exc)
    else:
        raise AssertionError("acquiring a held lock from a coroutine did not raise")
