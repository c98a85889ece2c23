"""The litmus test AST: what :mod:`cosim.litmus.parser` produces and the bench executes.

A :class:`LitmusTest` has an initial state (:class:`Init`: virtual pages mapped by PTEs to
named physical pages, memory words, flags, TLB entries to warm), threads (:class:`Thread`,
each a list of :class:`Op`) of three kinds (``cpu`` bound to a core, ``os`` pure software,
``dev`` the device through the DeviceMmu), and conditions (:class:`Condition`) over the final
state, each with a verdict.

Values
------
A PTE value in the source is a :class:`PteExpr`: a literal ``{B vrwad}`` / ``invalid`` / an
integer, or a register holding a PTE read earlier, with bits set (``+d``) or cleared (``-w``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Union

from pyrmap.pte import _PAGE_A, _PAGE_D, _PAGE_G, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X

__all__ = ["PTE_BITS", "Verdict", "PteSpec", "PteExpr", "Op", "Thread", "Warm", "Init",
           "Condition", "LitmusTest", "Expr", "CPU", "OS", "DEV", "THREAD_KINDS"]

#: Flag letters of a PTE literal and the bits they stand for.
PTE_BITS = {"v": _PAGE_V, "r": _PAGE_R, "w": _PAGE_W, "x": _PAGE_X, "u": _PAGE_U,
            "g": _PAGE_G, "a": _PAGE_A, "d": _PAGE_D}

CPU, OS, DEV = "cpu", "os", "dev"
THREAD_KINDS = (CPU, OS, DEV)


class Verdict(str, enum.Enum):
    """What a condition over the final state means for the test.

    * ``FORBIDDEN``: no run may satisfy it.
    * ``ALLOWED``: runs may satisfy it; reported only.
    * ``OBSERVABLE``: allowed, and at least one run of the batch must satisfy it (a negative
      control: it shows the runner can see the race).
    * ``REQUIRED``: every run must satisfy it.
    """
    FORBIDDEN = "forbidden"
    ALLOWED = "allowed"
    OBSERVABLE = "observable"
    REQUIRED = "required"


@dataclass(frozen=True)
class PteSpec:
    """A PTE literal: ``page`` (a physical page name, or None for no frame) and flag bits."""
    page: Optional[str]
    bits: int

    def describe(self) -> str:
        if self.page is None and self.bits == 0:
            return "invalid"
        letters = "".join(k for k, b in PTE_BITS.items() if self.bits & b)
        return "{" + (self.page or "-") + (" " + letters if letters else "") + "}"


@dataclass(frozen=True)
class PteExpr:
    """A PTE value: ``base`` (a :class:`PteSpec`, an ``int`` or a register name) with
    ``set_bits`` then ``clear_bits`` applied."""
    base: Union[PteSpec, int, str]
    set_bits: int = 0
    clear_bits: int = 0


@dataclass
class Op:
    """One operation of a thread.

    ``kind`` is one of :data:`cosim.litmus.parser.OP_KINDS`; ``dst`` names the register the
    operation writes (or None); ``va`` is a virtual page name with byte offset ``off``;
    ``args`` holds the rest (values, PTE expressions, targets).  ``line`` is the source line.
    """
    kind: str
    line: int
    dst: Optional[str] = None
    va: Optional[str] = None
    off: int = 0
    args: dict = field(default_factory=dict)
    text: str = ""


@dataclass
class Thread:
    """A thread: ``kind`` is ``cpu`` (on ``core``), ``os`` or ``dev``."""
    name: str
    kind: str
    core: Optional[int]
    ops: list[Op]
    line: int


@dataclass(frozen=True)
class Warm:
    """Fill a TLB before the threads start: ``target`` is a core index or ``"dev"``."""
    target: Union[int, str]
    va: str
    store: bool
    line: int


@dataclass
class Init:
    """The initial state.

    Attributes
    ----------
    maps : dict of str -> PteSpec
        Virtual page name -> its leaf PTE (all in one address space, ASID 1, Sv39, 4 KiB).
    pages : list of str
        Physical page names in order of first mention (each gets its own frame).
    mem : dict of (str, int) -> int
        (page, byte offset) -> initial 64-bit word (default 0).
    flags : dict of str -> int
        Software flags (words in a private page) and their initial values.
    warm : list of Warm
    """
    maps: dict = field(default_factory=dict)
    pages: list = field(default_factory=list)
    mem: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    warm: list = field(default_factory=list)


# --- condition expressions ----------------------------------------------------------------

@dataclass(frozen=True)
class Expr:
    """A node of a condition: ``op`` is one of ``or and not cmp int bool reg page field mem
    pte fault ok tlb``; ``args`` its operands (sub-expressions or names)."""
    op: str
    args: tuple

    def refs(self) -> list["Expr"]:
        """Final-state reads (``mem``, ``pte``, ``tlb``, ``dirty``) in this expression, in
        order."""
        out = []
        if self.op in ("mem", "pte", "tlb", "dirty"):
            out.append(self)
        for a in self.args:
            if isinstance(a, Expr):
                out.extend(a.refs())
        return out

    def key(self) -> str:
        """The source-like spelling of a final-state read (for histograms)."""
        if self.op == "mem":
            page, off = self.args
            return f"mem[{page}{'+' + str(off) if off else ''}]"
        if self.op == "pte":
            return f"pte({self.args[0]})"
        if self.op == "tlb":
            return f"tlb({self.args[0]},{self.args[1]})"
        if self.op == "dirty":
            return f"dirty({self.args[0]})"
        return self.op


@dataclass
class Condition:
    verdict: Verdict
    expr: Expr
    text: str
    line: int


@dataclass
class LitmusTest:
    """A parsed litmus file.

    Attributes
    ----------
    name : str
    path : str
    config : dict
        ``Top`` parameters the test needs (``ncores`` is raised to fit the cpu threads).
    options : dict
        Runner options from the file (``runs``, ``jitter``, ``start``, ``latency``).
    init : Init
    threads : list of Thread
    conditions : list of Condition
    registers : dict of str -> str
        Register name -> ``"data"``, ``"pte"``, ``"status"`` or ``"young"``: what it holds.
    doc : str
    """
    name: str
    path: str
    config: dict
    options: dict
    init: Init
    threads: list
    conditions: list
    registers: dict
    doc: str = ""

    @property
    def ncores(self) -> int:
        cores = [t.core for t in self.threads if t.kind == CPU]
        cores += [w.target for w in self.init.warm if isinstance(w.target, int)]
        for t in self.threads:
            for op in t.ops:
                cores += [c for c in op.args.get("cores", ()) if isinstance(c, int)]
        return max(cores, default=0) + 1
