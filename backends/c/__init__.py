"""The `c` backend: an interpreter-free C99 project (static arena, const weights, on-device training)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ... import __version__
from ...errors import TinyccError, UnsupportedLayerError
from ...ir.deployment import Deployment
from ...ir.graph import Graph
from ...ir.interpreter_int8 import interpreter_only
from ...memory import plan_for
from ..base import Backend
from ..demo import DemoRun
from . import cmsis_nn
from .emitter import C_KINDS, _c_float, build_emit_model, c_kernel_problem

hookimpl = pluggy.HookimplMarker("tinycc")
HERE = Path(__file__).parent
RUNTIME_FILES = ("tinycc_port.h", "tinycc_gen.h", "tinycc_kernels.h", "tinycc_kernels.c", "tinycc_learn.h", "tinycc_learn.c")
CMSIS_FILES = ("tinycc_cmsis.h", "tinycc_cmsis.c")  # --kernels cmsis-nn only


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)

    def wrap(values: list[str], per_line: int = 16) -> str:
        lines = [", ".join(values[i:i + per_line]) for i in range(0, len(values), per_line)]
        return ",\n".join("    " + l for l in lines)

    env.filters["wrap"] = wrap
    return env


def test_vectors(dep: Deployment, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels embedded in the demo: options['test_vectors'] or calibration samples.

    A regression head gets float targets [n, T] instead of labels: the given ones when their size
    fits, else the inputs for an autoencoder, else zeros."""
    tv = options.get("test_vectors")
    if tv is not None:
        x, y = tv
    else:
        x = np.asarray(dep.meta.get("samples", np.zeros((0,))))
        y = np.asarray(dep.meta.get("labels", np.arange(len(x))))
    x = np.asarray(x, np.float32)
    if x.size == 0:
        x = np.zeros((1,) + tuple(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:]), np.float32)
        y = np.zeros(1, np.int64)
    n = min(len(x), int(options.get("test_count") or 8))
    if dep.loss != "mse":
        return x[:n], embedded_labels(dep, y[:n] if "labels" in dep.meta or tv is not None else
                                      np.arange(n) % dep.num_classes)
    t = np.asarray(y, np.float32)
    if t.size >= n * dep.target_count and len(t) >= n and t[:n].size == n * dep.target_count:
        return x[:n], t[:n].reshape(n, dep.target_count)
    if dep.target == "input":
        return x[:n], x[:n].reshape(n, -1)
    return x[:n], np.zeros((n, dep.target_count), np.float32)


def vector_context(dep: Deployment, x: np.ndarray, y: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
    """What test_vectors.h.j2 renders: inputs, and labels or regression targets (none for an autoencoder,
    whose demo learns with target NULL = the input)."""
    ts = [] if dep.loss != "mse" or dep.target == "input" else [[_c_float(v) for v in r.reshape(-1)] for r in y]
    return {"n": len(x), "size": int(np.prod(x.shape[1:])), "xs": [[_c_float(v) for v in r.reshape(-1)] for r in x],
            "ys": [] if dep.loss == "mse" else [str(int(v)) for v in y], "ts": ts, "n_targets": dep.target_count,
            "n_learn": int(options.get("test_learn") or len(x))}


def embedded_labels(dep: Deployment, y: np.ndarray) -> np.ndarray:
    """Labels as the demo embeds them (class indices, never wrapped: one out of range is a TinyccError;
    regression targets as given)."""
    if dep.loss == "mse":
        return np.asarray(y, np.float32)
    y = np.asarray(y, np.int64)
    bad = np.nonzero((y < 0) | (y >= dep.num_classes))[0]
    if len(bad):
        raise TinyccError(f"test vector label {int(y[bad[0]])} (sample {int(bad[0])}) is not a class of the "
                          f"classifier (0..{dep.num_classes - 1})")
    return y


def write_test_vectors(path: Path, dep: Deployment, x: np.ndarray, y: np.ndarray, options: dict[str, Any],
                       env: Any = None) -> Path:
    """Write the demo's test_vectors.h (inputs x [N, ...], labels [N] or regression targets [N, T]; the first
    options['test_learn'] (default N) learn calls cycle through them) from ``env``'s template (default: c's)."""
    path.write_text((env or _env()).get_template("test_vectors.h.j2").render(**vector_context(dep, x, y, options)))
    return path


DEMO_FILES = {"main.c": "main.c.j2", "cortexm/startup.c": "cortexm/startup.c.j2", "cortexm/link.ld": "cortexm/link.ld.j2"}
BUILD_FILES = {"Makefile": "Makefile.j2", "CMakeLists.txt": "CMakeLists.txt.j2", "README.md": "README.md.j2",
               "cortexm/link-microbit.ld": "cortexm/link-microbit.ld.j2"}


def inference_context(dep: Deployment, em: Any) -> dict[str, Any]:
    """Template values of an inference-only project: output size and quantization, I/O types."""
    oq = dep.feature_quant
    return {"n_out": dep.feature_count, "int8_io": dep.int8_io,
            "output_scale": f"{float(np.float32(oq.scale[0]))!r}f", "output_zp": int(oq.zero_point[0]),
            "output_ptr": em.consts["features_ptr"]}


def write_inference_vectors(path: Path, dep: Deployment, x: np.ndarray, env: Any = None) -> Path:
    """The inference demo's test_vectors.h: float inputs, or (--int8-io) the same inputs quantized as the
    model's input QUANTIZE does."""
    from ...plugins.inference import quantize_inputs

    if dep.int8_io:
        rows, ctype = [[str(int(v)) for v in r.reshape(-1)] for r in quantize_inputs(dep, x)], "int8_t"
    else:
        rows, ctype = [[_c_float(v) for v in r.reshape(-1)] for r in x], "float"
    text = (env or _env()).get_template("test_vectors_infer.h.j2").render(n=len(x), size=int(np.prod(x.shape[1:])),
                                                                        xs=rows, ctype=ctype)
    path.write_text(text)
    return path


def render_project(dep: Deployment, options: dict[str, Any], outdir: Path, *, with_main: bool = True,
                   classifier_only: bool = False, runtime_dir: str = "runtime", demo_dir: Path | None = None,
                   arena: int | None = None) -> list[Path]:
    """Write model.c/.h, tinycc_config.h, runtime/ (and the demo, build files) into outdir.

    ``demo_dir``: write the demo (main.c, test_vectors.h, cortexm/ startup and linker script) there, without the
    C target's build files (the tflm target brings its own). ``arena``: the arena bytes to declare in
    tinycc_config.h when the extractor is not tinycc's (TFLite Micro's measured arena)."""
    em = build_emit_model(dep, options)
    env = _env()
    name = dep.name
    c = em.consts if arena is None else {**em.consts, "arena": arena}
    quant_call = [k for k in em.calls if k.fn == "tcc_quantize_f32"]
    ctx = {
        "version": __version__, "name": name, "NAME": name.upper(), "dep": dep, "c": c, "arrays": em.arrays,
        "calls": em.calls, "kernels": em.kernels, "n_calls": len(em.calls), "batch": dep.train.batch_size,
        "lr": _c_float(dep.train.lr),
        "int8_storage": dep.buffer.storage == "int8", "mem": dep.memory, "mem_table": dep.memory.get("report", ""),
        "source": dep.meta.get("source", {}).get("path", dep.name),
        "input_scale": f"{float(np.float32(c.get('input_scale', 1.0)))!r}f", "input_zp": c.get("input_zp", 0),
        "has_quantize": bool(quant_call), "input_ptr": quant_call[0].args[-1] if quant_call else "NULL",
        "n_layers": len(dep.classifier), "classifier_only": classifier_only,
        "cmsis": cmsis_nn.enabled(options) and not classifier_only, "cmsis_dirs": cmsis_nn.SOURCE_DIRS,
    }
    infer = "_infer" if dep.inference_only else ""  # --inference-only: the whole int8 model, no learning
    if dep.inference_only:
        ctx.update(inference_context(dep, em))
    files = {outdir / k: v for k, v in {"model.c": f"model{infer}.c.j2", "model.h": f"model{infer}.h.j2",
                                         "tinycc_config.h": f"tinycc_config{infer}.h.j2"}.items()}
    demo = demo_dir if demo_dir is not None else outdir if with_main else None
    if demo is not None:
        files.update({demo / k: (f"main{infer}.c.j2" if k == "main.c" else v) for k, v in DEMO_FILES.items()})
    if with_main and demo_dir is None:
        files.update({outdir / k: (f"README{infer}.md.j2" if k == "README.md" else v) for k, v in BUILD_FILES.items()})
    written = []
    for path, tpl in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(tpl).render(**ctx))
        written.append(path)
    if demo is not None and dep.inference_only:
        from ...plugins.inference import test_inputs

        written.append(write_inference_vectors(demo / "test_vectors.h", dep, test_inputs(dep, options), env))
    elif demo is not None:
        x, y = test_vectors(dep, options)
        written.append(write_test_vectors(demo / "test_vectors.h", dep, x, y, options, env))
    rt = outdir / runtime_dir
    rt.mkdir(exist_ok=True)
    for f in RUNTIME_FILES + (CMSIS_FILES if ctx["cmsis"] else ()):
        shutil.copyfile(HERE / "runtime" / f, rt / f)
        written.append(rt / f)
    return written


class CBackend(Backend):
    name = "c"
    runtime_descriptors = True
    description = "plain C99: static arena, const int8 weights, fixed kernel schedule, on-device training"
    platforms = ("host", "qemu-m4", "qemu-m7", "qemu-m0plus")

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        if not (project / "main.c").is_file() or not (project / "Makefile").is_file():
            raise TinyccError(f"{project}: not a project of target c (no main.c/Makefile)")
        if deployment.inference_only:
            write_inference_vectors(project / "test_vectors.h", deployment, np.asarray(x, np.float32))
            return
        write_test_vectors(project / "test_vectors.h", deployment, x, embedded_labels(deployment, y), {})

    def run_demo(self, project: Path, platform: str) -> DemoRun:
        from .run import run_demo

        return run_demo(project, platform)

    def check(self, deployment: Deployment, options: dict[str, Any]) -> None:
        g = deployment.extractor
        for op in g.ops:
            why = interpreter_only(g, op) or c_kernel_problem(g, op)  # run_int8 runs them, C does not
            if why is not None:
                raise UnsupportedLayerError(f"layer {op.origin!r}: {why} has no C kernel (int8 reference "
                                            "interpreter only)")
            if op.kind not in C_KINDS:
                raise UnsupportedLayerError(f"layer {op.origin!r} ({op.kind.value}) has no C kernel; "
                                            "`tinycc ops` lists them")

    def arena_bytes(self, extractor: Graph, options: dict[str, Any]) -> int:
        return max(plan_for(extractor, options).arena, 16)

    def scratch_bytes(self, extractor: Graph, options: dict[str, Any]) -> int:
        return cmsis_nn.scratch_bytes(extractor, options)

    def table_bytes(self, extractor: Graph, options: dict[str, Any]) -> int:
        from .kernels import table_bytes

        return table_bytes(extractor, options)

    def emit(self, deployment: Deployment, options: dict[str, Any], outdir: Path) -> list[Path]:
        return render_project(deployment, options, outdir)


@hookimpl
def tinycc_register_backends(registry: Any) -> None:
    registry.add_backend(CBackend)
