"""The litmus text format (docs/litmus.md) -> :class:`cosim.litmus.model.LitmusTest`.

Errors are :class:`LitmusSyntaxError` naming the file, the line and what was expected::

    litmus/bad.litmus:7: expected a virtual page name after 'ld', found '42'

The format is line-oriented.  Section keywords start a line (``litmus``, ``doc``, ``config``,
``option``, ``init``, ``thread``, and the verdicts ``forbidden``, ``allowed``, ``observable``,
``required``); the lines that follow an ``init`` or ``thread`` header belong to it.  ``#``
starts a comment; ``;`` separates operations on one line.  Operations come from the registry
:data:`cosim.litmus.ops.OPS`; every bound a file is checked against is in
:mod:`cosim.litmus.syntax`.  Every input either parses or raises :class:`LitmusSyntaxError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .model import (CPU, DEV, OS, PTE_BITS, Condition, Expr, Init, LitmusTest, Op, PteExpr,
                    PteSpec, Thread, Verdict, Warm)
from .ops import lookup, names
from .syntax import (MAX_FILE_BYTES, MAX_NESTING, MAX_OPS, MAX_REPEAT, MAX_THREADS,
                     Cursor, LitmusSyntaxError, flag_bits, flags_run, parse_int)

__all__ = ["LitmusSyntaxError", "parse", "parse_file", "PTE_FIELDS", "OPTIONS"]

#: Fields of a PTE value usable in conditions (``p.d``, ``pte(x).ppn``).
PTE_FIELDS = ("v", "r", "w", "x", "u", "g", "a", "d", "ppn", "value")

SECTION = ("litmus", "doc", "config", "option", "init", "thread", "forbidden", "allowed",
           "observable", "required")

#: Runner options a file may set: name -> (lowest, highest value) or the accepted words.
OPTIONS = {
    "runs": (1, 100_000), "start": (0, 100_000), "jitter": (0, 100_000),
    "p_long": (0, 100), "long": (0, 100_000), "latency": (0, 10_000),
    "max_cycles": (1, 10_000_000), "kernel": (0, 1), "mapping": ("shared", "anon"),
    "user": (0, 1),
}

_CORE = re.compile(r"[Cc](\d+)")


def config_value(key: str, raw, err):
    """The value of ``Top`` parameter ``key`` written as ``raw`` (a name or an integer),
    converted as every command line converts it (:meth:`hdl.config.MmuConfig.parse_params`)."""
    from hdl.config import MmuConfig
    try:
        return MmuConfig.parse_params(f"{key}={raw}")[key]
    except ValueError as exc:
        err(f"expected a valid 'config' line: {exc}")


def check_config(cfg: dict, err) -> None:
    """Raise through ``err(message)`` unless ``cfg`` is a valid set of ``Top`` parameters."""
    from hdl.config import MmuConfig
    try:
        MmuConfig.from_params(**cfg)
    except (TypeError, ValueError) as exc:
        err(f"expected a valid 'config' line: {exc}")


class _Parser:
    """One file.  The operation parsers of the registry use ``spec``, ``thread``, ``test``
    and the helpers ``va``, ``value``, ``pte_expr``, ``target``, ``page``, ``mapped`` and
    ``no_dst``."""

    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        self.test = LitmusTest(name="", path=path, config={}, options={}, init=Init(),
                               threads=[], conditions=[], registers={}, doc="")
        self.section: Optional[str] = None
        self.thread: Optional[Thread] = None
        self.spec = None
        #: (line, core) of every core a warm, inv, wait walk or tlb() names.
        self.targets: list = []

    def err(self, line: int, message: str):
        raise LitmusSyntaxError(self.path, line, message)

    # --- top level ---------------------------------------------------------------------------

    def parse(self) -> LitmusTest:
        lines = self.text.splitlines()
        for n, raw in enumerate(lines, 1):
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
            elif not self.test.name:
                self.err(n, f"expected 'litmus NAME' as the first line, found {word!r}")
            else:
                self.err(n, f"expected a section keyword ({', '.join(SECTION)}), found "
                            f"{word!r}")
        t = self.test
        last = len(lines) or 1
        if not t.name:
            self.err(1, "expected 'litmus NAME' before the end of the file")
        if not t.threads:
            self.err(last, "expected at least one 'thread'")
        if not t.conditions:
            self.err(last, "expected at least one condition (forbidden:, allowed:, "
                           "observable: or required:)")
        self._check_names()
        self._check_cores()
        return t

    def _section(self, word: str, line: str, n: int) -> None:
        cur = Cursor(line, self.path, n)
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
        elif word == "config":
            while not cur.done():
                key, raw = self._key_value(cur, "config")
                t.config[key] = config_value(key, raw, cur.error)
            check_config(t.config, cur.error)
        elif word == "option":
            while not cur.done():
                key, raw = self._key_value(cur, "option")
                t.options[key] = self._option(cur, key, raw)
        elif word == "init":
            cur.end("'init'")
        elif word == "thread":
            self._thread(cur, n)
        else:
            text = line.split(None, 1)[1] if " " in line else ""
            text = text[1:].strip() if text.startswith(":") else text.strip()
            if not text:
                self.err(n, f"expected a condition after {word!r}")
            expr = _ExprParser(Cursor(text, self.path, n), self.targets).parse()
            t.conditions.append(Condition(Verdict(word), expr, text, n))
            self.section = "cond"

    def _key_value(self, cur: Cursor, word: str):
        key = cur.name(f"a {word} name (key=value)")
        cur.expect("=", f"after {word} name {key!r}")
        if cur.at_name():
            return key, cur.name("a value")
        return key, cur.integer(f"a value for {key!r}")

    def _option(self, cur: Cursor, key: str, raw):
        if key not in OPTIONS:
            cur.error(f"expected a runner option ({', '.join(OPTIONS)}), found {key!r}")
        rule = OPTIONS[key]
        if isinstance(rule[0], str):
            if raw not in rule:
                cur.error(f"expected {' or '.join(rule)} for option {key!r}, found {raw!r}")
            return raw
        lo, hi = rule
        if not isinstance(raw, int) or not lo <= raw <= hi:
            cur.error(f"expected an integer from {lo} to {hi} for option {key!r}, found "
                      f"{raw!r}")
        return raw

    def _thread(self, cur: Cursor, n: int) -> None:
        name = cur.name("a thread name after 'thread'")
        if any(th.name == name for th in self.test.threads):
            self.err(n, f"expected a new thread name, found {name!r} a second time")
        if len(self.test.threads) >= MAX_THREADS:
            self.err(n, f"expected at most {MAX_THREADS} threads per test")
        from hdl.config import MAX_CORES
        kind, core = None, None
        if cur.accept("cpu"):
            kind, core = CPU, cur.integer("a core number after 'cpu'", 0, MAX_CORES - 1)
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
                kind = CPU
                core = parse_int(mo.group(1), "a core number", cur.error, 0, MAX_CORES - 1)
            elif name.lower().startswith("os"):
                kind = OS
            elif name.lower().startswith("dev"):
                kind = DEV
            else:
                self.err(n, f"expected 'cpu N', 'os' or 'dev' after thread {name!r} (the "
                            f"kind is inferred only from names like C0, OS, Dev)")
        cur.end("the thread kind")
        if core is not None and any(th.kind == CPU and th.core == core
                                    for th in self.test.threads):
            self.err(n, f"expected one cpu thread per core, found a second on core {core}")
        self.thread = Thread(name, kind, core, [], n)
        self.test.threads.append(self.thread)

    # --- init ------------------------------------------------------------------------------

    def page(self, name: str) -> str:
        """Declare physical page ``name`` (in order of first mention)."""
        if name not in self.test.init.pages:
            self.test.init.pages.append(name)
        return name

    def _init_line(self, line: str, n: int) -> None:
        cur = Cursor(line, self.path, n)
        init = self.test.init
        word = cur.name("'map', 'mem', 'flag' or 'warm'")
        if word == "map":
            va = cur.name("a virtual page name after 'map'")
            if va in init.maps:
                self.err(n, f"expected each virtual page mapped once, found {va!r} again")
            if len(init.maps) >= 512:
                self.err(n, "expected at most 512 virtual pages (one page-table page)")
            cur.expect("->", f"after 'map {va}'")
            if cur.accept("invalid"):
                spec = PteSpec(None, 0)
            else:
                page = cur.name("a physical page name (or 'invalid') after '->'")
                bits = (PTE_BITS["v"] | PTE_BITS["r"] | PTE_BITS["w"] | PTE_BITS["a"]
                        | PTE_BITS["d"]) if cur.done() else flags_run(cur, "PTE flag letters")
                spec = PteSpec(self.page(page), bits)
            cur.end("the mapping")
            init.maps[va] = spec
        elif word == "mem":
            page = self.page(cur.name("a physical page name after 'mem'"))
            off = cur.offset()
            cur.expect("=", "after the memory location")
            init.mem[(page, off)] = cur.integer("an integer value")
            cur.end("the value")
        elif word == "flag":
            name = cur.name("a flag name after 'flag'")
            if len(init.flags) >= 512:
                self.err(n, "expected at most 512 flags (one page of words)")
            init.flags[name] = cur.integer("an initial value") if cur.accept("=") else 0
            cur.end("the flag")
        elif word == "warm":
            target = cur.name("a core (C0, C1, ...) or 'dev' after 'warm'")
            tgt = self.target(cur, target)
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

    def target(self, cur: Cursor, word: str):
        """A core (``C0`` -> 0) or ``"dev"``; the core is checked against the design."""
        if word == "dev":
            return "dev"
        mo = _CORE.fullmatch(word)
        if mo is None:
            cur.error(f"expected a core (C0, C1, ...) or 'dev', found {word!r}")
        from hdl.config import MAX_CORES
        core = parse_int(mo.group(1), "a core number", cur.error, 0, MAX_CORES - 1)
        self.targets.append((cur.line, core))
        return core

    # --- thread operations -----------------------------------------------------------------

    def _op_line(self, line: str, n: int) -> None:
        if self.thread is None:
            self.err(n, "expected a 'thread' header before operations")
        mo = re.match(r"repeat\b\s*(\S*?)\s*:\s*(.*)$", line)
        if mo:
            count = parse_int(mo.group(1), "a repeat count",
                              lambda m: self.err(n, m), 1, MAX_REPEAT)
            body = mo.group(2)
            if not body.strip():
                self.err(n, "expected an operation after 'repeat N:'")
            if re.match(r"repeat\b", body):
                self.err(n, "expected one 'repeat' per line, found a nested one")
            self._room(count, n)
            for i in range(1, count + 1):
                self._op_line(body.replace("$i", str(i)), n)
            return
        if "$i" in line:
            self.err(n, "expected '$i' only inside 'repeat N: ...'")
        self._room(1, n)
        self.thread.ops.append(self._one_op(line, n))

    def _room(self, count: int, n: int) -> None:
        if len(self.thread.ops) + count > MAX_OPS:
            self.err(n, f"expected at most {MAX_OPS} operations per thread (after 'repeat'); "
                        f"thread {self.thread.name!r} would have {len(self.thread.ops) + count}")

    def _one_op(self, line: str, n: int, in_if: bool = False) -> Op:
        mo = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*:", line)
        if mo:
            if in_if:
                self.err(n, "expected a plain operation after 'if ...:', found 'label'")
            if any(o.kind == "label" and o.args["name"] == mo.group(1) for o in self.thread.ops):
                self.err(n, f"expected a new label, found {mo.group(1)!r} a second time")
            return Op("label", n, args={"name": mo.group(1)}, text=line)
        mo = re.match(r"if\s+([^:]+):\s*(.*)$", line)
        if mo:
            if in_if:
                self.err(n, "expected a plain operation after 'if ...:', found 'if'")
            if not mo.group(2).strip():
                self.err(n, "expected an operation after 'if CONDITION:'")
            cond = _ExprParser(Cursor(mo.group(1), self.path, n), self.targets).parse()
            then = self._one_op(mo.group(2).strip(), n, in_if=True)
            return Op("if", n, args={"cond": cond, "then": then}, text=line)
        cur = Cursor(line, self.path, n)
        dst = None
        if cur.at("=", 1) and cur.at_name() and not cur.at("set"):
            dst = cur.name("a register")
            cur.expect("=")
        word = cur.name("an operation")
        if word == "goto":
            self.no_dst(cur, dst, "goto")
            op = Op("goto", n, args={"label": cur.name("a label after 'goto'")})
            cur.end("'goto'")
            op.text = line
            return op
        spec = None
        if cur.at_name():
            spec = lookup(f"{word} {cur.peek()[1]}")
            if spec is not None:
                cur.i += 1
        spec = spec or lookup(word)
        if spec is None and word in ("dev", "wait"):
            subs = [n for n in names(full=True) if n.startswith(word + " ")]
            cur.error(f"expected {', '.join(repr(x) for x in subs)}, found "
                      f"{(word + ' ' + cur.found().strip(chr(39))) if not cur.done() else word!r}")
        if spec is None:
            cur.error(f"expected an operation ({', '.join(names())}), found {word!r}")
        if self.thread.kind not in spec.kinds:
            cur.error(f"expected {spec.name!r} only in {' or '.join(spec.kinds)} threads, "
                      f"found it in {self.thread.kind} thread {self.thread.name!r}")
        if dst is not None and spec.result is None:
            self.no_dst(cur, dst, spec.name)
        self.spec = spec
        va, off, args = spec.parse(self, cur, dst)
        op = Op(spec.name, n, dst, va, off, args, line)
        cur.end(f"'{spec.name}'")
        if dst is not None:
            prev = self.test.registers.get(dst)
            if prev is not None and prev != spec.result:
                self.err(n, f"expected register {dst!r} to hold one kind of value, found it "
                            f"used for {prev} and {spec.result}")
            self.test.registers[dst] = spec.result
        return op

    def va(self, cur: Cursor) -> tuple[str, int]:
        """A virtual page name with an optional ``+OFF``."""
        va = cur.name(f"a virtual page name after {self.spec.name!r}")
        return va, cur.offset()

    def mapped(self, name: str, cur: Cursor) -> str:
        """A second virtual page an operation names (checked like the first)."""
        return name

    def value(self, cur: Cursor) -> object:
        """An integer or a register name."""
        if cur.at_name():
            return cur.name("a register")
        return cur.integer("a value (integer or register)")

    def pte_expr(self, cur: Cursor) -> PteExpr:
        """``invalid``, ``{PAGE flags}``, an integer or a register, then ``+flags -flags``."""
        if cur.accept("invalid"):
            base = 0
        elif cur.accept("{"):
            page = None
            if not cur.accept("-"):
                page = self.page(cur.name("a physical page name (or '-') in '{...}'"))
            bits = 0
            while not cur.accept("}"):
                if cur.done():
                    cur.error("expected '}' to close the PTE literal")
                bits |= flag_bits(cur, cur.name("PTE flag letters or '}'"))
            base = PteSpec(page, bits)
        elif cur.peek() is not None and cur.peek()[0] == "int":
            base = cur.integer("a PTE value", 0)
        else:
            base = cur.name("a PTE value ('invalid', '{PAGE flags}', an integer or a register)")
        set_bits = clear_bits = 0
        while cur.at("+") or cur.at("-"):
            sign = cur.peek()[1]
            cur.i += 1
            bits = flag_bits(cur, cur.name(f"PTE flag letters after {sign!r}"))
            if sign == "+":
                set_bits |= bits
            else:
                clear_bits |= bits
        return PteExpr(base, set_bits, clear_bits)

    def no_dst(self, cur: Cursor, dst, what: str) -> None:
        if dst is not None:
            cur.error(f"expected no register before {what!r}: it produces no value")

    # --- whole-file checks -----------------------------------------------------------------

    def _check_names(self) -> None:
        t = self.test
        init = t.init
        kinds = set()
        for th in t.threads:
            labels = {o.args["name"] for o in th.ops if o.kind == "label"}
            ops = list(th.ops) + [o.args["then"] for o in th.ops if o.kind == "if"]
            for op in ops:
                kinds.add(op.kind)
                if op.kind == "goto" and op.args["label"] not in labels:
                    self.err(op.line, f"expected a label of thread {th.name!r}, found "
                                      f"{op.args['label']!r}")
                if op.kind == "if":
                    self._check_expr(op.args["cond"], op.line)
                for va in (op.va, op.args.get("to")):
                    if va is not None and va not in init.maps:
                        self.err(op.line, f"expected a virtual page declared with 'map', "
                                          f"found {va!r}")
                flag = op.args.get("flag")
                if flag is not None and flag not in init.flags:
                    self.err(op.line, f"expected a flag declared with 'flag', found {flag!r}")
                for k in ("new", "old", "pte"):
                    pe = op.args.get(k)
                    if isinstance(pe, PteExpr) and isinstance(pe.base, str) \
                            and t.registers.get(pe.base) != "pte":
                        self.err(op.line, f"expected a register holding a PTE, found "
                                          f"{pe.base!r}")
                v = op.args.get("value")
                if isinstance(v, str) and v not in t.registers:
                    self.err(op.line, f"expected an integer or a register, found {v!r}")
        if "exit" in kinds and "fork" not in kinds:
            line = next(op.line for th in t.threads for op in th.ops if op.kind == "exit")
            self.err(line, "expected a 'fork' in the test before 'exit' (exit ends the child "
                           "the last fork made)")
        if t.options.get("mapping") == "anon":
            for th in t.threads:
                for op in th.ops:
                    if op.kind in ("truncate", "msync", "remap_file_pages"):
                        self.err(op.line, f"expected a file mapping for {op.kind!r}, found "
                                          f"'option mapping=anon'")
        for w in init.warm:
            if w.va not in init.maps:
                self.err(w.line, f"expected a virtual page declared with 'map', found {w.va!r}")
        for c in t.conditions:
            self._check_expr(c.expr, c.line)

    def _check_cores(self) -> None:
        """Every core a warm, inv, wait walk or tlb() names is a core of the design: below
        the configured count (default 2) or run by a cpu thread."""
        from hdl.config import MmuConfig
        t = self.test
        base = t.config.get("ncores", MmuConfig.ncores)
        cores = max([base] + [th.core + 1 for th in t.threads if th.kind == CPU])
        for line, core in self.targets:
            if core >= cores:
                self.err(line, f"expected a core of the design (C0..C{cores - 1}: config "
                               f"ncores={base} and the cpu threads), found C{core}; add a "
                               f"'thread C{core}' or 'config ncores={core + 1}'")

    def _check_expr(self, e: Expr, line: int) -> None:
        t = self.test
        if e.op in ("reg", "fault", "ok"):
            name = e.args[0]
            if name not in t.registers:
                if e.op == "reg" and name in t.init.pages:
                    return
                self.err(line, f"expected a register written by a thread or a page name, "
                               f"found {name!r}")
        elif e.op == "field":
            base = e.args[0]
            if base.op == "reg" and t.registers.get(base.args[0]) != "pte":
                kind = t.registers.get(base.args[0], "page name")
                self.err(line, f"expected a PTE (a register holding one, or pte(x)) before "
                               f"'.{e.args[1]}', found {base.args[0]!r}, a {kind}"
                               f"{' register' if kind != 'page name' else ''}")
            if base.op not in ("reg", "pte"):
                self.err(line, f"expected a PTE (a register holding one, or pte(x)) before "
                               f"'.{e.args[1]}'")
        elif e.op == "pte" and e.args[0] not in t.init.maps:
            self.err(line, f"expected a virtual page declared with 'map', found {e.args[0]!r}")
        elif e.op == "mem" and e.args[0] not in t.init.pages and e.args[0] not in t.init.flags:
            self.err(line, f"expected a physical page or flag name in mem[...], found "
                           f"{e.args[0]!r}")
        elif e.op == "dirty" and e.args[0] not in t.init.pages:
            self.err(line, f"expected a physical page name in dirty(...), found {e.args[0]!r}")
        elif e.op == "tlb" and e.args[1] not in t.init.maps:
            self.err(line, f"expected a virtual page declared with 'map', found {e.args[1]!r}")
        for a in e.args:
            if isinstance(a, Expr):
                self._check_expr(a, line)


class _ExprParser:
    """Conditions: ``||``/``or``, ``&&``/``and``, ``!``/``not``, comparisons, atoms.  ``(``
    and ``!`` nest at most :data:`~cosim.litmus.syntax.MAX_NESTING` deep; ``&&`` and ``||``
    chains are one n-ary node."""

    CMP = ("==", "!=", "<", "<=", ">", ">=", "=")

    def __init__(self, cur: Cursor, targets: Optional[list] = None):
        self.cur = cur
        self.depth = 0
        self.targets = [] if targets is None else targets

    def parse(self) -> Expr:
        e = self.or_()
        self.cur.end("the condition")
        return e

    def _nest(self, what: str) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.cur.error(f"expected at most {MAX_NESTING} nested '(' or '!', found more "
                           f"at {what!r}")

    def or_(self) -> Expr:
        terms = [self.and_()]
        while self.cur.accept("||") or self.cur.accept("or"):
            terms.append(self.and_())
        return terms[0] if len(terms) == 1 else Expr("or", tuple(terms))

    def and_(self) -> Expr:
        terms = [self.not_()]
        while self.cur.accept("&&") or self.cur.accept("and"):
            terms.append(self.not_())
        return terms[0] if len(terms) == 1 else Expr("and", tuple(terms))

    def not_(self) -> Expr:
        nots = 0
        while self.cur.accept("!") or self.cur.accept("not"):
            self._nest("!")
            nots += 1
        e = self.cmp()
        for _ in range(nots):
            e = Expr("not", (e,))
        self.depth -= nots
        return e

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
            self._nest("(")
            e = self.or_()
            cur.expect(")", "to close '('")
            self.depth -= 1
            return e
        t = cur.peek()
        if t is None:
            cur.error("expected a value (register, integer, mem[..], pte(..), fault(..), "
                      "ok(..), tlb(..), dirty(..)), found the end of the line")
        if t[0] == "int" or t[1] == "-":
            return Expr("int", (cur.integer("an integer"),))
        name = cur.name("a value (register, integer, mem[..], pte(..), fault(..), ok(..), "
                        "tlb(..), dirty(..))")
        if name in ("true", "false"):
            return Expr("bool", (name == "true",))
        if name == "mem" and cur.at("["):
            cur.expect("[")
            page = cur.name("a physical page or flag name in mem[...]")
            off = cur.offset()
            cur.expect("]", "to close mem[")
            return Expr("mem", (page, off))
        if name in ("pte", "fault", "ok") and cur.at("("):
            cur.expect("(")
            arg = cur.name("a virtual page name" if name == "pte" else "a register")
            cur.expect(")", f"to close {name}(")
            return Expr(name, (arg,))
        if name == "dirty" and cur.at("("):
            cur.expect("(")
            page = cur.name("a physical page name")
            cur.expect(")", "to close dirty(")
            return Expr("dirty", (page,))
        if name == "tlb" and cur.at("("):
            cur.expect("(")
            tgt = cur.name("a core (C0, ...) or 'dev'")
            mo = _CORE.fullmatch(tgt)
            if tgt != "dev" and mo is None:
                cur.error(f"expected a core (C0, ...) or 'dev', found {tgt!r}")
            cur.expect(",", "between the core and the page")
            va = cur.name("a virtual page name")
            cur.expect(")", "to close tlb(")
            if mo is None:
                return Expr("tlb", ("dev", va))
            from hdl.config import MAX_CORES
            core = parse_int(mo.group(1), "a core number", cur.error, 0, MAX_CORES - 1)
            self.targets.append((cur.line, core))
            return Expr("tlb", (core, va))
        return Expr("reg", (name,))


def parse(text: str, path: str = "<string>") -> LitmusTest:
    """Parse litmus source ``text``; raise :class:`LitmusSyntaxError` naming the line."""
    if len(text) > MAX_FILE_BYTES:
        raise LitmusSyntaxError(path, 1, f"expected a litmus file of at most {MAX_FILE_BYTES} "
                                         f"characters, found {len(text)}")
    return _Parser(text, path).parse()


def parse_file(path) -> LitmusTest:
    """Parse the litmus file at ``path`` (UTF-8 text; a leading byte-order mark, which some
    editors write, is skipped)."""
    p = Path(path)
    if not p.exists():
        raise LitmusSyntaxError(str(path), 0, "cannot read the file: it does not exist")
    if not p.is_file():
        raise LitmusSyntaxError(str(path), 0, "cannot read the file: it is not a regular file")
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LitmusSyntaxError(str(path), 0, f"cannot read the file: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise LitmusSyntaxError(str(path), 1, f"expected a litmus file of at most "
                                              f"{MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LitmusSyntaxError(str(path), line, f"expected UTF-8 text, found byte "
                                                 f"0x{data[exc.start]:02x} at column {col}"
                                ) from None
    return parse(text.removeprefix("\ufeff"), str(path))
