"""The only extension contract of tinycc: pluggy hook specifications.

Hooks *register* things into a :class:`tinycc.session.Registry`; the pass manager
and the driver decide order and execution (pluggy's LIFO call order never matters).
Built-in frontends, passes and backends use exactly these hooks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .session import Registry

hookspec = pluggy.HookspecMarker("tinycc")


@hookspec
def tinycc_register_frontends(registry: "Registry") -> None:
    """Add model importers with ``registry.add_frontend(Frontend)``."""


@hookspec
def tinycc_register_passes(registry: "Registry") -> None:
    """Add IR passes with ``registry.add_pass(PassClass, stage=None, before=(), after=())``; with a stage
    (``tinycc.stages.STAGES``) the pass runs inside ``tinycc compile``."""


@hookspec
def tinycc_register_pipelines(registry: "Registry") -> None:
    """Add named pass lists with ``registry.add_pipeline(name, [pass names])``."""


@hookspec
def tinycc_register_backends(registry: "Registry") -> None:
    """Add code generators with ``registry.add_backend(BackendClass)``."""


@hookspec
def tinycc_register_boards(registry: "Registry") -> None:
    """Add target boards with ``registry.add_board(Board)`` and their CPUs (``tinycc.targets.Target``) with
    ``registry.add_target`` (``add_board`` registers a board's ``target`` with it)."""


@hookspec
def tinycc_register_calibration_sources(registry: "Registry") -> None:
    """Add calibration data providers with ``registry.add_calibration_source(name, fn)``;
    ``fn(spec: str) -> numpy array`` of float samples in the model's input layout."""


@hookspec
def tinycc_register_prune_criteria(registry: "Registry") -> None:
    """Add channel-importance criteria with ``registry.add_prune_criterion(name, fn)``;
    ``fn(weights [O, ...]) -> scores [O]`` (higher = more important)."""


@hookspec
def tinycc_register_compile_options(registry: "Registry") -> None:
    """Declare a plugin's own ``tinycc compile`` options with
    ``registry.add_compile_options(name, add_arguments, build)``: ``add_arguments(group)`` adds argparse options
    (no defaults: a default belongs in the typed object), ``build(namespace)`` returns the typed options, which
    passes read as ``ctx.config.plugin(name)``."""


@hookspec
def tinycc_register_deployers(registry: "Registry") -> None:
    """Add deployment kinds with ``registry.add_deployer(kind, build)`` (built-ins: ``ondevice`` for on-device
    learning, ``inference`` for --inference-only); ``build(graph, config, session, backend, calib=None)``
    returns a ``Deployment``."""


@hookspec
def tinycc_configure(config: Any) -> None:
    """Adjust the session configuration after all plugins are registered."""


@hookspec
def tinycc_add_commands(subparsers: Any, session: Any) -> None:
    """Add CLI subcommands: ``p = subparsers.add_parser(...); p.set_defaults(func=handler)``
    (``session``: optional; a command that compiles passes it to ``tinycc.api.add_compile_arguments``)
    where ``handler(args, session) -> int`` returns the exit code. Import heavy modules
    (tensorflow) inside the handler, never at plugin import time."""
