"""The zoo: published-style models (images, audio, sensors, decoders; benchmarks/zoo_models.py, random weights)
and the MLPerf Tiny files, each compiled for c, tflm and arduino: which compile (else the one-line error), RAM and
flash from the compile report, instructions per inference on the Cortex-M4 (QEMU) and bit-exactness.

``python -m benchmarks zoo [--models DIR] [--cache DIR] [--only NAME ...] [--extra FILE[=ORIGIN] ...] [-n 3]``

Besides the zoo's own models: published files nobody here wrote (``PUBLISHED``: TensorFlow Lite Micro's example
models committed in tests/data, and the tf_keras converter's fused int8 LSTM file) and any ``--extra`` .tflite
files (bigger published files kept outside the repository; ORIGIN: where the file comes from, for the table).

Per model: Keras .h5 and the TFLite converter's int8 .tflite (representative dataset: 32 random inputs), made in
a child process (the converter crashes on some models) and cached in ``--cache``. The .tflite is compiled for each
target (learning when the model ends in a softmax classifier, else ``--inference-only``); the .h5 for c. For c,
the inference-only project is built and run on the host and on the M4 in QEMU as ``tinycc validate`` does
(``compare_inference``: outputs against run_int8, bit for bit); run_int8 itself is checked against TFLite's
BUILTIN_REF kernels and (flavour tflm) against TensorFlow Lite Micro on the same integer inputs. Where a runtime
cannot load or prepare a file the cell says so and the other runtime still checks it.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .common import Result

TARGETS = ("c", "tflm", "arduino")
MLPERF = {"pretrainedResnet_quant.tflite": ("images", (0.0, 255.0), True),
          "vww_96_int8.tflite": ("images", (0.0, 1.0), True),
          "kws_ref_model.tflite": ("audio", (-1.0, 1.0), True),
          "ad01_int8.tflite": ("sensors", (-1.0, 1.0), False)}
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TFLM_REPO = "https://github.com/tensorflow/tflite-micro"


@dataclass(frozen=True)
class Published:
    """A published .tflite file: row name, domain, path, whether it ends in a classifier, where it comes from."""

    name: str
    domain: str
    path: Path
    classifier: bool
    origin: str


PUBLISHED: tuple[Published, ...] = (
    Published("hello_world_int8", "sensors", DATA / "tflm-published" / "hello_world_int8.tflite", False,
              f"{TFLM_REPO} tensorflow/lite/micro/examples/hello_world/models/ (int8 sine regression)"),
    Published("micro_speech_quantized", "audio", DATA / "tflm-published" / "micro_speech_quantized.tflite", True,
              f"{TFLM_REPO} tensorflow/lite/micro/examples/micro_speech/models/ (int8 keyword model)"),
    Published("seanet_conv0", "audio", DATA / "tflm-published" / "seanet_conv0.tflite", False,
              f"{TFLM_REPO} tensorflow/lite/micro/integration_tests/seanet/conv/conv0.tflite (16x8 SEANet layer)"),
    Published("trained_lstm_int8", "images", DATA / "tflm-lstm" / "trained_lstm_int8.tflite", True,
              f"{TFLM_REPO} tensorflow/lite/micro/examples/mnist_lstm/ (fused int8 LSTM, MNIST rows)"),
    Published("micro_speech_lstm", "audio", DATA / "tflm-lstm" / "micro_speech_lstm.tflite", True,
              f"{TFLM_REPO} third_party/xtensa/examples/micro_speech_lstm/ (fused int8 LSTM)"),
    Published("kws_lstm_fused", "audio", DATA / "keras-lstm" / "kws_lstm.tflite", True,
              "tests/data/keras-lstm/kws_lstm.tflite: the converter's fused int8 UNIDIRECTIONAL_SEQUENCE_LSTM "
              "from tf_keras (Keras 2), committed"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    default = Path(os.environ.get("TINYCC_MODELS", Path(__file__).resolve().parents[2] / "shared" / "models"))
    p.add_argument("--models", default=str(default / "mlperf-tiny"),
                   help="folder of the MLPerf Tiny files (skipped with a note when absent)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "tinycc" / "zoo"),
                   help="where the exported .h5/.tflite files are kept between runs")
    p.add_argument("--only", nargs="*", help="zoo or MLPerf model names (default: all)")
    p.add_argument("--extra", nargs="*", default=[], metavar="FILE[=ORIGIN]",
                   help="more .tflite files (row name: the file name; ORIGIN: where it comes from, for the table)")
    p.add_argument("-n", type=int, default=3, help="inputs run on the host and the M4 (default 3)")


def one_line(e: BaseException) -> str:
    """The first line of an error, as the CLI prints it."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def export(name: str, cache: Path) -> tuple[Path | None, Path | None, str]:
    """(the .h5, the .tflite (int8, else float when the int8 conversion fails), a note on the conversion), made by
    ``python -m benchmarks.zoo_models`` in a child process and cached."""
    from .zoo_models import BY_NAME

    cache.mkdir(parents=True, exist_ok=True)
    drop_stale(name, cache)
    note = ""
    for kind in (BY_NAME[name].activations, "float"):
        path, failed = cache / f"{name}_{kind}.tflite", cache / f"{name}_{kind}.failed"
        if failed.exists() and not path.exists():  # cached failure
            note += f"{kind} conversion failed ({failed.read_text()}); "
            continue
        if not path.exists():
            r = subprocess.run([sys.executable, "-m", "benchmarks.zoo_models", name, str(cache)]
                               + (["--float"] if kind == "float" else []), capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[1])
            if r.returncode != 0 and not path.exists():
                err = [ln for ln in r.stderr.splitlines() if "rror" in ln]
                why = (f"signal {-r.returncode}" if r.returncode < 0 else (err[-1][:160] if err else f"rc {r.returncode}"))
                note += f"{kind} conversion failed ({why}); "
                failed.write_text(why)
                continue
        if path.exists():
            h5 = cache / f"{name}.h5"
            return (h5 if h5.exists() else None), path, note.strip("; ")
    h5 = cache / f"{name}.h5"
    return (h5 if h5.exists() else None), None, note.strip("; ")


def cache_key(name: str) -> str:
    """What the cached files of a zoo model were made from: its build function's source and its activations."""
    import hashlib
    import inspect

    from .zoo_models import BY_NAME

    z = BY_NAME[name]
    return hashlib.sha256(f"{inspect.getsource(z.build)}|{z.activations}".encode()).hexdigest()[:16]


def drop_stale(name: str, cache: Path) -> None:
    """Remove the cached files (and cached conversion failures) of ``name`` made from another definition of the
    model, so that a changed zoo model is exported again."""
    key, stamp = cache_key(name), cache / f"{name}.key"
    if stamp.exists() and stamp.read_text() == key:
        return
    kinds = ("int8", "int16", "float")
    for f in [cache / f"{name}.h5", *(cache / f"{name}_{k}.{ext}" for k in kinds for ext in ("tflite", "failed"))]:
        f.unlink(missing_ok=True)
    stamp.write_text(key)


def _calib(graph: Any, lo: float, hi: float, n: int, seed: int) -> np.ndarray:
    shape = tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])
    return np.random.default_rng(seed).uniform(lo, hi, (n, *shape)).astype(np.float32)


def compile_one(session: Any, model: Path, target: str, learning: bool, calib: np.ndarray,
                tmp: Path) -> dict[str, Any]:
    """``tinycc compile`` of ``model`` for ``target``: ok with RAM/flash and mode, or the one-line error. A
    learning compile that is refused is tried again inference-only (``learning_error`` keeps why)."""
    first = _compile(session, model, target, learning, calib, tmp)
    if first["ok"] or not learning:
        return first
    second = _compile(session, model, target, False, calib, tmp)
    return {**second, "learning_error": first["error"]} if second["ok"] else first


def _compile(session: Any, model: Path, target: str, learning: bool, calib: np.ndarray,
             tmp: Path) -> dict[str, Any]:
    from tinycc.api import compile_model, make_config
    from tinycc.errors import TinyccError

    out = tmp / f"{model.stem}-{target}"
    try:
        config = make_config(session, inference_only=not learning, force=True)
        dep = compile_model(str(model), target, str(out), config, session, calib=calib).deployment
    except TinyccError as e:
        return {"ok": False, "error": one_line(e)}
    except Exception as e:  # noqa: BLE001 - a tinycc bug: recorded as such, the benchmark goes on
        return {"ok": False, "error": f"BUG {type(e).__name__}: {one_line(e)}"}
    return {"ok": True, "mode": "learning" if learning else "inference-only", "ram": int(dep.memory["ram"]),
            "flash": int(dep.memory["flash"])}


def run_c(session: Any, model: Path, calib: np.ndarray, x: np.ndarray, tmp: Path) -> dict[str, Any]:
    """validate's path for the inference-only c project: compile, embed x, run on the host and on the M4
    (QEMU), compare each dump with run_int8 (``compare_inference``); M4 instructions per inference."""
    from tinycc.api import compile_model, make_config
    from tinycc.backends.demo import DemoFailed
    from tinycc.errors import TinyccError
    from tinycc.targets import by_platform
    from tinycc.plugins.applications.validate import compare_inference

    backend = session.registry.backend("c")()
    spec = by_platform(session.registry.target_list(), "qemu-m4")
    proj = tmp / f"{model.stem}-validate"
    res: dict[str, Any] = {}
    try:
        config = replace(make_config(session, inference_only=True, force=True), demo_target=spec)
        dep = compile_model(str(model), "c", str(proj), config, session, calib=calib).deployment
        backend.embed_test_vectors(proj, dep, x, None)
        for platform in ("host", "qemu-m4"):
            t0 = time.time()
            run = backend.run_demo(proj, platform, by_platform(session.registry.target_list(), platform))
            c = compare_inference(dep, run.output, x, None, None)
            res[platform] = {"bit_exact": bool(c.passed), "max_diff_steps": c.feature_max_diff,
                             "seconds": round(time.time() - t0, 1)}
            if platform == "qemu-m4":
                res["m4_instructions"] = int(run.per_call.get("invoke", 0))
                res["m4_ram"], res["m4_flash"] = run.ram, run.flash
    except (TinyccError, DemoFailed) as e:
        res["error"] = one_line(e)
    except Exception as e:  # noqa: BLE001
        res["error"] = f"BUG {type(e).__name__}: {one_line(e)}"
    return res


RUNTIMES = {"builtin_ref": ("TFLite", "tflite"), "tflm": ("TFLite Micro", "tflm")}


def quantized_inputs(graph: Any, x: np.ndarray) -> np.ndarray | None:
    """``x`` quantized with the file's input parameters (None: the input is not int8/int16)."""
    t = graph.tensors[graph.inputs[0]]
    dt = np.dtype(t.dtype.numpy)
    if dt not in (np.int8, np.int16) or t.quant is None:
        return None
    s, zp = float(t.quant.scale[0]), int(t.quant.zero_point[0])
    info = np.iinfo(dt)
    return np.clip(np.round(x / s) + zp, info.min, info.max).astype(dt)


def runtime_equal(kind: str, model: Path, graph: Any, xq: np.ndarray) -> bool | str:
    """run_int8 of the imported file (flavour tflite for ``kind`` "builtin_ref", tflm for "tflm") equals the
    runtime's outputs on ``xq`` (one input at a time, state reset between inputs); a string: why the runtime gave
    no outputs ("<runtime> cannot load the file" when it fails before it has prepared the file). The runtime runs
    in a child process: TFLite's reference kernels abort the process on some converter files."""
    from tinycc.ir.interpreter_int8 import run_int8

    runtime, flavor = RUNTIMES[kind]
    with tempfile.TemporaryDirectory(prefix="tinycc-zoo-ref-") as d:
        xin, got = Path(d) / "x.npy", Path(d) / "ref.npy"
        np.save(xin, xq)
        r = subprocess.run([sys.executable, "-c", "import sys; from benchmarks.bench_zoo import runtime_outputs; "
                            "runtime_outputs(*sys.argv[1:])", kind, str(model), str(xin), str(got)],
                           capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if r.returncode != 0 or not got.exists():
            how = f"signal {-r.returncode}" if r.returncode < 0 else f"rc {r.returncode}"
            err = [ln.strip() for ln in r.stderr.splitlines() if "rror" in ln or "find op" in ln]
            why = f"{how}{': ' + err[-1][:160] if err else ''}"
            if not got.with_suffix(".loaded").exists():
                return f"{runtime} cannot load the file ({why})"
            return f"{runtime} fails on the file ({why})"
        ref = np.load(got)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    ours = np.stack([run_int8(graph, xq[i].reshape((1, *shape)), flavor=flavor)[graph.outputs[0]].reshape(-1)
                     for i in range(len(xq))])
    return bool(np.array_equal(ours, ref.reshape(len(xq), -1)))


def runtime_outputs(kind: str, model: str, x_path: str, out_path: str) -> None:
    """(child process) The first output of TFLite's BUILTIN_REF kernels (``kind`` "builtin_ref") or TensorFlow
    Lite Micro ("tflm") for each integer input in ``x_path``, saved in ``out_path``; ``out_path`` with suffix
    .loaded is written once the runtime has prepared the file."""
    xq = np.load(x_path)
    outs = []
    if kind == "builtin_ref":
        from ai_edge_litert import interpreter as litert

        it = litert.Interpreter(model_path=model, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        Path(out_path).with_suffix(".loaded").write_text("")
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        for x in xq:
            it.reset_all_variables()
            it.set_tensor(inp["index"], x.reshape(inp["shape"]))
            it.invoke()
            outs.append(it.get_tensor(out["index"]).reshape(-1).copy())
    else:
        from tflite_micro.python.tflite_micro import runtime

        tm = runtime.Interpreter.from_bytes(Path(model).read_bytes(), arena_size=1 << 23)
        Path(out_path).with_suffix(".loaded").write_text("")
        for x in xq:
            tm.reset()
            tm.set_input(x.reshape(tm.get_input_details(0)["shape"]), 0)
            tm.invoke()
            outs.append(np.asarray(tm.get_output(0)).reshape(-1).copy())
    np.save(out_path, np.stack(outs))


def model_row(session: Any, name: str, domain: str, tflite: Path | None, h5: Path | None, classifier: bool,
              input_range: tuple[float, float] | None, n: int = 3, note: str = "",
              origin: str = "", keras_tflm: bool = False) -> dict[str, Any]:
    """One model through every target: compile status/RAM/flash per target (the .tflite; the .h5 for c), the c
    project on the host and the M4, agreement with BUILTIN_REF and TensorFlow Lite Micro; ``error``: why nothing
    was compiled. ``input_range`` None: the float range of the file's integer input (published files).
    ``keras_tflm``: the .h5 is compiled for tflm too (recurrent Keras layers, which the converter's file unrolls)."""
    from tinycc.api import load_cleaned
    from tinycc.errors import TinyccError
    from tinycc.ir.stats import totals

    row: dict[str, Any] = {"model": name, "domain": domain, "note": note, "targets": {},
                           "tflite": tflite.name if tflite else None, "origin": origin}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tinycc-zoo-") as d:
        tmp = Path(d)
        source = tflite or h5
        graph = None
        try:
            graph = load_cleaned(str(source), session) if source else None
        except TinyccError as e:
            row["error"] = one_line(e)
        except Exception as e:  # noqa: BLE001 - a bug: the row says so
            row["error"] = f"BUG {type(e).__name__}: {one_line(e)}"
        if graph is None and h5 is not None and source != h5:  # the converter's file is refused: the Keras file
            try:
                graph, source = load_cleaned(str(h5), session), h5
                row["source"] = "Keras .h5 (the .tflite is refused)"
            except TinyccError as e:
                row["error_h5"] = one_line(e)
        if graph is not None:
            st = totals(graph)
            row["params"], row["macs"] = st["params"], st["macs"]
            input_range = input_range or file_input_range(graph)
            calib = _calib(graph, *input_range, 32, 1)
            x = _calib(graph, *input_range, n, 2)
            for target in TARGETS:
                row["targets"][target] = compile_one(session, source, target, classifier, calib, tmp)
            if row["targets"]["c"]["ok"]:
                row["c_run"] = run_c(session, source, calib, x, tmp)
                xq = quantized_inputs(graph, x) if source.suffix == ".tflite" else None
                for kind in RUNTIMES if xq is not None else ():
                    try:
                        row[kind] = runtime_equal(kind, source, graph, xq)
                    except Exception as e:  # noqa: BLE001
                        row[kind] = f"error: {one_line(e)}"
        if h5 is not None:
            calib_h5 = np.random.default_rng(1).uniform(*input_range, (32, *_h5_shape(graph, h5))).astype(np.float32)
            row["keras_c"] = compile_one(session, h5, "c", classifier, calib_h5, tmp)
            if keras_tflm:
                row["keras_tflm"] = compile_one(session, h5, "tflm", classifier, calib_h5, tmp)
    row["seconds"] = round(time.time() - t0, 1)
    return row


def file_input_range(graph: Any) -> tuple[float, float]:
    """The float values the file's integer input can hold (its whole integer range, dequantized); (-1, 1) for a
    float input."""
    t = graph.tensors[graph.inputs[0]]
    dt = np.dtype(t.dtype.numpy)
    if dt not in (np.int8, np.int16) or t.quant is None:
        return (-1.0, 1.0)
    s, zp = float(t.quant.scale[0]), int(t.quant.zero_point[0])
    info = np.iinfo(dt)
    return (s * (info.min - zp), s * (info.max - zp))


def _h5_shape(graph: Any, h5: Path) -> tuple[int, ...]:
    if graph is not None:
        return tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])
    import keras

    return tuple(int(d) for d in keras.models.load_model(str(h5), compile=False).inputs[0].shape[1:])


def _k(v: int | None) -> str:
    return "-" if v is None else (f"{v / 1024:.1f}K" if v < 1 << 20 else f"{v / (1 << 20):.2f}M")


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _cell(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    if not t["ok"]:
        if t["error"].startswith("BUG"):
            return "BUG"
        missing = re.search(r"TFLite Micro has no (\w+) kernel", t["error"])
        return f"refused (no {missing.group(1)} in TFLite Micro)" if missing else "refused"
    mode = "L" if t["mode"] == "learning" else ("I*" if t.get("learning_error") else "I")
    return f"{mode} {_k(t['ram'])} / {_k(t['flash'])}"


def _agree(label: str, v: bool | str | None) -> str:
    """One runtime's part of the bit-exact cell: yes / NO, or why the runtime gave no outputs."""
    if v is None:
        return ""
    if isinstance(v, str):
        runtime = v.split(" cannot load")[0].split(" fails")[0]
        return f", {label}: {runtime} {'cannot load' if ' cannot load' in v else 'fails on'} the file"
    return f", {label} {'yes' if v else 'NO'}"


def _exact(r: dict[str, Any]) -> str:
    c = r.get("c_run") or {}
    if not c:
        return "-"
    if "error" in c:
        return "error"
    host, m4 = c.get("host", {}).get("bit_exact"), c.get("qemu-m4", {}).get("bit_exact")
    return (f"host {'yes' if host else 'NO'}, M4 {'yes' if m4 else 'NO'}" + _agree("ref", r.get("builtin_ref"))
            + _agree("TFLM", r.get("tflm")))


def _keras_cell(r: dict[str, Any]) -> str:
    """The Keras file's c compile; with ``; tflm ...`` where the .h5 was compiled for tflm too."""
    return _cell(r.get("keras_c")) + (f"; tflm {_cell(r['keras_tflm'])}" if r.get("keras_tflm") else "")


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | domain | file | params | MACs | c | tflm | arduino | Keras .h5 -> c | M4 instructions "
            "| bit-exact (host, M4, BUILTIN_REF, TFLM) |\n|---|---|---|--:|--:|---|---|---|---|--:|---|")
    lines = [head]
    for r in rows:
        m4 = (r.get("c_run") or {}).get("m4_instructions")
        t = r["targets"]
        file = (r['tflite'] or '-') + (" (refused: columns from the .h5)" if r.get("source") else "")
        file += (" (committed)" if r["origin"].startswith("tests/") else " (published)") if r.get("origin") else ""
        lines.append(f"| {r['model']} | {r['domain']} | {file} | {_n(r.get('params'))} | "
                     f"{_n(r.get('macs'))} | {_cell(t.get('c'))} | {_cell(t.get('tflm'))} | "
                     f"{_cell(t.get('arduino'))} | {_keras_cell(r)} | {f'{m4:,}' if m4 else '-'} | "
                     f"{_exact(r)} |")
    return "\n".join(lines)


# Why a runtime gives no outputs on a file, where that was found out (shown under the table for rows that hit it).
RUNTIME_NOTES = {
    "mobilenet_v1_025_96": "TFLite's BUILTIN_REF and TensorFlow Lite Micro both abort (SIGABRT, no message) in "
    "allocate_tensors on the converter's file of Keras 3's keras.applications MobileNet (head: MEAN -> 1x1 "
    "CONV_2D -> RESHAPE -> SOFTMAX); the same network as MLPerf Tiny's vww_96_int8 file (head AVERAGE_POOL_2D -> "
    "FULLY_CONNECTED), which both load and which is bit-exact here. Not isolated further: a small Keras model "
    "with the same head loads in both.",
    "upsampling_decoder": "the converter writes Keras 3's UpSampling2D/Resizing with TILE version 3, which "
    "TFLite's BUILTIN_REF resolver does not have; TensorFlow Lite Micro's interpreter fails to allocate its "
    "tensors.",
    "person_detect": "TFLite rejects the file's quantization parameters (quantized_dimension 3 on a tensor of "
    "rank 1); TensorFlow Lite Micro loads it and is the check.",
}


def runtime_notes(rows: list[dict[str, Any]]) -> str:
    """The known reasons for the rows whose runtime check gave no outputs."""
    return "\n".join(f"- {r['model']}: {RUNTIME_NOTES[r['model']]}" for r in rows
                     if r["model"] in RUNTIME_NOTES and any(isinstance(r.get(k), str) for k in RUNTIMES))


def origins(rows: list[dict[str, Any]]) -> str:
    """Where each published file comes from."""
    return "\n".join(f"- {r['model']} (`{r['tflite']}`): {r['origin']}" for r in rows if r.get("origin")) or "- none"


def errors(rows: list[dict[str, Any]]) -> str:
    """Each distinct one-line error per model (the targets that gave it)."""
    out = []
    for r in rows:
        seen: dict[str, list[str]] = {}
        if r.get("note"):
            seen.setdefault(r["note"], []).append("converter")
        if r.get("error"):
            seen.setdefault(r["error"], []).append("import")
        for tgt, t in [*r["targets"].items(), ("Keras .h5 -> c", r.get("keras_c")),
                       ("Keras .h5 -> tflm", r.get("keras_tflm"))]:
            if t and not t["ok"]:
                seen.setdefault(t["error"], []).append(tgt)
            if t and t.get("learning_error"):
                seen.setdefault(t["learning_error"], []).append(f"{tgt} learning")
        for kind, what in (("builtin_ref", "BUILTIN_REF check"), ("tflm", "TFLite Micro check")):
            if isinstance(r.get(kind), str):
                seen.setdefault(r[kind], []).append(what)
        if (r.get("c_run") or {}).get("error"):
            seen.setdefault(r["c_run"]["error"], []).append("c host/M4 run")
        out += [f"- {r['model']} ({', '.join(w)}): `{e}`" for e, w in seen.items()]
    return "\n".join(out) or "- none"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """RAM (c) against M4 instructions per inference, one point per model that ran."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"images": "tab:blue", "audio": "tab:orange", "sensors": "tab:green", "decoders": "tab:red"}
    for r in rows:
        m4 = (r.get("c_run") or {}).get("m4_instructions")
        c = r["targets"].get("c") or {}
        if m4 and c.get("ok"):
            mlperf = r["model"].startswith("MLPerf")  # beside its zoo twin: marked x, labelled below
            ax.scatter(m4, c["ram"] / 1024, color=colors.get(r["domain"], "gray"), marker="x" if mlperf else "o")
            ax.annotate(r["model"], (m4, c["ram"] / 1024), fontsize=7, xytext=(3, -9 if mlperf else 3),
                        textcoords="offset points")
    for d, col in colors.items():
        ax.scatter([], [], color=col, label=d)
    ax.set_xscale("log")
    ax.set_xlabel("Cortex-M4 instructions per inference (QEMU, -icount)")
    ax.set_ylabel("c RAM, compile report (KiB)")
    ax.set_title("tinycc zoo: RAM vs instructions (c target)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_extra(arg: str) -> Published:
    """``FILE[=ORIGIN]`` of ``--extra``: a row named after the file; a missing file: one line, exit 2."""
    path, _, origin = arg.partition("=") if "=" in arg and not Path(arg).exists() else (arg, "", "")
    if not Path(path).is_file() or Path(path).suffix != ".tflite":
        print(f"zoo: --extra {path}: not a .tflite file", file=sys.stderr)
        raise SystemExit(2)
    return Published(Path(path).stem, "published", Path(path), True, origin or f"given with --extra: {path}")


def run(args: argparse.Namespace) -> Result:
    from tinycc.session import Session

    from .zoo_models import ZOO

    extras = [parse_extra(e) for e in args.extra or []]
    session = Session(autoload=False)
    cache, models = Path(args.cache), Path(args.models)
    wanted = set(args.only or [])
    rows = []
    for z in ZOO:
        if wanted and z.name not in wanted:
            continue
        print(f"zoo: {z.name}: exporting ...", flush=True)
        h5, tfl, note = export(z.name, cache)
        row = model_row(session, z.name, z.domain, tfl, h5, z.classifier, z.input_range, args.n, note,
                        keras_tflm=z.recurrent)
        rows.append(row)
        print(f"zoo: {z.name}: {_exact(row)}, {row['seconds']} s", flush=True)
    for p in PUBLISHED + tuple(extras):
        if wanted and p.name not in wanted:
            continue
        row = model_row(session, p.name, p.domain, p.path, None, p.classifier, None, args.n, origin=p.origin)
        rows.append(row)
        print(f"zoo: {p.name}: {_exact(row)}, {row['seconds']} s", flush=True)
    skipped = ""
    if models.is_dir():
        for f, (domain, rng, head) in MLPERF.items():
            if (wanted and f not in wanted) or not (models / f).exists():
                continue
            row = model_row(session, f"MLPerf {f.split('.')[0]}", domain, models / f, None, head, rng, args.n)
            rows.append(row)
            print(f"zoo: {f}: {_exact(row)}, {row['seconds']} s", flush=True)
    else:
        skipped = f"MLPerf Tiny files: {models} not found, skipped. "
    rows.sort(key=lambda r: bool(r.get("origin")))  # the published files after the zoo and MLPerf Tiny
    res = Result("zoo")
    res.data = {"rows": rows, "n": args.n}
    res.add("Published-style models built by `benchmarks/zoo_models.py` (Keras functional, fixed seeds, **random "
            "weights**: what compiles and what it costs, not accuracy), the MLPerf Tiny files and published files "
            "(listed below). Each zoo file: the TFLite converter's int8 .tflite (batch 1, 32 random calibration "
            "inputs; the recurrent layers with `unroll=True`, the only form in which the converter takes a Keras 3 "
            "LSTM/GRU/SimpleRNN, so that the tflm cell of a recurrent row is its plain per-step operators; the "
            "Keras .h5 column then shows the Keras layer compiled for tflm too); where the converter fails on it, "
            "the float .tflite. Cells: `L`/`I` = compiled for on-device learning / inference-only (`I*`: "
            "learning refused, see below), RAM / flash from the compile report; `refused` = a one-line error, listed below. M4 instructions: the "
            "inference-only c project, `-Os`, under QEMU mps2-an386 `-icount` (one `tinycc_invoke`). bit-exact: "
            f"the c program's outputs on {args.n} random inputs equal run_int8 on the host (`-O2`) and on the M4 "
            "(tinycc validate's comparison); `ref`: run_int8 (TFLite flavour) equals TFLite's BUILTIN_REF "
            "kernels on the integer file, `TFLM`: run_int8 (TFLite Micro flavour) equals TensorFlow Lite Micro "
            "(its Python interpreter), same integer inputs; `<runtime> cannot load the file`: that runtime refuses "
            "or aborts before it has prepared the file (why: below), the other runtime still checks it. "
            + skipped + "\n\n" + table(rows))
    res.add("Files from elsewhere (`published`: written by nobody here; `committed`: made here with tf_keras, in "
            "tests/data; compiled learning when they end in a classifier, inputs: random values over the file's "
            "whole integer input range):\n\n" + origins(rows))
    notes = runtime_notes(rows)
    if notes:
        res.add("Why a runtime check gave no outputs:\n\n" + notes)
    res.add("Errors (exactly as `tinycc compile` prints them; a runtime check that gave no outputs says why):\n\n"
            + errors(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "zoo.png")
    res.plots.append("zoo.png")
    return res
