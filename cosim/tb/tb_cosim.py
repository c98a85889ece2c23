"""cocotb tests of the host-thread environment (:mod:`cosim.host`), which need only a ``clk``
port, and of CosimArch on ``hdl.top.Top`` brought up by :func:`cosim.system.bring_up`.

Run by tests/test_cosim.py: the ``test_host_*`` tests on a one-register stub, the
``test_arch_*`` tests on ``Top``.  The scenarios run from :mod:`cosim.tb.tb_scenarios`.
"""

from __future__ import annotations

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from cosim.host import Deadlock, HostEnv, LockError, ThreadKilled

SEED = int(os.environ.get("COSIM_SEED", "1"))


def _cycle(env):
    return int(env.now_ns() // 10)


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
    await t1.join()
    await t2.join()
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
        await t.join()
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
            await t.join()
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

    await env.spawn("owner", owner).join()
    await env.spawn("thief", thief).join()
    await env.spawn("starved", starved).join()
    # An exception in a thread is kept for join(), not raised into the test by cocotb.
    boom = env.spawn("boom", lambda: 1 // 0)
    try:
        await boom.join()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("join() of a failed thread did not raise its exception")
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


@cocotb.test()
async def test_host_stop_ends_other_threads(dut):
    """A failing thread stops the others at their next round trip (a violation ends the run
    instead of letting the workloads run on); a spared thread keeps going."""
    await _start(dut)
    env = HostEnv(dut.clk, SEED, yield_cycles=(0, 0))
    env.on_error = lambda thread, exc: env.stop(f"{thread.name} failed", spare=[spared])
    lock = env.new_lock("page_table_lock")
    t0 = _cycle(env)

    def failing():
        env.wait_cycles(5)
        raise ValueError("boom")

    def looping():
        with lock:                          # released while unwinding
            for _ in range(1000):
                env.wait_cycles(1)

    def spared_body():
        env.wait_cycles(20)
        return "done"

    a = env.spawn("failing", failing)
    b = env.spawn("looping", looping)
    spared = env.spawn("spared", spared_body)
    for t in (a, b):
        try:
            await t.join()
        except (ValueError, ThreadKilled):
            pass
    assert isinstance(a.error, ValueError), a.error
    assert isinstance(b.error, ThreadKilled), b.error
    assert await spared.join() == "done"
    assert _cycle(env) - t0 < 100, "the looping thread was not stopped"
    assert not lock.is_locked(), "the stopped thread kept its lock"


# =============================================================================================
# CosimArch on Top, brought up with its memory, host environment and drivers.

from cosim.system import bring_up  # noqa: E402


def _map_one_page(kernel, va):
    """A new mm with one read-write VMA at ``va`` and one fresh page mapped there (set_pte_at
    on the empty slot); returns (mm, vma, ptep, page).  Runs in a host thread."""
    from pyrmap.mm_types import VM_READ, VM_WRITE, MmStruct, Vma
    from pyrmap.pagetable import pgd_alloc, pte_alloc
    from pyrmap.pte import PAGE_SHARED, pfn_pte

    mm = MmStruct(kernel, kernel.alloc_asid(), pgd_alloc(kernel))
    vma = Vma(mm, va, va + 0x1000, VM_READ | VM_WRITE)
    ptep = pte_alloc(mm, va)
    page = kernel.alloc_page()
    kernel.arch.set_pte_at(mm, va, ptep, pfn_pte(page.pfn, PAGE_SHARED))
    return mm, vma, ptep, page


@cocotb.test()
async def test_arch_pte_ops_and_flush(dut):
    """CosimArch on the RTL: a store walks and sets A/D by CAS, a flush removes the entry from
    the RTL TLB, the atomics keep what the walker set, a cleared PTE faults after its flush."""
    from pyrmap.kernel import Kernel
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import _PAGE_A, _PAGE_D, _PAGE_W, AccessType, FaultKind, pte_pfn

    mem = PhysMem(64)
    env, arch, memory = await bring_up(dut, mem, SEED)
    kernel = Kernel(arch)
    arch.kernel = kernel
    assert arch.reads_rtl_tlbs, "the RTL TLB entry registers were not found"
    va = 0x4000_1000
    seen = {}

    def body():
        mm, vma, ptep, page = _map_one_page(kernel, va)
        arch.switch_mm(0, mm)
        arch.switch_mm(1, mm)
        r = arch.cpu_access(0, va + 8, AccessType.STORE, data=0xABCD)
        seen["store"] = r
        seen["pte_after_store"] = arch.pte_load(ptep)
        seen["word"] = mem.read((page.pfn << 12) + 8)
        seen["load1"] = arch.cpu_access(1, va + 8, AccessType.LOAD)
        seen["tlb0"] = list(arch.tlb_entries(0))
        seen["raw"] = [str(h.value) for h in arch.tlb_reader.core_handles[0]]
        # Atomics: test-and-clear-young returns 1 and keeps D; wrprotect keeps A/D.
        seen["young"] = arch.ptep_test_and_clear_young(vma, va, ptep)
        arch.ptep_set_wrprotect(mm, va, ptep)
        seen["after_atomics"] = arch.pte_load(ptep)
        old = arch.pte_load(ptep)
        seen["cas_bad"] = arch.cmpxchg(ptep, old ^ 1, 0)
        seen["xchg"] = arch.ptep_get_and_clear(mm, va, ptep)
        arch.flush_tlb_page(vma, va)
        seen["tlb_after_flush"] = [list(arch.tlb_entries(c)) for c in (0, 1)]
        seen["fault"] = arch.cpu_access(0, va + 8, AccessType.LOAD)
        seen["pfn"] = page.pfn

    await env.run("smoke", body)
    r = seen["store"]
    assert r.fault == FaultKind.NONE, r
    assert r.paddr >> 12 == seen["pfn"], (hex(r.paddr), seen["pfn"])
    assert seen["word"] == 0xABCD
    p = seen["pte_after_store"]
    assert p & _PAGE_A and p & _PAGE_D, f"walker did not set A/D: {p:#x}"
    assert seen["load1"].fault == FaultKind.NONE and seen["load1"].value == 0xABCD
    assert any(e.covers(va) and e.ppn == seen["pfn"] for e in seen["tlb0"]), (seen["tlb0"], seen["raw"])
    assert seen["young"] == 1
    a = seen["after_atomics"]
    assert not a & _PAGE_A and a & _PAGE_D and not a & _PAGE_W, f"{a:#x}"
    assert seen["cas_bad"] == a, "a failing cmpxchg must return the value found"
    assert pte_pfn(seen["xchg"]) == seen["pfn"] and seen["xchg"] & _PAGE_D
    for c, entries in enumerate(seen["tlb_after_flush"]):
        assert not any(e.covers(va) for e in entries), f"core {c} still maps 0x{va:x}: {entries}"
    assert seen["fault"].fault == FaultKind.PAGE, seen["fault"]
    f = arch.figures()
    assert f["flush_count"] == 1 and f["flush_cycles_max"] >= 1, f
    assert f["pte_ops"]["xchg"] == 1 and f["pte_ops"]["mkold"] == 1, f
    hist = arch.pte_history(memory.log[-1].addr if memory.log else 0)
    assert isinstance(hist, list)
    memory.stop()


@cocotb.test()
async def test_arch_fill_records_without_rtl_state(dut):
    """When the RTL's TLB registers cannot be read, tlb_entries reports the driver's record of
    translations, and a flush removes what it invalidated."""
    from pyrmap.kernel import Kernel
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import AccessType, FaultKind

    mem = PhysMem(64)
    env, arch, memory = await bring_up(dut, mem, SEED)
    arch.tlb_reader = None                   # as if the hdl exposed no entry registers
    assert not arch.reads_rtl_tlbs
    kernel = Kernel(arch)
    arch.kernel = kernel
    va = 0x5000_0000
    seen = {}

    def body():
        mm, vma, ptep, page = _map_one_page(kernel, va)
        arch.switch_mm(1, mm)
        assert arch.cpu_access(1, va, AccessType.STORE, data=7).fault == FaultKind.NONE
        seen["before"] = list(arch.tlb_entries(1))
        arch.flush_tlb_page(vma, va)
        seen["after"] = list(arch.tlb_entries(1))
        seen["pfn"] = page.pfn

    await env.run("records", body)
    assert [(e.vpn << 12, e.ppn, e.d) for e in seen["before"]] == [(va, seen["pfn"], True)], \
        seen["before"]
    assert seen["after"] == [], seen["after"]
    memory.stop()


@cocotb.test()
async def test_arch_stale_access_is_caught(dut):
    """The cycle-level access check (checker (a)): an access that began after a flush of its
    address was acknowledged must not complete through the flushed translation.  Fed a bad
    input -- a flush recorded as done that never reached the RTL -- it must fire; after a
    real flush the access faults instead and nothing fires."""
    from cosim.accesscheck import Inval
    from pyrmap.kernel import Kernel
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import AccessType, FaultKind

    mem = PhysMem(64)
    env, arch, memory = await bring_up(dut, mem, SEED)
    kernel = Kernel(arch)
    arch.kernel = kernel
    va = 0x7000_0000
    seen = {}

    def body():
        mm, vma, ptep, page = _map_one_page(kernel, va)
        arch.switch_mm(0, mm)
        assert arch.cpu_access(0, va, AccessType.LOAD).fault == FaultKind.NONE
        arch.ptep_get_and_clear(mm, va, ptep)
        # Stale but legal: no flush yet, the TLB may still serve the old translation.
        seen["legal"] = arch.cpu_access(0, va, AccessType.LOAD)
        # The bad input: a flush that is recorded as acknowledged but never happened.
        arch._flush_log.append(Inval(arch.cycle(), arch.cycle(), mm.asid, va, va + 0x1000))
        env.wait_cycles(2)
        try:
            arch.cpu_access(0, va, AccessType.LOAD)
        except AssertionError as exc:
            seen["caught"] = str(exc)
        arch.flush_tlb_page(vma, va)
        env.wait_cycles(2)
        seen["after_flush"] = arch.cpu_access(0, va, AccessType.LOAD)

    await env.run("stale", body)
    assert seen["legal"].fault == FaultKind.NONE and seen["legal"].hit, seen["legal"]
    assert "which no translation still legal at its start allows" in seen.get("caught", ""), seen
    assert "the PTE was only none" in seen["caught"], seen["caught"]
    assert seen["after_flush"].fault == FaultKind.PAGE, seen["after_flush"]
    assert arch.access_checks >= 1
    memory.stop()
