"""The core's public API for applications (validate, simulate, search, notebooks) and plugins.

Applications call these functions, never the driver's internals or a backend class by name:

- :func:`make_config` / :func:`config_from_args`: a typed :class:`~tinycc.config.CompileConfig`;
- :func:`compile_model`: the whole ``tinycc compile`` into a folder;
- :func:`load_cleaned`: a model file through its frontend and the ``import`` and ``cleanup`` stages;
- :func:`deploy`: the deploy stage for a target (no files written), checked by the target's backend.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .config import CompileConfig, TestVectors, from_args as config_from_args, make_config
from .driver import CompileResult, add_compile_arguments, compile_model
from .errors import TinyccError
from .ir.graph import Graph
from .ir.verify import verify
from .passes import PassContext
from .stages import run_stages

__all__ = ["CompileConfig", "CompileResult", "TestVectors", "add_compile_arguments", "compile_model",
           "config_from_args", "deploy", "load_cleaned", "make_config"]


def load_cleaned(path: str, session: Any, config: CompileConfig | None = None) -> Graph:
    """The model at ``path`` after its frontend and the ``import`` and ``cleanup`` stages."""
    import os

    if not os.path.exists(path):
        raise TinyccError(f"{path}: no such file")
    graph = session.registry.frontend_for(path).load(path)
    verify(graph)
    run_stages(graph, session.registry, ("import", "cleanup"), PassContext(session=session,
                                                                          config=config or CompileConfig()))
    return graph


def deploy(graph: Graph, config: CompileConfig, session: Any, target: str = "c",
           calib: np.ndarray | None = None) -> Any:
    """The deployment ``tinycc compile --target TARGET`` builds for ``graph`` (checked by the backend; no files)."""
    reg = session.registry
    backend = reg.backend(target)()
    kind = "inference" if config.inference_only else "ondevice"
    dep = reg.deployer(kind, kind)(graph, config, session, backend, calib=calib)
    backend.check(dep)
    return dep


def emit(deployment: Any, target: str, session: Any, outdir: Any, vectors: TestVectors | None = None) -> list:
    """Write ``deployment``'s project for ``target`` into the existing folder ``outdir`` (not atomic)."""
    return session.registry.backend(target)().emit(deployment, outdir, vectors)
