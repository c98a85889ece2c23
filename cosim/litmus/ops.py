"""The litmus operation registry: one table, name -> parse, run, thread kinds, doc line.

Every operation a thread can execute is one :class:`OpSpec` in :data:`OPS`.  The parser
dispatches on the operation's name (one word, or two for ``dev ld`` and ``wait walk``), checks
the thread kind and the register against the spec, and calls its ``parse``; the bench calls
its ``run``; ``docs/litmus.md``'s table of operations is :func:`doc_table` (a test keeps the
two equal).  Adding an operation is adding one entry here (a kernel operation's engine call
is a function in :mod:`cosim.litmus.kernel_ops`).

``parse(p, cur, dst)`` reads the rest of the line from ``cur`` (a
:class:`~cosim.litmus.syntax.Cursor` after the name) with the parser ``p``'s helpers and
returns ``(va, off, args)``.  ``run(r, th, op)`` executes ``op`` in run ``r``
(:class:`cosim.litmus.bench.Run`) for thread ``th``; it runs in the simulator only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from . import kernel_ops as K
from .model import CPU, DEV, OS, THREAD_KINDS
from .syntax import MAX_DELAY, flags_run

__all__ = ["OpSpec", "OPS", "CONTROL", "lookup", "names", "doc_table"]

ANY = THREAD_KINDS


@dataclass(frozen=True)
class OpSpec:
    """One operation of the litmus format.

    Attributes
    ----------
    name : str
        What a thread writes (``ld``, ``dev ld``, ``page_mkclean``); also ``Op.kind``.
    syntax : str
        The line as the documentation shows it.
    kinds : tuple of str
        Thread kinds that may execute it (``cpu``, ``os``, ``dev``).
    doc : str
        One line: what it does.
    parse : callable
        ``parse(p, cur, dst) -> (va, off, args)``.
    run : callable
        ``async run(r, th, op)``.
    result : str or None
        Kind of value it writes into ``REG =`` (``data``, ``pte``, ``status``, ``young``);
        None: it takes no register.
    body : callable, optional
        For a kernel operation: ``body(world, op) -> int``, the engine call run as a host
        thread (:mod:`cosim.litmus.kernel_ops`).
    """
    name: str
    syntax: str
    kinds: tuple
    doc: str
    parse: Callable
    run: Callable
    result: Optional[str] = None
    body: Optional[Callable] = None

    @property
    def kernel(self) -> bool:
        return self.body is not None


# --- parse helpers -------------------------------------------------------------------------------

def _none(p, cur, dst):
    return None, 0, {}


def _access(p, cur, dst):
    """``x[+off]``, then ``, V`` for a store, then ``retry`` for a cpu access."""
    va, off = p.va(cur)
    args = {}
    if p.spec.name in ("st", "dev st"):
        cur.expect(",", "between the address and the value")
        args["value"] = p.value(cur)
    if p.spec.kinds == (CPU,):
        args["retry"] = cur.accept("retry")
    return va, off, args


def _pte(p, cur, dst):
    va = cur.name("a virtual page name after 'pte'")
    if cur.accept(":="):
        p.no_dst(cur, dst, "pte :=")
        return va, 0, {"store": True, "new": p.pte_expr(cur)}
    if dst is None:
        cur.error("expected 'REG = pte x' (a load) or 'pte x := VALUE' (a store)")
    return va, 0, {"store": False}


def _atomic(p, cur, dst):
    word = p.spec.name
    cur.expect("pte", f"after {word!r} (atomics act on PTEs)")
    va = cur.name(f"a virtual page name after '{word} pte'")
    cur.expect(",", "after the PTE")
    if word == "xchg":
        return va, 0, {"new": p.pte_expr(cur)}
    if word == "cas":
        old = p.pte_expr(cur)
        cur.expect(",", "between the expected and the new PTE")
        return va, 0, {"old": old, "new": p.pte_expr(cur)}
    if word == "and":
        cur.expect("~", "before the flags an AND clears (and pte x, ~a)")
    return va, 0, {"bits": flags_run(cur, "PTE flag letters")}


def _inval(p, cur, dst):
    cores: tuple = ()
    if p.spec.name == "inv":
        if cur.at_name() and cur.at_name(1):
            cores = (p.target(cur, cur.name("a core or 'dev'")),)
        elif p.thread.kind == CPU:
            cores = (p.thread.core,)
        else:
            cur.error(f"expected a target core (inv C1 x) in {p.thread.kind} thread "
                      f"{p.thread.name!r}")
    if cur.accept("all"):
        return None, 0, {"cores": cores}
    return cur.name(f"a virtual page name or 'all' after {p.spec.name!r}"), 0, {"cores": cores}


def _set(p, cur, dst):
    flag = cur.name("a flag name after 'set'")
    cur.expect("=", "after the flag")
    return None, 0, {"flag": flag, "value": cur.integer("a value")}


def _wait(p, cur, dst):
    flag = cur.name("a flag name or 'walk' after 'wait'")
    cur.expect("==", "after the flag (wait F == 1)")
    return None, 0, {"flag": flag, "value": cur.integer("a value")}


_WALK_WHAT = ("read", "cas", "write", "any")


def _wait_walk(p, cur, dst):
    core = None
    if cur.at_name() and cur.at_name(1) and re.fullmatch(r"[Cc]\d+|dev", cur.peek()[1]):
        core = p.target(cur, cur.name("a core"))
        if core == "dev":
            cur.error("expected a core for 'wait walk': the device has no walker")
    va = cur.name("a virtual page name after 'wait walk'")
    what = "read"
    if not cur.done():
        what = cur.name("'read', 'cas', 'write' or 'any' after the page")
        if what not in _WALK_WHAT:
            cur.error(f"expected 'read', 'cas', 'write' or 'any' after the page, found "
                      f"{what!r}")
    return va, 0, {"core": core, "what": what}


def _delay(p, cur, dst):
    return None, 0, {"cycles": cur.integer("a number of cycles after 'delay'", 0, MAX_DELAY)}


def _lock(p, cur, dst):
    return None, 0, {"lock": cur.name(f"a lock name after {p.spec.name!r}")}


def _flag_ld(p, cur, dst):
    return None, 0, {"flag": cur.name("a flag name after 'flag'")}


def _mem(p, cur, dst):
    page = cur.name("a physical page or flag name after 'mem'")
    if page not in p.test.init.flags:
        p.page(page)
    off = cur.offset()
    if cur.accept(":="):
        p.no_dst(cur, dst, "mem :=")
        return None, 0, {"page": page, "off": off, "store": True, "value": p.value(cur)}
    if dst is None:
        cur.error("expected 'REG = mem P' (a load) or 'mem P := VALUE' (a store)")
    return None, 0, {"page": page, "off": off, "store": False}


def _dev_page(p, cur, dst):
    va, off = p.va(cur)
    return va, off, {}


def _dev_install(p, cur, dst):
    va = cur.name("a virtual page name after 'dev install'")
    cur.expect(",", "between the page and the PTE value to install")
    return va, 0, {"pte": p.pte_expr(cur)}


def _k_page(p, cur, dst):
    return cur.name(f"a virtual page name after {p.spec.name!r}"), 0, {}


def _k_two(p, cur, dst):
    va = cur.name(f"a virtual page name after {p.spec.name!r}")
    cur.expect(",", f"between the two pages of {p.spec.name!r}")
    return va, 0, {"to": p.mapped(cur.name("a second virtual page name"), cur)}


# --- run helpers (simulator only) ---------------------------------------------------------------

async def _clock(r, cycles: int = 1) -> None:
    from cocotb.triggers import ClockCycles
    await ClockCycles(r.dut.clk, cycles)


def _who(th, op) -> str:
    return f"{th.name}:{op.line}"


async def _run_access(r, th, op):
    await r.cpu_access(th, op)


async def _run_sync(r, th, op):
    await _clock(r)


async def _run_pte(r, th, op):
    ptep = r.lay.ptep(op.va)
    if op.args["store"]:
        r.mem_port.sw_store(ptep, r.pte_expr(op.args["new"]), _who(th, op))
    else:
        r.regs[op.dst] = r.mem_port.sw_read(ptep, _who(th, op))


async def _run_xchg(r, th, op):
    old = r.mem_port.sw_xchg(r.lay.ptep(op.va), r.pte_expr(op.args["new"]), _who(th, op))
    r.put(op, old)


async def _run_cas(r, th, op):
    old = r.mem_port.sw_cas(r.lay.ptep(op.va), r.pte_expr(op.args["old"]),
                            r.pte_expr(op.args["new"]), _who(th, op))
    r.put(op, old)


async def _run_and_or(r, th, op):
    # Atomic AND / OR: a read and a compare-and-swap with no await in between.
    ptep = r.lay.ptep(op.va)
    cur = r.mem_port.sw_read(ptep, _who(th, op))
    new = cur & ~op.args["bits"] if op.kind == "and" else cur | op.args["bits"]
    r.mem_port.sw_cas(ptep, cur, new, _who(th, op))
    r.put(op, cur)


async def _run_inv(r, th, op):
    await r.invalidate(op.args["cores"], op.va)


async def _run_shoot(r, th, op):
    await r.invalidate(list(range(r.b.ncores)) + ["dev"], op.va)


async def _run_set(r, th, op):
    r.mem_port.sw_store(r.lay.flags[op.args["flag"]], op.args["value"], _who(th, op))


async def _run_wait(r, th, op):
    await r.wait_flag(op.args["flag"], op.args["value"])


async def _run_wait_walk(r, th, op):
    await r.wait_walk(op.va, op.args["core"], op.args["what"])


async def _run_delay(r, th, op):
    if op.args["cycles"]:
        await _clock(r, op.args["cycles"])


async def _run_lock(r, th, op):
    await r.lock(op.args["lock"])


async def _run_unlock(r, th, op):
    r.unlock(op.args["lock"])


async def _run_flag_ld(r, th, op):
    r.regs[op.dst] = r.mem_port.sw_read(r.lay.flags[op.args["flag"]], _who(th, op))


async def _run_mem(r, th, op):
    addr = r.lay.addr_of(op.args["page"], op.args["off"])
    if op.args["store"]:
        r.mem_port.sw_store(addr, r.value(op.args["value"]), _who(th, op))
    else:
        r.regs[op.dst] = r.mem_port.sw_read(addr, _who(th, op))


async def _run_dev_access(r, th, op):
    await r.dev_access(op)


async def _run_dev_fill(r, th, op):
    await r.dev_fill(op.va)


async def _run_dev_young(r, th, op):
    r.put(op, await r.dev_young(op.va))


async def _run_dev_install(r, th, op):
    await r.dev_install(op.va, r.pte_expr(op.args["pte"]))


async def _run_kernel(r, th, op):
    await r.kernel_op(th, op, lookup(op.kind).body)


def _kernel(name: str, doc: str, body, parse=_k_page, result: str = "data",
            syntax: str = "") -> OpSpec:
    return OpSpec(name, syntax or f"[r =] {name} x", ANY, doc, parse, _run_kernel, result,
                  body)


# --- the table ---------------------------------------------------------------------------------

OPS: tuple = (
    OpSpec("ld", "r = ld x[+off] [retry]", (CPU,),
           "load through the core's TLB/walker; `r` gets the word or a fault",
           _access, _run_access, "data"),
    OpSpec("st", "[s =] st x[+off], V [retry]", (CPU,),
           "store (`V` an integer or a register); `s` = 0 or a fault.  `retry`: on a page "
           "fault run the kernel's `do_page_fault`, then retry (up to 4 times)",
           _access, _run_access, "status"),
    OpSpec("fence", "fence", ANY,
           "full fence: one cycle (the cores are in order and block on every access)",
           _none, _run_sync),
    OpSpec("csync", "csync", ANY, "context sync: one cycle (as `fence`)", _none, _run_sync),
    OpSpec("pte", "p = pte x / pte x := PTE", ANY, "plain load / plain store of the leaf PTE",
           _pte, _run_pte, "pte"),
    OpSpec("xchg", "[p =] xchg pte x, PTE", ANY, "atomic exchange (returns the old PTE)",
           _atomic, _run_xchg, "pte"),
    OpSpec("cas", "[p =] cas pte x, PTE, PTE", ANY, "compare-and-swap (returns the value found)",
           _atomic, _run_cas, "pte"),
    OpSpec("and", "[p =] and pte x, ~FLAGS", ANY, "atomic AND: clears the flag bits (returns "
           "the old PTE)", _atomic, _run_and_or, "pte"),
    OpSpec("or", "[p =] or pte x, FLAGS", ANY, "atomic OR: sets the flag bits (returns the "
           "old PTE)", _atomic, _run_and_or, "pte"),
    OpSpec("inv", "inv x / inv C1 x / inv dev x / inv C0 all", ANY,
           "local invalidation (a cpu thread's own core by default), waits for the ack",
           _inval, _run_inv),
    OpSpec("shoot", "shoot x / shoot all", ANY,
           "invalidate on every core and the device at once, wait for every ack",
           _inval, _run_shoot),
    OpSpec("set", "set F = V", ANY, "write software flag `F`", _set, _run_set),
    OpSpec("wait", "wait F == V", ANY, "wait until flag `F` holds `V`", _wait, _run_wait),
    OpSpec("wait walk", "wait walk [C0] x [read|cas|write|any]", ANY,
           "resume in the very cycle a walker's read (default), A/D compare-and-swap or write "
           "of PTE(x) is performed (cycle-precise races: a change and an invalidation that "
           "land inside a walk)", _wait_walk, _run_wait_walk),
    OpSpec("flag", "r = flag F", ANY, "read software flag `F`", _flag_ld, _run_flag_ld,
           "data"),
    OpSpec("mem", "r = mem A[+off] / mem A[+off] := V", ANY,
           "physical memory words (e.g. a snapshot, or reuse of a freed page)",
           _mem, _run_mem, "data"),
    OpSpec("lock", "lock L", ANY, "take software lock `L` (e.g. the PTE lock)",
           _lock, _run_lock),
    OpSpec("unlock", "unlock L", ANY, "release software lock `L`", _lock, _run_unlock),
    OpSpec("delay", "delay N", ANY, f"N cycles (0..{MAX_DELAY})", _delay, _run_delay),
    OpSpec("dev ld", "r = dev ld x[+off]", (DEV,),
           "a load through the DeviceMmu (a miss answers `fault:miss`, its record is "
           "acknowledged)", _access, _run_dev_access, "data"),
    OpSpec("dev st", "[s =] dev st x[+off], V", (DEV,), "a store through the DeviceMmu",
           _access, _run_dev_access, "status"),
    OpSpec("dev young", "r = dev young x", (DEV,),
           "test-and-clear the device entry's young bit", _dev_page, _run_dev_young, "young"),
    OpSpec("dev fill", "dev fill x", ANY,
           "the device driver installs PTE(x) as read now (nothing if not present)",
           _dev_page, _run_dev_fill),
    OpSpec("dev install", "dev install x, PTE", ANY,
           "the device driver installs a given PTE as x's translation (nothing if not "
           "present)", _dev_install, _run_dev_install),
    # Kernel operations: pyrmap's engine on the RTL (cosim.litmus.kernel_ops).
    _kernel("ptep_clear_flush", "atomically clear PTE(x) and flush every TLB; returns the old "
            "PTE", K.ptep_clear_flush, result="pte"),
    _kernel("ptep_clear_flush_young", "test-and-clear PTE(x)'s A bit, flush if it was set; "
            "returns it", K.ptep_clear_flush_young),
    _kernel("ptep_test_and_clear_young", "test-and-clear PTE(x)'s A bit, no flush; returns it",
            K.ptep_test_and_clear_young),
    _kernel("ptep_set_wrprotect", "atomically clear PTE(x)'s W bit (no flush)",
            K.ptep_set_wrprotect),
    _kernel("flush_tlb_page", "flush x from every core that may cache the mm",
            K.flush_tlb_page),
    _kernel("page_mkclean", "write-protect and clean every PTE of x's page; returns how many "
            "were dirty", K.page_mkclean),
    _kernel("try_to_unmap", "unmap x's page everywhere (SWAP_SUCCESS=0, AGAIN=1, FAIL=2)",
            K.try_to_unmap),
    _kernel("page_referenced", "age x's page: how many PTEs were young", K.page_referenced),
    _kernel("migrate", "migrate x's page to a new frame (`migrate_pages`; 0 on success)",
            K.migrate),
    _kernel("mprotect_ro", "mprotect(x, PROT_READ)", K.mprotect_ro),
    _kernel("mprotect_rw", "mprotect(x, PROT_READ|PROT_WRITE)", K.mprotect_rw),
    _kernel("mprotect_none", "mprotect(x, PROT_NONE)", K.mprotect_none),
    _kernel("munmap", "munmap(x, one page)", K.munmap),
    _kernel("mremap", "mremap x's page to y's address (MREMAP_MAYMOVE|MREMAP_FIXED: y is "
            "unmapped first); 0 or -errno", K.mremap, parse=_k_two,
            syntax="[r =] mremap x, y"),
    _kernel("madvise", "madvise(x, one page, MADV_DONTNEED); 0 or -errno", K.madvise),
    _kernel("truncate", "truncate the file where x's page begins (`vmtruncate`: x's page and "
            "every later one are unmapped and dropped); returns the pages dropped",
            K.truncate),
    _kernel("msync", "msync(x, one page, MS_SYNC): write back with `page_mkclean`; 0 or "
            "-errno", K.msync),
    _kernel("mlock", "mlock(x, one page): VM_LOCKED, reclaim leaves it mapped; 0 or -errno",
            K.mlock),
    _kernel("munlock", "munlock(x, one page); 0 or -errno", K.munlock),
    _kernel("remap_file_pages", "remap_file_pages: x maps the file page y maps (the mapping "
            "becomes nonlinear); 0 or -errno", K.remap_file_pages, parse=_k_two,
            syntax="[r =] remap_file_pages x, y"),
    _kernel("fork", "fork: a child mm copies every mapping (COW ones write-protected in both, "
            "the parent's TLBs flushed); 0", K.fork, parse=_none, syntax="[r =] fork"),
    _kernel("exit", "exit of the child the last `fork` made (`exit_mmap`); 0", K.exit_child,
            parse=_none, syntax="[r =] exit"),
    _kernel("invalidate_range_start", "mmu_notifier_invalidate_range_start over x",
            K.invalidate_range_start),
    _kernel("invalidate_range_end", "mmu_notifier_invalidate_range_end over x",
            K.invalidate_range_end),
)

#: Statements the parser handles itself (control flow), for the documentation.
CONTROL: tuple = (
    ("label:", "a label of the thread"),
    ("goto label", "jump to a label of the same thread (a loop lets one cycle pass)"),
    ("if COND: OP", "`OP` when `COND` (as in conditions) holds on the live state"),
    ("repeat N: OP", "N copies of `OP` (N up to the bound below), `$i` = 1..N in the copy"),
)

_BY_NAME = {spec.name: spec for spec in OPS}
if len(_BY_NAME) != len(OPS):       # pragma: no cover - a table error
    raise RuntimeError("litmus operation names must be unique")


def lookup(name: str) -> Optional[OpSpec]:
    """The spec of operation ``name`` (one or two words), or None."""
    return _BY_NAME.get(name)


def names(full: bool = False) -> list[str]:
    """The first words of every operation and statement (``full``: every operation's whole
    name), for error messages."""
    if full:
        return [s.name for s in OPS]
    out: list[str] = []
    for n in [s.name.split()[0] for s in OPS] + ["goto", "if", "repeat"]:
        if n not in out:
            out.append(n)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _kinds(spec: OpSpec) -> str:
    return "any" if spec.kinds == ANY else ", ".join(spec.kinds)


def doc_table() -> str:
    """The operations table of ``docs/litmus.md`` (markdown)."""
    rows = ["| operation | threads | meaning |", "|---|---|---|"]
    for spec in OPS:
        if not spec.kernel:
            rows.append(f"| `{_cell(spec.syntax)}` | {_kinds(spec)} | {_cell(spec.doc)} |")
    for syntax, doc in CONTROL:
        rows.append(f"| `{_cell(syntax)}` | any | {_cell(doc)} |")
    return "\n".join(rows)


def kernel_doc_table() -> str:
    """The kernel operations table of ``docs/litmus.md`` (markdown)."""
    rows = ["| kernel operation | meaning |", "|---|---|"]
    for spec in OPS:
        if spec.kernel:
            rows.append(f"| `{_cell(spec.syntax)}` | {_cell(spec.doc)} |")
    return "\n".join(rows)


def bounds_doc_table() -> str:
    """The bounds every litmus file is checked against (markdown)."""
    from .syntax import BOUNDS
    rows = ["| bound | value | why |", "|---|---|---|"]
    for what, value, why in BOUNDS:
        rows.append(f"| {what} | {value} | {why} |")
    return "\n".join(rows)
