"""cocotb tests of ``top`` (hdl.top.Top): random Sv39 walks, races and invalidations against
the golden model, and the DeviceMmu against SoftArch's device model.

Run through :func:`cosim.build.run` (``tests/test_rtl_mmu.py``), which passes:

``COSIM_SEED``      the run's seed (every random choice derives from it)
``COSIM_CONFIG``    JSON of the ``MmuConfig`` parameters the RTL was built with
``COSIM_REPORT``    where to write the JSON report (violations, coverage, counters, stats)
``COSIM_NREQ``      requests per core (default 150)

A test fails with every checker message in its assertion; the report keeps them too, so a
pytest test can assert *which* checker fired (the quirk tests do).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from pyrmap.arch import CORE_COUNTERS
from pyrmap.physmem import PhysMem

from ..dut import reset, write_report
from ..memory import Latency, MemoryResponder, cycle_now
from ..ports import read_counters
from ..scoreboard import MmuScoreboard, new_mmu_coverage
from .agents import CpuStimulus, InvalStimulus, PteRacer
from .tables import RandomTables, three_levels

NFRAMES = 64


def _params() -> dict:
    return json.loads(os.environ.get("COSIM_CONFIG", "{}"))


def _seed() -> int:
    return int(os.environ.get("COSIM_SEED", "1"))


def core_counters(dut, core: int) -> dict:
    return read_counters(dut, f"cpu{core}", CORE_COUNTERS)


@cocotb.test()
async def test_random_mmu(dut):
    """Random tables and request streams on every core, PTE races, invalidation races."""
    t0 = time.monotonic()
    params = _params()
    seed = _seed()
    ncores = int(params.get("ncores", 2))
    svadu = bool(params.get("svadu", True))
    asid_bits = int(params.get("asid_bits", 9))
    nreq = int(os.environ.get("COSIM_NREQ", "150"))
    log = logging.getLogger("cosim.tb")
    log.info("seed %d, %d cores, %d requests per core, config %s", seed, ncores, nreq, params)
    rng = random.Random(seed)

    mem = PhysMem(NFRAMES)
    tables = RandomTables(mem, rng.randrange(1 << 30), ncontexts=max(2, ncores),
                          targets_per_context=28, asid_bits=asid_bits)
    responder = MemoryResponder(dut, mem, Latency(rng.randrange(1 << 30)),
                                bus_errors=tables.bus_errors)
    sb = MmuScoreboard(ncores, svadu=svadu, mem_log=responder.log, by_src=responder.by_src,
                       initial_words=mem.words, coverage=new_mmu_coverage(ncores, svadu),
                       asid_bits=asid_bits)
    await reset(dut, ncores)
    responder.start()
    invals = [InvalStimulus(dut, c, tables, sb, random.Random(rng.randrange(1 << 30)))
              for c in range(ncores)]
    racer = PteRacer(dut, responder, tables, random.Random(rng.randrange(1 << 30)), invals)
    cpus = [CpuStimulus(dut, c, ncores, tables, sb, random.Random(rng.randrange(1 << 30)),
                        nreq)
            for c in range(ncores)]
    bg = [cocotb.start_soon(d.run()) for d in invals] + [cocotb.start_soon(racer.run())]
    fg = [cocotb.start_soon(c.run()) for c in cpus]
    for task in fg:
        await task
    racer.stop = True
    for d in invals:
        d.stop = True
    for task in bg:                 # each finishes its pending request, then sees stop
        await task
    await ClockCycles(dut.clk, 2)
    responder.stop()

    sb.check_hw_writes()
    sb.check_memory(mem.words)
    counters = {c: core_counters(dut, c) for c in range(ncores)}
    for c in range(ncores):
        sb.check_counters(c, counters[c])
    for v in responder.violations:
        sb.fail("protocol", -1, v)
    cycles = cycle_now()
    wall = time.monotonic() - t0
    summary = sb.summary()
    log.info("%d responses in %d cycles (%.0f cycles/s); racer %s; invals %s",
             sb.responses, cycles, cycles / max(wall, 1e-9), racer.counts,
             [len(d.done) for d in invals])
    log.info("\n%s", sb.coverage.report())
    write_report(under="test_random_mmu", data={
        "seed": seed, "params": params, "cycles": cycles, "wall_s": wall,
        "summary": summary, "coverage": sb.coverage.to_dict(), "counters": counters,
        "racer": racer.counts, "invals": [len(d.done) for d in invals],
        "mem_txns": len(responder.log)})
    assert sb.responses == ncores * nreq, \
        f"only {sb.responses} of {ncores * nreq} requests completed (seed {seed})"
    assert not sb.violations, (f"{len(sb.violations)} violation(s) (seed {seed}):\n"
                               + "\n".join(str(v) for v in sb.violations[:10]))


@cocotb.test()
async def test_smoke(dut):
    """Directed: one 4 KiB mapping; a load walks (sets A by CAS), the same load then hits, a
    store re-walks to set D, an invalidation removes the entry and the next load walks."""
    from pyrmap.arch import InvalKind
    from pyrmap.pte import PAGE_SHARED, _PAGE_A, _PAGE_D, AccessType, FaultKind, pfn_pte
    from ..scoreboard import CpuTxn, InvalTxn
    params = _params()
    ncores = int(params.get("ncores", 2))
    mem = PhysMem(16)
    root, l1, l0 = 1, 2, 3
    va = 0x4020_3000
    leaf = three_levels(mem, va, root, l1, l0)
    mem.write(leaf, pfn_pte(0x1234, PAGE_SHARED))
    responder = MemoryResponder(dut, mem, Latency(_seed(), fast=(0, 1), p_slow=0.0))
    sb = MmuScoreboard(ncores, svadu=bool(params.get("svadu", True)), mem_log=responder.log,
                       by_src=responder.by_src, initial_words=mem.words)
    await reset(dut, ncores)
    responder.start()

    async def access(op, vaddr):
        dut.cpu0__req__vaddr.value = vaddr
        dut.cpu0__req__op.value = int(op)
        dut.cpu0__req__user.value = 1
        dut.cpu0__req__sum.value = 0
        dut.cpu0__req__asid.value = 5
        dut.cpu0__req__root.value = root
        dut.cpu0__req__valid.value = 1
        while True:
            await RisingEdge(dut.clk)
            if int(dut.cpu0__req__ready.value):
                break
        t = CpuTxn(0, vaddr, op, True, False, 5, root, cycle_now())
        dut.cpu0__req__valid.value = 0
        while not int(dut.cpu0__resp__valid.value):
            await RisingEdge(dut.clk)
        t.resp_cycle = cycle_now()
        t.paddr = int(dut.cpu0__resp__paddr.value)
        t.fault = FaultKind(int(dut.cpu0__resp__fault.value))
        t.hit = bool(int(dut.cpu0__resp__hit.value))
        sb.on_cpu(t)
        await RisingEdge(dut.clk)
        return t

    t1 = await access(AccessType.LOAD, va + 0x18)
    assert (t1.fault, t1.hit, t1.paddr) == (FaultKind.NONE, False, 0x1234018), t1.describe()
    assert mem.read(leaf) & _PAGE_A and not mem.read(leaf) & _PAGE_D, hex(mem.read(leaf))
    t2 = await access(AccessType.LOAD, va + 0x20)
    assert t2.hit and t2.paddr == 0x1234020, t2.describe()
    t3 = await access(AccessType.STORE, va + 0x28)
    assert not t3.hit and t3.fault == FaultKind.NONE, t3.describe()
    assert mem.read(leaf) & _PAGE_D, hex(mem.read(leaf))
    t4 = await access(AccessType.STORE, va + 0x30)
    assert t4.hit, t4.describe()
    dut.cpu0__inval__kind.value = int(InvalKind.VA_ASID)
    dut.cpu0__inval__vaddr.value = va
    dut.cpu0__inval__asid.value = 5
    dut.cpu0__inval__valid.value = 1
    inv = InvalTxn(0, InvalKind.VA_ASID, va, 5, cycle_now() + 1)
    sb.on_inval_request(inv)
    while True:
        await RisingEdge(dut.clk)
        if int(dut.cpu0__inval__ack.value):
            break
    inv.ack_cycle = cycle_now()
    dut.cpu0__inval__valid.value = 0
    sb.on_inval_ack(inv)
    t5 = await access(AccessType.LOAD, va)
    assert not t5.hit and t5.paddr == 0x1234000, t5.describe()
    responder.stop()
    sb.check_hw_writes()
    sb.check_memory(mem.words)
    sb.check_counters(0, core_counters(dut, 0))
    assert not sb.violations, "\n".join(map(str, sb.violations))


@cocotb.test()
async def test_device(dut):
    """DeviceMmu: random accesses, fault records, fills, young test-and-clear and the four
    invalidation kinds, compared step by step with SoftArch's device model."""
    from pyrmap.softarch import SoftArch
    from ..device import DeviceDriver
    from .device import DeviceChecker
    params = _params()
    seed = _seed()
    ncores = int(params.get("ncores", 2))
    nsteps = int(os.environ.get("COSIM_NDEV", "300"))
    rng = random.Random(seed ^ 0xDE5)
    mem = PhysMem(8)
    responder = MemoryResponder(dut, mem, Latency(seed))
    arch = SoftArch(mem, ncores, seed=seed, dev_entries=int(params.get("dev_entries", 8)),
                    asid_bits=int(params.get("asid_bits", 9)))
    await reset(dut, ncores)
    responder.start()
    chk = DeviceChecker(DeviceDriver(dut), arch, rng,
                        dev_entries=int(params.get("dev_entries", 8)),
                        asid_bits=int(params.get("asid_bits", 9)))
    for _ in range(nsteps):
        await chk.step()
        if len(chk.violations) > 20:
            break
    await chk.directed_global()
    await ClockCycles(dut.clk, 2)           # counters update at the edge after the last op
    chk.check_counters()
    responder.stop()
    write_report(under="test_device", data={"seed": seed, "params": params, "stats": chk.stats,
                                 "violations": [str(v) for v in chk.violations[:50]],
                                 "counters": chk.drv.counters()})
    cocotb.log.info("device: %s", chk.stats)
    assert not chk.violations, (f"{len(chk.violations)} device violation(s) (seed {seed}):\n"
                                + "\n".join(str(v) for v in chk.violations[:10]))
