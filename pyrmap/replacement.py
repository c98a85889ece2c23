"""TLB replacement policies, registered once for the golden model and the RTL.

:data:`REPLACEMENT_POLICIES` maps a name (``MmuConfig.replacement``, ``SoftArch``'s
``replacement``) to a :class:`ReplacementPolicy`: what it does, the geometry it needs, its
model implementation (used by :class:`pyrmap.softarch.Tlb`) and its gateware implementation
(used by :class:`hdl.tlb.Tlb`; ``hdl.tlb`` attaches it with :func:`gateware` when it is
imported, because pyrmap does not import hdl).

Both implementations take the same decision: the victim of a full set (an invalid way is
always taken first, by the caller) and how a use changes the state.  Adding a policy is one
:func:`register_replacement` call with its model class here and one ``@gateware(name)`` class
in ``hdl/tlb.py``; ``tests/test_hdl_tlb.py`` compares them entry for entry.

Example
-------
>>> import random
>>> from pyrmap.replacement import REPLACEMENT_POLICIES
>>> state = REPLACEMENT_POLICIES["fifo"].model(1, 4, random.Random(1))
>>> [state.choose(0) for _ in range(5)]
[0, 1, 2, 3, 0]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

__all__ = ["ReplacementPolicy", "REPLACEMENT_POLICIES", "register_replacement", "gateware",
           "PlruModel", "FifoModel", "RandomModel"]


class PlruModel:
    """Tree pseudo-LRU per set: ``ways - 1`` bits in heap order; a bit says which half the
    victim is in (1: the right half).  The same tree and bit convention as the gateware."""

    def __init__(self, nsets: int, ways: int, rng: random.Random):
        self.ways = ways
        self.bits = [0] * nsets
        #: Per way, the bits a use of it sets and the bits it keeps: the nodes on the path
        #: from the root to the way point away from it, every other bit stays.
        self._sets: list[int] = []
        self._keeps: list[int] = []
        for way in range(ways):
            sets = clears = 0
            node, lo, hi = 0, 0, ways
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if way < mid:             # accessed the left half: victim goes right
                    sets |= 1 << node
                    node, hi = 2 * node + 1, mid
                else:
                    clears |= 1 << node
                    node, lo = 2 * node + 2, mid
            self._sets.append(sets)
            self._keeps.append(~clears)

    def touch(self, s: int, way: int) -> None:
        self.bits[s] = (self.bits[s] | self._sets[way]) & self._keeps[way]

    def choose(self, s: int) -> int:
        bits = self.bits[s]
        node, lo, hi = 0, 0, self.ways
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if bits >> node & 1:
                node, lo = 2 * node + 2, mid
            else:
                node, hi = 2 * node + 1, mid
        return lo


class FifoModel:
    """Round robin per set: the victim pointer advances on every fill over a victim."""

    def __init__(self, nsets: int, ways: int, rng: random.Random):
        self.ways = ways
        self.ptr = [0] * nsets

    def touch(self, s: int, way: int) -> None:
        pass

    def choose(self, s: int) -> int:
        way = self.ptr[s]
        self.ptr[s] = (way + 1) % self.ways
        return way


class RandomModel:
    """A seeded random way (the RTL's LFSR advances every cycle, so the model matches it only
    in distribution, not entry for entry)."""

    def __init__(self, nsets: int, ways: int, rng: random.Random):
        self.ways = ways
        self.rng = rng

    def touch(self, s: int, way: int) -> None:
        pass

    def choose(self, s: int) -> int:
        return self.rng.randrange(self.ways)


@dataclass
class ReplacementPolicy:
    """One replacement policy.

    Attributes
    ----------
    name : str
        ``"plru"``, ``"fifo"``, ``"random"``.
    label : str
        How errors name it (``"PLRU"``).
    doc : str
        One line: what it does.
    pow2_ways : bool
        Needs a power-of-two number of ways (a tree over the ways).
    model : type
        ``model(nsets, ways, rng)`` with ``touch(set, way)`` and ``choose(set) -> way``.
    gateware : type or None
        The Amaranth implementation, attached by ``hdl.tlb`` (:func:`gateware`).
    """
    name: str
    label: str
    doc: str
    pow2_ways: bool
    model: type
    gateware: Optional[type] = None


#: name -> :class:`ReplacementPolicy`.
REPLACEMENT_POLICIES: dict[str, ReplacementPolicy] = {}


def register_replacement(name: str, label: str, doc: str, *, pow2_ways: bool,
                         model: type) -> ReplacementPolicy:
    """Register a policy (its model implementation).

    Raises
    ------
    ValueError
        ``name`` is registered already.
    """
    if name in REPLACEMENT_POLICIES:
        raise ValueError(f"Replacement policy {name!r} is already registered")
    policy = REPLACEMENT_POLICIES[name] = ReplacementPolicy(name, label, doc, pow2_ways, model)
    return policy


def gateware(name: str):
    """Class decorator (``hdl.tlb``): the Amaranth implementation of policy ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a registered policy (register its model first).
    """
    def attach(cls: type) -> type:
        if name not in REPLACEMENT_POLICIES:
            raise ValueError(f"Replacement policy {name!r} is not registered; known: "
                             f"{', '.join(REPLACEMENT_POLICIES)}")
        REPLACEMENT_POLICIES[name].gateware = cls
        return cls
    return attach


register_replacement("plru", "PLRU", "tree pseudo-LRU per set", pow2_ways=True,
                     model=PlruModel)
register_replacement("random", "random", "a pseudo-random way (RTL: a 16-bit LFSR)",
                     pow2_ways=False, model=RandomModel)
register_replacement("fifo", "FIFO", "round robin per set", pow2_ways=False, model=FifoModel)
