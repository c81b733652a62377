"""Measure the TFLite Micro arena a model needs with the tflite-micro Python interpreter.

The interpreter's RecordingMicroAllocator prints its totals from C++ to the process's stderr,
so the measurement runs in a subprocess and reads that stream (file-descriptor level).
The recorded total is what the model holds after allocation; TFLite Micro's memory planner also
needs temporary space while it plans (more tensors, more scratch), which can exceed the total.
The child therefore also finds the smallest arena AllocateTensors accepts (bisection) and the
declared arena covers the larger of the two plus the margin.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import TinyccError

_CHILD = r"""
import sys
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
it.print_allocations()
"""

_CHILD_MIN = r"""
import sys
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()


def allocates(n):
    print(f"probe {n}", file=sys.stderr, flush=True)  # a probe that aborts the process is known to the parent
    try:
        runtime.Interpreter.from_bytes(data, arena_size=n)
        ok = True
    except RuntimeError:
        ok = False
    print(f"{'fits' if ok else 'fails'} {n}", file=sys.stderr, flush=True)
    return ok


hi, lo = int(sys.argv[2]), int(sys.argv[3])  # hi allocates; lo is the recorded total (checked) or known to fail
if sys.argv[4] == "1" and allocates(lo):  # the recorded total allocates: it is what the model needs
    hi = lo
while hi - lo > 1:  # planning needed more than the total: bisect, lo fails and hi allocates
    mid = (lo + hi) // 2
    if allocates(mid):
        hi = mid
    else:
        lo = mid
print(f"Smallest working arena {hi} bytes", file=sys.stderr, flush=True)
"""

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")
_MIN = re.compile(r"Smallest working arena (\d+) bytes")
_PROBE = re.compile(r"^(probe|fits|fails) (\d+)$", re.M)

# Documented margin added to the recorded total: TFLite Micro aligns the arena start to 16 bytes
# inside the buffer it is given (up to 15 bytes lost) and the target's kernels (e.g. CMSIS-NN
# scratch buffers) may request more than the reference kernels the Python interpreter uses.
ALIGNMENT_MARGIN = 16
RELATIVE_MARGIN = 0.05


@dataclass
class ArenaMeasurement:
    recorded: int
    head: int
    tail: int
    margin: int
    minimum: int = 0  # the smallest arena AllocateTensors accepted in the Python interpreter

    @property
    def needed(self) -> int:
        return max(self.recorded, self.minimum)

    @property
    def arena(self) -> int:
        """Arena bytes to declare: max(recorded, smallest working) + margin, rounded up to 16."""
        return -(-(self.needed + self.margin) // 16) * 16


def margin_for(recorded: int) -> int:
    return ALIGNMENT_MARGIN + int(recorded * RELATIVE_MARGIN)


def _last(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


INSTALL_HINT = ("--target tflm measures the TFLite Micro arena with the tflite-micro package, which is not "
                "installed: pip install tflite-micro (wheels for Linux x86-64)")


def check_available() -> None:
    """One line naming the package to install when TFLite Micro's Python interpreter is missing."""
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        raise TinyccError(INSTALL_HINT)


def _child(code: str, *args: object, check: bool = True, what: str = "the model") -> str:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)
    text = r.stdout + r.stderr
    if r.returncode != 0 and check:
        if "No module named 'tflite_micro" in text:
            raise TinyccError(INSTALL_HINT)
        raise TinyccError(f"TFLite Micro could not allocate {what}: {_last(text)}")
    return text


def smallest_arena(path: Path, probe_arena: int, recorded: int, restarts: int = 20) -> int:
    """The smallest arena AllocateTensors accepts, by bisection between ``recorded`` and ``probe_arena``.
    TFLite Micro aborts the process on some arena sizes just below what a model needs (seen on the MLPerf Tiny
    autoencoder: "All temp buffers must be freed before calling ResetTempAllocations()"); such a size counts
    as one that does not work, and the bisection goes on in a new process from the bounds known so far."""
    lo, hi, check_lo = recorded, probe_arena, "1"
    for _ in range(restarts):
        text = _child(_CHILD_MIN, path, hi, lo, check_lo, check=False)
        found = _MIN.search(text)
        if found is not None:
            return int(found.group(1))
        done = {}
        last = None
        for word, n in _PROBE.findall(text):
            if word == "probe":
                last = int(n)
            else:
                done[int(n)] = word == "fits"
        if last is None or last in done:
            raise TinyccError(f"TFLite Micro could not allocate the model: {_last(text)}")
        done[last] = False  # the size that aborted the process does not work
        hi = min([hi] + [n for n, ok in done.items() if ok])
        lo = max([lo] + [n for n, ok in done.items() if not ok])
        check_lo = "0"
        if hi - lo <= 1:
            return hi
    raise TinyccError("TFLite Micro: no smallest working arena found")


def measure_arena(tflite: bytes, probe_arena: int = 8 * 1024 * 1024, what: str = "the model") -> ArenaMeasurement:
    """Run the model's allocation in tflite-micro and parse the recorded arena totals (``what``: the model's
    part, named in errors)."""
    check_available()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.tflite"
        path.write_bytes(tflite)
        text = _child(_CHILD, path, probe_arena, what=what)
        m = _TOTAL.search(text)
        if m is None:
            raise TinyccError(f"TFLite Micro printed no arena total: {_last(text)}")
        recorded = int(m.group(1))
        minimum = smallest_arena(path, probe_arena, recorded)
    head = int(_HEAD.search(text).group(1)) if _HEAD.search(text) else 0
    tail = int(_TAIL.search(text).group(1)) if _TAIL.search(text) else 0
    return ArenaMeasurement(recorded, head, tail, margin_for(max(recorded, minimum)), minimum)
