"""The clear-flush-young comparison (cosim.cfy): the monitor's rules, the comparison, and a
short pair of runs on the RTL where the no-flush mode misses references the flush mode sees."""

import pytest

from cosim import cfy
from cosim.cfy import AgingMonitor, compare, format_table


class _Mm:
    pass


def test_window_must_be_positive():
    with pytest.raises(ValueError, match=r"Refault window must be a positive number of "
                                         r"cycles, not 0"):
        AgingMonitor(window=0)


def test_access_then_old_pass_is_a_missed_reference():
    m, mm = AgingMonitor(), _Mm()
    m.on_access(10, mm, 0x4000_0000, 0x9000, hit=True)
    m.on_aging(9, 20, 25, referenced=0)
    assert m.stats["passes_after_access"] == 1
    assert m.stats["missed_references"] == 1
    assert m.stats["missed_all_tlb_hits"] == 1
    assert m.missed == [(9, 10, 20)]
    # The pass consumed the access: the next pass has nothing to miss.
    m.on_aging(9, 30, 35, referenced=0)
    assert m.stats["missed_references"] == 1 and m.stats["aging_passes"] == 2


def test_young_pass_is_not_a_miss_and_a_walk_is_not_a_hit_signature():
    m, mm = AgingMonitor(), _Mm()
    m.on_access(10, mm, 0x4000_0000, 0x9000, hit=False)
    m.on_aging(9, 20, 25, referenced=1)
    assert m.stats["missed_references"] == 0 and m.stats["passes_after_access"] == 1
    m.on_access(40, mm, 0x4000_0000, 0x9000, hit=False)
    m.on_access(41, mm, 0x4000_0008, 0x9008, hit=True)
    m.on_aging(9, 50, 55, referenced=0)
    assert m.stats["missed_references"] == 1
    assert m.stats["missed_all_tlb_hits"] == 0          # one access walked


def test_accesses_that_cannot_be_seen_are_not_counted():
    m, mm = AgingMonitor(), _Mm()
    # during the pass
    m.on_access(22, mm, 0x4000_0000, 0x9000)
    m.on_aging(9, 20, 25, referenced=0)
    # through a mapping that moved to another frame (COW) before the pass
    m.on_access(30, mm, 0x4000_1000, 0xA000)
    m.on_access(31, mm, 0x4000_1000, 0xB000)
    m.on_aging(0xA, 40, 45, referenced=0)
    # while the page had no PTE
    m.on_access(50, mm, 0x4000_2000, 0xC000)
    m.on_aging(0xC, 60, 61, referenced=0, mapped=False)
    # consumed by try_to_unmap's young test
    m.on_access(70, mm, 0x4000_3000, 0xD000)
    m.on_reference_seen(0xD, 75)
    m.on_aging(0xD, 80, 81, referenced=0)
    # a frame reused by a new page
    m.on_access(90, mm, 0x4000_4000, 0xE000)
    m.on_new_page(0xE)
    m.on_aging(0xE, 95, 96, referenced=0)
    assert m.stats["missed_references"] == 0, m.missed


def test_resolver_drops_mappings_the_page_tables_no_longer_hold():
    m, mm = AgingMonitor(), _Mm()
    m.on_access(10, mm, 0x4000_0000, 0x9000)
    m.resolver = lambda key: None                      # zapped since
    m.on_aging(9, 20, 25, referenced=0)
    assert m.stats["missed_references"] == 0
    m.on_access(30, mm, 0x4000_0000, 0x9000)
    m.resolver = lambda key: 9
    m.on_aging(9, 40, 45, referenced=0)
    assert m.stats["missed_references"] == 1


def test_refault_inside_and_outside_the_window():
    m, mm, other = AgingMonitor(window=100), _Mm(), _Mm()
    m.on_access(10, mm, 0x4000_0000, 0x9000)
    m.on_access(11, other, 0x5000_0000, 0x9000)        # a second mapping of the frame
    m.on_access(12, mm, 0x4000_1000, 0xA000)
    m.on_reclaimed(9, 50)
    m.on_reclaimed(0xA, 50)
    assert m.stats["reclaimed_pages"] == 2 and m.stats["reclaimed_vpages"] == 3
    m.on_fault(120, mm, 0x4000_0008)                   # 70 cycles later: in use
    m.on_fault(121, mm, 0x4000_0010)                   # the same page again: counted once
    m.on_fault(400, other, 0x5000_0000)                # 350 cycles later: outside
    assert m.stats["refaults_in_window"] == 1
    assert m.stats["refaults"] == 2
    m.on_fault(500, mm, 0x4000_2000)                   # never reclaimed
    assert m.stats["refaults"] == 2


def _rep(missed, hits, young_flushes, young_cycles, flushes, invals, refaults=0):
    return {"monitor": {"passes_after_access": 10, "missed_references": missed,
                        "missed_all_tlb_hits": hits, "reclaimed_pages": 5,
                        "refaults_in_window": refaults, "refaults": refaults,
                        "young_calls": 20, "young_flushes": young_flushes,
                        "young_flush_cycles": young_cycles},
            "run": {"flushes": flushes, "flush_cycles": 2 * flushes, "rtl_invals": invals,
                    "accesses": 100, "page_faults": 7, "swapped_out": 3, "swapped_in": 1,
                    "cycles": 5000}}


def test_compare_side_by_side_and_savings():
    c = compare(_rep(0, 0, 12, 30, 40, 80), _rep(4, 4, 0, 0, 28, 56, refaults=1))
    labels = [r[0] for r in c["rows"]]
    assert "references aging missed" in labels
    row = dict((r[0], r[1:]) for r in c["rows"])
    assert row["references aging missed"] == (0, 4)
    assert row["swapped out / swapped in"] == ("3 / 1", "3 / 1")
    s = c["saved"]
    assert (s["young_flushes"], s["young_flush_cycles"], s["flushes"], s["rtl_invals"]) == \
        (12, 30, 12, 24)
    assert s["extra_missed_references"] == 4 and s["extra_refaults_in_window"] == 1
    assert c["missed_only_without_flush"] is True
    text = format_table(c, "title")
    assert "no flush saved 12 flushes" in text and "missed references without the flush: +4" in text


def test_compare_reports_when_the_flush_mode_misses_as_much():
    # A bad outcome (e.g. runs swapped, or a TLB that sets A on hits): the verdict flips.
    c = compare(_rep(3, 0, 12, 30, 40, 80), _rep(3, 3, 0, 0, 28, 56))
    assert c["missed_only_without_flush"] is False


def test_cli_rejects_bad_arguments(capsys):
    assert cfy.main(["--phases", "0"]) == 2
    assert "argument --phases: must be at least 1, not 0" in capsys.readouterr().err
    assert cfy.main(["--sim", "modelsim"]) == 2
    assert "argument --sim: invalid choice: 'modelsim'" in capsys.readouterr().err


def test_rtl_no_flush_misses_references_the_flush_mode_sees():
    """Reclaim on the RTL (Icarus), seed 4, with and without the flush: the 2008 flush leaves
    no reference unseen; without it aging misses references whose accesses all hit a stale
    TLB entry, and ptep_clear_flush_young issues no flush."""
    seed = 4
    res = cfy.run_pair("icarus", seed, phases=2, accesses=30)
    assert res["passed"], (res["flush"].get("error"), res["noflush"].get("error"))
    f, n = res["flush"]["monitor"], res["noflush"]["monitor"]
    assert res["flush"]["flush"] is True and res["noflush"]["flush"] is False
    assert f["passes_after_access"] > 0 and n["passes_after_access"] > 0
    assert f["missed_references"] == 0, (seed, res["flush"]["missed_examples"])
    assert n["missed_references"] > 0, f"seed {seed}: no reference missed without the flush"
    assert n["missed_all_tlb_hits"] == n["missed_references"], (seed, n)
    assert f["young_flushes"] > 0 and n["young_flushes"] == 0
    assert res["compare"]["missed_only_without_flush"]
    assert res["compare"]["saved"]["young_flush_cycles"] > 0


def test_total_sums_runs_for_the_multi_seed_comparison():
    a, b = _rep(0, 0, 12, 30, 40, 80), _rep(1, 0, 10, 20, 30, 60, refaults=2)
    t = cfy.total([a, b])
    assert t["monitor"]["missed_references"] == 1
    assert t["monitor"]["young_flushes"] == 22 and t["run"]["rtl_invals"] == 140
    assert t["monitor"]["refaults_in_window"] == 2
    c = compare(t, cfy.total([_rep(3, 3, 0, 0, 20, 40), _rep(4, 4, 0, 0, 20, 40)]))
    assert c["saved"]["young_flushes"] == 22 and c["saved"]["extra_missed_references"] == 6


@pytest.mark.slow
def test_rtl_pair_is_the_same_on_both_simulators():
    """Same seed, same RTL: the monitor's counts agree between Icarus and Verilator."""
    seed = 4
    a = cfy.run_pair("icarus", seed, phases=2, accesses=30)
    b = cfy.run_pair("verilator", seed, phases=2, accesses=30)
    for mode in ("flush", "noflush"):
        assert a[mode]["monitor"] == b[mode]["monitor"], (seed, mode)
        assert a[mode]["run"]["cycles"] == b[mode]["run"]["cycles"], (seed, mode)
