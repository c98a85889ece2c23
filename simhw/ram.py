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
module simhw_ram #(parameter WIDTH = 64, parameter ABITS = 4, parameter LOAD = 0,
                   parameter LOADFILE = "load.hex") (
  input clk,
  input load,
  output reg loaded,
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
    loaded = 1'b0;
  end
  always @(posedge clk) begin
    // Bulk writes from software: the words the file lists ("@<index>" then the value), once
    // per toggle of ``load``; ``loaded`` follows it when they are in.
    if (LOAD && load != loaded) begin
      $readmemh(LOADFILE, storage);
      loaded <= load;
    end
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
    load_file : str, optional
        Verilog only: at the first clock edge where ``load`` differs from ``loaded``, the words
        the file lists (``$readmemh`` format, ``@<index>`` before each run of values; relative
        to the simulator's working directory) are written into the array, before that edge's
        own write, and ``loaded`` takes ``load``'s value.  Software writes a block of words
        this way in one edge instead of one simulator access per word: it writes the file,
        toggles ``load`` and must not touch the file again until ``loaded`` follows (the
        simulator reads the file when it evaluates the edge, which may come after software
        woke on that edge).

    Members
    -------
    raddr : In(abits), rdata : Out(width)
    we : In(1), waddr : In(abits), wdata : In(width)
    load : In(1), loaded : Out(1)
    """

    def __init__(self, *, width: int, abits: int, verilog: bool = False,
                 load_file: str | None = None):
        if load_file is not None and (not verilog or not isinstance(load_file, str)
                                      or '"' in load_file or not load_file):
            raise ValueError(f"Load file must be a non-empty string without quotes and needs "
                             f"verilog=True, not {load_file!r}")
        self.width = width
        self.abits = abits
        self.verilog = bool(verilog)
        self.load_file = load_file
        #: The Amaranth Memory (None for Verilog): ``storage.data[i]`` in a simulator context.
        self.storage = None if verilog else Memory(shape=width, depth=1 << abits, init=[])
        super().__init__({"raddr": In(abits), "rdata": Out(width), "we": In(1),
                          "waddr": In(abits), "wdata": In(width), "load": In(1),
                          "loaded": Out(1)})

    def elaborate(self, platform):
        m = Module()
        if self.verilog:
            m.submodules.ram = Instance(
                RAM_MODULE, p_WIDTH=self.width, p_ABITS=self.abits,
                p_LOAD=int(self.load_file is not None),
                p_LOADFILE=self.load_file or "load.hex", i_load=self.load,
                o_loaded=self.loaded,
                i_clk=ClockSignal(), i_raddr=self.raddr, o_rdata=self.rdata, i_we=self.we,
                i_waddr=self.waddr, i_wdata=self.wdata)
            return m
        m.submodules.storage = storage = self.storage
        rd = storage.read_port()
        wr = storage.write_port()
        m.d.comb += [rd.addr.eq(self.raddr), self.rdata.eq(rd.data), wr.en.eq(self.we),
                     wr.addr.eq(self.waddr), wr.data.eq(self.wdata)]
        return m
