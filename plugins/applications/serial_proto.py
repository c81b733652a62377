"""The host side of the tinycc serial protocol (version 2): frames, CRC-16 and a `Board` that survives the line.

Frames, both directions (the board's side: backends/arduino/templates/tinycc_proto.c.j2)::

    request: 0xA5 CMD SEQ LEN[4] PAYLOAD CRC[2]      reply: 0x5A CMD SEQ LEN[4] PAYLOAD CRC[2]

LEN is uint32 little-endian; CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of CMD SEQ LEN PAYLOAD,
little-endian; the reply echoes the request's SEQ. A short, empty, garbled (bad CRC, impossible length) or late
reply, or a board error saying the request arrived damaged (1 bad CRC, 5 bad length), is a *protocol error*:
`Board.ask` resynchronises (unless a whole frame came back, so the board is waiting for the next one, it first
waits ``resync_s`` for the board to drop a partial frame: the sketch does after 100 ms of silence), empties the
input and sends the same request again, at most ``retries`` more times, each try bounded by ``timeout`` seconds
in all however fast bytes arrive. A learn or reset sent again with the same SEQ is not executed twice by
the board (it repeats its reply), so retries never learn a sample twice. When every try fails, `BoardLost`.
"""
from __future__ import annotations

import binascii
import struct
import time
from collections import Counter
from typing import Any, Callable, NamedTuple

from ...errors import TinyccError

PROTO_VERSION = 2  # = tinycc.backends.arduino.PROTO_VERSION (the first byte of the status reply)
ERRORS = {1: "bad checksum", 2: "unknown command", 3: "bad length", 4: "label out of range",
          5: "payload longer than the model's largest request", 6: "NaN or infinity in the input or target",
          7: "this build is inference-only",
          8: "update refused: it would make a classifier weight non-finite (nothing changed)"}
DAMAGED = (1, 5)  # error codes that say the request arrived damaged: sent again
MAX_LEN = 0xFFFFFFFF  # the 32-bit LEN field
MAX_REPLY = 4096  # no tinycc reply is longer (predict: 1 + 4 x 256 outputs; status: 10): a longer LEN is garbage
HEAD = 7  # 0x5A CMD SEQ LEN[4]
RESYNC_S = 0.15  # > TCC_PROTO_TIMEOUT_MS (100 ms): the board has dropped any partial frame
CONNECT_S = 10.0  # the session's first status: answered within this, or the board is taken as absent
CONNECT_TRY_S = 2.0  # ... asked again every 2 s at most (a board that resets when the port opens boots meanwhile)


class ProtocolError(Exception):
    """A retryable reply problem; ``kind`` is one of short, garbled, late, damaged, port."""

    def __init__(self, kind: str, detail: str, quiet: bool = True) -> None:
        super().__init__(detail)
        self.kind, self.quiet = kind, quiet  # quiet: wait for the board to drop a partial frame before a retry


class BoardLost(TinyccError):
    """The board stopped answering (every try of a request failed): exit code 3."""

    exit_code = 3


class Status(NamedTuple):
    version: int
    classes: int
    count: int
    capacity: int


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE ("123456789" -> 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


def frame(cmd: bytes, payload: bytes = b"", seq: int = 0, start: int = 0xA5) -> bytes:
    """One frame: START CMD SEQ LEN(uint32 LE) PAYLOAD CRC16(LE) (start 0x5A: a reply, as the board sends it)."""
    if len(payload) > MAX_LEN:
        raise TinyccError(f"a serial frame carries at most {MAX_LEN:,} bytes, not {len(payload):,}")
    body = cmd + bytes([seq & 0xFF]) + struct.pack("<I", len(payload)) + payload
    return bytes([start]) + body + struct.pack("<H", crc16(body))


def v1_frame_in(data: bytes) -> bool:
    """Whether DATA holds a reply frame of protocol version 1 (0x5A CMD LEN[4] PAYLOAD CHK, 8-bit sum)."""
    for i in range(len(data) - 6):
        if data[i] != 0x5A:
            continue
        n = struct.unpack_from("<I", data, i + 2)[0]
        end = i + 6 + n
        if n <= 16 and end < len(data) and data[end] == sum(data[i + 1:end]) % 256:
            return True
    return False


class Board:
    """The host side of the protocol over any object with read(n)/write(b) (a pyserial port opened with a short
    read timeout). ``timeout``: seconds for one try (request sent to reply read); ``retries``: further tries of a
    request; ``clock``/``sleep``: time.monotonic/time.sleep (the fuzzer passes a simulated clock). ``errors``
    counts the protocol errors by kind, ``raw`` keeps the last bytes read (for the version 1 diagnosis)."""

    def __init__(self, port: Any, timeout: float = 10.0, retries: int = 5, resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.port, self.timeout, self.retries, self.resync_s = port, float(timeout), int(retries), float(resync_s)
        self.clock, self.sleep = clock, sleep
        self.seq = 0
        self.errors: Counter[str] = Counter()
        self.raw = b""

    # ---- one try ----
    def _more(self, buf: bytearray, need: int, deadline: float) -> None:
        """Read until BUF holds NEED bytes; ProtocolError when the try's deadline passes first."""
        while len(buf) < need:
            if self.clock() > deadline:
                raise ProtocolError("short" if buf else "late", "the reply stopped short" if buf else "no reply")
            try:
                data = self.port.read(need - len(buf))
            except OSError as e:  # pyserial's SerialException is an OSError: the port went away or failed
                raise ProtocolError("port", f"port error: {e}") from None
            if data:
                buf += data
                self.raw = (self.raw + bytes(data))[-256:]

    def _try(self, request: bytes, seq: int) -> tuple[bytes, bytes]:
        deadline = self.clock() + self.timeout
        try:
            self.port.write(request)
        except OSError as e:
            raise ProtocolError("port", f"port error: {e}") from None
        buf = bytearray()
        while True:
            i = buf.find(0x5A)
            if i < 0:
                buf.clear()
                self._more(buf, 1, deadline)
                continue
            del buf[:i]
            self._more(buf, HEAD, deadline)
            n = struct.unpack_from("<I", buf, 3)[0]
            if n > MAX_REPLY:
                raise ProtocolError("garbled", f"garbled reply (length {n:,})")
            self._more(buf, HEAD + n + 2, deadline)
            body = bytes(buf[1:HEAD + n])
            if struct.unpack_from("<H", buf, HEAD + n)[0] != crc16(body):  # a whole frame: no need to wait
                raise ProtocolError("garbled", "garbled reply (CRC)", quiet=False)
            del buf[:HEAD + n + 2]
            if body[1] != seq:  # a late reply to an earlier try or request: not this one's
                self.errors["stale"] += 1
                continue
            return body[:1], body[6:]

    # ---- requests ----
    def ask(self, cmd: bytes, payload: bytes = b"") -> tuple[bytes, bytes]:
        """Send one request until a well-formed reply with its SEQ arrives; (reply command, payload). A board error
        other than a damaged request is returned as (b"E", code byte)."""
        self.seq = (self.seq + 1) & 0xFF
        request = frame(cmd, payload, self.seq)
        last, quiet = "", False
        for attempt in range(self.retries + 1):
            if attempt and quiet:
                self.sleep(self.resync_s)  # the board drops a partial frame; then forget what is left on the line
            if hasattr(self.port, "reset_input_buffer"):
                try:
                    self.port.reset_input_buffer()
                except OSError:
                    pass
            try:
                c, data = self._try(request, self.seq)
            except ProtocolError as e:
                self.errors[e.kind] += 1
                last, quiet = str(e), e.quiet
                continue
            if c == b"E" and len(data) == 1 and data[0] in DAMAGED:
                self.errors["damaged"] += 1
                last = f"the board received a damaged request ({ERRORS[data[0]]})"
                quiet = data[0] != 1  # a CRC error: the board read the whole frame and waits for the next one
                continue
            if c == b"E" and len(data) != 1:
                self.errors["garbled"] += 1
                last, quiet = "garbled error reply", True
                continue
            return c, data
        raise BoardLost(f"the board did not answer {cmd.decode('latin-1')!r} in {self.retries + 1} tries of "
                        f"{self.timeout:g} s ({last})")

    def _expect(self, cmd: bytes, payload: bytes, ok: Callable[[bytes], bool]) -> bytes | int:
        """ask() until the reply is CMD with a payload OK accepts (anything else from a CRC-valid reply is
        counted as garbled and retried within the same try budget); a board error: its code (int)."""
        for _ in range(self.retries + 1):
            c, data = self.ask(cmd, payload)
            if c == b"E":
                return data[0]
            if c == cmd and ok(data):
                return data
            self.errors["garbled"] += 1
        raise BoardLost(f"the board answered {cmd.decode('latin-1')!r} with replies of the wrong shape "
                        f"{self.retries + 1} times")

    def _refused(self, cmd: bytes, code: int) -> TinyccError:
        return TinyccError(f"board refused {cmd.decode('latin-1')}: {ERRORS.get(code, f'error {code}')}")

    def status(self) -> Status:
        """Version, classes, buffer count and capacity; a board of another protocol version is one clear error."""
        try:
            r = self._expect(b"S", b"", lambda d: len(d) == 10 or (len(d) >= 1 and d[0] != PROTO_VERSION))
        except BoardLost:
            if v1_frame_in(self.raw):
                raise TinyccError(f"the board speaks tinycc serial protocol 1 (8-bit checksum), this tinycc speaks "
                                  f"protocol {PROTO_VERSION} (CRC-16): regenerate the sketch with this tinycc "
                                  "(tinycc compile --target arduino) and upload it") from None
            raise
        if isinstance(r, int):
            raise self._refused(b"S", r)
        if r[0] != PROTO_VERSION:
            raise TinyccError(f"the board speaks tinycc serial protocol {r[0]}, this tinycc speaks protocol "
                              f"{PROTO_VERSION}: use the tinycc that generated the sketch, or regenerate and upload it")
        if len(r) != 10:
            raise TinyccError(f"the board's status reply has {len(r)} bytes, protocol {PROTO_VERSION} has 10")
        classes, count, capacity = struct.unpack("<BII", r[1:])
        return Status(r[0], classes, count, capacity)

    def connect(self, within: float = CONNECT_S) -> Status:
        """The session's first status, asked every min(timeout, 2 s) until answered, within WITHIN seconds in all
        (an Arduino resets when its port opens: its bootloader runs for a second or two); BoardLost otherwise."""
        saved = self.timeout, self.retries
        deadline = self.clock() + within
        tries = 0
        try:
            while True:
                self.timeout, self.retries = min(saved[0], CONNECT_TRY_S, deadline - self.clock()), 0
                tries += 1
                try:
                    return self.status()
                except BoardLost:
                    if deadline - self.clock() < self.resync_s + 0.01:
                        raise BoardLost(f"{tries} tries") from None
                    self.sleep(self.resync_s)
        finally:
            self.timeout, self.retries = saved

    def predict(self, x: Any) -> int:
        import numpy as np

        r = self._expect(b"P", np.asarray(x, "<f4").tobytes(), lambda d: len(d) >= 5 and (len(d) - 1) % 4 == 0)
        if isinstance(r, int):
            raise self._refused(b"P", r)
        return r[0]

    def learn(self, x: Any, label: int) -> int | None:
        """The buffer count after learning; None when the board refused the step (error 8: sample removed)."""
        import numpy as np

        r = self._expect(b"L", np.asarray(x, "<f4").tobytes() + bytes([int(label)]), lambda d: len(d) == 4)
        if isinstance(r, int):
            if r == 8:
                return None
            raise self._refused(b"L", r)
        return struct.unpack("<I", r)[0]

    def summary(self) -> str:
        """'no protocol errors' or 'N protocol errors retried (3 late, 2 garbled, ...)'."""
        kinds = {k: v for k, v in sorted(self.errors.items()) if v}
        if not kinds:
            return "no protocol errors"
        detail = ", ".join(f"{v} {k}" for k, v in kinds.items())
        return f"{sum(kinds.values())} protocol errors retried ({detail})"
