"""The race-seeking random program on the RTL (scenario ``race_fuzz``)."""

from __future__ import annotations

from cosim.system import CosimSystem, Progress

from cosim.scenarios import scenario
from .reclaim import random_program_on_rtl

#: The operations of the race scenario: mm calls that change a range while the cores (and
#: the device) run on it, with reclaim, writeback and migration at the same time.
RACE_OPS = ("mmap_anon", "mmap_file", "access", "munmap", "mprotect", "mprotect_none",
            "mremap", "mremap_move", "mremap_shrink", "dontneed_twice", "dontneed_race",
            "first_stores", "cow_race", "migrate_stores", "fork", "fork_exit", "exit", "msync",
            "reclaim", "migrate")


@scenario("race_fuzz", """race-seeking random programs on the RTL: munmap, mprotect (PROT_NONE
          and back), mremap (move, grow, shrink), madvise(DONTNEED) from two threads and
          against writeback, first stores racing a zap or a migration, copy-on-write from
          every core at once, fork and exit under load, msync, while the cores and the device
          run on the very range that changes, next to reclaim and migration; quiescent checks
          after every step; window coverage in the report""",
          env={"COSIM_NFRAMES": 64}, steps="random steps")
async def race_fuzz_scenario(dut, seed: int, p: dict, progress: Progress,
                             out: dict) -> CosimSystem:
    """:func:`pyrmap.scenario.random_program` on the RTL with the race operations only
    (:data:`RACE_OPS`): every operation runs under load on the mm it changes, so walks,
    A/D compare-and-swaps, TLB hits and device accesses land in its windows in simulated
    time; the report counts them (window coverage, :mod:`pyrmap.windows`)."""
    return await random_program_on_rtl(dut, seed, p, progress, out, ops=RACE_OPS)
