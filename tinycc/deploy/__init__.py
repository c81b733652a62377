"""The deploy stage of the core: from a cleaned float graph to the :class:`~tinycc.ir.deployment.Deployment` a
backend emits.

``learning`` (on-device learning: cut selection, the trainable head, replay buffer sizing), ``inference``
(--inference-only: the whole model in int8) and ``stage`` (what both share: the memory plan computed once per
candidate, the backend's memory figures, the budget check). Imports the IR and the core only; backends are
reached through the registry and answer through ``tinycc.backend_api``. Plugins register these functions as
deployment kinds (``plugins/deployments/ondevice.py``, ``plugins/deployments/inference.py``).
"""
from __future__ import annotations

from .deep import build_deep_deployment
from .inference import build_inference, full_graph, int8_model, quantize_inputs
from .learning import (DEFAULT_BUFFER, Cut, CutPoint, build_deployment, choose_loss, cut_candidates,
                       is_autoencoder, make_classifier, quantize_extractor, split, target_quant)
from .stage import BUDGET_ADVICE, c_name, check_budget, memory_plan

__all__ = ["BUDGET_ADVICE", "DEFAULT_BUFFER", "Cut", "CutPoint", "build_deep_deployment", "build_deployment", "build_inference", "c_name",
           "check_budget", "choose_loss", "cut_candidates", "full_graph", "int8_model", "is_autoencoder",
           "make_classifier", "memory_plan", "quantize_extractor", "quantize_inputs", "split", "target_quant"]
