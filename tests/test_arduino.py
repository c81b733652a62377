"""Arduino backend: serial protocol end to end (host build over a pipe), AVR build + simavr self-test, budgets."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.arduino import CORE_RESERVE, ArduinoBackend
from tinycc.backends.demo import report_predictions
from tinycc.errors import BudgetError
from tinycc.ir.simulator import Simulator
from tinycc.plugins.ondevice import build_deployment

from . import arduino_harness

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"


def _deployment(session, degrade: bool = False, **opts):
    g = session.registry.frontend_for(str(MODEL)).load(str(MODEL), {})
    from tinycc.passes import PassContext, run_pipeline

    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    d = np.load(DATA)
    dep = build_deployment(g, {"calib_data": d["x_train"][:200], "board": "mega2560", "lr": 0.05, **opts},
                           session, ArduinoBackend())
    if degrade:  # learning must recover from a damaged classifier
        rng = np.random.default_rng(0)
        for l in dep.classifier:
            l.weight[...] = rng.normal(0, 0.05, l.weight.shape).astype(np.float32)
            l.bias[...] = 0
    return dep, d


def frame(cmd: bytes, payload: bytes = b"", bad_checksum: bool = False) -> bytes:
    body = cmd + struct.pack("<H", len(payload)) + payload
    chk = sum(body) % 256
    return b"\xa5" + body + bytes([(chk + 1) % 256 if bad_checksum else chk])


def read_reply(stream) -> tuple[bytes, bytes]:
    assert stream.read(1) == b"\x5a"
    cmd = stream.read(1)
    n = struct.unpack("<H", stream.read(2))[0]
    payload = stream.read(n)
    chk = stream.read(1)[0]
    assert chk == (sum(cmd) + (n & 255) + (n >> 8) + sum(payload)) % 256
    return cmd, payload


@pytest.fixture(scope="module")
def host_proto(tmp_path_factory, session_module):
    dep, d = _deployment(session_module)
    out = tmp_path_factory.mktemp("ard")
    ArduinoBackend().emit(dep, {}, out)
    return dep, d, arduino_harness.build_host_proto(out, dep.name, out / "proto_host")


@pytest.fixture(scope="module")
def session_module():
    from tinycc.session import Session

    return Session(autoload=False)


def test_protocol_end_to_end(host_proto) -> None:
    dep, d, exe = host_proto
    sim = Simulator(dep)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        def ask(data: bytes) -> tuple[bytes, bytes]:
            p.stdin.write(data)
            p.stdin.flush()
            return read_reply(p.stdout)

        x = d["x_test"][:5].astype(np.float32)
        for i in range(5):
            cmd, pl = ask(frame(b"P", x[i].tobytes()))
            k, probs = pl[0], np.frombuffer(pl[1:], np.float32)
            ks, ps = sim.predict(x[i:i + 1])
            assert cmd == b"P" and k == ks[0]
            np.testing.assert_allclose(probs, ps[0], atol=1e-5)
        status = ask(frame(b"S"))[1]
        assert struct.unpack("<HHB", status) == (0, dep.buffer.capacity, 10)
        # errors: reply 'E' + code and nothing changes
        assert ask(frame(b"P", x[0].tobytes(), bad_checksum=True)) == (b"E", b"\x01")
        assert ask(frame(b"Z")) == (b"E", b"\x02")
        assert ask(frame(b"P", x[0].tobytes()[:-4])) == (b"E", b"\x03")
        assert ask(frame(b"L", x[0].tobytes() + b"\x0a")) == (b"E", b"\x04")
        assert ask(frame(b"L", b"\x00" * 2000)) == (b"E", b"\x05")
        assert ask(frame(b"S"))[1] == status
        # learning through the protocol equals the simulator
        for i in range(3):
            cmd, pl = ask(frame(b"L", x[i].tobytes() + bytes([int(d["y_test"][i])])))
            sim.learn(x[i], int(d["y_test"][i]))
            assert cmd == b"L" and struct.unpack("<H", pl)[0] == i + 1
        k, pl = ask(frame(b"P", x[3].tobytes()))
        np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), sim.predict(x[3:4])[1][0], atol=1e-5)
        mem = struct.unpack("<III", ask(frame(b"M"))[1])
        assert mem[1] == dep.memory["ram"] and mem[2] == dep.memory["flash"]
        assert ask(frame(b"R")) == (b"R", b"\x00\x00")
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0


@pytest.mark.skipif(not arduino_harness.available(), reason="arduino-builder/simavr/avr-gcc not installed")
def test_mega2560_selftest_in_simavr(session, tmp_path: Path) -> None:
    dep, d = _deployment(session, degrade=True, buffer=40)
    x, y = d["x_test"][:16].astype(np.float32), d["y_test"][:16].astype(np.int64)
    be = ArduinoBackend()
    be.emit(dep, {"selftest": True, "test_vectors": (x, y), "test_count": 16, "test_learn": 48}, tmp_path)
    elf, flash, ram = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path)
    lines = arduino_harness.run_simavr(elf)
    # the self-test prints the demo's short report: prediction table, accuracy before/after, buffer, time, memory
    report = lines[lines.index(next(l for l in lines if l.startswith("tinycc demo"))):]
    assert report[-1] == "done" and len(report) < 40, report
    rows = report_predictions("\n".join(report))
    assert rows["vector"] == list(range(16)) and rows["expected"] == list(y)
    sim = Simulator(dep)
    assert rows["before"] == list(sim.predict(x)[0])
    for i in range(48):
        sim.learn(x[i % 16], int(y[i % 16]))
    sim_after = sim.predict(x)[0]
    assert rows["after"] == list(sim_after)
    acc = next(l for l in report if l.startswith("accuracy: ")).split()
    before_acc, after_acc = int(acc[1].split("/")[0]), int(acc[5].split("/")[0])
    assert after_acc > before_acc and after_acc == int((sim_after == y).sum())
    assert f"replay buffer: {min(48, dep.buffer.capacity)}/{dep.buffer.capacity} entries" in report
    assert any(l.startswith("time per call (micros()): predict ") for l in report)
    assert f"RAM {dep.memory['ram']} B, flash {dep.memory['flash']} B" in next(l for l in report if l.startswith("memory:"))
    # static RAM: the model's arrays (memory model minus the core/stack reserve) plus the Arduino core's
    # globals and the self-test staging vector: documented tolerance 600 bytes
    model_static = dep.memory["ram"] - CORE_RESERVE
    assert 0 <= ram - model_static <= 600, (ram, model_static)
    assert flash > next(i["bytes"] for i in dep.memory["items"] if i["name"] == "extractor weights")


def test_board_too_small_fails_with_shortfall(session, tmp_path: Path) -> None:
    from tinycc.driver import compile_model

    with pytest.raises(BudgetError, match=r"RAM needs [\d,]+ bytes but board uno allows 2,048: short by"):
        compile_model(str(MODEL), "arduino", str(tmp_path / "o"), {"calib": str(DATA), "board": "uno"}, session)
    assert not (tmp_path / "o").exists()


def test_serial_companion_over_pty(host_proto, tmp_path: Path) -> None:
    """`tinycc serial` against the host build of the sketch's runtime, through a pseudo-terminal."""
    import os
    import sys
    import tty

    dep, d, exe = host_proto
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    p = subprocess.Popen([str(exe)], stdin=master, stdout=master)
    stream = tmp_path / "stream.npz"
    np.savez(stream, x=d["x_test"][:12].astype(np.float32), y=d["y_test"][:12])
    try:
        r = subprocess.run([sys.executable, "-m", "tinycc.cli", "serial", "--port", os.ttyname(slave), "--data",
                            str(stream), "-o", str(tmp_path / "run"), "--timeout", "20"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        rows = (tmp_path / "run.csv").read_text().splitlines()
        assert rows[0].startswith("sample,label,predicted") and len(rows) == 13
        assert rows[-1].split(",")[-1] == str(min(12, dep.buffer.capacity))
        assert (tmp_path / "run.png").stat().st_size > 1000
    finally:
        p.kill()
        os.close(master)
        os.close(slave)
