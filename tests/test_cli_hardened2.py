"""Hardened II (issue #29): every command as careful as `compile` with its inputs and outputs.

Each reproduction of the issue's "Measured" list (writes where it must not, memory before refusal, calibration
scale, internal errors where the input is at fault, hangs) run as a user would, in a subprocess, with the
result the issue asks for: one line and exit 2 (or a working program), nothing written outside the output, peak
memory before a refusal under 1 GB (measured on the child process), an unreachable peer refused within 10 s.
"""
from __future__ import annotations

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError
from tinycc.output import MARKER, open_work_dir

from .test_cli import ROOT, assert_clean_error, clean_env, tinycc

EXAMPLE = str(ROOT / "examples" / "digits_cnn.h5")
DIGITS = str(ROOT / "examples" / "digits_data.npz")
GB = 1024 ** 3


def tinycc_peak(*args: str, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run the CLI in a fresh wrapper process; (result, the CLI's peak resident bytes, seconds)."""
    code = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:], capture_output=True, "
            "text=True); print(json.dumps([r.returncode, r.stdout, r.stderr, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    t0 = time.perf_counter()
    w = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "tinycc.cli", *args], capture_output=True,
                       text=True, cwd=cwd, timeout=600, env=clean_env())
    seconds = time.perf_counter() - t0
    rc, out, err, kb = json.loads(w.stdout)
    return subprocess.CompletedProcess(args, rc, out, err), kb * 1024, seconds


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("h2")
    with np.load(DIGITS) as z:
        x, y = z["x_train"], z["y_train"]
    np.savez(d / "one.npz", x=x[:1], y=y[:1])
    np.savez(d / "big.npz", x=x[:300] * np.float32(1e30), y=y[:300])
    np.savez(d / "k1e3.npz", x=x[:300] * np.float32(1e3), y=y[:300])
    from PIL import Image

    (d / "oneimg").mkdir()
    Image.fromarray((x[0, :, :, 0] * 15).astype(np.uint8)).save(d / "oneimg" / "a.png")
    (d / "bomb").mkdir()
    _png_bomb(d / "bomb" / "b.png", 12000, 12000)  # 144 Mpixel of zeros in 140 kB
    return d


def _png_bomb(path: Path, w: int, h: int) -> None:
    """A valid greyscale PNG of w x h zero pixels, compressed row by row (no w*h buffer here)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    c = zlib.compressobj(9)
    row = bytes(w + 1)
    idat = b"".join(c.compress(row) for _ in range(h)) + c.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# ---- writes where it must not ----------------------------------------------------------------------
def test_validate_never_writes_through_a_link_out_of_the_project(data: Path, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    r = tinycc("compile", EXAMPLE, "-t", "c", "--calib", DIGITS, "-o", str(proj))
    assert r.returncode == 0, r.stderr
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (proj / "test_vectors.h").unlink()
    os.symlink(victim, proj / "test_vectors.h")
    r = tinycc("validate", EXAMPLE, "-t", "c", "--calib", DIGITS, "--data", DIGITS, "-n", "2", "--project", str(proj))
    assert_clean_error(r, 2, "test_vectors.h", "symbolic link out of the project")
    assert victim.read_text() == "precious\n"


def test_simulate_output_is_atomic_and_marker_checked(tmp_path: Path) -> None:
    sim = ["simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--runs", "1", "--stream", "12",
           "--at", "6", "--test", "6", "--buffer", "2"]
    # a link to a folder of the user's CSVs: refused, the CSVs untouched
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "concept-drift.csv").write_text("mine\n")
    os.symlink(tmp_path / "mine", tmp_path / "link")
    for out, words in (("link", ["symbolic link"]), ("mine", ["not empty"]), ("/dev/null", ["device"]),
                       ("mine/concept-drift.csv", ["regular file"]), ("sub/..", ["'..'"])):
        r = tinycc(*sim, "-o", out, cwd=tmp_path)
        assert_clean_error(r, 2, *words)
    assert (tmp_path / "mine" / "concept-drift.csv").read_text() == "mine\n"
    assert not (tmp_path / "sub").exists()
    r = tinycc(*sim, "-o", "mine", "--force", cwd=tmp_path)  # --force replaces only tinycc's folders
    assert_clean_error(r, 2, "not written by tinycc")
    r = tinycc(*sim, "-o", "new", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "new")) == sorted([MARKER, "concept-drift.csv", "concept-drift.png",
                                                           "concept-drift-stream.csv"])
    first = (tmp_path / "new" / "concept-drift.csv").read_bytes()
    assert_clean_error(tinycc(*sim, "-o", "new", cwd=tmp_path), 2, "--force")
    r = tinycc(*sim, "-o", "new", "--force", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new" / "concept-drift.csv").read_bytes() == first  # same input, same bytes
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_search_folder_is_created_with_the_marker_and_resumed_only_when_tinycc_wrote_it(tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert open_work_dir(out, False) is False and (out / MARKER).is_file()
    (out / "study.db").write_text("x")
    assert open_work_dir(out, False) is True  # resume
    assert (out / "study.db").exists()
    assert open_work_dir(out, True) is False and not (out / "study.db").exists()  # --force: start over
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    for bad in (tmp_path / "foreign", tmp_path / "foreign" / "notes.txt", Path("/dev/null")):
        with pytest.raises(TinyccError):
            open_work_dir(bad, False)
    os.symlink(out, tmp_path / "link")
    with pytest.raises(TinyccError, match="symbolic link"):
        open_work_dir(tmp_path / "link", False)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "x"


# ---- data sets of any size from one sample up -------------------------------------------------------
def test_one_sample_compile_quantize_and_one_image(data: Path, tmp_path: Path) -> None:
    r = tinycc("compile", EXAMPLE, "-t", "c", "--calib", str(data / "one.npz"), "-o", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    r = tinycc("compile", EXAMPLE, "-t", "c", "--calib", str(data / "oneimg"), "-o", str(tmp_path / "i"))
    assert r.returncode == 0, r.stderr
    r = tinycc("quantize", EXAMPLE, "--calib", str(data / "one.npz"), "--eval", str(data / "one.npz"), "-o",
               str(tmp_path / "m.tflite"))
    assert r.returncode == 0, r.stderr
    assert "over 1 calibration samples" in r.stdout and "accuracy on 1 samples" in r.stdout


@pytest.mark.toolchain
def test_one_sample_validate(data: Path) -> None:
    r = tinycc("validate", EXAMPLE, "-t", "c", "--data", str(data / "one.npz"))
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "1 samples" in r.stdout


def test_one_sample_ranges_are_the_sample_itself() -> None:
    from tinycc.ir.calibration import SampleRanges

    s = SampleRanges()
    s.observe("t", np.array([[1.0, -2.0, 3.0]]))
    assert s.dominance("t") == (1.0, -1, (-2.0, 3.0), (-2.0, 3.0))
    s.check()


# ---- memory before refusal ----------------------------------------------------------------------------
def test_image_decompression_bomb_refused_before_decoding(data: Path, tmp_path: Path) -> None:
    r, peak, _ = tinycc_peak("compile", EXAMPLE, "-t", "c", "--calib", str(data / "bomb"), "-o", str(tmp_path / "o"))
    assert_clean_error(r, 2, "b.png", "12000x12000", "pixels")
    assert peak < GB, peak


def _keras2_zip_bomb(path: Path, megabytes: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "2.15.0"}))
        with z.open("config.json", "w", force_zip64=True) as f:
            block = b" " * (1 << 20)
            for _ in range(megabytes):
                f.write(block)
            f.write(b'{"class_name": "Sequential", "config": {"layers": []}}')
        z.writestr("model.weights.h5", b"")


def test_keras_zip_bomb_refused_by_declared_sizes(tmp_path: Path) -> None:
    """1.1 GB of config.json in 5 MB: refused before anything is unpacked (it took 7 GB and 30 s before)."""
    _keras2_zip_bomb(tmp_path / "bomb.keras", 1100)
    assert (tmp_path / "bomb.keras").stat().st_size < 10 * 1024 ** 2
    r, peak, _ = tinycc_peak("inspect", str(tmp_path / "bomb.keras"))
    assert_clean_error(r, 2, "bomb.keras", "unpack to 1,153,433,", "limit")
    assert peak < GB, peak


@pytest.fixture(scope="module")
def huge_input_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A consistent float .tflite with a 16384 x 16384 input (1 GiB per sample in float32), 2.5 kB on disk."""
    path = tmp_path_factory.mktemp("huge") / "huge.tflite"
    code = ("import keras, tensorflow as tf, sys; inp = keras.Input((16384, 16384, 1)); "
            "h = keras.layers.Conv2D(2, 3, strides=8, activation='relu')(inp); "
            "h = keras.layers.GlobalAveragePooling2D()(h); "
            "m = keras.Model(inp, keras.layers.Dense(3, activation='softmax')(keras.layers.Dense(8)(h))); "
            "open(sys.argv[1], 'wb').write(tf.lite.TFLiteConverter.from_keras_model(m).convert())")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, timeout=300,
                   env={**clean_env(), "TF_CPP_MIN_LOG_LEVEL": "3"})
    return path


@pytest.mark.parametrize("command", ["compile", "quantize"])
def test_huge_input_refused_from_shapes(huge_input_tflite: Path, data: Path, tmp_path: Path, command: str) -> None:
    """Refused from the shapes before any sample is read (it ran 41 s to a MemoryError at 6.7 GB before)."""
    argv = (["compile", str(huge_input_tflite), "-t", "c", "--calib", str(data / "one.npz"), "-o", str(tmp_path / "o")]
            if command == "compile" else
            ["quantize", str(huge_input_tflite), "--calib", str(data / "one.npz"), "-o", str(tmp_path / "m.tflite")])
    r, peak, seconds = tinycc_peak(*argv)
    # compile embeds test vectors (268,435,456 input values as C source); quantize calibrates (1 GiB per sample)
    assert_clean_error(r, 2, *(["268,435,456", "C source", "limit"] if command == "compile" else
                               ["1,073,741,824", "float32", "limit"]))
    assert peak < GB, peak
    assert not os.listdir(tmp_path)


def test_test_vectors_and_calibration_batches_are_bounded() -> None:
    from tinycc.ir.calibration import CALIB_BATCH_BYTES, MAX_TEST_VALUES, test_vector_count

    assert test_vector_count(64, 8) == 8
    assert test_vector_count(MAX_TEST_VALUES // 3, 8) == 3
    assert test_vector_count(MAX_TEST_VALUES, 8) == 1
    assert CALIB_BATCH_BYTES <= GB // 2


# ---- calibration scale -------------------------------------------------------------------------------
def test_calibration_scale_that_overflows_learning_is_refused(data: Path, tmp_path: Path) -> None:
    r = tinycc("compile", EXAMPLE, "-t", "c", "--calib", str(data / "big.npz"), "-o", str(tmp_path / "o"))
    assert_clean_error(r, 2, "features reach", "float32")
    assert not (tmp_path / "o").exists()


def _learn_probs(dep, x: np.ndarray, y: np.ndarray, steps: int) -> list[np.ndarray]:
    from tinycc.ir.simulator import Simulator

    sim = Simulator(dep)
    feats = sim.features(x)
    out = []
    for i in range(steps):
        sim.learn_features(feats[i % len(x)], int(y[i % len(x)]))
        out.append(sim.predict_features(feats[:8])[1])
    return out


def test_refused_scale_is_the_one_that_breaks_learning(data: Path, session, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle for the refusal: with the check switched off, x 1e30 calibration gives a classifier whose
    probabilities become NaN within a few learn calls (the issue: after four); x 1e3 is accepted and learns
    200 steps with finite probabilities."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy import learning

    from .deploy_util import build_deployment

    graph = session.registry.frontend_for(EXAMPLE).load(EXAMPLE)
    with np.load(DIGITS) as z:
        x, y = z["x_train"][:300], z["y_train"][:300]
    dep = build_deployment(graph, {"calib_data": x * np.float32(1e3)}, session, CBackend())
    assert all(np.isfinite(p).all() for p in _learn_probs(dep, x * np.float32(1e3), y, 200))
    with pytest.raises(TinyccError, match="float32"):
        build_deployment(graph, {"calib_data": x * np.float32(1e30)}, session, CBackend())
    monkeypatch.setattr(learning, "check_feature_scale", lambda *a: None)
    dep = build_deployment(graph, {"calib_data": x * np.float32(1e30)}, session, CBackend())
    with np.errstate(all="ignore"):
        probs = _learn_probs(dep, x * np.float32(1e30), y, 10)
    assert any(not np.isfinite(p).all() for p in probs)


# ---- search: storage, workers, peers, dead workers; simulate: bounded work --------------------------------
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("case", ["notaurl", "unwritable sqlite", "workers 100000", "workers over the CPUs",
                                  "ray nohost", "ray closed port"])
def test_search_refusals_are_one_line_and_fast(case: str, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("ray")
    extra, words = {
        "notaurl": (["--storage", "notaurl"], ["--storage", "database URL"]),
        "unwritable sqlite": (["--storage", "sqlite:////proc/nope/study.db"], ["--storage", "cannot open"]),
        "workers 100000": (["--workers", "100000"], ["--workers", "1..1024"]),
        "workers over the CPUs": (["--workers", str(4 * (os.cpu_count() or 1) + 1)], ["--workers", "local Ray"]),
        "ray nohost": (["--ray-address", "nohost.invalid:1"], ["--ray-address", "unknown host"]),
        "ray closed port": (["--ray-address", f"127.0.0.1:{_closed_port()}"], ["--ray-address", "cannot connect"]),
    }[case]
    t0 = time.perf_counter()
    r = tinycc("search", "--data", DIGITS, "--board", "uno", "--trials", "1", "--no-progress", *extra, "-o",
               str(tmp_path / "s"))
    assert time.perf_counter() - t0 < 30  # the process, imports included; the peer's own wait is below
    assert_clean_error(r, 2, *words)
    assert not (tmp_path / "s").exists()


def test_unreachable_peer_within_10_s() -> None:
    from tinycc.plugins.applications.search.runner import check_reachable

    for addr in ("nohost.invalid:6379", f"127.0.0.1:{_closed_port()}", "[::1]:1"):
        t0 = time.perf_counter()
        with pytest.raises(TinyccError, match="--ray-address"):
            check_reachable(addr)
        assert time.perf_counter() - t0 < 10, addr


def test_ray_handshake_that_never_completes_is_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that accepts connections but is no Ray head: Ray retries forever; tinycc gives up after the bound."""
    import types

    from tinycc.plugins.applications.search import runner

    stop = threading.Event()
    fake = types.SimpleNamespace(init=lambda **kw: stop.wait(60))
    monkeypatch.setitem(sys.modules, "ray", fake)
    t0 = time.perf_counter()
    with pytest.raises(TinyccError, match="no Ray cluster answered within 1 s"):
        runner._init_within("127.0.0.1:6379", {}, 1.0)
    assert time.perf_counter() - t0 < 3
    stop.set()

    def refuse(**kw):
        raise ConnectionError("Could not find any running Ray instance.\nPlease start one")
    monkeypatch.setattr(fake, "init", refuse)
    with pytest.raises(TinyccError, match="Could not find any running Ray instance"):
        runner._init_within("127.0.0.1:6379", {}, 5.0)


def test_dead_workers_stop_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials failing in a row (workers killed) and a cluster without CPUs end the search with a clear line."""
    import types

    from tinycc.plugins.applications.search import runner

    w = runner._Watchdog(workers=2)
    w.failed(0, "WorkerCrashedError")
    w.succeeded()
    w.failed(1, "OutOfMemoryError")
    w.failed(2, "OutOfMemoryError")
    with pytest.raises(TinyccError, match="3 trials in a row failed, the last trial 3: OutOfMemoryError"):
        w.failed(3, "OutOfMemoryError")
    cpus = {"CPU": 2.0}
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(cluster_resources=lambda: dict(cpus)))
    monkeypatch.setattr(runner, "CLUSTER_CHECK_S", 0)
    monkeypatch.setattr(runner, "NO_CPU_GRACE_S", 0.2)
    w = runner._Watchdog(workers=1)
    w.check(1)
    cpus["CPU"] = 0.0
    w.check(1)
    time.sleep(0.3)
    with pytest.raises(TinyccError, match="no CPU"):
        w.check(1)


def test_simulate_work_is_bounded(tmp_path: Path) -> None:
    r = tinycc("simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--runs", "1000",
               "--epochs", "1000", "--buffer", "1000", "-o", str(tmp_path / "s"))
    assert_clean_error(r, 2, "classifier updates", "limit")
    assert not (tmp_path / "s").exists()
    r = tinycc("simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--epochs", "99999999",
               "-o", str(tmp_path / "s"))
    assert_clean_error(r, 2, "--epochs", "1..1000")
    r = tinycc("simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--seed", "2147483648",
               "-o", str(tmp_path / "s"))
    assert_clean_error(r, 2, "--seed", "0..2147483647")
