"""What TFLite Micro adds to the `tflm` target's memory report: the model data, its code and its objects.

Flash: the ``.tflite`` flatbuffer compiled into ``src/model_data.cc`` (weights, biases, quantization parameters and
the graph: measured, its exact length), TFLite Micro's code for the resolved operators (``KERNEL_TEXT``) and for its
interpreter framework (``FRAMEWORK_TEXT``), both estimates, and tinycc's own code (classifier, learner, glue).
RAM: the interpreter and the resolver in static storage (``src/tinycc_tflm.cc``), sized for a 32-bit Cortex-M.

Both code tables are the ``.text`` bytes of the vendored snapshot's objects (shared/vendor/tflite-micro-90b983c2)
compiled with arm-none-eabi-g++ 12 for the Cortex-M4F, -Os, reference kernels, as its build_tflm.sh does:
``KERNEL_TEXT`` per operator (``kernels/<op>.cc`` + ``<op>_common.cc``), ``FRAMEWORK_TEXT`` for the 37 framework
objects (tensorflow/lite/micro/*.cc with arena_allocator/, memory_planner/, tflite_bridge/; lite/core/api,
lite/core/c, lite/kernels/internal and both kernel_util.cc). Without --gc-sections they are upper estimates of what
a linked program keeps (the profiler and hexdump are counted, for one). The sizeof figures were printed by the same
compiler for ``tflite::MicroInterpreter`` and ``tflite::MicroMutableOpResolver<N>``.
"""
from __future__ import annotations

KERNEL_TEXT = {  # TFLite builtin operator -> bytes of .text (Cortex-M4F, -Os, reference kernels)
    "CONV_2D": 3112 + 1466, "DEPTHWISE_CONV_2D": 2484 + 1464, "FULLY_CONNECTED": 3294 + 554,
    "RELU": 738 + 846, "RELU6": 738 + 846, "MAX_POOL_2D": 2332 + 1856, "AVERAGE_POOL_2D": 2332 + 1856,
    "ADD": 5110 + 652, "MUL": 212 + 5498, "CONCATENATION": 3524, "PAD": 2088 + 960, "QUANTIZE": 58 + 1738,
    "DEQUANTIZE": 440 + 272, "LOGISTIC": 1528 + 590, "TANH": 2044, "HARD_SWISH": 698 + 408, "LEAKY_RELU": 634 + 368,
    "SOFTMAX": 2592 + 1604, "RESHAPE": 102 + 536, "MEAN": 270 + 5530, "PRELU": 2060 + 1086, "ELU": 690,
    "REVERSE_V2": 2458,
}
KERNEL_SHARED = {"RELU": "activations", "RELU6": "activations", "MAX_POOL_2D": "pooling", "AVERAGE_POOL_2D": "pooling"}
FRAMEWORK_TEXT = 28612
INTERPRETER_BYTES = 208          # sizeof(tflite::MicroInterpreter), 32-bit Cortex-M
RESOLVER_BYTES = (12, 36)        # sizeof(tflite::MicroMutableOpResolver<N>) = 12 + 36 N


def kernel_code(names: list[str]) -> int:
    """Estimated .text of the kernels for the resolved operators ``names`` (shared objects counted once)."""
    seen: set[str] = set()
    total = 0
    for n in names:
        key = KERNEL_SHARED.get(n, n)
        if key not in seen:
            seen.add(key)
            total += KERNEL_TEXT.get(n, 0)
    return total


def interpreter_bytes(n_ops: int) -> int:
    return INTERPRETER_BYTES + RESOLVER_BYTES[0] + RESOLVER_BYTES[1] * n_ops


def adjust(report: object, data: bytes, names: list[str], tinycc_code: int) -> None:
    """Replace the C target's extractor items of ``report`` (an ir.memory_model.MemoryReport) by TFLite Micro's."""
    drop = {"extractor weights", "extractor biases", "weights", "biases", "requantization tables",
            "kernel lookup tables", "code"}
    report.items = [i for i in report.items if i.name not in drop]  # type: ignore[attr-defined]
    report.add("interpreter objects", "ram", interpreter_bytes(len(names)), exact=False,  # type: ignore[attr-defined]
               detail=f"MicroInterpreter {INTERPRETER_BYTES} + MicroMutableOpResolver<{len(names)}> "
                      f"{RESOLVER_BYTES[0] + RESOLVER_BYTES[1] * len(names)} (sizeof on a 32-bit Cortex-M)")
    report.add("model data", "flash", len(data),  # type: ignore[attr-defined]
               detail="measured: the .tflite flatbuffer (int8 weights, int32 biases, quantization, graph)")
    report.add("TFLite Micro code", "flash", FRAMEWORK_TEXT + kernel_code(names), exact=False,  # type: ignore[attr-defined]
               detail=f"estimated: interpreter framework {FRAMEWORK_TEXT:,} + kernels {kernel_code(names):,} for "
                      f"{', '.join(names)} (Cortex-M4 -Os .text, reference kernels)")
    report.add("code", "flash", tinycc_code, exact=False, detail="estimated: tinycc's classifier, learner and glue")  # type: ignore[attr-defined]
