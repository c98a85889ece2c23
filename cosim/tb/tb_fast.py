"""cocotb module of the fast path (:mod:`cosim.fastrun`): the scenario runs with Python waking
only for faults, kernel work and log drains; it writes its report to ``COSIM_REPORT``."""

from __future__ import annotations

import cocotb


@cocotb.test()
async def test_fast(dut):
    """The fast-path scenario named by ``FAST_SCENARIO`` (default: reclaim)."""
    from cosim.fastrun import run_from_env
    await run_from_env(dut)


@cocotb.test()
async def test_gateware_memory_access(dut):
    """Words the engine's copy changed reach the gateware array in one bulk write (push) and
    are what the software port reads; what the software port writes is what it reads back;
    a push right after a port write keeps the write."""
    import os
    from cosim.cycles import CycleClock
    from cosim.fasthw import FastHardware, MirrorMem
    from simhw.abi import SwOp
    if not os.environ.get("FAST_SELFTEST"):
        return
    dut.rst.value = 1
    dut.sw__req__valid.value = 0
    dut.load.value = 0
    clock = CycleClock.of(dut)
    await clock.cycles(3)
    dut.rst.value = 0
    await clock.cycles(2)
    mem = MirrorMem(16)
    hw = FastHardware(dut, 2, mem, log_depth=16)
    addrs = (0x0, 0x8, 0x3000, 0x3ff8, 0x1234 * 8)
    for i, addr in enumerate(addrs):
        mem.write(addr, 0x1000 + i)
    assert await hw.push() == len(addrs)
    for i, addr in enumerate(addrs):
        got, _ = await hw.sw_op(SwOp.READ, addr)
        assert got == 0x1000 + i, (hex(addr), hex(got))
        await hw.sw_op(SwOp.WRITE, addr, 0x2000 + i)
        got, _ = await hw.sw_op(SwOp.READ, addr)
        assert got == 0x2000 + i, (hex(addr), hex(got))
    # A push right after a port write of another word keeps the write.
    await hw.sw_op(SwOp.WRITE, 0x3000, 0x1401)
    mem.write(0x3008, 0x77)
    assert await hw.push() == 1
    assert (await hw.sw_op(SwOp.READ, 0x3000))[0] == 0x1401
    assert (await hw.sw_op(SwOp.READ, 0x3008))[0] == 0x77
