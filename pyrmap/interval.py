"""An interval index for ``mapping->i_mmap`` (the 2008 kernel's prio tree).

Closed intervals [first, last] of page offsets, each carrying an item (a VMA).  The index is a
treap ordered by (first, insertion sequence) and augmented with the largest ``last`` of each
subtree, so that

* ``insert`` and ``remove`` cost O(log n) (expected; the heap priorities are a fixed hash of the
  insertion sequence, so the shape is deterministic), as the kernel's prio tree does;
* a stabbing query returns every item whose interval contains a point in O(log n + k): a
  subtree whose largest ``last`` is below the point, or whose smallest ``first`` is above it,
  is skipped whole.

Items with equal intervals are returned in insertion order, as the kernel's
vma_prio_tree_foreach does for identical ranges; every query returns its items in insertion
order.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")

_MASK = (1 << 64) - 1


def _priority(seq: int) -> int:
    # splitmix64 of the sequence number: a fixed, well-mixed heap priority.
    z = (seq + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class _Node:
    __slots__ = ("key", "first", "last", "seq", "item", "prio", "left", "right", "maxlast")

    def __init__(self, first, last, seq, item):
        self.key = (first, seq)
        self.first = first
        self.last = last
        self.seq = seq
        self.item = item
        self.prio = _priority(seq)
        self.left = None
        self.right = None
        self.maxlast = last


def _update(n: _Node) -> None:
    m = n.last
    if n.left is not None and n.left.maxlast > m:
        m = n.left.maxlast
    if n.right is not None and n.right.maxlast > m:
        m = n.right.maxlast
    n.maxlast = m


def _insert(n: _Node | None, new: _Node) -> _Node:
    if n is None:
        return new
    if new.key < n.key:
        n.left = _insert(n.left, new)
        if n.left.prio > n.prio:            # rotate right
            top = n.left
            n.left = top.right
            _update(n)
            top.right = n
            n = top
    else:
        n.right = _insert(n.right, new)
        if n.right.prio > n.prio:           # rotate left
            top = n.right
            n.right = top.left
            _update(n)
            top.left = n
            n = top
    _update(n)
    return n


def _merge(a: _Node | None, b: _Node | None) -> _Node | None:
    """Join two treaps, every key of ``a`` below every key of ``b``."""
    if a is None:
        return b
    if b is None:
        return a
    if a.prio > b.prio:
        a.right = _merge(a.right, b)
        _update(a)
        return a
    b.left = _merge(a, b.left)
    _update(b)
    return b


def _remove(n: _Node, key) -> _Node | None:
    if key < n.key:
        n.left = _remove(n.left, key)
    elif key > n.key:
        n.right = _remove(n.right, key)
    else:
        return _merge(n.left, n.right)
    _update(n)
    return n


class IntervalIndex(Generic[T]):
    """Closed intervals of page offsets with an item each; see the module docstring."""

    def __init__(self):
        self._nodes: dict[int, _Node] = {}   # id(item) -> node
        self._seq = 0
        self._root: _Node | None = None

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[T]:
        for n in sorted(self._nodes.values(), key=lambda n: n.seq):
            yield n.item

    def __contains__(self, item) -> bool:
        return id(item) in self._nodes

    def insert(self, first: int, last: int, item: T) -> None:
        """Add ``item`` over [first, last]; O(log n)."""
        if last < first:
            raise ValueError(f"Empty interval [{first}, {last}]")
        if id(item) in self._nodes:
            raise ValueError(f"{item!r} is already in the index")
        node = _Node(first, last, self._seq, item)
        self._seq += 1
        self._nodes[id(item)] = node
        self._root = _insert(self._root, node)

    def remove(self, item: T) -> None:
        """Take ``item`` out; O(log n).  Raises KeyError when it is not in the index."""
        node = self._nodes.pop(id(item), None)
        if node is None:
            raise KeyError(f"{item!r} is not in the index")
        self._root = _remove(self._root, node.key)

    def stab(self, point: int) -> list[T]:
        """Every item whose interval contains ``point``, in insertion order."""
        found = []
        stack = [self._root]
        while stack:
            n = stack.pop()
            if n is None or n.maxlast < point:
                continue
            stack.append(n.left)
            if n.first <= point:             # else the right subtree starts above point too
                if point <= n.last:
                    found.append(n)
                stack.append(n.right)
        found.sort(key=lambda n: n.seq)
        return [n.item for n in found]

    def depth(self) -> int:
        """Height of the tree (for tests of the balance)."""
        best = 0
        stack = [(self._root, 1)]
        while stack:
            n, d = stack.pop()
            if n is not None:
                best = max(best, d)
                stack += [(n.left, d + 1), (n.right, d + 1)]
        return best
