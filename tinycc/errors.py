"""Errors that reach the user as one clear line and exit code 2."""
from __future__ import annotations


class TinyccError(Exception):
    """Bad input or an impossible request: printed without a traceback, exit code 2."""

    exit_code = 2


class UnsupportedLayerError(TinyccError):
    """A layer or op that no frontend/backend supports; the message names it."""


class BudgetError(TinyccError):
    """A memory budget that cannot be met; the message gives the shortfall."""
