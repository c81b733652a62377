"""Built-in plugin ``inference``: the ``--inference-only`` deployment kind (the whole model in int8).

The deployment is built by the core (``tinycc.deploy.inference``); ``-p no:inference`` turns it off.
"""
from __future__ import annotations

from typing import Any

import pluggy

from ...deploy import build_inference

hookimpl = pluggy.HookimplMarker("tinycc")


@hookimpl
def tinycc_register_deployers(registry: Any) -> None:
    registry.add_deployer("inference", build_inference)
