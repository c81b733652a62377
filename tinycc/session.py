"""Plugin manager and registries. Registries belong to a Session, never to module globals."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import TinyccError

ENTRY_POINT_GROUP = "tinycc"
DISABLE_AUTOLOAD_ENV = "TINYCC_DISABLE_PLUGIN_AUTOLOAD"

# Built-in plugins, registered exactly like third-party ones (module path, plugin name).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("tinycc.plugins.keras_frontend", "keras"),
    ("tinycc.plugins.tflite_frontend", "tflite-frontend"),
    ("tinycc.plugins.cleanup", "cleanup"),
    ("tinycc.plugins.quantize", "quantize"),
    ("tinycc.plugins.prune", "prune"),
    ("tinycc.plugins.ondevice", "ondevice"),
    ("tinycc.plugins.boards", "boards"),
    ("tinycc.plugins.serial_cmd", "serial"),
    ("tinycc.plugins.scenarios", "scenarios"),
    ("tinycc.plugins.validate", "validate"),
    ("tinycc.plugins.ops_list", "ops"),
    ("tinycc.plugins.search", "search"),
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


@dataclass
class Board:
    """A target board: memory budget and toolchain identity."""

    name: str
    ram: int
    flash: int
    arch: str
    fqbn: str = ""
    description: str = ""


class Registry:
    """Everything the plugins registered. Duplicate names raise."""

    def __init__(self) -> None:
        self.current_plugin = "?"
        self.frontends: dict[str, Entry] = {}
        self.passes: dict[str, Entry] = {}
        self.pipelines: dict[str, Entry] = {}
        self.backends: dict[str, Entry] = {}
        self.boards: dict[str, Entry] = {}
        self.calibration_sources: dict[str, Entry] = {}
        self.prune_criteria: dict[str, Entry] = {}

    def _add(self, table: dict[str, Entry], kind: str, name: str, obj: Any) -> None:
        if not name:
            raise TinyccError(f"plugin {self.current_plugin!r} registered a {kind} without a name")
        if name in table:
            raise TinyccError(f"{kind} {name!r} registered twice (by {table[name].plugin!r} and {self.current_plugin!r})")
        table[name] = Entry(name, obj, self.current_plugin)

    def add_frontend(self, frontend: Any) -> None:
        self._add(self.frontends, "frontend", frontend.name, frontend)

    def add_pass(self, pass_cls: Any) -> None:
        self._add(self.passes, "pass", pass_cls.name, pass_cls)

    def add_pipeline(self, name: str, passes: list[str]) -> None:
        self._add(self.pipelines, "pipeline", name, list(passes))

    def add_backend(self, backend_cls: Any) -> None:
        self._add(self.backends, "backend", backend_cls.name, backend_cls)

    def add_board(self, board: Board) -> None:
        self._add(self.boards, "board", board.name, board)

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
        if name not in self.pipelines:
            raise TinyccError(f"unknown pipeline {name!r}; known: {', '.join(sorted(self.pipelines))}")
        return list(self.pipelines[name].obj)


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
                     "tinycc_register_calibration_sources", "tinycc_register_prune_criteria"):
            self._call_in_order(hook)
        self.pm.hook.tinycc_configure(config=self.registry)
        self._check_pipelines()

    def add_commands(self, subparsers: Any) -> None:
        """Let every plugin add its CLI subcommands (registration order)."""
        for name in self.order:
            plugin = self.pm.get_plugin(name)
            fn = getattr(plugin, "tinycc_add_commands", None)
            if fn is not None:
                fn(subparsers=subparsers)

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
