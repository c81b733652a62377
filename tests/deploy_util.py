"""Test helpers over the typed API: the tests describe a deployment as the command line does (option names as
keywords) plus the internal data (``calib_data``, ``test_vectors``, ``test_count``, ``test_learn``), which these
helpers pass as the separate typed arguments the API takes."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tinycc.backends.c import render_project as _render_project
from tinycc.backends.c.emitter import build_emit_model as _build_emit_model
from tinycc.config import CompileConfig, TestVectors, make_config
from tinycc.deploy import build_deployment as _build_deployment, build_inference as _build_inference
from tinycc.memory import plan

DATA = ("calib_data", "test_vectors", "test_count", "test_learn")


def config(session: Any, opts: dict[str, Any], inference_only: bool = False) -> CompileConfig:
    kw = {k: v for k, v in opts.items() if k not in DATA}
    if inference_only:
        kw["inference_only"] = True
    return make_config(session, **kw)


def vectors(opts: dict[str, Any]) -> TestVectors | None:
    tv = opts.get("test_vectors")
    if tv is None:
        return TestVectors(None, None, opts.get("test_count"), opts.get("test_learn")) if "test_count" in opts else None
    x, y = tv if isinstance(tv, tuple) else (tv, None)
    return TestVectors(x, y, opts.get("test_count"), opts.get("test_learn"))


def build_deployment(graph: Any, opts: dict[str, Any], session: Any, backend: Any) -> Any:
    return _build_deployment(graph, config(session, opts), session, backend, calib=opts.get("calib_data"))


def build_inference(graph: Any, opts: dict[str, Any], session: Any, backend: Any) -> Any:
    return _build_inference(graph, config(session, opts, True), session, backend, calib=opts.get("calib_data"))


def with_options(dep: Any, opts: dict[str, Any]) -> Any:
    """``dep`` with the emit-time options of ``opts`` (kernels, selftest) in its config."""
    c = dep.config
    if "kernels" in opts and opts["kernels"] != c.kernels:
        c = replace(c, kernels=opts["kernels"])
    if "selftest" in opts and bool(opts["selftest"]) != c.demo.selftest:
        c = replace(c, demo=replace(c.demo, selftest=bool(opts["selftest"])))
    if c is dep.config:
        return dep
    dep = copy.copy(dep)
    dep.config = c
    return dep


def render_project(dep: Any, opts: dict[str, Any], outdir: Path, **kw: Any) -> list[Path]:
    return _render_project(with_options(dep, opts), outdir, vectors(opts), **kw)


def emit(backend: Any, dep: Any, opts: dict[str, Any], outdir: Path) -> list[Path]:
    return backend.emit(with_options(dep, opts), outdir, vectors(opts))


def build_emit_model(dep: Any, opts: dict[str, Any] | None = None) -> Any:
    return _build_emit_model(with_options(dep, opts or {}))


def c_arena(graph: Any, opts: dict[str, Any] | None = None) -> int:
    """The C backend's arena for ``graph``, planned here independently of the deployment (with the overlaps its
    kernels declare, unless in-place is off)."""
    from tinycc.backends.c.overlap import c_overlaps

    inplace = not (opts or {}).get("no_inplace")
    overlap = c_overlaps(graph, (opts or {}).get("kernels", "tinycc")) if inplace else None
    return max(plan(graph, inplace=inplace, overlap=overlap).arena, 16)


def samples(x: Any) -> np.ndarray:
    return np.asarray(x, np.float32)


def compile_model(model: str, target: str, output: str, opts: dict[str, Any], session: Any) -> Any:
    """``tinycc compile`` through the Python API (``opts``: command-line option names, plus the internal data)."""
    from tinycc.driver import compile_model as _compile

    return _compile(model, target, output, config(session, opts), session, calib=opts.get("calib_data"),
                    vectors=vectors(opts))


def whole_model(graph: Any, kernels: str = "generic") -> Any:
    """A real inference-only Deployment of an int8 ``graph`` as it stands (no deploy stage): what a backend's
    ``check`` or the emitter reads, for tests of a single op."""
    from tinycc.ir.deployment import BufferConfig, Deployment

    out = graph.tensors[graph.outputs[0]]
    return Deployment(name=graph.name, extractor=graph, feature_quant=out.quant, classifier=[], num_classes=0,
                      buffer=BufferConfig(1), inference_only=True, config=CompileConfig(kernels=kernels),
                      plan=plan(graph))


def deep_deployment(graph: Any, mode: str, calib: np.ndarray, **opts: Any) -> Any:
    """A ``--deep MODE`` deployment of a copy of ``graph`` for the c backend: cut at tensor ``stem``, lr 0.05,
    calibrated on ``calib``; ``opts``: more config options."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    session = Session(autoload=False)
    config = make_config(session, deep=(mode,), deep_cut="stem", lr=0.05, **opts)
    return build_deep_deployment(graph.copy(), config, session, CBackend(), calib)
