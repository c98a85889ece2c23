"""The independent TLB models: stack distances and OPT against brute force."""

import functools
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosim.explore.models import (INF, lru_misses, opt_misses, page_refs, stack_distance_check,
                                  stack_distances)


def brute_lru(pages, sets, ways):
    cache = [OrderedDict() for _ in range(sets)]
    misses = 0
    for p in pages:
        s = cache[p % sets]
        if p in s:
            s.move_to_end(p)
            continue
        misses += 1
        if len(s) >= ways:
            s.popitem(last=False)
        s[p] = True
    return misses


def brute_opt(pages, entries):
    """The fewest misses over every eviction choice (exhaustive, small streams)."""
    @functools.lru_cache(maxsize=None)
    def best(i, resident):
        if i == len(pages):
            return 0
        p = pages[i]
        if p in resident:
            return best(i + 1, resident)
        if len(resident) < entries:
            return 1 + best(i + 1, resident | {p})
        return 1 + min(best(i + 1, (resident - {q}) | {p}) for q in resident)
    return best(0, frozenset())


streams = st.lists(st.integers(0, 11), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(streams, st.sampled_from([1, 2, 4]), st.integers(1, 6))
def test_stack_distances_give_lru_misses_for_every_size(pages, sets, ways):
    pages = np.array(pages, dtype=np.int64)
    d = stack_distances(pages, sets)
    assert lru_misses(d, ways) == brute_lru(pages.tolist(), sets, ways)
    # a bounded stack is exact below its depth
    assert lru_misses(stack_distances(pages, sets, max_depth=ways), ways) == \
        brute_lru(pages.tolist(), sets, ways)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=14), st.integers(1, 3))
def test_opt_is_the_fewest_misses(pages, entries):
    got = opt_misses(np.array(pages, dtype=np.int64), entries)
    assert got == brute_opt(tuple(pages), entries)
    assert got <= brute_lru(pages, 1, entries)


def test_first_touch_is_infinite_and_straddles_are_one_access():
    assert stack_distances(np.array([5, 6, 5, 5]), 1).tolist() == [INF, INF, 1, 0]
    va = np.array([0x1ffc, 0x1000, 0x5000], dtype=np.uint64)
    pages, access = page_refs(va, np.array([8, 8, 4], dtype=np.uint16))
    assert pages.tolist() == [1, 2, 1, 5] and access.tolist() == [0, 0, 1, 2]
    d = stack_distances(pages, 1)
    # access 0 misses on both pages (one miss), access 1 hits page 1, access 2 misses
    assert lru_misses(d, 4, access) == 2 and lru_misses(d, 4) == 3
    with pytest.raises(ValueError, match="sets must be a power of two, not 3"):
        stack_distances(pages, 3)


def test_stack_distance_check_fails_below_opt():
    pages = np.array([1, 2, 3, 1, 2, 3, 4, 1], dtype=np.int64)
    opt = opt_misses(pages, 2)
    assert stack_distance_check(pages, opt, entries=2, ways=2)["verdict"] == "pass"
    bad = stack_distance_check(pages, opt - 1, entries=2, ways=2)
    assert bad["verdict"] == "fail" and "Belady's OPT" in bad["detail"]
    assert stack_distance_check(pages, 99, entries=2, ways=2)["verdict"] == "fail"
    assert stack_distance_check(pages, 5, entries=4, ways=2)["verdict"] == "not exercised"


def test_stack_distance_check_per_core_streams_and_squashes():
    a = np.array([1, 2, 3, 1, 2, 3], dtype=np.int64)
    b = np.array([7, 8, 7, 8], dtype=np.int64)
    opt_a, opt_b = opt_misses(a, 2), opt_misses(b, 2)
    ok = stack_distance_check([a, b], [opt_a, opt_b], entries=2, ways=2)
    assert ok["verdict"] == "pass" and ok["opt_misses"] == opt_a + opt_b == 4 + 2
    assert stack_distance_check([a, b], [opt_a - 1, opt_b], entries=2,
                                ways=2)["verdict"] == "fail"
    assert stack_distance_check([a, b], [opt_a - 1, opt_b], entries=2, ways=2,
                                squashes=1)["verdict"] == "pass"
    assert stack_distance_check([a, b], [0, 5], entries=2, ways=2)["verdict"] == "fail"
    with pytest.raises(ValueError, match="2 page streams but 1 miss counts"):
        stack_distance_check([a, b], [3], entries=2, ways=2)
