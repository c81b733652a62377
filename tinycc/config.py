"""The typed compile configuration: built once (from the command line or the Python API), validated there.

Every default of ``tinycc compile`` lives in the dataclasses below and nowhere else: the argparse options have no
defaults of their own (an option not given is ``None`` and the dataclass default applies). Internal data
(calibration arrays, demo/test vectors) are not configuration: they travel as separate typed arguments
(``calib=`` of the deploy stage, :class:`TestVectors` of the emitters).

Plugins declare their own compile options with ``registry.add_compile_options(name, add_arguments, build)``
and read them back, typed, with ``config.plugin(name)``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .errors import TinyccError
from .ir.deep import DEEP_MODES  # learning beyond the head: int8 backbone biases, float conv blocks
from .ir.deployment import BufferConfig, TrainConfig

POLICIES = ("fifo", "reservoir", "class_balanced")
STORAGES = ("int8", "int16", "float32")  # --storage (None: the features' own type)
FEATURES = ("native", "int8")  # --features: int16 features kept (native) or requantized to int8 at the cut
LOSSES = ("ce", "bce", "mse")
TRAIN_MODES = ("all", "last", "bias", "sparse")  # sparse: the backbone subset chosen under --ram (deploy/sparse.py)
DEEP_LR_FACTOR = 0.1  # --deep-lr default: the backbone learns at a tenth of the head's rate
PLANNERS = ("best", "greedy")
OBSERVERS = ("minmax", "percentile")
ACTIVATIONS = ("int8", "int16")  # --activations
KERNELS = ("tinycc", "generic", "cmsis-nn")  # --kernels (c/arduino int8 kernels)


def _choice(what: str, value: Any, known: tuple[str, ...]) -> None:
    if value not in known:
        raise TinyccError(f"{what}: unknown value {value!r}; known: {', '.join(known)}")


def _positive(what: str, value: Any, kind: type = int) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or (kind is int and int(value) != value) or not np.isfinite(value) or value <= 0:
        raise TinyccError(f"{what}: must be {'an integer' if kind is int else 'a finite number'} > 0, got {value!r}")


@dataclass(frozen=True)
class LearningConfig:
    """On-device learning: the cut, the replay buffer, the head and SGD (absent with --inference-only)."""

    cut: str | None = None  # None: automatic
    buffer: int | None = None  # None: the largest that fits (or DEFAULT_BUFFER without a budget)
    tinyol: bool = False
    loss: str | None = None  # None: from the model's last activation and shapes
    policy: str = "fifo"
    storage: str | None = None  # None: the features' type (int8, or int16 for a 16x8 extractor); or float32
    features: str = "native"  # int16 features kept as they are, or requantized to int8 at the cut ("int8")
    lr: float = TrainConfig.lr  # the one default learning rate (ir/deployment.py)
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    train: str = TrainConfig.mode
    seed: int = BufferConfig.seed
    deep: tuple[str, ...] = ()  # beyond the head, side by side (simulate --deep): DEEP_MODES, each once
    deep_cut: str | None = None  # where the trained backbone starts (None: the input of the last conv block)
    deep_lr: float | None = None  # the backbone's SGD rate (None: lr * DEEP_LR_FACTOR); the head learns at lr

    def __post_init__(self) -> None:
        _choice("--policy", self.policy, POLICIES)
        if not isinstance(self.deep, tuple) or len(set(self.deep)) != len(self.deep):
            raise TinyccError(f"--deep: expected distinct modes among {', '.join(DEEP_MODES)}, got {self.deep!r}")
        for m in self.deep:
            _choice("--deep", m, DEEP_MODES)
        if self.deep_cut is not None and not self.deep and self.train != "sparse":
            raise TinyccError("--deep-cut needs --deep or --train sparse")
        if self.deep_lr is not None:
            _positive("--deep-lr", self.deep_lr, float)
            if not self.deep and self.train != "sparse":
                raise TinyccError("--deep-lr needs --deep or --train sparse (the head learns at --lr)")
        if self.deep and self.train == "sparse":
            raise TinyccError("--train sparse chooses what of the backbone trains: drop --deep")
        if self.storage is not None:
            _choice("--storage", self.storage, STORAGES)
        _choice("--features", self.features, FEATURES)
        _choice("--train", self.train, TRAIN_MODES)
        if self.loss is not None:
            _choice("--loss", self.loss, LOSSES)
        if self.buffer is not None:
            _positive("--buffer", self.buffer)
        _positive("--lr", self.lr, float)
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)

    @property
    def backbone_lr(self) -> float:
        """The backbone's learning rate: ``deep_lr``, else a tenth of the head's (``DEEP_LR_FACTOR``)."""
        return float(self.deep_lr) if self.deep_lr is not None else float(self.lr) * DEEP_LR_FACTOR


@dataclass(frozen=True)
class QuantConfig:
    """Calibration and int8 quantization."""

    calib: str | None = None  # .npz/.npy, image folder, or SOURCE:ARG of a calibration source plugin
    observer: str = "minmax"
    calib_scale: float | None = None
    calib_limit: int = 1000
    calib_batch_size: int = 64
    int8_input: bool = False  # int8 input tensor (no input QUANTIZE)
    int8_output: bool = False  # int8 output tensor (no output DEQUANTIZE); the deploy stage sets it for Φf
    dense_per_tensor: bool = False
    activations: str = "int8"  # int8 | int16 (TFLite's 16x8: int16 activations, int8 weights, int64 bias)
    int16_layers: tuple[str, ...] = ()  # layers kept in int16 in an int8 model ("first"/"last" name those layers)

    def __post_init__(self) -> None:
        _choice("--observer", self.observer, OBSERVERS)
        _choice("--activations", self.activations, ACTIVATIONS)
        object.__setattr__(self, "int16_layers", tuple(self.int16_layers))
        if self.int16_layers and self.activations == "int16":
            raise TinyccError("--int16-layers picks int16 layers of an int8 model; --activations int16 already "
                              "makes every layer int16")
        _positive("--calib-limit", self.calib_limit)
        _positive("calib_batch_size", self.calib_batch_size)
        if self.calib_scale is not None:
            _positive("--calib-scale", self.calib_scale, float)


@dataclass(frozen=True)
class MemoryConfig:
    """RAM/flash budget (explicit, else the board's) and the arena planner."""

    ram: int | None = None
    flash: int | None = None
    where: str = "--ram/--flash"  # how the budget is named in errors
    planner: str = "best"
    inplace: bool = True
    widen: bool = True  # Cortex-M4/M7: weights widened to int16 at compile time (a second copy in flash)

    def __post_init__(self) -> None:
        _choice("planner", self.planner, PLANNERS)
        for what, v in (("--ram", self.ram), ("--flash", self.flash)):
            if v is not None:
                _positive(what, v)


@dataclass(frozen=True)
class DemoConfig:
    """The demo/self-test program: how many vectors it embeds, arduino's self-test switch."""

    test_count: int = 8
    selftest: bool = False

    def __post_init__(self) -> None:
        _positive("--test-count", self.test_count)


@dataclass(frozen=True)
class CompilerConfig:
    """How the compiler runs (not what it produces)."""

    force: bool = False
    dump_after: tuple[str, ...] = ()
    verify_each: bool = True
    time_passes: bool = False
    passes: tuple[str, ...] = ()  # --passes +NAME,-NAME
    progress: bool = False
    report: bool = False  # --report: report.html in the project


@dataclass(frozen=True)
class CompileConfig:
    """Everything one compile needs to know, typed. ``learning`` is None for --inference-only."""

    board: Any = None  # the resolved board (tinycc.targets.Board) or None
    target: Any = None  # the board's tinycc.targets.Target, resolved once from the registry (None: no board/unknown)
    targets: tuple = ()  # the registered targets (the Makefile's CPU list, cross builds); () = the built-in ones
    demo_target: Any = None  # validate --on: the registered Target whose emulator runs the demo (else None)
    learning: LearningConfig | None = field(default_factory=LearningConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    kernels: str = "tinycc"
    demo: DemoConfig = field(default_factory=DemoConfig)
    compiler: CompilerConfig = field(default_factory=CompilerConfig)
    plugins: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _choice("--kernels", self.kernels, KERNELS)
        if self.quant.int8_input and self.learning is not None:
            raise TinyccError("--int8-io needs --inference-only (on-device learning takes float input)")

    @property
    def inference_only(self) -> bool:
        return self.learning is None

    @property
    def int8_io(self) -> bool:
        """--inference-only --int8-io: int8 input and output."""
        return self.inference_only and self.quant.int8_input

    @property
    def board_name(self) -> str | None:
        return self.board.name if self.board is not None else None

    @property
    def target_list(self) -> tuple:
        """The registered targets (the built-in ones for a config built without a registry)."""
        from .targets import BUILTIN_TARGETS

        return tuple(self.targets) or BUILTIN_TARGETS

    def plugin(self, name: str) -> Any:
        """The typed options a plugin declared (None when the plugin is absent or blocked)."""
        return self.plugins.get(name)

    def with_quant(self, **changes: Any) -> "CompileConfig":
        return replace(self, quant=replace(self.quant, **changes))

    def without_widening(self) -> "CompileConfig":
        """The same compile without the weights widened in flash (--no-widen)."""
        return replace(self, memory=replace(self.memory, widen=False))


@dataclass(frozen=True)
class TestVectors:
    """Inputs (and labels or regression targets) a demo embeds; ``learn`` learn calls cycle through them."""

    __test__ = False  # not a pytest class

    x: np.ndarray
    y: np.ndarray | None = None
    count: int | None = None  # at most this many (default: the config's test_count)
    learn: int | None = None  # learn calls in the demo (default: the number of vectors)


# ---- building a config ------------------------------------------------------------------------------------------
_LEARNING_ARGS = tuple(f.name for f in fields(LearningConfig) if f.name != "seed")


def learning_flags(args: argparse.Namespace) -> list[str]:
    """The on-device learning options given (as --flags): refused with --inference-only."""
    return ["--" + k.replace("_", "-") for k in _LEARNING_ARGS if getattr(args, k, None) not in (None, False)]


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def from_args(args: argparse.Namespace, registry: Any) -> CompileConfig:
    """The config of ``tinycc compile`` (or of the Python API, through :func:`make_config`)."""
    board = registry.board(args.board) if getattr(args, "board", None) else None
    inference_only = bool(getattr(args, "inference_only", False))
    if getattr(args, "int8_io", False) and not inference_only:
        raise TinyccError("--int8-io needs --inference-only (on-device learning takes float input)")
    if inference_only:
        given = learning_flags(args)
        if given:
            raise TinyccError(f"{', '.join(given)}: on-device learning options, but --inference-only deploys no "
                              "classifier and no buffer; drop them or drop --inference-only")
        learning = None
    else:
        learning = LearningConfig(**_given(args, _names(LearningConfig)))
    quant = QuantConfig(**_given(args, _names(QuantConfig)),
                        **({"int8_input": True, "int8_output": True} if getattr(args, "int8_io", False) else {}))
    ram, flash, where = getattr(args, "ram", None), getattr(args, "flash", None), "--ram/--flash"
    if board is not None:
        ram, flash, where = ram or board.ram, flash or board.flash, f"board {board.name}"
    memory = MemoryConfig(ram, flash, where, getattr(args, "planner", None) or MemoryConfig.planner,
                          not getattr(args, "no_inplace", False), not getattr(args, "no_widen", False))
    compiler = CompilerConfig(force=bool(getattr(args, "force", False)),
                              dump_after=tuple(getattr(args, "dump_after", None) or ()),
                              verify_each=not getattr(args, "no_verify_each", False),
                              time_passes=bool(getattr(args, "time_passes", False)),
                              passes=tuple(getattr(args, "passes", None) or ()),
                              progress=bool(getattr(args, "progress", False)),
                              report=bool(getattr(args, "report", False)))
    kernels = getattr(args, "kernels", None) or CompileConfig.kernels
    plugins = {e.name: e.obj.build(args) for e in registry.option_groups.values()}
    return CompileConfig(board=board, target=registry.target_of(board) if board is not None else None,
                         targets=registry.target_list(), learning=learning, quant=quant, memory=memory, kernels=kernels,
                         demo=DemoConfig(**_given(args, _names(DemoConfig))), compiler=compiler,
                         plugins=MappingProxyType(plugins))


def make_config(session: Any, **options: Any) -> CompileConfig:
    """The Python API: keywords named like the command-line options (``board="mega2560", buffer=4, lr=0.05``)."""
    from .driver import compile_parser

    parser = compile_parser(session)
    args = parser.parse_args(["MODEL", "-t", "c", "-o", "OUT"])
    known = set(vars(args)) | {"seed", "calib_scale", "calib_limit", "calib_batch_size", "int8_input",
                                "int8_output", "dense_per_tensor", "planner", "progress", "deep", "deep_cut", "deep_lr"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TinyccError(f"unknown compile option(s): {', '.join(unknown)}")
    for k, v in options.items():
        setattr(args, k, v)
    return from_args(args, session.registry)
