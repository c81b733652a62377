"""`tinycc serial`'s host side against a simulated line (issue #29): the host-side fuzzer (random, truncated, garbled,
empty, stale and delayed replies, a port that streams noise, a port that fails), the protocol version check, the
option checks, and a board lost mid-stream (partial CSV, exit 3). No compiler, no TensorFlow: a few seconds."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError
from tinycc.plugins.applications import serial_proto
from tinycc.plugins.applications.serial_proto import Board, BoardLost, crc16, frame

CLASSES, CAPACITY, OUTPUTS = 3, 453_330, 3  # issue #29: a capacity above 65,535 (protocol 1 sent 60,114)


def test_crc16_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1 and crc16(b"") == 0xFFFF
    f = frame(b"S", b"", 7)
    assert f[:3] == b"\xa5S\x07" and struct.unpack("<I", f[3:7])[0] == 0
    assert struct.unpack("<H", f[7:])[0] == crc16(f[1:7])


def test_host_and_generated_board_agree_on_the_version() -> None:
    from tinycc.backends.arduino import PROTO_VERSION

    assert serial_proto.PROTO_VERSION == PROTO_VERSION == 2


class SimBoard:
    """The board's side in Python, for the host's tests: status, predict (class = int(sum(x)) % 3), learn (count +1,
    a repeated SEQ answered again without learning)."""

    def __init__(self) -> None:
        self.count, self.learned, self.last = 0, 0, None

    def answer(self, req: bytes) -> tuple[bytes, bytes, int]:
        cmd, seq, n = req[1:2], req[2], struct.unpack_from("<I", req, 3)[0]
        payload = req[7:7 + n]
        if cmd == b"S":
            self.last = None
            return cmd, bytes([2, CLASSES]) + struct.pack("<II", self.count, CAPACITY), seq
        if cmd == b"P":
            x = np.frombuffer(payload, "<f4")
            p = np.full(OUTPUTS, 1 / OUTPUTS, np.float32)
            return cmd, bytes([int(x.sum()) % CLASSES]) + p.tobytes(), seq
        if cmd == b"L":
            if self.last != (seq, req):
                self.count, self.learned, self.last = self.count + 1, self.learned + 1, (seq, req)
            return cmd, struct.pack("<I", self.count), seq
        return b"E", b"\x02", seq


MUTATIONS = ("clean", "truncated", "empty", "garbage", "garbled", "delayed", "late", "stale", "noise-prefix",
             "damaged", "error-empty", "error-long", "short-status", "long-len", "port-error", "duplicate")


class FuzzPort:
    """A serial port on a simulated clock: each request's reply is mutated as the RNG draws (MUTATIONS); reads
    return what has 'arrived' by now, or nothing after a read slice of simulated time."""

    def __init__(self, rng: np.random.Generator, board: SimBoard, p_bad: float = 0.5) -> None:
        self.rng, self.board, self.p_bad = rng, board, p_bad
        self.now, self.inbox = 0.0, []  # (arrival time, bytes)
        self.kinds: list[str] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s

    def reset_input_buffer(self) -> None:
        self.inbox = [(t, b) for t, b in self.inbox if t > self.now]  # only what has arrived is dropped

    def write(self, req: bytes) -> None:
        r = self.rng
        kind = "clean" if r.random() > self.p_bad else MUTATIONS[int(r.integers(1, len(MUTATIONS)))]
        self.kinds.append(kind)
        if kind == "port-error":
            raise OSError(5, "Input/output error")
        cmd, payload, seq = self.board.answer(req)
        reply = frame(cmd, payload, seq, start=0x5A)
        noise = r.integers(0, 256, int(r.integers(1, 64)), dtype=np.uint8).tobytes()
        at = self.now + float(r.uniform(0, 0.01))
        out = {"clean": reply, "truncated": reply[:int(r.integers(1, len(reply)))], "empty": b"",
               "garbage": noise, "noise-prefix": noise.replace(b"\x5a", b"\x00") + reply,
               "damaged": frame(b"E", bytes([int(r.choice([1, 5]))]), seq, start=0x5A),
               "error-empty": frame(b"E", b"", seq, start=0x5A),
               "error-long": frame(b"E", b"\x01\x02", seq, start=0x5A),
               "short-status": frame(cmd, payload[:5], seq, start=0x5A),
               "long-len": b"\x5a" + cmd + bytes([seq]) + struct.pack("<I", 0xFFFFFF) + payload,
               "stale": frame(cmd, payload, (seq - 1) & 0xFF, start=0x5A) + reply,
               "duplicate": reply + reply}.get(kind)
        if kind == "garbled":
            b = bytearray(reply)
            j = int(r.integers(1, len(b)))
            b[j] ^= int(r.integers(1, 256))
            out = bytes(b)
        elif kind in ("delayed", "late"):  # within the try's deadline, or long after it
            out, at = reply, self.now + (float(r.uniform(0.1, 0.9)) if kind == "delayed" else float(r.uniform(1.5, 5)))
        if out:
            self.inbox.append((at, out))

    def read(self, n: int) -> bytes:
        ready = [i for i, (t, _) in enumerate(self.inbox) if t <= self.now]
        if not ready:
            self.now += 0.05  # pyserial's read timeout slice
            return b""
        i = ready[0]
        t, data = self.inbox[i]
        if len(data) > n:
            self.inbox[i] = (t, data[n:])
            return data[:n]
        del self.inbox[i]
        return data


def _board(port: FuzzPort, retries: int = 4) -> Board:
    return Board(port, timeout=1.0, retries=retries, resync_s=0.15, clock=port.clock, sleep=port.sleep)


def test_host_side_fuzzer_never_crashes_and_always_terminates() -> None:
    """Issue #29, Deliver 4: 3,000 requests, half of them answered wrongly (every kind in MUTATIONS, seeded). Every
    call returns the true answer or raises BoardLost (all of its tries failed), nothing else; each call ends within
    its bound of simulated time, (retries + 1) x (timeout + a read slice) + retries x resync; no sample is learned
    twice; the errors are counted by kind."""
    rng = np.random.default_rng(29)
    sim = SimBoard()
    port = FuzzPort(rng, sim)
    board = _board(port)
    bound = 5 * (1.0 + 0.05) + 4 * 0.15 + 1e-9
    ok = lost = asked_learn = 0
    t0 = time.monotonic()
    for i in range(3000):
        x = rng.normal(0, 2, 4).astype(np.float32)
        start = port.now
        op = int(rng.integers(3))
        try:
            if op == 0:
                st = board.status()
                assert st == (2, CLASSES, sim.count, CAPACITY)
            elif op == 1:
                assert board.predict(x) == int(x.sum()) % CLASSES
            else:
                asked_learn += 1
                before = sim.learned
                assert board.learn(x, 1) == sim.count and sim.learned == before + 1
            ok += 1
        except BoardLost as e:
            lost += 1
            assert "tries" in str(e) or "wrong shape" in str(e)
        assert port.now - start <= bound, (i, port.now - start, port.kinds[-6:])
    assert sim.learned <= asked_learn and ok > 2500 and lost < 100, (ok, lost)
    assert time.monotonic() - t0 < 60
    kinds = dict(board.errors)
    for k in ("short", "garbled", "late", "damaged", "port", "stale"):
        assert kinds.get(k, 0) > 0, kinds
    assert board.summary().startswith(f"{sum(kinds.values())} protocol errors retried (")


def test_a_port_that_streams_noise_ends_within_the_bound() -> None:
    """Issue #29: a port that never stops sending random bytes (no 0x5A frame ever checks out): each try ends at its
    deadline, the request after retries + 1 tries, with BoardLost (exit 3) and no other error."""
    rng = np.random.default_rng(3)

    class Noise:
        now = 0.0

        def write(self, b: bytes) -> None:
            pass

        def read(self, n: int) -> bytes:
            self.now += n / 11520  # 115200 baud
            return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    port = Noise()
    board = Board(port, timeout=2.0, retries=3, clock=lambda: port.now,
                  sleep=lambda s: setattr(port, "now", port.now + s))
    t0 = time.monotonic()
    with pytest.raises(BoardLost, match=r"did not answer 'S' in 4 tries of 2 s") as e:
        board.status()
    assert e.value.exit_code == 3 and port.now <= 4 * 2.01 + 3 * 0.15 and time.monotonic() - t0 < 20


def test_a_board_of_another_protocol_version_is_one_clear_error() -> None:
    """A protocol-1 board (8-bit sum, no SEQ) cannot parse our frames: it answers with version-1 error frames, which
    the host recognises once its tries are spent; a board whose status reply carries another version says so."""

    class V1Board:
        now = 0.0
        pending = b""

        def write(self, b: bytes) -> None:  # protocol 1's answer to anything we send: 'E' 1 (bad checksum)
            body = b"E" + struct.pack("<I", 1) + b"\x01"
            self.pending += b"\x5a" + body + bytes([sum(body) % 256])

        def read(self, n: int) -> bytes:
            self.now += 0.05
            out, self.pending = self.pending[:n], self.pending[n:]
            return out

    port = V1Board()
    board = Board(port, timeout=0.5, retries=2, clock=lambda: port.now, sleep=lambda s: None)
    with pytest.raises(TinyccError, match="speaks tinycc serial protocol 1 .* this tinycc speaks protocol 2") as e:
        board.status()
    assert e.value.exit_code == 2

    class V3Board(V1Board):
        def write(self, b: bytes) -> None:
            self.pending += frame(b"S", bytes([3, 10]) + b"\x00" * 12, b[2], start=0x5A)

    port = V3Board()
    with pytest.raises(TinyccError, match="speaks tinycc serial protocol 3, this tinycc speaks protocol 2"):
        Board(port, timeout=0.5, retries=2, clock=lambda: port.now, sleep=lambda s: None).status()


@pytest.mark.parametrize("opt", ["--timeout -1", "--timeout inf", "--timeout nan", "--timeout 0", "--timeout 1e9",
                                 "--baud -5", "--baud 99999999999", "--baud 0", "--baud 9600.5", "--retries -1",
                                 "--retries 1001", "--timeout abc"])
def test_serial_options_are_checked(tmp_path: Path, capsys, opt: str) -> None:
    """Issue #29: bad --timeout/--baud/--retries are one line and exit 2 before anything is opened."""
    from tinycc.cli import main

    np.savez(tmp_path / "s.npz", x=np.zeros((2, 4), np.float32), y=np.array([0, 1]))
    with pytest.raises(SystemExit) as e:
        main(["serial", "--port", str(tmp_path / "no-such-port"), "--data", str(tmp_path / "s.npz"), *opt.split()])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"argument {opt.split()[0]}" in err, err


class DyingPort(FuzzPort):
    """A clean line whose board stops answering for good after `alive` requests (unplugged)."""

    def __init__(self, alive: int) -> None:
        super().__init__(np.random.default_rng(0), SimBoard(), p_bad=0.0)
        self.alive = alive

    def write(self, req: bytes) -> None:
        self.alive -= 1
        if self.alive >= 0:
            super().write(req)

    def read(self, n: int) -> bytes:
        out = super().read(n)
        if not out:
            time.sleep(0.001)  # the CLI's Board uses the real clock: keep the loop from spinning hot
        return out


def test_board_lost_mid_stream_writes_what_was_learned_and_exits_3(tmp_path: Path, capsys, monkeypatch) -> None:
    """`tinycc serial` against a board that stops answering after its 7th request (status, then 3 samples): exit 3,
    one line naming the samples done and the files, and the CSV (and plot) of those 3 samples written out."""
    import serial

    from tinycc.cli import main

    np.savez(tmp_path / "s.npz", x=np.arange(40, dtype=np.float32).reshape(10, 4), y=np.arange(10) % 3)
    monkeypatch.setattr(serial, "Serial", lambda *a, **k: _Ctx(DyingPort(7)))
    rc = main(["serial", "--port", "fake", "--data", str(tmp_path / "s.npz"), "-o", str(tmp_path / "run"),
               "--timeout", "0.2", "--retries", "1"])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1, err
    assert "stopped after 3 of 10 samples" in err and "run.csv" in err, err
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0] == "sample,label,predicted,running_accuracy,buffer"
    assert [r.split(",")[4] for r in rows[1:]] == ["1", "2", "3"]
    assert (tmp_path / "run.png").stat().st_size > 1000


class _Ctx:
    def __init__(self, port: FuzzPort) -> None:
        self.port = port

    def __enter__(self) -> FuzzPort:
        return self.port

    def __exit__(self, *a: object) -> None:
        pass


def test_connect_ends_within_10_s_when_nothing_answers() -> None:
    """Issue #29 (an unreachable peer within 10 s): the first status is asked every 2 s at most and given up after
    10 s in all, whatever --timeout says (simulated clock); a board that boots after 3 s is found."""
    for timeout in (10.0, 3600.0, 0.2):
        port = DyingPort(0)
        board = Board(port, timeout=timeout, retries=5, clock=port.clock, sleep=port.sleep)
        with pytest.raises(BoardLost):
            board.connect()
        assert port.now <= 10.0 + 0.06 and (board.timeout, board.retries) == (timeout, 5)

    class Booting(FuzzPort):
        def write(self, req: bytes) -> None:
            if self.now >= 3.0:
                super().write(req)

    port = Booting(np.random.default_rng(1), SimBoard(), p_bad=0.0)
    st = Board(port, timeout=10.0, clock=port.clock, sleep=port.sleep).connect()
    assert st.capacity == CAPACITY and 3.0 <= port.now <= 5.0


def test_no_board_on_the_port_is_one_line_exit_3(tmp_path: Path, capsys, monkeypatch) -> None:
    """`tinycc serial` on a port where nothing answers: one line naming the port and baud rate, exit 3, nothing
    written (the connect bound shortened to 1 s for the test)."""
    import serial

    from tinycc.cli import main

    np.savez(tmp_path / "s.npz", x=np.zeros((3, 4), np.float32), y=np.array([0, 1, 2]))
    monkeypatch.setattr(serial, "Serial", lambda *a, **k: _Ctx(DyingPort(0)))
    monkeypatch.setattr(serial_proto, "CONNECT_S", 1.0)
    t0 = time.monotonic()
    rc = main(["serial", "--port", "fake", "--data", str(tmp_path / "s.npz"), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1 and time.monotonic() - t0 < 5, err
    assert "no answer from fake within 1 s" in err and "at 115200 baud" in err, err
    assert not (tmp_path / "run.csv").exists()


@pytest.mark.parametrize("stop", ["interrupt", "refusal"])
def test_stream_writes_the_samples_done_when_stopped(tmp_path: Path, stop: str) -> None:
    """Ctrl-C, or a request the board refuses (here: error 6, NaN), mid-stream: the CSV of the samples done so far
    is written before the error goes on."""
    from tinycc.plugins.applications.serial_cmd import stream

    class Stopping(FuzzPort):
        def write(self, req: bytes) -> None:
            if len(self.kinds) == 6:  # the 4th sample's predict
                if stop == "interrupt":
                    raise KeyboardInterrupt
                self.kinds.append("refused")
                self.inbox.append((self.now, frame(b"E", b"\x06", req[2], start=0x5A)))
                return
            super().write(req)

    port = Stopping(np.random.default_rng(0), SimBoard(), p_bad=0.0)
    board = _board(port)
    x, y = np.arange(40, dtype=np.float32).reshape(10, 4), np.arange(10) % 3
    with pytest.raises(KeyboardInterrupt if stop == "interrupt" else TinyccError) as e:
        stream(board, x, y, tmp_path / "run", progress=False)
    if stop == "refusal":
        assert e.value.exit_code == 2 and "NaN" in str(e.value) and "stopped after 3 of 10 samples" in str(e.value)
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"] and (tmp_path / "run.png").exists()
