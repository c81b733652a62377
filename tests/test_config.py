"""The typed compile configuration: built once, validated where built, every default in one place."""
from __future__ import annotations

import dataclasses

import pytest

from tinycc.cli import build_parser
from tinycc.config import CompileConfig, LearningConfig, QuantConfig, from_args, make_config
from tinycc.errors import TinyccError
from tinycc.ir.deployment import TrainConfig


def _args(session, *argv: str):
    return build_parser(session).parse_args(["compile", "m.h5", "-t", "c", "-o", "out", *argv])


def test_defaults_come_from_the_dataclasses(session) -> None:
    cfg = from_args(_args(session), session.registry)
    assert cfg.learning == LearningConfig() and cfg.learning.lr == TrainConfig.lr == 0.01
    assert cfg.quant == QuantConfig() and cfg.kernels == "tinycc" and cfg.board is None
    assert cfg.memory.ram is None and cfg.memory.inplace and cfg.demo.test_count == 8
    assert cfg == make_config(session)  # the Python API and the command line build the same config
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kernels = "generic"  # type: ignore[misc]


def test_command_line_values_and_the_board(session) -> None:
    cfg = from_args(_args(session, "--board", "mega2560", "--lr", "0.05", "--buffer", "4", "--kernels", "generic",
                          "--ram", "4K", "--passes=-fold_reshapes"), session.registry)
    board = session.registry.board("mega2560")
    assert cfg.board is board and cfg.memory.flash == board.flash and cfg.memory.ram == 4096
    assert cfg.memory.where == "board mega2560"
    assert (cfg.learning.lr, cfg.learning.buffer, cfg.kernels) == (0.05, 4, "generic")
    assert cfg.compiler.passes == ("-fold_reshapes",)
    assert cfg.plugin("prune").ratio is None and cfg.plugin("no_such_plugin") is None


def test_inference_only_has_no_learning_config(session) -> None:
    cfg = make_config(session, inference_only=True, int8_io=True)
    assert cfg.learning is None and cfg.inference_only and cfg.int8_io
    assert cfg.quant.int8_input and cfg.quant.int8_output
    with pytest.raises(TinyccError, match="--buffer, --lr: on-device learning options"):
        make_config(session, inference_only=True, lr=0.5, buffer=3)
    with pytest.raises(TinyccError, match="--int8-io needs --inference-only"):
        make_config(session, int8_io=True)


@pytest.mark.parametrize("kw, words", [
    ({"board": "nope"}, "unknown board 'nope'"),
    ({"policy": "lifo"}, "--policy: unknown value 'lifo'"),
    ({"lr": -1.0}, "--lr: must be a finite number > 0"),
    ({"buffer": 0}, "--buffer: must be an integer > 0"),
    ({"kernels": "fast"}, "--kernels: unknown value 'fast'"),
    ({"colour": "red"}, "unknown compile option(s): colour"),
])
def test_bad_values_fail_where_the_config_is_built(session, kw: dict, words: str) -> None:
    with pytest.raises(TinyccError, match=words.replace("(", "\\(").replace(")", "\\)")):
        make_config(session, **kw)


def test_config_is_not_a_bag_of_internal_data() -> None:
    names = {f.name for f in dataclasses.fields(CompileConfig)}
    # target/targets/demo_target: the board's resolved tinycc.targets.Target, the registered targets (the
    # Makefile's CPU list) and validate --on's emulator target: what the --board/_targets/_demo_target keys were
    assert names == {"board", "target", "targets", "demo_target", "learning", "quant", "memory", "kernels", "demo",
                     "compiler", "plugins"}


def test_the_board_is_resolved_once_with_its_target(session) -> None:
    config = make_config(session, board="nano33ble")
    assert config.board is session.registry.board("nano33ble")
    assert config.target is session.registry.target_of(config.board) and config.target.name == "m4"
    assert config.target_list == session.registry.target_list()
    assert make_config(session).target is None
