"""Validation of every numeric command-line option, in one place.

Each function here is an argparse ``type=``: it turns the option's text into a value or raises
:class:`OptionError`, which argparse reports as ``tinycc CMD: error: argument --lr: ...`` with exit 2.
Called directly (from the Python API or a plugin), the same error is a :class:`TinyccError` (exit 2).
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

from .errors import TinyccError

MAX_BYTES = 4 * 1024 ** 3  # --ram / --flash: no microcontroller has more than 4 GiB of address space
MAX_COUNT = 10 ** 12  # prune --budget params=/macs=/...: far above any MCU model
MAX_INT = 2 ** 31 - 1  # counts that end up in the generated C as int


class OptionError(TinyccError, argparse.ArgumentTypeError):
    """A bad option value: argparse prefixes the option's name; elsewhere it is a TinyccError (exit 2)."""


def _int(text: object) -> int:
    s = str(text).strip()
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
        if not lo <= v <= hi:
            raise OptionError(f"must be an integer in {lo}..{hi}, got {text!r}" if hi != MAX_INT else
                              f"must be an integer >= {lo}, got {text!r}")
        return v

    parse.__name__ = "integer"
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
