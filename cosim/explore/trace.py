"""Real programs' address streams: recorded with Valgrind's lackey, stored as ``.npz``.

``rmap-cosim trace [--out FILE] -- CMD ARGS`` runs ``valgrind --tool=lackey --trace-mem=yes``
on the program and parses lackey's output as it arrives (a pipe of its own, so the program's
own stdout and stderr pass through untouched).  Lackey writes one line per event::

    I  0401ab70,3          an instruction (address, length)
     L 1fff000778,8        a load
     S 1fff000770,8        a store
     M 1fff000768,8        a modify (load and store of the same bytes, one instruction)

Valgrind's own lines (``==PID== ...``, ``--PID-- ...``, ``**PID** ...``) are skipped; any
other line is an error naming its line number.  The text is never held: each chunk of the
pipe becomes numbers at once.

A trace holds, per data access: ``va`` (uint64), ``op`` (:class:`TraceOp`), ``size`` (bytes)
and ``gap`` (instructions executed since the previous data access, this access's own
instruction included), plus the program's total instruction count (the MPKI denominator)
and its **address-space layout**: the VMAs are derived from the pages the trace touches
(:func:`derive_vmas`: runs of touched pages, merged across holes of at most ``vma_gap``
pages; writable when any access in it stores).  Valgrind's own view of the client's mappings
is not on any stable output, and ``/proc/PID/maps`` under Valgrind shows Valgrind's layout
too; the pages the program touched are what a replay needs, and they are exact.

Every byte of every access must lie below ``2**38`` (``pyrmap.memory.TASK_SIZE``, the Sv39
user half); under Valgrind programs stay there, and a trace that does not is rejected.

The recording runs with a fixed environment (:data:`TRACE_ENV`), every signal at its
default disposition (:func:`launch_prefix`: a program such as ``sort`` or ``gzip`` installs
its handlers only for signals not ignored, so a run from a background job, which ignores
SIGINT and SIGQUIT, makes another stream) and a fixed resident-set limit
(:data:`PROGRAM_STATE`: ``sort`` sizes its buffer from the machine's available memory
otherwise), and the kinds of its stdout and stderr are
recorded (``meta["stdio"]``, :func:`stdio_kinds`: stdio sets its buffering from them, and
``sort`` makes one more reference with stderr on a regular file than on a pipe).  So the
same command gives the same addresses from a shell, from ``make`` or from a test, and
cachegrind (:mod:`cosim.explore.models`) runs the very same program in the same state.

Public API: :class:`Trace`, :class:`TraceOp`, :class:`TraceVma`, :class:`LackeyParser`,
:func:`record`, :func:`save`, :func:`load`, :func:`derive_vmas`, :func:`main`.
"""

from __future__ import annotations

import array
import dataclasses
import enum
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from pyrmap.memory import TASK_SIZE
from pyrmap.mmap import PROT_READ, PROT_WRITE

from .tools import ToolMissing, tool_path, tool_version

__all__ = ["Trace", "TraceOp", "TraceVma", "TraceError", "LackeyParser", "parse_lackey",
           "record", "save", "load", "derive_vmas", "TRACE_ENV", "FORMAT_VERSION", "main",
           "launch_prefix", "stdio_kinds", "STDIO_KINDS", "PROGRAM_STATE"]

#: Version of the ``.npz`` layout (``meta["format"]``).
FORMAT_VERSION = 1
#: Holes of at most this many untouched pages are merged into one VMA.
DEFAULT_VMA_GAP = 16
#: The environment of a recorded program (and of its cachegrind run).
TRACE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent"}
_CHUNK = 1 << 20
#: What a program's stdout or stderr can be, as :func:`stdio_kinds` names them (a replay of
#: the program, such as cachegrind's, gives it the same kinds).
STDIO_KINDS = ("null", "file", "pipe", "tty")


#: The state a recorded program starts in, beyond :data:`TRACE_ENV` (``meta["state"]``; a
#: cachegrind run of the program starts in the same): every signal at its default
#: disposition, and a resident-set limit, which Linux does not enforce but programs read
#: (``sort`` sizes its buffer from the smaller of it and the machine's available memory, so
#: without it the stream changes with the machine's load).
PROGRAM_STATE = {"signals": "default", "rlimit_rss": 256 << 20}


def launch_prefix() -> list[str]:
    """The command that starts Valgrind in :data:`PROGRAM_STATE`: coreutils ``env
    --default-signal`` (an ignored signal is inherited across exec, and programs test for
    it) and util-linux ``prlimit --rss``."""
    env = shutil.which("env", path=TRACE_ENV["PATH"])
    prlimit = shutil.which("prlimit", path=TRACE_ENV["PATH"] + ":/usr/sbin:/sbin")
    if env is None or prlimit is None:
        raise ToolMissing(f"coreutils' env and util-linux' prlimit must be on PATH "
                          f"{TRACE_ENV['PATH']}")
    return [env, "--default-signal", prlimit, f"--rss={PROGRAM_STATE['rlimit_rss']}"]


def _kind(fd: int) -> str:
    import stat
    try:
        st = os.fstat(fd)
    except OSError:
        return "null"
    if os.isatty(fd):
        return "tty"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        return "pipe"
    return "null"                        # /dev/null and other character devices


def stdio_kinds(stdout=None) -> list[str]:
    """The kinds (:data:`STDIO_KINDS`) of the stdout and stderr a program started with
    ``stdout`` (``None``: inherited; ``subprocess.DEVNULL``; a file object or descriptor)
    and this process's stderr gets."""
    if stdout is None:
        out = _kind(1)
    elif stdout == subprocess.DEVNULL:
        out = "null"
    elif stdout == subprocess.PIPE:
        out = "pipe"
    else:
        out = _kind(stdout if isinstance(stdout, int) else stdout.fileno())
    return [out, _kind(2)]


class TraceOp(enum.IntEnum):
    """What a data access did (0 and 1 are ``pyrmap.pte.AccessType``'s LOAD and STORE)."""
    LOAD = 0
    STORE = 1
    #: Lackey's ``M``: a load and a store of the same bytes by one instruction.
    MODIFY = 3


_OPS = {b" L": TraceOp.LOAD, b" S": TraceOp.STORE, b" M": TraceOp.MODIFY}
_VALGRIND_LINE = re.compile(rb"^(==|--|\*\*)\d+(==|--|\*\*)")


class TraceError(ValueError):
    """A bad lackey line, a bad trace file, or a program that leaves the Sv39 user range."""


@dataclass(frozen=True)
class TraceVma:
    """One region of the recorded address space: ``[start, end)``, page aligned, with the
    ``PROT_*`` bits a replay maps it with."""
    start: int
    end: int
    prot: int


@dataclass(frozen=True)
class Trace:
    """A recorded address stream.

    Members
    -------
    va : np.ndarray of uint64
        Virtual address of each data access.
    op : np.ndarray of uint8
        :class:`TraceOp` of each access.
    size : np.ndarray of uint16
        Bytes accessed.
    gap : np.ndarray of uint32
        Instructions executed since the previous data access (including the one that makes
        this access; 0 for a second access of the same instruction).
    instructions : int
        Instructions executed in the recorded part (``>= gap.sum()``).
    vmas : tuple of TraceVma
        The address-space layout a replay maps (:func:`derive_vmas`).
    meta : dict
        ``format``, ``command``, ``valgrind``, ``skip``, ``limit``, ``truncated``,
        ``exit_code``, ``program_sha256``, ``vma_gap``, ``env``, ``stdio`` (the kinds of the
        program's stdout and stderr, :func:`stdio_kinds`), ``state``
        (:data:`PROGRAM_STATE`).
    """
    va: np.ndarray
    op: np.ndarray
    size: np.ndarray
    gap: np.ndarray
    instructions: int
    vmas: tuple
    meta: dict

    def __len__(self) -> int:
        return len(self.va)

    def counts(self) -> dict:
        """Accesses by op, instructions, VMAs and pages touched."""
        pages = np.unique(self.va >> np.uint64(12)).size if len(self.va) else 0
        return {"accesses": len(self), "loads": int((self.op == TraceOp.LOAD).sum()),
                "stores": int((self.op == TraceOp.STORE).sum()),
                "modifies": int((self.op == TraceOp.MODIFY).sum()),
                "instructions": self.instructions, "vmas": len(self.vmas), "pages": pages}


class LackeyParser:
    """Stream parser of lackey's ``--trace-mem=yes`` output.

    Feed it chunks of bytes (:meth:`feed`) as they arrive; lines may be split across chunks.
    The first ``skip`` data accesses (and their instructions) are dropped; after ``limit``
    accesses :meth:`feed` returns False and ignores the rest.

    Raises
    ------
    TraceError
        A line that is neither lackey's nor Valgrind's, or an access outside ``[0, 2**38)``.
    """

    def __init__(self, *, skip: int = 0, limit: Optional[int] = None):
        if skip < 0:
            raise ValueError(f"skip must be at least 0, not {skip}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.skip = skip
        self.limit = limit
        self.va = array.array("Q")
        self.op = array.array("B")
        self.size = array.array("H")
        self.gap = array.array("I")
        self.instructions = 0       # counted after the skipped part
        self.lineno = 0
        self.truncated = False
        self._seen = 0               # data accesses seen, skipped ones included
        self._pending = 0            # instructions since the last data access
        self._rest = b""

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.va) >= self.limit

    def feed(self, chunk: bytes) -> bool:
        """Parse the complete lines of ``chunk`` (with what is left of the previous one).
        Returns False once ``limit`` accesses are held."""
        if self.full:
            self.truncated = True
            return False
        data = self._rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return True
        self._rest = data[cut + 1:]
        self._lines(data[:cut].split(b"\n"))
        return not self.full

    def finish(self) -> None:
        """The input ended: parse a last line without its newline."""
        if self._rest and not self.full:
            self._lines([self._rest])
        self._rest = b""

    def _lines(self, lines: list) -> None:
        va, op, size, gap = self.va, self.op, self.size, self.gap
        ops = _OPS
        pending = self._pending
        lineno = self.lineno
        for line in lines:
            lineno += 1
            head = line[:2]
            if head == b"I ":
                pending += 1
                continue
            kind = ops.get(head)
            if kind is None:
                if not line or _VALGRIND_LINE.match(line):
                    continue
                self.lineno = lineno
                raise TraceError(f"lackey line {lineno}: not an access or a Valgrind line: "
                                 f"{line[:80]!r}")
            comma = line.find(b",", 3)
            try:
                if line[2:3] != b" " or comma < 0:
                    raise ValueError
                a = int(line[3:comma], 16)
                n = int(line[comma + 1:])
            except ValueError:
                self.lineno = lineno
                raise TraceError(f"lackey line {lineno}: expected ' {chr(head[1])} "
                                 f"<hex address>,<size>', not {line[:80]!r}") from None
            if a < 0 or n < 1 or a + n > TASK_SIZE or n > 0xFFFF:
                self.lineno = lineno
                raise TraceError(f"lackey line {lineno}: access at 0x{a:x} of {n} bytes "
                                 f"is outside the Sv39 user range [0, 0x{TASK_SIZE:x})")
            self._seen += 1
            if self._seen <= self.skip:
                pending = 0
                continue
            va.append(a)
            op.append(kind)
            size.append(n)
            gap.append(pending)
            self.instructions += pending
            pending = 0
            if self.limit is not None and len(va) >= self.limit:
                self.truncated = True
                break
        self._pending = pending
        self.lineno = lineno

    def arrays(self) -> tuple:
        """(va, op, size, gap) as numpy arrays, and the instruction count."""
        instructions = self.instructions + (0 if self.truncated or self._seen <= self.skip
                                            else self._pending)
        return (np.frombuffer(self.va, dtype=np.uint64).copy(),
                np.frombuffer(self.op, dtype=np.uint8).copy(),
                np.frombuffer(self.size, dtype=np.uint16).copy(),
                np.frombuffer(self.gap, dtype=np.uint32).copy(), instructions)


def parse_lackey(chunks: Iterable[bytes], *, skip: int = 0,
                 limit: Optional[int] = None) -> LackeyParser:
    """Parse lackey output given as chunks of bytes; returns the filled parser."""
    p = LackeyParser(skip=skip, limit=limit)
    for chunk in chunks:
        if not p.feed(chunk):
            break
    p.finish()
    return p


def derive_vmas(va: np.ndarray, size: np.ndarray, op: np.ndarray,
                gap_pages: int = DEFAULT_VMA_GAP) -> tuple:
    """The address-space layout of a trace: runs of touched 4 KiB pages, merged across holes
    of at most ``gap_pages`` untouched pages.  A VMA is ``PROT_READ | PROT_WRITE`` when some
    access in it stores (``STORE`` or ``MODIFY``), else ``PROT_READ``."""
    if gap_pages < 0:
        raise ValueError(f"gap_pages must be at least 0, not {gap_pages}")
    if len(va) == 0:
        return ()
    va = va.astype(np.uint64)
    last = va + size.astype(np.uint64) - np.uint64(1)
    first_p, last_p = va >> np.uint64(12), last >> np.uint64(12)
    pages = np.unique(np.concatenate([first_p, last_p]))
    breaks = np.flatnonzero(np.diff(pages) > np.uint64(gap_pages + 1)) + 1
    starts = pages[np.concatenate([[0], breaks])]
    ends = pages[np.concatenate([breaks - 1, [len(pages) - 1]])] + np.uint64(1)
    writes = op != TraceOp.LOAD
    written = np.unique(np.concatenate([first_p[writes], last_p[writes]]))
    run_of = np.searchsorted(starts, written, side="right") - 1
    writable = np.zeros(len(starts), dtype=bool)
    writable[run_of] = True
    return tuple(TraceVma(int(s) << 12, int(e) << 12,
                          PROT_READ | (PROT_WRITE if w else 0))
                 for s, e, w in zip(starts.tolist(), ends.tolist(), writable.tolist()))


# --- recording -------------------------------------------------------------------------------

def _program_sha256(argv: Sequence[str]) -> Optional[str]:
    exe = shutil.which(argv[0], path=TRACE_ENV["PATH"]) if "/" not in argv[0] else argv[0]
    if exe is None or not os.path.isfile(exe):
        return None
    return hashlib.sha256(Path(exe).read_bytes()).hexdigest()


def record(argv: Sequence[str], *, skip: int = 0, limit: Optional[int] = None,
           vma_gap: int = DEFAULT_VMA_GAP, stdout=None, cwd: Optional[str] = None) -> Trace:
    """Run ``argv`` under lackey and return its trace.

    Parameters
    ----------
    argv : sequence of str
        The program and its arguments (looked up on :data:`TRACE_ENV`'s PATH).
    skip : int
        Data accesses to drop at the start (the dynamic loader's, say).
    limit : int, optional
        Stop after this many accesses (the program is killed; ``meta["truncated"]``).
    vma_gap : int
        See :func:`derive_vmas`.
    stdout : file, optional
        Where the program's stdout goes (default: inherited).
    cwd : str, optional
        The program's working directory (default: the current one).

    Raises
    ------
    ToolMissing
        Valgrind is not installed.
    TraceError
        Lackey's output broke the format, an access left the Sv39 user range, or Valgrind
        recorded no instruction (it could not start the program).
    """
    if not argv:
        raise ValueError("argv must name a program")
    vg = tool_path("valgrind")
    version = tool_version("valgrind")
    cwd = os.path.abspath(cwd or os.getcwd())
    rfd, wfd = os.pipe()
    cmd = [*launch_prefix(), vg, "--tool=lackey", "--trace-mem=yes", f"--log-fd={wfd}", *argv]
    try:
        proc = subprocess.Popen(cmd, pass_fds=(wfd,), env=dict(TRACE_ENV), cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=stdout,
                                start_new_session=True)
    finally:
        os.close(wfd)
    parser = LackeyParser(skip=skip, limit=limit)
    killed = False
    try:
        with os.fdopen(rfd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(_CHUNK)
                if not chunk:
                    break
                if not parser.feed(chunk):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
            parser.finish()
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    code = proc.wait()
    va, op, size, gap, instructions = parser.arrays()
    if instructions == 0 and len(va) == 0 and parser.lineno == 0:
        raise TraceError(f"valgrind recorded nothing for {' '.join(argv)!r} "
                         f"(exit status {code}): is the program on PATH "
                         f"{TRACE_ENV['PATH']}?")
    meta = {"format": FORMAT_VERSION, "command": list(argv), "cwd": cwd,
            "valgrind": version, "skip": skip, "limit": limit,
            "truncated": bool(killed or parser.truncated),
            "exit_code": None if killed else code,
            "program_sha256": _program_sha256(argv), "vma_gap": vma_gap,
            "env": dict(TRACE_ENV), "stdio": stdio_kinds(stdout),
            "state": dict(PROGRAM_STATE)}
    return Trace(va, op, size, gap, instructions, derive_vmas(va, size, op, vma_gap), meta)


# --- files -----------------------------------------------------------------------------------

_ARRAYS = {"va": np.uint64, "op": np.uint8, "size": np.uint16, "gap": np.uint32}


def save(trace: Trace, path) -> Path:
    """Write ``trace`` to ``path`` (numpy ``.npz``, compressed; written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(trace.meta, instructions=int(trace.instructions))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, va=trace.va, op=trace.op, size=trace.size, gap=trace.gap,
            vma_start=np.array([v.start for v in trace.vmas], dtype=np.uint64),
            vma_end=np.array([v.end for v in trace.vmas], dtype=np.uint64),
            vma_prot=np.array([v.prot for v in trace.vmas], dtype=np.uint8),
            meta=np.array(json.dumps(meta, sort_keys=True)))
    os.replace(tmp, path)
    return path


def load(path) -> Trace:
    """Read a trace written by :func:`save`.

    Raises
    ------
    TraceError
        Not such a file: a key, a dtype or a length that does not fit, an unknown format
        version, an access outside the Sv39 user range, or an access outside every VMA.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise TraceError(f"{path}: not a trace file ({exc})") from None
    need = list(_ARRAYS) + ["vma_start", "vma_end", "vma_prot", "meta"]
    for key in need:
        if key not in data:
            raise TraceError(f"{path}: lacks the array {key!r}")
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError:
        raise TraceError(f"{path}: meta is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise TraceError(f"{path}: trace format {meta.get('format') if isinstance(meta, dict) else meta!r}"
                         f", not {FORMAT_VERSION}")
    n = len(data["va"])
    for key, dtype in _ARRAYS.items():
        if data[key].dtype != dtype or data[key].shape != (n,):
            raise TraceError(f"{path}: {key} must be {np.dtype(dtype).name}[{n}], not "
                             f"{data[key].dtype.name}{list(data[key].shape)}")
    va, size = data["va"], data["size"]
    if n and (int((va + size.astype(np.uint64)).max()) > TASK_SIZE or int(size.min()) < 1):
        raise TraceError(f"{path}: an access lies outside the Sv39 user range "
                         f"[0, 0x{TASK_SIZE:x})")
    vmas = tuple(TraceVma(int(s), int(e), int(p)) for s, e, p in
                 zip(data["vma_start"].tolist(), data["vma_end"].tolist(),
                     data["vma_prot"].tolist()))
    if n:
        starts = np.array([v.start for v in vmas], dtype=np.uint64)
        ends = np.array([v.end for v in vmas], dtype=np.uint64)
        k = np.searchsorted(starts, va, side="right") - 1
        last = va + size.astype(np.uint64)
        inside = (k >= 0) & (last <= ends[np.maximum(k, 0)]) if len(vmas) else k >= 0
        if not inside.all():
            bad = int(np.flatnonzero(~inside)[0])
            raise TraceError(f"{path}: access {bad} at 0x{int(va[bad]):x} lies in no VMA")
    instructions = int(meta.get("instructions", 0))
    return Trace(va, data["op"], size, data["gap"], instructions, vmas, meta)


# --- command line ----------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m cosim.explore.trace") -> int:
    """Record a program's data accesses with Valgrind's lackey into a compressed .npz
    (the program runs with a fixed environment; see cosim.explore.trace)."""
    from pyrmap.cliargs import ArgumentParser, int_arg, writable_file
    argv = list(sys.argv[1:] if argv is None else argv)
    p = ArgumentParser(prog=prog, description=main.__doc__,
                       usage=f"{prog} [--out FILE] [--skip N] [--max-accesses N] "
                             f"[--vma-gap PAGES] -- CMD [ARGS ...]")
    p.add_argument("--out", type=writable_file, default="trace.npz",
                   help="the trace file (default %(default)s)")
    p.add_argument("--skip", type=int_arg(0), default=0,
                   help="data accesses to drop at the start (default 0)")
    p.add_argument("--max-accesses", type=int_arg(1), default=None,
                   help="stop after this many data accesses (the program is killed)")
    p.add_argument("--vma-gap", type=int_arg(0, 1 << 20), default=DEFAULT_VMA_GAP,
                   help="merge touched-page runs across holes of at most this many pages "
                        "into one VMA (default %(default)s)")
    if "--" in argv:
        cut = argv.index("--")
        opts, command = argv[:cut], argv[cut + 1:]
    else:
        opts, command = argv, []
    try:
        a = p.parse_args(opts)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    if not command:
        print(f"{prog}: error: name the program to trace after `--` (see {prog} --help)",
              file=sys.stderr)
        return 2
    try:
        trace = record(command, skip=a.skip, limit=a.max_accesses, vma_gap=a.vma_gap)
    except (ToolMissing, TraceError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    path = save(trace, a.out)
    c = trace.counts()
    note = " (truncated)" if trace.meta["truncated"] else ""
    print(f"trace: {c['accesses']:,} accesses{note} ({c['loads']:,} loads, {c['stores']:,} "
          f"stores, {c['modifies']:,} modifies), {c['instructions']:,} instructions, "
          f"{c['pages']:,} pages in {c['vmas']} VMAs -> {path} "
          f"({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
