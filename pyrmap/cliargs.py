"""Argument checking shared by every command line of the project (pyrmap, hdl, cosim).

Every entry point checks all of its inputs before any simulation starts, and answers a bad one
with **one line** on stderr and exit status 2, naming the flag and what it accepts::

    python -m pyrmap: error: argument --steps: must be at least 1, not -5

:class:`ArgumentParser` gives that behaviour to argparse; :func:`int_arg`, :func:`choice_list`
and :func:`writable_file` / :func:`writable_dir` are the checks.  This module lives in pyrmap,
the lowest layer, so that hdl and cosim can share it without importing upwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, NoReturn, Optional

__all__ = ["ArgumentParser", "UsageError", "int_arg", "choice_list", "parsed_by", "writable_file",
           "writable_dir", "check_writable_file", "check_writable_dir"]


class UsageError(ValueError):
    """A bad command-line argument (exit status 2, one line)."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line and exit status 2.

    argparse prints the whole usage before its message; here the message comes alone, followed
    by where to find the usage.  Subparsers inherit the behaviour.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        if message:
            sys.stderr.write(message if message.endswith("\n") else message + "\n")
        sys.exit(status)


def int_arg(minimum: Optional[int] = None, maximum: Optional[int] = None,
            reason: str = "") -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in ``[minimum, maximum]``.

    Accepts decimal and ``0x``/``0o``/``0b`` literals.  ``reason`` says why ``maximum`` is the
    limit; it is part of the error message.
    """
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            why = f" ({reason})" if reason else ""
            raise argparse.ArgumentTypeError(f"must be at most {maximum}{why}, not {value}")
        return value
    parse.__name__ = "integer"
    return parse


def choice_list(choices: Iterable[str]) -> Callable[[str], list]:
    """An argparse ``type=`` for a comma-separated list of names out of ``choices``."""
    known = list(choices)

    def parse(text: str) -> list:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"must name at least one of {', '.join(known)}")
        for n in names:
            if n not in known:
                raise argparse.ArgumentTypeError(f"unknown name {n!r}; known: "
                                                 f"{', '.join(known)}")
        return names
    parse.__name__ = "list"
    return parse


def parsed_by(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse ``type=`` from a parser that raises ``ValueError`` with a one-line
    message (``FaultPlan.parse``, ``MmuConfig.parse_params``)."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _probe_dir(d: Path, what: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=d, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {what}: {exc.strerror or exc}") from None


def check_writable_file(path: str) -> Path:
    """Raise :class:`UsageError` unless ``path`` can be written as a file (checked without
    changing an existing file: a probe file is created in its directory and removed).
    """
    p = Path(path)
    if str(path) == "" or p.is_dir():
        raise UsageError(f"cannot write {path!r}: it is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")
    _probe_dir(parent, str(path))
    return p


def check_writable_dir(path: str) -> Path:
    """Raise :class:`UsageError` unless ``path`` is, or can be created as, a writable directory
    (nothing is created: the nearest existing ancestor is probed)."""
    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot write into {path}: {probe} is not a directory")
    _probe_dir(probe, f"into {path}")
    return p


def _as_type(check: Callable[[str], Path]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            check(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    parse.__name__ = "path"
    return parse


#: argparse ``type=`` for an output file: checked writable when the arguments are parsed.
writable_file = _as_type(check_writable_file)
#: argparse ``type=`` for an output directory: checked writable when the arguments are parsed.
writable_dir = _as_type(check_writable_dir)
