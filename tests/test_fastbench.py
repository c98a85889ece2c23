"""The reclaim figure's sizing guard (:func:`cosim.fastbench.reclaim_sized`): a run stands for a
machine that reclaims as a real one does only with faults under 1 % and every kind of kernel
work done."""

from __future__ import annotations

import pytest

from cosim.fastbench import (RECLAIM_LONG, RECLAIM_MAX_FAULT_RATE, RECLAIM_PERIOD, RECLAIM_WORK,
                             reclaim_env, reclaim_sized)


def _rep(**kw):
    rep = {"fault_rate": 0.002, "kernel_steps": 7,
           "kernel_figures": {key: 5 for key in RECLAIM_WORK}}
    rep.update(kw)
    return rep


def test_a_sized_run_passes():
    assert reclaim_sized(_rep()) == []


def test_faults_at_the_bound_fail():
    bad = reclaim_sized(_rep(fault_rate=RECLAIM_MAX_FAULT_RATE))
    assert len(bad) == 1 and "faults on 1.00%" in bad[0]


def test_no_kernel_step_fails():
    assert reclaim_sized(_rep(kernel_steps=0)) == ["no kernel step ran"]


@pytest.mark.parametrize("key", RECLAIM_WORK)
def test_kernel_work_not_done_fails(key):
    rep = _rep()
    rep["kernel_figures"][key] = 0
    assert reclaim_sized(rep) == [f"{key} is 0"]


def test_a_short_run_has_kernel_steps_twice_as_often():
    assert reclaim_env(RECLAIM_LONG)["FAST_PERIOD"] == RECLAIM_PERIOD
    assert reclaim_env(RECLAIM_LONG - 1)["FAST_PERIOD"] == RECLAIM_PERIOD // 2
    assert reclaim_env(RECLAIM_LONG)["FAST_MODE"] == "zipf"
