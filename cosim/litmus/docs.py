"""The generated parts of docs/litmus.md: the operation, kernel operation and bounds tables,
rendered from the registry (:mod:`cosim.litmus.ops`) and the bounds
(:mod:`cosim.litmus.syntax`).  ``python -m cosim.litmus.docs [--write] [DOC]``."""

from __future__ import annotations

from .ops import bounds_doc_table, doc_table, kernel_doc_table

__all__ = ["DOC_BLOCKS", "render_docs", "main"]

#: Markers around the generated tables in docs/litmus.md.
DOC_BLOCKS = {"ops": doc_table, "kernel ops": kernel_doc_table, "bounds": bounds_doc_table}


def render_docs(text: str) -> str:
    """``text`` (docs/litmus.md) with every generated table replaced by the registry's."""
    for name, table in DOC_BLOCKS.items():
        begin, end = f"<!-- begin {name} (cosim.litmus.ops) -->", f"<!-- end {name} -->"
        a, b = text.find(begin), text.find(end)
        if a < 0 or b < a:
            raise ValueError(f"docs have no {begin!r} ... {end!r} block")
        text = text[:a + len(begin)] + "\n" + table() + "\n" + text[b:]
    return text


def main(argv=None) -> int:
    """``python -m cosim.litmus.docs [--write] DOC``: check (or rewrite) the generated tables
    of the litmus documentation; exit 1 when they differ from the registry."""
    import argparse
    from pathlib import Path
    ap = argparse.ArgumentParser(prog="python -m cosim.litmus.docs", description=main.__doc__)
    ap.add_argument("doc", nargs="?", default="docs/litmus.md")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    p = Path(a.doc)
    old = p.read_text()
    new = render_docs(old)
    if a.write:
        p.write_text(new)
        return 0
    if new != old:
        print(f"{p}: the operation tables differ from cosim.litmus.ops; run "
              f"python -m cosim.litmus.docs --write {p}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
