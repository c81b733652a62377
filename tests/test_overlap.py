"""Overlapping buffers: the shift a C convolution needs to write its output over input bytes it has already read
(backends/c/overlap.py, checked byte by byte), the planner's placement of such pairs (tinycc/memory.py) and the
MLPerf Tiny arenas against both lower bounds. The generated C with these plans is bit-exact against the int8
interpreter in tests/test_kernels.py (MLPerf Tiny, 100 inputs, ASan/UBSan; first vector under QEMU)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycc.backends.c import CBackend
from tinycc.backends.c.overlap import (Geometry, backward_shift, c_overlaps, flip, geometry, need, order_safe,
                                       shift, walks_backward)
from tinycc.ir.ops import same_padding
from tinycc.memory import Buffer, check_placement, lower_bound, overlap_bound, plan, plan_buffers

from .conftest import mlperf_model
from .deploy_util import build_deployment

GEO = st.tuples(st.integers(1, 11), st.integers(1, 11), st.integers(1, 9), st.integers(1, 17), st.integers(1, 5),
                st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.booleans())


def _geometry(ih, iw, ic, oc, kh, kw, sh, sw, dil, same) -> Geometry | None:
    kh, kw = min(kh, (ih - 1) // dil + 1), min(kw, (iw - 1) // dil + 1)
    if same:
        oh, ow = -(-ih // sh), -(-iw // sw)
        pt, pl = same_padding(ih, kh, sh, dil)[0], same_padding(iw, kw, sw, dil)[0]
    else:
        oh, ow = (ih - (kh - 1) * dil - 1) // sh + 1, (iw - (kw - 1) * dil - 1) // sw + 1
        pt = pl = 0
    return Geometry(ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dil, dil, pt, pl)


@settings(max_examples=300, deadline=None)
@given(spec=GEO)
def test_shift_is_the_least_shift_the_byte_level_check_accepts(spec) -> None:
    geo = _geometry(*spec)
    d = shift(geo)
    assert order_safe(geo, d)
    assert order_safe(geo, d + 16)  # any larger shift too
    if d > 0:
        assert not order_safe(geo, d - 1)


def _walk_is_safe(geo: Geometry, start: int, backward: bool) -> bool:
    """Oracle for one placement: the output starts ``start`` bytes after the input's first byte (negative: below)
    in one shared memory; output pixels are visited in blocks of one or two consecutive pixels (forward in
    pixel order, backward last first), a block's reads and writes in any order among themselves (the kernels
    write one group of channels before reading the next), every channel of a pixel read when its window is.
    Safe when, for both ways of pairing the pixels, no block reads a byte that it or an earlier block wrote."""
    p = geo.oh * geo.ow

    def reads(q: int) -> set[int]:
        oy, ox = divmod(q, geo.ow)
        out: set[int] = set()
        for ky in range(geo.kh):
            for kx in range(geo.kw):
                iy, ix = oy * geo.sh - geo.pt + ky * geo.dh, ox * geo.sw - geo.pl + kx * geo.dw
                if 0 <= iy < geo.ih and 0 <= ix < geo.iw:
                    out.update(range((iy * geo.iw + ix) * geo.ic, (iy * geo.iw + ix + 1) * geo.ic))
        return out

    for first in (1, 2):  # pairs (0, 1), (2, 3), ... or (0), (1, 2), ...
        blocks = [[0]] if first == 1 else []
        blocks += [list(range(b, min(b + 2, p))) for b in range(first % 2, p, 2) if b < p]
        written: set[int] = set()
        for block in reversed(blocks) if backward else blocks:
            mine = {b for q in block for b in range(start + q * geo.oc, start + (q + 1) * geo.oc)}
            if any(not (reads(q).isdisjoint(written) and reads(q).isdisjoint(mine)) for q in block):
                return False
            written |= mine
    return True


@settings(max_examples=150, deadline=None)
@given(spec=GEO)
def test_backward_shift_is_the_least_safe_start_above_the_input(spec) -> None:
    """A backward walk (the fast depthwise kernel) may start its output backward_shift bytes above its input and
    no lower, by a direct simulation of its reads and writes; the shift is the flipped geometry's forward one."""
    ih, iw, ic, _, kh, kw, sh, sw, dil, same = spec
    geo = _geometry(ih, iw, ic, ic, kh, kw, sh, sw, dil, same)  # depthwise: as many output channels as input
    e = backward_shift(geo)
    assert order_safe(flip(geo), need(flip(geo))) and not order_safe(flip(geo), need(flip(geo)) - 1)
    assert _walk_is_safe(geo, e, True) and _walk_is_safe(geo, e + 7, True)
    assert not _walk_is_safe(geo, e - 1, True)
    d = shift(geo)  # the forward rule by the same oracle
    assert _walk_is_safe(geo, -d, False) and (d == 0 or not _walk_is_safe(geo, -d + 1, False))


def test_shifts_worked_by_hand() -> None:
    # pointwise 8 -> 16 channels over P pixels: the block of the last two pixels ends at 16P while the
    # last-but-one pixel still reads from 8(P - 2): d = 8P + 16
    p = 48 * 48
    assert shift(Geometry(48, 48, 8, 48, 48, 16, 1, 1, 1, 1, 1, 1, 0, 0)) == 8 * p + 16
    # depthwise 3x3 'same' over 48x48x8: pixel (y, x + 1)'s block ends 51 pixels past the first byte pixel (y, x)
    # still reads, ((y - 1) * 48 + x - 1) * 8
    assert shift(Geometry(48, 48, 8, 48, 48, 8, 3, 3, 1, 1, 1, 1, 1, 1)) == 51 * 8
    # a 2x2 stride-2 'valid' reduction reads ahead of what it writes: only its first block (two pixels, 8 bytes)
    # lands on input pixel 0, still being read
    assert shift(Geometry(8, 8, 4, 4, 4, 4, 2, 2, 2, 2, 1, 1, 0, 0)) == 8


def test_placement_check_refuses_shared_bytes_outside_a_declared_pair() -> None:
    a, b = Buffer("in", 64, 0, 1, offset=32), Buffer("out", 64, 1, 2, offset=0)
    check_placement([a, b], {("out", "in"): 32})
    with pytest.raises(AssertionError):
        check_placement([a, b], {("out", "in"): 48})  # the output 32 bytes below, its kernel needs 48
    with pytest.raises(AssertionError):
        check_placement([a, b], {})
    with pytest.raises(AssertionError):
        check_placement([a, b], {("in", "out"): 0})  # the pair the other way round
    c, d = Buffer("in", 64, 0, 1, offset=0), Buffer("out", 64, 1, 2, offset=32)  # backward: output above
    check_placement([c, d], {("out", "in"): -32})
    with pytest.raises(AssertionError):
        check_placement([c, d], {("out", "in"): -48})  # its kernel needs the output 48 bytes above
    with pytest.raises(AssertionError):
        check_placement([c, d], {("out", "in"): 16})  # a forward pair may not start above its input


chains = st.lists(st.tuples(st.integers(1, 40), st.integers(-45, 45)), min_size=2, max_size=12)


@settings(max_examples=150, deadline=None)
@given(spec=chains)
def test_planned_pairs_keep_their_shift_and_the_bounds(spec) -> None:
    """A chain t0 -> t1 -> ... (each op reads the previous buffer last; negative: a backward pair, output above
    its input): every placement keeps each pair's shift (check_placement), the arena lies between the overlap
    bound and what separate buffers need."""
    bufs = [Buffer(f"t{i}", 16 * s, i, i + 1) for i, (s, _) in enumerate(spec)]
    pairs = {(f"t{i}", f"t{i - 1}"): 16 * d for i, (_, d) in enumerate(spec)
             if i and (16 * d < bufs[i].size if d >= 0 else -16 * d < bufs[i - 1].size)}
    for strategy in ("greedy", "best"):
        arena, _, placed = plan_buffers(bufs, strategy, pairs)
        check_placement(placed, pairs)
        assert overlap_bound(bufs, pairs) <= arena
    assert overlap_bound(bufs, pairs) <= lower_bound(bufs)


MODELS = {"pretrainedResnet_quant": 1.05, "kws_ref_model": 1.05, "vww_96_int8": 1.05}


@pytest.mark.parametrize("name", list(MODELS))
def test_mlperf_tiny_arenas_between_the_bounds(session, name: str) -> None:
    """Default C deployments of the MLPerf Tiny models: the plan overlaps convolutions, its arena is at least the
    overlap bound, below the separate-buffer bound, and within 1.05x of the overlap bound (KWS, a chain of
    equal-sized layers, since its depthwise kernels walk backward: their outputs move up, the others' down)."""
    path = str(mlperf_model(f"{name}.tflite"))
    g = session.registry.frontend_for(path).load(path)
    dep = build_deployment(g, {"buffer": 2}, session, CBackend())
    p = dep.plan
    assert p.overlaps and p.overlap_bound <= p.arena < p.lower_bound
    separate = plan(dep.extractor)
    assert p.lower_bound == separate.lower_bound and p.arena < separate.arena
    assert p.arena <= MODELS[name] * p.overlap_bound
    assert c_overlaps(dep.extractor, "cmsis-nn") == {}
    cm = build_deployment(g, {"buffer": 2, "kernels": "cmsis-nn"}, session, CBackend())
    assert not cm.plan.overlaps and cm.plan.arena == separate.arena


def test_overlap_shifts_of_every_mlperf_convolution_pass_the_byte_check(session) -> None:
    for name in MODELS:
        path = str(mlperf_model(f"{name}.tflite"))
        g = session.registry.frontend_for(path).load(path)
        dep = build_deployment(g, {"buffer": 2}, session, CBackend())
        convs = [op for op in dep.extractor.ops if op.kind.value in ("conv2d", "depthwise_conv2d")]
        shifts = c_overlaps(dep.extractor, "tinycc")
        assert set(shifts) == {op.outputs[0] for op in convs}
        for op in convs:
            geo, d = geometry(dep.extractor, op), shifts[op.outputs[0]]
            if walks_backward(dep.extractor, op, "tinycc"):  # the fast depthwise kernel: output above
                assert op.kind.value == "depthwise_conv2d" and d == -max(1, backward_shift(geo))
                geo, d = flip(geo), need(flip(geo))
                assert not order_safe(geo, d - 1)
            assert order_safe(geo, d)
            assert d == 0 or not order_safe(geo, d - 1)
        assert any(v < 0 for v in shifts.values()) == (name != "pretrainedResnet_quant")
        assert dep.plan.overlaps and set(dep.plan.overlaps) <= set(shifts)
        for o, n in dep.plan.overlaps.items():  # bytes shared: at most the smaller buffer
            op = next(op for op in convs if op.outputs[0] == o)
            assert 0 < n <= min(-(-dep.extractor.tensors[t].nbytes // 16) * 16 for t in (o, op.inputs[0]))
