"""`tinycc validate`: run a generated program on a platform and compare it with tinycc's references.

MODEL is compiled (or ``--project DIR``, a project generated before, is copied), N samples of DATA become the
demo's test vectors (in a temporary copy: the user's project is never changed), the target's backend builds and
runs the demo with its dump on (``Backend.run_demo``), and the dump is compared with the host references:
the int8 features with ``run_int8`` (bit for bit), the classes before and after on-device learning with the
simulator (int8 Φf + float Φc, ``ir.simulator.Simulator``), accuracy also against the float Keras model.
Exit 0: the program equals the reference; 1: it does not (or did not build/run); 2: bad input.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ...config import CompileConfig
from ...errors import TinyccError
from ...ir.calibration import test_vector_count
from ...options import MAX_SAMPLES, int_range

hookimpl = pluggy.HookimplMarker("tinycc")
DATA_KEYS = ("x", "x_test", "x_train")
TIE = 1e-4  # a top-1 difference where the reference's two probabilities are this close is a tie, not a mismatch
BUILD_OUTPUTS = ("tinycc_demo", "tinycc_demo*.elf", "avr-build")  # left out of the copy (top level only)


def load_data(path: str, input_shape: tuple[int, ...], n_classes: int,
              n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The first ``n`` samples (x reshaped to the model's input, integer labels or None when the file has none)
    of an .npz with x[/y], x_test[/y_test] or x_train[/y_train], and the key used; TinyccError on anything else."""
    from .scenario_data import labelled_pair

    p = Path(path)
    if not p.is_file():
        raise TinyccError(f"{path}: no such file")
    if n < 1:
        raise TinyccError(f"-n must be at least 1, got {n}")
    try:
        with np.load(p, allow_pickle=False) as z:
            key = next((k for k in DATA_KEYS if k in z.files), None)
            if key is None:
                raise TinyccError(f"{path}: no labelled samples (need x/y, x_test/y_test or x_train/y_train; found "
                                  f"{', '.join(z.files) or 'none'})")
            if "y" + key[1:] in z.files:
                x, y = labelled_pair(z, path, key, "y" + key[1:])
            else:  # bit-exactness and timing need no labels; accuracy is then not reported
                x, y = _unlabelled(z, path, key), None
    except TinyccError:
        raise
    except Exception as e:  # not an .npz, damaged archive, pickled objects
        raise TinyccError(f"{path}: cannot read an .npz with x/y, x_test/y_test or x_train/y_train ({e})") from None
    shape = tuple(int(d) for d in x.shape[1:])
    if tuple(d for d in shape if d != 1) != tuple(d for d in input_shape if d != 1):
        raise TinyccError(f"{path}: samples have shape {list(shape)} but the model takes {list(input_shape)}")
    if y is not None and (y.min() < 0 or y.max() >= n_classes):
        raise TinyccError(f"{path}: labels must be integers in 0..{n_classes - 1} (one per sample)")
    m = min(n, len(x))
    return np.asarray(x[:m], np.float32).reshape((m, *input_shape)), None if y is None else y[:m], key


def _unlabelled(z: Any, path: str, key: str) -> np.ndarray:
    """Samples ``z[key]`` without labels, checked as labelled ones are (numeric, [N, ...], finite)."""
    from ...ir.calibration import check_finite

    x = np.asarray(z[key])
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise TinyccError(f"{path}: {key} must be a non-empty numeric array [N, ...], got {x.dtype} {x.shape}")
    check_finite(x, f"{path}: {key}")
    return x


def calibration_samples(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Calibration samples from DATA when no --calib is given: x_calib, x_train, x or x_test, in that order."""
    from ...data import CALIB_KEYS, _npz_array

    x = np.asarray(_npz_array(Path(path), (*CALIB_KEYS, "x_test"))[0], np.float32)
    if x.ndim < 1 or x[:1].size != int(np.prod(shape)):
        raise TinyccError(f"{path}: calibration samples have shape {list(x.shape[1:])}, the model takes {list(shape)}")
    return x.reshape((len(x), *shape))


def top1_agreement(k_dev: np.ndarray, k_ref: np.ndarray, p_ref: np.ndarray) -> tuple[int, int]:
    """(samples whose class differs from the reference beyond a tie, ties): a differing class counts as a tie
    when the reference gives it a probability within TIE of its own choice."""
    diff = np.nonzero(k_dev != k_ref)[0]
    ties = sum(1 for i in diff if 0 <= k_dev[i] < p_ref.shape[1] and p_ref[i, k_ref[i]] - p_ref[i, k_dev[i]] <= TIE)
    return len(diff) - ties, ties


@dataclass
class Comparison:
    """The deployed program against the references on n samples."""

    n: int
    feature_mismatch: int = 0  # samples whose int8 features differ (or are missing)
    feature_max_diff: int = 0
    top1_before: tuple[int, int] = (0, 0)  # (mismatches, ties) vs the simulator before learning
    top1_after: tuple[int, int] = (0, 0)
    acc: dict[str, float | None] = field(default_factory=dict)  # deployed/int8/float, before; *_after
    max_prob_diff: float = 0.0
    missing: list[str] = field(default_factory=list)  # what the dump lacked

    @property
    def passed(self) -> bool:
        return (not self.missing and self.feature_mismatch == 0 and self.top1_before[0] == 0
                and self.top1_after[0] == 0)


def compare(dep: Any, out: Any, x: np.ndarray, y: np.ndarray, float_probs: np.ndarray | None,
            labelled: bool = True) -> Comparison:
    """Compare a parsed dump (``tinycc.backends.demo.DemoOutput``) of a demo that ran the vectors x, y (then
    len(x) learn calls cycling through them) with the simulator of ``dep``. ``labelled`` False: y are the
    reference's own predictions (the data has no labels): no accuracy."""
    from ...ir.simulator import Simulator

    n = len(x)
    c = Comparison(n)
    sim = Simulator(dep)
    feats = sim.features(x)
    k_ref, p_ref = sim.predict_features(feats)
    for i in range(n):
        got = out.features.get(i)
        if got is None or got.shape != feats[i].shape:
            c.feature_mismatch += 1
            continue
        d = int(np.abs(got.astype(np.int32) - feats[i].astype(np.int32)).max(initial=0))
        c.feature_mismatch += d > 0
        c.feature_max_diff = max(c.feature_max_diff, d)
    if len(out.before) < n or len(out.after) < n:
        c.missing.append(f"predictions ({len(out.before)} before, {len(out.after)} after learning of {n})")
        return c
    k_dev = np.array([out.before[i][0] for i in range(n)])
    c.top1_before = top1_agreement(k_dev, k_ref, p_ref)
    probs = [out.before[i][1] for i in range(n)]
    if all(p.shape == p_ref[i].shape for i, p in enumerate(probs)):
        c.max_prob_diff = float(np.abs(np.stack(probs) - p_ref).max())
    for i in range(n):  # an autoencoder's head (mse, target "input") learns to reproduce its own input
        sim.learn_features(feats[i], _learn_target(dep, x[i], y[i]))
    k_ref2, p_ref2 = sim.predict_features(feats)
    k_dev2 = np.array([out.after[i][0] for i in range(n)])
    c.top1_after = top1_agreement(k_dev2, k_ref2, p_ref2)
    if labelled:
        c.acc = {"deployed": float((k_dev == y).mean()), "int8": float((k_ref == y).mean()),
                 "float": None if float_probs is None else float((float_probs.argmax(1) == y).mean()),
                 "deployed_after": float((k_dev2 == y).mean()), "int8_after": float((k_ref2 == y).mean())}
    return c


def _learn_target(dep: Any, x: np.ndarray, y: Any) -> Any:
    """What one learn call of the demo trains towards: the class, or for an autoencoder the float input."""
    if dep.loss == "mse" and dep.target == "input":
        return np.asarray(x, np.float32).reshape(-1)
    return y if dep.loss == "mse" else int(y)


def compare_inference(dep: Any, out: Any, x: np.ndarray, y: np.ndarray | None,
                      float_probs: np.ndarray | None) -> Comparison:
    """An inference-only program's dump against ``run_int8`` of the whole int8 model (every output, bit for bit;
    float outputs are the dequantized int8 values, so they are compared exactly too); accuracy from the
    outputs' arg-max."""
    from ...ir.interpreter_int8 import run_int8
    from ...deploy import full_graph, quantize_inputs

    n = len(x)
    c = Comparison(n)
    g = full_graph(dep)
    ref = run_int8(g, quantize_inputs(dep, x) if dep.int8_io else x)[g.outputs[0]].reshape(n, -1)
    got = [out.outputs.get(i) for i in range(n)]
    for i, v in enumerate(got):
        if v is None or v.shape != ref[i].shape:
            c.feature_mismatch += 1
            continue
        d = np.abs(v.astype(ref.dtype).astype(np.float64) - ref[i].astype(np.float64)).max(initial=0)
        c.feature_mismatch += d > 0
        steps = d if dep.int8_io else d / float(dep.feature_quant.scale[0])  # in int8 steps
        c.feature_max_diff = max(c.feature_max_diff, int(np.ceil(steps)))
    if any(v is None for v in got):
        c.missing.append(f"outputs ({sum(v is not None for v in got)} of {n})")
        return c
    k_dev = np.array([int(np.argmax(v)) for v in got])
    if y is not None:
        c.acc = {"deployed": float((k_dev == y).mean()), "int8": float((ref.argmax(1) == y).mean()),
                 "float": None if float_probs is None else float((float_probs.argmax(1) == y).mean())}
    return c


def keras_probs(model: str, x: np.ndarray) -> np.ndarray | None:
    """The float Keras model's outputs on x (None for a model file Keras does not read, e.g. .tflite)."""
    if not model.endswith((".h5", ".keras")):
        return None
    try:
        import keras

        m = keras.models.load_model(model, compile=False)
        return np.asarray(m.predict(x.reshape((len(x), *m.input_shape[1:])), verbose=0)).reshape(len(x), -1)
    except Exception:  # noqa: BLE001 - a model tinycc reads but Keras cannot rebuild: the row shows n/a
        return None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _agree(t: tuple[int, int], n: int) -> str:
    return f"{n - t[0]}/{n} agree" + (f" ({t[1]} tie{'s' if t[1] != 1 else ''})" if t[1] else "")


def render(c: Comparison, run: Any, dep: Any) -> str:
    """The validate table."""
    from ...report import table

    n, ok = c.n, lambda good: "ok" if good else "MISMATCH"
    if dep.inference_only:  # the whole model's outputs; no learning
        rows = [["outputs, bit-exact", f"{n - c.feature_mismatch}/{n} equal, max |diff| {c.feature_max_diff} steps",
                 "run_int8 (the whole int8 model)", ok(c.feature_mismatch == 0)]]
        if c.acc:
            rows.append(["accuracy (arg-max)", f"{_pct(c.acc['deployed'])} of {n}",
                         f"int8 {_pct(c.acc['int8'])}, float Keras {_pct(c.acc['float'])}", ""])
    else:
        rows = [["int8 features, bit-exact", f"{n - c.feature_mismatch}/{n} equal, max |diff| {c.feature_max_diff}",
                 "run_int8 (Φf)", ok(c.feature_mismatch == 0)]]
    if not c.missing and not dep.inference_only:
        rows += [["top-1 before learning", _agree(c.top1_before, n), "simulator (int8 Φf + float Φc)",
                  ok(c.top1_before[0] == 0)],
                 *([["accuracy before learning", f"{_pct(c.acc['deployed'])} of {n}",
                     f"int8 {_pct(c.acc['int8'])}, float Keras {_pct(c.acc['float'])}", ""]] if c.acc else []),
                 ["max |probability diff|", f"{c.max_prob_diff:.2g}", "simulator", ""],
                 [f"top-1 after {n} learn calls", _agree(c.top1_after, n), "simulator", ok(c.top1_after[0] == 0)],
                 *([["accuracy after learning", f"{_pct(c.acc['deployed_after'])} of {n}",
                     f"simulator {_pct(c.acc['int8_after'])}", ""]] if c.acc else [])]
    mem = dep.memory
    if run.ram is not None:
        stack = f" ({mem['static_ram']:,} static + {mem['stack']:,} stack)" if mem.get("stack") else ""
        rows.append(["RAM (build)", f"{run.ram:,} B", f"{mem['ram']:,} B compile report{stack}", ""])
        rows.append(["flash (build)", f"{run.flash:,} B", f"{mem['flash']:,} B compile report", ""])
    if run.output.memory:
        m = run.output.memory
        same = m.get("ram") == mem["ram"] and m.get("flash") == mem["flash"]
        rows.append(["memory constants in the program", f"RAM {m.get('ram', 0):,}, flash {m.get('flash', 0):,}",
                     "compile report", "ok" if same else "differs"])
    if run.per_call:
        rows.append(["time per call", ", ".join(f"{k} {v:,.{1 if v < 100 else 0}f}" for k, v in run.per_call.items())
                     + f" {run.per_call_unit}", "", ""])
    text = table(["check", "deployed program", "reference", "status"], rows)
    if run.ram is not None and run.size_note:
        text += f"\nbuild sizes: {run.size_note} (the whole demo: its test vectors and C library included)"
    return text


def _copy_project(user: Path, proj: Path, made_from: str) -> None:
    """Replace the freshly compiled ``proj`` by a copy of the user's project (without its top-level build
    outputs) after checking that both have the same memory report (same model, target and options)."""
    if (user / "tinycc_memory.json").read_text() != (proj / "tinycc_memory.json").read_text():
        raise TinyccError(f"{user} was not compiled from {made_from} with these options (its tinycc_memory.json "
                          "differs): pass the compile options it was made with")
    shutil.rmtree(proj)
    try:
        shutil.copytree(user, proj, symlinks=True, ignore=lambda d, names: [
            n for n in names if Path(d) == user and any(fnmatch.fnmatch(n, b) for b in BUILD_OUTPUTS)])
    except (OSError, shutil.Error) as e:
        raise TinyccError(f"{user}: cannot copy the project ({str(e).splitlines()[0][:200]})") from None
    _check_links_inside(proj, user)


def _check_links_inside(copy: Path, user: Path) -> None:
    """Refuse a project whose symbolic links lead out of it: validate writes its test vectors into the copy and
    builds there, and must never write through a link into a file elsewhere."""
    root = copy.resolve()
    for d, dirs, names in os.walk(copy):
        for n in dirs + names:
            p = Path(d) / n
            if not p.is_symlink():
                continue
            target = Path(os.path.realpath(p))
            if target != root and root not in target.parents:
                rel = p.relative_to(copy)
                raise TinyccError(f"{user / rel} is a symbolic link out of the project (to {os.readlink(p)}); "
                                  "validate does not follow links out of a project: replace it by the file")


def validate(model: str, target: str, data: str, platform: str | None, n: int, project: str | None,
             config: CompileConfig, session: Any, stream: Any = None) -> int:
    """The whole command; returns the exit code (0 equal, 1 not equal); TinyccError on bad input. ``stream``:
    where the report goes (default: the current ``sys.stdout``, looked up at call time)."""
    stream = stream if stream is not None else sys.stdout
    if config.learning is not None and config.learning.deep:  # its reference is the head-only simulator
        raise TinyccError("validate --deep: the deep learner's project is not validated against its simulator here "
                          "yet (tinycc simulate --deep runs it on the host); validate the head-only project")
    from ...backends.demo import DemoFailed
    from ...api import compile_model

    from ...targets import by_platform

    backend = session.registry.backend(target)()
    where = session.registry.platforms(backend.name) or tuple(backend.platforms)
    if not where:
        raise TinyccError(f"target {target!r} has no demo runner yet: validate needs its backend to build and run "
                          "the demo (a registered board target that runs it, embed_test_vectors, run_demo)")
    platform = platform or where[0]
    if platform not in where:
        raise TinyccError(f"target {target} runs on {', '.join(where)}, not {platform!r}")
    spec = by_platform(session.registry.target_list(), platform)
    if not Path(data).is_file():
        raise TinyccError(f"{data}: no such file")
    if project is not None and not (Path(project) / "tinycc_memory.json").is_file():
        raise TinyccError(f"{project}: not a tinycc project (no tinycc_memory.json)")
    if not Path(model).is_file():
        raise TinyccError(f"{model}: no such file")
    graph = session.registry.frontend_for(model).load(model)
    if len(graph.inputs) > 1 or len(graph.outputs) > 1:
        raise TinyccError(f"{model}: validate reads one data array for one input and one output; a model with "
                          f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs is not validated yet")
    shape = tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])
    n = test_vector_count(int(np.prod(shape)), n)  # the demo embeds them as C source: bounded in size
    x, y, key = load_data(data, shape, int(graph.tensors[graph.outputs[0]].shape[-1]), n)
    calib = None if config.quant.calib else calibration_samples(data, shape)
    config = replace(config, compiler=replace(config.compiler, force=True), demo_target=spec)
    with tempfile.TemporaryDirectory(prefix="tinycc-validate-") as tmp:
        proj = Path(tmp) / "project"
        result = compile_model(model, target, str(proj), config, session, calib=calib)
        dep = result.deployment
        if project is not None:
            _copy_project(Path(project), proj, f"{model} for target {target}")
        if not dep.inference_only and dep.loss == "mse" and dep.target != "input":
            raise TinyccError(f"{model}: validate learns from class labels or, for an autoencoder, from the input "
                              "itself; a regression head with its own targets is not validated yet "
                              "(--inference-only validates the int8 model)")
        autoencoder = not dep.inference_only and dep.loss == "mse"
        labelled = y is not None and not autoencoder  # an autoencoder's accuracy is not a class accuracy
        if autoencoder:  # the demo learns to reproduce each input: its targets are the inputs
            y = x.reshape(len(x), -1)
        elif not labelled and not dep.inference_only:  # the demo learns: the reference's own classes as labels
            from ...ir.simulator import Simulator

            sim = Simulator(dep)
            y = np.asarray(sim.predict_features(sim.features(x))[0], np.int64)
        backend.embed_test_vectors(proj, dep, x, y)
        stream.write(f"tinycc validate: {Path(project or model).name} (target {target}) on {platform}, "
                     f"{len(x)} samples of {Path(data).name} ({key})"
                     + ("" if labelled else ", no labels: accuracy not reported"
                        + ("" if dep.inference_only else ", the learn calls reproduce the inputs (autoencoder)"
                           if autoencoder else ", the learn calls use the simulator's predicted classes"))
                     + "\n")
        stream.flush()
        try:
            run = backend.run_demo(proj, platform, spec)
        except DemoFailed as e:
            stream.write(f"FAIL: the program did not build or run: {str(e).strip()}\n")
            return 1
        probs = keras_probs(model, x) if labelled else None  # the float Keras reference serves accuracy only
        c = (compare_inference(dep, run.output, x, y, probs) if dep.inference_only else
             compare(dep, run.output, x, y, probs, labelled))
    stream.write(render(c, run, dep) + "\n")
    if c.passed and dep.inference_only:
        stream.write("PASS: the program computes tinycc's int8 reference bit for bit\n")
        return 0
    if c.passed:
        stream.write("PASS: the program computes tinycc's int8 reference bit for bit and predicts and learns as "
                     "the simulator does\n")
        return 0
    kind = "outputs" if dep.inference_only else "features"
    what = ([f"{c.feature_mismatch} of {c.n} samples have different int8 {kind} (max |diff| "
             f"{c.feature_max_diff})"] if c.feature_mismatch else []) + c.missing
    if c.top1_before[0]:
        what.append(f"{c.top1_before[0]} classes differ before learning")
    if c.top1_after[0]:
        what.append(f"{c.top1_after[0]} classes differ after learning")
    hint = (" (reference: MODEL compiled with the options given here, --calib included)" if project else "")
    stream.write("FAIL: the program differs from the reference: " + "; ".join(what) + hint + "\n")
    return 1


def _cmd(args: argparse.Namespace, session: Any) -> int:
    from ...api import config_from_args

    config = config_from_args(args, session.registry)
    return validate(args.model, args.target, args.data, args.on, args.n, args.project, config, session)


@hookimpl
def tinycc_add_commands(subparsers: Any, session: Any = None) -> None:
    from ...api import add_compile_arguments

    p = subparsers.add_parser("validate", help="build and run the generated program on a platform and compare it "
                                               "with the int8 reference, the simulator and the float model")
    p.add_argument("model")
    p.add_argument("--target", "-t", required=True, help="backend name (c, tflm, arduino)")
    p.add_argument("--data", required=True, help=".npz with x/y, x_test/y_test or x_train/y_train")
    p.add_argument("--on", help="platform: the emulator of a registered target that runs this backend's demo "
                                "(`tinycc plugins` lists them: host, qemu-m4, ... for c; simavr for arduino); "
                                "default: the target's first")
    p.add_argument("-n", type=int_range(1, MAX_SAMPLES), default=20, help="samples embedded and compared (default 20)")
    p.add_argument("--project", help="validate this generated project (a temporary copy) instead of compiling")
    add_compile_arguments(p, session)
    p.set_defaults(func=_cmd)
