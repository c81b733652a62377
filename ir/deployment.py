"""What a backend receives: the int8 feature extractor, the trainable float classifier,
the replay buffer and training settings, and the memory figures they must allocate."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .graph import Graph
from .tensor import QuantParams


@dataclass
class TrainConfig:
    """On-device training settings (identical semantics on host and device). The default learning rate is
    written here once; ``tinycc.config.LearningConfig`` and the IR's learners take it from here."""

    lr: float = 0.01
    epochs: int = 1
    batch_size: int = 1
    mode: str = "all"  # what is trained: all | last | bias (see tinycc.ir.train)


@dataclass
class BufferConfig:
    """Replay buffer: ``capacity`` entries of features + label. TinyOL = capacity 1."""

    capacity: int
    policy: str = "fifo"  # fifo | reservoir | class_balanced
    storage: str = "int8"  # int8 | int16 (features in the extractor's output quantization) | float32
    seed: int = 1


@dataclass
class Deployment:
    """The program a backend emits.

    ``extractor`` is a quantized graph whose single output is the int8 (or, for a 16x8 extractor, int16)
    feature tensor (before dequantization); ``feature_quant`` is that tensor's quantization, used to
    dequantize features and buffer entries before the float classifier.
    ``classifier`` is a list of ``tinycc.ir.train.DenseLayer`` (weights ``[O, I]``).
    ``memory`` is filled by the memory model (sections in bytes) and is what the
    backend must allocate exactly.
    ``loss`` is the head (``ce``, ``bce``, ``mse``; see ``tinycc.ir.train``). For ``mse``,
    ``target`` says where a sample's target comes from when none is given: ``"input"`` (an
    autoencoder, output shape = input shape: the target is the model's float input) or
    ``"given"`` (every sample brings its target); label heads have ``"none"``.
    ``target_quant``: the int8 quantization of stored targets (the input's, for an autoencoder
    with int8 storage), or None for float32 targets.
    ``inference_only`` (``compile --inference-only``): ``extractor`` is the *whole* model in int8 (float input
    through a QUANTIZE, int8 output), there is no classifier and no buffer (capacity 0); ``int8_io`` says
    whether the deployed program takes int8 input and gives int8 output (else float in, float out through
    a DEQUANTIZE). ``tinycc.deploy.full_graph`` gives the graph with those boundaries.
    """

    name: str
    extractor: Graph
    feature_quant: QuantParams
    classifier: list[Any]
    num_classes: int
    buffer: BufferConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    loss: str = "ce"
    target: str = "none"
    target_quant: QuantParams | None = None
    inference_only: bool = False
    int8_io: bool = False
    # filled by the deploy stage (tinycc.deploy), computed once: the compile config it was built with
    # (tinycc.config.CompileConfig), the resolved board (or None), tinycc's memory plan of ``extractor``
    # (tinycc.memory.MemoryPlan) and the backend's memory figures (tinycc.backend_api.MemoryFigures)
    config: Any = None
    board: Any = None
    plan: Any = None
    figures: Any = None

    @property
    def num_outputs(self) -> int:
        """Outputs of the classifier's last layer (probabilities, sigmoid probability, regression outputs);
        for an inference-only deployment, the int8 graph's output size."""
        if not self.classifier:
            return self.feature_count
        return int(self.classifier[-1].n_out)

    @property
    def target_count(self) -> int:
        """Floats per target (the outputs for ``mse``, else 0)."""
        return self.num_outputs if self.loss == "mse" else 0

    @property
    def target_storage(self) -> str:
        return "int8" if self.target_quant is not None else "float32"

    @property
    def feature_dtype(self) -> str:
        """The features' type at the cut: "int8", or "int16" (a 16x8 extractor's features kept as they are)."""
        return "int16" if self.extractor.tensors[self.extractor.outputs[0]].dtype.value == "int16" else "int8"

    @property
    def feature_count(self) -> int:
        out = self.extractor.tensors[self.extractor.outputs[0]]
        n = 1
        for d in out.shape[1:]:
            n *= d
        return n
