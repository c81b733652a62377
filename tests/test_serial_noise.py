"""Issue #29's acceptance run: `tinycc serial`'s host side (Board + stream, the code the command runs) against the
board's own protocol and learner C sources built for the host (ASan/UBSan, tests/proto_bridge_main.c), over a line
that corrupts 1% of the bytes in both directions: a 500-sample stream completes with bit-for-bit the same learned
classifier as over a clean line. (The board runs as a host build of the sketch's C sources, not in simavr.)"""
from __future__ import annotations

import os
import select
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.arduino import ArduinoBackend
from tinycc.ir.simulator import Simulator
from tinycc.plugins.ondevice import build_deployment
from tinycc.plugins.serial_proto import Board
from tinycc.plugins.serial_cmd import stream

from . import arduino_harness

N, FEATURES, CLASSES = 500, 8, 3


def _mlp():
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    return keras.Sequential([keras.Input((FEATURES,)), L.Dense(12, activation="relu", name="f1"),
                             L.Dense(CLASSES, activation="softmax", name="out")], name="mlp")


@pytest.fixture(scope="module")
def board_exe(tmp_path_factory):
    """(deployment, stream x, y, the bridge executable) for a small MLP: 8 float inputs (a 42-byte learn frame),
    3 classes, a 64-entry buffer."""
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.keras_frontend import graph_from_keras_model
    from tinycc.session import Session

    session = Session(autoload=False)
    g = graph_from_keras_model(_mlp())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(29)
    x = rng.normal(0, 1, (N, FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.normal(0, 1, (FEATURES, CLASSES)), axis=1).astype(np.int64)
    dep = build_deployment(g, {"calib_data": x[:200], "board": "mega2560", "lr": 0.05, "buffer": 64}, session,
                           ArduinoBackend())
    out = tmp_path_factory.mktemp("noise")
    ArduinoBackend().emit(dep, {}, out)
    n = dep.name
    exe = arduino_harness.build_host_proto(out, n, out / "bridge", arduino_harness.BRIDGE_MAIN,
                                           ("TCC_PROTO_TIMEOUT_MS=10", f"MODEL_WEIGHTS={n}_classifier_weights",
                                            f"MODEL_BIAS={n}_classifier_bias", f"MODEL_COUNT={n}_buffer_count"))
    return dep, x, y, exe


class NoisyLine:
    """A pyserial-like port onto the board process's pipes that replaces each byte, both ways, with another one
    with probability P (seeded); reads wait at most a 20 ms slice."""

    def __init__(self, exe: Path, p: float, seed: int) -> None:
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.p, self.rng = p, np.random.default_rng(seed)
        self.fd = self.proc.stdout.fileno()
        self.corrupted = 0

    def _noise(self, data: bytes) -> bytes:
        b = np.frombuffer(data, np.uint8).copy()
        hit = self.rng.random(len(b)) < self.p
        b[hit] ^= self.rng.integers(1, 256, int(hit.sum()), dtype=np.uint8)
        self.corrupted += int(hit.sum())
        return b.tobytes()

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(self._noise(data))
        self.proc.stdin.flush()

    def read(self, n: int) -> bytes:
        if not select.select([self.fd], [], [], 0.02)[0]:
            return b""
        return self._noise(os.read(self.fd, n))

    def reset_input_buffer(self) -> None:
        while select.select([self.fd], [], [], 0)[0] and os.read(self.fd, 4096):
            pass

    def close(self) -> str:
        """End of input: the board prints its classifier (hex floats) and buffer count."""
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode()
        assert self.proc.wait(timeout=60) == 0, err[-3000:]
        return err


def _run(exe: Path, x: np.ndarray, y: np.ndarray, out: Path, p: float) -> tuple[list[str], str, Board, NoisyLine]:
    line = NoisyLine(exe, p, seed=2029)
    board = Board(line, timeout=0.1, retries=40, resync_s=0.03)
    try:
        st = board.status()
        assert st.version == 2 and st.classes == CLASSES and st.count == 0
        stream(board, x, y, out, progress=False, plot=False)
        assert board.status().count == 64
    finally:
        dump = line.close()
    return out.with_suffix(".csv").read_text().splitlines(), dump, board, line


def test_noisy_line_learns_the_same_weights_as_a_clean_one(board_exe, tmp_path: Path) -> None:
    """Issue #29 acceptance (host build of the board, see the module docstring): 1% of the bytes corrupted in both
    directions; the 500-sample stream completes, every protocol error is retried, and the board's classifier
    (every weight and bias, exact hex floats) and the CSV (predictions, running accuracy, buffer counts) equal the
    clean run's; the clean run's classifier equals the numpy simulator's to float rounding."""
    dep, x, y, exe = board_exe
    clean_rows, clean_dump, clean_board, _ = _run(exe, x, y, tmp_path / "clean", 0.0)
    assert clean_board.errors.total() == 0
    rows, dump, board, line = _run(exe, x, y, tmp_path / "noisy", 0.01)
    assert line.corrupted > 300 and board.errors.total() > 300, (line.corrupted, board.summary())
    assert len(rows) == N + 1 and rows == clean_rows
    assert dump == clean_dump and dump.strip().endswith("count 64")
    sim = Simulator(dep)
    for i in range(N):
        sim.learn(x[i], int(y[i]))
    values = [float.fromhex(v) for v in clean_dump.splitlines() if not v.startswith(("layer", "count"))]
    ref = np.concatenate([np.concatenate([l.weight.reshape(-1), l.bias]) for l in sim.classifier.layers])
    np.testing.assert_allclose(np.array(values, np.float32), ref, rtol=1e-5, atol=1e-6)
    acc = float(clean_rows[-1].split(",")[3])
    assert acc > 0.5, acc  # it really learned (3 classes: chance is 1/3)


def test_status_reports_capacities_above_16_bits(board_exe, tmp_path: Path) -> None:
    """Issue #29: the status reply carries count and capacity in 32 bits (protocol 1: 16, capacity 453,330 was
    reported as 60,114); a 70,000-entry buffer through the board's own protocol code."""
    dep, x, y, _ = board_exe
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.keras_frontend import graph_from_keras_model
    from tinycc.session import Session

    session = Session(autoload=False)
    g = graph_from_keras_model(_mlp())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    big = build_deployment(g, {"calib_data": x[:200], "buffer": 70_000, "ram": 4 * 1024 ** 2}, session, ArduinoBackend())
    ArduinoBackend().emit(big, {}, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, big.name, tmp_path / "proto_host")
    p = subprocess.run([str(exe)], input=_status_request(), capture_output=True, timeout=60)
    payload = p.stdout[7:-2]
    assert p.stdout[:2] == b"\x5aS" and struct.unpack("<BBII", payload) == (2, CLASSES, 0, 70_000)


def _status_request() -> bytes:
    from tinycc.plugins.serial_proto import frame

    return frame(b"S", b"", 1)
