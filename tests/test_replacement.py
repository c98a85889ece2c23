"""Replacement policies registered once (pyrmap.replacement): every policy has its model and
its gateware, the golden model and the RTL validate and use the same table, and a clash is
refused.  (tests/test_hdl_tlb.py compares the model and the RTL entry for entry.)"""

import random

import pytest

import hdl.tlb  # noqa: F401 - attaches the gateware implementations
from hdl.config import REPLACEMENTS as HDL_REPLACEMENTS
from pyrmap.replacement import REPLACEMENT_POLICIES, gateware, register_replacement
from pyrmap.softarch import REPLACEMENTS as MODEL_REPLACEMENTS
from pyrmap.softarch import Tlb as ModelTlb


def test_every_policy_has_a_model_and_a_gateware():
    assert set(REPLACEMENT_POLICIES) == {"plru", "random", "fifo"}
    assert HDL_REPLACEMENTS == MODEL_REPLACEMENTS == tuple(REPLACEMENT_POLICIES)
    for p in REPLACEMENT_POLICIES.values():
        assert p.model is not None and p.gateware is not None, p
        assert p.doc and p.label


def test_a_second_registration_and_an_unknown_gateware_are_refused():
    with pytest.raises(ValueError, match="Replacement policy 'plru' is already registered"):
        register_replacement("plru", "PLRU", "again", pow2_ways=True, model=object)
    with pytest.raises(ValueError, match="Replacement policy 'lru' is not registered; known: "
                                         "plru, random, fifo"):
        gateware("lru")(object)


def test_models_choose_as_documented():
    plru = REPLACEMENT_POLICIES["plru"].model(1, 4, random.Random(1))
    for way in (0, 1, 2):
        plru.touch(0, way)
    assert plru.choose(0) == 0          # the pair {0, 1} is older than 2; 0 older than 1
    plru.touch(0, 0)
    assert plru.choose(0) == 3          # now the pair {2, 3}, and 3 was never used
    fifo = REPLACEMENT_POLICIES["fifo"].model(2, 2, random.Random(1))
    assert [fifo.choose(0), fifo.choose(0), fifo.choose(1), fifo.choose(0)] == [0, 1, 0, 0]
    rnd = REPLACEMENT_POLICIES["random"].model(1, 4, random.Random(7))
    assert {rnd.choose(0) for _ in range(64)} == {0, 1, 2, 3}


def test_both_sides_take_the_geometry_rule_from_the_policy():
    from hdl.tlb import Tlb
    with pytest.raises(ValueError, match="PLRU replacement needs a power-of-two number of "
                                         "ways, not 3"):
        Tlb(entries=3, ways=3, replacement="plru")
    with pytest.raises(ValueError, match="PLRU replacement needs a power-of-2 number of "
                                         "ways, not 3"):
        ModelTlb(3, 3, "plru")
    Tlb(entries=3, ways=3, replacement="fifo")        # FIFO takes any number of ways
    ModelTlb(3, 3, "fifo")
    with pytest.raises(ValueError, match="Replacement must be one of 'plru', 'random', "
                                         "'fifo', not 'lru'"):
        ModelTlb(4, 4, "lru")
