"""An interval index for ``mapping->i_mmap`` (the 2008 kernel's prio tree).

Closed intervals [first, last] of page offsets, each carrying an item (a VMA).  A stabbing query
returns every item whose interval contains a point in O(log n + k): the index is a centred
interval tree, rebuilt lazily (in O(n log n)) after the set changed.  Items with equal
intervals are returned in insertion order, as the kernel's vma_prio_tree_foreach does for
identical ranges.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class _Node:
    __slots__ = ("center", "by_first", "by_last", "left", "right")

    def __init__(self, center, by_first, by_last, left, right):
        self.center = center
        self.by_first = by_first    # intervals containing center, ascending first
        self.by_last = by_last      # the same, descending last
        self.left = left
        self.right = right


class IntervalIndex(Generic[T]):
    def __init__(self):
        self._items: dict[int, tuple[int, int, int, T]] = {}  # id(item) -> (first, last, seq, item)
        self._seq = 0
        self._root: _Node | None = None
        self._dirty = False

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        for _, _, _, item in sorted(self._items.values(), key=lambda e: e[2]):
            yield item

    def __contains__(self, item) -> bool:
        return id(item) in self._items

    def insert(self, first: int, last: int, item: T) -> None:
        if last < first:
            raise ValueError(f"Empty interval [{first}, {last}]")
        if id(item) in self._items:
            raise ValueError(f"{item!r} is already in the index")
        self._items[id(item)] = (first, last, self._seq, item)
        self._seq += 1
        self._dirty = True

    def remove(self, item: T) -> None:
        if self._items.pop(id(item), None) is None:
            raise KeyError(f"{item!r} is not in the index")
        self._dirty = True

    def _build(self, entries) -> _Node | None:
        if not entries:
            return None
        points = sorted(p for e in entries for p in (e[0], e[1]))
        center = points[len(points) // 2]
        here, left, right = [], [], []
        for e in entries:
            if e[1] < center:
                left.append(e)
            elif e[0] > center:
                right.append(e)
            else:
                here.append(e)
        return _Node(center,
                     sorted(here, key=lambda e: (e[0], e[2])),
                     sorted(here, key=lambda e: (-e[1], e[2])),
                     self._build(left), self._build(right))

    def stab(self, point: int) -> list[T]:
        """Every item whose interval contains ``point``, in insertion order."""
        if self._dirty:
            self._root = self._build(list(self._items.values()))
            self._dirty = False
        found = []
        node = self._root
        while node is not None:
            if point < node.center:
                for e in node.by_first:
                    if e[0] > point:
                        break
                    found.append(e)
                node = node.left
            elif point > node.center:
                for e in node.by_last:
                    if e[1] < point:
                        break
                    found.append(e)
                node = node.right
            else:
                found.extend(node.by_first)
                break
        found.sort(key=lambda e: e[2])
        return [e[3] for e in found]
