"""The overlap checker (tests/arena_check.py), which tests/conftest.py runs on every memory plan the tests make:
it is on, it accepts the C backend's plans (whose convolutions write over the input bytes they have read), its
byte-level walk agrees with the shifts backends/c/overlap.py declares (tight: one byte less fails), and it refuses
plans corrupted in each way that would lose a byte still to be read."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycc.memory
from tinycc.backends.c import CBackend
from tinycc.backends.c.overlap import c_overlaps, walks_backward
from tinycc.memory import Buffer, check_placement, lower_bound, plan_buffers
from tinycc.passes import PassContext, run_pipeline

from . import arena_check
from .arena_check import PlanError, check_plan, walk_safe
from .conftest import MLPERF_MODELS
from .deploy_util import build_deployment
from .test_kernels import random_graph

# conv 3x3 same, depthwise 3x3 stride 2, pointwise, depthwise 5x5 dilated, conv 2x3 valid; a tanh after layer 2
LAYERS = [(0, 3, 3, 1, 1, True, 8, 1, True), (1, 3, 3, 2, 1, True, 8, 2, True), (2, 1, 1, 1, 1, False, 12, 0, True),
          (1, 5, 5, 1, 2, True, 12, 1, False), (0, 2, 3, 1, 1, False, 6, 0, True)]
MLPERF = ["pretrainedResnet_quant", "kws_ref_model", "vww_96_int8"]


def _synthetic(session):
    g = random_graph(LAYERS, hw=(17, 15), seed=3, after={2: "tanh"})
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    calib = np.random.default_rng(3).normal(0, 1, (16, 17, 15, 3)).astype(np.float32)
    return build_deployment(g, {"calib_data": calib, "buffer": 2, "cut": "fc"}, session, CBackend())


def _deployments(session):
    yield "synthetic", _synthetic(session)
    for name in MLPERF:
        path = MLPERF_MODELS / f"{name}.tflite"
        if path.exists():
            yield name, build_deployment(session.registry.frontend_for(str(path)).load(str(path)), {"buffer": 2},
                                         session, CBackend())


def test_every_plan_the_tests_make_is_checked(session) -> None:
    assert tinycc.memory.plan.__wrapped__ is not None  # conftest's wrapper
    before = dict(arena_check.checked)
    dep = _synthetic(session)
    assert dep.plan.overlaps  # convolutions written over their inputs
    assert arena_check.checked["plans"] > before["plans"]
    assert arena_check.checked["overlapping_ops"] >= before["overlapping_ops"] + len(dep.plan.overlaps)


def test_checker_walk_agrees_with_the_declared_shifts(session) -> None:
    """Every declared convolution shift passes the checker's own byte walk, and one byte less (a forward walk's
    output one byte closer below its input, a backward walk's one byte closer above) fails it."""
    seen = 0
    for name, dep in _deployments(session):
        g = dep.extractor
        for op in g.ops:
            d = c_overlaps(g, "tinycc").get(op.outputs[0])
            if d is None:
                continue
            back = walks_backward(g, op, "tinycc")
            assert (d < 0) == back, (name, op.name)
            assert walk_safe(g, op, d, back), (name, op.name, d)
            if d > 0:
                assert not walk_safe(g, op, d - 1, False), (name, op.name, d)
            elif d < -1:
                assert not walk_safe(g, op, d + 1, True), (name, op.name, d)
            seen += 1
    assert seen >= 5


def _moved(p, g, **offsets: int):
    """The plan with tensors moved (the arena grown to hold them: only the move is wrong)."""
    end = max(v + g.tensors[t].nbytes for t, v in offsets.items())
    for op in g.ops:  # a view (reshape, flatten) moves with its tensor
        if op.kind in arena_check.VIEWS and op.inputs[0] in offsets:
            offsets[op.outputs[0]] = offsets[op.inputs[0]]
    return dataclasses.replace(p, offsets={**p.offsets, **offsets}, arena=max(p.arena, end))


def test_checker_refuses_corrupted_plans(session) -> None:
    refused = {"overlap": 0, "live": 0, "kernel": 0}
    for name, dep in _deployments(session):
        g, p = dep.extractor, dep.plan
        declared = c_overlaps(g, "tinycc")
        check_plan(g, p, declared)
        producer = {op.outputs[0]: op for op in g.ops}
        for o in p.overlaps:  # each overlapping output moved onto its input's first byte: an unsafe walk
            src = producer[o].inputs[0]
            with pytest.raises(PlanError, match=f"writes {o} over bytes of {src}"):
                check_plan(g, _moved(p, g, **{o: p.offsets[src]}), declared)
            with pytest.raises(PlanError):  # the same plan, the overlap not declared
                check_plan(g, p, {k: v for k, v in declared.items() if k != o})
            refused["overlap"] += 1
        last = {t: i for i, op in enumerate(g.ops) for t in op.inputs}
        for i, op in enumerate(g.ops):
            out = op.outputs[0]
            if op.kind in arena_check.VIEWS or out not in p.offsets:
                continue
            live = [t for t in p.offsets if t in producer and g.ops.index(producer[t]) < i and last.get(t, -1) > i
                    and producer[t].kind not in arena_check.VIEWS]
            if live:  # over a tensor that is read after this op (a residual branch)
                with pytest.raises(PlanError, match="still to be read"):
                    check_plan(g, _moved(p, g, **{out: p.offsets[live[0]]}), declared)
                refused["live"] += 1
            if op.kind not in arena_check.ELEMENTWISE + arena_check.CONVS and op.inputs[0] in p.offsets:
                with pytest.raises(PlanError, match=f"writes {out} over bytes of"):  # no such kernel reads first
                    check_plan(g, _moved(p, g, **{out: p.offsets[op.inputs[0]]}), declared)
                refused["kernel"] += 1
        big = max(p.offsets, key=lambda t: g.tensors[t].nbytes)
        with pytest.raises(PlanError, match="outside"):
            check_plan(g, dataclasses.replace(p, offsets={**p.offsets, big: p.arena}), declared)
    assert refused["overlap"] >= 3 and refused["kernel"] >= 1, refused
    if (MLPERF_MODELS / "pretrainedResnet_quant.tflite").exists():
        assert refused["live"] >= 1, refused


def test_checker_refuses_an_element_wise_op_written_beside_its_input(session) -> None:
    dep = _synthetic(session)
    g, p = dep.extractor, dep.plan
    tanh = next(op for op in g.ops if op.kind.value == "tanh")
    src, out = tanh.inputs[0], tanh.outputs[0]
    assert p.offsets[out] == p.offsets[src]  # in place
    check_plan(g, p, c_overlaps(g, "tinycc"))
    with pytest.raises(PlanError, match=f"writes {out} over bytes of {src}"):
        check_plan(g, _moved(p, g, **{out: p.offsets[src] + 16}), c_overlaps(g, "tinycc"))


chain_sizes = st.lists(st.integers(1, 60), min_size=2, max_size=14)


@settings(max_examples=200, deadline=None)
@given(sizes=chain_sizes)
def test_a_chain_of_buffers_is_planned_at_its_separate_buffer_bound(sizes: list[int]) -> None:
    """Each buffer live with the next only (a sequential model without in-place ops): the planner reaches the
    bound, the largest adjacent pair (lowest-offset orders alone left holes: conv1d_sensor with int16 activations
    needed 1,696 B for a 1,376 B bound)."""
    bufs = [Buffer(f"t{i}", 16 * s, i, i + 1) for i, s in enumerate(sizes)]
    arena, _, placed = plan_buffers(bufs, "best")
    check_placement(placed, {})
    assert arena == lower_bound(bufs) == max(16 * (a + b) for a, b in zip(sizes, sizes[1:]))


def test_the_int16_sensor_chain_fits_its_bound() -> None:
    sizes = [240, 272, 640, 320, 640, 736, 272, 144, 144, 32, 32, 16]  # conv1d_sensor, int16 activations, AVR
    bufs = [Buffer(f"t{i}", s, i, i + 1) for i, s in enumerate(sizes)]
    assert plan_buffers(bufs, "greedy")[0] > lower_bound(bufs) == 1376
    assert plan_buffers(bufs, "best")[0] == 1376
