"""CosimArch: the engine's arch seam performed through the simulated RTL MMU.

:class:`CosimArch` implements :class:`pyrmap.arch.Arch` for code running in host threads
(:mod:`cosim.host`):

* **PTE operations** (load, plain store, exchange, test-and-clear-young, write-protect,
  compare-and-swap) are performed on the shared :class:`~pyrmap.physmem.PhysMem` at a rising
  clock edge, in the scheduler, between two of the memory model's transactions: the memory
  model answers the walkers' READ/WRITE/CAS requests one at a time, each at one instant, so an
  arch atomic is never split by a walker's A/D compare-and-swap (the walker's CAS fails and it
  re-walks).  One ``resume`` round trip per operation.
* **TLB flushes** drive ``cpu{i}__inval__*`` of every targeted core at once (``mm.cpu_vm_mask``,
  every core for ``flush_tlb_all``), hold ``valid`` until each core's ``ack`` pulse and return
  when every core acknowledged.  One round trip per flush; the cycles each took are recorded.
* ``switch_mm`` records the satp (ASID, root PPN) a core's :class:`cosim.cpu.CpuRequester` sends
  with its requests; ``cpu_access`` (what the engine's ``CpuWorkload`` calls) performs one
  load or store through a core's driver; ``tlb_entries`` reads the RTL's TLB entry registers (``e<i>``, ``sp<i>``)
  through the simulator handles.
* Locks, yield points and thread identity come from the :class:`cosim.host.HostEnv`.

Every operation is counted (:attr:`CosimArch.stats`) and every PTE store is kept in a per-PTE
history (with the walkers' A/D writes from the memory model's log, when one is attached) that
violation reports print.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import cocotb
from cocotb.simtime import convert
from cocotb.triggers import Lock as CoLock
from cocotb.triggers import Timer

from pyrmap.arch import (ARCH_COUNTERS, CORE_COUNTERS, DEVICE_COUNTERS, Arch, InvalKind,
                         PteWrite, TlbEntry)
from pyrmap.pte import PAGE_SIZE, _PAGE_A, _PAGE_W, AccessType, FaultKind, describe

from .accesscheck import Inval, PteChange, PteLog, inval_record, judge_access
from .cpu import CpuRequester
from .cycles import CycleClock
from .device import DeviceDriver
from .inval import InvalDriver
from .ports import read_counters
from .scoreboard import CpuTxn, InvalTxn

__all__ = ["CosimArch", "FlushRecord", "TlbReader"]

MASK64 = (1 << 64) - 1


@dataclass
class FlushRecord:
    """One flush: what, which cores, when it started, how many cycles until the last ack."""
    what: str
    cores: tuple[int, ...]
    requests: int
    start_cycle: int
    cycles: int
    thread: str


class TlbReader:
    """Reads the RTL TLB entry registers of every core (and the device) through dut handles.

    The hierarchy is found once by trying the names Amaranth gives submodules
    (``core0.tlb.e0``, ``cpu0_mmu.tlb.e0``, ...); when none is found ``available`` is False.
    """

    CORE_PATHS = ("core{i}.tlb", "core{i}_mmu.tlb", "cores{i}.tlb", "mmu{i}.tlb",
                  "core_{i}.tlb", "U$core{i}.tlb")
    DEV_PATHS = ("dev.tlb", "device.tlb", "dev_mmu.tlb", "devmmu.tlb")

    def __init__(self, dut, ncores: int, asid_bits: int, entries: int, sp_entries: int,
                 dev_entries: int):
        from hdl.layouts import tlb_entry_to_arch
        self._to_arch = tlb_entry_to_arch
        self.asid_bits = asid_bits
        self.core_handles: list[list] = []
        self.dev_handles: list = []
        for i in range(ncores):
            tlb = self._find(dut, [p.format(i=i) for p in self.CORE_PATHS])
            self.core_handles.append(self._regs(tlb, entries, sp_entries) if tlb is not None
                                     else [])
        dev = self._find(dut, list(self.DEV_PATHS))
        if dev is not None:
            self.dev_handles = self._regs(dev, dev_entries, 0)
        self.available = all(self.core_handles) and ncores > 0

    @staticmethod
    def _find(dut, paths):
        for path in paths:
            h = dut
            try:
                for part in path.split("."):
                    h = h[part] if "$" in part else getattr(h, part)
                return h
            except (AttributeError, KeyError, IndexError, TypeError):
                continue
        return None

    @staticmethod
    def _regs(tlb, entries, sp_entries):
        regs = []
        for name, n in (("e", entries), ("sp", sp_entries)):
            for k in range(n):
                try:
                    regs.append(getattr(tlb, f"{name}{k}"))
                except AttributeError:
                    break
        return regs

    def _read(self, handles) -> list[TlbEntry]:
        out = []
        for h in handles:
            word = self._word(h.value)
            e = self._to_arch(self.asid_bits, word)
            if e is not None:
                out.append(e)
        return out

    @staticmethod
    def _word(value) -> int:
        """The register as an integer; an X/Z bit reads 0, except an X valid bit (bit 0),
        which reads 1: a checker must see an entry the hardware might consider valid."""
        try:
            return int(value)
        except ValueError:
            bits = str(value)
            word = int("".join("1" if b == "1" else "0" for b in bits), 2)
            if bits[-1] not in "01":
                word |= 1
            return word

    def core(self, i: int) -> list[TlbEntry]:
        return self._read(self.core_handles[i])

    def device(self) -> list[TlbEntry]:
        return self._read(self.dev_handles)


class CosimArch(Arch):
    """The :class:`pyrmap.arch.Arch` of a co-simulation.

    Parameters
    ----------
    dut : cocotb handle
        The ``top`` of ``hdl.top.Top`` (ports as in ``hdl/PORTS.md``).
    mem : PhysMem
        The one physical memory (the memory model answers the RTL from it too).
    env : cosim.host.HostEnv
        Host threads, locks, the seeded generator.
    ncores : int
    asid_bits : int
    memory : cosim.memory.MemoryResponder, optional
        The memory model; its transaction log feeds :meth:`pte_history`.
    range_flush_pages : int
        ``flush_tlb_range`` of more pages than this flushes the whole ASID instead (as x86's
        ``flush_tlb_range`` did with a full flush).
    tlb_entries, sp_entries, dev_entries : int
        Register counts to look for when reading TLB state.
    svadu : bool
        The RTL configuration's A/D mode (``MmuConfig.svadu``), for the engine.
    mmu : str
        The cores' MMU (``MmuConfig.mmu``): where their TLB entries are read from
        (``"cva6"``: :class:`cosim.cva6.Cva6TlbReader`).

    Members
    -------
    device_port_driver : type
        The driver :class:`cosim.devarch.DevArch` drives the device's ports with
        (:class:`cosim.device.DeviceDriver`: a clock driven from cocotb).

    Raises
    ------
    TypeError, ValueError
        Bad parameters.
    """

    device_port_driver = DeviceDriver

    def __init__(self, dut, mem, env, *, ncores: int, asid_bits: int = 9, memory=None,
                 range_flush_pages: int = 16, tlb_entries: int = 8, sp_entries: int = 4,
                 dev_entries: int = 8, clock_period_ns: float = 10.0, svadu: bool = True,
                 mmu: str = "ours"):
        super().__init__(mem, ncores, svadu=svadu, asid_bits=asid_bits)
        if not isinstance(range_flush_pages, int) or range_flush_pages < 1:
            raise TypeError(f"Range flush threshold must be a positive integer, not "
                            f"{range_flush_pages!r}")
        self.dut = dut
        self.env = env
        self.memory = memory
        if memory is not None:
            memory.listeners.append(self._hw_txn)
        self.range_flush_pages = range_flush_pages
        self.clock_period_ns = clock_period_ns
        #: Simulator steps per clock cycle (known once the simulator runs: :meth:`cycle`).
        self._steps_per_cycle: Optional[int] = None
        self.clock = CycleClock.of(dut)
        self.kernel = None                      # set by the scenario once the Kernel exists
        #: The CPU requesters of the cores (:meth:`attach_cpus`) and the device
        #: (:meth:`attach_device`): ``cpu_access`` and ``dev_*`` go through them.
        self.drivers: list = []
        self.device = None
        self._who = ""
        self._satp: list[Optional[tuple[int, int]]] = [None] * ncores
        self.current_mm: list = [None] * ncores
        self.stats: collections.Counter[str] = collections.Counter()
        self.flushes: list[FlushRecord] = []
        self.history: dict[int, list[tuple]] = collections.defaultdict(list)
        self.history_limit = 64
        #: pte_history ignores memory transactions before this sequence number (a scenario
        #: that reuses memory for a fresh kernel sets it).
        self.history_from_seq = 0
        #: The invalidation port of each core (the flushes drive them).
        self.invals = [InvalDriver(dut, f"cpu{i}", asid_bits=asid_bits, cycle=self.cycle)
                       for i in range(ncores)]
        #: The ports' locks, for another owner of the same ports (the litmus runner).
        self._inval_locks = [d.lock for d in self.invals]
        self._cpu_locks = [CoLock() for _ in range(ncores)]
        #: Every acknowledged invalidation request (cosim.accesscheck.Inval: request cycle,
        #: cycle the last core acknowledged, asid or None for all, VA range).
        self._flush_log: list[Inval] = []
        #: PTE addresses whose arch history (no memory model) lost its oldest entries.
        self._history_truncated: set[int] = set()
        self._pte_log = PteLog(memory) if memory is not None else None
        #: The golden-walk scoreboard (cosim.scoreboard.MmuScoreboard) every CPU response and
        #: every invalidation is reported to, once set (cosim.system.bring_up).
        self.scoreboard = None
        #: Called with (core, kind, va, asid) in the time step ``core`` acknowledged each
        #: invalidation request (per request; a flush of several requests calls it for each).
        self.on_inval_ack: Optional[Callable[[int, int, int, int], None]] = None
        #: The :class:`pyrmap.checkers.Checker` that counts access checks and reports a stale
        #: access (the scenario wires the TLB checker (a)); None: raise AssertionError.
        self.access_checker = None
        self.access_checks = 0
        self.log = logging.getLogger("cosim.arch")
        self.tlb_reader: Optional[TlbReader] = None
        reader_cls = TlbReader
        if mmu == "cva6":
            from .cva6 import Cva6TlbReader
            reader_cls = Cva6TlbReader
        try:
            self.tlb_reader = reader_cls(dut, ncores, asid_bits, tlb_entries, sp_entries,
                                         dev_entries)
        except Exception as exc:  # noqa: BLE001 - no readable TLB state; reported below
            self.log.warning("cannot read RTL TLB state: %s", exc)
        self._tlb_cache: dict = {}
        self._tlb_cache_key = None
        #: Entries a core's driver saw served (fallback when the RTL state is not readable).
        self.fill_records: list[dict[tuple[int, int], TlbEntry]] = [dict() for _ in range(ncores)]

    # --- time ------------------------------------------------------------------------------

    def cycle(self) -> int:
        """The clock cycle now (host threads: the one they were last resumed in)."""
        if self._steps_per_cycle is None:
            self._steps_per_cycle = convert(self.clock_period_ns, "ns", to="step")
        return self.env.now_steps() // self._steps_per_cycle

    # --- PTE access ------------------------------------------------------------------------

    def _record(self, ptep: int, op: str, val: int, old: int) -> None:
        hist = self.history[ptep]
        hist.append((self.cycle(), self._who, op, val, old))
        if len(hist) > self.history_limit:
            del hist[0]
            self._history_truncated.add(ptep)

    def _apply(self, op: str, ptep: int, a: int, b: int, thread: str = "") -> int:
        """Perform one PTE operation on memory, now (one instant: atomic with respect to the
        memory model, which performs each walker transaction at one instant too)."""
        self.stats[f"pte_{op}"] += 1
        thread = thread or self.env.current_thread()
        self._who = thread
        who = f"{thread}: {op}"
        m = self.memory
        if m is None:
            return self._apply_direct(op, ptep, a, b)
        if op == "load":
            return m.sw_read(ptep, who)
        if op == "store":
            old = self.mem.read(ptep)
            m.sw_store(ptep, a & MASK64, who)
            new = a & MASK64
        elif op == "xchg":
            old = m.sw_xchg(ptep, 0, who)
            new = 0
        elif op == "cmpxchg":
            old = m.sw_cas(ptep, a & MASK64, b & MASK64, who)
            if old != a:
                self.stats["pte_cmpxchg_failed"] += 1
                return old
            new = b & MASK64
        else:
            # Atomic AND: a read and a CAS in the same instant (nothing runs in between).
            old = m.sw_read(ptep, who)
            new = old & ~(_PAGE_A if op == "mkold" else _PAGE_W)
            if new != old:
                m.sw_cas(ptep, old, new, who)
        self._changed(ptep, op, old, new)
        return old

    def _apply_direct(self, op: str, ptep: int, a: int, b: int) -> int:
        """The same operations on PhysMem without a memory model (setup, unit tests)."""
        mem = self.mem
        old = mem.read(ptep)
        if op == "load":
            return old
        if op == "store":
            new = a
        elif op == "xchg":
            new = 0
        elif op == "mkold":
            new = old & ~_PAGE_A
        elif op == "wrprotect":
            new = old & ~_PAGE_W
        elif op == "cmpxchg":
            if old != a:
                self.stats["pte_cmpxchg_failed"] += 1
                return old
            new = b
        else:  # pragma: no cover - internal
            raise ValueError(f"unknown PTE operation {op!r}")
        new &= MASK64
        if new != old or op == "store":
            mem.write(ptep, new)
        self._changed(ptep, op, old, new)
        return old

    def _changed(self, ptep: int, op: str, old: int, new: int) -> None:
        if new != old or op == "store":
            self._record(ptep, op, new, old)
            if self.observer is not None:
                self.notify("pte_write", ptep=ptep, old=old, new=new,
                            who=f"sw {op} thread {self._who}")

    def _hw_txn(self, txn) -> None:
        """A hardware memory operation took effect (a :class:`cosim.memory.MemoryResponder`
        listener): the observer hears of a walker's read (``walk_read``) and of an A/D update
        it made (``pte_write``, ``hw-cas`` or ``hw-write``), as SoftArch's walk reports them."""
        if self.observer is None or txn.err:
            return
        from .memory import MemOp
        if txn.op == MemOp.READ:
            self.notify("walk_read", core=txn.src, ptep=txn.addr)
        elif txn.wrote and txn.wdata != txn.rdata:
            kind = "hw-cas" if txn.op == MemOp.CAS else "hw-write"
            self.notify("pte_write", ptep=txn.addr, old=txn.rdata, new=txn.wdata,
                        who=f"{kind} core{txn.src}")

    async def _at_edge(self, op: str, ptep: int, a: int, b: int, thread: str) -> int:
        await self.clock.edge()
        return self._apply(op, ptep, a, b, thread)

    def _pte_op(self, op: str, ptep: int, a: int = 0, b: int = 0) -> int:
        if ptep & 7:
            raise ValueError(f"PTE address 0x{ptep:09x} is not 8-byte aligned")
        if not self.env.in_host_thread():
            # Setup code in coroutine context (before the workload starts): apply now.
            return self._apply(op, ptep, a, b)
        return self.env.call(self._at_edge, op, ptep, a, b, self.env.current_thread())

    def pte_load(self, ptep: int) -> int:
        return self._pte_op("load", ptep)

    def set_pte_at(self, mm, addr: int, ptep: int, val: int) -> None:
        self._pte_op("store", ptep, val)

    def ptep_get_and_clear(self, mm, addr: int, ptep: int) -> int:
        return self._pte_op("xchg", ptep)

    def ptep_test_and_clear_young(self, vma, addr: int, ptep: int) -> int:
        return int(bool(self._pte_op("mkold", ptep) & _PAGE_A))

    def ptep_set_wrprotect(self, mm, addr: int, ptep: int) -> None:
        self._pte_op("wrprotect", ptep)

    def cmpxchg(self, ptep: int, old: int, new: int) -> int:
        return self._pte_op("cmpxchg", ptep, old, new)

    def pte_history(self, ptep: int) -> list[PteWrite]:
        """Every store to ``ptep`` still remembered, oldest first: the memory model's log
        (the engine's operations and the walkers' WRITE/CAS, with their transaction numbers)
        when one is attached, else the arch's own record."""
        m = self.memory
        if m is None:
            return [PteWrite(v, who, op, cycle=w)
                    for w, who, op, v, _ in self.history.get(ptep, [])]
        out = []
        for txn in m.log[self.history_from_seq:]:
            if txn.addr == ptep and txn.wrote:
                who = txn.who or ("sw" if txn.src < 0 else f"core{txn.src} walker")
                out.append(PteWrite(txn.wdata, who, txn.op.name, cycle=txn.resp_cycle,
                                    seq=txn.seq))
        return out[-self.history_limit:]

    # --- TLB flushes -----------------------------------------------------------------------

    async def _inval_core(self, core: int, reqs, result: dict) -> None:
        sb = self.scoreboard
        pending = []

        def requested(kind, va, asid):
            if sb is not None:
                # The DUT first sees the request at the next edge.
                txn = InvalTxn(core, InvalKind(kind), va & MASK64,
                               asid & self.invals[core].asid_mask, self.cycle() + 1)
                sb.on_inval_request(txn)
                pending.append(txn)

        def acked(kind, va, asid):
            self._forget(core, kind, va, asid)
            if self.on_inval_ack is not None:
                self.on_inval_ack(core, kind, va, asid)
            if pending:
                txn = pending.pop(0)
                txn.ack_cycle = self.cycle()
                sb.on_inval_ack(txn)
        result[core] = await self.invals[core].invalidate_all(reqs, on_request=requested,
                                                              on_ack=acked)

    async def _flush(self, cores: tuple[int, ...], reqs) -> dict:
        result: dict[int, int] = {}
        tasks = [cocotb.start_soon(self._inval_core(c, reqs, result)) for c in cores]
        for t in tasks:
            await t
        # Everything the hardware did up to the edge of the last ack -- a CPU response in the
        # same cycle, whose data access happens at that edge -- happens before the flush
        # returns: let every coroutine woken by that edge run first.
        await Timer(1, "step")
        return result

    def _do_flush(self, what: str, cores: Iterable[int], reqs: list) -> None:
        cores = tuple(sorted(c for c in cores if 0 <= c < self.ncores))
        self.stats[f"flush_{what}"] += 1
        if not cores or not reqs:
            self.stats["flush_no_cores"] += 1
            return
        if not self.env.in_host_thread():
            raise RuntimeError(f"flush_tlb_{what} needs simulated time; call it from a host "
                               f"thread (HostEnv.run), not from a coroutine")
        start = self.cycle()
        result = self.env.call(self._flush, cores, reqs)
        cycles = max(result.values()) if result else 0
        self.stats["flush_cycles"] += cycles
        self.stats["inval_requests"] += len(reqs) * len(cores)
        self.flushes.append(FlushRecord(what, cores, len(reqs), start, cycles,
                                        self.env.current_thread()))
        done = self.cycle()
        for kind, va, asid in reqs:
            self._flush_log.append(inval_record(kind, va, asid, start, done))
        self._tlb_cache_key = None
        if self.observer is not None:
            for core in cores:
                for kind, va, asid in reqs:
                    self.notify("tlb_inval", core=core, kind=kind, vaddr=va, asid=asid,
                                removed=-1)
            self.notify("tlb_flush", what=what, cycles=cycles)

    def flush_tlb_page(self, vma, addr: int) -> None:
        mm = vma.vm_mm
        self._do_flush("page", mm.cpu_vm_mask,
                       [(InvalKind.VA_ASID, addr & ~(PAGE_SIZE - 1), mm.asid)])

    def flush_tlb_range(self, vma, start: int, end: int) -> None:
        mm = vma.vm_mm
        npages = max(0, (end - start + PAGE_SIZE - 1) // PAGE_SIZE)
        if npages > self.range_flush_pages:
            reqs = [(InvalKind.ASID, 0, mm.asid)]
        else:
            reqs = [(InvalKind.VA_ASID, (start & ~(PAGE_SIZE - 1)) + i * PAGE_SIZE, mm.asid)
                    for i in range(npages)]
        self._do_flush("range", mm.cpu_vm_mask, reqs)

    def flush_tlb_mm(self, mm) -> None:
        self._do_flush("mm", mm.cpu_vm_mask, [(InvalKind.ASID, 0, mm.asid)])

    def flush_tlb_all(self) -> None:
        self._do_flush("all", range(self.ncores), [(InvalKind.ALL, 0, 0)])

    # --- environment -----------------------------------------------------------------------

    def new_lock(self, name: str):
        # The lock calls this arch (which delegates to the host environment), so that its
        # releases reach the observer (``lock_release``) as SoftArch's do.
        return self.env.new_lock(name, env=self)

    def new_rwsem(self, name: str):
        return self.env.new_rwsem(name, env=self)

    def yield_point(self, why: str = "") -> None:
        self.env.yield_point(why)

    def signal_pending(self) -> bool:
        return self.env.signal_pending()

    def current_thread(self) -> str:
        return self.env.current_thread()

    def current_task(self):
        """The running :class:`cosim.host.HostThread` (``current`` of the kernel)."""
        return self.env.current()

    @property
    def lockdep(self):
        return self.env.lockdep

    def lock_block(self, lock, why: str) -> None:
        self.env.lock_block(lock, why)

    def lock_wake(self, lock) -> None:
        if self.observer is not None:
            self.notify("lock_release", lock=lock.name, thread=self.current_thread())
        self.env.lock_wake(lock)

    # --- address spaces on cores -------------------------------------------------------------

    def switch_mm(self, core: int, mm) -> None:
        if not 0 <= core < self.ncores:
            raise ValueError(f"Core {core} does not exist; this MMU has {self.ncores} cores")
        if mm is None:
            self._satp[core] = None
            self.current_mm[core] = None
            return
        if self.asid_bits and mm.asid >> self.asid_bits:
            raise ValueError(f"ASID {mm.asid} does not fit in {self.asid_bits} ASID bits")
        self._satp[core] = (mm.asid, mm.pgd)
        self.current_mm[core] = mm
        mm.cpu_vm_mask.add(core)
        self.stats["switch_mm"] += 1

    def satp(self, core: int) -> Optional[tuple[int, int]]:
        """``(asid, root pfn)`` of ``core``, or None before its first switch_mm."""
        return self._satp[core]

    def set_satp(self, core: int, asid: int, root: int) -> None:
        """Write satp directly (no mm): for tests of the MMU alone."""
        self._satp[core] = (asid, root)
        self.current_mm[core] = None

    # --- CPU accesses through the RTL (the engine's CpuWorkload calls these) ----------------

    def attach_cpus(self) -> None:
        """One :class:`cosim.cpu.CpuRequester` per core (``cpu_access`` goes through them)."""
        self.drivers = [CpuRequester(self.dut, i, ncores=self.ncores, cycle=self.cycle)
                        for i in range(self.ncores)]

    @property
    def acks(self) -> list[int]:
        """Invalidation acks seen per core (the litmus bench counts the translations that
        straddle one: a walk in flight across a shootdown, answered after its ack)."""
        return [d.acks for d in self.invals]

    async def _cpu_access(self, core: int, vaddr: int, op, data, user: bool, sum: bool):
        async with self._cpu_locks[core]:
            satp = self._satp[core]
            if satp is None:
                raise RuntimeError(f"Core {core} has no address space (switch_mm first)")
            asid, root = satp

            def check(r) -> None:
                self.check_access(core, asid, root, vaddr, r.accept, r.paddr, op=op,
                                  user=user, sum=sum)
                self.record_fill(core, satp, vaddr, r.paddr, op)

            def respond(r) -> None:
                # Every response the RTL gives is replayed against the golden walk
                # (cosim.scoreboard).
                sb = self.scoreboard
                if sb is None:
                    return
                t = CpuTxn(core, vaddr, AccessType(op), bool(user), bool(sum), asid, root,
                           r.accept)
                t.resp_cycle = self.cycle()
                t.paddr, t.fault, t.hit = r.paddr, r.fault, r.hit
                sb.on_cpu(t)
            return await self.drivers[core].access(vaddr, op, asid=asid, root=root,
                                                   mem=self.mem, user=user, sum=sum,
                                                   data=data, check=check,
                                                   on_response=respond)

    def cpu_access(self, core: int, vaddr: int, op, *, user: bool = True, sum: bool = False,
                   data: Optional[int] = None):
        """Translate ``vaddr`` on ``core``'s RTL MMU and access the word (as SoftArch's
        ``cpu_access``): one round trip; the data access happens at the instant of the
        response.  Returns a :class:`pyrmap.softarch.AccessResult`-like object with ``fault``,
        ``paddr``, ``value``, ``hit``."""
        if not self.drivers:
            raise RuntimeError("cpu_access needs the CPU requesters (CosimArch.attach_cpus)")
        if not 0 <= core < self.ncores:
            raise ValueError(f"Core {core} does not exist; this MMU has {self.ncores} cores")
        self.stats["cpu_access"] += 1
        if not self.env.in_host_thread():
            raise RuntimeError("cpu_access needs simulated time; call it from a host thread")
        res = self.env.call(self._cpu_access, core, vaddr, op, data, user, sum)
        if self.observer is not None:
            self.notify("cpu_access", core=core, mm=self.current_mm[core], vaddr=vaddr,
                        op=op, result=res)
        return res

    def record_fill(self, core: int, satp, va: int, paddr: int, op) -> None:
        """The driver's record of what ``core``'s TLB may hold after a translation of ``va``
        (what ``tlb_entries`` reports when the RTL's entry registers cannot be read): the
        4 KiB translation, with the permissions of the leaf PTE now.  Flushes remove
        matching records (``_forget``)."""
        if self.reads_rtl_tlbs:
            return
        from pyrmap.checkers import lookup_pte
        asid, root = satp
        _, val, _ = lookup_pte(self.mem, root, va)
        vpn = va >> 12 & ((1 << 27) - 1)
        self.fill_records[core][(asid, vpn)] = TlbEntry(
            vpn=vpn, asid=asid, ppn=paddr >> 12, level=0, perm=val & 0x1E, g=False, a=True,
            d=bool(val & 0x80) or int(op) == 1)

    def _forget(self, core: int, kind, va: int, asid: int) -> None:
        recs = self.fill_records[core]
        vpn = va >> 12 & ((1 << 27) - 1)
        for key in list(recs):
            a, v = key
            if (kind == InvalKind.ALL or (kind == InvalKind.ASID and a == asid)
                    or (kind == InvalKind.VA and v == vpn)
                    or (kind == InvalKind.VA_ASID and v == vpn and a == asid)):
                del recs[key]

    def pte_changes(self, ptep: int) -> tuple[list[PteChange], bool, bool]:
        """The writes of ``ptep`` the arch knows, oldest first: ``(changes, complete,
        with_ad)``.  From the memory model's log (software operations and the walkers' A/D
        compare-and-swaps; complete when it starts with the memory, ``history_from_seq``
        0) or, without one, from the arch's own record (software only, complete unless
        it was truncated)."""
        if self._pte_log is not None:
            return (self._pte_log.changes(ptep, self.history_from_seq),
                    self.history_from_seq == 0, True)
        hist = self.history.get(ptep, [])
        return ([PteChange(c, old, new, f"{who} {op}") for c, who, op, new, old in hist],
                ptep not in self._history_truncated, False)

    def judge_access(self, invals, asid: int, root: int, va: int, start: int, paddr: int,
                     op, *, user: bool = True, sum: bool = False, device: bool = False):
        """Checker (a) at cycle level for one completed access (the cores' and the device's
        rule, :func:`cosim.accesscheck.judge_access`): ``(verdict, ptep)``, or None when
        ``va`` has no leaf PTE now (nothing to judge against)."""
        from pyrmap.checkers import lookup_pte
        ptep, now, level = lookup_pte(self.mem, root, va)
        if ptep is None:
            return None
        changes, complete, with_ad = self.pte_changes(ptep)
        verdict = judge_access(changes=changes, now=now, complete=complete, invals=invals,
                               asid=asid, va=va, level=level, start=start, paddr=paddr,
                               op=AccessType(op), user=user, sum=sum, device=device,
                               with_ad=with_ad and not device)
        return verdict, ptep

    def check_access(self, core: int, asid: int, root: int, va: int, start: int,
                     paddr: int, *, op, user: bool = True, sum: bool = False) -> None:
        """Checker (a) at cycle level: an access that *began* at cycle ``start`` (the cycle
        the port accepted its request: no request is accepted while an invalidation is
        applied, so one accepted in the ack cycle or later comes after it) must complete
        through a translation -- frame, permission and the A/D state it relies on -- that
        no invalidation acknowledged by then had retired (:mod:`cosim.accesscheck`).
        Called at the response instant."""
        self.check_completed(f"core {core}", self._flush_log, self.access_checker,
                             self._counted, asid, root, va, start, paddr, op, user=user,
                             sum=sum)

    def _counted(self) -> None:
        self.access_checks += 1

    def check_completed(self, who: str, log, checker, counted, asid: int, root: int, va: int,
                        start: int, paddr: int, op, *, user: bool = True, sum: bool = False,
                        device: bool = False) -> None:
        """The one cycle-level access check (checker (a)), for the cores' accesses and the
        device's: an access of ``who`` to ``va`` that began at cycle ``start`` completed
        through ``paddr``; ``log`` holds the acknowledged invalidations of its TLB.  Judged
        by :meth:`judge_access`; ``counted()`` is called for every check made; a failure
        goes to ``checker`` (a :class:`pyrmap.checkers.Checker`; None: ``AssertionError``)."""
        found = self.judge_access(log, asid, root, va, start, paddr, op, user=user, sum=sum,
                                  device=device)
        if found is None or not found[0].checked:
            return
        verdict, ptep = found
        counted()
        if checker is not None:
            checker.checks += 1
        if verdict.problem is None:
            return
        msg = (f"{who}: access to 0x{va:x} (asid {asid}) that began at cycle {start}: "
               f"{verdict.problem}")
        if checker is None:
            raise AssertionError(msg)
        checker.fail(msg, ptep)

    # --- the device (secondary MMU), through cosim.devarch.DevArch -------------------------

    def attach_device(self, devarch) -> None:
        """Route ``dev_*`` (what the engine's DeviceWorkload and the secondary-MMU client
        call) to a :class:`cosim.devarch.DevArch` on this arch."""
        self.device = devarch

    def _device(self, what: str):
        dev = self.device
        if dev is None:
            raise RuntimeError(f"{what} needs the device (CosimArch.attach_device)")
        self.stats[what] += 1
        return dev

    def dev_access(self, vaddr: int, op, asid: int):
        """A device access through the RTL's DeviceMmu: ``(FaultKind, paddr)``; a completed
        one is checked at cycle level (DevArch.check_access, checker (a))."""
        dev = self._device("dev_access")
        if not self.env.in_host_thread():
            raise RuntimeError("dev_access needs simulated time; call it from a host thread")
        fault, paddr, start = self.env.call(dev.access_async, vaddr, op, asid)
        if fault == FaultKind.NONE and self.kernel is not None:
            root = next((mm.pgd for mm in self.kernel.mms if mm.asid == asid), None)
            if root is not None:
                dev.check_access(asid, root, vaddr, start, paddr, op=op)
        if self.observer is not None:
            self.notify("dev_access", vaddr=vaddr, op=AccessType(op), asid=asid, fault=fault,
                        paddr=paddr)
        return fault, paddr

    def dev_fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int,
                 g: bool = False):
        """Install a device TLB entry (perm: R W X U in PTE bit positions 1..4); checkers
        hear of it (the device raises the ``dev_fill`` event: :meth:`notify_dev_fill`)."""
        self._device("dev_fill").dev_fill(vaddr, asid, ppn, level, perm, g)

    def notify_dev_fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int,
                        g: bool) -> None:
        """The device TLB installed an entry: the ``dev_fill`` event (checker (d) judges it
        against the open invalidate windows, from outside the driver)."""
        self._tlb_cache_key = None
        if self.observer is not None:
            shift = 12 + 9 * level
            self.notify("dev_fill", entry=TlbEntry(
                vpn=(vaddr >> shift << shift) >> 12 & ((1 << 27) - 1), asid=asid, ppn=ppn,
                level=level, perm=perm, g=g, a=True, d=bool(perm & _PAGE_W)))

    def dev_young(self, vaddr: int, asid: int) -> bool:
        return self._device("dev_young").dev_young(vaddr, asid)

    def dev_inval(self, kind, vaddr: int = 0, asid: int = 0) -> int:
        """One device invalidation; returns after the ack."""
        out = self._device("dev_inval").dev_inval(kind, vaddr, asid)
        self._tlb_cache_key = None
        return out

    def dev_ack_fault(self):
        """Consume the RTL's pending device fault record ``(vaddr, asid, op)``, or None."""
        return self._device("dev_ack_fault").dev_ack_fault()

    def perf(self, core: int) -> dict[str, int]:
        """The RTL performance counters of ``core`` (``cpu{i}__perf__*``); -1 for a counter
        that reads X."""
        if not 0 <= core < self.ncores:
            raise ValueError(f"Core {core} does not exist; this MMU has {self.ncores} cores")
        return read_counters(self.dut, f"cpu{core}", CORE_COUNTERS)

    def dev_perf(self) -> dict[str, int]:
        """The DeviceMmu's counters (``dev__perf__*``); -1 for a counter that reads X."""
        return read_counters(self.dut, "dev", DEVICE_COUNTERS)

    def counters(self) -> dict[str, int]:
        """:data:`pyrmap.arch.ARCH_COUNTERS` (the RTL does not count the entries it removes:
        ``entries_invalidated`` is 0)."""
        s = self.stats
        out = {"flushes_driven": len(self.flushes), "entries_invalidated": 0}
        # stats counts a flush_tlb_<what> as flush_<what>.
        return {k: out[k] if k in out else s[k.replace("flush_tlb_", "flush_")]
                for k in ARCH_COUNTERS}

    def _snapshot(self) -> dict:
        key = (self.env.now_steps(), self.env.stats["resumes"])
        if key != self._tlb_cache_key and self.env.in_host_thread():
            # Simulator handles are read in the scheduler's thread (a hand-off that lets no
            # simulated time pass: the coroutine does not await).
            self.env.call(self._read_now)
            self._tlb_cache_key = (self.env.now_steps(), self.env.stats["resumes"])
            return self._tlb_cache
        if key != self._tlb_cache_key:
            reader = self.tlb_reader
            snap = {}
            for core in range(self.ncores):
                if reader is not None and reader.available:
                    snap[core] = reader.core(core)
                else:
                    snap[core] = list(self.fill_records[core].values())
            snap["dev"] = reader.device() if reader is not None and reader.dev_handles else []
            self._tlb_cache = snap
            self._tlb_cache_key = key
        return self._tlb_cache

    async def _read_now(self) -> None:
        self._tlb_cache_key = None
        self._snapshot()

    def tlb_entries(self, core: int) -> Iterable[TlbEntry]:
        """The valid entries of ``core``'s RTL TLB right now (no side effects)."""
        if not 0 <= core < self.ncores:
            raise ValueError(f"Core {core} does not exist; this MMU has {self.ncores} cores")
        return list(self._snapshot()[core])

    def dev_entries(self) -> list[TlbEntry]:
        """The valid entries of the device TLB (empty when it is not readable)."""
        return list(self._snapshot()["dev"])

    @property
    def reads_rtl_tlbs(self) -> bool:
        return self.tlb_reader is not None and self.tlb_reader.available

    # --- reporting -------------------------------------------------------------------------

    def figures(self) -> dict:
        """Counters for reports: PTE operations, flushes, their cycles."""
        cyc = [f.cycles for f in self.flushes]
        return {
            "pte_ops": {k[4:]: v for k, v in sorted(self.stats.items()) if k.startswith("pte_")},
            "flushes": {k[6:]: v for k, v in sorted(self.stats.items())
                        if k.startswith("flush_") and k != "flush_cycles"},
            "flush_count": len(self.flushes),
            "flush_cycles_total": sum(cyc),
            "flush_cycles_max": max(cyc) if cyc else 0,
            "flush_cycles_mean": (sum(cyc) / len(cyc)) if cyc else 0.0,
            "inval_requests": self.stats["inval_requests"],
            "flush_cycles_histogram": {str(k): v for k, v in
                                       sorted(collections.Counter(cyc).items())},
            "access_checks": self.access_checks,
        }

    def describe_pte(self, ptep: int) -> str:
        return describe(self.mem.read(ptep))
