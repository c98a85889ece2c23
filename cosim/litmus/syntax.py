"""The lexical layer of the litmus format: tokens, a cursor over one line, the error type
and the bounds every input is checked against.

Every problem in a litmus file is a :class:`LitmusSyntaxError` naming the file and the line
(``path:line: expected ..., found ...``), raised before anything is simulated.  The bounds
below keep a file from asking for more than a run can give: each has its reason beside it.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["LitmusSyntaxError", "Cursor", "flag_bits", "flags_run", "WORD_MIN", "WORD_MAX",
           "MAX_NESTING", "MAX_REPEAT", "MAX_OPS", "MAX_THREADS", "MAX_FILE_BYTES",
           "MAX_DELAY", "PAGE_BYTES"]

#: Integer values are 64-bit words: a literal outside [-2**63, 2**64) would be truncated.
WORD_MIN, WORD_MAX = -(1 << 63), (1 << 64) - 1
#: Parentheses and ``!`` nest at most this deep (the condition parser recurses per level).
MAX_NESTING = 64
#: ``repeat N:`` copies its operation N times when the file is read: N is bounded so that a
#: file cannot ask for more operations than a run can execute in its cycle budget.
MAX_REPEAT = 1000
#: Operations per thread, after ``repeat`` (each takes at least one cycle of a run).
MAX_OPS = 4000
#: Threads per test (each cpu thread owns one of at most 16 cores; the others are host
#: coroutines of one simulator process).
MAX_THREADS = 32
#: Litmus files are small programs: a larger file is not one.
MAX_FILE_BYTES = 1 << 20
#: ``delay N``: at most the largest cycle budget a run may have (``option max_cycles``).
MAX_DELAY = 10_000_000
PAGE_BYTES = 4096

#: The bounds as the documentation lists them: (what, value, why).
BOUNDS = (
    ("integer values", "-2^63 .. 2^64-1", "every value is a 64-bit word; a larger literal "
     "would be truncated"),
    ("nested `(` and `!` in a condition", MAX_NESTING, "the condition parser recurses per "
     "level"),
    ("`repeat N:`", f"1 .. {MAX_REPEAT}, not nested", "the copies are made when the file is "
     "read"),
    ("operations per thread (after `repeat`)", MAX_OPS, "each takes at least one cycle of "
     "a run's budget"),
    ("threads per test", MAX_THREADS, "cpu threads own one core each; the others are "
     "coroutines of one simulator process"),
    ("`delay N`", f"0 .. {MAX_DELAY}", "the largest `option max_cycles`"),
    ("file size", f"{MAX_FILE_BYTES} bytes", "litmus files are small programs"),
)

_TOKEN = re.compile(r"\s*(?:(\d[0-9A-Za-z_]*)|([A-Za-z_][A-Za-z0-9_]*)|"
                    r"(:=|==|!=|<=|>=|&&|\|\||->|[{}()\[\],+\-~=!<>.:$*]))")
_INT = re.compile(r"0[xX](?:_?[0-9a-fA-F])+|0|[1-9](?:_?[0-9])*")


class LitmusSyntaxError(ValueError):
    """A litmus file that does not parse; ``str()`` is ``path:line: message``."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}")


def _tokens(text: str, err) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        mo = _TOKEN.match(text, pos)
        if mo is None or mo.end() == pos:
            rest = text[pos:].strip()
            if not rest:
                break
            err(f"unexpected character {rest[0]!r}")
        if mo.group(1):
            out.append(("int", mo.group(1)))
        elif mo.group(2):
            out.append(("name", mo.group(2)))
        else:
            out.append(("punct", mo.group(3)))
        pos = mo.end()
    return out


def parse_int(text: str, what: str, err, lo: int = WORD_MIN, hi: int = WORD_MAX,
              neg: bool = False) -> int:
    """The value of integer literal ``text`` (``-`` before it when ``neg``), in [lo, hi]."""
    if not _INT.fullmatch(text):
        err(f"expected {what} (a decimal integer without leading zeros, or 0x followed by "
            f"hex digits), found {text!r}")
    v = int(text.replace("_", ""), 0)
    v = -v if neg else v
    if not lo <= v <= hi:
        shown = text if len(text) <= 24 else text[:20] + f"... ({len(text)} digits)"
        why = " (a 64-bit word)" if (lo, hi) == (WORD_MIN, WORD_MAX) else ""
        err(f"expected {what} from {lo} to {hi}{why}, found {'-' if neg else ''}{shown}")
    return v


class Cursor:
    """Tokens of one line with expect/accept helpers that raise LitmusSyntaxError."""

    def __init__(self, text: str, path: str, line: int):
        self.path, self.line = path, line
        self.toks = _tokens(text, self.error)
        self.i = 0

    def error(self, message: str):
        raise LitmusSyntaxError(self.path, self.line, message)

    def peek(self, k: int = 0) -> Optional[tuple[str, str]]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def found(self) -> str:
        t = self.peek()
        return "the end of the line" if t is None else repr(t[1])

    def at(self, value: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t is not None and t[1] == value

    def at_name(self, k: int = 0) -> bool:
        t = self.peek(k)
        return t is not None and t[0] == "name"

    def accept(self, value: str) -> bool:
        if self.at(value):
            self.i += 1
            return True
        return False

    def expect(self, value: str, what: str = "") -> None:
        if not self.accept(value):
            self.error(f"expected {value!r}{' ' + what if what else ''}, found {self.found()}")

    def name(self, what: str) -> str:
        t = self.peek()
        if t is None or t[0] != "name":
            self.error(f"expected {what}, found {self.found()}")
        self.i += 1
        return t[1]

    def integer(self, what: str, lo: int = WORD_MIN, hi: int = WORD_MAX) -> int:
        neg = self.accept("-")
        t = self.peek()
        if t is None or t[0] != "int":
            self.error(f"expected {what}, found {self.found()}")
        self.i += 1
        return parse_int(t[1], what, self.error, lo, hi, neg)

    def offset(self) -> int:
        """``+OFF`` after a page: an 8-byte aligned byte offset inside the page."""
        if not self.accept("+"):
            return 0
        off = self.integer("a byte offset", 0, PAGE_BYTES - 8)
        if off % 8:
            self.error(f"expected an 8-byte aligned offset in the page, found {off}")
        return off

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def end(self, what: str = "") -> None:
        if not self.done():
            self.error(f"expected the end of the line{' after ' + what if what else ''}, "
                       f"found {self.found()}")


def flag_bits(cur: Cursor, word: str) -> int:
    """The PTE bits of flag letters ``word`` (``vrwad``)."""
    from .model import PTE_BITS
    bits = 0
    for ch in word:
        if ch not in PTE_BITS:
            cur.error(f"expected PTE flag letters from 'vrwxugad', found {word!r}")
        bits |= PTE_BITS[ch]
    return bits


def flags_run(cur: Cursor, what: str) -> int:
    """One or more flag-letter words (``vrw ad``) up to a non-name token."""
    bits = 0
    first = True
    while cur.at_name():
        bits |= flag_bits(cur, cur.name(what))
        first = False
    if first:
        cur.error(f"expected {what}, found {cur.found()}")
    return bits
