"""Property-based fuzzing of the configuration and of the command line that builds one.

Every input is either accepted or answered with a ``TypeError``/``ValueError`` of one line that
names what is wrong; never another exception, never a hang.  Plus the wall-clock limits: the
per-test timeout is on, and a simulation that runs past its limit is stopped with the seed,
the phase and the reproduce command.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdl.config import MmuConfig

FIELDS = [f.name for f in dataclasses.fields(MmuConfig)]
VALUES = st.one_of(st.integers(-2, 300), st.integers(-2**70, 2**70), st.booleans(), st.none(),
                   st.sampled_from(["plru", "random", "fifo", "lru", "round_robin", "fixed",
                                    "", "8", "true"]),
                   st.floats(allow_nan=True), st.text(max_size=5))
NAMES = st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=8))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clear(exc: Exception, params: dict) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg, repr(msg)
    # It names a parameter, or the TLB / device TLB whose shape is wrong.
    assert any(name in msg or repr(name) in msg for name in params) or "TLB" in msg \
        or "PLRU" in msg, msg


@FUZZ
@given(st.dictionaries(NAMES, VALUES, max_size=6))
def test_any_parameters_are_accepted_or_named(params):
    try:
        config = MmuConfig.from_params(**params)
    except (TypeError, ValueError) as exc:
        _clear(exc, params)
        return
    # Accepted: the stated bounds hold and the hash is stable.
    assert 1 <= config.ncores <= 16 and 1 <= config.tlb_ways <= 64
    assert config.tlb_entries <= 256 and config.tlb_entries % config.tlb_ways == 0
    assert MmuConfig.from_params(**params).config_hash == config.config_hash


@FUZZ
@given(st.lists(st.tuples(NAMES, st.text(max_size=6)), max_size=5),
       st.sampled_from([",", ", ", ",,"]))
def test_any_config_text_is_parsed_or_named(items, sep):
    text = sep.join(f"{k}={v}" for k, v in items)
    try:
        params = MmuConfig.parse_params(text)
        MmuConfig.from_params(**params)
    except (TypeError, ValueError) as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        MmuConfig.from_params(ways=4)
    assert str(info.value) == ("Unknown parameter 'ways'; known: " + ", ".join(FIELDS))


def test_ways_follow_entries_unless_given():
    """`run --tlb-entries`, litmus `--config tlb_entries=` and hdl.export: one rule."""
    assert MmuConfig.from_params(tlb_entries=16).tlb_ways == 16
    assert MmuConfig.from_params(tlb_entries=16, tlb_ways=4).tlb_ways == 4
    assert MmuConfig.parse_params("tlb_entries=0x10, svadu=no") == {"tlb_entries": 16,
                                                                  "svadu": False}
    from cosim.build import make_config, nondefault_params
    assert make_config(tlb_entries=32).tlb_ways == 32
    # A reproduce command keeps explicit ways that equal the default (8) next to new entries.
    assert nondefault_params({"tlb_entries": 32, "tlb_ways": 8}) == {"tlb_entries": 32,
                                                                     "tlb_ways": 8}


FLAGS = {
    "--sim": st.sampled_from(["verilator", "icarus", "vcs", ""]),
    "--seed": st.one_of(st.integers(-3, 2**65).map(str), st.text(max_size=4)),
    "--cores": st.integers(-1, 40).map(str),
    "--tlb-entries": st.sampled_from(["1", "2", "4", "8", "12", "64", "128", "4096", "x"]),
    "--tlb-ways": st.sampled_from(["1", "2", "3", "8", "64", "0"]),
    "--phases": st.integers(-1, 20_000).map(str),
    "--accesses": st.integers(-1, 2_000_000).map(str),
    "--nframes": st.integers(-1, 70_000).map(str),
    "--steps": st.integers(-1, 200_000).map(str),
    "--quirk": st.sampled_from(["nope", "fill_after_inval", "quirk_plain_ad_write",
                                "nonatomic_ptep_get_and_clear", "no_seq_retry"]),
    "--timeout": st.integers(-1, 10**7).map(str),
    "--json": st.sampled_from(["/proc/x.json", "/tmp", "/nonexistent/x.json", "out.json"]),
}


@FUZZ
@given(st.sampled_from(["run", "demo"]),
       st.sampled_from(["reclaim", "fuzz", "dirty_race", "svade", "nosuch"]),
       st.dictionaries(st.sampled_from(sorted(FLAGS)), st.none(), max_size=6).flatmap(
           lambda keys: st.fixed_dictionaries({k: FLAGS[k] for k in keys})))
def test_cosim_cli_arguments_are_accepted_or_a_usage_error(command, scenario, flags):
    """`python -m cosim run/demo` parsing: a RunArgs, or UsageError (exit 2), nothing else."""
    from cosim.cli import RunArgs, UsageError, parse_args
    argv = [command] + ([scenario] if command == "run" else [])
    for flag, value in flags.items():
        argv += [flag, value]
    try:
        a = parse_args(argv)
    except UsageError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return
    assert isinstance(a, RunArgs) and a.timeout >= 1
    assert a.params["ncores"] <= 16 and a.params["tlb_entries"] <= 256


def test_pytest_has_a_per_test_timeout(request):
    assert request.config.pluginmanager.hasplugin("timeout")
    assert float(request.config.getini("timeout")) > 0


@pytest.mark.sim
def test_a_simulation_past_its_wall_clock_limit_is_stopped_and_named(tmp_path):
    """A reclaim run of 200 phases with a 5 s limit: the simulator is killed, and the result
    names the limit, the seed, the phase it was in and the reproduce command."""
    from cosim import build as cb
    from cosim.scenarios import TB_MODULE
    r = cb.run(cb.make_config(), "icarus", TB_MODULE, seed=7,
               testcase="test_scenario", test_dir=tmp_path / "run", timeout=5,
               env={"COSIM_SCENARIO": "reclaim", "COSIM_PHASES": 200})
    assert r.timed_out == 5 and not r.passed, r.failures
    msg = r.failures[0]
    assert msg.startswith("timed out after 5 s of wall-clock time (seed 7, last progress: "), msg
    assert (f"reproduce: .venv/bin/python -m cosim.build --sim icarus --module {TB_MODULE}"
            " --testcase test_scenario --seed 7") in msg, msg
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds"):
        cb.run(cb.make_config(), "icarus", TB_MODULE, seed=7, timeout=0)


@pytest.mark.sim
def test_build_announces_its_steps_and_times_them():
    """A first run is not silent: export and compile are announced as they start and timed."""
    from cosim import build as cb
    lines = []
    config = cb.make_config(ncores=1, tlb_entries=2, dev_entries=2, asid_bits=3)
    b = cb.build(config, "icarus", force=True, progress=lines.append)
    assert b.seconds > 0
    assert [line.split(":")[0] for line in lines] == ["export", "export", "compile", "compile"]
    assert lines[0].startswith(f"export: elaborating Top({config.config_hash}) to Verilog")
    assert lines[2].startswith(f"compile: icarus build of {config.config_hash} (a few seconds "
                               f"the first time; later runs reuse it)")
    assert lines[1].endswith(" s") and lines[3].endswith(" s"), lines


def _readme_quirks() -> dict:
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = text.split("## Quirks (the bug zoo)", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[2]
    return rows


def test_readme_list_and_run_agree_on_quirks():
    """A quirk the README says `cosim run --quirk` takes is accepted and listed by `list`;
    any other quirk is rejected by run and absent from `list`."""
    import io

    from cosim.cli import UsageError, list_all, parse_args
    rows = _readme_quirks()
    assert len(rows) >= 9, rows
    listed = io.StringIO()
    list_all(listed)
    quirk_lines = "\n".join(line for line in listed.getvalue().splitlines()
                            if line.startswith(("kernel quirks", "hardware quirks")))
    from cosim.cli import _hdl_quirks, _kernel_quirks
    missing = set(_hdl_quirks() + _kernel_quirks()) - set(rows)
    assert not missing, f"quirks `run --quirk` takes that the README does not list: {missing}"
    for name, where in rows.items():
        if "`cosim run --quirk`" in where:
            assert parse_args(["run", "reclaim", "--quirk", name]).quirks == [name]
            assert name in quirk_lines, (name, quirk_lines)
        else:
            with pytest.raises(UsageError, match=f"unknown quirk '{name}'"):
                parse_args(["run", "reclaim", "--quirk", name])
            assert name not in quirk_lines, (name, quirk_lines)


def test_run_and_demo_share_the_default_simulator():
    from cosim.cli import parse_args
    assert parse_args(["run", "reclaim"]).sim == parse_args(["demo"]).sim == "verilator"
