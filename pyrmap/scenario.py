"""Building a system to run: kernel + MMU + scheduler + checkers + processes + files + workloads.

:class:`System` is what the property tests, the quirk tests and the demo drive, and what the
RTL co-simulation reuses with its own arch (pass ``arch=``).  Every mm operation goes through a
:class:`System` method that calls the engine, then tells the shadow memory what the operation
means for the user (checker (c)) and, once it has returned, checks that no TLB still holds what
it removed (checker (a)).  :func:`random_program` builds a seeded random sequence of such
operations with CPU workloads and concurrent reclaim, migration and writeback threads; every
step ends with the quiescent checks.

Example
-------
>>> sys = System(seed=1, nframes=96)
>>> p = sys.new_process()
>>> a = sys.mmap(p, 0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
>>> sys.spawn_workload(0, p, [("store", a, 7), ("load", a, 7)])
>>> sys.run()
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterable, Optional

from .checkers import Checkers
from .kernel import Kernel, KernelConfig, Quirks
from .mm_types import PG, AddressSpace, page_mapped
from .physmem import PhysMem
from .profiles import DEFAULT_PROFILE, get_profile, kernel_quirks
from .pte import PAGE_SHIFT, PAGE_SIZE
from .mmap import MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED
from .workload import PROT_EXEC, PROT_READ, PROT_WRITE, CpuWorkload, random_accesses

__all__ = ["System", "random_program", "run_program", "PROT_READ", "PROT_WRITE", "PROT_EXEC",
           "MAP_SHARED", "MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED", "reproduce_command",
           "PROGRAM_OPS", "ProgramStuck"]


def _mmap_mod():
    from . import mmap
    return mmap


def reproduce_command(seed: int, steps: int, *, quirks=(), sequential: bool = False,
                      ops=None, svade: bool = False, races: bool = True,
                      sched: str = "random", depth: int = 3, kernel: str = DEFAULT_PROFILE,
                      **opts) -> str:
    """The ``python -m pyrmap fuzz`` command line that replays a random program."""
    extra = f" --kernel {kernel}" if kernel != DEFAULT_PROFILE else ""
    extra += "".join(f" --{k.replace('_', '-')} {v}" for k, v in opts.items() if v is not None)
    if sched != "random":
        extra += f" --sched {sched} --depth {depth}"
    if not races:
        extra += " --no-races"
    if ops:
        extra += f" --ops {','.join(sorted(ops))}"
    extra += "".join(f" --quirk {q}" for q in quirks or ())
    if sequential:
        extra += " --sequential"
    if svade:
        extra += " --svade"
    return f"python -m pyrmap fuzz --seed {seed} --steps {steps}{extra}"


#: Why a workload spins until an operation has begun, and paces its accesses to it.
SPIN = "spin until the operation has begun"
PACE = "pace the accesses to the operation"

#: The yield points at which, with window coverage on, the scheduler switches with its hot
#: probability (see :class:`pyrmap.sched.Scheduler`): the arch's yield points right before
#: an atomic PTE change, and a workload's spins and paces (so that its accesses spread over
#: the operation they run beside).
HOT_POINTS = frozenset({"ptep_get_and_clear", "set_pte_at", "ptep_set_wrprotect",
                        "ptep_test_and_clear_young", SPIN, PACE})


class System:
    """One machine ready to run: a :class:`Kernel` on an MMU, a seeded scheduler, checkers.

    Parameters
    ----------
    seed : int
        Seeds the scheduler, the MMU's replacement and every random choice.
    nframes : int
        Physical memory size in 4 KiB frames (few frames = memory pressure).
    ncores : int
        MMU cores.
    swap_slots : int
        Swap device size (0: no swap device).
    quirks : Quirks or iterable of str, optional
        Historical bugs to switch on, over the profile's.
    kernel : str
        The kernel profile (:mod:`pyrmap.profiles`): ``"fixed"`` (default) or ``"2008"``.
    config : KernelConfig, optional
    arch : callable, optional
        ``arch(mem, ncores, seed, scheduler) -> Arch``; default SoftArch.
    check : bool
        Install the checkers (default).
    raise_on_violation : bool
        Checkers raise at once (default) or only collect.
    command : str
        Printed in violation reports.
    tlb_entries : int
        Entries of each core's (fully associative) TLB in the default SoftArch.
    history : bool
        The default SoftArch records each PTE's recent values for violation reports.
    svadu : bool
        Hardware A/D updates (default); False: Svade, A/D faults the engine resolves.
    faults : pyrmap.faults.FaultPlan, optional
        Faults to inject (swap write failures, allocation failures under reclaim, -EINTR
        from mm_take_all_locks), drawn from ``seed``; none by default.
    strategy : str
        The scheduler's strategy: "random" switches or "pct" (see :mod:`pyrmap.sched`).
    depth : int
        PCT's bug depth.
    windows : bool
        Count window coverage (:mod:`pyrmap.windows`) in :attr:`windows`.

    Members
    -------
    kernel, arch, sched, checkers :
        The machine, its MMU, the seeded scheduler and the checkers.
    processes : list of MmStruct
        Live processes made through this system (fork and exit keep it current).
    windows : WindowCoverage or None
        Landings inside the windows of every operation (``windows=True``).
    workloads, device_workloads : list
        Every workload spawned, with its counters.
    """

    def __init__(self, *, seed: int = 0, nframes: int = 128, ncores: int = 2,
                 swap_slots: int = 256, quirks=None, config: Optional[KernelConfig] = None,
                 arch: Optional[Callable] = None, check: bool = True,
                 raise_on_violation: bool = True, command: str = "", tlb_entries: int = 8,
                 history: bool = True, svadu: bool = True, faults=None,
                 strategy: str = "random", depth: int = 3, windows: bool = False,
                 kernel: str = DEFAULT_PROFILE):
        if not isinstance(seed, int):
            raise TypeError(f"Seed must be an integer, not {seed!r}")
        if not isinstance(nframes, int) or nframes < 16:
            raise ValueError(f"A system needs at least 16 frames, not {nframes!r}")
        if not isinstance(ncores, int) or ncores < 1:
            raise ValueError(f"Core count must be a positive integer, not {ncores!r}")
        from .sched import Scheduler
        self.seed = seed
        self.rng = random.Random(seed)
        self.sched = Scheduler(seed, strategy=strategy, depth=depth)
        mem = PhysMem(nframes)
        if arch is None:
            self.arch = _softarch(mem, ncores, seed, self.sched, tlb_entries, history, svadu)
        else:
            self.arch = arch(mem, ncores, seed, self.sched)
        names = quirks.enabled() if isinstance(quirks, Quirks) else list(quirks or ())
        for name in names:
            if name not in vars(Quirks()):
                raise ValueError(f"Unknown quirk {name!r}; known: "
                                 f"{', '.join(f for f in vars(Quirks()))}")
        #: The kernel profile this machine runs (:mod:`pyrmap.profiles`).
        self.profile = get_profile(kernel)
        quirks = kernel_quirks(self.profile, names)
        if config is None:
            config = KernelConfig(swap_slots=max(swap_slots, 1))
        self.kernel = Kernel(self.arch, quirks, config)
        if faults:
            from .faults import FaultInjector
            self.kernel.faults = FaultInjector(faults, seed)
            self.arch.faults = self.kernel.faults      # bus errors on the walks
        if swap_slots:
            from .swap import swapon
            swapon(self.kernel, swap_slots)
        self.checkers = Checkers(self.kernel, seed=seed, command=command,
                                 raise_on_violation=raise_on_violation)
        self.check = check
        if check:
            self.checkers.install()
        self.processes: list = []
        self.files: list[AddressSpace] = []
        self.workloads: list[CpuWorkload] = []
        self.device_workloads: list = []
        self._blocks = 0
        self._threads = 0
        self._ops: dict[str, str] = {}
        self._flux: list[tuple[object, int, int]] = []
        self._changed: list[tuple[object, int, int]] = []
        self.windows = None
        if windows:
            from .windows import WindowCoverage
            self.windows = WindowCoverage(self.arch, self.op_of,
                                          lambda: list(self.processes)).install()
            self.sched.hot = self.windows.inside
            self.sched.hot_points = HOT_POINTS

    # --- what each thread is doing -----------------------------------------------------------

    @contextlib.contextmanager
    def _op(self, label: str, mm=None, start: int = 0, end: int = 0):
        """The calling thread runs operation ``label`` (window coverage names windows by it);
        with ``mm``, [start, end) of mm is changing meanwhile (a segmentation fault there is
        legal)."""
        me = self.arch.current_thread()
        prev = self._ops.get(me)
        self._ops[me] = label
        item = (mm, start, end)
        if mm is not None:
            self._flux.append(item)
        try:
            yield
        finally:
            if mm is not None:
                self._flux.remove(item)
                self._changed.append(item)
            if prev is None:
                self._ops.pop(me, None)
            else:
                self._ops[me] = prev

    def op_of(self, thread: str) -> str:
        """The operation ``thread`` runs: the innermost :meth:`_op` label, else "fault" for a
        CPU or device workload, "reclaim" for kswapd, else the thread's base name."""
        label = self._ops.get(thread)
        if label is not None:
            return label
        base = thread.split("#", 1)[0]
        if base.startswith("cpu") or base == "device":
            return "fault"              # a CPU's, or the device driver's get_user_pages
        return {"kswapd": "reclaim"}.get(base, base)

    def segv_ok(self, mm, va: int, op) -> bool:
        """A segmentation fault at ``va`` of mm is legal: an operation of this run is changing
        or changed the range around it (munmap, mprotect, mremap), so an access a workload
        chose before may no longer be allowed.  Anywhere else it is a workload bug."""
        return any(m is mm and lo <= va < hi for m, lo, hi in self._flux + self._changed)

    # --- building ----------------------------------------------------------------------------

    @property
    def shadow(self):
        return self.checkers.shadow

    def new_process(self):
        """A new, empty mm (with the notifier-pairing client when checking)."""
        mm = _mmap_mod().mm_alloc(self.kernel)
        self.processes.append(mm)
        if self.check:
            self._attach(mm)
        return mm

    def _attach(self, mm) -> None:
        try:
            self.checkers.notifier.attach(mm)
        except ImportError:  # pragma: no cover - notifier core missing
            pass

    def create_file(self, name: str, npages: int) -> AddressSpace:
        """A file of ``npages`` pages (its initial contents snapshotted by the shadow)."""
        mapping = _mmap_mod().file_create(self.kernel, name, npages)
        self.files.append(mapping)
        self.shadow.register_file(mapping)
        return mapping

    # --- mm operations (engine call, then shadow, then checker (a)) --------------------------

    def mmap(self, mm, addr: int, length: int, prot: int, flags: int, file=None,
             pgoff: int = 0) -> int:
        m = _mmap_mod()
        addr = m.do_mmap(mm, addr, length, prot, flags, file=file, pgoff=pgoff)
        shared = bool(flags & MAP_SHARED)
        self.shadow.on_mmap(mm, addr, length, prot, shared, file, pgoff)
        return addr

    def munmap(self, mm, addr: int, length: int) -> None:
        with self._op("munmap", mm, addr, addr + _align(length)):
            _mmap_mod().do_munmap(mm, addr, length)
            self.shadow.on_munmap(mm, addr, length)

    def mprotect(self, mm, addr: int, length: int, prot: int) -> None:
        with self._op("mprotect", mm, addr, addr + _align(length)):
            _mmap_mod().mprotect(mm, addr, length, prot)
            self.shadow.on_mprotect(mm, addr, length, prot)

    def mremap(self, mm, old: int, old_len: int, new_len: int, flags: int = 1,
               new_addr: int = 0) -> int:
        m = _mmap_mod()
        with self._op("mremap", mm, old, old + _align(old_len)):
            got = m.mremap(mm, old, old_len, new_len, flags, new_addr)
            self.shadow.on_mremap(mm, old, old_len, got, new_len)
        return got

    def madvise_dontneed(self, mm, addr: int, length: int) -> None:
        m = _mmap_mod()
        me = (mm, addr, addr + _align(length))
        # Another zap of the same range still in flight may clear a pte that a fault refilled
        # after ours: its flush, not ours, ends that entry (the TLB checker's return check
        # leaves such a range to it).
        zapping = self.checkers.tlb.zapping
        zapping.append(me)
        try:
            with self._op("madvise"):
                m.madvise(mm, addr, length, MADV_DONTNEED)
                self.shadow.on_madvise_dontneed(mm, addr, length)
        finally:
            zapping.remove(me)

    def fork(self, mm):
        m = _mmap_mod()
        with self._op("fork"):
            child = m.dup_mm(mm)
            self.processes.append(child)
            self.shadow.on_fork(mm, child)
        if self.check:
            self._attach(child)
        return child

    def exit(self, mm) -> None:
        m = _mmap_mod()
        with self._op("exit"):
            m.mmput(mm)
            self.shadow.on_exit(mm)
        if mm in self.processes:
            self.processes.remove(mm)

    def remap_file_pages(self, mm, start: int, size: int, pgoff: int) -> None:
        from .fremap import sys_remap_file_pages
        with self._op("remap_file_pages"):
            rc = sys_remap_file_pages(mm, start, size, 0, pgoff, 0)
        if isinstance(rc, int) and rc < 0:
            raise OSError(-rc, f"remap_file_pages(0x{start:x}, {size}, {pgoff}) failed")
        self.shadow.on_remap_file_pages(mm, start, size, pgoff)

    def msync(self, mm, start: int, length: int, check_backing: bool = True) -> int:
        from .filemap import msync
        with self._op("writeback"):
            rc = msync(mm, start, length)
        if self.check:
            for mapping, pgoff in self.shadow.shared_pgoffs(mm, start, start + _align(length)):
                if check_backing:
                    self.shadow.check_backing(mapping, [pgoff])
        return rc

    def reclaim(self, nr: int = 8) -> int:
        from .vmscan import try_to_free_pages
        with self._op("reclaim"):
            return try_to_free_pages(self.kernel, nr)

    def age(self, nr: int = 16) -> int:
        from .vmscan import shrink_active_list
        with self._op("aging"):
            return shrink_active_list(self.kernel, nr)

    def migrate(self, page) -> int:
        """Migrate one mapped user page to a new frame (``migrate_pages``).  Returns the number
        of pages not migrated (0 or 1); 1 without trying when the page is no longer mapped.
        (Checker (a) runs at the engine's return: the ``returned`` event.)"""
        from .migrate import migrate_pages
        if page._count <= 0 or not page_mapped(page):
            return 1
        with self._op("migration"):
            return migrate_pages(self.kernel, [page])

    def mapped_user_pages(self) -> list:
        """Pages mapped by some PTE (candidates for migration), in frame order."""
        return [p for p in self.kernel.pages if page_mapped(p) and not p.test(PG.pagetable)]

    # --- threads -----------------------------------------------------------------------------

    def spawn(self, name: str, fn: Callable, *args, mm=None):
        return self.sched.spawn(name, fn, *args, mm=mm)

    def _name(self, base: str) -> str:
        self._threads += 1
        return f"{base}#{self._threads}"

    def _value_base(self, agent: int) -> int:
        """A fresh block of store values for one workload: no value is ever stored twice, so
        a load returning an older value can never pass for the newest one."""
        self._blocks += 1
        return ((agent + 1) << 56) | (self._blocks << 28)

    def workload(self, core: int, mm, source: Iterable, **kw) -> CpuWorkload:
        kw.setdefault("value_base", self._value_base(core))
        kw.setdefault("segv_ok", self.segv_ok)
        wl = CpuWorkload(self.kernel, core, mm, source, checkers=self.checkers, **kw)
        self.workloads.append(wl)
        return wl

    def spawn_workload(self, core: int, mm, source: Iterable, **kw) -> CpuWorkload:
        wl = self.workload(core, mm, source, **kw)
        self.spawn(self._name(wl.name), wl.run, mm=mm)
        return wl

    def _regions(self, mm, within: Optional[tuple[int, int]] = None):
        """The shadow's regions of mm, clipped to ``within`` = (start, end) when given."""
        regs = self.shadow.regions(mm)
        if within is None:
            return regs
        lo, hi = within
        return [(max(a, lo), min(b, hi), prot, sh) for a, b, prot, sh in regs
                if a < hi and b > lo]

    def random_workload(self, core: int, mm, count: int, *, store_ratio: float = 0.5,
                        rng: Optional[random.Random] = None,
                        within: Optional[tuple[int, int]] = None,
                        during: Optional["_Running"] = None, **kw) -> CpuWorkload:
        """A random-with-locality workload on ``core``, on words of its own (see
        :meth:`agent_offset`); with ``within`` = (start, end), only on that part of mm (the
        range an operation is changing); with ``during``, only while that operation runs
        (:func:`_during`: it spins until the operation began and paces its accesses)."""
        rng = rng or random.Random(self.rng.randrange(1 << 30))
        src = _offset(random_accesses(rng, lambda: self._regions(mm, within), count,
                                      store_ratio=store_ratio, words=2),
                      self.agent_offset(mm, core))
        if during is not None:
            src = _during(self.arch, during, src)
        return self.spawn_workload(core, mm, src, **kw)

    def secondary(self, mm):
        """The secondary-MMU driver of ``mm`` (registered on first use, by the calling
        thread: registration may race with everything else, as mmu_notifier_register may)."""
        for sec in self.checkers.secondaries:
            if sec.mm is mm and not sec.released:
                return sec
        return self.checkers.add_secondary(mm)

    def agent_offset(self, mm, agent: int) -> int:
        """Byte offset in every page of the two words that ``agent`` (a core, or ``ncores``
        for the device) uses.  Distinct agents never share a word, so no two threads race on
        one word and the shadow's order of stores is the memory's; an agent does read words
        it wrote through another mm (shared mappings, fork)."""
        return 16 * agent

    def spawn_device(self, mm, count: int, *, store_ratio: float = 0.3,
                     rng: Optional[random.Random] = None,
                     within: Optional[tuple[int, int]] = None):
        """A device thread: ``count`` random accesses through the device TLB on ``mm``'s
        memory (its own words of each page; only [start, end) with ``within``), the driver
        registering itself first."""
        from .workload import DeviceWorkload
        rng = rng or random.Random(self.rng.randrange(1 << 30))
        src = _offset(random_accesses(rng, lambda: self._regions(mm, within), count,
                                      store_ratio=store_ratio, words=2),
                      self.agent_offset(mm, self.arch.ncores))

        def body():
            wl = DeviceWorkload(self.kernel, self.secondary(mm), src, checkers=self.checkers,
                                value_base=self._value_base(self.arch.ncores),
                                segv_ok=self.segv_ok)
            self.device_workloads.append(wl)
            return wl.run()
        return self.spawn(self._name("device"), body, mm=mm)

    def run(self, check: bool = True) -> None:
        """Run every spawned thread to completion, then the quiescent checks."""
        self.sched.run()
        self.threads_done()
        if check and self.check:
            self.checkers.check_all()

    def threads_done(self) -> None:
        """Every spawned thread finished: no range is changing any more (a segmentation
        fault is a workload bug again) and every window is closed."""
        self._changed.clear()
        if self.windows is not None:
            self.windows.quiesce()

    # --- figures -----------------------------------------------------------------------------

    def tlb_stats(self) -> dict[str, int]:
        """The arch's counters (:data:`pyrmap.arch.ARCH_COUNTERS`) and the cores' counters
        (:data:`pyrmap.arch.CORE_COUNTERS`) summed over cores."""
        arch = self.arch
        out = dict(arch.counters())
        for core in range(arch.ncores):
            for k, v in arch.perf(core).items():
                out[k] = out.get(k, 0) + v
        return out


def _offset(accesses, delta: int):
    for acc in accesses:
        page = acc.vaddr & ~(PAGE_SIZE - 1)
        yield type(acc)(acc.op, page + ((acc.vaddr - page + delta) % PAGE_SIZE), acc.value)


class _Running:
    """Whether an operation thread has begun and ended: :meth:`wrap` makes its body say so,
    and :func:`_during` keeps a workload's accesses inside that span."""

    def __init__(self):
        self.started = False
        self.done = False

    def wrap(self, fn: Callable, *args) -> Callable:
        def body():
            self.started = True
            try:
                return fn(*args)
            finally:
                self.done = True
        return body


def _during(arch, op: _Running, accesses: Iterable, spins: int = 4096):
    """``accesses`` beside ``op``: the CPU spins at yield points (at most ``spins`` of them)
    until ``op`` has begun, then issues them, each after a yield point that paces it to
    ``op`` while ``op`` runs."""
    for _ in range(spins):
        if op.started:
            break
        arch.yield_point(SPIN)
    for acc in accesses:
        if not op.done:
            arch.yield_point(PACE)
        yield acc


def _align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _softarch(mem, ncores, seed, sched, tlb_entries, history, svadu=True):
    from .softarch import SoftArch
    return SoftArch(mem, ncores, seed=seed, sched=sched, tlb_entries=tlb_entries,
                    tlb_ways=tlb_entries, history=history, svadu=svadu)


# ---------------------------------------------------------------------------------------------
# Random programs (the property tests and `python -m pyrmap fuzz`).

class ProgramStuck(ValueError):
    """No operation a random program may draw applies (``ops=`` too narrow)."""


#: The operations of a random program and their weights.
PROGRAM_OPS = {"mmap_anon": 4, "mmap_file": 4, "access": 6, "munmap": 1, "mprotect": 1,
               "mremap": 1, "fork": 1, "exit": 1, "madvise": 1, "msync": 2, "reclaim": 3,
               "migrate": 2, "remap_file_pages": 1,
               # the race operations (run under load on the same mm when seeking races)
               "mprotect_none": 1, "mremap_move": 1, "dontneed_twice": 1, "first_stores": 3,
               "cow_race": 2, "fork_exit": 1, "mremap_shrink": 1, "migrate_stores": 1,
               # MADV_DONTNEED against the CPUs and writeback: 1cf35d47712d's and
               # 5df397dec7c4's race, closed in the fixed kernel
               "dontneed_race": 3}

def random_program(system: System, steps: int, *, rng: Optional[random.Random] = None,
                   nprocs: int = 3, nfiles: int = 2, file_pages: int = 8,
                   concurrency: bool = True, ops: Optional[Iterable[str]] = None,
                   on_step: Optional[Callable[[int, str], None]] = None,
                   races: bool = True) -> list[str]:
    """Run ``steps`` random mm operations on ``system``, checking after every step.

    Each step is one operation (mmap of anonymous or file memory, private or shared; munmap,
    mprotect, mremap, fork, exit, madvise(DONTNEED), msync, a reclaim pass, migration,
    remap_file_pages) possibly run as a thread next to CPU workloads on the cores and a
    reclaim thread, interleaved by the seeded scheduler.  Returns the step log.

    With ``races`` (and ``concurrency``), the workloads run on *every* mm, the one an
    operation changes included, so that CPU and device accesses, walks and A/D updates land
    inside the operation's windows; and the race operations are drawn too: mprotect to
    PROT_NONE and back, mremap that moves, grows or shrinks, madvise(DONTNEED) of one range
    from two threads at once, fork and msync under load.  A segmentation fault inside a
    range being changed is then legal (:meth:`System.segv_ok`).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, not {steps!r}")
    if ops is not None:
        ops = list(ops)
        known = list(PROGRAM_OPS)
        for name in ops:
            if name not in known:
                raise ValueError(f"Unknown operation {name!r}; known: {', '.join(known)}")
        if not ops:
            raise ValueError("ops names no operation")
    rng = rng or random.Random(system.seed)
    log: list[str] = []
    files = [system.create_file(f"file{i}", file_pages) for i in range(nfiles)]
    for _ in range(max(1, nprocs - 1)):
        system.new_process()
    allowed = set(ops) if ops is not None else None
    program = _Program(system, rng, files, nprocs, concurrency, races and concurrency)
    for step in range(steps):
        name, fn = program.pick(allowed)
        system.checkers.step(name)
        log.append(f"{step}: {name}")
        if on_step is not None:
            on_step(step, name)
        fn()
        system.run()
    return log


def run_program(seed: int, steps: int, *, nframes: int = 64, quirks=None,
                concurrency: bool = True, svadu: bool = True, faults=None,
                strategy: str = "random", depth: int = 3, windows: bool = True,
                kernel: str = DEFAULT_PROFILE, **kw) -> System:
    """Build a :class:`System` for ``seed`` and run :func:`random_program` on it
    (``faults``: a :class:`pyrmap.faults.FaultPlan` to inject)."""
    names = quirks.enabled() if isinstance(quirks, Quirks) else list(quirks or ())
    system = System(seed=seed, nframes=nframes, quirks=quirks, svadu=svadu, faults=faults,
                    strategy=strategy, depth=depth, windows=windows, kernel=kernel,
                    command=reproduce_command(seed, steps, quirks=names, svade=not svadu,
                                              kernel=kernel,
                                              sequential=not concurrency, ops=kw.get("ops"),
                                              nframes=nframes,
                                              faults=faults.text() if faults else None,
                                              races=kw.get("races", True),
                                              sched=strategy, depth=depth))
    random_program(system, steps, concurrency=concurrency, **kw)
    return system


class _Program:
    """Chooses a valid next step from the current state."""

    REGION_PAGES = (1, 2, 3, 4, 6)

    def __init__(self, system: System, rng: random.Random, files, nprocs: int,
                 concurrency: bool, races: bool = False):
        self.s = system
        self.rng = rng
        self.files = files
        self.nprocs = nprocs
        self.concurrency = concurrency
        self.races = races

    def procs(self):
        return list(self.s.processes)

    def regions(self, mm, shared_file: bool = False):
        regs = [r for r in self.s.shadow._mm(mm).regions]
        if shared_file:
            regs = [r for r in regs if r.shared and isinstance(r.obj, AddressSpace)]
        return regs

    #: Draws without an applicable operation before a program gives up (``--ops`` naming
    #: only operations that need something mapped, say).
    MAX_DRAWS = 1000

    def pick(self, allowed):
        choices = list(PROGRAM_OPS.items())
        if allowed is not None:
            choices = [c for c in choices if c[0] in allowed]
        for _ in range(self.MAX_DRAWS):
            name = self.rng.choices([c[0] for c in choices], [c[1] for c in choices])[0]
            fn = getattr(self, "op_" + name)()
            if fn is not None:
                return fn
        raise ProgramStuck(f"None of the operations {', '.join(c[0] for c in choices)} applies "
                         f"to the system as it is (add mmap_anon or mmap_file)")

    # Each op_* returns (label, thunk) or None when it does not apply now.

    def _mm(self):
        procs = self.procs()
        if not procs:
            return None
        return self.rng.choice(procs)

    def _region(self, shared_file=False):
        cands = [(mm, r) for mm in self.procs() for r in self.regions(mm, shared_file)]
        if not cands:
            return None
        return self.rng.choice(cands)

    def _with_load(self, label, main, mm=None, gone: bool = False, span=None,
                   same_mm: bool = True):
        """Run ``main`` as a thread next to workloads on the cores (and maybe reclaim).

        ``mm``, when given, is the mm whose layout ``main`` changes: no workload runs on it,
        unless the program seeks races (then workloads run on every mm, ``mm`` included, and
        a segmentation fault in the changing range is legal).  ``gone``: ``main`` ends ``mm``
        (exit): nothing runs on it even then.  ``span`` = (start, end): the range of ``mm``
        that ``main`` changes; workloads on ``mm`` keep to it.  ``same_mm`` False: no workload
        on ``mm`` even when seeking races."""
        s = self.s
        if not self.concurrency:
            return label, main

        def go():
            op = _Running()
            s.spawn(s._name("op"), op.wrap(main))
            on_mm = self.races and same_mm and not gone
            others = [p for p in self.procs() if (on_mm or p is not mm) and self.regions(p)]
            if on_mm and mm is not None and self.regions(mm):
                others = [mm] * len(others) + others       # the changing mm, half the time
            def near(p):
                return span if self.races and p is mm and span is not None else None
            for core in range(s.arch.ncores):
                if not others or self.rng.random() < 0.3:
                    continue
                p = self.rng.choice(others)
                # Read-mostly now and then: clean PTEs keep their deferred flush (a dirty
                # shared one is flushed under the pte lock), so loads land in that window.
                ratio = self.rng.choice((0.1, 0.5)) if near(p) else 0.5
                s.random_workload(core, p, self.rng.randrange(4, 24), within=near(p),
                                  store_ratio=ratio, during=op if self.races else None)
            if others and self.rng.random() < 0.3:
                p = self.rng.choice(others)
                s.spawn_device(p, self.rng.randrange(4, 16), within=near(p))
            if self.rng.random() < 0.4:
                s.spawn(s._name("kswapd"), s.reclaim, self.rng.randrange(1, 6))
        return label, go

    def op_access(self):
        s = self.s
        if not any(self.regions(mm) for mm in self.procs()):
            return None

        def go():
            for core in range(s.arch.ncores):
                mm = self._mm()
                if mm is not None and self.regions(mm):
                    s.random_workload(core, mm, self.rng.randrange(8, 40))
            mm = self._mm()
            if mm is not None and self.regions(mm) and self.rng.random() < 0.4:
                s.spawn_device(mm, self.rng.randrange(4, 24))
            if self.concurrency and self.rng.random() < 0.5:
                s.spawn(s._name("kswapd"), s.reclaim, self.rng.randrange(1, 8))
        return "access", go

    def op_mmap_anon(self):
        mm = self._mm()
        if mm is None or len(self.regions(mm)) > 6:
            return None
        n = self.rng.choice(self.REGION_PAGES)
        shared = self.rng.random() < 0.3
        flags = MAP_ANONYMOUS | (MAP_SHARED if shared else MAP_PRIVATE)
        label = f"mmap anon {'shared' if shared else 'private'} {n} pages in mm{mm.asid}"
        return label, lambda: self.s.mmap(mm, 0, n * PAGE_SIZE, PROT_READ | PROT_WRITE, flags)

    def op_mmap_file(self):
        mm = self._mm()
        if mm is None or len(self.regions(mm)) > 6 or not self.files:
            return None
        f = self.rng.choice(self.files)
        n = self.rng.randrange(1, f.npages + 1)
        pgoff = self.rng.randrange(0, f.npages - n + 1)
        shared = self.rng.random() < 0.6
        flags = MAP_SHARED if shared else MAP_PRIVATE
        label = (f"mmap {f.name} {'shared' if shared else 'private'} pgoff {pgoff} "
                 f"{n} pages in mm{mm.asid}")
        return label, lambda: self.s.mmap(mm, 0, n * PAGE_SIZE, PROT_READ | PROT_WRITE, flags,
                                          file=f, pgoff=pgoff)

    def _subrange(self, r):
        npages = (r.end - r.start) >> PAGE_SHIFT
        first = self.rng.randrange(npages)
        count = self.rng.randrange(1, npages - first + 1)
        return r.start + first * PAGE_SIZE, count * PAGE_SIZE

    def op_munmap(self):
        got = self._region()
        if got is None:
            return None
        mm, r = got
        addr, length = self._subrange(r)
        return self._with_load(f"munmap 0x{addr:x}+{length:#x} in mm{mm.asid}",
                               lambda: self.s.munmap(mm, addr, length), mm,
                               span=(addr, addr + length))

    def op_mprotect(self):
        got = self._region()
        if got is None:
            return None
        mm, r = got
        addr, length = self._subrange(r)
        prot = self.rng.choice([PROT_READ, PROT_READ | PROT_WRITE, 0])
        return self._with_load(f"mprotect 0x{addr:x}+{length:#x} {prot} in mm{mm.asid}",
                               lambda: self.s.mprotect(mm, addr, length, prot), mm,
                               span=(addr, addr + length))

    def _new_len(self, r, deltas) -> int:
        """A new length for region ``r``: its length plus a page count drawn from
        ``deltas``, at least a page, never beyond the end of its file, and never more for
        shmem (it keeps the size it was created with)."""
        old_len = r.end - r.start
        new_len = max(PAGE_SIZE, old_len + PAGE_SIZE * self.rng.choice(deltas))
        if r.obj is not None and not isinstance(r.obj, AddressSpace):
            new_len = min(new_len, old_len)
        elif r.obj is not None and r.pgoff + (new_len >> PAGE_SHIFT) > r.obj.npages:
            new_len = old_len
        return new_len

    def op_mremap(self):
        got = self._region()
        if got is None:
            return None
        mm, r = got
        old_len = r.end - r.start
        new_len = self._new_len(r, (-1, 1, 2))
        return self._with_load(f"mremap 0x{r.start:x} {old_len:#x}->{new_len:#x} in mm{mm.asid}",
                               lambda: self.s.mremap(mm, r.start, old_len, new_len, 1), mm,
                               span=(r.start, r.end))

    def op_fork(self):
        mm = self._mm()
        if mm is None or len(self.procs()) >= self.nprocs + 2:
            return None
        if self.races:
            return self._with_load(f"fork mm{mm.asid}", lambda: self._fork(mm), mm)
        return f"fork mm{mm.asid}", lambda: self._fork(mm)

    def _fork(self, mm):
        """fork may fail with ENOMEM when memory is short (the child is torn down, the parent
        untouched): a legal outcome of the syscall, counted in ``fork_failed``."""
        from .errors import ENOMEM
        try:
            self.s.fork(mm)
        except ENOMEM:
            pass

    def op_exit(self):
        procs = self.procs()
        if len(procs) < 2:
            return None
        mm = self.rng.choice(procs)
        return self._with_load(f"exit mm{mm.asid}", lambda: self.s.exit(mm), mm, gone=True)

    def op_madvise(self):
        got = self._region()
        if got is None:
            return None
        mm, r = got
        addr, length = self._subrange(r)
        # A private page racing its own DONTNEED may read old data or zeroes (either is
        # right, the shadow cannot tell which): workloads stay off mm unless it is shared.
        return self._with_load(f"madvise(DONTNEED) 0x{addr:x}+{length:#x} in mm{mm.asid}",
                               lambda: self.s.madvise_dontneed(mm, addr, length), mm,
                               span=(addr, addr + length), same_mm=r.shared)

    def op_dontneed_race(self):
        """MADV_DONTNEED of a shared file range while CPUs of the same mm use it and a
        writeback thread syncs it (the shape of 1cf35d47712d; the shadow stays exact because
        a shared page's contents survive the zap)."""
        got = self._region(shared_file=True)
        if got is None or not self.races:
            return None
        mm, r = got
        s = self.s

        def go():
            for core in range(s.arch.ncores):
                s.random_workload(core, mm, self.rng.randrange(8, 30), store_ratio=0.7)

            def dontneed():
                for _ in range(3):
                    addr, length = self._subrange(r)
                    s.madvise_dontneed(mm, addr, length)
            s.spawn(s._name("madvise"), dontneed)
            s.spawn(s._name("writeback"), s.msync, mm, r.start, r.end - r.start, False)
        return f"madvise(DONTNEED) racing CPUs and writeback on 0x{r.start:x} in mm{mm.asid}", go

    def op_mprotect_none(self):
        """mprotect(PROT_NONE) of a range and back to its protection, under load."""
        got = self._region()
        if got is None:
            return None
        mm, r = got
        addr, length = self._subrange(r)
        prot = r.prot

        def go():
            self.s.mprotect(mm, addr, length, 0)
            self.s.mprotect(mm, addr, length, prot)
        return self._with_load(f"mprotect 0x{addr:x}+{length:#x} NONE and back to {prot} in "
                               f"mm{mm.asid}", go, mm, span=(addr, addr + length))

    def op_mremap_move(self):
        """mremap of a whole region to a free place above every region (MREMAP_FIXED), the
        same size, grown or shrunk, under load."""
        got = self._region()
        if got is None:
            return None
        mm, r = got
        old_len = r.end - r.start
        new_len = self._new_len(r, (-1, 0, 1))
        top = max(x.end for x in self.regions(mm))
        new_addr = top + PAGE_SIZE * self.rng.randrange(1, 8)
        if new_addr + new_len > 1 << 37:
            return None
        m = _mmap_mod()
        flags = m.MREMAP_MAYMOVE | m.MREMAP_FIXED
        return self._with_load(
            f"mremap 0x{r.start:x} {old_len:#x} -> 0x{new_addr:x} {new_len:#x} in mm{mm.asid}",
            lambda: self.s.mremap(mm, r.start, old_len, new_len, flags, new_addr), mm,
            span=(r.start, r.end))

    def op_dontneed_twice(self):
        """madvise(DONTNEED) of one shared range from two threads at once (two zaps of the
        same PTEs), under load on the same mm (a shared page's contents survive the zap, so
        the shadow stays exact)."""
        cands = [(mm, r) for mm in self.procs() for r in self.regions(mm) if r.shared]
        if not cands or not self.concurrency:
            return None
        mm, r = self.rng.choice(cands)
        addr, length = self._subrange(r)
        s = self.s

        def main():
            s.spawn(s._name("madvise"), s.madvise_dontneed, mm, addr, length)
            s.madvise_dontneed(mm, addr, length)
        return self._with_load(f"madvise(DONTNEED) 0x{addr:x}+{length:#x} from two threads in "
                               f"mm{mm.asid}", main, mm, span=(addr, addr + length))

    def op_first_stores(self):
        """A fresh shared anonymous range (shmem: its read faults map it writable and clean),
        faulted in by loads, then zapped by madvise(DONTNEED) or its pages migrated while
        the cores make their first stores to it.  The operation starts first, so that a
        store lands between its read of a PTE and the atomic clear: the walker sets D by
        compare-and-swap, and that D must reach the page (checker (f) looks for it)."""
        mm = self._mm()
        if mm is None or not self.concurrency or len(self.regions(mm)) > 6:
            return None
        n = self.rng.choice((2, 3, 4))
        how = self.rng.choice(("madvise", "migrate"))
        s = self.s

        def go():
            from .checkers import lookup_pte
            from .pte import _PAGE_V, pte_pfn
            length = n * PAGE_SIZE
            addr = s.mmap(mm, 0, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS)
            pages = [addr + i * PAGE_SIZE for i in range(n)]
            for core in range(s.arch.ncores):       # fault it in by loads: clean PTEs
                s.spawn_workload(core, mm, [("load", p + s.agent_offset(mm, core))
                                            for p in pages])
            s.run()

            def operation():
                if how == "madvise":
                    s.madvise_dontneed(mm, addr, length)
                    return
                for va in pages:
                    _, pte, _ = lookup_pte(s.kernel.mem, mm.pgd, va)
                    if pte & _PAGE_V:
                        s.migrate(s.kernel.pages[pte_pfn(pte)])
            op = _Running()
            s.spawn(s._name(how), op.wrap(operation))
            # One core stores once to each page, in the order the operation goes through
            # them, once the operation has begun (a second store to a page would fault it
            # back in and dirty it again, hiding a D the operation lost); the others load.
            writer = self.rng.randrange(s.arch.ncores)
            for core in range(s.arch.ncores):
                off = s.agent_offset(mm, core)
                if core == writer:
                    s.spawn_workload(core, mm, _during(s.arch, op, [
                        ("store", p + off) for p in pages]))
                else:
                    s.spawn_workload(core, mm, [("load", self.rng.choice(pages) + off)
                                                for _ in range(n)])
        return (f"{'madvise(DONTNEED)' if how == 'madvise' else 'migration'} of a fresh shared "
                f"{n}-page range under first stores in mm{mm.asid}", go)

    def op_migrate_stores(self):
        """Migration of the pages of a fresh private anonymous range while every core keeps
        storing to them (its own words): a store that faults while a page is unmapped for
        migration must wait for the migration entry, never find an empty PTE."""
        mm = self._mm()
        if mm is None or not self.concurrency or len(self.regions(mm)) > 6:
            return None
        n = self.rng.choice((1, 2, 3))
        s = self.s

        def go():
            from .checkers import lookup_pte
            from .pte import _PAGE_V, pte_pfn
            length = n * PAGE_SIZE
            addr = s.mmap(mm, 0, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            pages = [addr + i * PAGE_SIZE for i in range(n)]
            s.spawn_workload(0, mm, [("store", p + s.agent_offset(mm, 0)) for p in pages])
            s.run()

            def migrate():
                for va in pages:
                    _, pte, _ = lookup_pte(s.kernel.mem, mm.pgd, va)
                    if pte & _PAGE_V:
                        s.migrate(s.kernel.pages[pte_pfn(pte)])
            op = _Running()
            s.spawn(s._name("migrate"), op.wrap(migrate))
            for core in range(s.arch.ncores):
                off = s.agent_offset(mm, core)
                s.spawn_workload(core, mm, _during(s.arch, op, [
                    ("store", self.rng.choice(pages) + off) for _ in range(2 * n)]))
        return f"migration of a fresh private {n}-page range under stores in mm{mm.asid}", go

    def op_cow_race(self):
        """fork, then every core makes its first stores to the same copy-on-write pages (its
        own words of each, in the same order) of the parent or the child at once: one core's
        store faults while another core's copy-on-write fault of that page is in its window
        (the old PTE cleared, not yet flushed or replaced)."""
        if not self.concurrency or len(self.procs()) >= self.nprocs + 2:
            return None
        cands = [(mm, r) for mm in self.procs() for r in self.regions(mm)
                 if not r.shared and r.prot & PROT_WRITE]
        if not cands:
            return None
        mm, r = self.rng.choice(cands)
        addr, length = self._subrange(r)
        pages = list(range(addr, addr + min(length, 4 * PAGE_SIZE), PAGE_SIZE))
        s = self.s

        def go():
            from .errors import ENOMEM
            s.spawn_workload(0, mm, [("store", p + s.agent_offset(mm, 0)) for p in pages])
            s.run()                                  # present before the fork: COW after it
            try:
                child = s.fork(mm)
            except ENOMEM:
                return
            target = self.rng.choice((mm, child))
            for core in range(s.arch.ncores):
                off = s.agent_offset(target, core)
                s.spawn_workload(core, target, [("store", p + off) for p in pages])
        return (f"fork mm{mm.asid}, then every core stores to 0x{addr:x}+"
                f"{len(pages) * PAGE_SIZE:#x} at once", go)

    def _under(self, label: str, fn: Callable, mm, *args, within=None) -> None:
        """Spawn ``fn(*args)`` as thread ``label`` while every core loads its own words of
        ``mm``'s present pages (of [start, end) with ``within``) as long as it runs: a core
        spins until ``fn`` has begun and paces its loads to it (:func:`_during`).  Present
        pages only: a fault would wait for an mmap_sem the operation may hold, and a core
        that waits lands nothing."""
        from .checkers import lookup_pte
        from .pte import _PAGE_V
        s = self.s
        op = _Running()
        s.spawn(s._name(label), op.wrap(fn, *args))
        pages = [va for a, b, prot, _ in s._regions(mm, within) if prot & PROT_READ
                 for va in range(a, b, PAGE_SIZE)]
        present = [va for va in pages if lookup_pte(s.kernel.mem, mm.pgd, va)[1] & _PAGE_V]
        if not present:
            return
        for core in range(s.arch.ncores):
            off = s.agent_offset(mm, core)
            loads = [("load", self.rng.choice(present) + off) for _ in range(64)]
            s.spawn_workload(core, mm, _during(s.arch, op, loads))

    def _touch(self, mm, start: int, end: int) -> None:
        """Every core loads its own word of each readable page of [start, end) of mm, now:
        the pages are present and in the cores' TLBs."""
        s = self.s
        pages = [va for a, b, prot, _ in s._regions(mm, (start, end)) if prot & PROT_READ
                 for va in range(a, b, PAGE_SIZE)]
        for core in range(s.arch.ncores):
            off = s.agent_offset(mm, core)
            s.spawn_workload(core, mm, [("load", va + off) for va in pages])
        s.run()

    def op_fork_exit(self):
        """fork under load on the parent, the child run by the cores for a while, then the
        child's exit while the cores load from the parent's pages: the frames the exit zaps
        are still the parent's (copy-on-write), so the parent's accesses land in the exit's
        windows, and the child's TLB entries must be gone before its frames are freed."""
        if not self.concurrency or len(self.procs()) >= self.nprocs + 2:
            return None
        cands = [mm for mm in self.procs() if self.regions(mm)]
        if not cands:
            return None
        mm = self.rng.choice(cands)
        s = self.s

        def go():
            from .errors import ENOMEM
            forked = []

            def fork():
                try:
                    forked.append(s.fork(mm))
                except ENOMEM:
                    pass
            self._under("fork", fork, mm)
            s.run()
            if not forked:
                return
            child = forked[0]
            for core in range(s.arch.ncores):
                s.random_workload(core, child, self.rng.randrange(4, 16))
            s.run()
            self._under("exit", s.exit, mm, child)
        return f"fork mm{mm.asid} under load, run the child, exit it under load", go

    def op_mremap_shrink(self):
        """mremap that shrinks a region (in place, or moving it with MREMAP_FIXED) while the
        cores, whose TLBs hold its pages, keep loading from it: their hits on the tail land in
        the windows of the tail's unmap."""
        cands = [(mm, r) for mm in self.procs() for r in self.regions(mm)
                 if r.end - r.start >= 2 * PAGE_SIZE and r.prot & PROT_READ]
        if not cands or not self.concurrency:
            return None
        mm, r = self.rng.choice(cands)
        old_len = r.end - r.start
        new_len = PAGE_SIZE * self.rng.randrange(1, old_len // PAGE_SIZE)
        m = _mmap_mod()
        move = self.rng.random() < 0.5
        top = max(x.end for x in self.regions(mm))
        new_addr = top + PAGE_SIZE * self.rng.randrange(1, 8) if move else 0
        flags = m.MREMAP_MAYMOVE | m.MREMAP_FIXED if move else m.MREMAP_MAYMOVE
        s = self.s

        def go():
            self._touch(mm, r.start, r.end)
            self._under("mremap", s.mremap, mm, mm, r.start, old_len, new_len, flags, new_addr,
                        within=(r.start, r.end))
        where = f" -> 0x{new_addr:x}" if move else ""
        return (f"mremap 0x{r.start:x} {old_len:#x}{where} {new_len:#x} under loads in "
                f"mm{mm.asid}", go)

    def op_msync(self):
        got = self._region(shared_file=True)
        if got is None:
            return None
        mm, r = got
        label = f"msync 0x{r.start:x}+{r.end - r.start:#x} in mm{mm.asid}"
        if self.races:
            # Under load the backing store may lag a store that lands after page_mkclean.
            return self._with_load(label, lambda: self.s.msync(mm, r.start, r.end - r.start,
                                                               False), mm,
                                   span=(r.start, r.end))
        return label, lambda: self.s.msync(mm, r.start, r.end - r.start)

    def op_reclaim(self):
        n = self.rng.randrange(1, 16)
        return self._with_load(f"reclaim {n}", lambda: self.s.reclaim(n))

    def op_migrate(self):
        pages = self.s.mapped_user_pages()
        if not pages:
            return None
        page = self.rng.choice(pages)
        return self._with_load(f"migrate pfn {page.pfn:#x}", lambda: self.s.migrate(page))

    def op_remap_file_pages(self):
        # Only on shared anonymous (shmem) mappings: the 2008 kernel never made a mapping of
        # a dirty-accounted file nonlinear (sys_remap_file_pages re-mmaps it linearly), and
        # page_mkclean does not search nonlinear vmas.
        cands = [(mm, r) for mm in self.procs() for r in self.regions(mm)
                 if r.shared and r.obj is not None and not isinstance(r.obj, AddressSpace)]
        if not cands:
            return None
        mm, r = self.rng.choice(cands)
        npages = (r.end - r.start) >> PAGE_SHIFT
        n = self.rng.randrange(1, npages + 1)
        start = r.start + self.rng.randrange(npages - n + 1) * PAGE_SIZE
        pgoff = self.rng.randrange(0, r.obj.npages - n + 1)
        label = f"remap_file_pages 0x{start:x} {n} pages -> pgoff {pgoff} in mm{mm.asid}"
        if not self.races:
            return label, lambda: self.s.remap_file_pages(mm, start, n * PAGE_SIZE, pgoff)

        s = self.s
        end = start + n * PAGE_SIZE
        if len(self.procs()) >= self.nprocs + 2:
            return label, lambda: s.remap_file_pages(mm, start, n * PAGE_SIZE, pgoff)

        def go():
            # A fork's child shares the shmem object: its cores load the frames that the
            # parent's remap unmaps (loads in the parent's own range could see either page).
            from .errors import ENOMEM
            try:
                child = s.fork(mm)
            except ENOMEM:
                s.remap_file_pages(mm, start, n * PAGE_SIZE, pgoff)
                return
            self._touch(child, start, end)
            self._under("remap_file_pages", s.remap_file_pages, child, mm, start,
                        n * PAGE_SIZE, pgoff, within=(start, end))
        return label + " under loads by a child", go
