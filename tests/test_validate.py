"""`tinycc validate` (the generated program against run_int8, the simulator and Keras) and the demo's short report."""
from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import test_vectors as embedded_vectors
from tinycc.backends.demo import report_predictions
from .deploy_util import compile_model, config
from tinycc.ir.simulator import Simulator
from tinycc.plugins.applications.validate import validate

from . import arduino_harness, c_harness
from .test_cli import tinycc

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"
OPTS = {"calib": str(DATA)}


def _validate(session, target: str, on: str | None, project: Path | None = None, n: int = 20,
              **opts) -> tuple[int, str]:
    out = io.StringIO()
    rc = validate(str(MODEL), target, str(DATA), on, n, None if project is None else str(project),
                  config(session, {**OPTS, **opts}), session, out)
    return rc, out.getvalue()


def _row(text: str, check: str) -> str:
    return next(l for l in text.splitlines() if l.startswith(check))


def _assert_pass(rc: int, text: str, n: int = 20) -> None:
    assert rc == 0, text
    assert f"{n}/{n} equal, max |diff| 0" in _row(text, "int8 features, bit-exact")
    assert f"{n}/{n} agree" in _row(text, "top-1 before learning") and _row(text, "top-1 before").endswith("ok")
    assert f"{n}/{n} agree" in _row(text, f"top-1 after {n} learn calls")
    acc = _row(text, "accuracy before learning")
    assert re.search(rf"\d+\.\d% of {n}\s+int8 \d+\.\d%, float Keras \d+\.\d%", acc), acc
    assert re.search(r"[\d,]+ B\s+[\d,]+ B compile report", _row(text, "RAM (build)"))
    assert "PASS" in text.splitlines()[-1]


def test_validate_c_on_host_passes(session) -> None:
    rc, text = _validate(session, "c", "host")
    _assert_pass(rc, text)
    assert re.search(r"features [\d.,]+, predict [\d.,]+, learn [\d.,]+ us", _row(text, "time per call"))


def test_validate_writes_to_the_current_stdout(session, capsys) -> None:
    """The report goes to sys.stdout as it is at call time (it was bound at import, so a second in-process
    call under capsys wrote to a closed stream)."""
    for _ in range(2):
        rc = validate(str(MODEL), "c", str(DATA), "host", 4, None, config(session, OPTS), session)
        assert rc == 0 and "PASS" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_validate_c_on_qemu_m4_passes(session) -> None:
    rc, text = _validate(session, "c", "qemu-m4", n=12)
    _assert_pass(rc, text, 12)
    assert re.search(r"features [\d,]+, predict [\d,]+, learn [\d,]+ instructions", _row(text, "time per call"))


@pytest.mark.skipif(not arduino_harness.available(), reason="arduino-builder/simavr/avr-gcc not installed")
def test_validate_arduino_on_simavr_passes(session) -> None:
    rc, text = _validate(session, "arduino", "simavr", n=10, board="mega2560", lr=0.05)
    _assert_pass(rc, text, 10)


def test_validate_tflm_on_host_passes(session) -> None:
    """The tflm project built against TensorFlow Lite Micro (the vendored snapshot, cached library)."""
    from tinycc.backends.tflm import vendor

    if vendor.default_vendor_dir() is None:
        pytest.skip("TensorFlow Lite Micro snapshot not found (../shared/vendor; set TINYCC_VENDOR)")
    if vendor.missing_toolchain("host"):
        pytest.skip(vendor.missing_toolchain("host"))
    rc, text = _validate(session, "tflm", "host", n=12)
    _assert_pass(rc, text, 12)


def _corrupt_first_weight(model_c: Path) -> None:
    """Change the first value of the first int8 weight array (the first convolution's) in model.c."""
    text = model_c.read_text()
    m = re.search(r"static const int8_t tcc_\w+_weights\[\d+\] (?:TCC_WEIGHT = \{\s*(-?\d+)|TCC_BYTES TCC_WEIGHT =\s*"
                  r"\"\\x([0-9a-f]{2}))", text)  # a list of numbers, or a string of bytes (backends/c/tables.py)
    assert m is not None, "no int8 weight array in model.c"
    if m.group(1) is not None:
        value = int(m.group(1))
        model_c.write_text(text[:m.start(1)] + str(-127 if value > 0 else 127) + text[m.end(1):])
    else:
        value = int(m.group(2), 16)
        model_c.write_text(text[:m.start(2)] + ("81" if value < 0x80 else "7f") + text[m.end(2):])


def test_validate_fails_on_a_corrupted_weight_and_leaves_the_project_alone(session, tmp_path: Path) -> None:
    proj = tmp_path / "digits"
    compile_model(str(MODEL), "c", str(proj), dict(OPTS), session)
    rc, text = _validate(session, "c", "host", proj)
    assert rc == 0, text  # the project as generated equals the reference
    _corrupt_first_weight(proj / "model.c")
    before = {p: p.read_bytes() for p in proj.rglob("*") if p.is_file()}
    rc, text = _validate(session, "c", "host", proj)
    assert rc == 1, text
    row = _row(text, "int8 features, bit-exact")
    assert row.endswith("MISMATCH") and not row.startswith("int8 features, bit-exact  20/20 equal"), row
    assert text.splitlines()[-1].startswith("FAIL: the program differs from the reference: ")
    assert "samples have different int8 features" in text.splitlines()[-1]
    after = {p: p.read_bytes() for p in proj.rglob("*") if p.is_file()}
    assert after == before  # validate worked on a temporary copy


def _one_error_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_validate_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    base = ["validate", str(MODEL), "--target", "c", "--calib", str(DATA)]
    _one_error_line(tinycc(*base, "--data", str(tmp_path / "missing.npz")), "missing.npz", "no such file")
    np.savez(tmp_path / "shape.npz", x=np.zeros((5, 7, 7, 1), np.float32), y=np.zeros(5, np.int64))
    _one_error_line(tinycc(*base, "--data", str(tmp_path / "shape.npz")), "shape [7, 7, 1]", "[8, 8, 1]")
    np.savez(tmp_path / "nolabels.npz", x=np.full((5, 8, 8, 1), np.nan, np.float32))  # checked without labels too
    _one_error_line(tinycc(*base, "--data", str(tmp_path / "nolabels.npz")), "nolabels.npz", "x")
    np.savez(tmp_path / "labels.npz", x=np.zeros((5, 8, 8, 1), np.float32), y=np.full(5, 10))
    _one_error_line(tinycc(*base, "--data", str(tmp_path / "labels.npz")), "labels must be integers in 0..9")
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    _one_error_line(tinycc(*base, "--data", str(tmp_path / "junk.npz")), "junk.npz", "cannot read")
    _one_error_line(tinycc(*base, "--data", str(DATA), "--on", "simavr"), "runs on host, qemu-m4")
    _one_error_line(tinycc("validate", str(MODEL), "-t", "tflm", "--data", str(DATA), "--on", "qemu-m4"),
                    "target tflm runs on host")
    _one_error_line(tinycc(*base, "--data", str(DATA), "--project", str(tmp_path)), "not a tinycc project")
    _one_error_line(tinycc(*base, "--data", str(DATA), "--deep", "bias"), "validate --deep", "simulate --deep")


def test_validate_project_made_with_other_options_is_refused(session, tmp_path: Path) -> None:
    from tinycc.errors import TinyccError

    proj = tmp_path / "digits"
    compile_model(str(MODEL), "c", str(proj), {**OPTS, "buffer": 10}, session)
    with pytest.raises(TinyccError, match="was not compiled from .* with these options"):
        _validate(session, "c", "host", proj)


def test_make_run_prints_a_short_report(session, tmp_path: Path) -> None:
    """The bundled example's `make run`: under 40 lines with predictions and accuracy before/after learning that
    are the simulator's; `make run DUMP=1` gives the machine-readable lines instead."""
    proj = tmp_path / "digits"
    dep = compile_model(str(MODEL), "c", str(proj), dict(OPTS), session).deployment
    r = subprocess.run(["make", "-s", "-C", str(proj), "run"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert 5 < len(lines) < 40, r.stdout
    x, y = embedded_vectors(dep)  # what the compile embedded: the first 8 calibration samples
    rows = report_predictions(r.stdout)
    sim = Simulator(dep)
    k_before = sim.predict(x)[0]
    for i in range(len(x)):
        sim.learn(x[i], int(y[i]))
    k_after = sim.predict(x)[0]
    assert rows["expected"] == list(y) and rows["before"] == list(k_before) and rows["after"] == list(k_after)
    acc = _row(r.stdout, "accuracy: ")
    assert acc.startswith(f"accuracy: {int((k_before == y).sum())}/8 ") and f", {int((k_after == y).sum())}/8 " in acc
    assert "before learning" in acc and "after 8 learn calls" in acc
    assert f"replay buffer: 8/{dep.buffer.capacity} entries" in lines
    assert f"RAM {dep.memory['ram']} B, flash {dep.memory['flash']} B" in _row(r.stdout, "memory: ")
    assert re.match(r"time per call \(host, mean\): features [\d.]+ us, predict [\d.]+ us, learn [\d.]+ us",
                    _row(r.stdout, "time per call"))
    dump = subprocess.run(["make", "-s", "-C", str(proj), "run", "DUMP=1"], capture_output=True, text=True, timeout=600)
    out = c_harness.parse(dump.stdout)
    assert len(out.features) == 8 and len(out.weights) == len(dep.classifier) and out.buffer == 8
    assert [out.before[i][0] for i in range(8)] == list(k_before) and out.time_us["learn"] > 0


@pytest.mark.parametrize("extra", [{}, {"inference_only": True}], ids=["learning", "inference-only"])
def test_validate_without_labels(session, tmp_path: Path, extra: dict) -> None:
    """Bit-exactness and timing need no labels: unlabelled data (x only) validates; accuracy is not reported. The
    learning demo learns the simulator's own predicted classes, and must still learn exactly as the simulator."""
    with np.load(DATA) as z:
        x, y = z["x_test"][:8], z["y_test"][:8]
    np.savez(tmp_path / "x_only.npz", x=x)
    np.savez(tmp_path / "labelled.npz", x=x, y=y)
    runs = {}
    for name in ("x_only", "labelled"):
        out = io.StringIO()
        rc = validate(str(MODEL), "c", str(tmp_path / f"{name}.npz"), "host", 8, None,
                      config(session, {**OPTS, **extra}), session, out)
        runs[name] = out.getvalue()
        assert rc == 0, runs[name]
        assert "PASS" in runs[name].splitlines()[-1]
    text = runs["x_only"]
    assert "no labels: accuracy not reported" in text.splitlines()[0]
    assert "accuracy" not in "\n".join(text.splitlines()[1:])
    assert "accuracy" in runs["labelled"]
    if extra:
        assert "8/8 equal, max |diff| 0 steps" in _row(text, "outputs, bit-exact")
    else:
        assert "8/8 equal, max |diff| 0" in _row(text, "int8 features, bit-exact")
        assert "8/8 agree" in _row(text, "top-1 after 8 learn calls")
    assert _row(text, "time per call")


def test_an_autoencoder_learns_to_reproduce_its_input(session, tmp_path: Path) -> None:
    """An MSE head whose target is the model's input (an autoencoder, like MLPerf Tiny's ad01): validate runs the
    learn calls towards each input on the device and in the simulator and they agree; unlabelled data works
    (it crashed with "expected a target of 16 values, got 1": the learn calls got predicted classes)."""
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((16,))
    h = keras.layers.Dense(12, activation="relu", name="enc")(inp)
    h = keras.layers.Dense(6, activation="relu", name="code")(h)
    h = keras.layers.Dense(12, activation="relu", name="dec")(h)
    out = keras.layers.Dense(16, name="recon")(h)
    path = tmp_path / "ae.keras"
    keras.Model(inp, out).save(path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x=rng.normal(size=(40, 16)).astype(np.float32))
    out_text = io.StringIO()
    rc = validate(str(path), "c", str(tmp_path / "x.npz"), "host", 6, None,
                  config(session, {"loss": "mse", "buffer": 4, "cut": "code"}), session, out_text)
    text = out_text.getvalue()
    assert rc == 0, text
    assert "the learn calls reproduce the inputs (autoencoder)" in text
    assert re.search(r"top-1 after 6 learn calls\s+6/6 agree", text), text
    assert re.search(r"int8 features, bit-exact\s+6/6 equal, max \|diff\| 0", text), text
