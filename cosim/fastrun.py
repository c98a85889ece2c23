"""The fast path: one scenario run with Python waking per event, not per access.

The traffic engines of FastTop issue every CPU access in gateware; the coroutines here wake
only for

* **faults**: an engine stopped on a page fault: its log is drained, the engine's fault
  handler (:func:`pyrmap.memory.do_page_fault`) runs as a host thread, the words it changed
  are pushed into the gateware memory, and the engine resumes with the same access;
* **kernel work**: every ``period`` cycles, kswapd (``try_to_free_pages``), writeback
  (``msync`` of a few pages of the shared file mapping) and migration of a mapped page run as
  host threads next to the engines; their PTE operations go through the software port and
  their flushes through the invalidation ports (:class:`cosim.fastarch.FastArch`);
* **log drains**: a ring half full (the ``event`` output), and before every software-port
  operation and after every flush, so every record is judged (:class:`cosim.fastcheck.
  LogCheckers`) before the PTE change that follows it.
* **the device** (``FAST_DEVICE``, below): each of its accesses, and its faults.

The clock runs inside the design (:func:`cosim.fastbuild.clocked_verilog`: no callback per
half period; on Verilator one time step a cycle) and the coroutines wait on the ``event``
output and on timers, so the simulator runs free between events; a coroutine that waits for
cycles counts them with :class:`cosim.cycles.CycleClock`.

Parameters come from the environment (set by :func:`cosim.fastbuild.fast_run`):
``FAST_ACCESSES`` (checked CPU accesses in all), ``FAST_PAGES`` (pages each core's window
spans, a power of two), ``FAST_MODE`` (uniform, zipf, stride, chase), ``FAST_STORE``
(per-mille of stores), ``FAST_KERNEL`` (``reclaim``: kswapd, writeback and migration; ``none``),
``FAST_PERIOD`` (cycles between kernel steps), ``FAST_OPS`` (the operations of a kernel
step, :data:`KERNEL_OPS`; ``race`` seeks the kernel's race windows, :data:`RACE_OPS`),
``FAST_YIELD`` (a kernel thread's yield point -- a lock taken, a window the kernel marks
-- lets the engines run a seeded number of cycles in [0, FAST_YIELD]; default 2),
``FAST_WRITENOTIFY`` (1, the default: the shared file is dirty-accounted, so a read fault
maps a clean page read-only and the first store faults; 0: a file without dirty accounting,
as every shared file mapping was before 2.6.19 and shmem still is: a read fault maps it
writable and clean, and a store's walker sets D by compare-and-swap),
``FAST_CHECKS`` (1: every checker; 0: records
counted and applied only), ``FAST_QUIRKS`` (engine quirks, comma-separated),
``FAST_WALK_DELAY`` (the largest extra delay, in cycles, of a walker's memory response:
each is drawn in gateware from 0 to it, and the memory serves the software port and the
engines meanwhile, :class:`simhw.memory.SimMemory`; 0, the default: none), ``FAST_AIM``
(``random``, the default: a kernel step migrates a random mapped page; ``engines``: the page a
random core's engine is accessing at that instant, so the unmap and its flush meet the
engine's walk or its TLB hits of that page),
``FAST_DEVICE`` (cycles between the accesses of a device -- the DeviceMmu of ``Top``, a
secondary MMU -- on the shared file window of core 1's process, through its host driver
(:class:`pyrmap.devdriver.DeviceMmuDriver`, registered as that mm's notifier: the kernel's
unmaps, zaps and migrations invalidate it through ``dev__inval``); each access is checked
((a) at cycle level, (b) never through a free frame) without a data access
(:class:`cosim.device.DeviceRequester` with ``data=False``), and at the end every device
entry must be backed by its PTE; 0, the default: no device; the driver's quirks
(:class:`pyrmap.devdriver.DevDriverConfig`) go in ``FAST_QUIRKS`` and need it),
``FAST_PREFAULT`` (1: every window page, or every page of a trace's replayed prefix, is
touched before the engines start, so the measured run starts warm; 0, the default: first
touches fault in the run),
``COSIM_PROGRESS`` (a file progress lines are appended to), ``FAST_TRACE`` (a recorded trace,
:mod:`cosim.explore.trace`: every core replays it in a process of its own whose VMAs are the
trace's, :class:`cosim.explore.replay.TraceReplay`; ``FAST_MODE`` and ``FAST_PAGES`` are then
unused), ``FAST_STREAM`` (a ``.npz`` the run's stream is saved to for the golden
model's replay, :mod:`cosim.explore.stream`), ``FAST_SNAPSHOT`` (a directory the state at the
engines' start is written to, for the Python-free harness, :mod:`cosim.fastharness`;
it needs ``FAST_PREFAULT=1``, and a trace's records go in it too).

The report's ``windows`` counts the kernel windows the run reached
(:attr:`cosim.fastarch.FastArch.windows`): non-atomic read-then-write windows on present PTEs
and the hardware updates that landed inside them, and page_mkclean calls that returned while
another thread had a PTE of the page cleared and not yet flushed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import sys
import time

import numpy as np
from cocotb.triggers import First, Timer, ValueChange

from pyrmap.arch import CORE_COUNTERS
from pyrmap.checkers import InvariantViolation
from pyrmap.devdriver import DRIVER_QUIRKS, DevDriverConfig
from pyrmap.mmap import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ,
                         PROT_WRITE)
from pyrmap.pte import AccessType, FaultKind
from pyrmap.scenario import System
from simhw.abi import Mode

from .cycles import CycleClock
from .device import DEVICE_INPUTS, check_device_entries
from .fastarch import FastArch
from .fastbuild import CLOCK_PERIOD_NS
from .fastcheck import LogCheckers
from .faststorm import STORM_OPS, Storm
from .fasthw import FastHardware, MirrorMem, decode_records, memload_text
from .host import HostEnv
from .ports import read_counters

__all__ = ["FastRun", "run_from_env", "MODES", "KERNEL_OPS", "DEFAULT_OPS", "AIMS",
           "RACE_OPS"]

MODES = {m.name.lower(): m for m in Mode if m != Mode.TRACE}
#: The operations of a kernel step (``FAST_OPS``, comma-separated; default
#: :data:`DEFAULT_OPS`): kswapd (``try_to_free_pages``), migration of a mapped page, writeback
#: (``msync`` of 8 pages of the shared file window), dontneed (``madvise(MADV_DONTNEED)`` of 8
#: pages of it: a zap inside notifier range calls, beside the writeback) and split (at the
#: first step only, the upper half of the file window gets EXEC by ``mprotect``: ``split_vma``
#: gives it a VMA of its own); and the storms of :mod:`cosim.faststorm` (fork, mprotect,
#: munmap: fork/COW and mprotect/munmap storms).
DEFAULT_OPS = ("kswapd", "migration", "writeback", "dontneed", "split")
#: What a kernel step's migration picks (``FAST_AIM``): a random mapped page, or the page
#: a random core's engine is accessing right now.
AIMS = ("random", "engines")
#: Race-seeking operations (``FAST_OPS``, not in the default): ``race`` -- on the pages of the
#: shared file window the engine stored to in its last drained block (the pages it is writing
#: now), a zap (``madvise(MADV_DONTNEED)``) and, a seeded pause later while the engine
#: faults them back, a second zap, beside a writeback (``msync``) of the same pages that
#: starts at a seeded offset: page_mkclean meets the zaps' windows (a PTE cleared, its flush
#: pending) and the second zap meets pages that a load faulted back in and a store is about
#: to dirty (with ``FAST_WRITENOTIFY=0`` they come back writable and clean: the walker sets
#: D by compare-and-swap).
RACE_OPS = ("race",)
KERNEL_OPS = DEFAULT_OPS + STORM_OPS + RACE_OPS
#: Cycles over which the race's seeded offsets and pause are drawn.
RACE_SPREAD = 64
log = logging.getLogger("cosim.fast")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {text!r}") from None


class FastRun:
    """One fast-path scenario on a started FastTop.

    Parameters
    ----------
    dut : cocotb handle of ``fasttop``
    seed : int
    mmu : dict
        The MMU configuration (``COSIM_CONFIG``).
    fast : dict
        :class:`cosim.fastbuild.FastParams` as a dict.
    accesses : int
        Checked CPU accesses in all (split over the cores).
    pages : int
        Pages of each core's window (a power of two).
    mode : str
        A key of :data:`MODES`.
    store_permille : int
    kernel : str
        ``"reclaim"`` or ``"none"``.
    period : int
        Cycles between kernel steps.
    ops : sequence of str
        The operations of a kernel step (:data:`KERNEL_OPS`).
    checks : bool
    quirks : list of str
    walk_delay : int
        The largest extra delay of a walker's memory response (0 ... 255).
    aim : str
        A value of :data:`AIMS`.
    prefault : bool
        Touch every window page before the engines start (:meth:`_prefault`; the bench and
        the demo do).  Its PTE writes apply directly, outside the software port's record.
    device : int
        Cycles between the device's accesses (``FAST_DEVICE``; 0: no device).
    """

    def __init__(self, dut, seed: int, mmu: dict, fast: dict, *, accesses: int, pages: int,
                 mode: str = "uniform", store_permille: int = 250, kernel: str = "reclaim",
                 period: int = 20_000, ops=DEFAULT_OPS, checks: bool = True, quirks=(),
                 progress=None,
                 trace: str | None = None, stream: str | None = None,
                 prefault: bool = False, snapshot: str | None = None,
                 walk_delay: int = 0, aim: str = "random",
                 writenotify: bool = True, yield_cycles: int = 2, device: int = 0):
        if yield_cycles < 0:
            raise ValueError(f"FAST_YIELD must be a non-negative number of cycles, not "
                             f"{yield_cycles}")
        if pages < 2 or pages & (pages - 1):
            raise ValueError(f"FAST_PAGES must be a power of two of at least 2, not {pages}")
        if mode not in MODES:
            raise ValueError(f"FAST_MODE must be one of {', '.join(MODES)}, not {mode!r}")
        if kernel not in ("reclaim", "none"):
            raise ValueError(f"FAST_KERNEL must be 'reclaim' or 'none', not {kernel!r}")
        bad = [op for op in ops if op not in KERNEL_OPS]
        if bad:
            raise ValueError(f"FAST_OPS must name operations of {', '.join(KERNEL_OPS)}, not "
                             f"{', '.join(map(repr, bad))}")
        if not 0 <= walk_delay <= 255:
            raise ValueError(f"FAST_WALK_DELAY must be 0 ... 255 cycles, not {walk_delay}")
        if aim not in AIMS:
            raise ValueError(f"FAST_AIM must be one of {', '.join(AIMS)}, not {aim!r}")
        quirks = list(quirks)
        dev_quirks = [q for q in quirks if q in DRIVER_QUIRKS]
        if device < 0:
            raise ValueError(f"FAST_DEVICE must be a non-negative number of cycles, not "
                             f"{device}")
        if dev_quirks and not device:
            raise ValueError(f"the device driver's quirks ({', '.join(dev_quirks)}) need a "
                             f"device: FAST_DEVICE=<cycles between its accesses>")
        if device and trace:
            raise ValueError("FAST_DEVICE works on the synthetic windows, not on FAST_TRACE")
        self.device_period = device
        self.dev_config = DevDriverConfig(**{q: True for q in dev_quirks})
        self.device = None
        self._device_stop = False
        self._device_busy = False
        self._device_error = None
        quirks = [q for q in quirks if q not in DRIVER_QUIRKS]
        self.walk_delay = walk_delay
        self.aim = aim
        self.ops = tuple(ops)
        self.dut = dut
        self.seed = seed
        self.ncores = int(mmu.get("ncores", 2))
        self.asid_bits = int(mmu.get("asid_bits", 9))
        self.svadu = bool(mmu.get("svadu", True))
        self.fast = fast
        self.accesses = accesses
        self.pages = pages
        self.mode = MODES[mode]
        self.store_permille = store_permille
        self.kernel_mode = kernel
        self.period = period
        self.checks = checks
        self.quirks = list(quirks)
        self.dev_quirks = dev_quirks
        self.prefault = prefault
        self.writenotify = writenotify
        self.yield_cycles = yield_cycles
        if snapshot and not prefault:
            raise ValueError("FAST_SNAPSHOT needs FAST_PREFAULT=1: the Python-free harness "
                             "serves no page fault, so every page the engines touch must be "
                             "resident when they start")
        self.snapshot = snapshot
        self.progress = progress or (lambda text: None)
        self.rng = random.Random(seed)
        nframes = (8 << int(fast["words_log2"])) >> 12
        self.trace = trace
        self.replay = None
        if trace:
            from .explore.replay import TraceReplay
            self.replay = TraceReplay.load(trace)
            # The records sit at the top of the gateware memory, above the engine's frames.
            nframes, self.trace_base = self.replay.memory_layout(nframes)
        self.mem = MirrorMem(nframes)
        self.stats = {"faults_handled": 0, "kernel_steps": 0, "drains": 0, "wakes": 0,
                      "prefaulted": 0, "races": 0, "device_entries_checked": 0}
        #: core -> the virtual page numbers its last drained block stored to (``race``).
        self.storing: dict | None = {} if "race" in self.ops else None
        self.error: str | None = None
        self.mmu = mmu
        self.stream_path = stream
        self.recorder = None

    # --- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        dut = self.dut
        self.clock = CycleClock.of(dut)
        dut.rst.value = 1
        dut.sw__req__valid.value = 0
        dut.load.value = 0
        dut.wlog__rd_ptr.value = 0
        dut.mmu_delay.value = self.walk_delay
        if self.device_period and not hasattr(dut, "dev__req__valid"):
            raise ValueError("FAST_DEVICE needs FastTop with the device's ports "
                             "(FastParams(device=True); fast_run sets it for a FAST_DEVICE run)")
        for name in DEVICE_INPUTS if self.device_period else ():
            getattr(dut, name).value = 0
        for i in range(self.ncores):
            getattr(dut, f"cpu{i}__inval__valid").value = 0
            getattr(dut, f"log{i}__rd_ptr").value = 0
            for name in ("run", "load_seed", "resume"):
                getattr(dut, f"eng{i}__{name}").value = 0
        await self.clock.cycles(3)
        dut.rst.value = 0
        await self.clock.cycles(2)
        self.env = HostEnv(self.clock, self.seed, yield_cycles=(0, self.yield_cycles))
        depth = 1 << int(self.fast["log_log2"])
        self.hw = FastHardware(dut, self.ncores, self.mem, log_depth=depth)
        if self.walk_delay:
            self.hw.configured["mmu_delay"] = self.walk_delay
        self.arch = FastArch(dut, self.mem, self.env, self.hw, ncores=self.ncores,
                             asid_bits=self.asid_bits,
                             tlb_entries=int(self.mmu.get("tlb_entries", 8)),
                             sp_entries=int(self.mmu.get("superpage_entries", 4)),
                             svadu=self.svadu, latency=int(self.fast["latency"]),
                             dev_entries=(int(self.mmu.get("dev_entries", 8))
                                          if self.device_period else 0))
        arch = self.arch
        self.system = s = System(seed=self.seed, nframes=self.mem.nframes, ncores=self.ncores,
                                 swap_slots=max(256, self.ncores * self.pages),
                                 quirks=self.quirks or None, arch=lambda *a: arch,
                                 command=self.command())
        self.storm = Storm(s, self.env, f"storm-{self.seed}", self.ops)
        arch.kernel = s.kernel
        arch.access_checker = s.checkers.tlb
        self.logs = LogCheckers(s.checkers, self.mem, svadu=self.svadu, enabled=self.checks)
        arch.on_drain = self.drain
        arch.on_pte_change = self.logs.pte_changed
        arch.on_flush = self.logs.flushed
        if self.stream_path:
            from .explore.stream import StreamRecorder
            self.recorder = rec = StreamRecorder(self.mem)
            logs = self.logs

            def pte_changed(ptep, cycle, old, new):
                logs.pte_changed(ptep, cycle, old, new)
                rec.pte_write(ptep, cycle, old, new)

            def acked(core, kind, va, asid):
                rec.acked(core, self.hw.cycle(), kind, va, asid)
            arch.on_pte_change = pte_changed
            arch.on_inval_ack = acked

    def command(self) -> str:
        workload = (f"FAST_TRACE={self.trace}" if self.trace else
                    f"FAST_PAGES={self.pages} FAST_MODE={self.mode.name.lower()}")
        ops = "" if self.ops == DEFAULT_OPS else f" FAST_OPS={','.join(self.ops)}"
        race = (f" FAST_WALK_DELAY={self.walk_delay}" if self.walk_delay else "") + (
            f" FAST_AIM={self.aim}" if self.aim != "random" else "") + (
            f" FAST_DEVICE={self.device_period}" if self.device_period else "")
        return (f"FAST_ACCESSES={self.accesses} {workload} FAST_KERNEL={self.kernel_mode}"
                f"{ops}{race} seed {self.seed}")

    # --- draining ----------------------------------------------------------------------------

    def drain(self) -> None:
        """Drain every ring (scheduler context, no simulated time passes): judge the records,
        apply the stores and the walkers' writes to the engine's memory copy."""
        self.stats["drains"] += 1
        batches = []
        for i in range(self.ncores):
            rec = self.hw.drain(i)
            if rec is None:
                continue
            mm = self.mms[i]
            if self.recorder is not None:
                self.recorder.records(i, rec, mm.asid, mm.pgd)
            rec = self.logs.judge(i, rec, mm, mm.asid, mm.pgd)
            batches.append((mm, rec))
            if self.storing is not None:
                st = (rec["op"] == AccessType.STORE) & (rec["fault"] == 0)
                if st.any():
                    self.storing[i] = np.unique(rec["va"][st] >> np.uint64(12))
        self.hw.drain_writes()
        if not batches:
            return
        # Stores, in the memory's order, into the engine's copy.
        done = np.concatenate([r["done"] for _, r in batches])
        st = np.concatenate([(r["op"] == AccessType.STORE) & (r["fault"] == 0)
                             for _, r in batches])
        pa = np.concatenate([r["pa"] for _, r in batches])
        data = np.concatenate([r["data"] for _, r in batches])
        if st.any():
            order = np.argsort(done[st], kind="stable")
            self.mem.hardware_wrote((pa[st][order] >> np.uint64(3)).astype(np.int64),
                                    data[st][order])
        self.logs.data(batches)

    # --- the scenario ---------------------------------------------------------------------------

    async def setup(self) -> None:
        if self.replay is not None:
            await self._setup_trace()
            return
        s = self.system
        rw = PROT_READ | PROT_WRITE
        length = self.pages * 4096

        def body():
            f = s.create_file("data.bin", self.pages)
            # Without dirty accounting a read fault maps a writable, clean page: the
            # walkers set D by compare-and-swap on the first store.
            f.account_dirty = self.writenotify
            parent = s.new_process()
            anon = s.mmap(parent, 0, length, rw, MAP_PRIVATE | MAP_ANONYMOUS)
            fsh = s.mmap(parent, 0, length, rw, MAP_SHARED, file=f)
            child = s.fork(parent)
            drv = None
            if self.device_period:
                from pyrmap.devdriver import register_device
                drv = register_device(child, checkers=s.checkers, config=self.dev_config,
                                      dev=self.arch.device, name="dev0")
            return parent, child, anon, fsh, drv

        if self.device_period:
            from .devarch import DevArch
            self.arch.attach_device(DevArch(self.arch))
            self.arch.device.checker = s.checkers.tlb
        parent, child, anon, fsh, drv = await self.env.run("setup", body)
        self.file_map = (child, fsh, length)
        if drv is not None:
            from .device import DeviceRequester
            self.device = DeviceRequester(self.arch.device, drv, data=False)
        # core 0: the parent's anonymous memory; core 1: the child's shared file mapping;
        # more cores alternate.
        plan = [(parent, anon), (child, fsh)]
        self.mms, self.windows = [], []
        per_core = -(-self.accesses // self.ncores)
        span_log2 = (self.pages * 4096).bit_length() - 1
        for i in range(self.ncores):
            mm, base = plan[i % 2]
            self.arch.switch_mm(i, mm)
            self.mms.append(mm)
            self.windows.append(base)
            self.hw.configure(i, mode=self.mode, base=base, span_log2=span_log2, stride=4104,
                              store_p=self.store_permille * 256 // 1000, fetch_p=0, user=1,
                              sum=0, asid=mm.asid, root=mm.pgd,
                              seed=self.rng.randrange(1, 1 << 64), limit=per_core,
                              trace_base=0, trace_len=1)
        self.storm.attach(self.mms, [[(w, w + length)] for w in self.windows])
        if self.prefault:
            self._prefault()
        await self.hw.push()
        await self._start_engines()

    async def _setup_trace(self) -> None:
        """Every core replays the trace in a process of its own, whose VMAs are the trace's."""
        from .explore.replay import write_records
        s, rp = self.system, self.replay

        def body():
            procs = []
            for _ in range(self.ncores):
                mm = s.new_process()
                rp.map_into(s, mm)
                procs.append(mm)
            return procs

        procs = await self.env.run("setup", body)
        self.file_map = None
        per_core = -(-self.accesses // self.ncores)
        # An engine fetches record k (from 0) only to issue its access k, so the records
        # past its limit are never read: a prefix of a long trace loads only its own.
        self.records = rp.records()[:per_core + 1]
        await write_records(self.hw, self.trace_base, self.records)
        self.mms, self.windows = [], []
        for i, mm in enumerate(procs):
            self.arch.switch_mm(i, mm)
            self.mms.append(mm)
            self.windows.append(0)
            self.hw.configure(i, stride=0, store_p=0, fetch_p=0, user=1, sum=0, asid=mm.asid,
                              root=mm.pgd, seed=self.rng.randrange(1, 1 << 64),
                              **rp.engine_fields(self.trace_base, per_core))
        self.storm.attach(self.mms, [[(v.start, v.end) for v in rp.trace.vmas]] * self.ncores)
        if self.prefault:
            self._prefault()
        await self.hw.push()
        await self._start_engines()

    async def _start_engines(self) -> None:
        dut = self.dut
        if self.snapshot:
            self._write_snapshot(self.snapshot)
        for i in range(self.ncores):
            getattr(dut, f"eng{i}__load_seed").value = 1
        await self.clock.edge()
        for i in range(self.ncores):
            getattr(dut, f"eng{i}__load_seed").value = 0
            getattr(dut, f"eng{i}__run").value = 1

    def _write_snapshot(self, directory: str) -> None:
        """Write what the Python-free harness (:mod:`cosim.fastharness`) needs to run the same
        accesses from the same state: ``memload.hex`` (every non-zero word of the memory, which
        the engine's copy equals after the last push) and ``harness.txt`` (the cycle at which
        the engines load their seeds, and their configuration inputs)."""
        from pathlib import Path
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(self.mem.words)
        vals = self.mem.words[idx]
        if self.replay is not None:
            # The trace's records, above the engine's frames (outside its copy).
            records = self.records
            idx = np.concatenate([idx, (self.trace_base >> 3) + np.arange(len(records))])
            vals = np.concatenate([vals, records])
        (out / "memload.hex").write_bytes(memload_text(idx, vals))
        lines = [f"start_cycle {self.hw.cycle()}"]
        lines += [f"set {port} {value}" for port, value in self.hw.configured.items()]
        (out / "harness.txt").write_text("\n".join(lines) + "\n")

    def _prefault(self) -> None:
        """Touch every page the engines will touch before they start (scheduler context: the
        PTE operations apply at once, no simulated time passes), so the measured run starts
        warm: its faults come from the kernel's work (swap-out, write-protect after
        writeback, migration), not from first touches.  A window's pages are touched with a
        store; a trace's, the pages of each core's replayed prefix, with a store in a
        writable VMA and a load in a read-only one."""
        from pyrmap.memory import do_page_fault
        from pyrmap.mmap import PROT_WRITE
        touches = []
        if self.replay is not None:
            per_core = -(-self.accesses // self.ncores)
            pages = np.unique(self.replay.pages(per_core)).tolist()
            vmas = self.replay.trace.vmas
            starts = [v.start for v in vmas]
            ops = []
            for p in pages:
                v = vmas[int(np.searchsorted(starts, p << 12, side="right")) - 1]
                ops.append(AccessType.STORE if v.prot & PROT_WRITE else AccessType.LOAD)
            for mm in self.mms:
                touches += [(mm, p << 12, op) for p, op in zip(pages, ops)]
        else:
            seen = set()
            for mm, base in zip(self.mms, self.windows):
                if (id(mm), base) in seen:
                    continue
                seen.add((id(mm), base))
                touches += [(mm, base + p * 4096, AccessType.STORE) for p in range(self.pages)]
        for mm, va, op in touches:
            do_page_fault(mm, va, op)
            self.stats["prefaulted"] += 1

    def checked(self) -> int:
        return sum(self.hw.status(i, "count") for i in range(self.ncores))

    def all_done(self) -> bool:
        return all(self.hw.status(i, "done") for i in range(self.ncores))

    async def _fault(self, core: int) -> None:
        hw = self.hw
        va = hw.status(core, "fault_va")
        op = AccessType(hw.status(core, "fault_op"))
        kind = FaultKind(hw.status(core, "fault_kind"))
        self.drain()
        if kind != FaultKind.PAGE:
            raise RuntimeError(f"core {core}: {op.name} at 0x{va:x} got a {kind.name} fault")
        mm = self.mms[core]
        await self.env.run(f"fault/core{core}", self.storm.fault, mm, va, op)
        self.stats["faults_handled"] += 1
        await hw.push()
        resume = getattr(self.dut, f"eng{core}__resume")
        # ``resume`` stays high until the engine has left its stop (``faulted`` low), and
        # only then does this return (or the run loop would take the same stop for a new
        # fault).  A rising edge awaited while the clock's rising-edge trigger is firing
        # (this coroutine woke from a host thread that woke on it) fires at once, in that
        # same time step, before any edge took ``resume``: a one-edge pulse was lost so.
        resume.value = 1
        while hw.status(core, "faulted"):
            await self.clock.edge()
        resume.value = 0
        resumed = self.hw.cycle()
        if self.recorder is not None:
            self.recorder.resumed(core, resumed)

    async def _kernel_step(self) -> None:
        s, env, rng = self.system, self.env, self.rng
        ops = self.ops
        page = self._aimed_page() if self.aim == "engines" else None
        if page is None:
            pages = s.mapped_user_pages()
            page = rng.choice(pages) if pages else None

        def kswapd():
            s.reclaim(8)

        def migration():
            if page is not None:
                s.migrate(page)

        threads = []
        if "kswapd" in ops:
            threads.append(env.spawn("kswapd", kswapd))
        if "migration" in ops:
            threads.append(env.spawn("migration", migration))
        if self.file_map is not None:
            child, fsh, length = self.file_map
            blocks = self.pages // 8 or 1
            start = fsh + rng.randrange(blocks) * 8 * 4096
            span = min(8 * 4096, fsh + length - start)
            zap = fsh + rng.randrange(blocks) * 8 * 4096

            def writeback():
                s.msync(child, start, span, check_backing=False)

            def dontneed():
                # The file pages stay in the page cache: the next touch maps them again.
                s.madvise_dontneed(child, zap, min(8 * 4096, fsh + length - zap))

            def split():
                # Once: the upper half of the file window becomes a VMA of its own (the
                # protection gains EXEC; the engines neither fetch nor lose a permission).
                s.mprotect(child, fsh + length // 2, length // 2,
                           PROT_READ | PROT_WRITE | PROT_EXEC)
            if "writeback" in ops:
                threads.append(env.spawn("writeback", writeback))
            if "dontneed" in ops:
                threads.append(env.spawn("dontneed", dontneed))
            if "split" in ops and not self.stats["kernel_steps"] and self.pages >= 2:
                threads.append(env.spawn("split", split))
            if "race" in ops:
                threads += self._race(child, fsh, length)
        if self.storm.active:
            threads.append(env.spawn("storm", self.storm.step))
        for t in threads:
            await t.join()
        self.stats["kernel_steps"] += 1

    def _aimed_page(self):
        """The page a random core's engine is accessing at this instant (``FAST_AIM=engines``),
        or None when its PTE maps none."""
        from pyrmap.checkers import lookup_pte
        from pyrmap.pte import _PAGE_V, pte_pfn
        core = self.rng.randrange(self.ncores)
        self.hw.drain_writes()
        _, pte, level = lookup_pte(self.mem, self.mms[core].pgd,
                                   self.hw.status(core, "fault_va"))
        return self.system.kernel.pages[pte_pfn(pte)] if pte & _PAGE_V and not level else None

    def _race(self, mm, base: int, length: int) -> list:
        """The ``race`` operation's threads (:data:`RACE_OPS`) on the pages of
        [``base``, ``base + length``) of ``mm`` that an engine stored to in its last drained
        block (at most 8 pages from the lowest); none when no engine did."""
        s, env, rng = self.system, self.env, self.rng
        lo_vpn, hi_vpn = base >> 12, (base + length) >> 12
        vpns = sorted({int(v) for i, vs in self.storing.items() if self.mms[i] is mm
                       for v in vs if lo_vpn <= v < hi_vpn})
        if not vpns:
            return []
        start = vpns[0] << 12
        span = (min(vpns[-1] + 1, vpns[0] + 8) - vpns[0]) << 12
        pause = 8 + rng.randrange(RACE_SPREAD)
        lead = rng.randrange(RACE_SPREAD)
        self.stats["races"] += 1

        def zap_twice():
            s.madvise_dontneed(mm, start, span)
            env.wait_cycles(pause)
            s.madvise_dontneed(mm, start, span)

        def writeback():
            env.wait_cycles(lead)
            s.msync(mm, start, span, check_backing=False)
        return [env.spawn("race-zap", zap_twice), env.spawn("race-writeback", writeback)]

    async def _device_loop(self) -> None:
        """The device's workload: every ``device_period`` cycles one access (a seeded word of
        the shared file window, a store with the run's store ratio) through the RTL
        DeviceMmu, its misses served by the host driver in a host thread, until the engines
        are done or the device was stopped.  A failure is kept in ``_device_error`` for the
        run loop (an exception here would end the simulation at once)."""
        rng = random.Random(self.seed * 7919 + 17)
        _, base, length = self.file_map
        try:
            while not self._device_stop and not self.device.driver.stopped:
                await Timer(self.device_period * CLOCK_PERIOD_NS, "ns")
                if self._device_stop:
                    break
                va = base + rng.randrange(length // 8) * 8
                store = rng.randrange(1000) < self.store_permille
                self._device_busy = True
                try:
                    await self.device.access(va, AccessType.STORE if store else AccessType.LOAD,
                                             rng.getrandbits(64) if store else None)
                finally:
                    self._device_busy = False
        except Exception as exc:  # noqa: BLE001 - raised by the run loop
            self._device_error = (self.hw.cycle(), exc)

    async def _exit_step(self) -> None:
        """The engines are done: the device's process exits (``exit_mmap``: the notifier
        release, which stops the device and invalidates it, then the unmaps) while, a seeded
        number of cycles (up to :data:`RACE_SPREAD`) after it starts, a page the device
        maps is migrated: its unmap notifies the secondary MMUs, and its old frame is
        freed."""
        s, env, rng = self.system, self.env, self.rng
        drv = self.device.driver
        pfns = sorted({pfn for pfn, _ in drv.sptes.values()})
        page = s.kernel.pages[rng.choice(pfns)] if pfns else None
        lead = rng.randrange(RACE_SPREAD)

        def migration():
            env.wait_cycles(lead)
            if page is not None:
                s.migrate(page)
        threads = [env.spawn("exit", s.exit, drv.mm), env.spawn("migration", migration)]
        for t in threads:
            await t.join()
        self.stats["kernel_steps"] += 1

    def _device_failed(self) -> None:
        """Raise what the device's workload failed with, if it did."""
        if self._device_error is not None:
            cycle, exc = self._device_error
            if isinstance(exc, InvariantViolation):
                raise exc
            raise RuntimeError(f"the device failed at cycle {cycle}: {exc}") from exc

    async def run(self) -> dict:
        await self.start()
        t0 = time.monotonic()
        cpu0 = time.process_time()
        c0 = self.hw.cycle()
        await self.setup()
        t_setup = time.monotonic()
        cpu_setup = time.process_time()
        self.setup_seconds, self.setup_cpu_seconds = t_setup - t0, cpu_setup - cpu0
        c_setup = self.hw.cycle()
        dut = self.dut
        next_kernel = c_setup + self.period
        next_progress = self.accesses // 10 or 1
        pending: dict[int, object] = {}
        import cocotb
        kernel_task = None
        quiescent_due = False
        wake = ValueChange(dut.wake)
        device_task = (cocotb.start_soon(self._device_loop()) if self.device is not None
                       else None)
        while True:
            # Sleep until something needs Python: a ring half full, an engine that faulted
            # or finished (the run ends when the last engine is done, not at the next timer):
            # FastTop's ``wake`` changes when any of these rises, one simulator callback for
            # all of them; a fault handler or kernel step finishing, or the next kernel step.
            # Each is an edge or a timer: no per-cycle Python.
            triggers = [wake]
            triggers += [t.complete for t in pending.values()]
            if kernel_task is not None:
                triggers.append(kernel_task.complete)
            if device_task is not None and not device_task.done():
                triggers.append(device_task.complete)
            wait = (max(1, next_kernel - self.hw.cycle()) if self.kernel_mode != "none"
                    else 1 << 16)
            triggers.append(Timer(wait * CLOCK_PERIOD_NS, "ns"))
            if not self._work_now(pending) and not (kernel_task is not None
                                                        and kernel_task.done()):
                await First(*triggers)
            self.stats["wakes"] += 1
            self._device_failed()
            if self._rings_half():
                self.drain()
            for i in range(self.ncores):
                t = pending.get(i)
                if t is not None and t.done():
                    t.result()
                    del pending[i]
                    t = None
                if t is None and self.hw.status(i, "faulted"):
                    pending[i] = cocotb.start_soon(self._fault(i))
            if kernel_task is not None and kernel_task.done():
                kernel_task.result()
                kernel_task = None
                quiescent_due = True
            if quiescent_due and kernel_task is None and not pending and not self._device_busy:
                # No host thread runs: the quiescent checks, on the drained mirror.
                self.drain()
                self.logs.quiescent()
                quiescent_due = False
            now = self.hw.cycle()
            if (self.kernel_mode != "none" and kernel_task is None and now >= next_kernel
                    and not self.all_done()):
                kernel_task = cocotb.start_soon(self._kernel_step())
                next_kernel = now + self.period
            n = self.checked()
            if n >= next_progress:
                self.progress(self._progress_line(n, t_setup))
                next_progress += self.accesses // 10 or 1
            if self.all_done() and not pending:
                break
        if kernel_task is not None:
            await kernel_task
        if device_task is not None:
            self._device_stop = True
            await device_task
            self._device_failed()
            if self.checks:
                self.drain()
                self.logs.quiescent()
                # Every device entry backed by its PTE (no host thread runs, copy drained).
                self.stats["device_entries_checked"] += check_device_entries(
                    self.system.checkers.tlb, self.device.driver)
            await self._exit_step()
        self.drain()
        self.logs.quiescent()
        wall = time.monotonic() - t_setup
        self.cpu_seconds = time.process_time() - cpu_setup
        cycles = self.hw.cycle() - c_setup
        t_save, cpu_save = time.monotonic(), time.process_time()
        if self.recorder is not None:
            self.recorder.save(self.stream_path)
        self.save_seconds = time.monotonic() - t_save
        self.save_cpu_seconds = time.process_time() - cpu_save
        return self.report(wall, cycles, time.monotonic() - t0)

    def _rings_half(self) -> bool:
        """Some ring holds at least half its depth of records not drained yet (from the
        pointers: a ring's ``half`` output reads its old value until the next edge after a
        drain)."""
        half = self.hw.log_depth // 2
        return (self.hw.write_backlog() >= self.hw.wlog_depth // 2
                or any(self.hw.backlog(i) >= half for i in range(self.ncores)))

    def _work_now(self, pending) -> bool:
        """Something is waiting already (the edge that would wake us has passed)."""
        if self._rings_half():
            return True
        for i in range(self.ncores):
            t = pending.get(i)
            if (t is None and self.hw.status(i, "faulted")) or (
                    t is not None and t.done()):
                return True
        return False

    def _progress_line(self, n: int, t_setup: float) -> str:
        k = self.system.kernel.stats
        dt = max(time.monotonic() - t_setup, 1e-9)
        return (f"{n:,} accesses checked ({n / dt:,.0f}/s), faults "
                f"{self.stats['faults_handled']}, kernel steps {self.stats['kernel_steps']}: "
                f"swapped out {k['pswpout']}, written {k['pages_written']}, migrated "
                f"{k['migrate_success']}")

    def report(self, wall: float, cycles: int, total: float) -> dict:
        s = self.system
        k = s.kernel.stats
        n = self.logs.counts["records"] - self.logs.counts["faults"]
        verdicts = {c.name: c.verdict for c in s.checkers.all}
        counts = dict(self.logs.counts)
        return {
            "path": "fast",
            "seed": self.seed,
            "accesses": n,
            "records": self.logs.counts["records"],
            "faults": self.stats["faults_handled"],
            "fault_rate": self.stats["faults_handled"] / max(n, 1),
            "cycles": cycles,
            "seconds": wall,
            "cpu_seconds": self.cpu_seconds,
            "setup_seconds": self.setup_seconds,
            "setup_cpu_seconds": self.setup_cpu_seconds,
            "save_seconds": self.save_seconds,
            "save_cpu_seconds": self.save_cpu_seconds,
            "accesses_per_cpu_s": n / self.cpu_seconds if self.cpu_seconds else 0.0,
            "seconds_total": total,
            "accesses_per_s": n / wall if wall else 0.0,
            "cycles_per_s": cycles / wall if wall else 0.0,
            "checks": self.checks,
            "kernel": self.kernel_mode,
            "kernel_steps": self.stats["kernel_steps"],
            "kernel_figures": {key: k[key] for key in ("pswpout", "pswpin", "pages_written",
                                                       "migrate_success", "pages_freed")},
            "log_checks": counts,
            "verdicts": verdicts if self.checks else {},
            "checker_checks": ({c.name: c.checks for c in s.checkers.all} if self.checks
                               else {}),
            "violations": [str(v) for v in s.checkers.violations][:20] + self.logs.violations[:20],
            "squashes": sum(self.hw.status(i, "squashes") for i in range(self.ncores)),
            "words_pushed": self.hw.words_pushed,
            "pushes": self.hw.pushes,
            "prefaulted": self.stats["prefaulted"],
            "races": self.stats["races"],
            "sw_ops": self.hw.sw_ops,
            "pte_ops": {k: int(v) for k, v in sorted(self.arch.stats.items())
                        if k.startswith("pte_")},
            "windows": dict(sorted(self.arch.windows.items())),
            "drains": self.stats["drains"],
            "wakes": self.stats["wakes"],
            "host": {key: self.env.stats[key] for key in ("threads", "resumes", "lock_waits")},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pages_per_core": self.pages,
            "walk_delay": self.walk_delay,
            # Walker memory answers whose PTE a kernel operation changed while they waited.
            "walk_reads_overtaken": int(self.dut.overtaken.value),
            "aim": self.aim,
            "rtl_tlbs_readable": self.arch.reads_rtl_tlbs,
            "mode": "trace" if self.trace else self.mode.name.lower(),
            "trace": self.trace,
            "quirks": self.quirks + self.dev_quirks,
            "device": (dict(self.device.figures(),
                            entries_checked=self.stats["device_entries_checked"])
                       if self.device is not None else None),
            "perf": [read_counters(self.dut.top, f"cpu{i}", CORE_COUNTERS)
                     for i in range(self.ncores)],
            "flushes": {k: v for k, v in self.arch.figures().items()
                        if k in ("flush_count", "flush_cycles_total", "inval_requests",
                                 "flush_cycles_histogram", "flushes")},
            "kernel_stats": {name: int(v) for name, v in k.items()},
            "storm": self.storm.figures(),
        }


async def run_from_env(dut) -> dict:
    """Run the scenario the environment describes; write the report to ``COSIM_REPORT``."""
    seed = _env_int("COSIM_SEED", 1)
    mmu = json.loads(os.environ.get("COSIM_CONFIG", "{}"))
    fast = json.loads(os.environ.get("COSIM_FAST", "{}"))
    progress_path = os.environ.get("COSIM_PROGRESS")

    def progress(text: str) -> None:
        log.info("%s", text)
        if progress_path:
            with open(progress_path, "a") as fh:
                fh.write(text + "\n")

    quirks = [q for q in os.environ.get("FAST_QUIRKS", "").split(",") if q]
    run = FastRun(dut, seed, mmu, fast, accesses=_env_int("FAST_ACCESSES", 100_000),
                  pages=_env_int("FAST_PAGES", 64), mode=os.environ.get("FAST_MODE", "uniform"),
                  store_permille=_env_int("FAST_STORE", 250),
                  kernel=os.environ.get("FAST_KERNEL", "reclaim"),
                  period=_env_int("FAST_PERIOD", 20_000),
                  ops=[op for op in os.environ.get("FAST_OPS", ",".join(DEFAULT_OPS)).split(",")
                       if op],
                  checks=bool(_env_int("FAST_CHECKS", 1)),
                  quirks=quirks, progress=progress, trace=os.environ.get("FAST_TRACE") or None,
                  stream=os.environ.get("FAST_STREAM") or None,
                  prefault=bool(_env_int("FAST_PREFAULT", 0)),
                  snapshot=os.environ.get("FAST_SNAPSHOT") or None,
                  walk_delay=_env_int("FAST_WALK_DELAY", 0),
                  aim=os.environ.get("FAST_AIM", "random"),
                  writenotify=bool(_env_int("FAST_WRITENOTIFY", 1)),
                  yield_cycles=_env_int("FAST_YIELD", 2),
                  device=_env_int("FAST_DEVICE", 0))
    error = None
    profile = os.environ.get("FAST_PROFILE")
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    try:
        rep = await run.run()
    except InvariantViolation as exc:
        error = str(exc)
        rep = {"path": "fast", "seed": seed, "error": error, "checker": exc.checker,
               "cycle": run.hw.cycle(), "quirks": run.quirks + run.dev_quirks,
               "windows": dict(sorted(run.arch.windows.items()))}
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
    path = os.environ.get("COSIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(rep, fh, indent=2, default=str)
    if error is not None:
        raise AssertionError(error)
    bad = rep.get("violations")
    if bad:
        raise AssertionError(f"{len(bad)} violations; first: {bad[0]}")
    return rep
