"""The RTL's memory port, answered from the one :class:`~pyrmap.physmem.PhysMem`.

:class:`MemoryResponder` drives ``mem__req__ready`` and ``mem__resp__{valid,rdata,err}`` and
samples ``mem__req__{valid,op,addr,wdata,cmp,src}`` (hdl/PORTS.md).  It also performs the
testbench's own software PTE operations (:meth:`MemoryResponder.sw_xchg`, ``sw_cas``,
``sw_store``) on the same memory, so that hardware and software operations are totally
ordered: each one takes effect at one point in the log and is atomic.

Timing.  Cycles are numbered by rising edges of ``clk`` since time 0 (see :func:`cycle_now`).
A request whose handshake is sampled at edge ``e`` gets a latency ``L >= 0`` from the seeded
:class:`Latency`; its memory operation is performed after edge ``e + L`` and its response is
seen by the DUT at edge ``e + L + 1`` (``resp.cycle``).  Bus errors come from addresses outside
the ``PhysMem``, from the injected :class:`BusErrorRange` s and, at random, from ``faults``
(a :class:`pyrmap.faults.FaultInjector`, kind ``bus_error``, drawn per hardware transaction);
an erroring WRITE or CAS changes nothing.

Every transaction, hardware or software, goes into :attr:`MemoryResponder.log` as a
:class:`MemTxn` with a sequence number, so a checker can replay exactly what the RTL saw.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from pyrmap.physmem import BusError, PhysMem

__all__ = ["MemOp", "MemTxn", "Latency", "BusErrorRange", "MemoryResponder", "cycle_now",
           "CLOCK_PERIOD_NS", "SW"]

#: Clock period used by every testbench in this package.
CLOCK_PERIOD_NS = 10

#: ``MemTxn.src`` of an operation done by the testbench's software, not the RTL.
SW = -1


def cycle_now() -> int:
    """The number of the current clock cycle (rising edges since time 0); 0 outside a
    simulation (unit tests of the checkers)."""
    try:
        import cocotb
        if not cocotb.is_simulation:
            return 0
        from cocotb.simtime import get_sim_time
        return int(get_sim_time("ns")) // CLOCK_PERIOD_NS
    except Exception:
        return 0


class MemOp(enum.IntEnum):
    """Memory operations.  0..2 are the RTL port's encoding; the rest are software-only."""
    READ = 0
    WRITE = 1
    CAS = 2
    XCHG = 3      # software: atomic exchange


@dataclass
class MemTxn:
    """One memory operation as it took effect.

    Attributes
    ----------
    seq : int
        Position in the total order of memory operations.
    src : int
        Requesting core (the port's ``src``), or :data:`SW` for a testbench operation.
    op : MemOp
    addr : int
        Byte address of the 64-bit word.
    wdata : int
        WRITE data, CAS/XCHG new value.
    cmp : int
        CAS expected value.
    rdata : int
        The value found (READ data; CAS/XCHG old value; WRITE: the value overwritten).
    err : bool
        Bus error (nothing changed).
    req_cycle, resp_cycle : int
        Handshake edge of the request and the edge at which the DUT sees the response
        (both equal to the current cycle for software operations).
    who : str
        Free-form tag (e.g. ``"sw xchg racer"``) for violation messages.
    """
    seq: int
    src: int
    op: MemOp
    addr: int
    wdata: int = 0
    cmp: int = 0
    rdata: int = 0
    err: bool = False
    req_cycle: int = 0
    resp_cycle: int = 0
    who: str = ""

    @property
    def wrote(self) -> bool:
        """True when the operation changed (or at least stored to) the word."""
        if self.err:
            return False
        if self.op in (MemOp.WRITE, MemOp.XCHG):
            return True
        return self.op == MemOp.CAS and self.rdata == self.cmp

    def describe(self) -> str:
        who = "sw" if self.src == SW else f"core{self.src}"
        op = self.op.name
        extra = ""
        if self.op == MemOp.CAS:
            extra = f" cmp=0x{self.cmp:x} new=0x{self.wdata:x}"
        elif self.op in (MemOp.WRITE, MemOp.XCHG):
            extra = f" new=0x{self.wdata:x}"
        res = " BUS ERROR" if self.err else f" -> 0x{self.rdata:x}"
        return (f"#{self.seq} cycle {self.resp_cycle} {who} {op} 0x{self.addr:09x}{extra}{res}"
                + (f" ({self.who})" if self.who else ""))


class Latency:
    """A seeded distribution of memory latencies (extra cycles before the response).

    Parameters
    ----------
    seed : int
    fast : tuple of (int, int)
        Inclusive range of the common, short latencies.
    slow : tuple of (int, int)
        Inclusive range of the occasional long latencies that open race windows.
    p_slow : float
        Probability of drawing from ``slow``.

    Raises
    ------
    ValueError
        A negative or empty range, or a probability outside [0, 1].
    """

    def __init__(self, seed: int, fast: tuple[int, int] = (0, 2),
                 slow: tuple[int, int] = (6, 24), p_slow: float = 0.15):
        for name, (lo, hi) in (("fast", fast), ("slow", slow)):
            if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 0 or hi < lo:
                raise ValueError(f"Latency range {name} must be 0 <= lo <= hi, not {(lo, hi)!r}")
        if not 0.0 <= p_slow <= 1.0:
            raise ValueError(f"Slow-latency probability must be in [0, 1], not {p_slow!r}")
        self.rng = random.Random(seed)
        self.fast, self.slow, self.p_slow = fast, slow, p_slow

    def draw(self) -> int:
        lo, hi = self.slow if self.rng.random() < self.p_slow else self.fast
        return self.rng.randint(lo, hi)


@dataclass(frozen=True)
class BusErrorRange:
    """Addresses [lo, hi) answer with a bus error for the operations in ``ops``."""
    lo: int
    hi: int
    ops: frozenset = frozenset({MemOp.READ, MemOp.WRITE, MemOp.CAS})

    def __post_init__(self):
        if not 0 <= self.lo < self.hi:
            raise ValueError(f"Bus error range must have 0 <= lo < hi, not "
                             f"[0x{self.lo:x}, 0x{self.hi:x})")

    def hits(self, addr: int, op: MemOp) -> bool:
        return self.lo <= addr < self.hi and op in self.ops


class MemoryResponder:
    """Answers the RTL memory port from ``mem``; logs every transaction.

    Parameters
    ----------
    dut
        The cocotb handle of ``top``.
    mem : PhysMem
        The physical memory shared with the testbench's software.
    latency : Latency
        Per-request latency; seeded.
    bus_errors : iterable of BusErrorRange
        Injected bus errors (besides addresses outside ``mem``).
    prefix : str
        Port prefix (``"mem"``).

    Members (ports)
    ---------------
    drives ``mem__req__ready`` (1 while idle), ``mem__resp__valid`` (one-cycle pulse),
    ``mem__resp__rdata``, ``mem__resp__err``; samples ``mem__req__valid``, ``__op``,
    ``__addr``, ``__wdata``, ``__cmp``, ``__src`` at each rising edge.

    Attributes
    ----------
    log : list of MemTxn
        Every operation in order (hardware and software).
    by_src : dict of int -> list of MemTxn
        The hardware transactions of each requester, in order.
    listeners : list of callables
        Each is called as ``fn(txn)`` right after a hardware operation took effect (racers
        use this to time software changes against walks).
    violations : list of str
        Protocol violations seen on the port (a request while one is outstanding, a bad op).
    """

    def __init__(self, dut, mem: PhysMem, latency: Latency, *,
                 bus_errors: Iterable[BusErrorRange] = (), prefix: str = "mem"):
        self.dut = dut
        self.mem = mem
        self.latency = latency
        self.bus_errors = list(bus_errors)
        self.log: list[MemTxn] = []
        self.by_src: dict[int, list[MemTxn]] = defaultdict(list)
        self.listeners: list[Callable[[MemTxn], None]] = []
        self.violations: list[str] = []
        self._p = prefix
        self._task = None
        self.logger = logging.getLogger("cosim.mem")
        self.busy_cycles = 0
        #: Random bus errors on hardware transactions (``pyrmap.faults.FaultInjector``, kind
        #: ``bus_error``), or None.
        self.faults = None

    # --- signals --------------------------------------------------------------------------

    def _sig(self, name: str):
        return getattr(self.dut, f"{self._p}__{name}")

    # --- memory semantics -----------------------------------------------------------------

    def _bus_error(self, addr: int, op: MemOp) -> bool:
        if not self.mem.contains(addr):
            return True
        if any(r.hits(addr, op) for r in self.bus_errors):
            return True
        return self.faults is not None and self.faults.fail("bus_error")

    def _perform(self, src: int, op: MemOp, addr: int, wdata: int, cmp: int,
                 req_cycle: int, resp_cycle: int, who: str = "") -> MemTxn:
        txn = MemTxn(len(self.log), src, op, addr, wdata, cmp, 0, False, req_cycle,
                     resp_cycle, who)
        hw = src != SW
        if addr & 7:
            self.violations.append(f"cycle {req_cycle}: core{src} {op.name} at unaligned "
                                   f"address 0x{addr:x}")
            txn.err = True
        elif hw and self._bus_error(addr, op):
            txn.err = True
        else:
            try:
                old = self.mem.read(addr)
            except BusError:
                txn.err = True
            else:
                txn.rdata = old
                if op in (MemOp.WRITE, MemOp.XCHG) or (op == MemOp.CAS and old == cmp):
                    self.mem.write(addr, wdata)
        self.log.append(txn)
        if hw:
            self.by_src[src].append(txn)
        self.logger.debug("%s", txn.describe())
        return txn

    # --- software operations (atomic, logged, zero simulated time) -------------------------

    def sw_read(self, addr: int, who: str = "sw") -> int:
        return self._sw(MemOp.READ, addr, 0, 0, who).rdata

    def sw_xchg(self, addr: int, new: int, who: str = "sw") -> int:
        """Atomic exchange; returns the old value."""
        return self._sw(MemOp.XCHG, addr, new, 0, who).rdata

    def sw_cas(self, addr: int, old: int, new: int, who: str = "sw") -> int:
        """Atomic compare-and-swap; returns the value found (== old on success)."""
        return self._sw(MemOp.CAS, addr, new, old, who).rdata

    def sw_store(self, addr: int, new: int, who: str = "sw") -> None:
        """Plain store (legal on a PTE no TLB can cache: a non-present one)."""
        self._sw(MemOp.WRITE, addr, new, 0, who)

    def _sw(self, op, addr, wdata, cmp, who) -> MemTxn:
        c = cycle_now()
        txn = self._perform(SW, op, addr, wdata, cmp, c, c, who)
        if txn.err:
            raise BusError(addr)
        return txn

    # --- the port -------------------------------------------------------------------------

    def start(self):
        import cocotb
        self._task = cocotb.start_soon(self._run())
        return self._task

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        from cocotb.triggers import RisingEdge
        clk = self.dut.clk
        ready, rvalid = self._sig("req__ready"), self._sig("resp__valid")
        rdata, rerr = self._sig("resp__rdata"), self._sig("resp__err")
        valid = self._sig("req__valid")
        op_s, addr_s = self._sig("req__op"), self._sig("req__addr")
        wdata_s, cmp_s, src_s = self._sig("req__wdata"), self._sig("req__cmp"), self._sig("req__src")
        ready.value = 1
        rvalid.value = 0
        rdata.value = 0
        rerr.value = 0
        pending = None          # (due_edge, src, op, addr, wdata, cmp, req_edge)
        pulsing = False
        while True:
            await RisingEdge(clk)
            now = cycle_now()
            if pulsing:         # our pulse of the previous cycle ends
                pulsing = False
                rvalid.value = 0
                ready.value = 1
                continue        # ready was 0 during that cycle: no handshake at this edge
            if pending is None:
                if int(valid.value):
                    try:
                        op = MemOp(int(op_s.value))
                    except ValueError:
                        self.violations.append(f"cycle {now}: memory request with op "
                                               f"{int(op_s.value)}")
                        op = MemOp.READ
                    pending = (now + self.latency.draw(), int(src_s.value), op,
                               int(addr_s.value), int(wdata_s.value), int(cmp_s.value), now)
                    ready.value = 0
            if pending is not None:
                self.busy_cycles += 1
                if now >= pending[0]:
                    _, src, op, addr, wdata, cmp, req_edge = pending
                    txn = self._perform(src, op, addr, wdata, cmp, req_edge, now + 1)
                    rvalid.value = 1
                    rdata.value = txn.rdata
                    rerr.value = int(txn.err)
                    pending = None
                    pulsing = True
                    for fn in self.listeners:
                        fn(txn)
