"""IR core: construction, shape inference, verification messages, statistics, serialization."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.ir import serialize
from tinycc.ir.graph import Graph, IRError
from tinycc.ir.ops import OpKind, same_padding
from tinycc.ir.stats import graph_stats, totals
from tinycc.ir.tensor import DType, QuantParams, Tensor
from tinycc.ir.verify import verify


def small_graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("small")
    g.add_input("x", (1, 8, 8, 3))
    w = g.add_const("w", rng.normal(size=(4, 3, 3, 3)).astype(np.float32))
    b = g.add_const("b", rng.normal(size=(4,)).astype(np.float32))
    c = g.add_op("conv2d", ["x", w.name, b.name], "conv", {"padding": "same", "strides": 2})
    dw = g.add_const("dw_w", rng.normal(size=(1, 3, 3, 8)).astype(np.float32))
    d = g.add_op("depthwise_conv2d", [c.outputs[0], dw.name], "dw", {"depth_multiplier": 2, "padding": "valid"})
    p = g.add_op("global_avg_pool", [d.outputs[0]], "gap")
    fw = g.add_const("fw", rng.normal(size=(5, 8)).astype(np.float32))
    f = g.add_op("dense", [p.outputs[0], fw.name], "fc")
    s = g.add_op("softmax", [f.outputs[0]], "sm")
    g.outputs = [s.outputs[0]]
    return g


def test_shapes_inferred() -> None:
    g = small_graph()
    assert g.tensors["conv"].shape == (1, 4, 4, 4)
    assert g.tensors["dw"].shape == (1, 2, 2, 8)
    assert g.tensors["gap"].shape == (1, 8)
    assert g.tensors["sm"].shape == (1, 5)
    verify(g)


def test_same_padding_matches_tflite_rule() -> None:
    assert same_padding(8, 3, 2, 1) == (0, 1)
    assert same_padding(7, 3, 1, 2) == (2, 2)
    assert same_padding(5, 1, 1, 1) == (0, 0)


def test_verify_names_the_op() -> None:
    g = small_graph()
    g.tensors["dw"].shape = (1, 3, 3, 8)
    with pytest.raises(IRError, match="'dw'.*shape"):
        verify(g)
    g = small_graph()
    g.ops[1].inputs[0] = "missing"
    with pytest.raises(IRError, match="op 'dw'.*does not exist"):
        verify(g)
    g = small_graph()
    g.ops.reverse()
    with pytest.raises(IRError, match="used before it is produced"):
        verify(g)
    g = small_graph()
    g.tensors["w"] = Tensor("w", (4, 3, 3, 3), DType.INT8, np.zeros((4, 3, 3, 3), np.int8))
    with pytest.raises(IRError, match="float op with int8 input"):
        verify(g)
    with pytest.raises(IRError, match="op 'bad'.*4-D"):
        g2 = small_graph()
        g2.add_op("conv2d", ["x", "fw"], "bad")


def test_stats_count_params_and_macs() -> None:
    g = small_graph()
    rows = {r.name: r for r in graph_stats(g)}
    assert rows["conv"].params == 4 * 27 + 4
    assert rows["conv"].macs == 4 * 4 * 4 * 27
    assert rows["dw"].macs == 2 * 2 * 8 * 9
    assert rows["fc"].macs == 5 * 8
    assert rows["gap"].activation_bytes == 8 * 4
    assert totals(g)["params"] == 112 + 72 + 40


def test_serialize_round_trip_exact(tmp_path) -> None:
    g = small_graph()
    g.tensors["conv"].quant = QuantParams([0.5], [3])
    g.tensors["w"].quant = QuantParams(np.array([0.1, 0.2, 0.3, 0.4]), np.zeros(4), axis=0)
    g.meta["source"] = {"format": "test", "pair": (1, 2)}
    serialize.save(g, tmp_path / "g")
    h = serialize.load(tmp_path / "g")
    verify(h)
    assert [(o.name, o.kind, o.inputs, o.outputs, o.attrs, o.origin) for o in g.ops] == \
           [(o.name, o.kind, o.inputs, o.outputs, o.attrs, o.origin) for o in h.ops]
    for name, t in g.tensors.items():
        u = h.tensors[name]
        assert (t.shape, t.dtype) == (u.shape, u.dtype)
        if t.data is not None:
            np.testing.assert_array_equal(t.data, u.data)
        assert (t.quant is None and u.quant is None) or t.quant.equals(u.quant)
    assert h.meta == g.meta and h.inputs == g.inputs and h.outputs == g.outputs
    serialize.save(h, tmp_path / "h")
    assert (tmp_path / "g.json").read_bytes() == (tmp_path / "h.json").read_bytes()
    assert (tmp_path / "g.npz").read_bytes() == (tmp_path / "h.npz").read_bytes()


def test_reschedule_is_stable_and_topological() -> None:
    g = small_graph()
    order = [o.name for o in g.ops]
    g.ops = [g.ops[0], g.ops[1], g.ops[2], g.ops[3], g.ops[4]]
    g.reschedule()
    assert [o.name for o in g.ops] == order
    g.ops = list(reversed(g.ops))
    g.reschedule()
    assert [o.name for o in g.ops] == order
    verify(g)


def test_bypass_and_prune_unused() -> None:
    g = small_graph()
    sm = g.op("sm")
    g.bypass(sm)
    g.prune_unused()
    assert g.outputs == ["fc"] and "sm" not in g.tensors
    verify(g)


def test_unknown_attribute_rejected() -> None:
    g = Graph()
    g.add_input("x", (1, 4))
    with pytest.raises(ValueError, match="unknown attributes"):
        g.add_op(OpKind.RELU, ["x"], "r", {"alpha": 1})
