"""The `arduino` backend: a sketch folder (NAME/NAME.ino + NAME/src/) that predicts and learns on the board.

The model code is the `c` backend's (same templates, same runtime); this backend adds the sketch, the
framed serial protocol (a generated C state machine shared with a host build for testing), PROGMEM
self-test vectors and board presets' budgets. RAM accounting adds the protocol's buffers, the model API's
stack (measured) and a reserve of CORE_RESERVE bytes for the Arduino core's globals and the sketch's frames.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ... import __version__
from ...errors import TinyccError
from ...ir.deployment import Deployment
from .. import names
from ..base import Backend, refuse_deep
from ...backend_api import Candidate, MemoryFigures
from ...config import TestVectors
from ..c import (CBackend, new_env as c_env, c_figures, cmsis_nn, embedded_labels, feature_context, portable_adjust,
                 render_project, test_inputs, test_vectors, write_inference_vectors, write_test_vectors)
from ..c.deep_project import deep_learner, refuse_harvard
from ..c.harvard import harvard_adjust
from ..c.emitter import C_KINDS
from ..demo import DemoRun

hookimpl = pluggy.HookimplMarker("tinycc")
HERE = Path(__file__).parent
# Arduino core globals (HardwareSerial ~160 B on AVR, timers) + the frames outside the model's API: the sketch's
# loop, the protocol's parser and interrupt handlers. The model API's own stack is the report's "stack" line
# (measured, backends/c/stack.py); this reserve was 1024 B when it had to cover that stack too.
CORE_RESERVE = 640


@lru_cache(maxsize=1)
def _env() -> Any:
    """The sketch's templates first, then the C backend's (one environment per process, templates cached)."""
    import jinja2

    env = c_env()
    env.loader = jinja2.FileSystemLoader([str(HERE / "templates"), str(HERE.parent / "c" / "templates")])
    return env


MAX_FRAME = 0xFFFFFFFF  # the serial frame's 32-bit length field; the board refuses any LEN above its model's
# largest request (TCC_PROTO_MAX_PAYLOAD, max_payload below) at once


def max_payload(input_size: int, n_features: int, targets: int = 0) -> int:
    """Largest request payload: input or features + a label byte, or + a float32 target vector (regression).
    ``n_features``: the features' bytes (int16 features of a 16x8 extractor: 2 a value)."""
    return max(4 * input_size, n_features) + (4 * targets if targets else 1)


# serial protocol version (TCC_PROTO_VERSION, the first byte of the status reply; `tinycc serial` checks it)
PROTO_VERSION = 2
# parser state (state, command, SEQ, length and CRC byte counts; running and received CRC; 32-bit length and count;
# the reply callback), the last learn/reset request and its reply (command, SEQ, CRC, reply code, size, 4 bytes)
# and the sketch's time of the last byte received, rounded up for a 32-bit core
PROTO_STATE = 40


def _feature_bytes(deployment: Deployment) -> int:
    """Bytes of one feature vector in a serial request ('F', 'l'): int16 features take 2 a value."""
    return feature_context(deployment)["fsize"] * _features(deployment)


def inference_proto_bytes(in_bytes: int, out_bytes: int) -> int:
    """Static RAM of the inference-only protocol: receive buffer (one input), outputs, state."""
    return ((in_bytes + 3) // 4) * 4 + out_bytes + PROTO_STATE


def proto_bytes(input_size: int, n_features: int, targets: int = 0) -> int:
    """Static RAM of the protocol: receive buffer and state (replies stream the model's own output vector)."""
    rx = ((max_payload(input_size, n_features, targets) + 3) // 4) * 4
    return rx + PROTO_STATE


class ArduinoBackend(Backend):
    name = "arduino"
    description = "Arduino sketch: serial protocol, PROGMEM weights on AVR, self-test mode"
    platforms = ("simavr",)

    @classmethod
    def supported_ops(cls) -> list[tuple[str, str, list[str]]]:
        from ..c.emit16 import INT16_C_KINDS

        return [("extractor ops (the c backend's kernels)", "int8 (the trainable classifier is float32)",
                 sorted(k.value for k in C_KINDS)),
                ("extractor ops (the c backend's kernels)", "int16 activations (TFLite's 16x8)",
                 sorted(k.value for k in INT16_C_KINDS))]

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        name = names.c_identifier(deployment.name)
        path = project / name / "src" / "test_vectors.h"
        if not path.is_file():
            raise TinyccError(f"{project}: not a project of target arduino for model {name!r} "
                              f"(no {name}/src/test_vectors.h)")
        if deployment.inference_only:
            write_inference_vectors(path, deployment, np.asarray(x, np.float32), _env())
            return
        write_test_vectors(path, deployment, x, embedded_labels(deployment, y), env=_env())

    def run_demo(self, project: Path, platform: str, target: Any = None) -> DemoRun:
        from .simavr import run_demo

        return run_demo(project, platform)

    def check(self, deployment: Deployment) -> None:
        if deployment.meta.get("deep"):  # --deep bias: the c backend's deep model.c under the same sketch
            if "deep_front" not in deployment.meta:
                refuse_deep(deployment, "arduino", "the deployment was not sized by the arduino backend")
            refuse_harvard(deployment, deep_learner(deployment), "arduino")
        if cmsis_nn.enabled(deployment.config.kernels):
            raise TinyccError("--kernels cmsis-nn needs an Arm Cortex-M core: use it with --target c")
        inp = deployment.extractor.tensors[deployment.extractor.inputs[0]]
        insize = inp.size
        if deployment.inference_only:
            payload, what = (1 if deployment.int8_io else 4) * insize, "input"
        else:
            payload = max_payload(insize, _feature_bytes(deployment), deployment.target_count)
            what = "float32 input (+ label or target)"
        if payload > MAX_FRAME:
            raise TinyccError(f"the serial protocol's frames carry at most {MAX_FRAME:,} bytes (32-bit length), but "
                              f"this model's {what} needs {payload:,} bytes ({list(inp.shape[1:])}): "
                              "use a smaller input resolution, or the c target (no serial protocol)")
        CBackend().check(deployment)

    def memory_figures(self, candidate: Candidate) -> MemoryFigures:
        """The C backend's figures (the sketch's model.c is the C backend's) plus the serial protocol and an
        allowance for the Arduino core (CORE_RESERVE: not a symbol size, so the state is not exact)."""
        g = candidate.extractor
        insize = g.tensors[g.inputs[0]].size
        if candidate.classifier is None:  # --inference-only
            elem = 1 if candidate.config.int8_io else 4
            state = CORE_RESERVE + inference_proto_bytes(elem * insize, elem * g.tensors[g.outputs[0]].size)
        else:
            clf = candidate.classifier
            fsize = 2 if g.tensors[g.outputs[0]].dtype.value == "int16" else 1  # int16 features: 2 bytes a value
            state = CORE_RESERVE + proto_bytes(insize, fsize * clf.n_in, clf.target_count)
        return c_figures(candidate, state, state_exact=False)

    def adjust_report(self, report: Any, candidate: Candidate, figures: MemoryFigures) -> None:
        portable_adjust(report, candidate)  # the sketch's model.c is the C backend's
        harvard_adjust(report, candidate)

    def deep_figures(self, candidate: Candidate) -> MemoryFigures:
        """--deep bias: the C backend's figures of the int8 front, plus the serial protocol (its learn request
        carries the int8 cut tensor, the front's output) and the Arduino core's allowance (not exact)."""
        g = candidate.extractor
        state = CORE_RESERVE + proto_bytes(g.tensors[g.inputs[0]].size, g.tensors[g.outputs[0]].size)
        return replace(CBackend().deep_figures(candidate), state=state, state_exact=False)

    def overlaps(self, graph: Any, config: Any) -> dict[str, int]:
        return CBackend().overlaps(graph, config)  # the sketch's kernels are the C backend's

    def stack_bytes(self, deployment: Deployment) -> tuple[int, bool, str] | None:
        return CBackend().stack_bytes(deployment)  # the sketch's model.c and runtime are the C backend's

    def emit(self, deployment: Deployment, outdir: Path, vectors: TestVectors | None = None) -> list[Path]:
        name = names.c_identifier(deployment.name)  # also the sketch's folder and .ino name
        sk = outdir / name
        src = sk / "src"
        src.mkdir(parents=True, exist_ok=True)
        files = render_project(deployment, src, vectors, with_main=False, runtime_dir=".")
        env = _env()
        board = deployment.board.name if deployment.board is not None else "generic"
        fqbn = deployment.board.fqbn if deployment.board is not None else ""
        insize = deployment.extractor.tensors[deployment.extractor.inputs[0]].size
        n_features = _features(deployment)
        ctx = {"version": __version__, "name": name, "NAME": name.upper(), "board": board, "fqbn": fqbn or "BOARD",
               "input_size": insize, "n_features": n_features, "n_classes": deployment.num_classes,
               "n_outputs": deployment.num_outputs, "targets": deployment.target_count,
               "max_payload": max_payload(insize, _feature_bytes(deployment), deployment.target_count),
               "dep": deployment, **feature_context(deployment),
               "reserve": CORE_RESERVE, "proto_version": PROTO_VERSION,
               "mem_table": deployment.memory.get("report", ""),
               "inference_only": deployment.inference_only, "int8_io": deployment.int8_io,
               "n_out": deployment.feature_count}
        infer = "_infer" if deployment.inference_only else ""  # predict-only sketch and protocol
        if deployment.inference_only:
            ctx["max_payload"] = (1 if deployment.int8_io else 4) * insize
            files.append(write_inference_vectors(src / "test_vectors.h", deployment, test_inputs(deployment, vectors),
                                                 env))
        else:
            x, y = test_vectors(deployment, vectors)
            files.append(write_test_vectors(src / "test_vectors.h", deployment, x, y,
                                            vectors.learn if vectors else None, env))
        out = {sk / f"{name}.ino": env.get_template(f"sketch{infer}.ino.j2").render(**ctx),
               src / "tinycc_proto.h": env.get_template(f"tinycc_proto{infer}.h.j2").render(**ctx),
               src / "tinycc_proto.c": env.get_template("tinycc_proto.c.j2").render(**ctx),
               src / "tinycc_build.h": "/* build switches (generated by tinycc) */\n#ifndef TINYCC_SELFTEST\n"
                                       f"#define TINYCC_SELFTEST {1 if deployment.config.demo.selftest else 0}\n#endif\n",
               sk / "extras" / "host_main.c": env.get_template("host_main.c.j2").render(**ctx),
               sk / "README.md": env.get_template(f"README{infer}.md.j2").render(**ctx)}
        for path, text in out.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files.append(path)
        from .library import write_library

        files += write_library(sk, name, outdir, deployment.inference_only)  # the same code as a library
        return files


def _features(deployment: Deployment) -> int:
    """What the protocol's learn-from-features request carries: the int8 features, or (--deep bias) the int8
    tensor at the deep cut (the front's output, what the replay buffer stores)."""
    front = deployment.meta.get("deep_front")
    if front is not None:
        g = front["graph"]
        return int(g.tensors[g.outputs[0]].size)
    return deployment.feature_count


@hookimpl
def tinycc_register_backends(registry: Any) -> None:
    registry.add_backend(ArduinoBackend)
