"""tinycc: compile trained Keras models into incremental on-device learning programs for MCUs."""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("tinycc")

__all__ = ["__version__", "hookimpl"]
