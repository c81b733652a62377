"""Arduino backend: serial protocol end to end (host build over a pipe), AVR build + simavr self-test, budgets."""
from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.arduino import CORE_RESERVE, ArduinoBackend
from tinycc.backends.demo import report_predictions
from tinycc.errors import BudgetError
from tinycc.ir.simulator import Simulator
from tinycc.plugins.applications import serial_proto
from .deploy_util import emit, build_deployment

from . import arduino_harness

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"


def _deployment(session, degrade: bool = False, **opts):
    g = session.registry.frontend_for(str(MODEL)).load(str(MODEL))
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


_SEQ = [0]


def frame(cmd: bytes, payload: bytes = b"", bad_checksum: bool = False, seq: int | None = None) -> bytes:
    """A protocol-2 request (0xA5 CMD SEQ LEN PAYLOAD CRC16), each with the next SEQ unless one is given."""
    if seq is None:
        _SEQ[0] = (_SEQ[0] + 1) & 0xFF
        seq = _SEQ[0]
    f = bytearray(serial_proto.frame(cmd, payload, seq))
    if bad_checksum:
        f[-1] ^= 0x01
    return bytes(f)


def read_reply(stream) -> tuple[bytes, bytes]:
    """One reply frame from a byte stream, its CRC checked: (command, payload)."""
    assert stream.read(1) == b"\x5a"
    head = stream.read(6)
    n = struct.unpack("<I", head[2:])[0]
    payload = stream.read(n)
    crc = struct.unpack("<H", stream.read(2))[0]
    assert crc == serial_proto.crc16(head + payload)
    return head[:1], payload


def asker(p: subprocess.Popen) -> Callable[[bytes], tuple[bytes, bytes]]:
    """``ask`` over the running host build ``p`` of the serial protocol: write one request frame, read its reply
    (command, payload)."""
    def ask(data: bytes) -> tuple[bytes, bytes]:
        p.stdin.write(data)
        p.stdin.flush()
        return read_reply(p.stdout)

    return ask


@contextmanager
def protocol_host(exe: Path) -> Iterator[Callable[[bytes], tuple[bytes, bytes]]]:
    """Run ``exe`` (a host build of the serial protocol, arduino_harness.build_host_proto) and give its ``asker``.
    On leaving, stdin closes and ``exe`` must exit 0 (30 s)."""
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield asker(p)
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0


def status_of(payload: bytes) -> tuple[int, int, int, int]:
    """(version, classes, count, capacity) of a status reply."""
    return struct.unpack("<BBII", payload)


@pytest.fixture(scope="module")
def host_proto(tmp_path_factory, session_module):
    dep, d = _deployment(session_module)
    out = tmp_path_factory.mktemp("ard")
    emit(ArduinoBackend(), dep, {}, out)
    return dep, d, arduino_harness.build_host_proto(out, dep.name, out / "proto_host")


@pytest.fixture(scope="module")
def session_module():
    from tinycc.session import Session

    return Session(autoload=False)


def test_sketch_readme_names_the_boards_fqbn(host_proto, session_module) -> None:
    """--board mega2560 resolves the board once: its registered FQBN reaches the sketch's README."""
    dep, _, exe = host_proto
    fqbn = session_module.registry.board("mega2560").fqbn
    assert fqbn and dep.board.fqbn == fqbn
    readme = (exe.parent / dep.name / "README.md").read_text()
    assert f"arduino-cli compile --fqbn {fqbn} ." in readme and "--fqbn BOARD" not in readme


def test_protocol_end_to_end(host_proto) -> None:
    dep, d, exe = host_proto
    sim = Simulator(dep)
    with protocol_host(exe) as ask:
        x = d["x_test"][:5].astype(np.float32)
        for i in range(5):
            cmd, pl = ask(frame(b"P", x[i].tobytes()))
            k, probs = pl[0], np.frombuffer(pl[1:], np.float32)
            ks, ps = sim.predict(x[i:i + 1])
            assert cmd == b"P" and k == ks[0]
            np.testing.assert_allclose(probs, ps[0], atol=1e-5)
        status = ask(frame(b"S"))[1]
        assert status_of(status) == (serial_proto.PROTO_VERSION, 10, 0, dep.buffer.capacity)
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
            assert cmd == b"L" and struct.unpack("<I", pl)[0] == i + 1
        k, pl = ask(frame(b"P", x[3].tobytes()))
        np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), sim.predict(x[3:4])[1][0], atol=1e-5)
        mem = struct.unpack("<III", ask(frame(b"M"))[1])
        assert mem[1] == dep.memory["ram"] and mem[2] == dep.memory["flash"]
        assert ask(frame(b"R")) == (b"R", b"\x00\x00\x00\x00")


@pytest.mark.skipif(not arduino_harness.available(), reason="arduino-builder/simavr/avr-gcc not installed")
def test_mega2560_selftest_in_simavr(session, tmp_path: Path) -> None:
    dep, d = _deployment(session, degrade=True, buffer=40)
    x, y = d["x_test"][:16].astype(np.float32), d["y_test"][:16].astype(np.int64)
    be = ArduinoBackend()
    emit(be, dep, {"selftest": True, "test_vectors": (x, y), "test_count": 16, "test_learn": 48}, tmp_path)
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
    model_static = dep.memory["static_ram"] - CORE_RESERVE
    assert 0 <= ram - model_static <= 600, (ram, model_static)
    assert flash > next(i["bytes"] for i in dep.memory["items"] if i["name"] == "extractor weights")


def test_board_too_small_fails_with_shortfall(session, tmp_path: Path) -> None:
    from .deploy_util import compile_model

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


def _trace(exe: Path, data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Feed DATA to the fuzzer's driver (ASan/UBSan); every reply as (offset of the byte that completed its
    request, command, payload), each checked to be one well-formed reply frame."""
    r = subprocess.run([str(exe)], input=data, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    out, i, replies = r.stdout, 0, []
    while i < len(out):
        off, n = struct.unpack_from("<II", out, i)
        rep = out[i + 8:i + 8 + n]
        assert rep[0] == 0x5A and len(rep) >= 9 and struct.unpack_from("<I", rep, 3)[0] == n - 9, rep[:9]
        assert struct.unpack_from("<H", rep, n - 2)[0] == serial_proto.crc16(rep[1:-2]), "reply CRC"
        replies.append((off, rep[1:2], rep[7:-2]))
        i += 8 + n
    return replies


@pytest.fixture(scope="module")
def fuzz_proto(host_proto, tmp_path_factory):
    """The fuzzer's driver over the same generated sketch sources, and the board's largest legal payload as the
    generated header states it."""
    import re

    dep, d, exe = host_proto
    project = exe.parent
    header = (project / dep.name / "src" / "tinycc_proto.h").read_text()
    max_payload = int(re.search(r"#define TCC_PROTO_MAX_PAYLOAD (\d+)UL", header).group(1))
    trace = arduino_harness.build_host_proto(project, dep.name, project / "proto_trace", arduino_harness.TRACE_MAIN)
    return dep, d, trace, max_payload


def test_protocol_length_limit_is_the_models_largest_request(fuzz_proto) -> None:
    """The largest legal request is 'L' with the float input + a label; one byte more is refused right after the
    length field (issue #19: a length above the largest legal frame is rejected at once, nothing is skipped)."""
    dep, d, exe, mx = fuzz_proto
    n_in = int(np.prod(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:]))
    assert mx == max(4 * n_in, dep.feature_count) + 1
    x = d["x_test"][0].astype(np.float32).tobytes()
    ok = frame(b"L", x + bytes([int(d["y_test"][0])]))
    too_long = frame(b"L", x + b"\x00\x00")
    replies = _trace(exe, ok + too_long + frame(b"S"))
    assert [(c, p) for _, c, p in replies[:2]] == [(b"L", b"\x01\x00\x00\x00"), (b"E", b"\x05")]
    assert replies[1][0] == len(ok) + 6  # the 4th length byte
    assert replies[-1][1] == b"S" and status_of(replies[-1][2])[2] == 1
    # issue #19's deaf board: a noisy 16-bit-era header A5 ?? FF FF, or a 32-bit length of 0xFFFFFFFF
    s = frame(b"S")
    for junk in (b"\xa5\x53\xff\xff", b"\xa5\x00\xff\xff", b"\xa5\x50\x00\xff\xff\xff\xff", b"\xa5\xa5\xff\xff"):
        replies = _trace(exe, junk + s * 3)
        answered = [off for off, c, _ in replies if c == b"S"]
        assert answered and answered[0] < len(junk) + 2 * len(s), (junk, replies)
    replies = _trace(exe, b"\xa5\x50\x00\xff\xff\xff\xff" + s)
    assert [(off, c, p) for off, c, p in replies] == [(6, b"E", b"\x05"), (6 + len(s), b"S", replies[1][2])]


def _garbage(rng: np.random.Generator, valid: list[bytes], mx: int) -> bytes:
    """One piece of noise: random bytes, a truncated valid frame, an oversized header (+ some payload), a frame
    with a bad checksum, a legal header with random payload, a noisy 16-bit-era header, or several of these."""
    kind = int(rng.integers(7))
    if kind == 0:
        return rng.integers(0, 256, int(rng.integers(1, 3 * mx)), dtype=np.uint8).tobytes()
    if kind == 1:
        f = valid[int(rng.integers(len(valid)))]
        return f[:int(rng.integers(1, len(f)))]
    if kind == 2:
        n = int(rng.integers(mx + 1, 2 ** 32))
        tail = rng.integers(0, 256, int(rng.integers(0, mx)), dtype=np.uint8).tobytes()
        return b"\xa5" + rng.integers(0, 256, 2, dtype=np.uint8).tobytes() + struct.pack("<I", n) + tail
    if kind == 3:  # a valid frame with 1 to 4 bytes after its start byte replaced (CRC bytes included)
        f = bytearray(valid[int(rng.integers(len(valid)))])
        for _ in range(int(rng.integers(1, 5))):
            j = int(rng.integers(1, len(f)))
            f[j] = (f[j] + int(rng.integers(1, 256))) % 256
        return bytes(f)
    if kind == 4:
        n = int(rng.integers(0, mx + 1))
        return (b"\xa5" + rng.integers(0, 256, 2, dtype=np.uint8).tobytes() + struct.pack("<I", n)
                + rng.integers(0, 256, n + 2, dtype=np.uint8).tobytes())
    if kind == 5:
        return b"\xa5" + bytes([int(rng.integers(256))]) + b"\xff\xff"
    return b"".join(_garbage(rng, valid, mx) for _ in range(int(rng.integers(2, 5))))


def _probe() -> bytes:
    """A status request with no 0xA5 after its start byte (a SEQ chosen so), the resynchronisation probe."""
    return next(f for q in range(256) if 0xA5 not in (f := frame(b"S", seq=q))[1:])


def test_protocol_fuzzer_recovers_after_any_garbage(fuzz_proto) -> None:
    """Issue #19's protocol fuzzer (seeded, bounded: 2,000 rounds and 10 kB of random bytes, a few seconds): random,
    truncated, oversized and corrupted frames (1 to 4 bytes changed, CRC included) through the host build
    (ASan/UBSan); after each piece of garbage the board answers a valid status frame within one largest frame of
    traffic, every reply is a well-formed frame and a predict sent after that equals the simulator. Issue #29: with
    the CRC-16 no corrupted frame is accepted: no reply other than an error ever comes from the garbage, so the
    classifier never moves and every predict is exact."""
    dep, d, exe, mx = fuzz_proto
    sim = Simulator(dep)
    max_frame = mx + 9
    x = d["x_test"][:8].astype(np.float32)
    valid = ([frame(b"P", xi.tobytes()) for xi in x] + [frame(b"L", xi.tobytes() + b"\x03") for xi in x]
             + [frame(c) for c in (b"S", b"M", b"R")])
    s = _probe()
    probes = s * (max_frame // len(s) + 3)
    rng = np.random.default_rng(19)
    pieces = [rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()]  # issue #19: 10 kB of garbage
    pieces += [_garbage(rng, valid, mx) for _ in range(2000)]
    stream, rounds, ours = b"", [], set()
    for g in pieces:
        stream += g
        rounds.append(len(stream))
        i = int(rng.integers(len(x)))
        for f in [s] * (len(probes) // len(s) + 1) + [frame(b"P", x[i].tobytes())]:
            stream += f  # the probes, then a predict once the board has answered one
            ours.add(len(stream) - 1)
        rounds.append(i)
    replies = _trace(exe, stream)
    ks, probs = sim.predict(x)
    assert all(c in b"ESP" for _, c, _ in replies)
    accepted = [(off, c) for off, c, _ in replies if c != b"E" and off not in ours]  # a corrupted frame answered
    assert accepted == [], accepted
    for r in range(len(pieces)):
        g_end, i = rounds[2 * r], rounds[2 * r + 1]
        end = g_end + len(probes) + len(s) + len(valid[i])
        mine = [(off, c, p) for off, c, p in replies if g_end <= off < end]
        first_s = next((off for off, c, p in mine if c == b"S" and len(p) == 10), None)
        assert first_s is not None and first_s - g_end < max_frame + 2 * len(s), (r, first_s, mine[:4])
        off, c, p = mine[-1]
        assert off == end - 1 and c == b"P" and len(p) == 1 + 4 * dep.num_outputs, (r, mine[-3:])
        assert p[0] == ks[i], (r, mine[-3:])
        np.testing.assert_allclose(np.frombuffer(p[1:], np.float32), probs[i], atol=1e-5)


def test_protocol_crc_rejects_compensating_corruptions(fuzz_proto) -> None:
    """Issue #29: two neighbouring bytes changed by +v and -v (v = 1, 65, 129, 193), anywhere after the start byte of a
    learn, predict and status request: protocol 1's 8-bit sum accepted every one of these; the CRC-16 (which
    detects every burst of up to 16 bits) refuses them all (error 1 or 5, or no reply) and nothing is learned."""
    dep, d, exe, mx = fuzz_proto
    x = d["x_test"][0].astype(np.float32).tobytes()
    s = _probe()
    stream, n = b"", 0
    for f in (frame(b"L", x + b"\x03"), frame(b"P", x), frame(b"S")):
        for j in range(1, len(f) - 1):
            for v in (1, 65, 129, 193):
                bad = bytearray(f)
                bad[j] = (bad[j] + v) % 256
                bad[j + 1] = (bad[j + 1] - v) % 256
                stream += bytes(bad) + s * (mx // len(s) + 3)
                n += 1
    replies = _trace(exe, stream)
    assert all(c in b"ES" for _, c, _ in replies), [r for r in replies if r[1] not in b"ES"][:3]
    assert all(status_of(p)[2] == 0 for _, c, p in replies if c == b"S")  # nothing was learned
    errors = [p for _, c, p in replies if c == b"E"]
    assert len(errors) == n and set(errors) <= {b"\x01", b"\x05"}  # one refusal per corrupted request


@pytest.mark.parametrize("case", ["label 300", "label -1", "label 2.5", "empty", "limit 0", "fewer labels", "nan"])
def test_serial_bad_stream_is_one_line_exit_2(tmp_path: Path, capsys, case: str) -> None:
    """Issue #19 item 8: a stream `tinycc serial` cannot send is refused before the port is opened: exit 2 and
    one `tinycc: ...` line (the port does not exist, so reaching it would be a different error)."""
    from tinycc.cli import main

    x, y = np.zeros((4, 8, 8), np.float32), np.array([1, 2, 3, 4])
    args: list[str] = []
    if case.startswith("label"):
        y = y.astype(np.float64)
        y[2] = float(case.split()[1])
    elif case == "empty":
        x, y = x[:0], y[:0]
    elif case == "limit 0":
        args = ["--limit", "0"]
    elif case == "fewer labels":
        y = y[:3]
    else:
        x[1, 2, 3] = np.nan
    np.savez(tmp_path / "s.npz", x=x, y=y)
    rc = main(["serial", "--port", str(tmp_path / "no-such-port"), "--data", str(tmp_path / "s.npz"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("tinycc: ") and err.count("\n") == 1, err
    assert "no-such-port" not in err, err
    expect = {"label 300": "label 300.0 of sample 2", "label -1": "label -1.0 of sample 2", "label 2.5": "label 2.5",
              "empty": "empty", "limit 0": "--limit must be at least 1", "fewer labels": "4 samples but labels",
              "nan": "NaN"}[case]
    assert expect in err, err


def test_serial_labels_beyond_the_boards_classes(host_proto, tmp_path: Path) -> None:
    """A label the board's classifier does not have (10 classes here) is one line and exit 2 once the board's
    status says how many classes it has; nothing is streamed."""
    import os
    import sys
    import tty

    dep, d, exe = host_proto
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    p = subprocess.Popen([str(exe)], stdin=master, stdout=master)
    np.savez(tmp_path / "s.npz", x=d["x_test"][:3].astype(np.float32), y=np.array([1, 10, 2]))
    try:
        r = subprocess.run([sys.executable, "-m", "tinycc.cli", "serial", "--port", os.ttyname(slave), "--data",
                            str(tmp_path / "s.npz"), "-o", str(tmp_path / "run"), "--timeout", "20"],
                           capture_output=True, text=True, timeout=300)
    finally:
        p.kill()
        os.close(master)
        os.close(slave)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "label 10 is beyond the board's 10 classes (0..9)" in r.stderr and not (tmp_path / "run.csv").exists()
