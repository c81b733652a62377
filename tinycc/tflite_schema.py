"""The TFLite flatbuffer schema bindings (generated code shipped inside the LiteRT/TF wheels)."""
from __future__ import annotations

from typing import Any


def schema() -> Any:
    """Return the generated schema module (object API: ModelT, SubGraphT, TensorT, ...)."""
    try:
        from ai_edge_litert import schema_py_generated as s  # light: no tensorflow import
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as s
        except ImportError:  # pragma: no cover - tflite-micro ships a copy too
            from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s
    return s


def builtin_name(code: int) -> str:
    s = schema()
    for k, v in vars(s.BuiltinOperator).items():
        if v == code and not k.startswith("_"):
            return k
    return f"BUILTIN_{code}"
