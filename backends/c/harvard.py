"""A Harvard core's memory (``tinycc.targets.Target.harvard``, AVR): its plain ``const`` data is RAM.

The generated code keeps every table in program memory (``TCC_WEIGHT``, read through ``TCC_READ_*``); what it
declares as plain ``const`` are model.h's public quantization constants (``NAME_input_scale`` /
``NAME_input_zero_point``, with --inference-only the output's too, one pair per input and output of a multi-I/O
model), which user code reads directly. On a Harvard core the C start-up copies them, as all ``.rodata``, from
flash into RAM (avr-gcc links ``.rodata`` into ``.data``): the report counts them there, and their load image in
flash. Other cores keep them in flash, inside the report's code estimate."""
from __future__ import annotations

from typing import Any

from ...backend_api import Candidate

PAIR_BYTES = 8  # const float scale + const int32_t zero point


def public_constants(candidate: Candidate) -> int:
    """Bytes of the quantization constants model.c defines as plain ``const`` data for ``candidate``."""
    if not candidate.config.inference_only:  # a learner's model.c (head or deep): the input's pair
        return PAIR_BYTES
    g = candidate.program
    return PAIR_BYTES * (len(g.inputs) + len(g.outputs))


def harvard_adjust(report: Any, candidate: Candidate) -> None:
    """On a Harvard target, add the public quantization constants to ``report`` (``ir.memory_model.MemoryReport``):
    their RAM (before the stack line) and their load image in flash."""
    target = candidate.config.target
    if target is None or not target.harvard:
        return
    n = public_constants(candidate)
    ram = next((k for k, it in enumerate(report.items) if it.name == "stack"), len(report.items))
    report.add("public constants", "ram", n, detail="model.h's input/output scale and zero point: plain const "
               f"data, which a Harvard core's start-up copies into RAM ({target.name})")
    report.items.insert(ram, report.items.pop())
    report.add("public constants load image", "flash", n, detail="the public constants' initial values")
