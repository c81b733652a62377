"""The escaping functions of model text for generated files. They live in the core (``tinycc.names``: the CLI
escapes terminal output with them too); backends import them from here as before."""
from __future__ import annotations

from ..names import *  # noqa: F401,F403
