"""A tiny CNN with two convolutions after its deep cut and its ``--train sparse`` deployments for a given subset
(tests/test_sparse_project.py)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from tinycc.backends.c import CBackend
from tinycc.ir.backprop import Trained

CALIB = np.random.default_rng(0).uniform(-1, 1, (32, 10, 10, 3)).astype(np.float32)


def tiny_cnn(side: int = 10, widths: tuple[int, int, int] = (4, 6, 8)) -> Any:
    """stem conv -> c1 conv -> c2 conv (stride 2) -> global average pooling -> Dense(4, softmax), on side x side x 3
    with ``widths`` output channels."""
    import keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(widths[0], 3, padding="same", activation="relu", name="stem")(x)
    x = keras.layers.Conv2D(widths[1], 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(widths[2], 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax", name="d")(x)
    return keras.Model(inp, out)


def tiny_graph(side: int = 10, widths: tuple[int, int, int] = (4, 6, 8)) -> Any:
    """``tiny_cnn`` as an IR graph after the cleanup passes."""
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.frontends.keras import graph_from_keras_model
    from tinycc.session import Session

    g = graph_from_keras_model(tiny_cnn(side, widths))
    run_pipeline(g, Session(autoload=False).registry.pipeline("cleanup"), PassContext(session=Session(autoload=False)))
    return g


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes shifting the input's mean per channel."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    shift = np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [-0.5, -0.5, -0.5]], np.float32)
    x = rng.uniform(-0.5, 0.5, (n, 10, 10, 3)).astype(np.float32) + shift[y][:, None, None, :]
    return x, y


def head_and_cut(graph: Any, backend: Any = None, calib: np.ndarray = CALIB, **opts: Any) -> tuple[Any, str, Any]:
    """(head deployment, deep cut (``--deep-cut``, default ``stem``), the sparse config) as `tinycc compile --train
    sparse` builds them."""
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment
    from tinycc.deploy.deep import choose_deep_cut
    from tinycc.session import Session

    session = Session(autoload=False)
    opts = {"lr": 0.05, "deep_lr": 0.2, "batch_size": 2, "epochs": 2, "deep_cut": "stem", **opts}
    config = make_config(session, train="sparse", **opts)
    learn = config.learning
    head_cfg = replace(config, learning=replace(learn, train="all", deep_cut=None, deep_lr=None, buffer=1),
                       memory=replace(config.memory, ram=None, flash=None))
    dep = build_deployment(graph.copy(), head_cfg, session, backend or CBackend(), calib=calib)
    return dep, choose_deep_cut(dep, learn.deep_cut), config


def subset_of(dep: Any, cut: str, spec: dict[str, Trained]) -> dict[str, Trained]:
    """``spec`` by Keras layer name -> by region op name."""
    from tinycc.ir.deep import DeepLearner

    ops = DeepLearner(dep, cut, "sparse", capacity=1, subset={}).region_params
    return {op.name: spec[op.origin] for op in ops if op.origin in spec}


def sparse_dep(graph: Any, spec: dict[str, Trained], entries: int = 3, backend: Any = None,
               calib: np.ndarray = CALIB, **opts: Any) -> Any:
    """The --train sparse deployment of the layers' subset ``spec`` with ``entries`` cut tensors."""
    from tinycc.deploy.sparse import sparse_deployment

    backend = backend or CBackend()
    dep, cut, config = head_and_cut(graph, backend, calib, **opts)
    return sparse_deployment(dep, cut, subset_of(dep, cut, spec), entries, config, backend)
