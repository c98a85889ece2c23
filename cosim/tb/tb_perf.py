"""cocotb tests of the benchmark (:mod:`cosim.bench`); each writes its figures as JSON to
``COSIM_REPORT``.

``test_plain_driver``
    A plain driver: one coroutine awaits every rising edge, answers the memory port from a
    Python list of words (zero extra latency) and keeps a random access in flight on every
    core -- the stream of :func:`cosim.bench.xorshift_stream`, which the C++ harness issues
    too.  Every translation is checked against the expected frame.  ``BENCH_CYCLES`` cycles.
``test_cosim_throughput``
    The co-simulation with every checker on (:class:`cosim.system.CosimSystem`): one
    process maps ``BENCH_NPAGES`` anonymous pages, touches them, then each core runs
    ``BENCH_ACCESSES`` random accesses (shadow-checked loads and stores) while nothing else
    runs.  The figure is the accesses of that phase over its wall time.  With
    ``BENCH_PROFILE=<file>`` the scheduler thread's profile of that phase is written there.
"""

from __future__ import annotations

import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from cosim.system import top_config, write_report

SEED = int(os.environ.get("COSIM_SEED", "1"))


def _num(name: str, default, conv=int):
    try:
        return conv(os.environ.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number, not {os.environ.get(name)!r}")


@cocotb.test()
async def test_plain_driver(dut):
    """Random accesses on every core, memory answered in the same coroutine, every edge."""
    from cosim.bench import ASID, ROOT_FRAME, Workload, build_image, xorshift_stream
    cfg = top_config()
    ncores = int(cfg.get("ncores", 2))
    wl = Workload(npages=_num("BENCH_NPAGES", 32), seed=SEED,
                  store_ratio=_num("BENCH_STORE_RATIO", 0.3, float))
    ncycles = _num("BENCH_CYCLES", 20000)
    words = [int(w) for w in build_image(wl, svadu=bool(cfg.get("svadu", True)))]
    nwords = len(words)

    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    for i in range(ncores):
        getattr(dut, f"cpu{i}__req__valid").value = 0
        getattr(dut, f"cpu{i}__inval__valid").value = 0
    for n in ("dev__req__valid", "dev__fill__valid", "dev__young__valid", "dev__inval__valid",
              "dev__fault__ack"):
        getattr(dut, n).value = 0
    m_ready, m_rvalid = dut.mem__req__ready, dut.mem__resp__valid
    m_rdata, m_err = dut.mem__resp__rdata, dut.mem__resp__err
    m_valid, m_op, m_addr = dut.mem__req__valid, dut.mem__req__op, dut.mem__req__addr
    m_wdata, m_cmp = dut.mem__req__wdata, dut.mem__req__cmp
    m_ready.value = 1
    m_rvalid.value = 0
    m_rdata.value = 0
    m_err.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    cores = []
    for i in range(ncores):
        p = f"cpu{i}__"
        h = {n: getattr(dut, p + n) for n in ("req__valid", "req__ready", "req__vaddr",
                                              "req__op", "req__user", "req__sum", "req__asid",
                                              "req__root", "resp__valid", "resp__paddr",
                                              "resp__fault")}
        h["req__user"].value = 1
        h["req__sum"].value = 0
        getattr(dut, p + "req__mxr").value = 0
        h["req__asid"].value = ASID
        h["req__root"].value = ROOT_FRAME
        cores.append({"h": h, "stream": xorshift_stream(wl, i), "valid": False,
                      "accepted": False, "cur": None})
    accesses = loads = stores = errors = mem_ops = 0
    checksum = 0
    pulsing = False
    clk = dut.clk
    t0 = time.perf_counter()
    for _ in range(ncycles):
        await RisingEdge(clk)
        # Sample the cycle this edge ended.
        mv = m_valid.value if not pulsing else 0
        samples = [(c["h"]["req__ready"].value if c["valid"] else 0,
                    c["h"]["resp__valid"].value if c["accepted"] else 0) for c in cores]
        if pulsing:
            pulsing = False
            m_rvalid.value = 0
            m_ready.value = 1
        elif mv:
            idx = int(m_addr.value) >> 3
            op = int(m_op.value)
            err = idx >= nwords
            old = 0
            if not err:
                old = words[idx]
                if op == 1:
                    words[idx] = int(m_wdata.value)
                elif op == 2 and old == int(m_cmp.value):
                    words[idx] = int(m_wdata.value)
            mem_ops += 1
            m_rvalid.value = 1
            m_rdata.value = old
            m_err.value = int(err)
            m_ready.value = 0
            pulsing = True
        for i, c in enumerate(cores):
            ready, rvalid = samples[i]
            h = c["h"]
            if c["valid"] and ready:
                c["valid"], c["accepted"] = False, True
                h["req__valid"].value = 0
            if c["accepted"] and rvalid:
                c["accepted"] = False
                vaddr, store, data, expect = c["cur"]
                fault = int(h["resp__fault"].value)
                paddr = int(h["resp__paddr"].value)
                if fault or paddr != expect:
                    errors += 1
                    cocotb.log.error("core %d: 0x%x -> fault %d paddr 0x%09x, expected "
                                     "0x%09x (seed %d)", i, vaddr, fault, paddr, expect, SEED)
                else:
                    if store:
                        words[paddr >> 3] = data
                        stores += 1
                    else:
                        checksum ^= (words[paddr >> 3] + i) & 0xFFFF_FFFF_FFFF_FFFF
                        loads += 1
                    accesses += 1
            if not c["valid"] and not c["accepted"]:
                c["cur"] = cur = next(c["stream"])
                h["req__vaddr"].value = cur[0]
                h["req__op"].value = 1 if cur[1] else 0
                h["req__valid"].value = 1
                c["valid"] = True
    seconds = time.perf_counter() - t0
    write_report({"test": "plain_driver", "cycles": ncycles, "accesses": accesses, "loads": loads,
             "stores": stores, "mem_ops": mem_ops, "errors": errors, "checksum": checksum,
             "loop_seconds": round(seconds, 4), "npages": wl.npages, "seed": SEED,
             "clock": "gpi"})
    assert errors == 0, f"{errors} wrong translations (seed {SEED})"


@cocotb.test()
async def test_cosim_throughput(dut):
    """Checked CPU accesses per second of the full co-simulation, workloads only."""
    from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    from pyrmap.pte import PAGE_SIZE
    from cosim.system import start_system
    npages = _num("BENCH_NPAGES", 32)
    count = _num("BENCH_ACCESSES", 200)
    s = await start_system(dut, SEED, nframes=npages + 48, command="rmap-cosim bench")
    arch = s.arch

    def setup():
        mm = s.new_process()
        addr = s.mmap(mm, 0, npages * PAGE_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS)
        return mm, addr

    mm, addr = await s.call("setup", setup)
    s.workload(0, mm, [("store", addr + i * PAGE_SIZE) for i in range(npages)])
    s.spawn("touch", s.workloads[-1].run, mm=mm)
    await s.run_async()
    before = s.shadow.loads + s.shadow.stores
    resumes0 = arch.env.stats["resumes"]
    c0 = arch.cycle()
    rng = random.Random(SEED)
    for core in range(arch.ncores):
        s.random_workload(core, mm, count, store_ratio=0.3,
                          rng=random.Random(rng.randrange(1 << 30)))
    prof = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    await s.run_async()
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["BENCH_PROFILE"])
    n = s.shadow.loads + s.shadow.stores - before
    verdicts = [{"name": nm, "checks": c, "violations": v, "verdict": vd}
                for nm, c, v, vd in s.checkers.verdicts()]
    write_report({"test": "cosim_throughput", "cycles": arch.cycle() - c0, "accesses": n,
             "loop_seconds": round(seconds, 4), "npages": npages, "seed": SEED,
             "host": {"resumes": arch.env.stats["resumes"] - resumes0,
                      "threads": arch.env.stats["threads"]},
             "memory": {"transactions": len(s.memory.log)},
             "checkers": verdicts})
    s.memory.stop()
    assert n == count * arch.ncores, f"{n} accesses completed, {count * arch.ncores} issued"
