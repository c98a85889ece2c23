"""Readable waves (cosim.waves): FSM states by name in the dump, no Yosys temporaries, and a
GTKWave save file that names only variables the dump has."""

from __future__ import annotations

import re

import pytest

from cosim import waves as cw

SMALL = """\
module top(clk, o);
  input clk;
  wire clk;
  output o;
  wire o;
  wire \\$1 ;
  wire [3:0] \\port$12$0 ;
  wire \\pte.a ;
  reg [1:0] fsm_state = 2'h0;
  assign \\$1 = ~clk;
  \\top.sub  sub (.clk(clk), .\\port$12$0 (\\port$12$0 ));
  assign o = \\$1 ;
endmodule
"""

STATES = {"top": {"fsm_state": {"0": "IDLE", "1": "READ_WAIT", "2": "DONE"}}}


def test_state_names_become_an_ascii_companion():
    text = cw.add_state_names(SMALL, STATES)
    assert "wire [71:0] fsm_state_name;" in text          # "READ_WAIT": 9 characters
    assert 'fsm_state == 1 ? "READ_WAIT"' in text
    assert text.index("fsm_state_name") < text.index("endmodule")


def test_temporaries_are_renamed_everywhere_and_left_out_of_the_dump_list():
    text = cw.waves_verilog(SMALL, STATES)
    assert "\\$1 " not in text and "\\_$1 " in text
    # the declaration, the use and the port connection agree
    assert text.count("\\_port$12$0 ") == 3
    nets = cw.public_nets(text)
    assert nets == ["top.clk", "top.o", "top.\\pte.a ", "top.fsm_state", "top.fsm_state_name"]
    module = cw.icarus_dump_module(text)
    assert "$dumpvars(0," in module and "top.fsm_state_name" in module and "_$1" not in module


@pytest.mark.parametrize("states, message", [
    ({"top.nope": {"s": {0: "A"}}}, "Module 'top.nope' of the state names is not in the Verilog"),
    ({"top": {"nope": {0: "A"}}}, "Signal 'nope' is not declared in module 'top'"),
    ({"top": {"clk": {0: "A"}, "o": {0: "B"}}}, None),
])
def test_state_names_name_what_is_wrong(states, message):
    if message is None:
        assert "clk_name" in cw.add_state_names(SMALL, states)
        clash = SMALL.replace("wire o;", "wire o;\n  wire clk_name;")
        with pytest.raises(ValueError, match="already declares 'clk_name'"):
            cw.add_state_names(clash, states)
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        cw.add_state_names(SMALL, states)


def test_every_fsm_of_the_design_has_its_state_names():
    from hdl.config import MmuConfig
    from hdl.export import verilog_and_states
    text, states = verilog_and_states(MmuConfig(ncores=2))
    assert states["top.core0.walker"]["walk_state"][0] == "IDLE"
    walker = set(states["top.core1.walker"]["walk_state"].values())
    assert {"READ", "READ_WAIT", "CHECK", "CAS", "CAS_WAIT", "DONE"} <= walker
    assert set(states) == {"top.arbiter", "top.core0", "top.core0.walker", "top.core1",
                           "top.core1.walker"}
    waves = cw.waves_verilog(text, states)
    assert not any(cw.is_temporary(n) for n in cw.public_nets(waves))


def _traces(save_file):
    out = []
    for line in save_file.read_text().splitlines():
        if line and line[0] not in "[@-*":
            out.append(re.sub(r"\[\d+:\d+\]$", "", line))
    return out


@pytest.mark.sim
def test_icarus_waves_have_named_states_no_temporaries_and_a_save_file():
    """A short reclaim run with waves: the walkers' states read by name in the dump, no
    variable is a Yosys temporary, and every trace of the save file is a variable of the dump,
    grouped per core."""
    from cosim.build import make_config, run
    from cosim.scenarios import TB_MODULE
    r = run(make_config(), "icarus", TB_MODULE, seed=1, testcase="test_scenario", waves=True,
            env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 1, "COSIM_ACCESSES": 8,
                 "COCOTB_TEST_FILTER": "test_scenario"})
    assert r.passed, (r.failures, r.log_tail())
    assert r.waves_file.exists() and r.save_file == r.waves_file.with_suffix(".gtkw")
    variables = cw.dump_variables(r.waves_file)
    assert not [n for n in variables if cw.is_temporary(n)]
    walked = {name for _, name in cw.state_changes(r.waves_file,
                                                    "top.core0.walker.walk_state_name")}
    assert {"IDLE", "READ", "READ_WAIT", "CHECK", "DONE"} <= walked, walked
    assert "?" not in walked
    traces = _traces(r.save_file)
    assert traces and set(traces) <= set(variables), set(traces) - set(variables)
    text = r.save_file.read_text()
    for group in ("-core 0", "-core 1", "-device", "-memory port"):
        assert group in text, group
    assert "top.core1.walker.walk_state_name" in traces
