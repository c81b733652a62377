"""The `tflm` backend: Φf as a .tflite run by TensorFlow Lite Micro; Φc, buffer and training from tinycc's C runtime."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

import pluggy

from ... import __version__
from ...errors import TinyccError, UnsupportedLayerError
from ...ir.deployment import Deployment
from ...ir.graph import Graph
from ...ir.ops import OpKind
from ...backend_api import Candidate, MemoryFigures
from ...config import TestVectors
from ...tflite_writer import operator_names, write_tflite
from .. import names
from ..base import Backend, check_static_size, refuse_deep
from ..c import cmsis_nn
from ..c.tables import string_lines
from .measure import measure_arena

hookimpl = pluggy.HookimplMarker("tinycc")
HERE = Path(__file__).parent
ARENA_DETAIL = ("TFLite Micro arena: measured (the larger of the recorded total and the smallest arena that "
                "allocates) + margin")

# TFLite builtin operator -> MicroMutableOpResolver method (what TFLite Micro supports among
# the operators tinycc's writer emits)
RESOLVER = {"CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "FULLY_CONNECTED": "AddFullyConnected",
            "RELU": "AddRelu", "RELU6": "AddRelu6", "MAX_POOL_2D": "AddMaxPool2D",
            "AVERAGE_POOL_2D": "AddAveragePool2D", "RESHAPE": "AddReshape", "ADD": "AddAdd", "MUL": "AddMul",
            "CONCATENATION": "AddConcatenation", "PAD": "AddPad", "QUANTIZE": "AddQuantize",
            "DEQUANTIZE": "AddDequantize", "LOGISTIC": "AddLogistic", "TANH": "AddTanh",
            "HARD_SWISH": "AddHardSwish", "SOFTMAX": "AddSoftmax", "LEAKY_RELU": "AddLeakyRelu", "MEAN": "AddMean",
            "SUB": "AddSub", "MAXIMUM": "AddMaximum", "MINIMUM": "AddMinimum",
            "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
            "RESIZE_BILINEAR": "AddResizeBilinear", "TRANSPOSE": "AddTranspose",
            "SLICE": "AddSlice", "TRANSPOSE_CONV": "AddTransposeConv",
            "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "STRIDED_SLICE": "AddStridedSlice",
            "PRELU": "AddPrelu", "ELU": "AddElu", "SVDF": "AddSvdf",
            "REVERSE_V2": "AddReverseV2", "SQUARED_DIFFERENCE": "AddSquaredDifference", "RSQRT": "AddRsqrt",
            "NEG": "AddNeg"}
# operators whose variable tensors (an LSTM's hidden and cell state) TFLite Micro keeps between Invoke calls:
# the interpreter is Reset() before each inference so every input starts from a zero state, as in Keras
STATEFUL = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM"})
# SVDF's state is kept between Invoke calls on purpose (one call is one frame of a stream, ir/svdf.py): no Reset()
# before each inference; `<name>_reset_state()` calls Reset(). A model with both would zero the SVDF state: refused.


_NO_TFLM = {OpKind.GRU: "GRU", OpKind.SIMPLE_RNN: "SimpleRNN"}


def refuse_recurrent(graph: Graph) -> None:
    """TFLite Micro has no GRU (and tinycc does not lower SimpleRNN to its ops): one line, before any file."""
    kinds = {op.kind for op in graph.ops}
    if OpKind.SVDF in kinds and OpKind.LSTM in kinds:
        raise UnsupportedLayerError("an LSTM and an SVDF in one model: TFLite Micro's Reset() before each inference "
                                    "(the LSTM's zero state) would also zero the SVDF's stream state; use --target c")
    for op in graph.ops:
        if op.kind in _NO_TFLM:
            raise UnsupportedLayerError(f"layer {op.origin or op.name!r} ({_NO_TFLM[op.kind]}): TFLite Micro has no "
                                        f"{_NO_TFLM[op.kind]} kernel; use --target c or arduino (tinycc's integer "
                                        "recurrent kernels)")


def extractor_tflite(extractor: Graph) -> bytes:
    return write_tflite(extractor)


def deployment_tflite(dep: Deployment) -> bytes:
    """The .tflite this target runs: Φf, or for --inference-only the whole int8 model with its I/O boundaries
    (what ``emit`` writes; a compile makes it once, in ``memory_figures``)."""
    from ...deploy import full_graph

    return write_tflite(full_graph(dep) if dep.inference_only else dep.extractor)


@lru_cache(maxsize=1)
def _env() -> Any:
    """The tflm templates' jinja2 environment, escaping installed (one per process, templates cached)."""
    import jinja2

    return names.install(jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), trim_blocks=True,
                                            lstrip_blocks=True, keep_trailing_newline=True,
                                            undefined=jinja2.StrictUndefined))


def model_bytes(data: bytes) -> tuple[int, names.Escaped]:
    """(declared size, initializer) of the C++ array holding ``data``: one string literal of its bytes
    (tables.string_lines), which g++ parses many times faster than a list of numbers. C++ counts a string's NUL
    among the initializers, so the array is ``len(data)`` long when the last byte is 0 (that byte is the NUL, left
    out of the text), else one longer (a NUL after the flatbuffer, outside ``_len``). Only tinycc's escapes: no
    model text reaches the file as such."""
    if data[-1:] == b"\0":
        return len(data), names.Escaped(string_lines(data[:-1]) or '    ""')
    return len(data) + 1, names.Escaped(string_lines(data))


@dataclass(frozen=True)
class TflmArtifact:
    """The .tflite this target runs (Φf, or with --inference-only the whole int8 model with its I/O boundaries)
    and TFLite Micro's measured arena for it: made once while sizing, reused by check and emit."""

    data: bytes
    arena: Any  # measure.ArenaMeasurement


def _artifact(dep: Deployment) -> TflmArtifact:
    """The .tflite and its arena made while sizing ``dep`` for this target (made here for a deployment that
    another backend sized)."""
    art = dep.figures.artifact if dep.figures is not None else None
    if isinstance(art, TflmArtifact):
        return art
    data = deployment_tflite(dep)
    what = "the model" if dep.inference_only else "the feature extractor"
    return TflmArtifact(data, measure_arena(data, what=what))


def refuse_missing(data: bytes) -> None:
    """One line naming the operators TFLite Micro has no kernel for (GELU, for one), before anything is measured."""
    missing = [n for n in operator_names(data) if n not in RESOLVER]
    if missing:
        raise UnsupportedLayerError(f"TFLite Micro has no kernel for {', '.join(missing)}; use --target c or arduino")


class TflmBackend(Backend):
    name = "tflm"
    description = "TFLite Micro C++: extractor in TFLite Micro (measured arena), tinycc runtime for learning"
    multi_io = True  # inference-only models with several inputs/outputs: one pointer each, as the c target

    platforms = ("host",)

    @classmethod
    def supported_ops(cls) -> list[tuple[str, str, list[str]]]:
        return [("TFLite Micro operators", "int8 (the trainable classifier is float32, tinycc's runtime)",
                 sorted(RESOLVER))]

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        from ..c import embedded_labels, write_test_vectors

        if not (project / "main.c").is_file() or not (project / "src" / "tinycc_tflm.cc").is_file():
            raise TinyccError(f"{project}: not a project of target tflm (no main.c/src/tinycc_tflm.cc)")
        if deployment.inference_only:
            from ..c import write_inference_vectors

            write_inference_vectors(project / "test_vectors.h", deployment, np.asarray(x, np.float32))
            return
        write_test_vectors(project / "test_vectors.h", deployment, x, embedded_labels(deployment, y))

    def run_demo(self, project: Path, platform: str, target: Any = None) -> Any:
        """Build the demo against the cached host TFLite Micro library and run it with the dump on."""
        from ..c.run import ram_flash, section_sizes
        from ..demo import DemoFailed, DemoRun, parse
        from . import build

        if platform != "host":
            raise TinyccError(f"target tflm runs on host, not {platform!r}")
        library = build.find_library("host", None, None)  # a missing snapshot or toolchain is bad input (exit 2)
        try:
            exe = build.build_host(project, library=library)
            out = parse(build.run(exe, dump=True))
        except TinyccError as e:
            raise DemoFailed(str(e)) from None
        if not out.done:
            raise DemoFailed("the tflm demo stopped before its end")
        ram, flash = ram_flash(section_sizes(exe))
        return DemoRun("host", out, ram, flash, "host executable with TFLite Micro (size -A): .data+.bss; "
                       ".text+.rodata+.data+...", dict(out.time_us), "us")

    def check(self, deployment: Deployment) -> None:
        if cmsis_nn.enabled(deployment.config.kernels):  # the options first, then the model
            raise TinyccError("--kernels cmsis-nn is for --target c; TFLite Micro picks its kernels when it is built "
                              "(OPTIMIZED_KERNEL_DIR=cmsis_nn)")
        refuse_deep(deployment, "tflm", "TFLite Micro runs inference only: no training")
        refuse_recurrent(deployment.extractor)
        check_static_size(deployment)
        refuse_missing(_artifact(deployment).data)

    def memory_figures(self, candidate: Candidate) -> MemoryFigures:
        """TFLite Micro's arena, measured on the .tflite of ``candidate.program`` (written and measured once)."""
        from ..c import runtime_descriptors

        refuse_recurrent(candidate.program)

        data = write_tflite(candidate.program)
        refuse_missing(data)
        m = measure_arena(data, what="the model" if candidate.classifier is None else "the feature extractor")
        return MemoryFigures(arena=m.arena, arena_detail=ARENA_DETAIL, descriptors=runtime_descriptors(candidate),
                             artifact=TflmArtifact(data, m))

    def adjust_report(self, report: Any, candidate: Candidate, figures: MemoryFigures) -> None:
        """Flash: the .tflite bytes (measured), TFLite Micro's code for the resolved operators (estimated) and
        tinycc's code; RAM: the interpreter objects (see footprint.py)."""
        from ...targets import code_table
        from .footprint import adjust

        data = figures.artifact.data
        table = code_table(candidate.config.target)
        learning = candidate.classifier is not None
        code = table["base"] + (table["learn"] + table["buffer"] if learning else 0)
        adjust(report, data, operator_names(data), code)

    def emit(self, deployment: Deployment, outdir: Path, vectors: TestVectors | None = None) -> list[Path]:
        from ..c import feature_context, io_list, is_multi_io, render_project

        art = _artifact(deployment)
        data, m = art.data, art.arena
        ops = operator_names(data)
        name = names.c_identifier(deployment.name)
        src = outdir / "src"
        src.mkdir(parents=True, exist_ok=True)
        infer = "_infer" if deployment.inference_only else ""  # the whole model in TFLite Micro, no learning
        # otherwise: model.h API, classifier, buffer and training from the C target; the demo main.c is the C target's
        if infer:  # the c target's inference demo (main.c, test vectors, Cortex-M start-up) over src/model.h
            files = _inference_demo(deployment, outdir, vectors, m.arena)
        else:
            files = render_project(deployment, src, vectors, with_main=False, classifier_only=True,
                                   runtime_dir=".", demo_dir=outdir, arena=m.arena)
        env = _env()
        declared, body = model_bytes(data)
        ctx = {"version": __version__, "name": name, "NAME": name.upper(), "ops": [RESOLVER[n] for n in ops],
               "op_names": ops, "arena": m.arena, "recorded": m.recorded, "minimum": m.minimum, "margin": m.margin,
               "data": body, "declared": declared, "size": len(data), "dep": deployment,
               "n_features": deployment.feature_count,
               "input_size": deployment.extractor.tensors[deployment.extractor.inputs[0]].size,
               "mem_table": deployment.memory.get("report", ""), "int8_io": deployment.int8_io,
               "n_out": deployment.feature_count, "infer": bool(infer), "mem": deployment.memory,
               "reset_state": bool(STATEFUL & set(ops)), "svdf_state": "SVDF" in ops, "multi": is_multi_io(deployment),
               **feature_context(deployment)}
        if ctx["multi"]:
            ctx["ins"], ctx["outs"] = io_list(deployment)
        else:  # one input x and one output y
            ctx["ins"], ctx["outs"] = [{"name": "x", "size": ctx["input_size"]}], [{"name": "y", "size": ctx["n_out"]}]
        if infer:
            out = {"src/tinycc_tflm.h": "tinycc_tflm_infer.h.j2", "src/tinycc_tflm.cc": "tinycc_tflm_infer.cc.j2",
                   "src/model_data.h": "model_data.h.j2", "src/model_data.cc": "model_data.cc.j2",
                   "src/model.h": "model_infer.h.j2", "Makefile": "Makefile.j2",
                   "CMakeLists.txt": "CMakeLists_infer.txt.j2", "README.md": "README_infer.md.j2"}
        else:
            out = {"src/tinycc_tflm.cc": "tinycc_tflm.cc.j2", "src/model_data.h": "model_data.h.j2",
                   "src/model_data.cc": "model_data.cc.j2", "Makefile": "Makefile.j2",
                   "CMakeLists.txt": "CMakeLists.txt.j2", "README.md": "README.md.j2"}
        for path, tpl in out.items():
            (outdir / path).write_text(env.get_template(tpl).render(**ctx))
            files.append(outdir / path)
        tfl = outdir / (f"{name}.tflite" if infer else f"{name}_extractor.tflite")
        tfl.write_bytes(data)
        files.append(tfl)
        return files


def _inference_demo(deployment: Deployment, outdir: Path, vectors: TestVectors | None, arena: int) -> list[Path]:
    """The c target's inference demo files (main.c, test_vectors.h, cortexm/) written into ``outdir``; the c
    target's own model files that come with them are left in a scratch folder (TFLite Micro runs the model)."""
    import tempfile

    from ..c import render_project

    with tempfile.TemporaryDirectory(prefix="tinycc-tflm-") as scratch:
        written = render_project(deployment, Path(scratch), vectors, with_main=False, demo_dir=outdir, arena=arena)
    return [p for p in written if outdir in p.parents]


@hookimpl
def tinycc_register_backends(registry: Any) -> None:
    registry.add_backend(TflmBackend)
