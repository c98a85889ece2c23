"""cosim.cycles.CycleClock: which signal and which change make a cycle."""

from types import SimpleNamespace

import pytest
from cocotb.triggers import FallingEdge, RisingEdge, ValueChange

from cosim.cycles import TICK, CycleClock


def test_a_design_with_tick_counts_its_changes_else_the_rising_edges_of_clk():
    plain = SimpleNamespace(clk="clk")
    clock = CycleClock.of(plain)
    assert (clock.signal, clock.edge_type) == ("clk", RisingEdge)
    pulsed = SimpleNamespace(clk="clk", **{TICK: "tick"})
    clock = CycleClock.of(pulsed)
    assert (clock.signal, clock.edge_type) == ("tick", ValueChange)


def test_a_cycle_is_a_rising_edge_or_a_change():
    with pytest.raises(ValueError, match="RisingEdge or a ValueChange"):
        CycleClock("clk", FallingEdge)
