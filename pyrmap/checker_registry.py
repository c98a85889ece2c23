"""The one table of checkers: name, title and what each guarantees.

Every report that shows checker verdicts (the SoftArch demo, ``rmap-cosim run``'s report, the
bug zoo) takes its row titles from :data:`CHECKERS` and formats them with
:func:`verdict_lines`; nothing else spells a checker's title.

A checker of :mod:`pyrmap.checkers` registers itself by declaring ``name``, ``title`` and
``guarantee`` on its class (``Checker.__init_subclass__`` calls :func:`register_checker`);
a checker that lives elsewhere (a cycle-level scoreboard of ``cosim``) calls
:func:`register_checker` once at import.

Example
-------
>>> from pyrmap.checker_registry import CHECKERS, checker_title
>>> import pyrmap.checkers                     # registers (a)..(f)
>>> checker_title("tlb")
'(a) no stale translation'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

__all__ = ["CheckerSpec", "CHECKERS", "register_checker", "checker_title", "verdict_lines"]


@dataclass(frozen=True)
class CheckerSpec:
    """One checker as the reports show it.

    Attributes
    ----------
    name : str
        The short name violations carry (``"[tlb] ..."``) and ``Checkers.verdicts`` returns.
    title : str
        The row title of every verdict table, e.g. ``"(a) no stale translation"``.
    guarantee : str
        What a PASS means, in one or two sentences (shown by ``rmap-cosim list``).
    """
    name: str
    title: str
    guarantee: str


#: name -> :class:`CheckerSpec`, in registration order.
CHECKERS: dict[str, CheckerSpec] = {}


def register_checker(name: str, title: str, guarantee: str) -> CheckerSpec:
    """Add a checker to :data:`CHECKERS`.

    Registering the same name again with the same title and guarantee is a no-op (a module
    reloaded by a test); with different ones it is an error.

    Raises
    ------
    TypeError
        ``name``, ``title`` or ``guarantee`` is not a non-empty string.
    ValueError
        ``name`` is already registered with another title or guarantee.
    """
    for what, value in (("name", name), ("title", title), ("guarantee", guarantee)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"Checker {what} must be a non-empty string, not {value!r}")
    spec = CheckerSpec(name, title, guarantee)
    old = CHECKERS.get(name)
    if old is not None and old != spec:
        raise ValueError(f"Checker {name!r} is already registered as {old.title!r}; a checker "
                         f"name is registered once")
    CHECKERS[name] = spec
    return spec


def checker_title(name: str) -> str:
    """The table title of checker ``name``.

    Raises
    ------
    KeyError
        ``name`` was never registered (a report must not invent a title).
    """
    try:
        return CHECKERS[name].title
    except KeyError:
        raise KeyError(f"Checker {name!r} is not registered; known: "
                       f"{', '.join(CHECKERS) or 'none'}") from None


Row = Union[Sequence, Mapping]


def verdict_lines(rows: Iterable[Row], indent: str = "  ") -> list[str]:
    """The verdict table: one line per checker, ``title  checks  verdict``.

    Parameters
    ----------
    rows : iterable
        ``(name, checks, violations, verdict)`` tuples (``Checkers.verdicts()``) or dicts with
        those keys (a run's JSON report).
    """
    out = []
    for row in rows:
        if isinstance(row, Mapping):
            name, checks, verdict = row["name"], row["checks"], row["verdict"]
        else:
            name, checks, _, verdict = row
        out.append(f"{indent}{checker_title(name):32s} {checks:7d} checks  {verdict}")
    return out
