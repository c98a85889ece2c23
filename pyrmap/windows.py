"""Window coverage: how often something landed inside the windows an mm operation opens.

A kernel thread that changes a present PTE opens a *window* on it, in two phases:

* ``locked`` -- from the PTE change until the thread drops the pte lock (or flushes);
* ``unflushed`` -- from the lock drop until the TLB flush that covers the PTE, when the change
  takes away something a TLB may still hold (a frame, a permission, A or D) and the thread
  drops the lock before flushing (the mmu_gather's deferred flush, mprotect, fork).

While a window is open, these land inside it (the *landing* kinds, :data:`LANDINGS`):

* ``cpu_access`` -- a CPU access completed on the old or new frame of the PTE;
* ``walk`` -- a page walk read the PTE (the ``walk_read`` event);
* ``ad_update`` -- the walker set A or D on the PTE by compare-and-swap;
* ``device_access`` -- a device access on the old or new frame, or on the PTE's page;
* ``mm_op`` -- another kernel thread changed the same PTE.

:class:`WindowCoverage` listens to the arch's observer events (``pte_write``, ``lock_release``,
``tlb_inval``, ``walk_read``, ``cpu_access``, ``dev_access``) -- SoftArch and the RTL's
:class:`cosim.arch.CosimArch` raise them alike --, labels each PTE change with the operation of
the thread that made it (``op_of(thread)``), and counts landings per (operation, window).
:data:`WINDOWS` lists the (operation, window) pairs the random programs promise to hit;
:meth:`WindowCoverage.missed` names those that nothing landed in.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Optional

from .arch import InvalKind
from .pte import _PAGE_A, _PAGE_D, _PAGE_V, LEVEL_SHIFT, PAGE_SHIFT, PAGE_SIZE, PTRS_PER_PTE, pte_pfn

__all__ = ["WindowCoverage", "LANDINGS", "PHASES", "WINDOWS", "WINDOW_SEEDS", "format_windows",
           "format_window_rows", "suite_coverage"]

#: What can land inside a window.
LANDINGS = ("cpu_access", "walk", "ad_update", "device_access", "mm_op")

#: The phases of a PTE change's window.
PHASES = ("locked", "unflushed")

#: The (operation, window) pairs the race-seeking random programs promise to hit at least
#: once over their default seeds (the suite asserts it, and that every other pair that opened
#: was hit too).
WINDOWS = (
    ("munmap", "locked"), ("munmap", "unflushed"),
    ("mprotect", "locked"), ("mprotect", "unflushed"),
    ("mremap", "locked"), ("mremap", "unflushed"),
    ("madvise", "locked"), ("madvise", "unflushed"),
    ("fork", "locked"), ("fork", "unflushed"),
    ("exit", "locked"), ("exit", "unflushed"),
    ("reclaim", "locked"), ("reclaim", "unflushed"),
    ("writeback", "locked"),
    ("migration", "locked"),
    ("remap_file_pages", "locked"),
    ("fault", "locked"),
)

#: The suite's seeds for :data:`WINDOWS`: (ops or None for every default operation, seeds,
#: steps) -- the default mix, a mix heavy in fork, exit, mremap and remap_file_pages, and one
#: heavy in zaps.
WINDOW_SEEDS = (
    (None, range(16), 30),
    (("mmap_anon", "mmap_file", "access", "fork", "exit", "fork_exit", "mremap_move", "mremap",
      "mremap_shrink", "remap_file_pages"), range(8), 30),
    (("mmap_anon", "mmap_file", "access", "madvise", "dontneed_twice", "munmap",
      "mprotect_none", "reclaim", "migrate"), range(12), 30),
)

_PTE_LOCKS = ("page_table_lock",)


@dataclasses.dataclass
class _Window:
    op: str
    thread: str
    ptep: int
    frames: tuple
    asid: Optional[int]
    va: Optional[int]
    locked: bool = True
    unflushed: bool = False


class WindowCoverage:
    """Counts landings per (operation, window) from the arch's observer events.

    Parameters
    ----------
    arch : Arch
        Its ``observer`` is chained (:meth:`install`).
    op_of : callable
        ``op_of(thread_name) -> str``: the operation a kernel thread is running.
    mms : callable
        ``mms() -> iterable of MmStruct``: the live address spaces (to find a PTE's address).

    Members
    -------
    counts : dict
        (operation, window) -> Counter of landing kinds.
    opened : Counter
        (operation, window) -> windows opened.
    """

    def __init__(self, arch, op_of: Callable[[str], str], mms: Callable[[], Iterable]):
        self.arch = arch
        self.op_of = op_of
        self.mms = mms
        self.counts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(
            collections.Counter)
        self.opened: collections.Counter = collections.Counter()
        self._open: dict[int, list[_Window]] = {}
        self._tables: dict[int, tuple[int, int]] = {}
        self._prev = None
        self._installed = False

    # --- wiring --------------------------------------------------------------------------

    def install(self) -> "WindowCoverage":
        """Chain onto ``arch.observer``."""
        if not self._installed:
            self._prev = self.arch.observer
            self.arch.observer = self._observe
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            self.arch.observer = self._prev
            self._installed = False

    def _observe(self, event: str, **d) -> None:
        if self._prev is not None:
            self._prev(event, **d)
        handler = _HANDLERS.get(event)
        if handler is not None:
            handler(self, **d)

    # --- where a PTE is ------------------------------------------------------------------

    def _locate(self, ptep: int) -> tuple[Optional[int], Optional[int]]:
        """(asid, virtual address) of the PTE at ``ptep``, from the live page tables."""
        table = ptep >> PAGE_SHIFT
        got = self._tables.get(table)
        if got is None:
            self._tables = self._index()
            got = self._tables.get(table)
        if got is None:
            return None, None
        asid, base = got
        return asid, base + (((ptep & (PAGE_SIZE - 1)) >> 3) << PAGE_SHIFT)

    def _index(self) -> dict[int, tuple[int, int]]:
        mem = self.arch.mem
        out = {}
        for mm in self.mms():
            root = mm.pgd
            if root is None:
                continue
            for i in range(PTRS_PER_PTE):
                l2 = mem.read((root << PAGE_SHIFT) + 8 * i)
                if not l2 & _PAGE_V or l2 & 0xE:
                    continue
                for j in range(PTRS_PER_PTE):
                    l1 = mem.read((pte_pfn(l2) << PAGE_SHIFT) + 8 * j)
                    if l1 & _PAGE_V and not l1 & 0xE:
                        out[pte_pfn(l1)] = (mm.asid, (i << LEVEL_SHIFT[2]) | (j << LEVEL_SHIFT[1]))
        return out

    # --- events --------------------------------------------------------------------------

    def _land(self, kind: str, windows: Iterable[_Window]) -> None:
        for w in windows:
            phase = "locked" if w.locked else "unflushed" if w.unflushed else None
            if phase is not None:
                self.counts[(w.op, phase)][kind] += 1

    def _on_pte_write(self, ptep: int, old: int, new: int, who: str, **_) -> None:
        windows = self._open.get(ptep, [])
        if who.startswith("hw-"):                  # a walker's A/D update (CAS or write)
            self._land("ad_update", windows)
            return
        who = who.rsplit(" thread ", 1)[-1]         # "sw <what> thread <name>"
        self._land("mm_op", [w for w in windows if w.thread != who])
        if not old & _PAGE_V:
            return
        op = self.op_of(who)
        lost = old & ~new & ~(_PAGE_A | _PAGE_D) & 0x3FF or pte_pfn(old) != pte_pfn(new) \
            or not new & _PAGE_V
        needs_flush = bool(lost or old & ~new & (_PAGE_A | _PAGE_D))
        mine = [w for w in windows if w.thread == who]
        if mine:
            w = mine[-1]
            w.frames = tuple(set(w.frames) | {pte_pfn(new)})
            w.unflushed = w.unflushed or needs_flush
            return
        asid, va = self._locate(ptep)
        frames = tuple({pte_pfn(old)} | ({pte_pfn(new)} if new & _PAGE_V else set()))
        w = _Window(op, who, ptep, frames, asid, va, True, needs_flush)
        self._open.setdefault(ptep, []).append(w)
        self.opened[(op, "locked")] += 1

    def _on_lock_release(self, lock: str, thread: str, **_) -> None:
        if lock not in _PTE_LOCKS:
            return
        for ptep, windows in list(self._open.items()):
            for w in windows:
                if w.thread == thread and w.locked:
                    w.locked = False
                    if w.unflushed:
                        self.opened[(w.op, "unflushed")] += 1
            self._prune(ptep)

    def _on_tlb_inval(self, kind, vaddr: int = 0, asid: int = 0, **_) -> None:
        kind = InvalKind(kind)
        page = vaddr >> PAGE_SHIFT
        for ptep, windows in list(self._open.items()):
            for w in windows:
                if kind == InvalKind.ALL:
                    hit = True
                elif kind == InvalKind.ASID:
                    hit = w.asid is None or w.asid == asid
                elif w.va is None:
                    hit = True
                else:
                    hit = w.va >> PAGE_SHIFT == page and (kind == InvalKind.VA
                                                          or w.asid == asid)
                if hit:
                    w.unflushed = False
            self._prune(ptep)

    def _prune(self, ptep: int) -> None:
        live = [w for w in self._open.get(ptep, ()) if w.locked or w.unflushed]
        if live:
            self._open[ptep] = live
        else:
            self._open.pop(ptep, None)

    def _by_frame(self, pfn: int) -> list[_Window]:
        return [w for ws in self._open.values() for w in ws if pfn in w.frames]

    def _on_walk_read(self, ptep: int, **_) -> None:
        if self._open:
            self._land("walk", self._open.get(ptep, ()))

    def _on_cpu_access(self, result, **_) -> None:
        if self._open and result.fault == 0:
            self._land("cpu_access", self._by_frame(result.paddr >> PAGE_SHIFT))

    def _on_dev_access(self, vaddr: int, asid: int, fault, paddr: int, **_) -> None:
        if not self._open:
            return
        hit = {id(w): w for w in self._open_windows()
               if w.asid == asid and w.va is not None and w.va >> PAGE_SHIFT == vaddr >> PAGE_SHIFT}
        if fault == 0:
            hit.update({id(w): w for w in self._by_frame(paddr >> PAGE_SHIFT)})
        self._land("device_access", hit.values())

    def _open_windows(self) -> list[_Window]:
        return [w for ws in self._open.values() for w in ws]

    def inside(self, thread: str) -> bool:
        """``thread`` has an open window (changed a PTE, not yet unlocked or flushed)."""
        return any(w.thread == thread for ws in self._open.values() for w in ws)

    # --- results -------------------------------------------------------------------------

    def quiesce(self) -> None:
        """Every thread finished: whatever is still open is closed."""
        self._open.clear()

    def merged(self, other: "WindowCoverage") -> None:
        """Add ``other``'s counts to these (coverage over several seeds)."""
        for key, c in other.counts.items():
            self.counts[key].update(c)
        self.opened.update(other.opened)

    def hits(self, key: tuple[str, str]) -> int:
        return sum(self.counts.get(key, {}).values())

    def missed(self, windows: Optional[Iterable[tuple[str, str]]] = WINDOWS
               ) -> list[tuple[str, str]]:
        """The (operation, window) pairs of ``windows`` that nothing landed in; with
        ``windows`` None, of every pair that opened at least once."""
        if windows is None:
            windows = sorted(k for k, n in self.opened.items() if n)
        return [key for key in windows if self.hits(key) == 0]

    def table(self) -> list[tuple[str, str, int, dict]]:
        """(operation, window, windows opened, landing counts) for every pair seen."""
        keys = sorted(set(self.opened) | set(self.counts))
        return [(op, phase, self.opened.get((op, phase), 0), dict(self.counts.get((op, phase), {})))
                for op, phase in keys]


_HANDLERS = {
    "pte_write": WindowCoverage._on_pte_write,
    "lock_release": WindowCoverage._on_lock_release,
    "tlb_inval": WindowCoverage._on_tlb_inval,
    "cpu_access": WindowCoverage._on_cpu_access,
    "walk_read": WindowCoverage._on_walk_read,
    "dev_access": WindowCoverage._on_dev_access,
}


def format_windows(cov: WindowCoverage, promised: Iterable[tuple[str, str]] = WINDOWS) -> str:
    """The window-coverage table: one line per (operation, window), landings by kind."""
    return format_window_rows(cov.table(), promised)


def format_window_rows(rows, promised: Iterable[tuple[str, str]] = ()) -> str:
    """The window-coverage table of ``rows`` (:meth:`WindowCoverage.table`'s, or the same
    read back from a run's JSON report); a promised pair nothing landed in is MISSED."""
    lines = [f"{'operation':<12} {'window':<10} {'opened':>7} "
             + " ".join(f"{k:>13}" for k in LANDINGS)]
    promised = {tuple(k) for k in promised}
    rows = [tuple(r) for r in rows]
    seen = {(op, phase) for op, phase, _, _ in rows}
    for op, phase, opened, counts in rows:
        mark = "" if (op, phase) not in promised or sum(counts.values()) else "  MISSED"
        lines.append(f"{op:<12} {phase:<10} {opened:>7} "
                     + " ".join(f"{counts.get(k, 0):>13}" for k in LANDINGS) + mark)
    missing = [k for k in promised if k not in seen]
    for op, phase in sorted(missing):
        lines.append(f"{op:<12} {phase:<10} {0:>7} " + " ".join(f"{0:>13}" for _ in LANDINGS)
                     + "  MISSED")
    return "\n".join(lines)


def suite_coverage(seeds=WINDOW_SEEDS, **kw) -> WindowCoverage:
    """Window coverage merged over the random programs of ``seeds`` (``(ops, seeds, steps)``
    triples; :data:`WINDOW_SEEDS` by default); ``kw`` goes to
    :func:`pyrmap.scenario.run_program`."""
    from .scenario import run_program
    total = None
    for ops, seed_range, steps in seeds:
        for seed in seed_range:
            system = run_program(seed, steps, ops=list(ops) if ops else None, windows=True,
                                 **kw)
            if total is None:
                total = system.windows
            else:
                total.merged(system.windows)
    return total
