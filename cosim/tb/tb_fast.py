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
    """Words written into the storage array through the simulator are what the software port
    reads, and what the software port writes is what the array holds."""
    import os
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles
    from cosim.fasthw import FastHardware, MirrorMem
    from simhw.memory import SwOp
    if not os.environ.get("FAST_SELFTEST"):
        return
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    dut.sw__req__valid.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    hw = FastHardware(dut, 2, MirrorMem(16), log_depth=16)
    for i, addr in enumerate((0x0, 0x8, 0x3000, 0x3ff8, 0x1234 * 8)):
        hw.array[addr >> 3].value = 0x1000 + i
        got, _ = await hw.sw_op(SwOp.READ, addr)
        assert got == 0x1000 + i, (hex(addr), hex(got))
        await hw.sw_op(SwOp.WRITE, addr, 0x2000 + i)
        assert int(hw.array[addr >> 3].value) == 0x2000 + i
        hw.array[addr >> 3].value = 0x3000 + i
        await ClockCycles(dut.clk, 3)
        got, _ = await hw.sw_op(SwOp.READ, addr)
        assert got == 0x3000 + i, (hex(addr), hex(got))
    # A write through the port right after words were written through the simulator.
    for k in range(4):
        hw.array[0x2000 + k].value = 0x77 + k
        await hw.sw_op(SwOp.READ, 0x3000)
        hw.array[0x2100 + k].value = 0x99
        await hw.sw_op(SwOp.WRITE, 0x3000, 0x1401 + k)
        assert int(hw.array[0x600].value) == 0x1401 + k, (k, hex(int(hw.array[0x600].value)))
