"""Issue #29's acceptance run: `tinycc serial`'s host side (Board + stream, the code the command runs) over a line that
corrupts 1% of the bytes in both directions completes a 500-sample stream with bit-for-bit the same learned
classifier as over a clean line. Two boards: the generated sketch built with arduino-builder for the ATmega2560 and
run in simavr, its UART0 bridged to pipes by tests/simavr_uart_bridge.c (libsimavr; the classifier read from the
simulated RAM at the end), and the sketch's C sources built for the host (ASan/UBSan, tests/proto_bridge_main.c)."""
from __future__ import annotations

import os
import re
import select
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.arduino import ArduinoBackend
from tinycc.ir.simulator import Simulator
from .deploy_util import build_deployment
from tinycc.plugins.applications.serial_proto import Board
from tinycc.plugins.applications.serial_cmd import stream

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
    from tinycc.plugins.frontends.keras import graph_from_keras_model
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
    ArduinoBackend().emit(dep, out)
    n = dep.name
    exe = arduino_harness.build_host_proto(out, n, out / "bridge", arduino_harness.BRIDGE_MAIN,
                                           ("TCC_PROTO_TIMEOUT_MS=10", f"MODEL_WEIGHTS={n}_classifier_weights",
                                            f"MODEL_BIAS={n}_classifier_bias", f"MODEL_COUNT={n}_buffer_count"))
    return dep, x, y, exe


class NoisyLine:
    """A pyserial-like port onto the board process's pipes that replaces each byte, both ways, with another one
    with probability P (seeded); reads wait at most a 20 ms slice."""

    def __init__(self, argv: list[str], p: float, seed: int) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


def _run(argv: list[str], x: np.ndarray, y: np.ndarray, out: Path, p: float, timeout: float,
         capacity: int) -> tuple[list[str], str, Board, NoisyLine]:
    line = NoisyLine(argv, p, seed=2029)
    board = Board(line, timeout=timeout, retries=40, resync_s=0.05)
    try:
        st = board.status()
        assert st.version == 2 and st.classes == CLASSES and st.count == 0
        stream(board, x, y, out, progress=False, plot=False)
        assert board.status().count == capacity
    finally:
        dump = line.close()
    return out.with_suffix(".csv").read_text().splitlines(), dump, board, line


def _same_on_a_noisy_line(argv: list[str], x, y, tmp_path: Path, timeout: float, capacity: int) -> str:
    """Clean run, then the 1% noisy run: same CSV, same board dump; returns the dump."""
    clean_rows, clean_dump, clean_board, _ = _run(argv, x, y, tmp_path / "clean", 0.0, timeout, capacity)
    assert clean_board.errors.total() == 0, clean_board.summary()
    rows, dump, board, line = _run(argv, x, y, tmp_path / "noisy", 0.01, timeout, capacity)
    assert line.corrupted > 300 and board.errors.total() > 300, (line.corrupted, board.summary())
    assert len(rows) == N + 1 and rows == clean_rows
    assert dump == clean_dump
    acc = float(clean_rows[-1].split(",")[3])
    assert acc > 0.5, acc  # it really learned (3 classes: chance is 1/3)
    return dump


def _simulated(dep, x, y) -> np.ndarray:
    sim = Simulator(dep)
    for i in range(N):
        sim.learn(x[i], int(y[i]))
    return np.concatenate([np.concatenate([l.weight.reshape(-1), l.bias]) for l in sim.classifier.layers])


def test_noisy_line_learns_the_same_weights_as_a_clean_one(board_exe, tmp_path: Path) -> None:
    """Host build of the board (see the module docstring): 1% of the bytes corrupted in both directions; the
    500-sample stream completes, every protocol error is retried, and the board's classifier (every weight and bias,
    exact hex floats) and the CSV (predictions, running accuracy, buffer counts) equal the clean run's; the
    classifier equals the numpy simulator's to float rounding."""
    dep, x, y, exe = board_exe
    dump = _same_on_a_noisy_line([str(exe)], x, y, tmp_path, 0.1, 64)
    assert dump.strip().endswith("count 64")
    values = [float.fromhex(v) for v in dump.splitlines() if not v.startswith(("layer", "count"))]
    np.testing.assert_allclose(np.array(values, np.float32), _simulated(dep, x, y), rtol=1e-5, atol=1e-6)


SIMAVR_OK = arduino_harness.available() and Path("/usr/include/simavr/sim_avr.h").exists() and shutil.which("avr-nm")


@pytest.mark.skipif(not SIMAVR_OK, reason="needs arduino-builder, avr-gcc, simavr, libsimavr-dev (.ci/run has them)")
def test_noisy_line_to_the_sketch_in_simavr(board_exe, tmp_path: Path) -> None:
    """The acceptance run against the simulated board: the generated sketch (ATmega2560, 16 MHz, serial at 115200
    baud, a 4-entry buffer and the last layer trained so 500 learn calls take seconds in simavr) behind a line that
    corrupts 1% of the bytes both ways: the same CSV and the same classifier bytes in the AVR's RAM as the clean
    run; the classifier is the numpy simulator's to float rounding (avr-libc's expf is not glibc's)."""
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.frontends.keras import graph_from_keras_model
    from tinycc.session import Session

    _, x, y, _ = board_exe
    session = Session(autoload=False)
    g = graph_from_keras_model(_mlp())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    dep = build_deployment(g, {"calib_data": x[:200], "board": "mega2560", "lr": 0.05, "buffer": 4, "train": "last"},
                           session, ArduinoBackend())
    ArduinoBackend().emit(dep, tmp_path)
    elf, _, _ = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path,
                                      defines=("TCC_PROTO_TIMEOUT_MS=20",))  # resync_s 0.05 > 20 ms of silence
    bridge = tmp_path / "simavr_uart_bridge"
    r = subprocess.run(["gcc", "-std=gnu99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(bridge),
                        str(Path(__file__).with_name("simavr_uart_bridge.c")), "-lsimavr"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    syms = {}  # the classifier's RAM arrays, data-space address and size (avr-nm -S: RAM at 0x800000)
    nm = subprocess.run(["avr-nm", "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    for ln in nm.splitlines():
        m = re.fullmatch(r"([0-9a-f]{8}) ([0-9a-f]{8}) [bBdD] tcc_classifier_(\d+)_(weights|bias)(?:\.\S*)?",
                         ln.strip())
        if m:
            syms[(int(m.group(3)), m.group(4))] = (int(m.group(1), 16) - 0x800000, int(m.group(2), 16))
    order = sorted(syms, key=lambda k: (k[0], k[1] != "weights"))  # layer by layer: weights, then bias
    assert len(order) == 2 * len(dep.classifier), syms
    argv = [str(bridge), "atmega2560", "16000000", str(elf)] + [f"{syms[k][0]:x}:{syms[k][1]}" for k in order]
    dump = _same_on_a_noisy_line(argv, x, y, tmp_path, 0.25, 4)
    values = np.concatenate([np.frombuffer(bytes.fromhex(h), "<f4") for h in dump.split()])
    np.testing.assert_allclose(values, _simulated(dep, x, y), rtol=1e-4, atol=1e-5)


def test_status_reports_capacities_above_16_bits(board_exe, tmp_path: Path) -> None:
    """Issue #29: the status reply carries count and capacity in 32 bits (protocol 1: 16, capacity 453,330 was
    reported as 60,114); a 70,000-entry buffer through the board's own protocol code."""
    dep, x, y, _ = board_exe
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.frontends.keras import graph_from_keras_model
    from tinycc.session import Session

    session = Session(autoload=False)
    g = graph_from_keras_model(_mlp())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    big = build_deployment(g, {"calib_data": x[:200], "buffer": 70_000, "ram": 4 * 1024 ** 2}, session,
                           ArduinoBackend())
    ArduinoBackend().emit(big, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, big.name, tmp_path / "proto_host")
    p = subprocess.run([str(exe)], input=_status_request(), capture_output=True, timeout=60)
    payload = p.stdout[7:-2]
    assert p.stdout[:2] == b"\x5aS" and struct.unpack("<BBII", payload) == (2, CLASSES, 0, 70_000)


def _status_request() -> bytes:
    from tinycc.plugins.applications.serial_proto import frame

    return frame(b"S", b"", 1)
