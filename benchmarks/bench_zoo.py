"""The zoo: published-style models (images, audio, sensors, decoders; benchmarks/zoo_models.py, random weights)
and the MLPerf Tiny files, each compiled for c, tflm and arduino: which compile (else the one-line error), RAM and
flash from the compile report, instructions per inference on the Cortex-M4 (QEMU) and bit-exactness.

``python -m benchmarks zoo [--models DIR] [--cache DIR] [--only NAME ...] [-n 3]``

Per model: Keras .h5 and the TFLite converter's int8 .tflite (representative dataset: 32 random inputs), made in
a child process (the converter crashes on some models) and cached in ``--cache``. The .tflite is compiled for each
target (learning when the model ends in a softmax classifier, else ``--inference-only``); the .h5 for c. For c,
the inference-only project is built and run on the host and on the M4 in QEMU as ``tinycc validate`` does
(``compare_inference``: outputs against run_int8, bit for bit); run_int8 itself is checked against TFLite's
BUILTIN_REF kernels on the same int8 inputs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .common import Result

TARGETS = ("c", "tflm", "arduino")
MLPERF = {"pretrainedResnet_quant.tflite": ("images", (0.0, 255.0), True),
          "vww_96_int8.tflite": ("images", (0.0, 1.0), True),
          "kws_ref_model.tflite": ("audio", (-1.0, 1.0), True),
          "ad01_int8.tflite": ("sensors", (-1.0, 1.0), False)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    default = Path(os.environ.get("TINYCC_MODELS", Path(__file__).resolve().parents[2] / "shared" / "models"))
    p.add_argument("--models", default=str(default / "mlperf-tiny"),
                   help="folder of the MLPerf Tiny files (skipped with a note when absent)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "tinycc" / "zoo"),
                   help="where the exported .h5/.tflite files are kept between runs")
    p.add_argument("--only", nargs="*", help="zoo or MLPerf model names (default: all)")
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


def builtin_ref_equal(model: Path, graph: Any, x: np.ndarray) -> bool | str | None:
    """run_int8 (TFLite flavour) of the imported int8 file equals TFLite's BUILTIN_REF kernels on x quantized
    with the file's input parameters (None: not an int8 file; a string: BUILTIN_REF failed on the file). The
    interpreter runs in a child process: its reference kernels abort the process on some converter files."""
    from tinycc.ir.interpreter_int8 import run_int8

    with tempfile.TemporaryDirectory(prefix="tinycc-zoo-ref-") as d:
        xin, got = Path(d) / "x.npy", Path(d) / "ref.npz"
        np.save(xin, x)
        r = subprocess.run([sys.executable, "-c", "import sys; from benchmarks.bench_zoo import reference_outputs; "
                            "reference_outputs(*sys.argv[1:])", str(model), str(xin), str(got)],
                           capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if r.returncode != 0 or not got.exists():
            return f"BUILTIN_REF failed ({'signal ' + str(-r.returncode) if r.returncode < 0 else r.returncode})"
        with np.load(got) as z:
            if "xq" not in z.files:
                return None
            xq, ref = z["xq"], z["ref"]
    ours = run_int8(graph, xq.reshape((len(x), *graph.tensors[graph.inputs[0]].shape[1:])),
                    flavor="tflite")[graph.outputs[0]]
    return bool(np.array_equal(ours.reshape(len(x), -1), ref.reshape(len(x), -1)))


def reference_outputs(model: str, x_path: str, out_path: str) -> None:
    """(child process) BUILTIN_REF's integer outputs for the inputs in ``x_path`` quantized with the file's input
    parameters, saved with them as ``xq``/``ref`` in ``out_path`` (nothing for a file without int8/int16 input)."""
    from ai_edge_litert import interpreter as litert

    it = litert.Interpreter(model_path=model, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    if inp["dtype"] not in (np.int8, np.int16):
        np.savez(out_path)
        return
    x = np.load(x_path)
    s, zp = inp["quantization"]
    info = np.iinfo(inp["dtype"])
    xq = np.clip(np.round(x / s) + zp, info.min, info.max).astype(inp["dtype"])
    ref = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], xq[i:i + 1].reshape(inp["shape"]))
        it.invoke()
        ref.append(it.get_tensor(out["index"]).reshape(-1).copy())
    np.savez(out_path, xq=xq, ref=np.stack(ref))


def model_row(session: Any, name: str, domain: str, tflite: Path | None, h5: Path | None, classifier: bool,
              input_range: tuple[float, float], n: int = 3, note: str = "") -> dict[str, Any]:
    """One model through every target: compile status/RAM/flash per target (the .tflite; the .h5 for c), the c
    project on the host and the M4, BUILTIN_REF agreement; ``error``: why nothing was compiled."""
    from tinycc.api import load_cleaned
    from tinycc.errors import TinyccError
    from tinycc.ir.stats import totals

    row: dict[str, Any] = {"model": name, "domain": domain, "note": note, "targets": {},
                           "tflite": tflite.name if tflite else None}
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
            calib = _calib(graph, *input_range, 32, 1)
            x = _calib(graph, *input_range, n, 2)
            for target in TARGETS:
                row["targets"][target] = compile_one(session, source, target, classifier, calib, tmp)
            if row["targets"]["c"]["ok"]:
                row["c_run"] = run_c(session, source, calib, x, tmp)
                if source.suffix == ".tflite":
                    try:
                        row["builtin_ref"] = builtin_ref_equal(source, graph, x)
                    except Exception as e:  # noqa: BLE001
                        row["builtin_ref"] = f"error: {one_line(e)}"
        if h5 is not None:
            calib_h5 = np.random.default_rng(1).uniform(*input_range, (32, *_h5_shape(graph, h5))).astype(np.float32)
            row["keras_c"] = compile_one(session, h5, "c", classifier, calib_h5, tmp)
    row["seconds"] = round(time.time() - t0, 1)
    return row


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
        return "BUG" if t["error"].startswith("BUG") else "refused"
    mode = "L" if t["mode"] == "learning" else ("I*" if t.get("learning_error") else "I")
    return f"{mode} {_k(t['ram'])} / {_k(t['flash'])}"


def _exact(r: dict[str, Any]) -> str:
    c = r.get("c_run") or {}
    if not c:
        return "-"
    if "error" in c:
        return "error"
    host, m4 = c.get("host", {}).get("bit_exact"), c.get("qemu-m4", {}).get("bit_exact")
    ref = r.get("builtin_ref")
    return (f"host {'yes' if host else 'NO'}, M4 {'yes' if m4 else 'NO'}"
            + ("" if ref is None else f", ref {'yes' if ref is True else ('NO' if ref is False else 'n/a')}"))


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | domain | file | params | MACs | c | tflm | arduino | Keras .h5 -> c | M4 instructions "
            "| bit-exact |\n|---|---|---|--:|--:|---|---|---|---|--:|---|")
    lines = [head]
    for r in rows:
        m4 = (r.get("c_run") or {}).get("m4_instructions")
        t = r["targets"]
        file = (r['tflite'] or '-') + (" (refused: columns from the .h5)" if r.get("source") else "")
        lines.append(f"| {r['model']} | {r['domain']} | {file} | {_n(r.get('params'))} | "
                     f"{_n(r.get('macs'))} | {_cell(t.get('c'))} | {_cell(t.get('tflm'))} | "
                     f"{_cell(t.get('arduino'))} | {_cell(r.get('keras_c'))} | {f'{m4:,}' if m4 else '-'} | "
                     f"{_exact(r)} |")
    return "\n".join(lines)


def errors(rows: list[dict[str, Any]]) -> str:
    """Each distinct one-line error per model (the targets that gave it)."""
    out = []
    for r in rows:
        seen: dict[str, list[str]] = {}
        if r.get("note"):
            seen.setdefault(r["note"], []).append("converter")
        if r.get("error"):
            seen.setdefault(r["error"], []).append("import")
        for tgt, t in [*r["targets"].items(), ("Keras .h5 -> c", r.get("keras_c"))]:
            if t and not t["ok"]:
                seen.setdefault(t["error"], []).append(tgt)
            if t and t.get("learning_error"):
                seen.setdefault(t["learning_error"], []).append(f"{tgt} learning")
        if isinstance(r.get("builtin_ref"), str):
            seen.setdefault(r["builtin_ref"], []).append("BUILTIN_REF check")
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


def run(args: argparse.Namespace) -> Result:
    from tinycc.session import Session

    from .zoo_models import ZOO

    session = Session(autoload=False)
    cache, models = Path(args.cache), Path(args.models)
    wanted = set(args.only or [])
    rows = []
    for z in ZOO:
        if wanted and z.name not in wanted:
            continue
        print(f"zoo: {z.name}: exporting ...", flush=True)
        h5, tfl, note = export(z.name, cache)
        row = model_row(session, z.name, z.domain, tfl, h5, z.classifier, z.input_range, args.n, note)
        rows.append(row)
        print(f"zoo: {z.name}: {_exact(row)}, {row['seconds']} s", flush=True)
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
    res = Result("zoo")
    res.data = {"rows": rows, "n": args.n}
    res.add("Published-style models built by `benchmarks/zoo_models.py` (Keras functional, fixed seeds, **random "
            "weights**: what compiles and what it costs, not accuracy) and the MLPerf Tiny files. Each file: the "
            "TFLite converter's int8 .tflite (batch 1, 32 random calibration inputs); where the converter fails "
            "on it, the float .tflite. Cells: `L`/`I` = compiled for on-device learning / inference-only (`I*`: "
            "learning refused, see below), RAM / flash from the compile report; `refused` = a one-line error, listed below. M4 instructions: the "
            "inference-only c project, `-Os`, under QEMU mps2-an386 `-icount` (one `tinycc_invoke`). bit-exact: "
            f"the c program's outputs on {args.n} random inputs equal run_int8 on the host (`-O2`) and on the M4 "
            "(tinycc validate's comparison), and `ref`: run_int8 (TFLite flavour) equals TFLite's BUILTIN_REF "
            "kernels on the int8 file. " + skipped + "\n\n" + table(rows))
    res.add("Errors (exactly as `tinycc compile` prints them):\n\n" + errors(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "zoo.png")
    res.plots.append("zoo.png")
    return res
