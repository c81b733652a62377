"""Measure the TFLite Micro arena a model needs with the tflite-micro Python interpreter.

The interpreter's RecordingMicroAllocator prints its totals from C++ to the process's stderr,
so the measurement runs in a subprocess and reads that stream (file-descriptor level).
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

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")

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

    @property
    def arena(self) -> int:
        """Arena bytes to declare: recorded + margin, rounded up to 16."""
        return -(-(self.recorded + self.margin) // 16) * 16


def margin_for(recorded: int) -> int:
    return ALIGNMENT_MARGIN + int(recorded * RELATIVE_MARGIN)


def measure_arena(tflite: bytes, probe_arena: int = 8 * 1024 * 1024) -> ArenaMeasurement:
    """Run the model's allocation in tflite-micro and parse the recorded arena totals."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.tflite"
        path.write_bytes(tflite)
        r = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(probe_arena)],
                           capture_output=True, text=True, timeout=300)
    text = r.stdout + r.stderr
    m = _TOTAL.search(text)
    if r.returncode != 0 or m is None:
        last = (text.strip().splitlines() or ["no output"])[-1]
        raise TinyccError(f"TFLite Micro could not allocate the feature extractor: {last}")
    head = int(_HEAD.search(text).group(1)) if _HEAD.search(text) else 0
    tail = int(_TAIL.search(text).group(1)) if _TAIL.search(text) else 0
    recorded = int(m.group(1))
    return ArenaMeasurement(recorded, head, tail, margin_for(recorded))
