"""Plugin manager and registries. Registries belong to a Session, never to module globals."""
from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import TinyccError
from .stages import PIPELINE_STAGES, Placement, check_placements, resolve
from .targets import Board, Target

ENTRY_POINT_GROUP = "tinycc"
DISABLE_AUTOLOAD_ENV = "TINYCC_DISABLE_PLUGIN_AUTOLOAD"

# Built-in plugins, registered exactly like third-party ones (module path, plugin name).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("tinycc.plugins.frontends.keras", "keras"),
    ("tinycc.plugins.frontends.tflite", "tflite-frontend"),
    ("tinycc.plugins.passes.cleanup", "cleanup"),
    ("tinycc.plugins.passes.quantize", "quantize"),
    ("tinycc.plugins.passes.prune", "prune"),
    ("tinycc.plugins.deployments.ondevice", "ondevice"),
    ("tinycc.plugins.deployments.inference", "inference"),
    ("tinycc.plugins.targets.boards", "boards"),
    ("tinycc.plugins.applications.serial_cmd", "serial"),
    ("tinycc.plugins.applications.scenarios", "scenarios"),
    ("tinycc.plugins.applications.validate", "validate"),
    ("tinycc.plugins.applications.ops_list", "ops"),
    ("tinycc.plugins.applications.search", "search"),
    ("tinycc.backends.c", "c-backend"),
    ("tinycc.backends.tflm", "tflm-backend"),
    ("tinycc.backends.arduino", "arduino-backend"),
)


@dataclass
class Entry:
    """A registered item and the plugin that registered it."""

    name: str
    obj: Any
    plugin: str


__all__ = ["Board", "Entry", "Registry", "Session", "Target"]


@dataclass(frozen=True)
class CompileOptions:
    """A plugin's declared compile options (see ``Registry.add_compile_options``)."""

    add_arguments: Callable[[Any], None]
    build: Callable[[Any], Any]


class Registry:
    """Everything the plugins registered. Duplicate names raise."""

    def __init__(self) -> None:
        self.current_plugin = "?"
        self.frontends: dict[str, Entry] = {}
        self.passes: dict[str, Entry] = {}
        self.pipelines: dict[str, Entry] = {}
        self.backends: dict[str, Entry] = {}
        self.boards: dict[str, Entry] = {}
        self.targets: dict[str, Entry] = {}
        self.calibration_sources: dict[str, Entry] = {}
        self.prune_criteria: dict[str, Entry] = {}
        self.option_groups: dict[str, Entry] = {}
        self.deployers: dict[str, Entry] = {}
        self.placements: dict[str, Placement] = {}  # pass name -> its stage and ordering constraints

    def _add(self, table: dict[str, Entry], kind: str, name: str, obj: Any) -> None:
        if not name:
            raise TinyccError(f"plugin {self.current_plugin!r} registered a {kind} without a name")
        if name in table:
            raise TinyccError(f"{kind} {name!r} registered twice (by {table[name].plugin!r} and {self.current_plugin!r})")
        table[name] = Entry(name, obj, self.current_plugin)

    def add_frontend(self, frontend: Any) -> None:
        self._add(self.frontends, "frontend", frontend.name, frontend)

    def add_pass(self, pass_cls: Any, stage: str | None = None, *, before: tuple[str, ...] | str = (),
                 after: tuple[str, ...] | str = (), default: bool = True) -> None:
        """Register a pass; with ``stage`` (or a class attribute ``stage``) it joins that compile stage
        (``tinycc.stages``), ordered by ``before``/``after``; ``default=False``: only with ``--passes +NAME``."""
        self._add(self.passes, "pass", pass_cls.name, pass_cls)
        stage = stage or getattr(pass_cls, "stage", None)
        if stage:
            tup = (lambda v: (v,) if isinstance(v, str) else tuple(v))
            self.placements[pass_cls.name] = Placement(
                stage, tup(before or getattr(pass_cls, "before", ())), tup(after or getattr(pass_cls, "after", ())),
                default)

    def add_compile_options(self, name: str, add_arguments: Callable[[Any], None],
                            build: Callable[[Any], Any]) -> None:
        """A plugin's own ``tinycc compile`` options: ``add_arguments(argparse group)`` declares them,
        ``build(argparse.Namespace) -> typed object`` reads them; the pass gets it as ``ctx.config.plugin(name)``."""
        self._add(self.option_groups, "compile options", name, CompileOptions(add_arguments, build))

    def add_deployer(self, kind: str, build: Callable[..., Any]) -> None:
        """A deployment kind (``ondevice``, ``inference``): ``build(graph, config, session, backend, calib=None)``."""
        self._add(self.deployers, "deployer", kind, build)

    def add_pipeline(self, name: str, passes: list[str]) -> None:
        self._add(self.pipelines, "pipeline", name, list(passes))

    def add_backend(self, backend_cls: Any) -> None:
        self._add(self.backends, "backend", backend_cls.name, backend_cls)

    def add_target(self, target: Target) -> None:
        self._add(self.targets, "target", target.name, target)

    def add_board(self, board: Board) -> None:
        """Register ``board`` (and its ``target`` unless that very object is registered already)."""
        t = board.target
        if t is not None and not (t.name in self.targets and self.targets[t.name].obj is t):
            self.add_target(t)
        self._add(self.boards, "board", board.name, board)

    def target_list(self) -> tuple[Target, ...]:
        """The registered targets in registration order (built-ins first)."""
        return tuple(e.obj for e in self.targets.values())

    def target_of(self, board: Board) -> Target | None:
        """``board.target``, else the first registered target of its architecture (None: unknown)."""
        from .targets import board_target

        return board_target(board, self.target_list())

    def platforms(self, backend: str) -> tuple[str, ...]:
        """Where ``backend``'s demo runs (``validate --on``): the emulators of the registered targets."""
        from .targets import platforms

        return platforms(self.target_list(), backend)

    def add_calibration_source(self, name: str, fn: Callable[[str], Any]) -> None:
        self._add(self.calibration_sources, "calibration source", name, fn)

    def add_prune_criterion(self, name: str, fn: Callable[[Any], Any]) -> None:
        self._add(self.prune_criteria, "prune criterion", name, fn)

    # lookups with user-facing errors
    def frontend_for(self, path: str) -> Any:
        if os.path.isdir(path):
            raise TinyccError(f"{path}: a directory, expected a model file")
        low = path.lower()
        for e in self.frontends.values():
            if any(low.endswith(ext) for ext in e.obj.extensions):
                return e.obj
        exts = sorted({x for e in self.frontends.values() for x in e.obj.extensions})
        raise TinyccError(f"{path}: unsupported model file extension (supported: {', '.join(exts)})")

    def backend(self, name: str) -> Any:
        if name not in self.backends:
            raise TinyccError(f"unknown target {name!r}; registered targets: {', '.join(sorted(self.backends)) or 'none'}")
        return self.backends[name].obj

    def board(self, name: str) -> Board:
        if name not in self.boards:
            raise TinyccError(f"unknown board {name!r}; known boards: {', '.join(sorted(self.boards))}")
        return self.boards[name].obj

    def pipeline(self, name: str) -> list[str]:
        """A registered pipeline, or a built-in one made of stages (``cleanup``; ``int8`` = the quantize stages)."""
        if name in self.pipelines:
            return list(self.pipelines[name].obj)
        if name in PIPELINE_STAGES:
            return [p for stage in PIPELINE_STAGES[name] for p in resolve(self, stage)]
        known = sorted(set(self.pipelines) | set(PIPELINE_STAGES))
        raise TinyccError(f"unknown pipeline {name!r}; known: {', '.join(known)}")

    def deployer(self, kind: str, plugin: str) -> Callable[..., Any]:
        """The deploy function of ``kind``; a clear error when its plugin is blocked (``-p no:NAME``)."""
        if kind not in self.deployers:
            raise TinyccError(f"this compile needs the {plugin!r} plugin ({kind} deployment), which is blocked or "
                              f"not installed (drop -p no:{plugin})")
        return self.deployers[kind].obj


@dataclass
class Session:
    """A plugin manager plus the registry its plugins filled."""

    blocked: tuple[str, ...] = ()
    autoload: bool | None = None
    extra_plugins: tuple[Any, ...] = ()
    pm: pluggy.PluginManager = field(init=False)
    registry: Registry = field(init=False)
    order: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.pm = pluggy.PluginManager("tinycc")
        self.pm.add_hookspecs(hookspecs)
        for name in self.blocked:
            self.pm.set_blocked(name)
        for modname, name in DEFAULT_PLUGINS:
            if self.pm.is_blocked(name):
                continue
            try:
                mod = importlib.import_module(modname)
            except ModuleNotFoundError as e:
                if e.name == modname:  # built-in not present in this build
                    continue
                raise
            self._register(mod, name)
        autoload = self.autoload if self.autoload is not None else not os.environ.get(DISABLE_AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        for i, plugin in enumerate(self.extra_plugins):
            self._register(plugin, getattr(plugin, "__name__", f"extra-{i}"))
        self.pm.check_pending()
        self.registry = Registry()
        for hook in ("tinycc_register_frontends", "tinycc_register_passes", "tinycc_register_pipelines",
                     "tinycc_register_backends", "tinycc_register_boards",
                     "tinycc_register_calibration_sources", "tinycc_register_prune_criteria",
                     "tinycc_register_compile_options", "tinycc_register_deployers"):
            self._call_in_order(hook)
        self.pm.hook.tinycc_configure(config=self.registry)
        self._check_pipelines()
        check_placements(self.registry)

    def add_commands(self, subparsers: Any) -> None:
        """Let every plugin add its CLI subcommands (registration order)."""
        for name in self.order:
            plugin = self.pm.get_plugin(name)
            fn = getattr(plugin, "tinycc_add_commands", None)
            if fn is not None:
                takes_session = "session" in inspect.signature(fn).parameters
                fn(subparsers=subparsers, **({"session": self} if takes_session else {}))

    def _register(self, plugin: Any, name: str) -> None:
        if self.pm.is_blocked(name):
            return
        self.pm.register(plugin, name)
        self.order.append(name)

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as e:  # a broken plugin is an error, never a silent skip
                raise TinyccError(f"plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
            self._register(plugin, ep.name)
            dist = getattr(ep, "dist", None)
            if dist is not None:
                self.dist_of[ep.name] = f"{dist.name} {dist.version}"

    dist_of: dict[str, str] = field(init=False, default_factory=dict)

    def _call_in_order(self, hook: str) -> None:
        """Call ``hook`` plugin by plugin in registration order (built-ins first)."""
        for name in self.order:
            plugin = self.pm.get_plugin(name)
            impl = getattr(plugin, hook, None)
            if impl is None or plugin is None:
                continue
            self.registry.current_plugin = name
            caller = self.pm.subset_hook_caller(hook, remove_plugins=[p for n, p in self.pm.list_name_plugin() if n != name])
            caller(registry=self.registry)
        self.registry.current_plugin = "?"

    def _check_pipelines(self) -> None:
        for e in self.registry.pipelines.values():
            missing = [p for p in e.obj if p not in self.registry.passes]
            if missing:
                raise TinyccError(f"pipeline {e.name!r} (from {e.plugin!r}) names unknown passes: {', '.join(missing)}")

    def plugin_source(self, name: str) -> str:
        return self.dist_of.get(name, "tinycc (built-in)" if any(name == n for _, n in DEFAULT_PLUGINS) else "local")
