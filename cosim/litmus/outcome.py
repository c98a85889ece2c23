"""Final state of one run -> condition values and the outcome key of the histogram.

Pure Python (no simulator): :class:`FinalState` holds what the bench read at the end of a run;
:func:`evaluate` computes a condition; :func:`outcome_key` spells the observed outcome
(registers, then every final-state read the conditions mention) for the histogram.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pyrmap.pte import pte_pfn

from .model import PTE_BITS, Expr, LitmusTest

__all__ = ["Fault", "FinalState", "evaluate", "outcome_key", "describe_pte", "UNSET"]


@dataclass(frozen=True)
class Fault:
    """A register's value when its access faulted (``kind``: ``page``, ``access``, ``miss``)."""
    kind: str

    def __str__(self) -> str:
        return f"fault:{self.kind}"


class _Unset:
    def __repr__(self) -> str:
        return "unset"

    __str__ = __repr__


#: A register no operation wrote (its thread did not get that far).
UNSET = _Unset()


@dataclass
class FinalState:
    """What one run ended with.

    Attributes
    ----------
    regs : dict of str -> int | Fault
    mem : dict of (str, int) -> int
        (page or flag name, byte offset) -> word, for every ``mem[...]`` the conditions read.
    ptes : dict of str -> int
        Virtual page -> final leaf PTE.
    tlb : dict of (int | str, str) -> bool
        (core or ``"dev"``, virtual page) -> an entry maps it.
    pfns : dict of str -> int
        Physical page name -> frame number (page names evaluate to it).
    dirty : dict of str -> bool
        Physical page name -> the kernel's PageDirty for it (False without a kernel).
    """
    regs: dict = field(default_factory=dict)
    mem: dict = field(default_factory=dict)
    ptes: dict = field(default_factory=dict)
    tlb: dict = field(default_factory=dict)
    pfns: dict = field(default_factory=dict)
    dirty: dict = field(default_factory=dict)


def _field(value, name: str):
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if name == "value":
        return value
    if name == "ppn":
        return pte_pfn(value)
    return int(bool(value & PTE_BITS[name]))


def _cmp(op: str, a, b) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, bool)
               for v in (a, b))
    if not ints:            # a fault, an unset register or a missing field
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        return False
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def evaluate(e: Expr, st: FinalState):
    """The value of condition ``e`` in final state ``st`` (booleans for whole conditions).

    A register that faulted or was never written compares unequal to every integer; ``fault(r)``
    is true only for a fault, ``ok(r)`` only for a written, non-faulting register."""
    op, a = e.op, e.args
    if op == "or":
        return any(bool(evaluate(x, st)) for x in a)
    if op == "and":
        return all(bool(evaluate(x, st)) for x in a)
    if op == "not":
        return not bool(evaluate(a[0], st))
    if op == "cmp":
        return _cmp(a[0], evaluate(a[1], st), evaluate(a[2], st))
    if op == "int":
        return a[0]
    if op == "bool":
        return a[0]
    if op == "reg":
        if a[0] in st.regs:
            return st.regs[a[0]]
        if a[0] in st.pfns:
            return st.pfns[a[0]]
        return UNSET
    if op == "field":
        return _field(evaluate(a[0], st), a[1])
    if op == "mem":
        return st.mem.get((a[0], a[1]))
    if op == "pte":
        return st.ptes.get(a[0])
    if op == "fault":
        return isinstance(st.regs.get(a[0], UNSET), Fault)
    if op == "ok":
        v = st.regs.get(a[0], UNSET)
        return not isinstance(v, (Fault, _Unset))
    if op == "tlb":
        return int(bool(st.tlb.get((a[0], a[1]))))
    if op == "dirty":
        return int(bool(st.dirty.get(a[0])))
    raise ValueError(f"Unknown condition node {op!r}")


def describe_pte(value: int, pfns: dict) -> str:
    """A PTE word in the source's notation: ``{B vrwad}``, ``invalid``, or hex."""
    if not isinstance(value, int):
        return str(value)
    if value == 0:
        return "invalid"
    names = {v: k for k, v in pfns.items()}
    pfn = pte_pfn(value)
    low = value & 0x3FF
    letters = "".join(k for k, b in PTE_BITS.items() if value & b)
    rest = value & ~(0x3FF | (((1 << 44) - 1) << 10))
    if rest or low & ~0xFF:
        return f"0x{value:x}"
    return "{" + names.get(pfn, f"frame{pfn}") + (" " + letters if letters else "") + "}"


def outcome_key(test: LitmusTest, st: FinalState) -> str:
    """The outcome as one line: registers in order, then every final-state read of the
    conditions (``mem[A]=1 pte(x)={B vrwad}``)."""
    parts = []
    for reg, kind in test.registers.items():
        v = st.regs.get(reg, UNSET)
        if kind == "pte" and isinstance(v, int):
            parts.append(f"{reg}={describe_pte(v, st.pfns)}")
        else:
            parts.append(f"{reg}={v}")
    seen = set()
    for c in test.conditions:
        for ref in c.expr.refs():
            k = ref.key()
            if k in seen:
                continue
            seen.add(k)
            if ref.op == "pte":
                parts.append(f"{k}={describe_pte(st.ptes.get(ref.args[0]), st.pfns)}")
            else:
                parts.append(f"{k}={evaluate(ref, st)}")
    return " ".join(parts)
