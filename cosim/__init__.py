"""The cocotb side of rmap-cosim: build the RTL, answer its memory port, drive and check it.

Modules
-------
build
    Elaborate ``hdl.top.Top`` to Verilog and build it for Icarus or Verilator through
    ``cocotb_tools.runner``, cached per configuration hash, safe under pytest-xdist.
memory
    :class:`~cosim.memory.MemoryResponder`: the RTL's memory port answered from a
    :class:`pyrmap.physmem.PhysMem`, with seeded latency, bus errors and a transaction log.
scoreboard
    :class:`~cosim.scoreboard.MmuScoreboard`: every RTL translation replayed against
    ``pyrmap.walk.sv39_walk`` and the "may be cached" sets.
coverage
    A small functional-coverage model (cover points, crosses, a report, empty-bin check).
tb
    cocotb test modules (run inside the simulator).

Nothing here is imported by ``pyrmap`` or ``hdl``.
"""
