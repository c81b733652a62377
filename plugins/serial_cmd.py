"""`tinycc serial`: stream labelled samples to a board running the tinycc sketch and plot accuracy.

For each sample of the stream: predict (the board answers with its class), then learn (the board
pushes the sample into its replay buffer and retrains). The running accuracy of the predictions made
before each learn call is written as CSV and plotted (prequential evaluation).
"""
from __future__ import annotations

import csv
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ..errors import TinyccError
from ..report import png_bytes
from ..output import write_atomic

hookimpl = pluggy.HookimplMarker("tinycc")
ERRORS = {1: "bad checksum", 2: "unknown command", 3: "bad length", 4: "label out of range",
          5: "payload longer than the model's largest request", 6: "NaN or infinity in the input or target",
          7: "this build is inference-only",
          8: "update refused: it would make a classifier weight non-finite (nothing changed)"}
MAX_LEN = 0xFFFFFFFF  # the 32-bit LEN field
MAX_REPLY = 1 << 24  # no tinycc board answers with more: a longer LEN is a corrupt reply


def frame(cmd: bytes, payload: bytes = b"") -> bytes:
    """A request frame: 0xA5 CMD LEN(uint32 LE) PAYLOAD CHK, CHK = (CMD + LEN bytes + payload) mod 256."""
    if len(payload) > MAX_LEN:
        raise TinyccError(f"a serial frame carries at most {MAX_LEN:,} bytes, not {len(payload):,}")
    body = cmd + struct.pack("<I", len(payload)) + payload
    return b"\xa5" + body + bytes([sum(body) % 256])


class Board:
    """The host side of the protocol over any object with read(n)/write(b) (a pyserial port)."""

    def __init__(self, port: Any) -> None:
        self.port = port

    def _read(self, n: int) -> bytes:
        data = self.port.read(n)
        if len(data) != n:
            raise TinyccError("no reply from the board (timeout): is the tinycc sketch running at this baud rate?")
        return data

    def ask(self, cmd: bytes, payload: bytes = b"") -> bytes:
        request = frame(cmd, payload)
        if hasattr(self.port, "reset_input_buffer"):
            self.port.reset_input_buffer()  # stale bytes (a board reset, line noise) are no reply to this request
        self.port.write(request)
        while self._read(1) != b"\x5a":
            pass
        head = self._read(5)
        c, n = head[:1], struct.unpack("<I", head[1:])[0]
        if n > MAX_REPLY:
            raise TinyccError(f"corrupt reply from the board (length {n:,})")
        data = self._read(n)
        chk = self._read(1)[0]
        if chk != (sum(head) + sum(data)) % 256:
            raise TinyccError("corrupt reply from the board (checksum)")
        if c == b"E":
            raise TinyccError(f"board refused {cmd.decode()}: {ERRORS.get(data[0], data[0])}")
        return data

    def status(self) -> tuple[int, int, int]:
        return struct.unpack("<HHB", self.ask(b"S"))

    def predict(self, x: np.ndarray) -> int:
        return self.ask(b"P", np.asarray(x, "<f4").tobytes())[0]

    def learn(self, x: np.ndarray, label: int) -> int:
        return struct.unpack("<H", self.ask(b"L", np.asarray(x, "<f4").tobytes() + bytes([int(label)])))[0]


def stream(board: Board, x: np.ndarray, y: np.ndarray, out: Path, progress: bool = True) -> list[float]:
    """Prequential run; writes OUT.csv and OUT.png; returns the running accuracy."""
    acc, correct = [], 0
    it = range(len(x))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="stream", unit="sample")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "label", "predicted", "running_accuracy", "buffer"])
        for i in it:
            k = board.predict(x[i])
            correct += int(k == int(y[i]))
            n = board.learn(x[i], int(y[i]))
            acc.append(correct / (i + 1))
            w.writerow([i, int(y[i]), k, f"{acc[-1]:.6f}", n])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(acc) + 1), acc)
    ax.set_xlabel("supervised samples")
    ax.set_ylabel("running accuracy (predict before learn)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    write_atomic(out.with_suffix(".png"), png_bytes(fig))
    return acc


def load_stream(path: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first LIMIT samples of a labelled stream (.npz x/y or x_test/y_test), checked: float32 samples and
    integer class labels 0..255, one per sample; any problem is one TinyccError line."""
    if limit is not None and limit < 1:
        raise TinyccError(f"--limit must be at least 1, not {limit}")
    try:
        with np.load(path, allow_pickle=False) as z:
            x = z["x"] if "x" in z.files else z["x_test"]
            y = z["y"] if "y" in z.files else z["y_test"]
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise TinyccError(f"{path}: cannot read a stream (.npz with x/y or x_test/y_test): {e}") from None
    if x.ndim < 1 or len(x) == 0:
        raise TinyccError(f"{path}: the stream is empty (no samples)")
    if y.ndim != 1 or len(y) != len(x):
        raise TinyccError(f"{path}: {len(x)} samples but labels of shape {list(y.shape)}: one class index per sample")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise TinyccError(f"{path}: samples and labels must be numbers (x is {x.dtype}, y is {y.dtype})")
    n = len(x) if limit is None else min(limit, len(x))
    x, y = x[:n].astype(np.float32), y[:n]
    if not np.isfinite(x).all():
        raise TinyccError(f"{path}: NaN or infinity in the samples")
    ok = np.isfinite(y) & (y >= 0) & (y <= 255) & (np.floor(y) == y) if y.dtype.kind == "f" else (y >= 0) & (y <= 255)
    if not ok.all():
        raise TinyccError(f"{path}: label {y[~ok][0]} of sample {int(np.argmin(ok))} is not a class index "
                          "(an integer 0..255)")
    return x, y.astype(np.int64)


def _cmd(args: Any, session: Any) -> int:
    x, y = load_stream(args.data, args.limit)
    try:
        import serial
    except ImportError:
        raise TinyccError("tinycc serial needs pyserial: pip install pyserial") from None
    try:
        port = serial.Serial(args.port, args.baud, timeout=args.timeout)
    except (serial.SerialException, OSError) as e:
        raise TinyccError(f"cannot open {args.port}: {e}") from None
    with port:
        board = Board(port)
        count, cap, classes = board.status()
        if classes == 0:
            raise TinyccError("the board runs a regression head (float targets, no classes): `tinycc serial` streams "
                              "labelled samples for classifier heads; send 'L' frames with input + target instead "
                              "(src/tinycc_proto.h)")
        if int(y.max()) >= classes:
            raise TinyccError(f"{args.data}: label {int(y.max())} is beyond the board's {classes} classes "
                              f"(0..{classes - 1})")
        n = len(x)
        acc = stream(board, x, y, Path(args.out))
    print(f"board: buffer {count}/{cap}, {classes} classes; final running accuracy {acc[-1]:.3f} "
          f"over {n} samples; wrote {Path(args.out).with_suffix('.csv')} and .png")
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("serial", help="stream labelled samples to a board and plot accuracy (pyserial)")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0")
    p.add_argument("--data", required=True, help=".npz stream with x/y (or x_test/y_test)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--limit", type=int, help="stream at most N samples")
    p.add_argument("-o", "--out", default="serial_stream", help="output prefix for .csv and .png")
    p.set_defaults(func=_cmd)
