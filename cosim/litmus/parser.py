"""The litmus text format (docs/litmus.md) -> :class:`cosim.litmus.model.LitmusTest`.

Errors are :class:`LitmusSyntaxError` naming the file, the line and what was expected::

    litmus/bad.litmus:7: expected a virtual page name after 'ld', found '42'

The format is line-oriented.  Section keywords start a line (``litmus``, ``doc``, ``config``,
``option``, ``init``, ``thread``, and the verdicts ``forbidden``, ``allowed``, ``observable``,
``required``); the lines that follow an ``init`` or ``thread`` header belong to it.  ``#``
starts a comment; ``;`` separates operations on one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .model import (CPU, DEV, OS, PTE_BITS, Condition, Expr, Init, LitmusTest, Op, PteExpr,
                    PteSpec, Thread, Verdict, Warm)

__all__ = ["LitmusSyntaxError", "parse", "parse_file", "OP_KINDS", "KERNEL_OPS",
           "PTE_FIELDS"]

#: Every operation kind the bench executes.
OP_KINDS = ("ld", "st", "fence", "csync", "pte_ld", "pte_st", "pte_xchg", "pte_cas", "pte_and",
            "pte_or", "inv", "shoot", "set", "wait", "wait_walk", "delay", "dev_ld", "dev_st",
            "dev_fill", "dev_young", "dev_install", "kernel", "label", "goto", "if", "lock",
            "unlock", "flag_ld", "mem_ld", "mem_st")

#: Kernel operations (run by pyrmap's engine on the RTL) and the registers they may write.
KERNEL_OPS = ("ptep_clear_flush", "ptep_clear_flush_young", "ptep_set_wrprotect",
              "ptep_test_and_clear_young", "flush_tlb_page", "page_mkclean", "try_to_unmap",
              "page_referenced", "migrate", "mprotect_ro", "mprotect_rw", "mprotect_none",
              "munmap", "invalidate_range_start", "invalidate_range_end")

#: Fields of a PTE value usable in conditions (``p.d``, ``pte(x).ppn``).
PTE_FIELDS = ("v", "r", "w", "x", "u", "g", "a", "d", "ppn", "value")

SECTION = ("litmus", "doc", "config", "option", "init", "thread", "forbidden", "allowed",
           "observable", "required")

_TOKEN = re.compile(r"\s*(?:(0x[0-9a-fA-F_]+|\d+)|([A-Za-z_][A-Za-z0-9_]*)|"
                    r"(:=|==|!=|<=|>=|&&|\|\||->|[{}()\[\],+\-~=!<>.:$*]))")


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


class _Cursor:
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

    def integer(self, what: str) -> int:
        neg = self.accept("-")
        t = self.peek()
        if t is None or t[0] != "int":
            self.error(f"expected {what}, found {self.found()}")
        self.i += 1
        v = int(t[1].replace("_", ""), 0)
        return -v if neg else v

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def end(self, what: str = "") -> None:
        if not self.done():
            self.error(f"expected the end of the line{' after ' + what if what else ''}, "
                       f"found {self.found()}")


def _flag_bits(cur: _Cursor, word: str) -> int:
    bits = 0
    for ch in word:
        if ch not in PTE_BITS:
            cur.error(f"expected PTE flag letters from 'vrwxugad', found {word!r}")
        bits |= PTE_BITS[ch]
    return bits


def _flags_run(cur: _Cursor, what: str) -> int:
    """One or more flag-letter words (``vrw ad``) up to a non-name token."""
    bits = 0
    first = True
    while cur.peek() is not None and cur.peek()[0] == "name":
        bits |= _flag_bits(cur, cur.name(what))
        first = False
    if first:
        cur.error(f"expected {what}, found {cur.found()}")
    return bits


class _Parser:
    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        self.test = LitmusTest(name="", path=path, config={}, options={}, init=Init(),
                               threads=[], conditions=[], registers={}, doc="")
        self.section: Optional[str] = None
        self.thread: Optional[Thread] = None

    def err(self, line: int, message: str):
        raise LitmusSyntaxError(self.path, line, message)

    # --- top level ---------------------------------------------------------------------------

    def parse(self) -> LitmusTest:
        for n, raw in enumerate(self.text.splitlines(), 1):
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            word = line.split(None, 1)[0].rstrip(":")
            if not line[0].isspace() and word in SECTION:
                self._section(word, line.strip(), n)
            elif self.section == "init":
                self._init_line(line.strip(), n)
            elif self.section == "thread":
                for part in line.split(";"):
                    if part.strip():
                        self._op_line(part.strip(), n)
            elif self.section == "doc":
                self.test.doc += " " + line.strip()
            else:
                self.err(n, f"expected a section keyword ({', '.join(SECTION)}), found "
                            f"{word!r}")
        t = self.test
        if not t.name:
            self.err(1, "expected 'litmus NAME' before the end of the file")
        if not t.threads:
            self.err(len(self.text.splitlines()) or 1, "expected at least one 'thread'")
        if not t.conditions:
            self.err(len(self.text.splitlines()) or 1, "expected at least one condition "
                     "(forbidden:, allowed:, observable: or required:)")
        self._check_names()
        return t

    def _section(self, word: str, line: str, n: int) -> None:
        cur = _Cursor(line, self.path, n)
        cur.name("a section keyword")
        cur.accept(":")
        t = self.test
        if word != "litmus" and not t.name:
            self.err(n, f"expected 'litmus NAME' as the first line, found {word!r}")
        self.section = word
        if word == "litmus":
            if t.name:
                self.err(n, "expected one 'litmus' line per file, found a second one")
            t.name = cur.name("a test name after 'litmus'")
            while cur.accept("."):
                t.name += "." + cur.name("a name part")
            cur.end("the test name")
        elif word == "doc":
            t.doc = line.split(None, 1)[1].lstrip(":").strip() if " " in line else ""
        elif word in ("config", "option"):
            target = t.config if word == "config" else t.options
            while not cur.done():
                key = cur.name(f"a {word} name (key=value)")
                cur.expect("=", f"after {word} name {key!r}")
                t_ = cur.peek()
                if t_ is not None and t_[0] == "name":
                    cur.i += 1
                    val = {"true": True, "false": False}.get(t_[1].lower(), t_[1])
                else:
                    val = cur.integer(f"a value for {key!r}")
                if word == "config" and key in ("svadu",) or key.startswith("quirk_"):
                    val = bool(val)
                target[key] = val
        elif word == "init":
            cur.end("'init'")
        elif word == "thread":
            self._thread(cur, n)
        else:
            text = line.split(None, 1)[1] if " " in line else ""
            text = text[1:].strip() if text.startswith(":") else text.strip()
            if not text:
                self.err(n, f"expected a condition after {word!r}")
            expr = _ExprParser(_Cursor(text, self.path, n)).parse()
            t.conditions.append(Condition(Verdict(word), expr, text, n))
            self.section = "cond"

    def _thread(self, cur: _Cursor, n: int) -> None:
        name = cur.name("a thread name after 'thread'")
        if any(th.name == name for th in self.test.threads):
            self.err(n, f"expected a new thread name, found {name!r} a second time")
        kind, core = None, None
        if cur.accept("cpu"):
            kind, core = CPU, cur.integer("a core number after 'cpu'")
        elif cur.accept("os"):
            kind = OS
        elif cur.accept("dev"):
            kind = DEV
        elif not cur.done():
            self.err(n, f"expected 'cpu N', 'os' or 'dev' after the thread name, found "
                        f"{cur.found()}")
        else:
            mo = re.fullmatch(r"[Cc](?:PU|pu)?(\d+)", name)
            if mo:
                kind, core = CPU, int(mo.group(1))
            elif name.lower().startswith("os"):
                kind = OS
            elif name.lower().startswith("dev"):
                kind = DEV
            else:
                self.err(n, f"expected 'cpu N', 'os' or 'dev' after thread {name!r} (the "
                            f"kind is inferred only from names like C0, OS, Dev)")
        cur.end("the thread kind")
        if core is not None:
            if core < 0:
                self.err(n, f"expected a core number >= 0, found {core}")
            if any(th.kind == CPU and th.core == core for th in self.test.threads):
                self.err(n, f"expected one cpu thread per core, found a second on core {core}")
        self.thread = Thread(name, kind, core, [], n)
        self.test.threads.append(self.thread)

    # --- init ------------------------------------------------------------------------------

    def _page(self, name: str) -> str:
        if name not in self.test.init.pages:
            self.test.init.pages.append(name)
        return name

    def _init_line(self, line: str, n: int) -> None:
        cur = _Cursor(line, self.path, n)
        init = self.test.init
        word = cur.name("'map', 'mem', 'flag' or 'warm'")
        if word == "map":
            va = cur.name("a virtual page name after 'map'")
            if va in init.maps:
                self.err(n, f"expected each virtual page mapped once, found {va!r} again")
            cur.expect("->", f"after 'map {va}'")
            if cur.accept("invalid"):
                spec = PteSpec(None, 0)
            else:
                page = cur.name("a physical page name (or 'invalid') after '->'")
                bits = (PTE_BITS["v"] | PTE_BITS["r"] | PTE_BITS["w"] | PTE_BITS["a"]
                        | PTE_BITS["d"]) if cur.done() else _flags_run(cur, "PTE flag letters")
                spec = PteSpec(self._page(page), bits)
            cur.end("the mapping")
            init.maps[va] = spec
        elif word == "mem":
            page = self._page(cur.name("a physical page name after 'mem'"))
            off = cur.integer("a byte offset after '+'") if cur.accept("+") else 0
            if off % 8 or not 0 <= off < 4096:
                self.err(n, f"expected an 8-byte aligned offset in the page, found {off}")
            cur.expect("=", "after the memory location")
            init.mem[(page, off)] = cur.integer("an integer value")
            cur.end("the value")
        elif word == "flag":
            name = cur.name("a flag name after 'flag'")
            init.flags[name] = cur.integer("an initial value") if cur.accept("=") else 0
            cur.end("the flag")
        elif word == "warm":
            target = cur.name("a core (C0, C1, ...) or 'dev' after 'warm'")
            tgt = self._target(cur, target)
            va = cur.name("a virtual page name after the warm target")
            store = False
            if cur.accept("store"):
                store = True
            else:
                cur.accept("load")
            cur.end("the warm entry")
            init.warm.append(Warm(tgt, va, store, n))
        else:
            self.err(n, f"expected 'map', 'mem', 'flag' or 'warm' in init, found {word!r}")

    def _target(self, cur: _Cursor, word: str):
        if word == "dev":
            return "dev"
        mo = re.fullmatch(r"[Cc](\d+)", word)
        if mo is None:
            cur.error(f"expected a core (C0, C1, ...) or 'dev', found {word!r}")
        return int(mo.group(1))

    # --- thread operations -----------------------------------------------------------------

    def _op_line(self, line: str, n: int) -> None:
        if self.thread is None:
            self.err(n, "expected a 'thread' header before operations")
        mo = re.match(r"repeat\s+(\d+)\s*:\s*(.+)$", line)
        if mo:
            count = int(mo.group(1))
            if count < 1:
                self.err(n, "expected a repeat count >= 1")
            for i in range(1, count + 1):
                self._op_line(mo.group(2).replace("$i", str(i)), n)
            return
        if "$i" in line:
            self.err(n, "expected '$i' only inside 'repeat N: ...'")
        op = self._one_op(line, n)
        self.thread.ops.append(op)

    def _one_op(self, line: str, n: int) -> Op:
        mo = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*:", line)
        if mo:
            if any(o.kind == "label" and o.args["name"] == mo.group(1) for o in self.thread.ops):
                self.err(n, f"expected a new label, found {mo.group(1)!r} a second time")
            return Op("label", n, args={"name": mo.group(1)}, text=line)
        mo = re.match(r"if\s+([^:]+):\s*(.*)$", line)
        if mo:
            if not mo.group(2).strip():
                self.err(n, "expected an operation after 'if CONDITION:'")
            cond = _ExprParser(_Cursor(mo.group(1), self.path, n)).parse()
            then = self._one_op(mo.group(2).strip(), n)
            if then.kind in ("label", "if"):
                self.err(n, f"expected a plain operation after 'if ...:', found {then.kind!r}")
            return Op("if", n, args={"cond": cond, "then": then}, text=line)
        cur = _Cursor(line, self.path, n)
        dst = None
        if cur.peek(1) is not None and cur.peek(1)[1] == "=" and cur.peek()[0] == "name" \
                and not cur.at("set"):
            dst = cur.name("a register")
            cur.expect("=")
        op = self._op(cur, dst, n)
        op.text = line
        cur.end(f"'{op.kind}'")
        if dst is not None:
            kind = {"ld": "data", "dev_ld": "data", "st": "status", "dev_st": "status",
                    "dev_young": "young", "kernel": "data", "flag_ld": "data",
                    "mem_ld": "data"}.get(op.kind, "pte")
            if op.kind == "kernel" and op.args["fn"] in ("ptep_clear_flush",):
                kind = "pte"
            prev = self.test.registers.get(dst)
            if prev is not None and prev != kind:
                self.err(n, f"expected register {dst!r} to hold one kind of value, found it "
                            f"used for {prev} and {kind}")
            self.test.registers[dst] = kind
        return op

    def _va(self, cur: _Cursor, after: str) -> tuple[str, int]:
        va = cur.name(f"a virtual page name after {after!r}")
        off = 0
        if cur.accept("+"):
            off = cur.integer("a byte offset")
            if off % 8 or not 0 <= off < 4096:
                cur.error(f"expected an 8-byte aligned offset in the page, found {off}")
        return va, off

    def _value(self, cur: _Cursor) -> object:
        t = cur.peek()
        if t is not None and t[0] == "name":
            cur.i += 1
            return t[1]
        return cur.integer("a value (integer or register)")

    def _pte_expr(self, cur: _Cursor) -> PteExpr:
        if cur.accept("invalid"):
            base = 0
        elif cur.accept("{"):
            page = None
            if not cur.accept("-"):
                page = self._page(cur.name("a physical page name (or '-') in '{...}'"))
            bits = 0
            while not cur.accept("}"):
                if cur.done():
                    cur.error("expected '}' to close the PTE literal")
                bits |= _flag_bits(cur, cur.name("PTE flag letters or '}'"))
            base = PteSpec(page, bits)
        elif cur.peek() is not None and cur.peek()[0] == "int":
            base = cur.integer("a PTE value")
        else:
            base = cur.name("a PTE value ('invalid', '{PAGE flags}', an integer or a register)")
        set_bits = clear_bits = 0
        while cur.at("+") or cur.at("-"):
            sign = cur.peek()[1]
            cur.i += 1
            bits = _flag_bits(cur, cur.name(f"PTE flag letters after {sign!r}"))
            if sign == "+":
                set_bits |= bits
            else:
                clear_bits |= bits
        return PteExpr(base, set_bits, clear_bits)

    def _needs(self, cur: _Cursor, kinds: tuple, what: str) -> None:
        if self.thread.kind not in kinds:
            cur.error(f"expected {what} only in {' or '.join(kinds)} threads, found it in "
                      f"{self.thread.kind} thread {self.thread.name!r}")

    def _op(self, cur: _Cursor, dst: Optional[str], n: int) -> Op:
        word = cur.name("an operation")
        if word == "ld":
            self._needs(cur, (CPU,), "'ld'")
            va, off = self._va(cur, "ld")
            return Op("ld", n, dst, va, off, {"retry": cur.accept("retry")})
        if word == "st":
            self._needs(cur, (CPU,), "'st'")
            va, off = self._va(cur, "st")
            cur.expect(",", "between the address and the value")
            return Op("st", n, dst, va, off, {"value": self._value(cur),
                                              "retry": cur.accept("retry")})
        if word in ("fence", "csync"):
            self._no_dst(cur, dst, word)
            return Op(word, n)
        if word == "pte":
            va = cur.name("a virtual page name after 'pte'")
            if cur.accept(":="):
                self._no_dst(cur, dst, "pte :=")
                return Op("pte_st", n, None, va, 0, {"new": self._pte_expr(cur)})
            if dst is None:
                cur.error("expected 'REG = pte x' (a load) or 'pte x := VALUE' (a store)")
            return Op("pte_ld", n, dst, va)
        if word in ("xchg", "cas", "and", "or"):
            cur.expect("pte", f"after {word!r} (atomics act on PTEs)")
            va = cur.name(f"a virtual page name after '{word} pte'")
            cur.expect(",", "after the PTE")
            if word == "xchg":
                return Op("pte_xchg", n, dst, va, 0, {"new": self._pte_expr(cur)})
            if word == "cas":
                old = self._pte_expr(cur)
                cur.expect(",", "between the expected and the new PTE")
                return Op("pte_cas", n, dst, va, 0, {"old": old, "new": self._pte_expr(cur)})
            if word == "and":
                cur.expect("~", "before the flags an AND clears (and pte x, ~a)")
                return Op("pte_and", n, dst, va, 0, {"bits": _flags_run(cur, "PTE flag letters")})
            return Op("pte_or", n, dst, va, 0, {"bits": _flags_run(cur, "PTE flag letters")})
        if word in ("inv", "shoot"):
            self._no_dst(cur, dst, word)
            cores: tuple = ()
            if word == "inv":
                t = cur.peek(1)
                if t is not None and t[0] == "name" and cur.peek()[0] == "name":
                    cores = (self._target(cur, cur.name("a core or 'dev'")),)
                elif self.thread.kind == CPU:
                    cores = (self.thread.core,)
                else:
                    cur.error(f"expected a target core (inv C1 x) in {self.thread.kind} "
                              f"thread {self.thread.name!r}")
            if cur.accept("all"):
                return Op(word, n, None, None, 0, {"cores": cores})
            va = cur.name(f"a virtual page name or 'all' after {word!r}")
            return Op(word, n, None, va, 0, {"cores": cores})
        if word == "set":
            flag = cur.name("a flag name after 'set'")
            cur.expect("=", "after the flag")
            return Op("set", n, None, None, 0, {"flag": flag, "value": cur.integer("a value")})
        if word == "wait":
            self._no_dst(cur, dst, "wait")
            if cur.accept("walk"):
                core = None
                t = cur.peek()
                if t is not None and re.fullmatch(r"[Cc]\d+|dev", t[1]) \
                        and cur.peek(1) is not None:
                    core = self._target(cur, cur.name("a core"))
                va = cur.name("a virtual page name after 'wait walk'")
                what = "read"
                if not cur.done():
                    what = cur.name("'read', 'cas', 'write' or 'any' after the page")
                    if what not in ("read", "cas", "write", "any"):
                        cur.error(f"expected 'read', 'cas', 'write' or 'any' after the page, "
                                  f"found {what!r}")
                return Op("wait_walk", n, None, va, 0, {"core": core, "what": what})
            flag = cur.name("a flag name or 'walk' after 'wait'")
            cur.expect("==", "after the flag (wait F == 1)")
            return Op("wait", n, None, None, 0, {"flag": flag, "value": cur.integer("a value")})
        if word == "delay":
            self._no_dst(cur, dst, "delay")
            c = cur.integer("a number of cycles after 'delay'")
            if c < 0:
                cur.error("expected a number of cycles >= 0")
            return Op("delay", n, None, None, 0, {"cycles": c})
        if word == "dev":
            sub_ = cur.peek()
            if sub_ is not None and sub_[1] in ("ld", "st", "young"):
                self._needs(cur, (DEV,), "'dev' accesses")
            sub = cur.name("'ld', 'st', 'fill', 'install' or 'young' after 'dev'")
            if sub not in ("ld", "st", "fill", "young", "install"):
                cur.error(f"expected 'ld', 'st', 'fill', 'install' or 'young' after 'dev', "
                          f"found {sub!r}")
            va, off = self._va(cur, f"dev {sub}")
            if sub == "install":
                self._no_dst(cur, dst, "dev install")
                cur.expect(",", "between the page and the PTE value to install")
                return Op("dev_install", n, None, va, 0, {"pte": self._pte_expr(cur)})
            args = {}
            if sub == "st":
                cur.expect(",", "between the address and the value")
                args["value"] = self._value(cur)
            if sub == "young" and dst is None:
                cur.error("expected 'REG = dev young x'")
            if sub == "fill":
                self._no_dst(cur, dst, "dev fill")
            return Op(f"dev_{sub}", n, dst, va, off, args)
        if word == "goto":
            self._no_dst(cur, dst, "goto")
            return Op("goto", n, args={"label": cur.name("a label after 'goto'")})
        if word in ("lock", "unlock"):
            self._no_dst(cur, dst, word)
            return Op(word, n, args={"lock": cur.name(f"a lock name after {word!r}")})
        if word == "flag":
            if dst is None:
                cur.error("expected 'REG = flag F' (use 'set F = V' to write a flag)")
            return Op("flag_ld", n, dst, args={"flag": cur.name("a flag name after 'flag'")})
        if word == "mem":
            page = cur.name("a physical page or flag name after 'mem'")
            if page not in self.test.init.flags:
                self._page(page)
            off = cur.integer("a byte offset") if cur.accept("+") else 0
            if off % 8 or not 0 <= off < 4096:
                cur.error(f"expected an 8-byte aligned offset in the page, found {off}")
            if cur.accept(":="):
                self._no_dst(cur, dst, "mem :=")
                return Op("mem_st", n, args={"page": page, "off": off,
                                             "value": self._value(cur)})
            if dst is None:
                cur.error("expected 'REG = mem P' (a load) or 'mem P := VALUE' (a store)")
            return Op("mem_ld", n, dst, args={"page": page, "off": off})
        if word in KERNEL_OPS:
            va = cur.name(f"a virtual page name after {word!r}")
            return Op("kernel", n, dst, va, 0, {"fn": word})
        cur.error(f"expected an operation (ld, st, fence, csync, pte, xchg, cas, and, or, inv, "
                  f"shoot, set, wait, delay, dev, flag, mem, lock, unlock, goto, if, repeat, "
                  f"{', '.join(KERNEL_OPS)}), found {word!r}")

    def _no_dst(self, cur: _Cursor, dst, what: str) -> None:
        if dst is not None:
            cur.error(f"expected no register before {what!r}: it produces no value")

    # --- whole-file checks -----------------------------------------------------------------

    def _check_names(self) -> None:
        t = self.test
        init = t.init
        for th in t.threads:
            labels = {o.args["name"] for o in th.ops if o.kind == "label"}
            ops = list(th.ops) + [o.args["then"] for o in th.ops if o.kind == "if"]
            for op in ops:
                if op.kind == "goto" and op.args["label"] not in labels:
                    self.err(op.line, f"expected a label of thread {th.name!r}, found "
                                      f"{op.args['label']!r}")
                if op.kind == "if":
                    self._check_expr(op.args["cond"], op.line)
                if op.kind == "flag_ld" and op.args["flag"] not in init.flags:
                    self.err(op.line, f"expected a flag declared with 'flag', found "
                                      f"{op.args['flag']!r}")
                if op.kind in ("mem_ld", "mem_st") and op.args["page"] in init.flags:
                    pass
                if op.va is not None and op.va not in init.maps:
                    self.err(op.line, f"expected a virtual page declared with 'map', found "
                                      f"{op.va!r}")
                if op.kind in ("set", "wait") and op.args["flag"] not in init.flags:
                    self.err(op.line, f"expected a flag declared with 'flag', found "
                                      f"{op.args['flag']!r}")
                if op.kind == "wait_walk" and op.args["core"] == "dev":
                    self.err(op.line, "expected a core for 'wait walk': the device has no "
                                      "walker")
                for k in ("new", "old", "pte"):
                    pe = op.args.get(k)
                    if isinstance(pe, PteExpr) and isinstance(pe.base, str) \
                            and t.registers.get(pe.base) != "pte":
                        self.err(op.line, f"expected a register holding a PTE, found "
                                          f"{pe.base!r}")
                v = op.args.get("value")
                if op.kind in ("st", "dev_st") and isinstance(v, str) and v not in t.registers:
                    self.err(op.line, f"expected an integer or a register, found {v!r}")
        for w in init.warm:
            if w.va not in init.maps:
                self.err(w.line, f"expected a virtual page declared with 'map', found {w.va!r}")
        for c in t.conditions:
            self._check_expr(c.expr, c.line)

    def _check_expr(self, e: Expr, line: int) -> None:
        t = self.test
        if e.op in ("reg", "fault", "ok"):
            name = e.args[0]
            if name not in t.registers:
                if e.op == "reg" and name in t.init.pages:
                    return
                self.err(line, f"expected a register written by a thread or a page name, "
                               f"found {name!r}")
        elif e.op == "pte" and e.args[0] not in t.init.maps:
            self.err(line, f"expected a virtual page declared with 'map', found {e.args[0]!r}")
        elif e.op == "mem" and e.args[0] not in t.init.pages and e.args[0] not in t.init.flags:
            self.err(line, f"expected a physical page or flag name in mem[...], found "
                           f"{e.args[0]!r}")
        elif e.op == "tlb" and e.args[1] not in t.init.maps:
            self.err(line, f"expected a virtual page declared with 'map', found {e.args[1]!r}")
        for a in e.args:
            if isinstance(a, Expr):
                self._check_expr(a, line)


class _ExprParser:
    """Conditions: ``||``/``or``, ``&&``/``and``, ``!``/``not``, comparisons, atoms."""

    CMP = ("==", "!=", "<", "<=", ">", ">=", "=")

    def __init__(self, cur: _Cursor):
        self.cur = cur

    def parse(self) -> Expr:
        e = self.or_()
        self.cur.end("the condition")
        return e

    def or_(self) -> Expr:
        e = self.and_()
        while self.cur.accept("||") or self.cur.accept("or"):
            e = Expr("or", (e, self.and_()))
        return e

    def and_(self) -> Expr:
        e = self.not_()
        while self.cur.accept("&&") or self.cur.accept("and"):
            e = Expr("and", (e, self.not_()))
        return e

    def not_(self) -> Expr:
        if self.cur.accept("!") or self.cur.accept("not"):
            return Expr("not", (self.not_(),))
        return self.cmp()

    def cmp(self) -> Expr:
        e = self.term()
        for op in self.CMP:
            if self.cur.accept(op):
                return Expr("cmp", ("==" if op == "=" else op, e, self.term()))
        return e

    def term(self) -> Expr:
        e = self.atom()
        if self.cur.accept("."):
            f = self.cur.name("a PTE field (v r w x u g a d ppn value)")
            if f not in PTE_FIELDS:
                self.cur.error(f"expected a PTE field ({' '.join(PTE_FIELDS)}), found {f!r}")
            e = Expr("field", (e, f))
        return e

    def atom(self) -> Expr:
        cur = self.cur
        if cur.accept("("):
            e = self.or_()
            cur.expect(")", "to close '('")
            return e
        t = cur.peek()
        if t is None:
            cur.error("expected a value (register, integer, mem[..], pte(..), fault(..), "
                      "ok(..), tlb(..)), found the end of the line")
        if t[0] == "int" or t[1] == "-":
            return Expr("int", (cur.integer("an integer"),))
        name = cur.name("a value (register, integer, mem[..], pte(..), fault(..), ok(..), "
                        "tlb(..))")
        if name in ("true", "false"):
            return Expr("bool", (name == "true",))
        if name == "mem" and cur.at("["):
            cur.expect("[")
            page = cur.name("a physical page or flag name in mem[...]")
            off = cur.integer("a byte offset") if cur.accept("+") else 0
            cur.expect("]", "to close mem[")
            return Expr("mem", (page, off))
        if name in ("pte", "fault", "ok") and cur.at("("):
            cur.expect("(")
            arg = cur.name("a virtual page name" if name == "pte" else "a register")
            cur.expect(")", f"to close {name}(")
            return Expr(name, (arg,))
        if name == "tlb" and cur.at("("):
            cur.expect("(")
            tgt = cur.name("a core (C0, ...) or 'dev'")
            if tgt != "dev" and not re.fullmatch(r"[Cc]\d+", tgt):
                cur.error(f"expected a core (C0, ...) or 'dev', found {tgt!r}")
            cur.expect(",", "between the core and the page")
            va = cur.name("a virtual page name")
            cur.expect(")", "to close tlb(")
            return Expr("tlb", ("dev" if tgt == "dev" else int(tgt[1:]), va))
        return Expr("reg", (name,))


def parse(text: str, path: str = "<string>") -> LitmusTest:
    """Parse litmus source ``text``; raise :class:`LitmusSyntaxError` naming the line."""
    return _Parser(text, path).parse()


def parse_file(path) -> LitmusTest:
    """Parse the litmus file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise LitmusSyntaxError(str(path), 0, f"cannot read the file: {exc.strerror}") from exc
    return parse(text, str(path))
