"""Keep the CLI's stderr to tinycc's own words.

TensorFlow prints from C++ (absl: ``WARNING: All log messages before absl::InitializeLog() ...`` and, where
oneDNN is on, ``I0000 ... port.cc:153] oneDNN custom operations are on ...``) straight to file descriptor 2,
whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and again whenever another copy of its runtime is loaded. Python
libraries add warnings and logger lines (Keras retracing, absl). :func:`silence_libraries` is called once by
``tinycc.cli.main`` before anything is imported: descriptor 2 goes to ``os.devnull`` for the whole process
(native code and child processes that inherit it), ``sys.stderr`` is re-opened on a duplicate of the
original descriptor so tinycc's own messages, argparse errors and progress bars still reach the user, and
library loggers and warnings are muted. ``-v`` or ``--debug`` skip it (library logs are then shown).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

LIBRARY_LOGGERS = ("tensorflow", "absl", "keras", "h5py", "matplotlib", "jax", "PIL")


def silence_libraries() -> None:
    """Send native stderr to the null device and mute library loggers/warnings (idempotent)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if getattr(sys.stderr, "_tinycc_own", False):
        return
    try:
        sys.stderr.flush()
        own = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    except (OSError, AttributeError, ValueError):  # no real descriptor 2 (embedded interpreters, some IDEs)
        return
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    stream = os.fdopen(own, "w", buffering=1, encoding=encoding, errors="backslashreplace")
    stream._tinycc_own = True  # type: ignore[attr-defined]
    sys.stderr = stream
