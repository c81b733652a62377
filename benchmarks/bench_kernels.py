"""int8 kernels: tinycc's runtime kernels and ``--kernels cmsis-nn`` against TensorFlow Lite Micro (reference
kernels, and CMSIS-NN) on Cortex-M4 under QEMU, plus Cortex-M7/M0+ builds of tinycc and host time per inference.

Per model: instructions for one inference (tinycc: one ``features()`` call, the int8 feature extractor; TFLite
Micro: one ``Invoke`` of the MLPerf Tiny .tflite as published, or of tinycc's extractor written as .tflite for the
zoo), instructions per MAC (the extractor's MACs), code bytes net of a printf-only program (function symbols of
the -Os, gc-sections ELF), arena bytes, and the ratios against TFLite Micro + CMSIS-NN. A model tinycc cannot
compile for `c` is listed as "not compiled: reason". TFLite Micro libraries are built from the vendored
snapshot with ``build_tflm.sh`` (Cortex-M4 and host only: that script has no M7/M0+ build).
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import kernels_build as kb
from .common import Result

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (a worktree in a subfolder: ../../shared); TINYCC_SHARED overrides
SHARED = Path(os.environ.get("TINYCC_SHARED") or next(
    (p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent / "shared"))
MLPERF = {"ResNet-8": "pretrainedResnet_quant.tflite", "DS-CNN KWS": "kws_ref_model.tflite",
          "MobileNetV1 VWW": "vww_96_int8.tflite", "FC autoencoder": "ad01_int8.tflite"}
ZOO = ("cnas_like", "cnas_like_pruned", "digits", "sequential_cnn", "resnet_add", "mobilenet_v2", "mobilenet_v3",
       "concat_branch", "bn_conv_act", "mlp", "grouped_conv", "conv1d_sensor", "separable_cnn")
KERNELS = ("tinycc", "cmsis-nn")
CNAS = ("CNAS", "CNAS step 1")
# The Cortex-M55 is left out of this mode's cores: here CMSIS-NN is built per core for tinycc's ``--kernels
# cmsis-nn`` wrappers, and for cortex-m55 CMSIS-NN takes its MVE path, which calls sources outside the wrappers'
# list (arm_transpose_s8) and sizes scratch buffers by MVE rules the wrappers do not follow: the link failed (or
# the run hung in QEMU) and no row was written. ``--m55`` measures that core: Helium kernels against TFLite Micro +
# CMSIS-NN (MVE), benchmarks/kernels_m55.py.
DEFAULT_CPUS = tuple(c for c in kb.CPU_FLAGS if c != "m55")
# STM32Cube.AI 9 on STM32L4R5 (Cortex-M4, 120 MHz), MLPerf Tiny inference v1.2 closed division as published:
# cycles on hardware (latency x clock), not QEMU instructions
CUBE_AI = {"ResNet-8": 19.8e6, "DS-CNN KWS": 5.18e6, "MobileNetV1 VWW": 10.7e6}
TARGET_X_CUBE = 0.8  # issue #27's acceptance: tinycc's M4 instructions <= 0.8x those cycles
TARGET_X_TFLM = 0.6  # and <= 0.6x TFLite Micro + CMSIS-NN at its Makefile levels  # the thesis's model (tinycc.models.cnas_cifar10) unpruned and pruned as step 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vendor", default=str(SHARED / "vendor"), help="folder with the TFLM/CMSIS-NN snapshots")
    p.add_argument("--mlperf", default=str(SHARED / "models" / "mlperf-tiny"), help="MLPerf Tiny .tflite folder")
    p.add_argument("--cache", help="build cache outside the clone (default $TINYCC_CACHE or ~/.cache/tinycc)")
    p.add_argument("--tflm-ref", help="libtflm-m4-ref.a (default: built into the cache)")
    p.add_argument("--tflm-cmsis", help="libtflm-m4-cmsis.a (default: built into the cache)")
    p.add_argument("--tflm-cmsis-o2", help="libtflm-m4-cmsis-O2.a: TFLite Micro's Makefile levels (kernels and "
                                           "CMSIS-NN -O2, the rest -Os; default: built into the cache)")
    p.add_argument("--tflm-host", help="libtflm-host.a (default: built into the cache)")
    p.add_argument("--no-tflm-ref", action="store_true", help="leave out TFLite Micro's reference kernels (their "
                                                               "Cortex-M4 library takes the longest to build)")
    p.add_argument("--arm-cxx", help="extracted libstdc++-arm-none-eabi-dev/-newlib packages, for a toolchain without "
                                     "C++ headers (default: CACHE/arm-libstdcxx/root when needed)")
    p.add_argument("--cmsis-nn-dir", help="CMSIS_NN_DIR (default: the vendored snapshot, extracted into the cache)")
    p.add_argument("--models", nargs="+", help="only these models (names as in the table)")
    p.add_argument("--cpus", nargs="+", default=list(DEFAULT_CPUS), choices=list(DEFAULT_CPUS),
                   help="cores measured (default m4 m7 m0plus; the Cortex-M55 has its own mode, --m55)")
    p.add_argument("--repeats", type=int, default=20, help="host: inferences per timing run")
    p.add_argument("--runs", type=int, default=5, help="host: timing runs (median)")
    p.add_argument("--m55", action="store_true", help="only the Cortex-M55 comparison (MLPerf Tiny models): tinycc's "
                                                      "Helium kernels against TFLite Micro + CMSIS-NN's MVE path "
                                                      "(writes kernels-m55.md/json; benchmarks/kernels_m55.py)")


def _session() -> Any:
    from tinycc.session import Session

    return Session(autoload=False)


def _mlperf_deployments(args: argparse.Namespace, session: Any):
    """(name, .tflite bytes, deployment per kernels or error text, MACs) for the MLPerf Tiny files."""
    from tinycc.backends.c import CBackend
    from tinycc.errors import TinyccError
    from tinycc.ir.stats import totals
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment

    for name, fname in MLPERF.items():
        path = Path(args.mlperf) / fname
        if not path.exists() or (args.models and name not in args.models):
            continue
        graph = session.registry.frontend_for(str(path)).load(str(path))
        run_pipeline(graph, session.registry.pipeline("cleanup"), PassContext(session=session))
        macs = totals(graph)["macs"]
        deps: dict[str, Any] = {}
        for k in KERNELS:
            try:
                dep = build_deployment(graph.copy() if hasattr(graph, "copy") else graph,
                                       make_config(session, kernels=k), session, CBackend())
                CBackend().check(dep)
                deps[k] = dep
            except TinyccError as e:
                deps[k] = f"not compiled: {e}"
        if not isinstance(deps["tinycc"], str):  # the extractor's MACs: what features() computes
            macs = totals(deps["tinycc"].extractor)["macs"]
        yield name, path.read_bytes(), deps, macs


def _zoo_deployments(session: Any, only: list[str] | None):
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.test_c_backend import CASES, _graph
    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import extractor_tflite
    from tinycc.errors import TinyccError
    from tinycc.ir.stats import totals
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment

    for name in ZOO:
        if only and name not in only:
            continue
        deps: dict[str, Any] = {}
        for k in KERNELS:
            g, x, y, calib = _graph(session, name)
            deps[k] = build_deployment(g, make_config(session, **CASES[name], kernels=k), session, CBackend(),
                                       calib=calib)
        try:
            tflite: bytes | str = extractor_tflite(deps["tinycc"].extractor)
        except TinyccError as e:  # e.g. a grouped convolution: no TFLite kernel, TFLite Micro is not measured
            tflite = f"no .tflite: {str(e).splitlines()[0][:100]}"
        yield name, tflite, deps, totals(deps["tinycc"].extractor)["macs"]


def _cnas_deployments(session: Any, only: list[str] | None):
    """The thesis's CNAS model (seeded weights, BatchNorm statistics as in tests/test_cnas.py: instruction counts
    do not depend on training) unpruned and as the thesis's pruning step 1 (1094 of the last convolution's 1280
    filters removed, as bench_thesis.py does), calibrated on 100 CIFAR-10 training images, cut before the
    classifier (the Flatten) as bench_thesis.py compiles it; TFLite Micro runs the extractor written as .tflite."""
    import keras

    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import extractor_tflite
    from tinycc.ir.stats import totals
    from tinycc.models import cnas_cifar10
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment
    from tinycc.plugins.passes.prune import prune

    names = [n for n in CNAS if not only or n in only]
    data = SHARED / "data" / "cifar10.npz"
    if not names or not data.exists():
        return
    with np.load(data, allow_pickle=False) as z:
        calib = z["x_train"][:100].astype(np.float32) / 255
    keras.utils.set_random_seed(3)
    model = cnas_cifar10()
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BatchNorm statistics as tests/test_cnas.py sets them: with the untrained
        if type(layer).__name__ == "BatchNormalization":  # defaults some scales underflow TFLite Micro's shifts
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    path = Path(tempfile.mkdtemp(prefix="bench-kernels-cnas-")) / "cnas.keras"
    model.save(path)  # loaded as bench_thesis.py loads the trained model
    base = session.registry.frontend_for(str(path)).load(str(path))
    run_pipeline(base, session.registry.pipeline("cleanup"), PassContext(session=session))
    head = [o for o in base.ops if o.kind.value == "dense"][-1]  # the classifier: the cut is its input (Flatten)
    last = [o for o in base.ops if o.kind.value in ("conv2d", "dense") and o is not head][-1]  # 1280 filters
    for name in names:
        deps: dict[str, Any] = {}
        for k in KERNELS:
            g = base.copy()
            if name == "CNAS step 1":
                rep = prune(g, ratio=0.0, layer_ratios={last.name: 1094 / 1280})
                assert any(r["channels_after"] == 1280 - 1094 for r in rep["layers"])  # as bench_thesis.py
            deps[k] = build_deployment(g, make_config(session, cut=head.inputs[0], kernels=k), session,
                                       CBackend(), calib=calib)
        yield name, extractor_tflite(deps["tinycc"].extractor), deps, totals(deps["tinycc"].extractor)["macs"]


def _test_vectors(dep: Any) -> tuple[np.ndarray, np.ndarray]:
    t = dep.extractor.tensors[dep.extractor.inputs[0]]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2,) + tuple(t.shape[1:])).astype(np.float32)
    return x, np.zeros(2, np.int64)


def _fmt(v: Any, spec: str = ",") -> str:
    if v is None or v == "":
        return "—"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def run(args: argparse.Namespace) -> Result:
    from tinycc.backends.c import cmsis_nn

    if args.m55:
        from .kernels_m55 import run_m55

        return run_m55(args)

    cache = Path(args.cache) if args.cache else cmsis_nn.cache_root()
    vendor = Path(args.vendor)
    archive = cmsis_nn.vendor_archive(vendor)
    if not args.cmsis_nn_dir and archive is None:
        raise SystemExit(f"no cmsis-nn-*.tar.xz in {vendor}: pass --vendor or --cmsis-nn-dir")
    cmsis_dir = Path(args.cmsis_nn_dir) if args.cmsis_nn_dir else cmsis_nn.extract(archive)
    work = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    cm_libs = {c: kb.cmsis_library(cmsis_dir, work, c) for c in ["host", *args.cpus]}
    session = _session()
    rows: list[dict[str, Any]] = []
    pending = []  # (row, .tflite, project) for the TFLite Micro phase
    sources = list(_mlperf_deployments(args, session)) + list(_cnas_deployments(session, args.models)) + \
        list(_zoo_deployments(session, args.models))
    for name, tflite, deps, macs in sources:  # phase 1: tinycc (TFLite Micro may still be building)
        print(f"kernels: {name}", flush=True)
        row: dict[str, Any] = {"model": name, "macs": macs}
        proj0 = None
        for k, dep in deps.items():
            if isinstance(dep, str):
                row[f"{k} error"] = dep
                continue
            proj0 = _measure_tinycc(row, k, dep, work, cm_libs if k == "cmsis-nn" else None, cmsis_dir, args)
        if "tinycc features" in row and "cmsis-nn features" in row:
            row["cmsis-nn equals tinycc"] = row["tinycc features"] == row["cmsis-nn features"]
        row.pop("tinycc features", None)
        row.pop("cmsis-nn features", None)
        rows.append(row)
        pending.append((row, tflite, proj0))
        print(row, flush=True)
    libs, cxx = _tflm_libraries(args, vendor, cache)
    for row, tflite, project in pending:  # phase 2: TFLite Micro
        print(f"kernels: TFLite Micro {row['model']}", flush=True)
        _measure_tflm(row, tflite, project or _any_project(work), libs, cxx, work, args)
        print(row, flush=True)
    return _result(rows, args, Path(args.out))


def _measure_tinycc(row: dict[str, Any], k: str, dep: Any, work: Path, lib: dict[str, Path] | None, cmsis_dir: Path,
                    args: argparse.Namespace) -> Path:
    """Generate the project with kernels ``k``, time features() on each core and on the host."""
    from tinycc.backends.c import cmsis_nn, render_project
    from tinycc.config import TestVectors

    proj = work / f"{row['model'].replace(' ', '_')}-{k}"
    proj.mkdir()
    x, y = _test_vectors(dep)
    render_project(dep, proj, TestVectors(x, y, 2, 1))
    row[f"{k} arena"] = dep.memory["items"][0]["bytes"] + cmsis_nn.scratch_bytes(dep.extractor, k)
    feats = {}
    for cpu in args.cpus:
        m = kb.tinycc_m(proj, dep.name, cpu, lib[cpu] if lib else None, cmsis_dir if lib else None)
        row[f"{k} {cpu}"] = m.instructions
        row[f"{k} {cpu} s8"] = m.instructions_s8  # features_s8(): the int8 input entry
        row[f"{k} {cpu} s8 equal"] = m.s8_equal
        row[f"{k} {cpu} code"] = m.code - kb.printf_baseline(proj, work, cpu)
        feats[cpu] = m.features
    row[f"{k} bit-exact across cores"] = len({tuple(f or ()) for f in feats.values()}) == 1
    row[f"{k} features"] = feats[args.cpus[0]]
    if k == "tinycc" and "m4" in args.cpus:
        row["profile"] = _profile(dep, proj)
    row[f"{k} host s"] = kb.tinycc_host(proj, dep.name, lib["host"] if lib else None, cmsis_dir if lib else None,
                                        args.repeats, args.runs)
    return proj


def _call_ops(dep: Any) -> list[tuple[Any, str]]:
    """(op, kernel family) of each kernel call of the extractor in model.c's order (the emitter's own walk: an op
    may make several calls, e.g. a convolution and its requantization)."""
    from tinycc.backends.c.emitter import _Builder

    b = _Builder(dep)
    out: list[tuple[Any, str]] = []
    for pos, op in enumerate(dep.extractor.ops):
        n = len(b.m.calls)
        b.layer, b.op_now = (pos, op.kind.value), op  # as _Builder.build sets them (array names and roles)
        b.op(op)
        fams = {k.fn: k.family for k in b.m.kernels}
        out += [(op, fams.get(c.fn, "runtime")) for c in b.m.calls[n:]]
    return out


def _profile(dep: Any, proj: Path, cpu: str = "m4") -> list[dict[str, Any]]:
    """Per layer of the extractor: name, op kind, kernel (generated family or the generic runtime), MACs and
    Cortex-M4 (or ``cpu``) instructions (QEMU, one features() call, SysTick read between kernel calls)."""
    from tinycc.ir.stats import op_macs

    counts = kb.tinycc_profile(proj, dep.name, cpu)
    calls = _call_ops(dep)
    if len(calls) != len(counts):
        raise RuntimeError(f"profile: {len(counts)} calls in model.c, {len(calls)} from the emitter")
    layers: list[dict[str, Any]] = []
    for (op, fam), n in zip(calls, counts):
        if layers and layers[-1]["name"] == op.name:
            layers[-1]["instructions"] += n
            continue
        w = dep.extractor.tensors[op.inputs[1]].shape if len(op.inputs) > 1 and \
            dep.extractor.tensors[op.inputs[1]].is_const else None
        layers.append({"name": op.name, "kind": op.kind.value, "kernel": fam,
                       "shape": "x".join(str(v) for v in dep.extractor.tensors[op.outputs[0]].shape[1:]),
                       "weights": "x".join(str(v) for v in w) if w is not None else "",
                       "macs": op_macs(dep.extractor, op), "instructions": n})
    return layers


def _tflm_libraries(args: argparse.Namespace, vendor: Path, cache: Path) -> tuple[dict[str, Any], Path | None]:
    """The TFLite Micro libraries (reference, CMSIS-NN at -Os and at its Makefile levels, host; paths given, or
    built into the cache); a text where one cannot be had."""
    cxx = None
    try:
        cxx = kb.arm_cxx_root(cache, args.arm_cxx)
    except RuntimeError as e:
        print(f"kernels: {e}", flush=True)
    libs: dict[str, Any] = {}
    for key, given, kind, variant in (("ref", args.tflm_ref, "m4", "ref"), ("cmsis", args.tflm_cmsis, "m4", "cmsis"),
                                      ("cmsis-O2", args.tflm_cmsis_o2, "m4", "cmsis-O2"),
                                      ("host", args.tflm_host, "host", "ref")):
        if key == "ref" and args.no_tflm_ref:
            libs[key] = "not measured in this run (--no-tflm-ref)"
            continue
        try:
            if given:
                libs[key] = Path(given)
            elif variant == "cmsis-O2":
                libs[key] = kb.tflm_library_makefile_levels(vendor, cache, cxx)
            else:
                libs[key] = kb.tflm_library(vendor, cache, kind, variant, cxx)
            if not libs[key].is_file():
                raise RuntimeError(f"{libs[key]} not found")
        except RuntimeError as e:  # reported in the table, the rest is still measured
            libs[key] = f"TFLite Micro not built: {str(e).splitlines()[0][:100]}"
    return libs, cxx


def _measure_tflm(row: dict[str, Any], tflite: bytes | str, project: Path, libs: dict[str, Any], cxx: Path | None,
                  work: Path, args: argparse.Namespace) -> None:
    from tinycc.backends.tflm import RESOLVER
    from tinycc.tflite_writer import operator_names

    if isinstance(tflite, str):  # the model could not be written as .tflite
        for v in ("tflm-ref", "tflm-cmsis", "tflm-cmsis-O2", "tflm host"):
            row[f"{v} error"] = tflite
        return

    ops = [RESOLVER[n] for n in operator_names(tflite) if n in RESOLVER]
    tag = row["model"].replace(" ", "_")
    for v in ("ref", "cmsis", "cmsis-O2"):
        if isinstance(libs[v], str):
            row[f"tflm-{v} error"] = libs[v]
            continue
        try:
            m = kb.tflm_m4(work / f"tflm-{tag}-{v}", tflite, ops, libs[v], project, cxx)
            row[f"tflm-{v} m4"], row[f"tflm-{v} arena"] = m.instructions, m.arena
            row[f"tflm-{v} m4 code"] = m.code - kb.printf_baseline(project, work, "m4")
        except (RuntimeError, KeyError) as e:
            row[f"tflm-{v} error"] = str(e).splitlines()[0][:120]
    if isinstance(libs["host"], str):
        row["tflm host error"] = libs["host"]
        return
    try:
        row["tflm host s"] = kb.tflm_host(work / f"tflm-{tag}-host", tflite, ops, libs["host"], args.repeats,
                                          args.runs)
    except RuntimeError as e:
        row["tflm host error"] = str(e).splitlines()[0][:120]


def _any_project(work: Path) -> Path:
    """A generated project for its cortexm/ startup and linker script (when no model compiled)."""
    hits = sorted(p for p in work.iterdir() if (p / "cortexm" / "link.ld").exists())
    if hits:
        return hits[0]
    raise RuntimeError("no generated project to borrow the Cortex-M startup from")


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "—"


def _result(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> Result:
    res = Result("kernels")
    res.data = {"rows": rows}
    head = ["model", "MACs", "TFLM ref (M4)", "TFLM + CMSIS-NN (M4)", "tinycc kernels, float input (M4)",
            "tinycc kernels, int8 input (M4)", "instr/MAC (int8 input)", "tinycc + CMSIS-NN, int8 input (M4)",
            "instr/MAC", "tinycc / TFLM+CMSIS-NN", "tinycc+CMSIS-NN / TFLM+CMSIS-NN"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "--:|" * (len(head) - 1)]
    for r in rows:
        def cell(k: str) -> str:
            if f"{k} error" in r:
                return r[f"{k} error"]
            return _fmt(r.get(f"{k} m4"))
        t8, c8 = _compared(r, "tinycc"), _compared(r, "cmsis-nn")
        per = [f"{v / r['macs']:.2f}" if isinstance(v, int) and r["macs"] else "—" for v in (t8, c8)]
        s8 = r.get("tinycc error") or _fmt(r.get("tinycc m4 s8"))
        if r.get("tinycc m4 s8 equal") is False:
            s8 += " (features differ from the float entry!)"
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.3f} M | {cell('tflm-ref')} | {cell('tflm-cmsis')} | "
                     f"{cell('tinycc')} | {s8} | {per[0]} | {r.get('cmsis-nn error') or _fmt(c8)} | {per[1]} | "
                     f"{_ratio(t8, r.get('tflm-cmsis m4'))} | {_ratio(c8, r.get('tflm-cmsis m4'))} |")
    res.add("Instructions per inference on Cortex-M4 (QEMU mps2-an386, `-icount shift=0`, arm-none-eabi-gcc -Os, "
            "wrap-safe SysTick timing: reference clock for calls over 600 M instructions). tinycc: one call of the "
            "int8 feature extractor, measured at both entries: `features()` (float input, quantized first) and "
            "`features_s8()` (the same input already quantized with the model's input scale and zero point; the "
            "same features, checked). " + COMPARED + " TFLite Micro: one `Invoke` of the "
            "MLPerf Tiny .tflite as published (its last Dense and softmax included, a negligible share) or, for the "
            "zoo, of tinycc's extractor written as .tflite. MACs: the extractor's. tinycc kernels: the default "
            "`--kernels tinycc`, layers specialized at compile time by the kernel generator (`backends/c/kernels/`).")
    res.add("\n".join(lines))
    _add_comparison(res, rows)
    _add_profile(res, rows)
    head2 = ["model", "code: TFLM ref", "code: TFLM + CMSIS-NN", "code: tinycc", "code: tinycc + CMSIS-NN",
             "tinycc / TFLM+CMSIS-NN", "arena: TFLM ref", "arena: TFLM + CMSIS-NN", "arena: tinycc",
             "arena: tinycc + CMSIS-NN (incl. scratch)"]
    lines = ["| " + " | ".join(head2) + " |", "|" + "---|" + "--:|" * (len(head2) - 1)]
    for r in rows:
        lines.append(f"| {r['model']} | {_fmt(r.get('tflm-ref m4 code'))} | {_fmt(r.get('tflm-cmsis m4 code'))} | "
                     f"{_fmt(r.get('tinycc m4 code'))} | {_fmt(r.get('cmsis-nn m4 code'))} | "
                     f"{_ratio(r.get('tinycc m4 code'), r.get('tflm-cmsis m4 code'))} | "
                     f"{_fmt(r.get('tflm-ref arena'))} | {_fmt(r.get('tflm-cmsis arena'))} | "
                     f"{_fmt(r.get('tinycc arena'))} | {_fmt(r.get('cmsis-nn arena'))} |")
    res.add("Code bytes on Cortex-M4 (-Os, `-ffunction-sections -Wl,--gc-sections`): sizes of the function symbols "
            "of the timing program minus those of a printf-only program with the same startup and C library; "
            "weights and other constants are not code. Arena: TFLite Micro's `arena_used_bytes()`; tinycc's "
            "planned arena (plus CMSIS-NN's scratch buffer for `--kernels cmsis-nn`).")
    res.add("\n".join(lines))
    others = [c for c in args.cpus if c != "m4"]
    if others:
        head3 = ["model"] + [f"{k} {c}" for c in others for k in ("tinycc", "tinycc + CMSIS-NN")] + \
            ["bit-exact across cores and kernels"]
        lines = ["| " + " | ".join(head3) + " |", "|" + "---|" + "--:|" * (len(head3) - 1)]
        for r in rows:
            same = all(r.get(f"{k} bit-exact across cores", True) for k in KERNELS) and r.get("cmsis-nn equals tinycc",
                                                                                             True)
            lines.append(f"| {r['model']} | " + " | ".join(_fmt(r.get(f"{k} {c}")) for c in others
                                                          for k in KERNELS) + f" | {'yes' if same else 'NO'} |")
        res.add("Instructions per `features()` on Cortex-M7 (mps2-an500) and Cortex-M0+ (ARMv6-M image on the "
                "Cortex-M3 board mps2-an385; CMSIS-NN's portable C path, no DSP). TFLite Micro is not built for "
                "these cores (the vendored build_tflm.sh builds Cortex-M4 only). The last column compares the "
                "features printed by every build (tinycc and CMSIS-NN kernels, every core).")
        res.add("\n".join(lines))
    head4 = ["model", "TFLM host (libtflm-host, -O2)", "tinycc (gcc -O2)", "tinycc + CMSIS-NN portable C",
             "tinycc / TFLM"]
    lines = ["| " + " | ".join(head4) + " |", "|---|--:|--:|--:|--:|"]
    for r in rows:
        us = [f"{r[k] * 1e6:,.1f} µs" if isinstance(r.get(k), float) else "—"
              for k in ("tflm host s", "tinycc host s", "cmsis-nn host s")]
        lines.append(f"| {r['model']} | {us[0]} | {us[1]} | {us[2]} | "
                     f"{_ratio(r.get('tinycc host s'), r.get('tflm host s'))} |")
    res.add(f"Host time per inference (median of {args.runs} runs of {args.repeats} inferences; noisy: a shared "
            "machine, no pinning).")
    res.add("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r if k != "profile"})
    with open(out / "kernels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows({k: v for k, v in r.items() if k != "profile"} for r in rows)
    _plot(rows, out / "kernels.png")
    res.plots.append("kernels.png")
    return res


COMPARED = ("Every comparison with TFLite Micro and STM32Cube.AI uses tinycc's int8 entry `features_s8()`: their "
            "measured input tensor is int8 (the MLPerf Tiny models take int8 input, quantized by the caller before "
            "`Invoke`), so the float entry's quantization step is work they are not timed for.")


def _compared(r: dict[str, Any], k: str) -> Any:
    """The Cortex-M4 instructions of kernels ``k`` that the comparisons use: the int8 entry (see COMPARED), the
    float entry where a row has no int8 measurement."""
    v = r.get(f"{k} m4 s8")
    return v if isinstance(v, int) else r.get(f"{k} m4")


def _add_comparison(res: Result, rows: list[dict[str, Any]]) -> None:
    """tinycc against TFLite Micro + CMSIS-NN at -Os and at its own Makefile levels, and STM32Cube.AI's
    published cycles (hardware, not QEMU), with issue #27's targets."""
    head = ["model", "MACs", "TFLM + CMSIS-NN -Os (M4)", "TFLM + CMSIS-NN, Makefile levels (M4)",
            "tinycc, int8 input (M4)",
            "instr/MAC", "tinycc / TFLM Makefile levels", f"target <= {TARGET_X_TFLM}x",
            "STM32Cube.AI 9, cycles on STM32L4R5 hardware (published)", "tinycc instr / Cube.AI cycles",
            f"target <= {TARGET_X_CUBE}x"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "--:|" * (len(head) - 1)]
    for r in rows:
        t = _compared(r, "tinycc")
        o2 = r.get("tflm-cmsis-O2 m4")
        cube = CUBE_AI.get(r["model"])
        if not isinstance(t, int) or (o2 is None and cube is None):
            continue
        per = f"{t / r['macs']:.2f}" if r["macs"] else "—"
        ok_t = ("yes" if t <= TARGET_X_TFLM * o2 else "**no**") if isinstance(o2, int) else "—"
        ok_c = ("yes" if t <= TARGET_X_CUBE * cube else "**no**") if cube else "—"
        o2_cell = r.get("tflm-cmsis-O2 error") or _fmt(o2)
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.3f} M | {_fmt(r.get('tflm-cmsis m4'))} | {o2_cell} | "
                     f"{_fmt(t)} | {per} | {_ratio(t, o2)} | {ok_t} | "
                     f"{f'{cube / 1e6:.2f} M' if cube else '—'} | {_ratio(t, cube)} | {ok_c} |")
    res.add("Against the fastest published engine and TFLite Micro's own build levels. TFLM + CMSIS-NN at "
            "TFLite Micro's Makefile levels: `KERNEL_OPTIMIZATION_LEVEL` and `THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL` "
            "-O2 (its kernels and CMSIS-NN), the rest -Os (`kernels_build.tflm_library_makefile_levels`). "
            "**STM32Cube.AI 9 is not measured here**: its column quotes the MLPerf Tiny inference v1.2 results "
            "(closed division, STM32L4R5, Cortex-M4 at 120 MHz), cycles on real hardware (flash wait states, "
            "two-cycle loads), while every other number is QEMU `-icount` instructions, which real cycles are "
            "never fewer than. Targets: issue #27's acceptance. " + COMPARED)
    res.add("\n".join(lines))


def _add_profile(res: Result, rows: list[dict[str, Any]]) -> None:
    """Where tinycc's Cortex-M4 instructions go: per op kind and kernel (every model), per layer (MLPerf Tiny)."""
    head = ["model", "op kind (kernel)", "layers", "MACs", "instructions", "share", "instr/MAC"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        prof = r.get("profile")
        if not prof:
            continue
        total = sum(l["instructions"] for l in prof) or 1
        groups: dict[str, list[dict[str, Any]]] = {}
        for l in prof:
            groups.setdefault(f"{l['kind']} ({l['kernel']})", []).append(l)
        for key, ls in sorted(groups.items(), key=lambda kv: -sum(l["instructions"] for l in kv[1])):
            n, m = sum(l["instructions"] for l in ls), sum(l["macs"] for l in ls)
            lines.append(f"| {r['model']} | {key} | {len(ls)} | {m:,} | {n:,} | {100 * n / total:.1f}% | "
                         f"{f'{n / m:.2f}' if m else '—'} |")
    res.add("Where the time goes: tinycc's Cortex-M4 instructions (one `features()` call) per op kind and kernel "
            "(`conv`, `gemm`, `depthwise`, ... are the kernel generator's families; `runtime` the generic kernels "
            "of `runtime/tinycc_kernels.c`). Measured by `kernels_build.tinycc_profile`: a copy of model.c that "
            "reads SysTick (40 instructions per tick) between the extractor's kernel calls; the layer functions "
            "compile exactly as in the timing program, so the layers sum to the total within a few ticks.")
    res.add("\n".join(lines))
    head = ["model", "layer", "op kind (kernel)", "output", "weights", "MACs", "instructions", "share",
            "instr/MAC"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---|--:|--:|--:|--:|"]
    for r in rows:
        prof = r.get("profile")
        if not prof or r["model"] not in MLPERF:
            continue
        total = sum(l["instructions"] for l in prof) or 1
        for i, l in enumerate(prof):
            n, m = l["instructions"], l["macs"]
            lines.append(f"| {r['model']} | {i} | {l['kind']} ({l['kernel']}) | {l['shape']} | {l['weights']} | "
                         f"{m:,} | {n:,} | {100 * n / total:.1f}% | {f'{n / m:.2f}' if m else '—'} |")
    res.add("Per layer (MLPerf Tiny models; layer = position in the extractor, output and weight shapes "
            "NHWC / OHWI without the batch; every model's layers are in kernels.json under `profile`).")
    res.add("\n".join(lines))


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    series = [("tflm-ref m4", "TFLM reference"), ("tflm-cmsis m4", "TFLM + CMSIS-NN"),
              ("tinycc m4 s8", "tinycc (int8 input)"), ("cmsis-nn m4 s8", "tinycc + CMSIS-NN (int8 input)")]
    names = [r["model"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.9), 4.5))
    width = 0.2
    for i, (k, label) in enumerate(series):
        vals = [r.get(k) if isinstance(r.get(k), int) else 0 for r in rows]
        ax.bar(np.arange(len(rows)) + (i - 1.5) * width, vals, width, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("instructions per inference (Cortex-M4, log)")
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
