"""Independent models of a TLB on an address stream, for cross-checking design points.

* **Stack distances** (Mattson et al., 1970): LRU has the stack property, so one pass over a
  stream gives, for every access, its reuse distance within its set (distinct other pages of
  the set touched since its last use); a ``ways``-way LRU set hits exactly the accesses whose
  distance is below ``ways``.  :func:`stack_distances`, :func:`lru_misses`.
* **Belady's OPT** (:func:`opt_misses`): the fewest misses any replacement policy can have
  with ``entries`` fully associative entries, even one that evicts early or loses entries to
  invalidations; a sound lower bound for every fully associative point, whatever its
  replacement policy, shootdowns, faults or dirty-bit re-walks.
* **cachegrind** (:func:`cachegrind_misses`): Valgrind's cache simulator with 4 KiB lines as
  its D1 is an LRU TLB of ``entries`` entries and ``ways`` ways over the same program's data
  accesses; it must agree exactly with :func:`lru_misses` on the program's recorded trace
  (same sets by bit selection, an access straddling two pages is one reference that misses
  when either page misses, lackey's ``M`` one reference).

Checks a design point calls (each returns ``{"verdict": "pass" | "fail" | "not exercised",
"detail": str, ...figures}``, as :mod:`cosim.explore.schema` records them):
:func:`stack_distance_check` (fully associative points: the RTL's misses against OPT and LRU)
and :func:`cachegrind_check` (the recorded trace against the program under cachegrind).

Public API: the functions above, :func:`page_refs`, :data:`INF`.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["INF", "page_refs", "stack_distances", "lru_misses", "opt_misses",
           "stack_distance_check", "cachegrind_misses", "cachegrind_check"]

#: The distance of a first touch (and of a page deeper than ``max_depth``).
INF = np.iinfo(np.int64).max
PAGE_SHIFT = 12


def page_refs(va: np.ndarray, size: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """The page references of a stream of accesses, as cachegrind makes them.

    Returns ``(pages, access)``: an access whose bytes straddle two 4 KiB pages makes two
    references (first page, then second) with the same ``access`` index; every other access
    makes one.  Without ``size`` every access is one reference to ``va >> 12``.
    """
    va = np.asarray(va, dtype=np.uint64)
    first = (va >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    idx = np.arange(len(va), dtype=np.int64)
    if size is None:
        return first, idx
    last = ((va + np.asarray(size, dtype=np.uint64) - np.uint64(1))
            >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    two = last != first
    if not two.any():
        return first, idx
    if (last - first > 1).any():
        raise ValueError("an access spans more than two pages")
    reps = 1 + two.astype(np.int64)
    access = np.repeat(idx, reps)
    pages = np.repeat(first, reps)
    second = np.flatnonzero(np.diff(np.concatenate([[-1], access])) == 0)
    pages[second] = last[access[second]]
    return pages, access


def stack_distances(pages: np.ndarray, sets: int = 1, max_depth: int = 1 << 14) -> np.ndarray:
    """Per reference, its LRU stack distance within its set (:data:`INF` for a first touch
    or a distance of ``max_depth`` or more).  The set of page ``p`` is ``p % sets``
    (bit selection; ``sets`` a power of two)."""
    if sets < 1 or sets & (sets - 1):
        raise ValueError(f"sets must be a power of two, not {sets}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, not {max_depth}")
    pages = np.asarray(pages, dtype=np.int64)
    # A reference to the page just referenced is at distance 0 and leaves every stack as it
    # is: only the first of a run of them walks the stacks.
    first = _run_starts(pages)
    out = np.zeros(len(pages), dtype=np.int64)
    out[first] = _distances(pages[first], sets, max_depth)
    return out


def _run_starts(pages: np.ndarray) -> np.ndarray:
    """Where each run of equal consecutive pages starts (a bool mask)."""
    return np.concatenate([[True], pages[1:] != pages[:-1]]) if len(pages) else \
        np.zeros(0, dtype=bool)


def _distances(pages: np.ndarray, sets: int, max_depth: int) -> np.ndarray:
    out = np.empty(len(pages), dtype=np.int64)
    stacks: list[list[int]] = [[] for _ in range(sets)]
    mask = sets - 1
    inf = int(INF)
    for i, p in enumerate(pages.tolist()):
        st = stacks[p & mask]
        try:
            d = st.index(p)
        except ValueError:
            d = inf
            if len(st) >= max_depth:
                st.pop()
        else:
            del st[d]
        st.insert(0, p)
        out[i] = d
    return out


def lru_misses(distances: np.ndarray, ways: int, access: Optional[np.ndarray] = None) -> int:
    """Misses of an LRU TLB with ``ways`` ways per set, from :func:`stack_distances`.  With
    ``access`` (from :func:`page_refs`) the references of one access count as one miss when
    any of them misses."""
    if ways < 1:
        raise ValueError(f"ways must be at least 1, not {ways}")
    miss = np.asarray(distances) >= ways
    if access is None:
        return int(miss.sum())
    per = np.zeros(int(access[-1]) + 1 if len(access) else 0, dtype=bool)
    np.logical_or.at(per, access, miss)
    return int(per.sum())


def opt_misses(pages: np.ndarray, entries: int) -> int:
    """Misses of Belady's optimal replacement with ``entries`` fully associative entries
    (evict the page used furthest in the future)."""
    if entries < 1:
        raise ValueError(f"entries must be at least 1, not {entries}")
    pages = np.asarray(pages, dtype=np.int64)
    # A reference to the page just referenced hits, and the next uses keep their order
    # without it: only the first of a run of them counts.
    pages = pages[_run_starts(pages)]
    n = len(pages)
    # next use of each reference's page (n: never again)
    order = np.lexsort((np.arange(n), pages))
    nxt = np.full(n, n, dtype=np.int64)
    same = pages[order[1:]] == pages[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    resident: dict[int, int] = {}     # page -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, page), lazily cleaned
    misses = 0
    for i, (p, nu) in enumerate(zip(pages.tolist(), nxt.tolist())):
        if p in resident:
            resident[p] = nu
            heapq.heappush(heap, (-nu, p))
            continue
        misses += 1
        if len(resident) >= entries:
            while True:
                neg, q = heapq.heappop(heap)
                if resident.get(q) == -neg:
                    del resident[q]
                    break
        resident[p] = nu
        heapq.heappush(heap, (-nu, p))
    return misses


def _verdict(verdict: str, detail: str, figures: dict | None = None) -> dict:
    """A check's result, as :mod:`cosim.explore.schema` records it."""
    return {"verdict": verdict, "detail": detail, **(figures or {})}


def stack_distance_check(pages, misses, *, entries: int, ways: int, squashes: int = 0) -> dict:
    """The RTL's misses on a page stream against the models, for TLBs of ``entries`` entries
    and ``ways`` ways.

    Parameters
    ----------
    pages : array of int, or list of arrays
        The 4 KiB page of each translated access, in order (faulting attempts left out); a
        list gives one stream per core (each core has its own TLB).
    misses : int, or list of int
        The RTL's misses on each stream.
    squashes : int
        Accesses the traffic engines issued again after an invalidation interrupted them
        (the interrupted attempt is not in the stream, but it may have filled the entry its
        retry hits): the RTL may miss that many times fewer than OPT.

    Fully associative points (``ways == entries``): fail when the RTL missed fewer times than
    Belady's OPT allows on the same streams (no replacement policy, invalidation or re-walk
    can do better) or more often than there are accesses.  The LRU misses of the same size are
    reported beside it (the RTL's PLRU, FIFO and random may land on either side).
    Set-associative points: "not exercised" (the RTL's set index is its own; the golden
    model's TLB is the exact check there).
    """
    streams = [np.asarray(p, dtype=np.int64) for p in
               (pages if isinstance(pages, (list, tuple)) else [pages])]
    rtl = [int(m) for m in (misses if isinstance(misses, (list, tuple)) else [misses])]
    if len(streams) != len(rtl):
        raise ValueError(f"{len(streams)} page streams but {len(rtl)} miss counts")
    n = sum(len(p) for p in streams)
    if ways != entries:
        return _verdict("not exercised", f"{entries} entries in {ways} ways: the bound applies "
                                         f"to fully associative points")
    if n == 0:
        return _verdict("not exercised", "no accesses")
    lru = sum(lru_misses(stack_distances(p, 1, max_depth=entries), entries) for p in streams)
    opt = sum(opt_misses(p, entries) for p in streams)
    compulsory = sum(int(np.unique(p).size) for p in streams)
    got = sum(rtl)
    figures = {"opt_misses": opt, "lru_misses": lru, "compulsory_misses": compulsory,
               "rtl_misses": got, "squashes": int(squashes), "accesses": n}
    over = [k for k, (p, m) in enumerate(zip(streams, rtl)) if m > len(p)]
    if got + squashes < opt or over:
        return _verdict("fail", f"the RTL missed {got} times on {n} accesses ({squashes} "
                                f"squashed); with {entries} fully associative entries every "
                                f"policy misses at least {opt} (Belady's OPT) and at most once "
                                f"per access", figures)
    return _verdict("pass", f"OPT {opt} <= RTL {got} + {squashes} squashed, <= {n} accesses "
                            f"(LRU: {lru})", figures)


# --- cachegrind ----------------------------------------------------------------------------

_SUMMARY = re.compile(r"^summary:(.*)$", re.M)
_EVENTS = re.compile(r"^events:(.*)$", re.M)


def cachegrind_misses(argv, *, entries: int, ways: int, cwd: Optional[str] = None,
                      env: Optional[dict] = None, stdio=("null", "pipe")) -> dict:
    """Run ``argv`` under cachegrind with D1 as an LRU TLB of ``entries`` 4 KiB pages in
    ``ways`` ways; returns ``{"refs": data references, "misses": D1 misses}``.

    The program starts as :func:`cosim.explore.trace.record` starts it (the same
    environment, every signal at its default disposition), with its stdout and stderr of
    the kinds ``stdio`` names (:data:`cosim.explore.trace.STDIO_KINDS`; a recorded trace's
    ``meta["stdio"]``): programs take different paths on a regular file, a pipe or a
    terminal.

    Raises
    ------
    ValueError
        ``entries`` is not a multiple of ``ways``, or the number of sets is not a power of
        two (cachegrind's rule).
    cosim.explore.tools.ToolMissing
        Valgrind is not installed.
    RuntimeError
        Cachegrind failed (its last lines are in the message).
    """
    from .tools import tool_path
    from .trace import STDIO_KINDS, TRACE_ENV, launch_prefix
    if entries < 1 or ways < 1 or entries % ways:
        raise ValueError(f"a TLB of {entries} entries cannot have {ways} ways")
    sets = entries // ways
    if sets & (sets - 1):
        raise ValueError(f"cachegrind needs a power-of-two number of sets, not {sets} "
                         f"({entries} entries / {ways} ways)")
    vg = tool_path("valgrind")
    bad = [k for k in stdio if k not in STDIO_KINDS]
    if len(stdio) != 2 or bad:
        raise ValueError(f"stdio must be two of {', '.join(STDIO_KINDS)} (stdout, stderr), "
                         f"not {list(stdio)!r}")
    with tempfile.TemporaryDirectory(prefix="cachegrind-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        cmd = [*launch_prefix(), vg, "--tool=cachegrind", "--cache-sim=yes",
               f"--D1={entries * 4096},{ways},4096", "--I1=32768,8,64", "--LL=8388608,16,64",
               f"--cachegrind-out-file={out}", f"--log-file={Path(tmp) / 'log'}", *argv]
        with _stdio(stdio, Path(tmp)) as (fout, ferr, drain):
            proc = subprocess.Popen(cmd, env=dict(env or TRACE_ENV), cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
            said = drain(proc)
        if not out.exists():
            log = (Path(tmp) / "log").read_text() if (Path(tmp) / "log").exists() else ""
            tail = " | ".join((log + said).strip().splitlines()[-3:])
            raise RuntimeError(f"cachegrind failed on {' '.join(argv)!r} (exit status "
                               f"{proc.returncode}): {tail}")
        text = out.read_text()
    events = _EVENTS.search(text).group(1).split()
    values = [int(v) for v in _SUMMARY.search(text).group(1).split()]
    got = dict(zip(events, values))
    return {"refs": got["Dr"] + got["Dw"], "misses": got["D1mr"] + got["D1mw"]}


@contextlib.contextmanager
def _stdio(kinds, tmp: Path):
    """stdout and stderr of the kinds named, and a ``drain(proc)`` that waits for the
    process, reading what it wrote to pipes and terminals (its stderr's text is returned)."""
    import pty
    import threading
    files, readers, closers = [], [], []
    for n, kind in enumerate(kinds):
        if kind == "null":
            files.append(subprocess.DEVNULL)
        elif kind == "file":
            fh = open(tmp / f"fd{n + 1}", "wb")
            closers.append(fh.close)
            files.append(fh)
        elif kind == "pipe":
            r, w = os.pipe()
            files.append(w)
            closers.append(lambda w=w: os.close(w))
            readers.append((n, r))
        else:                                   # tty
            master, slave = pty.openpty()
            files.append(slave)
            closers.append(lambda s=slave: os.close(s))
            readers.append((n, master))
    got = {n: bytearray() for n in range(2)}

    def read(n, fd):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:                     # a terminal's master after the last close
                break
            if not chunk:
                break
            got[n] += chunk
        os.close(fd)

    def drain(proc):
        for close in closers:                   # the child holds its own copies
            close()
        closers.clear()
        threads = [threading.Thread(target=read, args=r, daemon=True) for r in readers]
        for t in threads:
            t.start()
        proc.wait()
        for t in threads:
            t.join()
        return got[1].decode(errors="replace")

    try:
        yield files[0], files[1], drain
    finally:
        for close in closers:
            close()


def _cache_dir() -> Path:
    from cosim.build import SIM_BUILD
    return SIM_BUILD / "cachegrind"


def cachegrind_check(trace, *, entries: int, ways: int, cache: bool = True) -> dict:
    """The recorded ``trace`` (:class:`cosim.explore.trace.Trace`) against its program run
    under cachegrind as an LRU TLB of ``entries`` entries in ``ways`` ways: references and
    misses must be equal.  "not exercised" when the trace is not the whole program (skipped
    or truncated) or the geometry is one cachegrind cannot simulate.  Cachegrind's figures
    are cached under ``sim_build/cachegrind/`` by command, program hash and geometry."""
    meta = trace.meta
    if meta.get("skip") or meta.get("truncated"):
        return _verdict("not exercised", "the trace is not the whole program (skipped or "
                                         "truncated), cachegrind runs all of it")
    sets, rem = divmod(entries, ways) if ways else (0, 1)
    if rem or sets < 1 or sets & (sets - 1):
        return _verdict("not exercised", f"{entries} entries in {ways} ways: cachegrind needs "
                                         f"a power-of-two number of sets")
    from .trace import PROGRAM_STATE
    if not meta.get("stdio") or meta.get("state") != PROGRAM_STATE:
        return _verdict("not exercised", "the trace was recorded in another program state "
                                         "than cachegrind's run would have (its stdio kinds or "
                                         "its signals and limits are not kept): record it "
                                         "again")
    key = json.dumps([meta["command"], meta.get("cwd"), meta.get("program_sha256"),
                      meta.get("env"), meta.get("valgrind"), meta["stdio"], meta["state"],
                      entries, ways],
                     sort_keys=True)
    import hashlib
    path = _cache_dir() / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
    cg = None
    if cache and path.exists():
        cg = json.loads(path.read_text())
    if cg is None:
        cg = cachegrind_misses(meta["command"], entries=entries, ways=ways,
                               cwd=meta.get("cwd"), env=meta.get("env"), stdio=meta["stdio"])
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(cg) + "\n")
            tmp.replace(path)
    pages, access = page_refs(trace.va, trace.size)
    dist = stack_distances(pages, sets, max_depth=ways)
    model = lru_misses(dist, ways, access)
    figures = {"cachegrind_refs": cg["refs"], "cachegrind_misses": cg["misses"],
               "trace_refs": len(trace), "model_misses": model}
    if cg["refs"] != len(trace) or cg["misses"] != model:
        return _verdict("fail", f"cachegrind saw {cg['refs']} references and {cg['misses']} "
                                f"misses, the recorded trace {len(trace)} and the LRU model "
                                f"{model} ({entries} entries, {ways} ways)", figures)
    return _verdict("pass", f"{model} LRU misses in {len(trace)} references, as cachegrind",
                    figures)
