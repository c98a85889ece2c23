"""Area and logic depth from Debian's Yosys, per configuration (cached)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosim.explore.area import area, parse_ltp
from hdl.config import MmuConfig

ROOT = Path(__file__).resolve().parent.parent


def small(entries):
    return MmuConfig(ncores=1, tlb_entries=entries, tlb_ways=entries, superpage_entries=1,
                     dev_entries=1, asid_bits=0)


def test_area_and_depth_of_small_configs(yosys, tmp_path):
    a2 = area(small(2), out_dir=tmp_path)
    assert a2["cells"] == sum(a2["cells_by_type"].values())
    assert a2["flip_flops"] == a2["cells_by_type"]["$_DFF_P_"] > 100
    assert a2["transistors"] > a2["cells"] and a2["ltp"] > 5
    assert "Yosys" in a2["yosys"] and a2["config_hash"] == small(2).config_hash
    a4 = area(small(4), out_dir=tmp_path)
    assert a4["flip_flops"] > a2["flip_flops"] and a4["cells"] > a2["cells"]
    again = area(small(2), out_dir=tmp_path)           # from sim_build/<hash>/area.json
    assert again == a2 and (tmp_path / small(2).config_hash / "area.json").exists()


def test_ltp_text_and_missing_yosys():
    assert parse_ltp("Longest topological path in top (length=49):\n  0: x") == 49
    with pytest.raises(ValueError, match="no 'Longest topological path'"):
        parse_ltp("nothing here")
    code = ("from cosim.explore.area import area; from hdl.config import MmuConfig\n"
            "area(MmuConfig())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PATH="/nonexistent"))
    assert proc.returncode == 1
    assert "yosys is not installed" in proc.stderr and "make yosys" in proc.stderr
