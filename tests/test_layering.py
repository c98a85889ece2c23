"""The layers (DESIGN.md: arrows point down only), checked on every import statement of the
source, those inside functions included: pyrmap imports neither hdl, cosim nor a simulator;
hdl does not import cosim; no cosim runtime module (outside ``cosim/tb``) imports from
``cosim.tb``, whose modules are cocotb test modules (``tb_*.py``) and their helpers."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def graph(package: str) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p.read_text(), module_name(p), p.name == "__init__.py")
            for p in sorted((ROOT / package).rglob("*.py"))}


def top(name: str) -> str:
    return name.split(".")[0]


def violations(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs that break a layer rule."""
    bad = set()
    for mod, names in edges.items():
        for name in names:
            layer = top(mod)
            if layer == "pyrmap" and top(name) in ("hdl", "cosim", "amaranth", "cocotb",
                                                   "cocotb_tools"):
                bad.add((mod, name))
            elif layer == "hdl" and top(name) == "cosim":
                bad.add((mod, name))
            elif (layer == "cosim" and not (mod + ".").startswith("cosim.tb.")
                  and (name + ".").startswith("cosim.tb.")):
                bad.add((mod, ".".join(name.split(".")[:3])))
    return bad


def test_layers_import_downwards_only():
    edges = {**graph("pyrmap"), **graph("hdl"), **graph("cosim")}
    assert len(edges) > 40, sorted(edges)
    assert not violations(edges), sorted(violations(edges))


def test_the_check_sees_each_kind_of_crossing():
    """Lazy and relative imports count; each rule can fail."""
    lazy = imports_of("def f():\n    from ..tb.tb_cosim import CosimSystem\n", "cosim.x.y")
    assert "cosim.tb.tb_cosim" in lazy
    assert violations({"cosim.x.y": lazy}) == {("cosim.x.y", "cosim.tb.tb_cosim")}
    assert violations({"pyrmap.rmap": {"cosim.arch"}}) == {("pyrmap.rmap", "cosim.arch")}
    assert violations({"pyrmap.rmap": {"amaranth.hdl"}})
    assert violations({"hdl.tlb": {"cosim.build"}})
    assert violations({"cosim.devarch": {"cosim.tb.device"}}) == {("cosim.devarch",
                                                                  "cosim.tb.device")}
    assert not violations({"cosim.tb.tb_mmu": {"cosim.tb.tb_cosim"}, "hdl.top": {"pyrmap.pte"},
                           "cosim.arch": {"cosim.memory"}})
    assert imports_of("from . import tb_mmu\n", "cosim.tb", is_package=True) >= {
        "cosim.tb.tb_mmu"}
