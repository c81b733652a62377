"""Built-in plugin ``ondevice``: the on-device learning deployment kind and the ``cut`` pass.

The deployment itself (cut selection, head, buffer sizing, budget, memory plan) is the core's deploy stage
(``tinycc.deploy``); this plugin makes it available to ``tinycc compile`` through the registry, so that
``-p no:ondevice`` turns on-device learning off (a compile that needs it stops with one line, exit 2).
"""
from __future__ import annotations

from typing import Any

import pluggy

from ...deploy import Cut, build_deployment

hookimpl = pluggy.HookimplMarker("tinycc")


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    registry.add_pass(Cut)


@hookimpl
def tinycc_register_deployers(registry: Any) -> None:
    registry.add_deployer("ondevice", build_deployment)
