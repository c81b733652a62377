"""`tinycc serial`: stream labelled samples to a board running the tinycc sketch and plot accuracy.

For each sample of the stream: predict (the board answers with its class), then learn (the board
pushes the sample into its replay buffer and retrains). The running accuracy of the predictions made
before each learn call is written as CSV and plotted (prequential evaluation).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ...errors import TinyccError
from ...report import png_bytes
from ...output import write_atomic
from . import serial_proto
from .serial_proto import Board, BoardLost, frame

hookimpl = pluggy.HookimplMarker("tinycc")
__all__ = ["Board", "BoardLost", "frame", "load_stream", "stream"]
READ_SLICE_S = 0.05  # the port's read timeout: each try's own deadline (--timeout) is checked between reads


def _plot(acc: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(acc) + 1), acc)
    ax.set_xlabel("supervised samples")
    ax.set_ylabel("running accuracy (predict before learn)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    write_atomic(path, png_bytes(fig))


def _write(rows: list[list[Any]], acc: list[float], out: Path, plot: bool) -> None:
    """OUT.csv (and OUT.png), each written atomically."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["sample", "label", "predicted", "running_accuracy", "buffer"])
    w.writerows(rows)
    write_atomic(out.with_suffix(".csv"), text.getvalue().encode())
    if plot and acc:
        _plot(acc, out.with_suffix(".png"))


def stream(board: Board, x: np.ndarray, y: np.ndarray, out: Path, progress: bool = True,
           plot: bool = True) -> list[float]:
    """Prequential run; writes OUT.csv and OUT.png; returns the running accuracy. A learn step the board refused
    (error 8) is a row with buffer "refused". When the board is lost (BoardLost), refuses a request or the run is
    interrupted, the samples done so far are written out first, then the error goes on (naming the files)."""
    acc: list[float] = []
    rows: list[list[Any]] = []
    correct = 0
    it: Any = range(len(x))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="stream", unit="sample", disable=None)  # drawn only on a terminal
    try:
        for i in it:
            k = board.predict(x[i])
            n = board.learn(x[i], int(y[i]))
            correct += int(k == int(y[i]))
            acc.append(correct / (i + 1))
            rows.append([i, int(y[i]), k, f"{acc[-1]:.6f}", "refused" if n is None else n])
    except TinyccError as e:  # BoardLost (exit 3), or a request the board refused (exit 2)
        _write(rows, acc, out, plot)
        raise type(e)(f"{e}; stopped after {len(rows)} of {len(x)} samples, wrote {out.with_suffix('.csv')}"
                      f"{' and .png' if plot and acc else ''}; {board.summary()}") from None
    except KeyboardInterrupt:
        _write(rows, acc, out, plot)
        raise
    _write(rows, acc, out, plot)
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
        port = serial.Serial(args.port, args.baud, timeout=min(READ_SLICE_S, args.timeout),
                             write_timeout=args.timeout)
    except (serial.SerialException, OSError, ValueError, OverflowError) as e:
        raise TinyccError(f"cannot open {args.port}: {e}") from None
    with port as line:
        board = Board(line, timeout=args.timeout, retries=args.retries)
        try:
            st = board.connect(serial_proto.CONNECT_S)
        except BoardLost as e:
            raise BoardLost(f"no answer from {args.port} within {serial_proto.CONNECT_S:g} s ({e}): is the tinycc "
                            f"sketch (serial protocol {serial_proto.PROTO_VERSION}) running there at {args.baud} "
                            "baud?") from None
        if st.classes == 0:
            raise TinyccError("the board runs a regression head (float targets, no classes): `tinycc serial` streams "
                              "labelled samples for classifier heads; send 'L' frames with input + target instead "
                              "(src/tinycc_proto.h)")
        if int(y.max()) >= st.classes:
            raise TinyccError(f"{args.data}: label {int(y.max())} is beyond the board's {st.classes} classes "
                              f"(0..{st.classes - 1})")
        n = len(x)
        acc = stream(board, x, y, Path(args.out))
        end = board.status()
    print(f"board: buffer {end.count}/{end.capacity}, {end.classes} classes; final running accuracy {acc[-1]:.3f} "
          f"over {n} samples; {board.summary()}; wrote {Path(args.out).with_suffix('.csv')} and .png")
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    from ...options import baud_rate, serial_retries, serial_timeout

    p = subparsers.add_parser("serial", help="stream labelled samples to a board and plot accuracy (pyserial)")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0")
    p.add_argument("--data", required=True, help=".npz stream with x/y (or x_test/y_test)")
    p.add_argument("--baud", type=baud_rate, default=115200, help="baud rate (1..12,000,000; default 115200)")
    p.add_argument("--timeout", type=serial_timeout, default=10.0,
                   help="seconds for one try of a request, reply included (default 10)")
    p.add_argument("--retries", type=serial_retries, default=5,
                   help="further tries of a request after a protocol error (default 5); then exit 3")
    p.add_argument("--limit", type=int, help="stream at most N samples")
    p.add_argument("-o", "--out", default="serial_stream", help="output prefix for .csv and .png")
    p.set_defaults(func=_cmd)
