"""The exported Verilog, unpatched, on Icarus (-g2005) with a plain Verilog testbench: a walk,
then a TLB hit, then an invalidation and a walk again.  Guards against behaviour that only
Amaranth's simulator shows (X at time 0, processes that never run)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hdl.config import MmuConfig
from hdl.export import export

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# Root table at PPN 0x80; VA 0x1000 -> PA 0x555000 (V R W U A D), tables at 0x81, 0x82.
MEMORY = {0x80000: (0x81 << 10) | 1, 0x81000: (0x82 << 10) | 1, 0x82008: (0x555 << 10) | 0xD7}


def _testbench(top) -> str:
    decls, conns = [], []
    for path, member, value in top.signature.flatten(top):
        name = "__".join(str(p) for p in path)
        width = len(value)
        rng = f"[{width - 1}:0] " if width > 1 else ""
        if member.flow.name == "In":
            decls.append(f"  reg {rng}{name} = 0;")
        else:
            decls.append(f"  wire {rng}{name};")
        conns.append(f"    .{name}({name})")
    mem_cases = "\n".join(f"        56'h{a:x}: mem__resp__rdata <= 64'h{v:x};"
                          for a, v in MEMORY.items())
    return f"""
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1;
  always #5 clk = ~clk;
{chr(10).join(decls)}
  top dut(
    .clk(clk), .rst(rst),
{("," + chr(10)).join(conns)}
  );
  integer errors = 0;
  always @(posedge clk) begin
    mem__resp__valid <= 0;
    mem__req__ready <= 1;
    if (mem__req__valid && mem__req__ready) begin
      mem__resp__valid <= 1;
      mem__resp__err <= 0;
      case (mem__req__addr)
{mem_cases}
        default: mem__resp__rdata <= 64'h0;
      endcase
    end
  end
  task translate(input [63:0] va, input expect_hit, input [55:0] expect_pa);
    integer n;
    begin
      @(negedge clk);
      cpu0__req__vaddr = va; cpu0__req__op = 0; cpu0__req__user = 1;
      cpu0__req__root = 44'h80; cpu0__req__valid = 1;
      while (!cpu0__req__ready) @(negedge clk);
      @(negedge clk);
      cpu0__req__valid = 0;
      n = 0;
      while (!cpu0__resp__valid && n < 200) begin @(negedge clk); n = n + 1; end
      if (cpu0__resp__valid !== 1'b1 || cpu0__resp__fault !== 2'd0
          || cpu0__resp__hit !== expect_hit || cpu0__resp__paddr !== expect_pa) begin
        $display("FAIL va=%h valid=%b fault=%b hit=%b paddr=%h", va, cpu0__resp__valid,
                 cpu0__resp__fault, cpu0__resp__hit, cpu0__resp__paddr);
        errors = errors + 1;
      end
    end
  endtask
  initial begin
    repeat (3) @(negedge clk);
    rst = 0;
    translate(64'h1010, 0, 56'h555010);
    translate(64'h1ff8, 1, 56'h555ff8);
    @(negedge clk);
    cpu0__inval__kind = 0; cpu0__inval__valid = 1;
    while (!cpu0__inval__ack) @(negedge clk);
    cpu0__inval__valid = 0;
    translate(64'h1020, 0, 56'h555020);
    if (cpu0__perf__hits !== 32'd1 || cpu0__perf__walks !== 32'd2 || cpu0__perf__invals !== 32'd1)
      begin
        $display("FAIL counters hits=%0d walks=%0d invals=%0d", cpu0__perf__hits,
                 cpu0__perf__walks, cpu0__perf__invals);
        errors = errors + 1;
      end
    if (errors == 0) $display("PASS");
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("params", [dict(ncores=2), dict(ncores=1, tlb_entries=8, tlb_ways=2,
                                                         superpage_entries=2)],
                         ids=["fa", "2way"])
def test_raw_verilog_on_icarus(params, tmp_path):
    assert shutil.which("iverilog"), "iverilog is installed from apt (make sims)"
    from hdl.top import Top
    config = MmuConfig(**params)
    path = export(config, tmp_path)
    tb = tmp_path / "tb.v"
    tb.write_text(_testbench(Top(config)))
    vvp = tmp_path / "tb.vvp"
    r = subprocess.run(["iverilog", "-g2005", "-s", "tb", "-o", str(vvp), str(tb), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["vvp", "-n", str(vvp)], capture_output=True, text=True, timeout=120)
    assert "PASS" in r.stdout, r.stdout + r.stderr


def test_sources_digest_is_the_imported_code(monkeypatch):
    """The export stamp describes the hdl this process imported: it follows
    ``hdl.SOURCES_DIGEST`` (taken at import), not the files as they are now, so a process
    started before a checkout cannot stamp old Verilog as new."""
    import hdl
    from cosim.build import hdl_sources_digest
    assert hdl.SOURCES_DIGEST == hdl._sources_digest()     # nothing changed since import
    before = hdl_sources_digest()
    monkeypatch.setattr(hdl, "SOURCES_DIGEST", "0" * 16)
    assert hdl_sources_digest() != before


def test_fast_build_key_is_the_imported_simulation_gateware(monkeypatch):
    """The fast path's build key follows ``simhw.SOURCES_DIGEST`` (taken at import), not the
    files as they are now: a sweep worker started before a checkout elaborates the old FastTop
    and must not store it under the new sources' key."""
    import simhw
    from cosim import fastbuild
    from cosim.build import make_config
    assert simhw.SOURCES_DIGEST == simhw._sources_digest()  # nothing changed since import
    config, params = make_config(), fastbuild.FastParams(words_log2=16)
    before = fastbuild._digest(config, params)
    monkeypatch.setattr(simhw, "SOURCES_DIGEST", "0" * 16)
    assert fastbuild._digest(config, params) != before
