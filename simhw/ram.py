"""Ram: the storage array under SimMemory and LogRing.

In Amaranth's simulator it is an ``amaranth.lib.memory.Memory``.  For Verilog it is an instance
of :data:`RAM_VERILOG` (module ``simhw_ram``), whose array starts zeroed by one loop: Yosys's
Verilog backend writes one initialiser line per word of a Memory (its conversion took 88 s at
64 Ki words), which rules out the few MiB the fast path simulates.  Both read synchronously
(the data of the address presented in the previous cycle, the old word on a same-cycle write)
and write at the clock edge.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["Ram", "RAM_VERILOG", "RAM_MODULE"]

RAM_MODULE = "simhw_ram"

RAM_VERILOG = """\
// Simulation-only storage of the fast path (simhw.ram); zeroed at time 0.
module simhw_ram #(parameter WIDTH = 64, parameter ABITS = 4) (
  input clk,
  input [ABITS-1:0] raddr,
  output reg [WIDTH-1:0] rdata,
  input we,
  input [ABITS-1:0] waddr,
  input [WIDTH-1:0] wdata
);
  reg [WIDTH-1:0] storage [0:(1 << ABITS) - 1];
  integer i;
  initial begin
    for (i = 0; i < (1 << ABITS); i = i + 1) storage[i] = {WIDTH{1'b0}};
    rdata = {WIDTH{1'b0}};
  end
  always @(posedge clk) begin
    if (we) storage[waddr] <= wdata;
    rdata <= storage[raddr];
  end
endmodule
"""


class Ram(wiring.Component):
    """``2**abits`` words of ``width`` bits, one synchronous read port and one write port.

    Parameters
    ----------
    width, abits : int
    verilog : bool
        True: an instance of ``simhw_ram`` (add :data:`RAM_VERILOG` to the sources);
        False: an Amaranth Memory (Amaranth's simulator).

    Members
    -------
    raddr : In(abits), rdata : Out(width)
    we : In(1), waddr : In(abits), wdata : In(width)
    """

    def __init__(self, *, width: int, abits: int, verilog: bool = False):
        self.width = width
        self.abits = abits
        self.verilog = bool(verilog)
        #: The Amaranth Memory (None for Verilog): ``storage.data[i]`` in a simulator context.
        self.storage = None if verilog else Memory(shape=width, depth=1 << abits, init=[])
        super().__init__({"raddr": In(abits), "rdata": Out(width), "we": In(1),
                          "waddr": In(abits), "wdata": In(width)})

    def elaborate(self, platform):
        m = Module()
        if self.verilog:
            m.submodules.ram = Instance(
                RAM_MODULE, p_WIDTH=self.width, p_ABITS=self.abits,
                i_clk=ClockSignal(), i_raddr=self.raddr, o_rdata=self.rdata, i_we=self.we,
                i_waddr=self.waddr, i_wdata=self.wdata)
            return m
        m.submodules.storage = storage = self.storage
        rd = storage.read_port()
        wr = storage.write_port()
        m.d.comb += [rd.addr.eq(self.raddr), self.rdata.eq(rd.data), wr.en.eq(self.we),
                     wr.addr.eq(self.waddr), wr.data.eq(self.wdata)]
        return m
