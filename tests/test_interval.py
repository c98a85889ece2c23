"""IntervalIndex: stabbing queries agree with brute force; insertion order is kept."""

import pytest
from hypothesis import given, settings, strategies as st

from pyrmap.interval import IntervalIndex

intervals = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=40)


@settings(max_examples=200, derandomize=True)
@given(intervals, st.lists(st.integers(0, 85), max_size=10), st.data())
def test_stab_matches_brute_force(spans, points, data):
    idx = IntervalIndex()
    items = []
    for first, length in spans:
        item = object()
        idx.insert(first, first + length, item)
        items.append((first, first + length, item))
    if items:
        drop = data.draw(st.lists(st.integers(0, len(items) - 1), unique=True))
        for i in drop:
            idx.remove(items[i][2])
        items = [it for j, it in enumerate(items) if j not in set(drop)]
    for p in points:
        expect = [it for (f, l, it) in items if f <= p <= l]
        assert idx.stab(p) == expect


def test_errors():
    idx = IntervalIndex()
    a = object()
    idx.insert(1, 2, a)
    with pytest.raises(ValueError, match="already in the index"):
        idx.insert(1, 2, a)
    with pytest.raises(ValueError, match="Empty interval"):
        idx.insert(3, 2, object())
    idx.remove(a)
    with pytest.raises(KeyError):
        idx.remove(a)


def test_tree_stays_shallow_and_consistent_under_churn():
    """16k intervals inserted and half removed: the treap's height stays logarithmic (a
    rebuild-free index that degenerated into a list would be 16k deep) and every subtree's
    augmented maximum is right."""
    import random
    rng = random.Random(5)
    idx = IntervalIndex()
    items = []
    for k in range(16384):
        first = rng.randrange(1 << 20)
        item = (k,)
        idx.insert(first, first + rng.randrange(64), item)
        items.append(item)
    for item in items[::2]:
        idx.remove(item)
    assert len(idx) == 8192
    assert idx.depth() < 60

    def check(n):
        if n is None:
            return -1
        m = max(n.last, check(n.left), check(n.right))
        assert n.maxlast == m
        if n.left is not None:
            assert n.left.key < n.key and n.left.prio <= n.prio
        if n.right is not None:
            assert n.right.key > n.key and n.right.prio <= n.prio
        return m

    import sys
    sys.setrecursionlimit(10000)
    check(idx._root)
