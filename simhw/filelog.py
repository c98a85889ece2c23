"""FileLog: a simulation-only tap that writes every record a ring takes to a file.

Software drains a ring in blocks: instead of one simulator read per record, it reads the
records' lines from this file (:func:`simhw.abi.record_bytes` bytes each, in push order)
between the ring's read and write pointers.  For Verilog only (module :data:`FILELOG_MODULE`, Verilog text
:data:`FILELOG_VERILOG`): the simulator opens the file in its working directory at time 0 and
writes one line per record with ``$fwrite`` (``%h``: every hex digit of the record, most
significant first, zero-padded, then a newline), buffered by the C library; the reader flushes
the process's C streams (``fflush(NULL)``: the simulator runs in the reader's process) before it
reads.  Icarus and Verilator both implement ``$fopen``/``$fwrite`` on C streams.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["FileLog", "FILELOG_MODULE", "FILELOG_VERILOG"]

FILELOG_MODULE = "simhw_filelog"

FILELOG_VERILOG = """\
// Simulation-only record tap of the fast path (simhw.filelog): one hex line per record.
module simhw_filelog #(parameter WIDTH = 8, parameter PATH = "records.hex") (
  input clk,
  input valid,
  input [WIDTH-1:0] data
);
  integer fd;
  initial fd = $fopen(PATH, "w");
  always @(posedge clk) begin
    if (valid) $fwrite(fd, "%h\\n", data);
  end
endmodule
"""


class FileLog(wiring.Component):
    """Writes ``data`` to the file ``path`` at every clock edge where ``valid`` is high.

    Parameters
    ----------
    width : int
        Bits per record.
    path : str
        The file, relative to the simulator's working directory.

    Members
    -------
    valid : In(1), data : In(width)
    """

    def __init__(self, *, width: int, path: str):
        if not isinstance(path, str) or not path or '"' in path or "\\" in path:
            raise ValueError(f"File log path must be a non-empty string without quotes or "
                             f"backslashes, not {path!r}")
        self.width = width
        self.path = path
        super().__init__({"valid": In(1), "data": In(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tap = Instance(FILELOG_MODULE, p_WIDTH=self.width, p_PATH=self.path,
                                    i_clk=ClockSignal(), i_valid=self.valid,
                                    i_data=self.data)
        return m
