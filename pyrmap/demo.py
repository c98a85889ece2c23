"""The demo: reclaim under memory pressure with every invariant checked (pure Python, SoftArch).

Several processes share anonymous pages through fork and file pages through shared mappings
(one also maps the file privately); CPU workloads run on the MMU cores and a device works through the
secondary MMU (its driver kept coherent by mmu notifiers) while a reclaim thread (kswapd), a
writeback thread (msync) and a migration thread run next to them, interleaved by
the seeded scheduler, in a memory too small to hold everything.  At the end it prints what was
aged, unmapped, written back, swapped and migrated (``kernel.stats``), the TLB figures (hits,
misses, walks, A/D sets, flushes) and each checker's verdict.  Deterministic per seed; the exit
status is non-zero when any invariant was violated.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Optional, TextIO

from .checkers import verdict_lines
from .profiles import DEFAULT_PROFILE
from .pte import PAGE_SIZE
from .scenario import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE,
                       System)

__all__ = ["run_demo", "DemoResult"]


class DemoResult:
    """What the demo did: the system (stats, checkers) and the violations found."""

    def __init__(self, system: System, seconds: float, error: Optional[BaseException] = None):
        self.system = system
        self.seconds = seconds
        self.error = error
        self.violations = list(system.checkers.violations)

    @property
    def ok(self) -> bool:
        return not self.violations and self.error is None


def _phase_threads(system: System, rng: random.Random, procs, fmaps, phase: int,
                   accesses: int) -> None:
    """One phase: a workload on each core, kswapd, writeback, migration."""
    ncores = system.arch.ncores
    for core in range(ncores):
        mm = procs[(phase + core) % len(procs)]
        system.random_workload(core, mm, accesses, store_ratio=0.5,
                               rng=random.Random(rng.randrange(1 << 30)))
    system.spawn_device(procs[(phase + 1) % len(procs)], accesses // 3,
                        rng=random.Random(rng.randrange(1 << 30)))
    low, high = 8, 14

    def kswapd():
        from .vmscan import balance
        for _ in range(4):
            balance(system.kernel, low, high)
            system.arch.yield_point("kswapd sleeps")

    def writeback():
        mm, addr, length = fmaps[phase % len(fmaps)]
        for _ in range(2):
            if mm in system.processes:
                system.msync(mm, addr, length, check_backing=False)
            system.arch.yield_point("writeback thread sleeps")

    def migration():
        for _ in range(2):
            pages = system.mapped_user_pages()
            if pages:
                system.migrate(rng.choice(pages))

    def dontneed():
        # MADV_DONTNEED of a few pages of a shared file mapping while the CPUs use them (the
        # contents stay in the page cache; the ptes and TLB entries go).
        mm, addr, length = fmaps[phase % len(fmaps)]
        npages = length // PAGE_SIZE
        for _ in range(3):
            if mm not in system.processes:
                return
            first = rng.randrange(npages)
            count = rng.randrange(1, min(3, npages - first) + 1)
            system.madvise_dontneed(mm, addr + first * PAGE_SIZE, count * PAGE_SIZE)
            system.arch.yield_point("madvise thread sleeps")

    system.spawn(system._name("kswapd"), kswapd)
    system.spawn(system._name("madvise"), dontneed)
    system.spawn(system._name("writeback"), writeback)
    system.spawn(system._name("migration"), migration)


#: The kernel's figures every report prints (this demo, and the RTL co-simulation's report in
#: cosim): (label, key in kernel.stats).
KERNEL_FIGURES = [
    ("aged (ptes A cleared)", "rmap_ptes_aged"),
    ("found young", "rmap_young_found"),
    ("deactivated", "vmscan_deactivated"),
    ("activated", "vmscan_activated"),
    ("unmapped (try_to_unmap)", "vmscan_unmapped"),
    ("ptes unmapped", "rmap_unmapped"),
    ("ptes cleaned (page_mkclean)", "rmap_ptes_cleaned"),
    ("written back", "pages_written"),
    ("swapped out", "pswpout"),
    ("swapped in", "pswpin"),
    ("migrated", "migrate_success"),
    ("pages freed by reclaim", "vmscan_freed"),
    ("page faults", "pgfault"),
    ("Svade A faults (kernel set A)", "fault_svade_a"),
    ("Svade D faults (kernel set D)", "fault_svade_d"),
    ("access faults (bus error, retried)", "access_faults"),
]

_TLB = ["lookups", "hits", "misses", "walks", "a_sets", "d_sets", "cas_retries", "invals",
        "flush_tlb_page", "flush_tlb_range", "flush_tlb_mm", "flush_tlb_all",
        "entries_invalidated"]


def run_demo(seed: int = 1, *, nframes: int = 52, phases: int = 10, accesses: int = 100,
             out: Optional[TextIO] = None, quirks=None, svadu: bool = True,
             kernel: str = DEFAULT_PROFILE) -> DemoResult:
    """Run the demo scenario and print its report to ``out`` (stdout by default)."""
    out = out or sys.stdout
    t0 = time.monotonic()
    command = f"python -m pyrmap demo --seed {seed}"
    if nframes != 52:
        command += f" --frames {nframes}"
    if phases != 10:
        command += f" --phases {phases}"
    if kernel != DEFAULT_PROFILE:
        command += f" --kernel {kernel}"
    for q in quirks or ():
        command += f" --quirk {q}"
    if not svadu:
        command += " --svade"
    system = System(seed=seed, nframes=nframes, ncores=2, swap_slots=128, quirks=quirks,
                    raise_on_violation=False, command=command, svadu=svadu, windows=True,
                    kernel=kernel)
    rng = random.Random(seed)
    k = system.kernel
    print(f"rmap-cosim demo (pure Python, SoftArch golden MMU{'' if svadu else ', Svade'}), "
          f"seed {seed}: {nframes} frames of 4 KiB, {system.arch.ncores} cores, "
          f"swap 128 slots", file=out)
    print(f"  kernel {system.profile.describe()}", file=out)

    # Processes and mappings.
    f = system.create_file("data.bin", 12)
    parent = system.new_process()
    anon = system.mmap(parent, 0, 8 * PAGE_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS)
    fshared = system.mmap(parent, 0, 12 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, file=f)
    # Touch everything once so that fork shares populated anonymous pages.
    system.spawn_workload(0, parent, [("store", anon + i * PAGE_SIZE) for i in range(8)] +
                          [("store", fshared + i * PAGE_SIZE) for i in range(0, 12, 2)])
    system.run()
    children = [system.fork(parent) for _ in range(2)]
    c1, c2 = children
    f1 = system.mmap(c1, 0, 6 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, file=f, pgoff=6)
    f2 = system.mmap(c2, 0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, file=f, pgoff=2)
    procs = [parent, c1, c2]
    fmaps = [(parent, fshared, 12 * PAGE_SIZE), (c1, f1, 6 * PAGE_SIZE)]
    print(f"  3 processes (fork shares 8 anonymous pages), file {f.name!r} of 12 pages mapped "
          f"shared by 2 and privately by 1", file=out)

    error = None
    try:
        for phase in range(phases):
            system.checkers.step(f"phase {phase}")
            _phase_threads(system, rng, procs, fmaps, phase, accesses)
            system.run()
            v = len(system.checkers.violations)
            print(f"  phase {phase + 1}/{phases}: free frames {k.frames.nr_free:3d}, "
                  f"swapped out {k.stats['pswpout']:3d}, written {k.stats['pages_written']:3d}, "
                  f"migrated {k.stats['migrate_success']:3d}, violations {v}", file=out,
                  flush=True)
        # Final writeback (the file must then equal the shadow) and exit.
        system.checkers.step("final msync")
        for mm, addr, length in fmaps:
            system.msync(mm, addr, length)
        # The processes exit while kswapd reclaims their pages (exit_mmap racing
        # try_to_unmap: the release/invalidate ordering of the notifier core).
        system.checkers.step("exit")
        for mm in list(procs):
            system.spawn(system._name("exit"), system.exit, mm)

        def kswapd_at_exit():
            from .vmscan import shrink_inactive_list, shrink_active_list
            for _ in range(3):
                shrink_active_list(k, 16)
                shrink_inactive_list(k, 16)
        system.spawn(system._name("kswapd"), kswapd_at_exit)
        system.run()
    except Exception as exc:      # an engine error: reported, and the run fails
        error = exc
        print(f"  engine error in {system.checkers.ctx.operation}: {type(exc).__name__}: "
              f"{exc}", file=out)
    seconds = time.monotonic() - t0

    print("\nwhat reclaim did (kernel.stats):", file=out)
    for label, key in KERNEL_FIGURES:
        print(f"  {label:30s} {k.stats.get(key, 0):6d}", file=out)
    tlb = system.tlb_stats()
    print("TLB figures (all cores):", file=out)
    print("  " + "  ".join(f"{name}={tlb.get(name, 0)}" for name in _TLB), file=out)
    dev = system.arch.dev_perf()
    if dev:
        print("device TLB (secondary MMU): " + "  ".join(f"{k}={v}" for k, v in dev.items()),
              file=out)
    calls: dict[str, int] = {}
    for sec in system.checkers.secondaries:
        for call in sec.calls:
            calls[call[0]] = calls.get(call[0], 0) + 1
    if calls:
        print("notifier callbacks seen by the device driver: " +
              "  ".join(f"{k}={v}" for k, v in sorted(calls.items())), file=out)
    loads = system.shadow.loads
    stores = system.shadow.stores
    print(f"workloads: {stores} stores, {loads} loads checked against the shadow memory, "
          f"{sum(w.stats['faults'] for w in system.workloads)} CPU page faults, "
          f"{sum(w.stats['faults'] for w in system.device_workloads)} device faults",
          file=out)
    from .windows import format_windows
    print("window coverage (landings between a PTE change, its lock drop and its flush):",
          file=out)
    print("  " + format_windows(system.windows, ()).replace("\n", "\n  "), file=out)
    print("checkers:", file=out)
    for line in verdict_lines(system.checkers.verdicts()):
        print(line, file=out)
    result = DemoResult(system, seconds, error)
    if result.violations:
        print(f"\n{len(result.violations)} violation(s); the first:", file=out)
        print(str(result.violations[0]), file=out)
    print(f"\n{'OK' if result.ok else 'FAILED'} in {seconds:.1f} s "
          f"(reproduce: {command})", file=out)
    return result
