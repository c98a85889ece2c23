"""Tlb: the translation cache of a CoreMmu or the DeviceMmu.

Entries are registers (``e<i>`` for the main array, ``sp<i>`` for the superpage array; the cocotb
side reads them through :func:`hdl.layouts.tlb_entry_to_arch`).  Entry ``e<i>`` is way
``i % ways`` of set ``i // ways``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from pyrmap.replacement import REPLACEMENT_POLICIES, gateware

from .config import check_asid_bits, check_tlb_geometry
from .layouts import VPN_WIDTH, InvalKind, tlb_entry_layout, tlb_entry_value

__all__ = ["Tlb", "vpn_match", "connect_inval", "LFSR_TAPS"]

LFSR_TAPS = 0xB400  # x^16 + x^14 + x^13 + x^11 + 1, Galois form, maximal length


def vpn_match(entry, vpn):
    """True when ``vpn`` (27 bits) falls inside the page ``entry`` maps, at the entry's level."""
    hi = entry.vpn[18:27] == vpn[18:27]
    mid = entry.vpn[9:18] == vpn[9:18]
    lo = entry.vpn[0:9] == vpn[0:9]
    return hi & ((entry.level == 2) | (mid & ((entry.level == 1) | lo)))


def connect_inval(m, tlb_inval, port, apply, *, late=False):
    """Drive a :class:`Tlb`'s ``inval`` from an invalidation port (``inval_signature``).

    The request is applied in the cycle ``apply`` is high, so its matching entries are gone
    at the edge that raises the port's ``ack``.  ``late`` models the bug where they are
    cleared one cycle later, at the end of the ack cycle: a lookup in the ack cycle still
    finds them.
    """
    if not late:
        m.d.comb += [tlb_inval.valid.eq(apply), tlb_inval.kind.eq(port.kind),
                     tlb_inval.vpn.eq(port.vaddr[12:39]), tlb_inval.asid.eq(port.asid)]
        return
    valid = Signal(name="inval_late_valid")
    kind = Signal.like(tlb_inval.kind, name="inval_late_kind")
    vpn = Signal.like(tlb_inval.vpn, name="inval_late_vpn")
    asid = Signal.like(tlb_inval.asid, name="inval_late_asid")
    m.d.sync += [valid.eq(apply), kind.eq(port.kind), vpn.eq(port.vaddr[12:39]),
                 asid.eq(port.asid)]
    m.d.comb += [tlb_inval.valid.eq(valid), tlb_inval.kind.eq(kind), tlb_inval.vpn.eq(vpn),
                 tlb_inval.asid.eq(asid)]


def _log2(n):
    return max(n - 1, 0).bit_length()


class _Replacement:
    """Replacement state for ``nsets`` sets of ``ways`` ways, and the victim logic; a policy
    (:data:`pyrmap.replacement.REPLACEMENT_POLICIES`) subclasses it with ``@gateware(name)``.

    ``victim(m, set_idx, valids)`` returns a Value: the first invalid way, else the policy's
    choice (``policy_way``).  ``touch(m, set_idx, way)`` records a use; ``advance(m, set_idx)``
    records a fill of the policy's victim.  ``uses_lfsr``: the Tlb steps its LFSR every cycle.
    """
    uses_lfsr = False

    def __init__(self, name, nsets, ways, lfsr):
        self.name, self.nsets, self.ways, self.lfsr = name, nsets, ways, lfsr
        self.wbits = max(_log2(ways), 1)
        self.state = None

    def _select(self, set_idx):
        if self.nsets == 1:
            return self.state[0]
        return Array(self.state)[set_idx]

    def policy_way(self, set_idx):
        raise NotImplementedError

    def victim(self, m, set_idx, valids):
        """``valids``: list of the ways' valid bits (Values) of the selected set."""
        way = Signal(self.wbits, name=f"{self.name}_victim")
        if self.ways == 1:
            m.d.comb += way.eq(0)
        else:
            m.d.comb += way.eq(self.policy_way(set_idx))
        for w in reversed(range(len(valids))):
            with m.If(~valids[w]):
                m.d.comb += way.eq(w)
        return way

    def touch(self, m, set_idx, way):
        pass

    def advance(self, m, set_idx):
        pass


@gateware("plru")
class _PlruReplacement(_Replacement):
    """Tree pseudo-LRU per set: ``ways - 1`` bits in heap order (pyrmap.replacement.PlruModel)."""

    def __init__(self, name, nsets, ways, lfsr):
        super().__init__(name, nsets, ways, lfsr)
        if ways > 1:
            self.state = [Signal(ways - 1, name=f"{name}_plru{s}") for s in range(nsets)]

    def policy_way(self, set_idx):
        tree = self._select(set_idx)
        levels = _log2(self.ways)
        prefix = Const(0, 0)
        for d in range(levels):
            # heap order: the node at depth d under the choices so far is 2**d - 1 + prefix
            node = prefix.as_unsigned() + ((1 << d) - 1)
            bit = tree.bit_select(node, 1) if d else tree[0]
            prefix = Cat(bit, prefix)  # earlier choices are the way number's high bits
        return prefix

    def touch(self, m, set_idx, way):
        if self.ways == 1:
            return
        levels = _log2(self.ways)
        for s in range(self.nsets):
            tree = self.state[s]
            with m.If((set_idx == s) if self.nsets > 1 else 1):
                for d in range(levels):
                    for p in range(1 << d):  # node index (1<<d)-1+p covers ways with prefix p
                        node = (1 << d) - 1 + p
                        with m.If((way >> (levels - d)) == p):
                            m.d.sync += tree[node].eq(~way[levels - 1 - d])


@gateware("fifo")
class _FifoReplacement(_Replacement):
    """Round robin per set: a victim pointer per set (pyrmap.replacement.FifoModel)."""

    def __init__(self, name, nsets, ways, lfsr):
        super().__init__(name, nsets, ways, lfsr)
        self.state = [Signal(self.wbits, name=f"{name}_fifo{s}") for s in range(nsets)]

    def policy_way(self, set_idx):
        return self._select(set_idx)

    def advance(self, m, set_idx):
        for s in range(self.nsets):
            ptr = self.state[s]
            with m.If((set_idx == s) if self.nsets > 1 else 1):
                m.d.sync += ptr.eq(Mux(ptr == self.ways - 1, 0, ptr + 1))


@gateware("random")
class _RandomReplacement(_Replacement):
    """The LFSR's low bits, folded into range (pyrmap.replacement.RandomModel)."""
    uses_lfsr = True

    def policy_way(self, set_idx):
        raw = self.lfsr[:self.wbits]
        if (1 << self.wbits) == self.ways:
            return raw
        return Mux(raw >= self.ways, raw - self.ways, raw)[:self.wbits]


class Tlb(wiring.Component):
    """A TLB of register entries: lookup in the same cycle, fill and invalidate at the edge.

    Parameters
    ----------
    entries : int
        Entries of the main array.
    ways : int or None
        Ways per set (default: ``entries``, fully associative; 1: direct mapped).  The number of
        sets must be a power of two.
    replacement : str
        ``"plru"`` (tree pseudo-LRU per set), ``"random"`` (a 16-bit LFSR) or ``"fifo"``.  An
        invalid way is always preferred.
    superpage_entries : int
        When the main array is set-associative, 2 MiB and 1 GiB entries live in a separate
        fully-associative array of this many entries (as in Rocket); unused when fully
        associative.
    asid_bits : int
        ASID tag width (0..16).

    Members
    -------
    lookup : In
        ``valid``, ``vpn`` (27), ``asid``; out ``hit``, ``entry`` (``tlb_entry_layout``, the first
        matching entry, main array first), in the same cycle.  With ``valid``: ``touch`` makes a
        hit update the replacement state; ``drop`` invalidates every matching entry at the edge;
        ``set_young``/``clear_young`` set or clear their young bits.
    fill : In
        ``valid`` and ``entry``: install ``entry`` (its ``vpn`` is aligned down to its level) at
        the edge: with ``replace``, over an entry of the same page (same vpn and level, and same
        ASID or either global) if there is one; else in the first invalid way, else over the
        policy's victim (both judged before this cycle's ``drop``).  A fill
        wins over an invalidation in the same cycle (callers suppress that fill unless they
        model the fill-after-invalidation bug).  ``drop``/young updates act on the first
        matching entry only.
    inval : In
        ``valid``, ``kind`` (:class:`pyrmap.arch.InvalKind`), ``vpn``, ``asid``: at the edge every
        matching entry is cleared.  ASID kinds keep global entries; VA_ASID clears global entries
        mapping the VA.
    """

    def __init__(self, *, entries=8, ways=None, replacement="plru", superpage_entries=4,
                 asid_bits=9):
        ways = entries if ways is None else ways
        check_tlb_geometry(entries, ways, replacement, superpage_entries)
        check_asid_bits(asid_bits)
        self.entries = entries
        self.ways = ways
        self.sets = entries // ways
        self.split = self.sets > 1
        self.superpage_entries = superpage_entries if self.split else 0
        self.replacement = replacement
        self.asid_bits = asid_bits
        self.entry_layout = layout = tlb_entry_layout(asid_bits)
        aw = layout["asid"].shape.width
        super().__init__({
            "lookup": In(wiring.Signature({
                "valid": Out(1), "vpn": Out(VPN_WIDTH), "asid": Out(aw), "touch": Out(1), "drop": Out(1),
                "set_young": Out(1), "clear_young": Out(1),
                "hit": In(1), "entry": In(layout)})),
            "fill": In(wiring.Signature({"valid": Out(1), "replace": Out(1),
                                         "entry": Out(layout)})),
            "inval": In(wiring.Signature({"valid": Out(1), "kind": Out(2),
                                          "vpn": Out(VPN_WIDTH), "asid": Out(aw)})),
        })

    def entry_names(self):
        """Names of the entry registers, main array first."""
        return ([f"e{i}" for i in range(self.entries)]
                + [f"sp{i}" for i in range(self.superpage_entries)])

    def elaborate(self, platform):
        m = Module()
        layout = self.entry_layout
        sets, ways = self.sets, self.ways
        sbits = _log2(sets)

        main = [[Signal(layout, name=f"e{s * ways + w}") for w in range(ways)]
                for s in range(sets)]
        sp = [Signal(layout, name=f"sp{i}") for i in range(self.superpage_entries)]
        everything = [e for row in main for e in row] + sp
        self.entry_signals = everything   # for testbenches: e0.., then sp0..

        lfsr = Signal(16, init=1)
        policy = REPLACEMENT_POLICIES[self.replacement].gateware
        if policy.uses_lfsr:
            m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ LFSR_TAPS, lfsr >> 1))
        repl = policy("main", sets, ways, lfsr)
        sprepl = policy("sp", 1, len(sp), lfsr) if sp else None
        self.replacement_state = (repl.state, sprepl.state if sp else None)   # for testbenches

        def set_index(vpn):
            return vpn[:sbits] if sbits else Const(0, 1)

        def read_set(idx):
            """The ways of set ``idx`` as Views."""
            if sets == 1:
                return main[0]
            return [data.View(layout, Array([main[s][w].as_value() for s in range(sets)])[idx])
                    for w in range(ways)]

        def asid_eq(e, asid):
            # With no ASID tag (asid_bits=0) every entry belongs to every address space.
            return (e.asid == asid) if self.asid_bits else Const(1, 1)

        def tag_match(e, vpn, asid):
            return e.valid & vpn_match(e, vpn) & (e.g | asid_eq(e, asid))

        # --- lookup -------------------------------------------------------------------------
        lk = self.lookup
        lidx = Signal(max(sbits, 1))
        m.d.comb += lidx.eq(set_index(lk.vpn))
        row = read_set(lidx)
        cands = row + sp
        hits = Signal(len(cands))
        for i, e in enumerate(cands):
            m.d.comb += hits[i].eq(tag_match(e, lk.vpn, lk.asid))
        m.d.comb += lk.hit.eq(hits.any())
        first = Signal(len(cands))      # one-hot: the first matching entry (main array first)
        m.d.comb += first.eq(hits & (~hits + 1))
        for i in reversed(range(len(cands))):
            with m.If(hits[i]):
                m.d.comb += lk.entry.eq(cands[i])

        main_hit_way = Signal(repl.wbits)
        for w in reversed(range(ways)):
            with m.If(hits[w]):
                m.d.comb += main_hit_way.eq(w)
        with m.If(lk.valid & lk.touch & hits[:ways].any()):
            repl.touch(m, lidx, main_hit_way)
        if sp:
            sp_hit_way = Signal(sprepl.wbits)
            for w in reversed(range(len(sp))):
                with m.If(hits[ways + w]):
                    m.d.comb += sp_hit_way.eq(w)
            with m.If(lk.valid & lk.touch & hits[ways:].any() & ~hits[:ways].any()):
                sprepl.touch(m, 0, sp_hit_way)

        with m.If(lk.valid):
            for s in range(sets):
                for w in range(ways):
                    in_set = (lidx == s) if sets > 1 else 1
                    with m.If(in_set & first[w]):
                        self._lookup_update(m, main[s][w])
            for i, e in enumerate(sp):
                with m.If(first[ways + i]):
                    self._lookup_update(m, e)

        # --- invalidation (before fill: a later assignment wins) ----------------------------
        iv = self.inval
        with m.If(iv.valid):
            for e in everything:
                va = vpn_match(e, iv.vpn)
                asid = asid_eq(e, iv.asid)
                with m.Switch(iv.kind):
                    with m.Case(InvalKind.ALL):
                        m.d.sync += e.valid.eq(0)
                    with m.Case(InvalKind.VA):
                        with m.If(va):
                            m.d.sync += e.valid.eq(0)
                    with m.Case(InvalKind.ASID):
                        with m.If(asid & ~e.g):
                            m.d.sync += e.valid.eq(0)
                    with m.Case(InvalKind.VA_ASID):
                        with m.If(va & (asid | e.g)):
                            m.d.sync += e.valid.eq(0)

        # --- fill ---------------------------------------------------------------------------
        fl = self.fill
        # The entry written: valid, vpn aligned down to its level (level 3 is read as 2).
        lvl = fl.entry.level
        aligned_vpn = Cat(Mux(lvl == 0, fl.entry.vpn[:9], 0),
                          Mux(lvl[1], 0, fl.entry.vpn[9:18]), fl.entry.vpn[18:27])
        new = data.View(layout, tlb_entry_value(
            layout, valid=Const(1, 1), vpn=aligned_vpn, asid=fl.entry.asid, ppn=fl.entry.ppn,
            level=Mux(lvl[1], 2, lvl), r=fl.entry.r, w=fl.entry.w, x=fl.entry.x,
            u=fl.entry.u, g=fl.entry.g, a=fl.entry.a, d=fl.entry.d, young=fl.entry.young))
        fidx = Signal(max(sbits, 1))
        m.d.comb += fidx.eq(set_index(fl.entry.vpn))
        frow = read_set(fidx)
        def same_page(e):
            # An entry of the same page and address space is replaced, not duplicated.
            return (e.valid & (e.vpn == new.vpn) & (e.level == new.level)
                    & (e.g | new.g | asid_eq(e, new.asid)))

        def choose(rp, set_idx, row, name):
            victim = rp.victim(m, set_idx, [e.valid for e in row])
            same = Signal(len(row), name=f"{name}_same")
            for i, e in enumerate(row):
                m.d.comb += same[i].eq(fl.replace & same_page(e))
            way = Signal(rp.wbits, name=f"{name}_fill_way")
            m.d.comb += way.eq(victim)
            for i in reversed(range(len(row))):
                with m.If(same[i]):
                    m.d.comb += way.eq(i)
            # the policy chose (FIFO advances) when no same-page entry and no free way exists
            by_policy = ~same.any() & Cat(*(e.valid for e in row)).all()
            return way, by_policy

        main_way, main_by_policy = choose(repl, fidx, frow, "main")
        to_sp = (fl.entry.level != 0) if sp else Const(0, 1)
        with m.If(fl.valid & ~to_sp):
            for s in range(sets):
                for w in range(ways):
                    in_set = (fidx == s) if sets > 1 else 1
                    with m.If(in_set & (main_way == w)):
                        m.d.sync += main[s][w].eq(new)
            repl.touch(m, fidx, main_way)
            with m.If(main_by_policy):
                repl.advance(m, fidx)
        if sp:
            sp_way, sp_by_policy = choose(sprepl, 0, sp, "sp")
            with m.If(fl.valid & to_sp):
                for i, e in enumerate(sp):
                    with m.If(sp_way == i):
                        m.d.sync += e.eq(new)
                sprepl.touch(m, 0, sp_way)
                with m.If(sp_by_policy):
                    sprepl.advance(m, 0)
        return m

    def _lookup_update(self, m, e):
        lk = self.lookup
        with m.If(lk.drop):
            m.d.sync += e.valid.eq(0)
        with m.If(lk.set_young):
            m.d.sync += e.young.eq(1)
        with m.If(lk.clear_young):
            m.d.sync += e.young.eq(0)
