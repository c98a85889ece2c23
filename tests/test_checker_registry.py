"""The one table of checkers (pyrmap.checker_registry): every checker of the bundle is in it,
every report table takes its titles from it, and a second, different registration of a name
is refused."""

import pytest

from pyrmap.checker_registry import CHECKERS, checker_title, register_checker, verdict_lines
from pyrmap.checkers import Checker, Checkers


def test_every_checker_of_the_bundle_is_registered_with_a_title_and_guarantee():
    from pyrmap.kernel import Kernel
    from pyrmap.softarch import SoftArch
    from pyrmap.physmem import PhysMem
    chk = Checkers(Kernel(SoftArch(PhysMem(16), 2)))
    names = [c.name for c in chk.all]
    assert sorted(names) == sorted(n for n in names if n in CHECKERS), names
    for name in names:
        spec = CHECKERS[name]
        assert spec.title.startswith("(") and spec.guarantee, spec
    titles = [checker_title(n) for n in names]
    assert len(set(titles)) == len(titles), titles


def test_a_subclass_registers_itself_and_a_clash_is_refused():
    class Probe(Checker):
        name = "probe_registry_test"
        title = "(z) probe"
        guarantee = "nothing"
    try:
        assert checker_title("probe_registry_test") == "(z) probe"
        # The same registration again is a no-op (a reloaded module) ...
        register_checker("probe_registry_test", "(z) probe", "nothing")
        # ... another title for the same name is refused.
        with pytest.raises(ValueError, match=r"Checker 'probe_registry_test' is already "
                                             r"registered as '\(z\) probe'"):
            register_checker("probe_registry_test", "(y) other", "nothing")
    finally:
        CHECKERS.pop("probe_registry_test", None)
    with pytest.raises(TypeError, match="Checker title must be a non-empty string, not ''"):
        register_checker("untitled", "", "x")


def test_verdict_lines_from_tuples_and_report_dicts_agree_and_unknown_names_fail():
    rows = [("tlb", 12, 0, "PASS"), ("shadow", 3, 1, "FAIL")]
    dicts = [{"name": n, "checks": c, "violations": v, "verdict": d} for n, c, v, d in rows]
    lines = verdict_lines(rows)
    assert lines == verdict_lines(dicts)
    assert lines[0].split() == ["(a)", "no", "stale", "translation", "12", "checks", "PASS"]
    assert "(c) no lost write" in lines[1] and lines[1].endswith("FAIL")
    with pytest.raises(KeyError, match="Checker 'nosuch' is not registered"):
        verdict_lines([("nosuch", 1, 0, "PASS")])


def test_the_rtl_report_uses_the_registry_titles():
    from cosim.cli import format_report
    text = format_report({"checkers": [{"name": n, "checks": 1, "violations": 0,
                                        "verdict": "PASS"} for n in CHECKERS]})
    for spec in CHECKERS.values():
        assert spec.title in text, spec
