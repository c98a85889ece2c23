"""Window coverage (pyrmap.windows): what lands inside the windows between a PTE change, its
lock drop and its flush; the race-seeking random programs hit every promised window."""

import pytest

from pyrmap.scenario import PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, System
from pyrmap.windows import LANDINGS, WINDOWS, format_windows, suite_coverage


def test_race_programs_hit_every_promised_window():
    cov = suite_coverage()
    table = format_windows(cov)
    assert cov.missed() == [], f"windows nothing landed in:\n{table}"
    assert cov.missed(None) == [], f"windows that opened and nothing landed in:\n{table}"
    for op, phase in WINDOWS:
        assert cov.opened[(op, phase)] > 0, (op, phase)
    kinds = {k for c in cov.counts.values() for k, n in c.items() if n}
    assert kinds >= {"cpu_access", "walk", "ad_update", "device_access", "mm_op"}, kinds


def test_programs_without_races_miss_windows():
    """Without workloads on the changing mm (the programs as they were) munmap's and
    mprotect's windows see nothing: the check can fail."""
    cov = suite_coverage([(("mmap_anon", "access", "munmap", "mprotect"), range(3), 12)],
                         races=False)
    missed = cov.missed([("munmap", "unflushed"), ("mprotect", "unflushed")])
    assert missed, format_windows(cov)
    assert "MISSED" in format_windows(cov)


def test_a_store_through_a_stale_entry_lands_in_munmaps_unflushed_window():
    """A scripted race: the CPU caches a writable entry, munmap clears the PTE and drops the
    pte lock before its flush (the mmu_gather); a switch inside that window lets the CPU
    store through its TLB entry: one cpu_access in (munmap, unflushed)."""
    for seed in range(40):
        s = System(seed=seed, nframes=64, windows=True)
        s.sched.hot_switch_prob = 1.0
        p = s.new_process()
        a = s.mmap(p, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        s.spawn_workload(0, p, [("store", a, 1)])
        s.run()
        s.spawn("munmap", s.munmap, p, a, 4096)
        s.spawn_workload(0, p, [("store", a, 2)] * 3, switch=False)
        s.run()
        if s.windows.counts[("munmap", "unflushed")]["cpu_access"]:
            assert s.windows.opened[("munmap", "unflushed")] == 1
            return
    pytest.fail("no seed in 0..39 landed a store in munmap's unflushed window")


def test_table_lists_every_landing_kind():
    s = System(seed=1, windows=True)
    assert format_windows(s.windows).split("\n")[0].split()[3:] == list(LANDINGS)
