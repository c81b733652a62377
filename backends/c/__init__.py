"""The `c` backend: an interpreter-free C99 project (static arena, const weights, on-device training)."""
from __future__ import annotations

import logging
import shutil
from functools import lru_cache
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ... import __version__
from ...errors import TinyccError, UnsupportedLayerError
from ...ir.deployment import Deployment
from ...backend_api import Candidate, MemoryFigures
from ...config import DemoConfig, TestVectors
from ...ir.calibration import test_vector_count
from ...ir.graph import IRError
from ...ir.interpreter_int8 import FIXED_OUTPUT16, interpreter_only, lut16_params
from ...ir.ops import OpKind
from .emit16 import INT16_C_KINDS, is_int16_op
from ...targets import BUILTIN_TARGETS, family
from ...targets import platforms as target_platforms
from .. import names
from ..base import Backend, check_static_size, refuse_deep
from ..demo import DemoRun
from . import cmsis_nn, layout, tables
from .harvard import harvard_adjust
from .deep_project import deep_context, deep_figures, deep_learner, front_deployment, refuse_c_step, refuse_harvard
from .emitter import C_KINDS, _c_float, build_emit_model, c_kernel_problem

hookimpl = pluggy.HookimplMarker("tinycc")
HERE = Path(__file__).parent
BUILTIN_FAMILIES = ("host", "cortexm", "avr", "xtensa")  # the Makefile's own sections (or none)
RUNTIME_FILES = ("tinycc_port.h", "tinycc_gen.h", "tinycc_mve.h", "tinycc_kernels.h", "tinycc_kernels_tpl.h",
                 "tinycc_kernels.c", "tinycc_learn.h", "tinycc_learn.c")
CMSIS_FILES = ("tinycc_cmsis.h", "tinycc_cmsis.c")  # --kernels cmsis-nn only
DEEP_FILES = ("tinycc_backprop.h", "tinycc_backprop.c")  # --deep bias / blocks only


def new_env() -> Any:
    """A jinja2 environment over the C templates (escaping installed); ``_env`` is the shared one."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)

    def wrap(values: list[str]) -> str:
        """Numeric C initializers (made by tinycc), as many a line as fit under 100 columns."""
        return names.Escaped(layout.wrap_values(values))

    def c_call(call: Any, params: dict[str, list[str]], indent: str = "    ") -> str:
        """A kernel call of the schedule (tinycc's own names and literals), one argument a line when long."""
        return names.Escaped(layout.format_call(call.fn, call.args, params.get(call.fn), indent))

    def c_call_comment(call: Any) -> str:
        """The line above a call: tinycc's description of the layer and its escaped name."""
        return names.Escaped(layout.comment_lines(call.what, call.comment, "    "))

    def c_comment(use: Any) -> str:
        """A layer function's line naming one layer that calls it (``Kernel.uses``: escaped already)."""
        what, _, name = str(use).partition(": ")
        return names.Escaped(layout.comment_lines(what, name, "", "- "))

    def c_tables(arrays: Any) -> str:
        """The constant tables' C definitions (tinycc's own names and numbers; tables.py)."""
        return names.Escaped(tables.definitions(list(arrays)).rstrip("\n"))

    env.filters.update({"wrap": wrap, "c_tables": c_tables, "c_call": c_call, "c_call_comment": c_call_comment,
                        "c_comment": c_comment})
    return names.install(env)  # model text reaches templates only escaped (names.finalize refuses the rest)


@lru_cache(maxsize=1)
def _env() -> Any:
    """One environment per process: its template cache spares re-parsing the templates on every render
    (~0.25 s per project)."""
    return new_env()


def _count(dep: Deployment, vectors: TestVectors | None) -> int:
    if vectors is not None and vectors.count:
        return int(vectors.count)
    return dep.config.demo.test_count if dep.config is not None else DemoConfig.test_count


def _warn_zeros() -> None:
    logging.getLogger("tinycc.c").warning("no calibration data (--calib): the demo's only test vector is all "
                                          "zeros; pass --calib DATA to embed real samples")


def test_vectors(dep: Deployment, vectors: TestVectors | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels embedded in the demo: ``vectors`` or the calibration samples.

    A regression head gets float targets [n, T] instead of labels: the given ones when their size
    fits, else the inputs for an autoencoder, else zeros."""
    given = vectors is not None and vectors.x is not None
    if given:
        x, y = vectors.x, vectors.y
    else:
        x = np.asarray(dep.meta.get("samples", np.zeros((0,))))
        y = np.asarray(dep.meta.get("labels", np.arange(len(x))))
    x = np.asarray(x, np.float32)
    if x.size == 0:
        _warn_zeros()
        x = np.zeros((1,) + tuple(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:]), np.float32)
        y = np.zeros(1, np.int64)
    n = min(len(x), test_vector_count(x[:1].size, _count(dep, vectors)))
    if dep.loss != "mse":
        return x[:n], embedded_labels(dep, y[:n] if "labels" in dep.meta or given else
                                      np.arange(n) % dep.num_classes)
    t = np.asarray(y, np.float32)
    if t.size >= n * dep.target_count and len(t) >= n and t[:n].size == n * dep.target_count:
        return x[:n], t[:n].reshape(n, dep.target_count)
    if dep.target == "input":
        return x[:n], x[:n].reshape(n, -1)
    return x[:n], np.zeros((n, dep.target_count), np.float32)


def test_inputs(dep: Deployment, vectors: TestVectors | None = None) -> Any:
    """Float inputs an inference-only demo embeds: ``vectors.x`` or the calibration samples (a multi-input
    model: a list of arrays, one per input, from ``vectors.x`` as such a list or tuple, else the calibration samples
    of a float model, else zeros with a warning)."""
    if is_multi_io(dep) and len(dep.extractor.inputs) > 1:
        shapes = [tuple(dep.extractor.tensors[t].shape[1:]) for t in dep.extractor.inputs]
        given = dep.meta.get("samples")
        if vectors is not None and vectors.x is not None:
            xs = list(vectors.x)
        elif isinstance(given, list) and len(given) == len(shapes) and min(len(a) for a in given) > 0:
            xs = given  # calibration samples of a float model with several inputs
        else:
            _warn_zeros()
            xs = [np.zeros((1,) + s) for s in shapes]
        if len(xs) != len(shapes):
            raise TinyccError(f"test vectors: {len(xs)} arrays for a model with {len(shapes)} inputs")
        n = min(len(a) for a in xs)
        n = min(n, test_vector_count(sum(int(np.prod(s)) for s in shapes), _count(dep, vectors)))
        return [np.asarray(a, np.float32)[:n].reshape((-1,) + s) for a, s in zip(xs, shapes)]
    if is_multi_io(dep):
        return [_single_inputs(dep, vectors)]
    return _single_inputs(dep, vectors)


def _single_inputs(dep: Deployment, vectors: TestVectors | None) -> np.ndarray:
    x = vectors.x if vectors is not None else None
    if x is None:
        x = dep.meta.get("samples", np.zeros((0,)))
    x = np.asarray(x, np.float32)
    shape = tuple(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:])
    if x.size == 0:
        _warn_zeros()
        x = np.zeros((1,) + shape, np.float32)
    return x[:test_vector_count(int(np.prod(shape)), _count(dep, vectors))].reshape((-1,) + shape)


def vector_context(dep: Deployment, x: np.ndarray, y: np.ndarray, learn: int | None = None) -> dict[str, Any]:
    """What test_vectors.h.j2 renders: inputs, and labels or regression targets (none for an autoencoder,
    whose demo learns with target NULL = the input)."""
    ts = [] if dep.loss != "mse" or dep.target == "input" else [[_c_float(v) for v in r.reshape(-1)] for r in y]
    return {"n": len(x), "size": int(np.prod(x.shape[1:])), "xs": [[_c_float(v) for v in r.reshape(-1)] for r in x],
            "ys": [] if dep.loss == "mse" else [str(int(v)) for v in y], "ts": ts, "n_targets": dep.target_count,
            "n_learn": int(learn or len(x))}


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


def write_test_vectors(path: Path, dep: Deployment, x: np.ndarray, y: np.ndarray, learn: int | None = None,
                       env: Any = None) -> Path:
    """Write the demo's test_vectors.h (inputs x [N, ...], labels [N] or regression targets [N, T]; the first
    ``learn`` (default N) learn calls cycle through them) from ``env``'s template (default: c's)."""
    path.write_text((env or _env()).get_template("test_vectors.h.j2").render(**vector_context(dep, x, y, learn)))
    return path


DEMO_FILES = {"main.c": "main.c.j2", "cortexm/startup.c": "cortexm/startup.c.j2", "cortexm/link.ld": "cortexm/link.ld.j2"}
BUILD_FILES = {"Makefile": "Makefile.j2", "CMakeLists.txt": "CMakeLists.txt.j2", "README.md": "README.md.j2",
               "cortexm/link-microbit.ld": "cortexm/link-microbit.ld.j2", "cortexm/link-mps3.ld": "cortexm/link-mps3.ld.j2"}


def is_multi_io(dep: Deployment) -> bool:
    """An inference-only model with several inputs or outputs (its own API: one pointer per input/output)."""
    g = dep.extractor
    return dep.inference_only and (len(g.inputs) > 1 or len(g.outputs) > 1)


def _short(label: str, n: int = 48) -> str:
    """A model's name for a comment line: at most ``n`` characters (the escaping filter still applies)."""
    return label if len(label) <= n else label[:n - 3] + "..."


def io_list(dep: Deployment) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per input and output of a multi-I/O model: C parameter name (positional), the model's name for comments,
    size, and the int8 parameters (an input's: those of the QUANTIZE that reads it)."""
    g = dep.extractor
    in_names, out_names = dep.meta["io_names"]  # positional (tinycc.deploy.inference.io_names): no model text
    in_labels, out_labels = dep.meta["io_labels"]
    ins, outs = [], []
    for k, t in enumerate(g.inputs):
        readers = g.consumers(t)
        q = g.tensors[readers[0].outputs[0]].quant if len(readers) == 1 and readers[0].kind == OpKind.QUANTIZE \
            else g.tensors[t].quant
        ins.append({"k": k, "name": in_names[k], "label": _short(in_labels[k]), "size": g.tensors[t].size,
                    "zp": int(q.zero_point[0]), "scale": _c_float(q.scale[0])})
    for k, t in enumerate(g.outputs):
        q = g.tensors[t].quant
        outs.append({"name": out_names[k], "label": _short(out_labels[k]), "size": g.tensors[t].size,
                     "scale": _c_float(q.scale[0]), "zp": int(q.zero_point[0]),
                     "dequantize": _dequantize_fn(g.tensors[t])})
    return ins, outs


def _io_list(dep: Deployment, em: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``io_list`` with the arena pointers (and the input parameters) of the emitted model."""
    ins, outs = io_list(dep)
    qin = em.consts.get("quantized_inputs", {})
    for i, t in zip(ins, dep.extractor.inputs):
        ptr, s, zp = qin[t]
        i.update(ptr=ptr, zp=zp, scale=_c_float(s))
    for k, o in enumerate(outs):
        o["ptr"] = em.consts["output_ptrs"][k]
    return ins, outs


def _dequantize_fn(t: Any) -> str:
    """The runtime kernel that dequantizes an output tensor of ``t``'s integer type."""
    return "tcc_dequantize_s16" if t.dtype.value == "int16" else "tcc_dequantize_s8"


def feature_context(dep: Deployment) -> dict[str, Any]:
    """Template values of the features' C type: ``ft`` (int8_t, or int16_t for a 16x8 extractor's features kept
    native), ``fs`` (the API suffix s8/s16), ``fsize`` (bytes a value), and the replay buffer's entry type
    ``buf_ctype`` with ``storage``."""
    s16 = not dep.inference_only and dep.feature_dtype == "int16"
    storage = dep.buffer.storage
    return {"ft": "int16_t" if s16 else "int8_t", "fs": "s16" if s16 else "s8", "fsize": 2 if s16 else 1,
            "storage": storage, "buf_ctype": {"int8": "int8_t", "int16": "int16_t"}.get(storage, "float")}


def inference_context(dep: Deployment, em: Any) -> dict[str, Any]:
    """Template values of an inference-only project: output size and quantization, I/O types (and, for a model
    with several inputs or outputs, ``ins``/``outs``)."""
    oq = dep.feature_quant
    ctx = {"n_out": dep.feature_count, "int8_io": dep.int8_io,
           "output_scale": _c_float(oq.scale[0]), "output_zp": int(oq.zero_point[0]),
           "output_ptr": em.consts["features_ptr"], "multi": is_multi_io(dep),
           "output_dequantize": _dequantize_fn(dep.extractor.tensors[dep.extractor.outputs[0]])}
    if ctx["multi"]:
        ctx["ins"], ctx["outs"] = _io_list(dep, em)
    return ctx


def write_inference_vectors(path: Path, dep: Deployment, x: Any, env: Any = None) -> Path:
    """The inference demo's test_vectors.h: float inputs, or (--int8-io) the same inputs quantized as the
    model's input QUANTIZE does. A multi-I/O model: ``x`` one array per input, one C array each."""
    from ...deploy import quantize_inputs

    if is_multi_io(dep):
        arrays = []
        for k, xk in enumerate(x):
            if dep.int8_io:
                rows, ctype = [[str(int(v)) for v in r.reshape(-1)] for r in quantize_inputs(dep, xk, k)], "int8_t"
            else:
                rows, ctype = [[_c_float(v) for v in r.reshape(-1)] for r in xk], "float"
            arrays.append({"k": k, "size": int(np.prod(xk.shape[1:])), "xs": rows, "ctype": ctype})
        text = (env or _env()).get_template("test_vectors_multi.h.j2").render(n=len(x[0]), arrays=arrays)
        path.write_text(text)
        return path
    if dep.int8_io:
        rows, ctype = [[str(int(v)) for v in r.reshape(-1)] for r in quantize_inputs(dep, x)], "int8_t"
    else:
        rows, ctype = [[_c_float(v) for v in r.reshape(-1)] for r in x], "float"
    text = (env or _env()).get_template("test_vectors_infer.h.j2").render(n=len(x), size=int(np.prod(x.shape[1:])),
                                                                        xs=rows, ctype=ctype)
    path.write_text(text)
    return path


def target_context(config: Any) -> dict[str, Any]:
    """Template values from the registered targets (``config``: the deployment's CompileConfig, None: built-ins):
    the Cortex-M CPUs of the Makefile and its default (``--board``'s CPU, else the first registered: M4), and
    ``cross``, the board's target (or the one ``validate --on`` runs, ``config.demo_target``) when it belongs to a
    family other than host/cortexm/avr/xtensa (a plugin's: the Makefile gets a generic section for it)."""
    board = config.board if config is not None else None
    t = config.target if config is not None else None
    targets = config.target_list if config is not None else BUILTIN_TARGETS
    demo_target = config.demo_target if config is not None else None
    cortexm = family(targets, "cortexm")
    cpu = t.name if t is not None and t.family == "cortexm" else cortexm[0].name if cortexm else "m4"
    cross = next((c for c in (t, demo_target)  # validate --on a plugin family's emulator
                  if c is not None and c.family not in BUILTIN_FAMILIES and c.cc and c.emulator), None)
    from .cortexm import machines

    return {"cortexm": cortexm, "machines": machines(targets), "cpu": cpu, "cross": cross, "board": board,
            "cross_family": family(targets, cross.family) if cross else ()}


def render_project(dep: Deployment, outdir: Path, vectors: TestVectors | None = None, *, with_main: bool = True,
                   classifier_only: bool = False, runtime_dir: str = "runtime", demo_dir: Path | None = None,
                   arena: int | None = None) -> list[Path]:
    """Write model.c/.h, tinycc_config.h, runtime/ (and the demo, build files) into outdir.

    ``demo_dir``: write the demo (main.c, test_vectors.h, cortexm/ startup and linker script) there, without the
    C target's build files (the tflm target brings its own). ``arena``: the arena bytes to declare in
    tinycc_config.h when the extractor is not tinycc's (TFLite Micro's measured arena)."""
    deep = deep_context(dep) if dep.meta.get("deep") else None  # --deep bias: model.c holds the int8 front
    em = build_emit_model(front_deployment(dep) if deep else dep)
    env = _env()
    name = names.c_identifier(dep.name)
    c = em.consts if arena is None else {**em.consts, "arena": arena}
    quant_call = [k for k in em.calls if k.fn == "tcc_quantize_f32"]
    ctx = {
        "version": __version__, "name": name, "NAME": name.upper(), "dep": dep, "c": c, "arrays": em.arrays,
        "calls": em.calls, "n_calls": len(em.calls), "batch": dep.train.batch_size,
        "kernels": [replace(k, code=names.Escaped(k.code)) for k in em.kernels],  # tinycc's own C
        "params": {**layout.runtime_prototypes(), **{k.fn: layout.prototypes(k.code)[k.fn] for k in em.kernels}},
        "lr": _c_float(dep.train.lr), "lr_text": np.format_float_positional(np.float32(dep.train.lr), trim="-"),
        "int8_storage": dep.buffer.storage == "int8", "mem": dep.memory, "mem_table": dep.memory.get("report", ""),
        "source": dep.meta.get("source", {}).get("path", dep.name),
        "input_scale": _c_float(c.get("input_scale", 1.0)), "input_zp": c.get("input_zp", 0),
        "has_quantize": bool(quant_call), "input_ptr": quant_call[0].args[-1] if quant_call else "NULL",
        "n_layers": len(dep.classifier), "classifier_only": classifier_only,
        "cmsis": cmsis_nn.enabled(dep.config.kernels) and not classifier_only, "cmsis_dirs": cmsis_nn.SOURCE_DIRS,
        "deep": deep,
    }
    ctx.update(target_context(dep.config))
    ctx.update(feature_context(dep))
    infer = "_infer" if dep.inference_only else ""  # --inference-only: the whole int8 model, no learning
    if dep.inference_only:
        ctx.update(inference_context(dep, em))
        infer = "_multi" if ctx["multi"] else infer  # several inputs/outputs: one pointer each
    config_tpl = "tinycc_config_infer.h.j2" if dep.inference_only else "tinycc_config.h.j2"
    model = "_deep" if deep else infer  # --deep bias: its own model.c/.h; the head's demo, build files, README
    files = {outdir / k: v for k, v in {"model.c": f"model{model}.c.j2", "model.h": f"model{model}.h.j2",
                                         "tinycc_config.h": config_tpl}.items()}
    demo = demo_dir if demo_dir is not None else outdir if with_main else None
    if demo is not None:
        files.update({demo / k: (f"main{infer}.c.j2" if k == "main.c" else v) for k, v in DEMO_FILES.items()})
    if with_main and demo_dir is None:
        files.update({outdir / k: (f"README{infer}.md.j2" if k == "README.md" else v) for k, v in BUILD_FILES.items()})
    written = []
    for path, tpl in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = env.get_template(tpl).render(**ctx)
        path.write_text(layout.reflow_comments(text) if path.name == "model.h" else text)
        written.append(path)
    if with_main and demo_dir is None and ctx["cross"] is not None:  # the board's start-up code, linker script
        for rel, text in sorted(ctx["cross"].files.items()):
            path = outdir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    if demo is not None and dep.inference_only:
        written.append(write_inference_vectors(demo / "test_vectors.h", dep, test_inputs(dep, vectors), env))
    elif demo is not None:
        x, y = test_vectors(dep, vectors)
        written.append(write_test_vectors(demo / "test_vectors.h", dep, x, y, vectors.learn if vectors else None,
                                          env))
    rt = outdir / runtime_dir
    rt.mkdir(exist_ok=True)
    for f in RUNTIME_FILES + (CMSIS_FILES if ctx["cmsis"] else ()) + (DEEP_FILES if deep else ()):
        shutil.copyfile(HERE / "runtime" / f, rt / f)
        written.append(rt / f)
    return written


class CBackend(Backend):
    name = "c"
    description = "plain C99: static arena, const int8 weights, fixed kernel schedule, on-device training"
    platforms = target_platforms(BUILTIN_TARGETS, "c")  # the built-in ones; validate asks the registry
    multi_io = True

    @classmethod
    def supported_ops(cls) -> list[tuple[str, str, list[str]]]:
        return [("extractor ops", "int8 (the trainable classifier is float32)", sorted(k.value for k in C_KINDS)),
                ("extractor ops", "int16 activations (TFLite's 16x8: int8 weights, int64 bias; portable kernels)",
                 sorted(k.value for k in INT16_C_KINDS))]

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        if not (project / "main.c").is_file() or not (project / "Makefile").is_file():
            raise TinyccError(f"{project}: not a project of target c (no main.c/Makefile)")
        if deployment.inference_only:
            write_inference_vectors(project / "test_vectors.h", deployment, np.asarray(x, np.float32))
            return
        write_test_vectors(project / "test_vectors.h", deployment, x, embedded_labels(deployment, y))

    def run_demo(self, project: Path, platform: str, target: Any = None) -> DemoRun:
        from .run import run_demo

        return run_demo(project, platform, target)

    def check(self, deployment: Deployment) -> None:
        if "deep_front" not in deployment.meta:  # sized without deep_figures (not by this backend)
            refuse_deep(deployment, "c", "the deployment was not sized by the c backend")
        if deployment.meta.get("deep"):
            learner = deep_learner(deployment)
            refuse_c_step(deployment, learner)
            refuse_harvard(deployment, learner, "c")
        check_static_size(deployment)
        g = deployment.extractor
        for op in g.ops:
            why = interpreter_only(g, op) or c_kernel_problem(g, op)  # run_int8 runs them, C does not
            if why is not None:
                raise UnsupportedLayerError(f"layer {op.origin!r}: {why} has no C kernel (int8 reference "
                                            "interpreter only)")
            if is_int16_op(g, op):
                if op.kind not in INT16_C_KINDS:
                    raise UnsupportedLayerError(f"layer {op.origin!r} ({op.kind.value}) has no int16 C kernel; "
                                                "`tinycc ops` lists them")
                if op.kind in FIXED_OUTPUT16:  # TFLite's parameter rules of the table kernels
                    try:
                        lut16_params(g, op)
                    except IRError as e:
                        raise UnsupportedLayerError(f"layer {op.origin!r}: {e}") from None
                if deployment.int8_io and op.inputs[0] in g.inputs:
                    raise UnsupportedLayerError("--int8-io: the model's input is int16 (its first layer is int16); "
                                                "use float I/O")
                continue
            if op.kind not in C_KINDS:
                raise UnsupportedLayerError(f"layer {op.origin!r} ({op.kind.value}) has no C kernel; "
                                            "`tinycc ops` lists them")

    def memory_figures(self, candidate: Candidate) -> MemoryFigures:
        return c_figures(candidate)

    def adjust_report(self, report: Any, candidate: Candidate, figures: MemoryFigures) -> None:
        portable_adjust(report, candidate)
        harvard_adjust(report, candidate)

    def deep_figures(self, candidate: Candidate) -> MemoryFigures:
        return deep_figures(candidate, c_figures(candidate))

    def overlaps(self, graph: Any, config: Any) -> dict[str, int]:
        from .kernels.mve import helium
        from .overlap import c_overlaps

        return c_overlaps(graph, config.kernels, helium(config))

    def emit(self, deployment: Deployment, outdir: Path, vectors: TestVectors | None = None) -> list[Path]:
        return render_project(deployment, outdir, vectors)

    def stack_bytes(self, deployment: Deployment) -> tuple[int, bool, str] | None:
        from .stack import stack_item

        it = stack_item(deployment)
        return it.bytes, it.measured, it.detail


def c_figures(candidate: Candidate, state: int = 0, state_exact: bool = True) -> MemoryFigures:
    """The C runtime's memory: tinycc's planned arena (at least 16 bytes), CMSIS-NN scratch, kernel tables; the
    runtime state includes each LSTM kernel's static hidden, cell and gate arrays."""
    from .kernels import dsp_target, lstm, svdf, table_bytes
    from .kernels.mve import helium

    g, kernels, p = candidate.extractor, candidate.config.kernels, candidate.plan
    state += sum(lstm.state_bytes(g, op) for op in g.ops if lstm.matches(g, op))  # LSTM states, static RAM
    state += sum(svdf.state_bytes(g, op) for op in g.ops if svdf.matches(g, op))  # SVDF states, static RAM
    kinds = sorted({g.tensors[t].dtype.value for t in g.activations()} & {"int8", "int16"}) or ["int8"]
    detail = f"{'/'.join(kinds)} activations, planned (lower bound {p.lower_bound:,} B"
    detail += f", {p.overlap_bound:,} B with {len(p.overlaps)} overlapping convolutions)" if p.overlaps else ")"
    return MemoryFigures(arena=max(p.arena, 16), state=state, scratch=cmsis_nn.scratch_bytes(g, kernels),
                         tables=table_bytes(g, kernels, dsp_target(candidate.config.target),
                                            helium(candidate.config), candidate.config.memory.widen),
                         descriptors=runtime_descriptors(candidate),
                         state_exact=state_exact, arena_detail=detail)


REPORT_ITEMS = {"weights": ("extractor weights", "weights"), "biases": ("extractor biases", "biases"),
                "requantization tables": ("requantization tables",)}


def portable_adjust(report: Any, candidate: Candidate) -> None:
    """On a core where the assembly loops are built (`dsp_target`), take out of the report's flash items the
    int8 weights, biases and requantization tables that only the portable kernels read: the generated code defines
    them only where the loops are not built (their widened copies, in the kernel tables item, replace them), so
    the flash figure is exact for the board's core."""
    from .kernels import dsp_target, portable_bytes
    from .kernels.mve import helium

    config = candidate.config
    if not dsp_target(config.target):
        return
    left = portable_bytes(candidate.extractor, config.kernels, helium(config), config.memory.widen)
    for item in report.items:
        for kind, n in left.items():
            if n and item.section == "flash" and item.name in REPORT_ITEMS[kind]:
                item.bytes -= n
                item.detail += f" (without {n:,} B that only the portable kernels read: this core reads their widened copies)"


def runtime_descriptors(candidate: Candidate) -> Any:
    """The report item of the C runtime's descriptor structs (tcc_layers, tcc_clf, tcc_buf) the generated code
    declares, sized for the board's ABI (``backends.runtime_layout``); None for --inference-only (no classifier)."""
    from ..runtime_layout import descriptors

    if candidate.classifier is None:
        return None
    target = candidate.config.target
    return descriptors(len(candidate.classifier.layers), target.abi if target is not None else None)


@hookimpl
def tinycc_register_backends(registry: Any) -> None:
    registry.add_backend(CBackend)
