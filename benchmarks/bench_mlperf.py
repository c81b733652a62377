"""MLPerf Tiny models in tinycc: what each compiles to (learning, inference-only), c vs TFLite Micro memory, and
ResNet-8's CIFAR-10 accuracy: float Keras, tinycc int8 (inference-only), the published int8 .tflite.

``python -m benchmarks mlperf --data ../shared/data [--models DIR] [--test 1000] [--calib 500]``
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from .common import Result, data_file

MODELS = ["pretrainedResnet.h5", "pretrainedResnet_quant.tflite", "kws_ref_model_float32.tflite",
          "kws_ref_model.tflite", "vww_96.h5", "vww_96_int8.tflite", "ad01.h5", "ad01_int8.tflite",
          "str_ww_ref_model.h5"]
# calibration range for models without data here (uniform values in the range the model expects)
RANGES = {"pretrainedResnet": (0, 255), "vww_96": (0, 1), "ad01": (-1, 1), "str_ww_ref_model": (-1, 1),
          "kws_ref_model": (-1, 1)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    default = Path(os.environ.get("TINYCC_MODELS", Path(__file__).resolve().parents[2] / "shared" / "models"))
    p.add_argument("--models", default=str(default / "mlperf-tiny"), help="folder of the MLPerf Tiny model files")
    p.add_argument("--test", type=int, default=1000, help="CIFAR-10 test images for the accuracy check")
    p.add_argument("--calib", type=int, default=500, help="CIFAR-10 training images for calibration")
    p.add_argument("--seed", type=int, default=0)


def cifar(data: str | None, n_test: int, n_calib: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first n_test test images as float 0..255, their labels, n_calib random training images as float 0..255)."""
    with np.load(data_file(data, "cifar10.npz")) as z:
        x, y = z["x_test"][:n_test].astype(np.float32), z["y_test"][:n_test].astype(np.int64)
        idx = np.random.default_rng(seed).choice(len(z["x_train"]), n_calib, replace=False)
        calib = z["x_train"][np.sort(idx)].astype(np.float32)
    return x, y, calib


def _graph(session: Any, path: Path) -> Any:
    from tinycc.passes import PassContext, run_pipeline

    g = session.registry.frontend_for(str(path)).load(str(path))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


def keras_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the float Keras model (Keras 2 file repaired by tinycc's loader)."""
    from tinycc.plugins.frontends.keras import _load_keras

    model = _load_keras(str(path))
    return float((np.argmax(model.predict(x, batch_size=100, verbose=0), axis=1) == y).mean())


def tinycc_int8(session: Any, path: Path, calib: np.ndarray) -> Any:
    """The inference-only deployment tinycc compiles (float I/O), calibrated on ``calib``."""
    from tinycc.backends.c import CBackend
    from tinycc.config import make_config
    from tinycc.deploy import build_inference

    return build_inference(_graph(session, path), make_config(session, inference_only=True), session, CBackend(),
                           calib=calib)


def int8_accuracy(dep: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of run_int8 on the full int8 graph (the generated C computes the same bits)."""
    from tinycc.ir.interpreter_int8 import run_int8
    from tinycc.deploy import full_graph

    g = full_graph(dep)
    out = np.concatenate([run_int8(g, x[i:i + 100])[g.outputs[0]] for i in range(0, len(x), 100)])
    return float((np.argmax(out.reshape(len(x), -1), axis=1) == y).mean())


def tflite_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a full-integer .tflite in TFLite's BUILTIN_REF kernels (input quantized with its parameters)."""
    from ai_edge_litert import interpreter as litert

    from tinycc.ir.quant import quantize

    it = litert.Interpreter(model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, zp = inp["quantization"]
    hits = 0
    for i in range(len(x)):
        it.set_tensor(inp["index"], quantize(x[i:i + 1], s, zp).astype(inp["dtype"]))
        it.invoke()
        hits += int(np.argmax(it.get_tensor(out["index"]).reshape(-1)) == y[i])
    return hits / len(x)


def learning(session: Any, graph: Any) -> str:
    """What on-device learning makes of the model: the cut and the head, or why not."""
    from tinycc.backends.c import CBackend
    from tinycc.errors import TinyccError
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment

    shape = tuple(graph.tensors[graph.inputs[0]].shape[1:])
    calib = np.random.default_rng(0).uniform(0, 1, (8,) + shape).astype(np.float32)
    try:
        dep = build_deployment(graph, make_config(session, buffer=8), session, CBackend(), calib=calib)
    except TinyccError as e:
        return f"no: {e}"
    return f"yes ({len(dep.classifier)} Dense, {dep.loss}, {dep.feature_count} features)"


def model_row(session: Any, path: Path, calib: np.ndarray | None) -> dict[str, Any]:
    """One table row: memory of the inference-only c and tflm deployments, and learning."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import TflmBackend, deployment_tflite
    from tinycc.backends.tflm.measure import measure_arena
    from tinycc.config import make_config
    from tinycc.deploy import build_inference

    g = _graph(session, path)
    if calib is None:
        lo, hi = next(v for k, v in RANGES.items() if path.name.startswith(k))
        shape = tuple(g.tensors[g.inputs[0]].shape[1:])
        calib = np.random.default_rng(0).uniform(lo, hi, (64,) + shape).astype(np.float32)
    dep = build_inference(g, make_config(session, inference_only=True, int8_io=True), session, CBackend(),
                          calib=calib)
    tflite = deployment_tflite(dep)
    items = {i["name"]: i["bytes"] for i in dep.memory["items"]}
    published = path.suffix == ".tflite" and g.meta.get("quantized")
    return {"model": path.name, "params": int(sum(t.size for t in g.tensors.values() if t.is_const)),
            "learning": learning(session, g), "c_ram": dep.memory["ram"], "c_flash": dep.memory["flash"],
            "c_code_estimate": items["code"], "tflm_arena": measure_arena(tflite).arena,
            "tflite_bytes": len(tflite),
            "published_tflite_bytes": path.stat().st_size if published else None,
            "published_tflm_arena": measure_arena(path.read_bytes()).arena if published else None}


def run(args: argparse.Namespace) -> Result:
    from tinycc.session import Session

    session = Session(autoload=False)
    models = Path(args.models)
    res = Result("mlperf")
    x, y, calib = cifar(args.data, args.test, args.calib, args.seed)
    acc = {"float Keras (pretrainedResnet.h5)": keras_accuracy(models / "pretrainedResnet.h5", x, y)}
    dep = tinycc_int8(session, models / "pretrainedResnet.h5", calib)
    acc["tinycc int8, inference-only (run_int8 = the generated C)"] = int8_accuracy(dep, x, y)
    acc["published int8 (pretrainedResnet_quant.tflite, BUILTIN_REF)"] = tflite_accuracy(
        models / "pretrainedResnet_quant.tflite", x, y)
    rows = [model_row(session, models / m, calib if m.startswith("pretrainedResnet") else None)
            for m in MODELS if (models / m).exists()]
    res.data = {"accuracy": acc, "test_images": len(x), "calib_images": len(calib), "models": rows}
    res.add(f"ResNet-8 on the first {len(x)} CIFAR-10 test images (raw pixels 0..255 as float); tinycc calibrated on "
            f"{len(calib)} random training images (seed {args.seed}), min/max observer:\n\n"
            "| model | accuracy |\n|---|--:|\n" + "\n".join(f"| {k} | {100 * v:.1f}% |" for k, v in acc.items()))
    lines = ["| model | params (BN folded) | on-device learning (`compile`) | inference-only c: RAM / flash | "
             "TFLite Micro, tinycc's .tflite: arena / size | TFLite Micro, the published int8 file: arena / size |",
             "|---|--:|---|--:|--:|--:|"]
    for r in rows:
        pub = (f"{r['published_tflm_arena']:,} / {r['published_tflite_bytes']:,}" if r["published_tflite_bytes"]
               else "-")
        lines.append(f"| {r['model']} | {r['params']:,} | {r['learning']} | {r['c_ram']:,} / {r['c_flash']:,} | "
                     f"{r['tflm_arena']:,} / {r['tflite_bytes']:,} | {pub} |")
    res.add("Every model: `tinycc inspect` reads it; `tinycc compile --inference-only --int8-io` compiles it for c "
            "and tflm (tests/test_inference.py: the C program's int8 outputs equal TFLite Micro's). c RAM is the "
            "exact arena (int8 input and output inside it), c flash = int8 weights + int32 biases + requantization "
            "tables "
            "(exact) + a code estimate; TFLite Micro's arena is measured with the tflite-micro interpreter (+ margin: "
            "16 B + 5%), its flash is the .tflite plus the TFLite Micro library (not counted). "
            "Models without data here are calibrated on uniform random inputs in their input range. tinycc quantizes "
            "Dense weights per output channel (the converter's files: per tensor); TFLite Micro keeps per-channel "
            "multipliers and shifts in its arena, which is why tinycc's all-Dense ad01 needs a larger TFLite Micro "
            "arena than the converter's file (the c arena holds activations only).\n\n"
            + "\n".join(lines))
    return res
