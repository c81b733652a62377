"""The zoo benchmark's per-model function (benchmarks/bench_zoo.py) on two zoo models: the 1D-conv activity
recognizer converted to int8 by the TFLite converter compiles for every target and its c program equals run_int8
on the host and on the Cortex-M4 (QEMU), run_int8 equalling TFLite's BUILTIN_REF and TensorFlow Lite Micro; the GRU
compiles for c and arduino and is refused with one line by tflm (no GRU in TFLite Micro); a published file (the
converter's fused int8 LSTM) gets the same columns; a runtime that cannot load a file says so in the cell; --extra
and the export cache."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import pytest

from benchmarks import bench_zoo, zoo_models

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm")


def test_har_int8_compiles_everywhere_and_is_bit_exact_on_host_and_m4(session, tmp_path: Path) -> None:
    zoo_models.export("har_cnn1d", str(tmp_path))
    z = zoo_models.BY_NAME["har_cnn1d"]
    row = bench_zoo.model_row(session, z.name, z.domain, tmp_path / "har_cnn1d_int8.tflite",
                              tmp_path / "har_cnn1d.h5", z.classifier, z.input_range, n=2)
    assert "error" not in row
    for target in bench_zoo.TARGETS:
        t = row["targets"][target]
        assert t["ok"], (target, t)
        assert t["mode"] == "learning" and "learning_error" not in t
        assert t["ram"] > 0 and t["flash"] > row["params"] > 0  # flash holds at least the int8 weights
    assert row["keras_c"]["ok"]
    run = row["c_run"]
    assert "error" not in run, run
    assert run["host"]["bit_exact"] is True and run["qemu-m4"]["bit_exact"] is True
    assert row["builtin_ref"] is True and row["tflm"] is True
    assert run["m4_instructions"] > row["macs"] > 0  # at least one instruction per multiply-accumulate
    assert "host yes, M4 yes, ref yes, TFLM yes" in bench_zoo.table([row])


def test_gru_compiles_for_c_and_arduino_and_tflm_refuses_on_one_line(session, tmp_path: Path) -> None:
    """The zoo's sensor GRU from its Keras file: c and arduino compile it for on-device learning (tinycc's integer
    GRU), its c program equals run_int8 on the host and the M4; tflm refuses it in one line naming the GRU."""
    z = zoo_models.BY_NAME["gru_har"]
    z.build().save(str(tmp_path / "gru_har.h5"))
    row = bench_zoo.model_row(session, z.name, z.domain, None, tmp_path / "gru_har.h5", z.classifier,
                              z.input_range, n=1)
    assert "error" not in row, row
    for target in ("c", "arduino"):
        assert row["targets"][target]["ok"] and row["targets"][target]["mode"] == "learning", row["targets"][target]
    err = row["targets"]["tflm"]["error"]
    assert "\n" not in err and not err.startswith("BUG") and "GRU" in err, err
    run = row["c_run"]
    assert run["host"]["bit_exact"] is True and run["qemu-m4"]["bit_exact"] is True, run
    assert "| refused (no GRU in TFLite Micro) |" in bench_zoo.table([row]) and "GRU" in bench_zoo.errors([row])


def test_published_fused_lstm_file_gets_every_column(session) -> None:
    """The converter's fused int8 LSTM file (tf_keras, committed): learning on c, tflm and arduino, its c program
    equals run_int8 on the host and the M4, run_int8 equals BUILTIN_REF and TensorFlow Lite Micro; the row is
    marked published and its origin listed."""
    p = next(p for p in bench_zoo.PUBLISHED if p.name == "kws_lstm_fused")
    row = bench_zoo.model_row(session, p.name, p.domain, p.path, None, p.classifier, None, n=2, origin=p.origin)
    assert "error" not in row, row
    for target in bench_zoo.TARGETS:
        assert row["targets"][target]["ok"] and row["targets"][target]["mode"] == "learning", row["targets"][target]
    run = row["c_run"]
    assert run["host"]["bit_exact"] is True and run["qemu-m4"]["bit_exact"] is True, run
    assert run["m4_instructions"] > row["macs"] > 0
    assert row["builtin_ref"] is True and row["tflm"] is True
    assert "kws_lstm.tflite (committed)" in bench_zoo.table([row]) and "tf_keras" in bench_zoo.origins([row])


def test_a_runtime_that_cannot_load_a_file_says_so(session, tmp_path: Path) -> None:
    """A file the runtimes refuse (the fused LSTM file cut short): each check returns why instead of a verdict,
    the bit-exact cell says "<runtime> cannot load the file" and the errors list carries the reason."""
    from tinycc.api import load_cleaned

    good = next(p for p in bench_zoo.PUBLISHED if p.name == "kws_lstm_fused").path
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(good.read_bytes()[:4000])
    graph = load_cleaned(str(good), session)
    xq = bench_zoo.quantized_inputs(graph, np.zeros((1, 49, 10), np.float32))
    assert xq is not None and xq.dtype == np.int8
    assert bench_zoo.runtime_equal("builtin_ref", good, graph, xq) is True
    ref = bench_zoo.runtime_equal("builtin_ref", bad, graph, xq)
    tflm = bench_zoo.runtime_equal("tflm", bad, graph, xq)
    assert isinstance(ref, str) and ref.startswith("TFLite cannot load the file"), ref
    assert isinstance(tflm, str) and tflm.startswith("TFLite Micro cannot load the file"), tflm
    row = {"model": "cut", "targets": {}, "builtin_ref": ref, "tflm": tflm,
           "c_run": {"host": {"bit_exact": True}, "qemu-m4": {"bit_exact": True}}}
    assert bench_zoo._exact(row) == ("host yes, M4 yes, ref: TFLite cannot load the file, "
                                     "TFLM: TFLite Micro cannot load the file")
    assert "(BUILTIN_REF check)" in bench_zoo.errors([row]) and "(TFLite Micro check)" in bench_zoo.errors([row])


def test_extra_file_argument(tmp_path: Path, capsys) -> None:
    """--extra FILE[=ORIGIN]: a row named after the file with its origin; a missing file: one line, exit 2."""
    f = tmp_path / "pd.tflite"
    f.write_bytes(b"x")
    p = bench_zoo.parse_extra(f"{f}=tflite-micro models/person_detect.tflite")
    assert (p.name, p.path, p.origin) == ("pd", f, "tflite-micro models/person_detect.tflite")
    assert bench_zoo.parse_extra(str(f)).origin == f"given with --extra: {f}"
    with pytest.raises(SystemExit) as e:
        bench_zoo.parse_extra(str(tmp_path / "missing.tflite"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.tflite" in err


def test_export_cache_drops_files_of_a_changed_model(tmp_path: Path) -> None:
    """Cached files (and cached conversion failures) made from another definition of a zoo model are removed; those
    of the current definition and of another model whose name starts the same are kept."""
    names = ["har_cnn1d.h5", "har_cnn1d_int8.tflite", "har_cnn1d_int8.failed", "har_cnn1d_16x8_int16.tflite"]
    for n in names:
        (tmp_path / n).write_text("x")
    (tmp_path / "har_cnn1d.key").write_text("an older definition")
    bench_zoo.drop_stale("har_cnn1d", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["har_cnn1d.key", "har_cnn1d_16x8_int16.tflite"]
    (tmp_path / "har_cnn1d_int8.tflite").write_text("x")
    bench_zoo.drop_stale("har_cnn1d", tmp_path)
    assert (tmp_path / "har_cnn1d_int8.tflite").exists()
