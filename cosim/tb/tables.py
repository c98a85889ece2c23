"""Random Sv39 page tables in a :class:`PhysMem`, built with :mod:`pyrmap.pte`.

:class:`RandomTables` builds several address spaces (contexts: an ASID and a root table) whose
tables mix every case a walker must classify: 4 KiB / 2 MiB / 1 GiB leaves, misaligned
superpages, reserved bits 54..63, W without R, non-leaf entries with A/D/U, U pages reached in
S-mode with and without SUM, leaves with A and/or D clear (the walker must CAS them), software
non-present encodings (swap, file, stray A/D), table pointers outside physical memory (bus
error: ACCESS fault), a table frame whose reads fail and one whose compare-and-swaps fail
(injected :class:`~cosim.memory.BusErrorRange` s), global leaves, and level-1 tables shared
between contexts.

Everything is drawn from one ``random.Random(seed)``; the same seed builds the same tables.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pyrmap.physmem import PhysMem
from pyrmap.pte import (AccessType, _PAGE_A, _PAGE_D, _PAGE_G, _PAGE_R, _PAGE_U, _PAGE_V, _PAGE_W, _PAGE_X,
                        LEVEL_SHIFT, PAGE_SHIFT, PPN_BITS, PTE_SIZE, RESERVED_SHIFT,
                        make_migration_entry, pfn_pte, pgoff_to_pte, pte_table, swp_entry,
                        swp_entry_to_pte)

from ..memory import BusErrorRange, MemOp

__all__ = ["Context", "RandomTables", "sign_extend_va", "three_levels"]


def sign_extend_va(va39: int) -> int:
    """Make a canonical Sv39 address from its low 39 bits."""
    va39 &= (1 << 39) - 1
    if va39 >> 38:
        va39 |= ((1 << 64) - 1) ^ ((1 << 39) - 1)
    return va39


def three_levels(mem: PhysMem, va: int, root: int, l1: int, l0: int) -> int:
    """Point ``root``'s entry for ``va`` at table ``l1`` and ``l1``'s at ``l0`` (frame
    numbers); return the physical address of ``va``'s leaf PTE in ``l0`` (left as it is)."""
    mem.write((root << PAGE_SHIFT) + ((va >> 30) & 511) * PTE_SIZE, pte_table(l1))
    mem.write((l1 << PAGE_SHIFT) + ((va >> 21) & 511) * PTE_SIZE, pte_table(l0))
    return (l0 << PAGE_SHIFT) + ((va >> 12) & 511) * PTE_SIZE


@dataclass
class Context:
    """One address space: ``asid`` and ``root`` (a frame number)."""
    asid: int
    root: int
    targets: list = field(default_factory=list)   # (va, level or None) to request


class RandomTables:
    """Random Sv39 tables for ``ncontexts`` address spaces in ``mem``.

    Parameters
    ----------
    mem : PhysMem
        Frames ``[1, mem.nframes)`` may become page tables; frame 0 stays unused.
    seed : int
    ncontexts : int
    targets_per_context : int
        Distinct virtual addresses generated per context.
    asid_bits : int
        ASIDs are drawn below ``2 ** asid_bits`` (at least 1 bit).

    Attributes
    ----------
    contexts : list of Context
    pte_addrs : set of int
        Every PTE slot that was written (the racer picks from these).
    leaf_addrs : list of int
        Slots holding present leaves (the interesting race targets).
    bus_errors : list of BusErrorRange
        Ranges the memory responder must make fail.

    Raises
    ------
    ValueError
        When ``mem`` has fewer than 8 frames.
    """

    def __init__(self, mem: PhysMem, seed: int, *, ncontexts: int = 2,
                 targets_per_context: int = 24, asid_bits: int = 9):
        if mem.nframes < 8:
            raise ValueError(f"Random tables need at least 8 frames, not {mem.nframes}")
        self.mem = mem
        self.rng = random.Random(seed)
        self._next_frame = 1
        self.pte_addrs: set[int] = set()
        self.leaf_addrs: list[int] = []
        self.bus_errors: list[BusErrorRange] = []
        # Two special table frames: reads fail in one, compare-and-swaps in the other.
        self.read_err_frame = self._alloc()
        self.cas_err_frame = self._alloc()
        self.bus_errors.append(BusErrorRange(self.read_err_frame << PAGE_SHIFT,
                                             (self.read_err_frame + 1) << PAGE_SHIFT,
                                             frozenset({MemOp.READ})))
        self.bus_errors.append(BusErrorRange(self.cas_err_frame << PAGE_SHIFT,
                                             (self.cas_err_frame + 1) << PAGE_SHIFT,
                                             frozenset({MemOp.CAS, MemOp.WRITE})))
        amax = max(2, 1 << max(1, asid_bits))
        asids = self.rng.sample(range(1, amax), min(ncontexts, amax - 1))
        while len(asids) < ncontexts:      # tiny ASID spaces: contexts share an ASID
            asids.append(asids[-1])
        self.contexts = [Context(a, self._alloc()) for a in asids]
        self._shared_l1: list[int] = []
        for ctx in self.contexts:
            self._add_directed(ctx)
            for _ in range(targets_per_context):
                self._add_target(ctx)
            # A non-canonical address and an address in the CAS-error frame's range.
            ctx.targets.append((0x0000_4000_0000_1000 | (self.rng.randrange(16) << 12), None,
                                None))

    # --- frames ---------------------------------------------------------------------------

    def _alloc(self) -> int:
        if self._next_frame >= self.mem.nframes:
            return 0
        f = self._next_frame
        self._next_frame += 1
        self.mem.zero_frame(f)
        return f

    def _slot(self, table: int, va: int, level: int) -> int:
        return (table << PAGE_SHIFT) + ((va >> LEVEL_SHIFT[level]) & 511) * PTE_SIZE

    def _set(self, addr: int, val: int) -> None:
        self.mem.write(addr, val)
        self.pte_addrs.add(addr)

    # --- random entries ---------------------------------------------------------------------

    def random_leaf(self, level: int, *, misalign: bool = False) -> int:
        """A present leaf PTE for ``level`` (random permissions, A/D, U, G, PPN)."""
        rng = self.rng
        perm = rng.choice([_PAGE_R, _PAGE_R, _PAGE_R | _PAGE_W, _PAGE_R | _PAGE_W,
                           _PAGE_R | _PAGE_X, _PAGE_X, _PAGE_R | _PAGE_W | _PAGE_X])
        if rng.random() < 0.5:
            perm |= _PAGE_U
        if rng.random() < 0.1:
            perm |= _PAGE_G
        ad = rng.choice([0, _PAGE_A, _PAGE_A | _PAGE_D, _PAGE_A, 0, _PAGE_D])
        align = 9 * level
        ppn = rng.randrange(1, 1 << 20) << align
        if misalign and level:
            ppn |= rng.randrange(1, 1 << align)
        ppn &= (1 << PPN_BITS) - 1
        return pfn_pte(ppn, _PAGE_V | perm | ad)

    def random_bad(self, level: int) -> int:
        """An entry the walk must fault on (or an access fault through a bad pointer)."""
        rng = self.rng
        choice = rng.randrange(9)
        if choice == 0:
            return 0
        if choice == 1:
            return swp_entry_to_pte(swp_entry(rng.randrange(4), rng.randrange(1, 1 << 16)))
        if choice == 2:
            return swp_entry_to_pte(make_migration_entry(rng.randrange(1, 1 << 16),
                                                         rng.random() < 0.5))
        if choice == 3:
            return pgoff_to_pte(rng.randrange(1, 1 << 20)) | (_PAGE_A if rng.random() < 0.5
                                                              else 0)
        if choice == 4:
            return pfn_pte(rng.randrange(1, 1 << 20), _PAGE_V | _PAGE_W | _PAGE_A)  # W no R
        if choice == 5:
            return self.random_leaf(level) | (rng.randrange(1, 1 << 10) << RESERVED_SHIFT)
        if choice == 6 and level > 0:
            return pte_table(1) | rng.choice([_PAGE_A, _PAGE_D, _PAGE_U])          # non-leaf ADU
        if choice == 7 and level > 0:
            return pte_table(self.mem.nframes + rng.randrange(1, 1 << 12))       # outside memory
        if choice == 8 and level > 0:
            return pte_table(self.read_err_frame)                              # read error
        if level > 0:
            return self.random_leaf(level, misalign=True)
        return rng.choice([_PAGE_A | _PAGE_D,                                 # stray A/D
                           pte_table(rng.randrange(1, 1 << 20)),              # non-leaf at L0
                           pfn_pte(rng.randrange(1, 1 << 20), _PAGE_V | _PAGE_W)])

    # --- building ---------------------------------------------------------------------------

    def _add_target(self, ctx: Context) -> None:
        rng = self.rng
        vpn2 = rng.choice([0, 1, 2, 3, 255, 256, 300, 511])
        va = sign_extend_va((vpn2 << 30) | (rng.randrange(4) << 21) | (rng.randrange(8) << 12)
                            | (rng.randrange(512) << 3))
        table = ctx.root
        for level in (2, 1, 0):
            slot = self._slot(table, va, level)
            cur = self.mem.read(slot)
            if slot in self.pte_addrs:
                if (cur & _PAGE_V) and not cur & (_PAGE_R | _PAGE_W | _PAGE_X) \
                        and not cur & (_PAGE_A | _PAGE_D | _PAGE_U) and level > 0 \
                        and (cur >> 10) < self.mem.nframes and (cur >> 10) != self.read_err_frame:
                    table = cur >> 10
                    continue
                leafy = (cur & _PAGE_V) and cur & (_PAGE_R | _PAGE_X)
                ctx.targets.append((va, level if leafy else None, cur if leafy else None))
                return
            r = rng.random()
            if level == 2:
                if r < 0.12:
                    self._leaf(slot, 2, ctx, va)
                    return
                if r < 0.2:
                    self._set(slot, self.random_bad(2))
                    ctx.targets.append((va, None, None))
                    return
                if self._shared_l1 and r < 0.4:
                    nxt = rng.choice(self._shared_l1)
                else:
                    nxt = self._alloc()
                    if not nxt:
                        return
                    self._shared_l1.append(nxt)
                self._set(slot, pte_table(nxt))
                table = nxt
            elif level == 1:
                if r < 0.2:
                    self._leaf(slot, 1, ctx, va)
                    return
                if r < 0.28:
                    self._set(slot, self.random_bad(1))
                    ctx.targets.append((va, None, None))
                    return
                nxt = self.cas_err_frame if r < 0.34 else self._alloc()
                if not nxt:
                    return
                self._set(slot, pte_table(nxt))
                table = nxt
            else:
                if r < 0.12:
                    self._set(slot, self.random_bad(0))
                    ctx.targets.append((va, None, None))
                else:
                    self._leaf(slot, 0, ctx, va)
                return

    def _add_directed(self, ctx: Context) -> None:
        """One target per fault rule, so every seed reaches every rule."""
        rng = self.rng
        base = rng.choice([100, 101, 102, 400]) << 30
        t1, t0 = self._alloc(), self._alloc()
        if not (t1 and t0):
            return
        outside = self.mem.nframes + rng.randrange(1, 1 << 12)
        l2 = [(pte_table(t1), None),
              (pte_table(1) | rng.choice([_PAGE_A, _PAGE_D, _PAGE_U]), None),   # non-leaf ADU
              (self.random_leaf(2, misalign=True), None)]                       # misaligned 1G
        for i, (val, _) in enumerate(l2):
            va = sign_extend_va(base + (i << 30))
            self._set(self._slot(ctx.root, va, 2), val)
            if i:
                ctx.targets.append((va, None, None))
        l1 = [pte_table(t0),
              self.random_leaf(1, misalign=True),                               # misaligned 2M
              pte_table(1) | _PAGE_A,                                           # non-leaf A
              self.random_leaf(1) | (1 << 60),                                  # reserved bits
              pte_table(outside)]                                               # bus error
        for i, val in enumerate(l1):
            va = sign_extend_va(base + (i << 21))
            self._set(self._slot(t1, va, 1), val)
            if i:
                ctx.targets.append((va, None, None))
        l0 = [pfn_pte(rng.randrange(1, 1 << 20), _PAGE_V | _PAGE_W),              # W without R
              pte_table(rng.randrange(1, 1 << 20)),                              # non-leaf at L0
              self.random_leaf(0) | (1 << 55),                                   # reserved bits
              pfn_pte(rng.randrange(1, 1 << 20), _PAGE_V | _PAGE_R | _PAGE_W)]   # needs A and D
        for i, val in enumerate(l0):
            va = sign_extend_va(base + (i << 12))
            slot = self._slot(t0, va, 0)
            self._set(slot, val)
            leaf = i == 3
            if leaf:
                self.leaf_addrs.append(slot)
            ctx.targets.append((va, 0 if leaf else None, val if leaf else None))
        # Superpages that a store dirties (A set, D clear) and that a load then hits.
        for level, va in ((2, sign_extend_va(base + (3 << 30))),
                          (1, sign_extend_va(base + (6 << 21)))):
            ppn = rng.randrange(1, 1 << 12) << (9 * level)
            val = pfn_pte(ppn, _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_A
                          | (_PAGE_U if rng.random() < 0.5 else 0))
            slot = self._slot(ctx.root if level == 2 else t1, va, level)
            self._set(slot, val)
            self.leaf_addrs.append(slot)
            ctx.targets.append((va, level, val))
        # A leaf with A clear in the frame whose compare-and-swaps fail.
        va = sign_extend_va(base + (5 << 21) + (rng.randrange(512) << 12))
        self._set(self._slot(t1, va, 1), pte_table(self.cas_err_frame))
        slot = self._slot(self.cas_err_frame, va, 0)
        if slot not in self.pte_addrs:
            val = pfn_pte(rng.randrange(1, 1 << 20), _PAGE_V | _PAGE_R | _PAGE_X)
            self._set(slot, val)
            ctx.targets.append((va, 0, val))

    def _leaf(self, slot: int, level: int, ctx: Context, va: int) -> None:
        pte = self.random_leaf(level, misalign=self.rng.random() < 0.08)
        self._set(slot, pte)
        self.leaf_addrs.append(slot)
        ctx.targets.append((va, level, pte))

    # --- requests ---------------------------------------------------------------------------

    def pick_va(self, ctx: Context, rng: random.Random) -> int:
        """A virtual address to request in ``ctx``: a target, anywhere inside its page."""
        return self.pick_request(ctx, rng)[0]

    def pick_request(self, ctx: Context, rng: random.Random, *, p_legal: float = 0.75,
                     p_mxr: float = 0.25):
        """``(va, op, user, sum, mxr)`` for a request in ``ctx``.

        With probability ``p_legal`` the access is one the target's leaf (as built) permits:
        an op among its R/W/X (a load of an execute-only leaf with mstatus.MXR set) and the
        privilege its U bit asks for; otherwise all random.  MXR is set with probability
        ``p_mxr`` on every other request, so loads of execute-only pages are seen with it
        off (a page fault) and on (a translation)."""
        va, level, pte = rng.choice(ctx.targets)
        if level is not None:
            shift = LEVEL_SHIFT[level]
            va = (va & ~((1 << shift) - 1)) | (rng.randrange(1 << shift) & ~7)
        mxr = rng.random() < p_mxr
        if pte is not None and rng.random() < p_legal:
            ops = [op for op, bit in ((AccessType.LOAD, _PAGE_R), (AccessType.STORE, _PAGE_W),
                                      (AccessType.FETCH, _PAGE_X)) if pte & bit]
            if pte & _PAGE_R:
                ops.append(AccessType.LOAD)
            if pte & _PAGE_W:
                ops += [AccessType.STORE]
            if pte & _PAGE_X and not pte & _PAGE_R:
                ops += [AccessType.LOAD, AccessType.LOAD]       # legal with MXR only
            op = rng.choice(ops) if ops else AccessType.LOAD
            if op == AccessType.LOAD and not pte & _PAGE_R:
                mxr = True
            if pte & _PAGE_U:       # U page: U-mode, or S-mode with SUM
                user = rng.random() < 0.8
                sum_ = True
            else:                   # S page: S-mode, SUM either way
                user = False
                sum_ = rng.random() < 0.5
            return va, op, user, sum_, mxr
        op = rng.choice([AccessType.LOAD, AccessType.STORE, AccessType.FETCH])
        return va, op, rng.random() < 0.5, rng.random() < 0.5, mxr
