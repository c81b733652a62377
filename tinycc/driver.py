"""The compile driver: one linear function from model file to project folder.

load -> verify -> stages import, cleanup, optimize -> deploy stage (a registered deployment kind: cut, the
quantize stages on Φf, classifier, buffer, memory plan, budget) -> backend.check -> backend.emit into a temporary
folder -> atomic rename. Nothing is written to the output path unless every step succeeded. Built-ins are reached
only through the registry (``-p no:NAME`` blocks any of them).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import (ACTIVATIONS, FEATURES, KERNELS, LOSSES, OBSERVERS, POLICIES, STORAGES, TRAIN_MODES, CompileConfig,
                     DemoConfig, LearningConfig, TestVectors)
from .deploy.deep import build_deep_deployment
from .errors import TinyccError
from .ir.calibration import CalibrationDataError, check_weights
from .ir.verify import verify
from .options import (MAX_BATCH, MAX_EPOCHS, MAX_SAMPLES, byte_size, deep_mode, int_range, layer_names,
                      positive_float, positive_int)
from .output import check_output_dir, install_dir, new_project_dir
from .passes import PassContext, PassRecord, collect_records, summarize, timed
from .stages import FRONT_STAGES, STAGES, parse_passes, resolve, run_stages

log = logging.getLogger("tinycc.driver")


def parse_bytes(text: str) -> int:
    """'256K' -> 262144, '1M' -> 1048576, '8192' -> 8192 (binary multiples; 1 byte .. 4 GiB)."""
    return byte_size(text)


def add_compile_arguments(p: argparse.ArgumentParser, session: Any = None) -> None:
    """The options of ``tinycc compile`` (and of the commands that compile: validate, ...).

    No option has an argparse default: one not given is None and the dataclass default of ``tinycc.config``
    applies, so every default lives in one place. Plugins add their own groups (``add_compile_options``)."""
    g = p.add_argument_group("deployment")
    g.add_argument("--cut", help="layer/tensor after which the trainable classifier starts (default: automatic)")
    g.add_argument("--calib", help="calibration data: .npz/.npy, image folder, or SOURCE:ARG from a plugin")
    g.add_argument("--observer", choices=OBSERVERS, help="calibration observer (default minmax)")
    g.add_argument("--activations", choices=ACTIVATIONS,
                   help="activation type of the quantized extractor: int8 (default) or int16 (TFLite's 16x8)")
    g.add_argument("--int16-layers", type=layer_names, metavar="NAME,NAME",
                   help="keep these layers (or first, last) in int16 in an int8 model (requantize ops between)")
    g.add_argument("--board", help="board preset (see `tinycc plugins`): sets the RAM/flash budget")
    g.add_argument("--ram", type=parse_bytes, help="RAM budget in bytes (suffix K/M allowed)")
    g.add_argument("--flash", type=parse_bytes, help="flash budget in bytes (suffix K/M allowed)")
    g.add_argument("--buffer", type=positive_int, help="replay buffer capacity (default: the largest that fits)")
    g.add_argument("--policy", choices=POLICIES, help=f"replay buffer policy (default {LearningConfig.policy})")
    g.add_argument("--storage", choices=STORAGES,
                   help="buffer entry storage (default: the features' type, int8 or int16; float32 stores floats)")
    g.add_argument("--features", choices=FEATURES,
                   help="int16 features (16x8 extractor): native keeps them int16 (default), int8 requantizes them "
                        "at the cut (half the buffer)")
    g.add_argument("--tinyol", action="store_true", default=None, help="TinyOL mode: train on the latest sample only")
    g.add_argument("--loss", choices=LOSSES,
                   help="on-device head: ce softmax cross-entropy, bce sigmoid binary cross-entropy (labels 0/1), mse "
                        "regression (float targets; an autoencoder's target is its input). Default: from the model's "
                        "last activation and shapes")
    g.add_argument("--lr", type=positive_float, help=f"on-device SGD learning rate (default {LearningConfig.lr})")
    g.add_argument("--epochs", type=int_range(1, MAX_EPOCHS),
                   help=f"epochs over the buffer per learned sample (default {LearningConfig.epochs}, at most "
                        f"{MAX_EPOCHS})")
    g.add_argument("--batch-size", type=int_range(1, MAX_BATCH),
                   help=f"on-device minibatch size (default {LearningConfig.batch_size} = per-sample SGD)")
    g.add_argument("--train", choices=TRAIN_MODES,
                   help="what the device trains: all classifier layers (default), the last layer only, every "
                        "bias plus the last layer's weights (TinyTL); less training state for last; sparse: the "
                        "classifier + the backbone biases, layers and output channels after --deep-cut that a "
                        "contribution analysis on the labelled --calib data picks under --ram")
    g.add_argument("--deep", type=deep_mode, metavar="bias|blocks",
                   help="learn beyond the head: bias = the int8 backbone's biases after --deep-cut train on the "
                        "device with the classifier (TinyTL); blocks = the layers after --deep-cut run in float "
                        "and all their weights train; sized and checked against the budget")
    g.add_argument("--deep-lr", type=positive_float,
                   help="--deep / --train sparse: the backbone's SGD learning rate (default: a tenth of --lr)")
    g.add_argument("--deep-cut", metavar="TENSOR",
                   help="--deep: where the trained backbone starts (default: the input of the last layer with "
                        "weights before the classifier)")
    g.add_argument("--test-count", type=int_range(1, MAX_SAMPLES),
                   help=f"calibration samples embedded as demo/self-test vectors (default {DemoConfig.test_count})")
    g.add_argument("--selftest", action="store_true", default=None,
                   help="arduino: build the self-test mode (TINYCC_SELFTEST=1)")
    g.add_argument("--inference-only", action="store_true",
                   help="deploy the whole model in int8 for inference: no trainable classifier, no buffer, no "
                        "training state (float input and output unless --int8-io)")
    g.add_argument("--int8-io", action="store_true",
                   help="with --inference-only: int8 input and output (as TFLite's converter with int8 I/O)")
    g = p.add_argument_group("compiler")
    g.add_argument("--force", action="store_true",
                   help="replace an output folder that tinycc wrote before (it holds a .tinycc-project marker)")
    g.add_argument("--dump-after", action="append", default=[], metavar="PASS", help="dump the IR after PASS")
    g.add_argument("--no-verify-each", action="store_true", help="verify the IR only between stages")
    g.add_argument("--time-passes", action="store_true", help="print the wall time of every pass and phase")
    g.add_argument("--passes", type=parse_passes, metavar="+NAME,-NAME",
                   help="add (+) a registered pass to its compile stage, or drop (-) one, for this run "
                        "(`tinycc passes` lists the stages)")
    g.add_argument("--kernels", choices=KERNELS,
                   help="c/arduino int8 kernels: tinycc = per-layer C specialized at compile time (default), "
                        "generic = the runtime's generic loops, cmsis-nn = calls to Arm's CMSIS-NN library for "
                        "conv, depthwise, dense, pooling, add, mul (the project builds against CMSIS_NN_DIR), "
                        "tinycc's kernels for the rest")
    g.add_argument("--report", action="store_true", default=None,
                   help="also write report.html into the project: the memory plan, per-layer cost, RAM and flash "
                        "against the budget, the layer graph (one self-contained page)")
    g.add_argument("--no-widen", action="store_true",
                   help="c/arduino on Cortex-M4/M7: no int16 copy of the convolution and dense weights in flash "
                        "(slower: the kernels widen the int8 weights as they run; the depthwise kernel on its stack). "
                        "Without it a --flash budget (or the board's) that the copies would exceed drops them")
    g.add_argument("--no-inplace", action="store_true",
                   help="memory planner: give every element-wise op its own output buffer and never let a "
                        "convolution write over its input (default: both, where the backend's kernels allow)")
    if session is not None:
        for e in session.registry.option_groups.values():
            e.obj.add_arguments(p.add_argument_group(e.name))


def compile_parser(session: Any) -> argparse.ArgumentParser:
    """A parser of ``tinycc compile``'s arguments alone (the Python API builds its config through it)."""
    p = argparse.ArgumentParser(prog="tinycc compile", add_help=False)
    p.add_argument("model")
    p.add_argument("--target", "-t", required=True)
    p.add_argument("-o", "--output", required=True)
    add_compile_arguments(p, session)
    return p


@dataclass
class CompileResult:
    output: Path
    files: list[Path]
    deployment: Any
    passes: list[PassRecord] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return f"wrote {len(self.files)} files to {self.output} in {self.seconds:.1f} s\n" + deployment_summary(self.deployment)

    def timing_table(self) -> str:
        """Wall time per pass and phase (passes run once per cut candidate are summed)."""
        rows = summarize(self.passes)
        total = sum(r[3] for r in rows)
        lines = [f"{'pass / phase':<28} {'runs':>4} {'seconds':>9} {'share':>6}"]
        lines += [f"{n:<28} {k:>4} {s:>9.3f} {100 * s / max(self.seconds, 1e-9):>5.1f}%" for n, _, k, s in rows]
        lines.append(f"{'(untimed)':<28} {'':>4} {max(self.seconds - total, 0.0):>9.3f}")
        lines.append(f"{'total':<28} {'':>4} {self.seconds:>9.3f}")
        return "\n".join(lines)


def deployment_summary(d: Any) -> str:
    """The compile's figures (what ``tinycc compile`` prints after its first line, and report.html shows)."""
    mem = d.memory
    lines: list[str] = []
    if d.inference_only:
        io = "int8" if d.int8_io else "float"
        lines.append(f"inference only: the whole model in int8 ({len(d.extractor.ops)} ops), {io} input and "
                     f"output, {d.feature_count} output{'' if d.feature_count == 1 else 's'}")
        return "\n".join(lines + ([mem["report"]] if "report" in mem else []))
    lines += [f"cut at {d.meta.get('cut')!r}: {d.feature_count} int8 features -> {len(d.classifier)} trainable "
              f"Dense layer(s), {_head_text(d)}; replay buffer {d.buffer.capacity} entries "
              f"({d.buffer.policy}, {d.buffer.storage})"]
    deep, state = d.meta.get("deep"), mem.get("deep")
    if deep and state:  # --deep bias: what trains beyond the head and what its learning state costs
        what = "the biases of" if deep["mode"] == "bias" else "the float weights and biases of"
        lines.append(f"--deep {deep['mode']}: cut at {deep['cut']!r} (the buffer stores it), {what} "
                     f"{len(deep['trains'])} layer(s) and the classifier train: {state['trained_parameters']:,} "
                     f"parameters, learning state {state['state_bytes']:,} B of RAM ({state['bytes_per_parameter']} "
                     f"B per trained parameter) + {state['buffer_entry_bytes']:,} B per buffer entry")
    default = d.meta.get("default_buffer")
    if default:  # no --board/--ram/--buffer: say which default was used and what it costs
        lines.append(f"no RAM budget (--board, --ram) or --buffer: the default replay buffer of "
                     f"{default['entries']} entries, {default['bytes']:,} B of RAM; a budget sizes it to fit")
    if "report" in mem:
        lines.append(mem["report"])
    return "\n".join(lines)


def _head_text(d: Any) -> str:
    if d.loss == "mse":
        target = "target = the model input (autoencoder)" if d.target == "input" else "targets given per sample"
        return f"regression head (mse) with {d.num_outputs} output{'' if d.num_outputs == 1 else 's'}, {target}"
    if d.loss == "bce":
        return "binary head (sigmoid + binary cross-entropy, labels 0/1)"
    return f"{d.num_classes} classes"


def compile_model(model: str, target: str, output: str, config: CompileConfig, session: Any, *,
                  calib: np.ndarray | None = None, vectors: TestVectors | None = None) -> CompileResult:
    """Compile ``model`` for ``target`` into ``output``; raise TinyccError on bad input.

    ``calib``: calibration samples as an array (else ``config.quant.calib``); ``vectors``: the demo's vectors."""
    t0 = time.perf_counter()
    with collect_records() as records:
        out, files, deployment = _compile(model, target, output, config, session, calib, vectors)
    return CompileResult(out, files, deployment, records, time.perf_counter() - t0)


def _compile(model: str, target: str, output: str, config: CompileConfig, session: Any,
             calib: np.ndarray | None, vectors: TestVectors | None) -> tuple[Path, list[Path], Any]:
    reg = session.registry
    backend = reg.backend(target)()
    out = Path(output)
    cc = config.compiler
    check_output_dir(out, cc.force)
    if not os.path.exists(model):
        raise TinyccError(f"{model}: no such file")
    kind, plugin = ("inference", "inference") if config.inference_only else ("ondevice", "ondevice")
    build = reg.deployer(kind, plugin)  # a blocked deployment plugin: one line, before any work
    _check_dump_after(cc.dump_after, reg)
    for stage in STAGES:
        resolve(reg, stage, cc.passes)  # unknown --passes names: one line, before any work
    with timed("frontend"):
        graph = reg.frontend_for(model).load(model)
        verify(graph)
        try:
            check_weights(graph)
        except CalibrationDataError as e:
            raise TinyccError(str(e)) from None
    ctx = PassContext(session=session, config=config, calib=calib, progress=True)
    run_stages(graph, reg, FRONT_STAGES, ctx, verify_each=cc.verify_each, dump_after=cc.dump_after,
               dump_dir=out.parent)
    with timed("cut, classifier, budget"):
        if config.learning is not None and config.learning.train == "sparse":  # the subset chosen, then emitted
            from .deploy.sparse import build_sparse_deployment

            deployment, choice = build_sparse_deployment(graph, config, session, backend, calib, head=build)
            print(choice.describe(), flush=True)
        elif config.learning is not None and config.learning.deep:  # beyond the head: on the head deployment
            deployment = build_deep_deployment(graph, config, session, backend, calib, head=build)
        else:
            deployment = build(graph, config, session, backend, calib=calib)
        backend.check(deployment)
    tmp = new_project_dir(out)
    try:
        with timed(f"emit ({target})"):
            files = backend.emit(deployment, tmp, vectors)
            report = {k: v for k, v in deployment.memory.items() if k != "report"}
            (tmp / "tinycc_memory.json").write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
            files = list(files) + [tmp / "tinycc_memory.json"]
            if cc.report:  # inside the project: installed atomically with it
                from .report_html import render

                (tmp / "report.html").write_text(render(deployment, target, deployment_summary(deployment)),
                                                 encoding="utf-8")
                files.append(tmp / "report.html")
        files = [out / Path(f).relative_to(tmp) for f in files]
        install_dir(tmp, out, cc.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, files, deployment


def _check_dump_after(names: Any, reg: Any) -> None:
    """--dump-after names a registered pass (a typo would silently dump nothing)."""
    for name in names:
        if name not in reg.passes:
            raise TinyccError(f"--dump-after: unknown pass {name!r}; registered passes: {', '.join(reg.passes)}")
