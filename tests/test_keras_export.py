"""IR -> Keras -> IR round trip and prediction equality."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.ir.interpreter import run
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.passes.keras_export import graph_to_keras, update_graph_weights
from tinycc.plugins.frontends.keras import graph_from_keras_model

from .zoo import ZOO_NAMES, build, sample_input


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("cleanup", [False, True])
def test_ir_keras_ir_exact(session, name: str, cleanup: bool) -> None:
    m = build(name)
    g = graph_from_keras_model(m)
    if cleanup:
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    k = graph_to_keras(g)
    h = graph_from_keras_model(k, g.name)
    if cleanup:
        run_pipeline(h, ["fuse_activations"], PassContext(session=session))
    by_name = {o.name: o for o in h.ops}
    assert sorted(o.name for o in g.ops) == sorted(by_name)
    for a in g.ops:
        b = by_name[a.name]
        assert (a.kind, a.attrs) == (b.kind, b.attrs)
        for ta, tb in zip(a.inputs, b.inputs):
            if g.tensors[ta].is_const:
                np.testing.assert_array_equal(g.tensors[ta].data, h.tensors[tb].data)
    x = sample_input(m, 8, seed=3)
    ref = run(g, x)[g.outputs[0]]
    np.testing.assert_allclose(k.predict(x, verbose=0), ref, atol=1e-5 * max(1.0, np.abs(ref).max()))


def test_update_weights_back(session) -> None:
    m = build("mobilenet_v3")
    g = graph_from_keras_model(m)
    k = graph_to_keras(g)
    for layer in k.layers:
        if layer.get_weights():
            layer.set_weights([w + 0.5 for w in layer.get_weights()])
    update_graph_weights(g, k)
    x = sample_input(m, 4, seed=4)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], k.predict(x, verbose=0), atol=1e-5)
