"""Engine mutation testing (``make mutate``): small changes of the rmap engine of the kinds
that caused real bugs, each applied in turn to a copy of ``pyrmap``; the default random
programs (and then the SoftArch demo) run on the copy and must kill it.

A :class:`Mutation` names one file of the engine, a piece of its text that must occur exactly
once, and what replaces it.  :func:`run_mutation` copies the ``pyrmap`` package into a temporary
directory, patches the copy, and runs the default fuzz -- :func:`pyrmap.scenario.run_program`
with its defaults, seeds :data:`SEEDS`, :data:`STEPS` steps each -- in a fresh interpreter whose
``pyrmap`` is the copy (it checks that it is).  The first seed that fails kills the mutant; the
outcome names the checker (or the exception) that killed it, the seed and the step.  A mutant
that every seed survives is run through the demo (:func:`pyrmap.demo.run_demo`) as well.  No
live module is ever patched.

``python -m cosim.mutate`` runs every mutation (two at a time) and prints the table that
``make bugzoo`` prints beside the quirks.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

__all__ = ["Mutation", "MutantOutcome", "MUTATIONS", "OPEN_MUTATIONS", "SEEDS", "STEPS",
           "UNMUTATED", "apply_mutation", "run_mutation", "run_mutations", "format_mutations",
           "main"]

#: The default fuzz a mutant must not survive: these seeds of the default random program.
SEEDS = tuple(range(16))
#: Steps of each program.
STEPS = 30

_PKG = pathlib.Path(__file__).resolve().parent.parent / "pyrmap"


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One engine mutation: in ``file`` (relative to ``pyrmap/``), ``old`` (exactly one
    occurrence) becomes ``new``, and so does each further ``(old, new)`` of ``more``.
    ``kind`` is the class of real bug it stands for."""
    name: str
    kind: str
    file: str
    old: str
    new: str
    doc: str
    more: tuple = ()


MUTATIONS: list[Mutation] = [
    Mutation(
        "unmap_flush_after_unlock", "flush moved after a lock drop", "rmap.py",
        "        pteval = ptep_clear_flush_notify(vma, address, ptep)\n        if pte_dirty",
        "        pteval = kernel.arch.ptep_get_and_clear(mm, address, ptep)\n"
        "        ptl.release()\n"
        "        kernel.arch.yield_point('mutant: unlocked before the flush')\n"
        "        ptl.acquire()\n"
        "        ptep_clear_flush_notify(vma, address, ptep)\n        if pte_dirty",
        "try_to_unmap_one clears the pte, drops the pte lock, and only then flushes"),
    Mutation(
        "mkclean_flush_dropped", "flush skipped", "rmap.py",
        "            entry = ptep_clear_flush_notify(vma, address, ptep)\n"
        "            entry = pte_wrprotect(entry)\n",
        "            entry = kernel.arch.ptep_get_and_clear(mm, address, ptep)\n"
        "            entry = pte_wrprotect(entry)\n",
        "page_mkclean_one write-protects and cleans the pte without flushing the TLBs"),
    Mutation(
        "fork_wrprotect_dropped", "PTE change dropped", "memory.py",
        "        _pgtable().ptep_set_wrprotect(src_mm, addr, src_ptep)\n",
        "        pass\n",
        "fork leaves the parent's COW ptes writable (only the child's copy is read-only)"),
    Mutation(
        "swapin_reuse_shared", "decision from the wrong value", "memory.py",
        "        if write_access and can_share_swap_page(page):\n",
        "        if write_access:\n",
        "do_swap_page maps a swapped-in page writable for a write even when another process "
        "still shares it (no copy on write)"),
    Mutation(
        "unmap_dirty_from_wrong_value", "dirty bit taken from the wrong value", "rmap.py",
        "        if pte_dirty(pteval):\n            _set_page_dirty(page)\n            stats",
        "        if pte_dirty(kernel.arch.pte_load(ptep)):\n            _set_page_dirty(page)\n"
        "            stats",
        "try_to_unmap_one tests D on the pte after the clear instead of the value it returned"),
    Mutation(
        "zap_dirty_dropped", "dirty bit taken from the wrong value", "memory.py",
        "                    if pte_dirty(ptent):\n                        _set_page_dirty(page)\n",
        "                    if False and pte_dirty(ptent):\n"
        "                        _set_page_dirty(page)\n",
        "zap_pte_range never moves a shared file pte's D to the page"),
    Mutation(
        "mprotect_flush_dropped", "flush skipped", "mmap.py",
        "        arch.flush_tlb_range(vma, start, end)\n    kernel.stats[\"mprotect_ptes\"]",
        "        pass\n    kernel.stats[\"mprotect_ptes\"]",
        "change_protection never flushes: write permission outlives mprotect(PROT_READ)"),
    Mutation(
        "fork_flush_dropped", "flush skipped", "mmap.py",
        "            kernel.arch.flush_tlb_mm(oldmm)\n",
        "            pass\n",
        "fork write-protects the parent's COW ptes but never flushes its TLBs"),
    Mutation(
        "cow_flush_dropped", "flush skipped", "memory.py",
        "                    _notify().ptep_clear_flush_notify(vma, address, ptep)\n",
        "                    arch.ptep_get_and_clear(mm, address, ptep)\n",
        "do_wp_page's copy replaces the pte without flushing the old page's translation"),
    Mutation(
        "exit_flush_skipped", "flush skipped when nothing more runs", "memory.py",
        "    tlb_flush_mmu(tlb, start, end)\n    tlb.finished = True\n",
        "    if tlb.fullmm:\n        tlb.need_flush = False\n"
        "    tlb_flush_mmu(tlb, start, end)\n    tlb.finished = True\n",
        "exit frees the pages without a TLB flush (nobody runs the mm any more)"),
    Mutation(
        "invalidate_page_dropped", "notifier call dropped", "mmu_notifier.py",
        "    pte = ptep_clear_flush(vma, address, ptep)\n"
        "    mmu_notifier_invalidate_page(vma.vm_mm, address)\n",
        "    pte = ptep_clear_flush(vma, address, ptep)\n",
        "ptep_clear_flush_notify never tells the secondary MMUs"),
    Mutation(
        "range_start_dropped", "notifier call dropped", "mmu_notifier.py",
        "    mmu_notifier_invalidate_range_start(mm, start, end)\n    try:\n        yield\n",
        "    try:\n        yield\n",
        "a range change calls only invalidate_range_end: the secondary MMU keeps its "
        "translations through the change"),
    Mutation(
        "cow_flush_after_unlock", "flush moved after a lock drop", "memory.py",
        "                    _notify().ptep_clear_flush_notify(vma, address, ptep)\n",
        "                    arch.ptep_get_and_clear(mm, address, ptep)\n"
        "                    ptl_ = pte_lockptr(mm, address)\n"
        "                    ptl_.release()\n"
        "                    arch.yield_point('mutant: unlocked before the flush')\n"
        "                    ptl_.acquire()\n"
        "                    _notify().ptep_clear_flush_notify(vma, address, ptep)\n",
        "do_wp_page's copy clears the old pte, drops the pte lock, and only then flushes"),
    Mutation(
        "zap_decision_from_read", "PTE read before its atomic clear, decision from the read",
        "memory.py",
        "                ptent = get_and_clear(mm, a, ptep)\n",
        "                get_and_clear(mm, a, ptep)\n",
        "zap_pte_range takes D and A from the pte it read before the atomic clear"),
    Mutation(
        "unmap_decision_from_read", "PTE read before its atomic clear, decision from the read",
        "rmap.py",
        "        pteval = ptep_clear_flush_notify(vma, address, ptep)\n        if pte_dirty",
        "        ptep_clear_flush_notify(vma, address, ptep)\n        if pte_dirty",
        "try_to_unmap_one takes D (and W) from the pte it read before taking the pte lock: "
        "a D the walker sets in between is lost",
        more=(("    found = page_check_address(page, mm, address)\n    if found is None:\n"
               "        return ret\n    ptep, ptl = found\n    try:\n"
               "        if not migration and",
               "    early = pte_offset(mm, address)\n"
               "    pteval = kernel.arch.pte_load(early) if early is not None else 0\n"
               "    found = page_check_address(page, mm, address)\n    if found is None:\n"
               "        return ret\n    ptep, ptl = found\n    try:\n"
               "        if not migration and"),)),
]

#: Mutations the default fuzz does not kill yet, kept so that ``--open`` measures them (none
#: at present: every mutation written so far is killed).
OPEN_MUTATIONS: list[Mutation] = []


@dataclasses.dataclass
class MutantOutcome:
    """What the default fuzz (and the demo) made of one mutant."""
    name: str
    killed: bool
    by: str = ""            # the checker, or the exception type
    seed: Optional[int] = None
    step: Optional[int] = None
    steps_run: int = 0      # program steps run until the kill (over every seed tried)
    stage: str = ""         # "fuzz" or "demo"
    message: str = ""
    seconds: float = 0.0


def apply_mutation(m: Mutation, root: pathlib.Path) -> None:
    """Patch the copy of ``pyrmap`` under ``root``.  Raises ValueError naming the mutation
    when its text does not occur exactly once (the engine changed under it)."""
    path = root / "pyrmap" / m.file
    text = path.read_text()
    for old, new in ((m.old, m.new),) + tuple(m.more):
        count = text.count(old)
        if count != 1:
            raise ValueError(f"Mutation {m.name!r}: its text occurs {count} times in "
                             f"pyrmap/{m.file}, not once (update the mutation to the engine)")
        text = text.replace(old, new)
    path.write_text(text)


def _worker(root: str, seeds, steps: int) -> dict:
    """Runs in the mutant's interpreter: the default fuzz, then the demo."""
    import pyrmap
    if not pathlib.Path(pyrmap.__file__).resolve().is_relative_to(pathlib.Path(root).resolve()):
        raise RuntimeError(f"the mutant's interpreter imported {pyrmap.__file__}, not the "
                           f"copy under {root}")
    from pyrmap.checkers import InvariantViolation
    from pyrmap.scenario import run_program
    done = 0
    for seed in seeds:
        steps_seen = [0]

        def on_step(i, name):
            steps_seen[0] = i + 1
        try:
            run_program(seed, steps, on_step=on_step)
        except InvariantViolation as exc:
            return {"killed": True, "by": exc.checker, "seed": seed, "step": steps_seen[0],
                    "steps_run": done + steps_seen[0], "stage": "fuzz",
                    "message": str(exc).splitlines()[0][:200]}
        except Exception as exc:  # noqa: BLE001 - any crash of the mutant kills it
            return {"killed": True, "by": type(exc).__name__, "seed": seed,
                    "step": steps_seen[0], "steps_run": done + steps_seen[0], "stage": "fuzz",
                    "message": str(exc).splitlines()[0][:200] if str(exc) else ""}
        done += steps
    from pyrmap.demo import run_demo
    try:
        result = run_demo(1, out=open(os.devnull, "w"))
    except Exception as exc:  # noqa: BLE001
        return {"killed": True, "by": getattr(exc, "checker", type(exc).__name__), "seed": 1,
                "steps_run": done, "stage": "demo", "message": str(exc).splitlines()[0][:200]}
    if not result.ok:
        return {"killed": True, "by": "demo verdict", "seed": 1, "steps_run": done,
                "stage": "demo"}
    return {"killed": False, "steps_run": done}


#: The name :func:`run_mutation` gives the outcome of the engine as it is (``m`` None).
UNMUTATED = "unmutated"


def run_mutation(m: Optional[Mutation], *, seeds=SEEDS, steps: int = STEPS,
                 timeout: float = 900.0) -> MutantOutcome:
    """Apply ``m`` to a temporary copy of pyrmap and run the default fuzz on it; with ``m``
    None, run it on the copy as it is (the control: it must survive, i.e. pass)."""
    t0 = time.monotonic()
    name = m.name if m is not None else UNMUTATED
    with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as tmp:
        root = pathlib.Path(tmp)
        shutil.copytree(_PKG, root / "pyrmap", ignore=shutil.ignore_patterns("__pycache__"))
        if m is not None:
            apply_mutation(m, root)
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
        code = ("import json, sys; from cosim.mutate import _worker; "
                "print('MUTANT', json.dumps(_worker(sys.argv[1], json.loads(sys.argv[2]), "
                "int(sys.argv[3]))))")
        proc = subprocess.run([sys.executable, "-c", code, str(root), json.dumps(list(seeds)),
                               str(steps)], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(root))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MUTANT ")), None)
    if line is None:
        raise RuntimeError(f"mutant {name!r}: the worker printed no outcome (exit "
                           f"{proc.returncode}):\n{proc.stderr[-2000:]}")
    got = json.loads(line[len("MUTANT "):])
    return MutantOutcome(name, seconds=time.monotonic() - t0, **got)


def run_mutations(mutations, jobs: int = 2) -> list[MutantOutcome]:
    """:func:`run_mutation` of each of ``mutations`` (None: the unmutated control), ``jobs``
    at a time, in order."""
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(run_mutation, mutations))


def format_mutations(outcomes: list[MutantOutcome]) -> str:
    """The mutation table: each mutant, killed or not, by what, where, after how many steps."""
    by_name = {m.name: m for m in MUTATIONS + OPEN_MUTATIONS}
    lines = [f"{'mutation':<28} {'kind':<56} {'result':<8} {'killed by':<22} "
             f"{'seed':>4} {'step':>4} {'steps':>6}"]
    for o in outcomes:
        kind = by_name[o.name].kind if o.name in by_name else ""
        res = "KILLED" if o.killed else "SURVIVED"
        lines.append(f"{o.name:<28} {kind:<56} {res:<8} {o.by or '-':<22} "
                     f"{o.seed if o.seed is not None else '-':>4} "
                     f"{o.step if o.step is not None else '-':>4} {o.steps_run:>6}")
    killed = sum(o.killed for o in outcomes)
    lines.append(f"{killed} of {len(outcomes)} mutants killed by the default fuzz "
                 f"(seeds {SEEDS[0]}..{SEEDS[-1]}, {STEPS} steps) or the demo")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    from pyrmap.cliargs import ArgumentParser, int_arg, writable_file
    names = [m.name for m in MUTATIONS + OPEN_MUTATIONS]
    p = ArgumentParser(prog="python -m cosim.mutate",
                       description="Engine mutation testing: every mutant must be killed by "
                                   "the default random programs.")
    p.add_argument("--only", action="append", default=[], choices=names, metavar="MUTATION",
                   help=f"run only these (repeatable): {', '.join(names)}")
    p.add_argument("--open", action="store_true",
                   help="also run the mutations the default fuzz does not kill yet")
    p.add_argument("--jobs", type=int_arg(1, 64), default=2,
                   help="mutants run at once (default 2)")
    p.add_argument("--json", metavar="PATH", type=writable_file,
                   help="also write the outcomes as JSON")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:            # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    pool_of = MUTATIONS + (OPEN_MUTATIONS if args.open or args.only else [])
    chosen = [m for m in pool_of if not args.only or m.name in args.only]
    outcomes = run_mutations(chosen, args.jobs)
    print(format_mutations(outcomes))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([dataclasses.asdict(o) for o in outcomes],
                                                      indent=1))
    return 0 if all(o.killed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
