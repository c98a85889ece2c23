"""pyrmap imports without Amaranth or cocotb (DESIGN.md: arrows point down only)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pyrmap

BLOCKER = r"""
import sys, importlib, importlib.abc, pkgutil
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('amaranth', 'cocotb', 'cocotb_tools', 'hdl', 'cosim'):
            raise ImportError(f'pyrmap must not import {name}')
        return None
sys.meta_path.insert(0, Block())
import pyrmap
for mod in pkgutil.iter_modules(pyrmap.__path__):
    if mod.name != '__main__':
        importlib.import_module('pyrmap.' + mod.name)
print('imported', len(list(pkgutil.iter_modules(pyrmap.__path__))))
"""


def test_pyrmap_imports_without_simulators():
    root = Path(pyrmap.__file__).parent.parent
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=root, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "imported" in out.stdout


def test_blocker_sees_a_forbidden_import():
    """The check above can fail: importing amaranth under the blocker raises."""
    code = BLOCKER.replace("import pyrmap\n", "import pyrmap\nimport amaranth\n", 1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "must not import amaranth" in out.stderr


def test_every_module_listed():
    names = {m.name for m in pkgutil.iter_modules(pyrmap.__path__)}
    assert {"pte", "arch", "mm_types", "kernel", "physmem", "pagetable"} <= names
