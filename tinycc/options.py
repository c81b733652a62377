"""Validation of every numeric command-line option, in one place.

Each function here is an argparse ``type=``: it turns the option's text into a value or raises
:class:`OptionError`, which argparse reports as ``tinycc CMD: error: argument --lr: ...`` with exit 2.
Called directly (from the Python API or a plugin), the same error is a :class:`TinyccError` (exit 2).
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable

from .errors import TinyccError

MAX_BYTES = 4 * 1024 ** 3  # --ram / --flash: no microcontroller has more than 4 GiB of address space
MAX_COUNT = 10 ** 12  # prune --budget params=/macs=/...: far above any MCU model
MAX_INT = 2 ** 31 - 1  # counts that end up in the generated C as int
MAX_EPOCHS = 1000  # epochs over the buffer per learned sample (device, simulator) or per trial (search)
MAX_RUNS = 1000  # simulate --runs
MAX_SAMPLES = 10 ** 7  # sample counts (stream, test set, search subset, validate -n ...)
MAX_BATCH = 4096  # on-device minibatch (its staging arrays are batch x the widest layer)
MAX_BUFFER = 10 ** 6  # simulator replay buffer entries (compile's buffer is bounded by the RAM budget)
MAX_TRIALS = 100_000  # search --trials
MAX_WORKERS = 1024  # search --workers on a cluster (a local Ray: 4 per CPU, see plugins/applications/search/runner.py)


class OptionError(TinyccError, argparse.ArgumentTypeError):
    """A bad option value: argparse prefixes the option's name; elsewhere it is a TinyccError (exit 2)."""


def _int(text: object) -> int:
    s = str(text).strip()
    if len(s) > 40:  # int() of a very long digit string is slow (and refused by Python above 4300 digits)
        raise OptionError(f"expected an integer, got {s[:20]!r}... ({len(s)} characters)")
    try:
        return int(s)
    except ValueError:
        raise OptionError(f"expected an integer, got {text!r}") from None


def _float(text: object) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise OptionError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise OptionError(f"expected a finite number, got {text!r}")
    return v


def int_range(lo: int, hi: int = MAX_INT) -> Callable[[object], int]:
    """An integer in [lo, hi]."""

    def parse(text: object) -> int:
        v = _int(text)
        if v < lo:
            raise OptionError(f"must be an integer >= {lo}, got {text!r}" if hi == MAX_INT else
                              f"must be an integer in {lo}..{hi}, got {text!r}")
        if v > hi:
            raise OptionError(f"must be an integer in {lo}..{hi}, got {text!r}")
        return v

    parse.__name__ = "integer"
    parse.bounds = (lo, hi)  # type: ignore[attr-defined]  # read by the CLI option fuzzer
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)


def positive_float(text: object) -> float:
    """A finite number > 0 (learning rates, scales)."""
    v = _float(text)
    if v <= 0:
        raise OptionError(f"must be a finite number > 0, got {text!r}")
    return v


def unit_float(text: object) -> float:
    """A finite number in [0, 1] (pruning ratios)."""
    v = _float(text)
    if not 0.0 <= v <= 1.0:
        raise OptionError(f"must be a number in [0, 1], got {text!r}")
    return v


def _sized(text: object, limit: int, what: str) -> int:
    s = str(text).strip().upper().removesuffix("B")
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(s[-1:], 1)
    num = s[:-1] if s[-1:] in ("K", "M", "G") else s
    try:
        value = float(num) * mult
    except ValueError:
        raise OptionError(f"cannot read a {what} from {text!r} (examples: 8192, 256K, 1M)") from None
    if not math.isfinite(value) or value <= 0:
        raise OptionError(f"{what} must be a finite number > 0, got {text!r}")
    if value > limit:
        raise OptionError(f"{what} {text!r} is above the limit of {limit:,}")
    if value != int(value):
        raise OptionError(f"{what} must be a whole number, got {text!r}")
    return int(value)


def byte_size(text: object) -> int:
    """'256K' -> 262144, '1M' -> 1048576, '8192' -> 8192 (binary multiples), in 1..4 GiB."""
    return _sized(text, MAX_BYTES, "byte count")


def count(text: object) -> int:
    """A count with an optional K/M/G suffix (binary multiples), in 1..1e12 (prune budgets)."""
    return _sized(text, MAX_COUNT, "count")


def layer_ratio(text: object) -> tuple[str, float]:
    """'LAYER=R' with R in [0, 1]."""
    name, sep, value = str(text).partition("=")
    if not sep or not name.strip():
        raise OptionError(f"expected LAYER=R, got {text!r}")
    try:
        return name.strip(), unit_float(value)
    except OptionError as e:
        raise OptionError(f"{name.strip()}: {e}") from None


def positive_float_max(hi: float) -> Callable[[object], float]:
    """A finite number in (0, hi]."""

    def parse(text: object) -> float:
        v = positive_float(text)
        if v > hi:
            raise OptionError(f"must be a number in (0, {hi:g}], got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


def peer_address(text: object) -> str:
    """HOST:PORT of a network peer (a Ray cluster; ``ray://HOST:PORT`` and ``auto`` too), port in 1..65535."""
    s = str(text).strip()
    if s == "auto":
        return s
    host, sep, port = s.removeprefix("ray://").rpartition(":")
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise OptionError(f"expected HOST:PORT with a port in 1..65535 (or ray://HOST:PORT, auto), got {text!r}")
    return s


def storage_url(text: object) -> str:
    """A database URL ``DIALECT[+DRIVER]://...`` (SQLAlchemy's form: sqlite:///PATH, postgresql://...)."""
    s = str(text).strip()
    scheme, sep, _ = s.partition("://")
    if not sep or not scheme or not all(c.isalnum() or c in "+_" for c in scheme) or not scheme[0].isalpha():
        raise OptionError(f"expected a database URL such as sqlite:///PATH/study.db or "
                          f"postgresql://USER@HOST/DB, got {text!r}")
    return s


def path_text(text: object) -> str:
    """A file or folder path as given: not empty, no NUL byte, at most 4096 bytes (PATH_MAX)."""
    s = str(text)
    if not s.strip():
        raise OptionError("expected a path, got an empty string")
    if "\x00" in s:
        raise OptionError(f"a path cannot hold a NUL byte, got {s[:40]!r}")
    if len(os.fsencode(s)) > 4096:
        raise OptionError(f"path too long ({len(os.fsencode(s))} bytes; at most 4096)")
    return s


# ---- `tinycc serial` options (serial port settings) ----
MAX_BAUD = 12_000_000  # above any UART or USB CDC rate a board runs at
MAX_SERIAL_TIMEOUT = 3600.0  # one try of a request: an hour is already far beyond any learn call
MAX_RETRIES = 1000


def baud_rate(text: object) -> int:
    """A serial baud rate: an integer in 1..12,000,000."""
    v = _int(text)
    if not 1 <= v <= MAX_BAUD:
        raise OptionError(f"must be a baud rate in 1..{MAX_BAUD:,}, got {text!r}")
    return v


def serial_timeout(text: object) -> float:
    """Seconds for one try of a serial request: a finite number in (0, 3600]."""
    v = _float(text)
    if not 0 < v <= MAX_SERIAL_TIMEOUT:
        raise OptionError(f"must be a number of seconds > 0 and <= {MAX_SERIAL_TIMEOUT:g}, got {text!r}")
    return v


serial_retries = int_range(0, MAX_RETRIES)


def layer_names(text: object) -> tuple[str, ...]:
    """``NAME,NAME`` (layer names, or ``first``/``last``): a non-empty list of non-empty names."""
    names = tuple(n.strip() for n in str(text).split(","))
    if not names or any(not n or len(n) > 200 for n in names):
        raise argparse.ArgumentTypeError(f"expected NAME,NAME (layer names, first or last), got {str(text)[:60]!r}")
    return names


def deep_mode(text: object) -> tuple[str, ...]:
    """``--deep`` of ``tinycc compile``: one mode of learning beyond the head (``bias`` or ``blocks``), as the config's tuple."""
    from .ir.deep import DEEP_MODES

    mode = str(text).strip()
    if mode not in DEEP_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DEEP_MODES)}, got {str(text)[:60]!r}")
    return (mode,)
