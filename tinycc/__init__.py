"""tinycc: compile trained Keras models into incremental on-device learning programs for MCUs.

The core: CLI, session (plugin manager and registries), typed config (``config``), compile stages and pass
manager, driver, deploy stage (``deploy/``), memory planner, public API for applications (``api``). May import
the IR; reaches plugins and backends only through the registry (``session.DEFAULT_PLUGINS`` and entry points).
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("tinycc")

__all__ = ["__version__", "hookimpl"]
