"""The exact requantization of the learned int8 backbone (tinycc.ir.exact_div.round_div; C: tcc_bp_round_div in
backends/c/runtime/tinycc_backprop.c): round half to even of the exact rational b / s of two float32, clamped.

Oracles: Python's exact Fraction arithmetic (``round`` of a Fraction is half to even) on adversarial pairs; the C
function equals the Python one on 2 million random and adversarial pairs (host ASan/UBSan, both clamps) and on a
few thousand in simavr (ATmega2560: avr-libc's 32-bit double is never used)."""
from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.exact_div import round_div

from .c_harness import RUNTIME, run_runtime_program

I32 = (-2**31, 2**31 - 1)
I8 = (-127, 127)


def _f32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, np.uint32).view(np.float32)


def _float64_breakers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose exact quotient is h +- 1 / (2 ms) for a half-integer h in [2^29, 2^31): s = ms (odd, 24 bits),
    b = ((2n+1) ms +- 1) / 2 exactly (2n+1 the inverse of -+ms modulo 2^31), which float64 division rounds onto h."""
    ms = rng.integers(2**23, 2**24, n) | 1
    sign = rng.choice([-1, 1], n)
    odd = np.array([(-int(s) * pow(int(m), -1, 2**31)) % 2**31 for m, s in zip(ms, sign)], dtype=np.int64)
    keep = odd >= 2**30
    num = odd[keep] * ms[keep] + sign[keep]  # == 0 mod 2^31, below 2^55
    b = np.array([np.float32(int(v) // 2**31) for v in num]) * np.float32(2.0**30)
    return b.astype(np.float32), ms[keep].astype(np.float32)


def adversarial(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n pairs of float32 (b, s): every bit pattern (NaN, inf, zeros, subnormals), log-uniform normals, exact halves
    and their float neighbours (both operands), quotients at 127.5 and 2^31, huge and tiny ratios, float64 breakers."""
    k = n // 8
    parts = [(_f32(rng.integers(0, 2**32, k, dtype=np.uint64)), _f32(rng.integers(0, 2**32, k, dtype=np.uint64))),
             ((rng.standard_normal(k) * 10.0 ** rng.uniform(-45, 38, k)).astype(np.float32),
              np.abs(rng.standard_normal(k) * 10.0 ** rng.uniform(-45, 38, k)).astype(np.float32))]
    ms = (rng.integers(1, 2**12, k) | 1).astype(np.float64)  # exact halves: b = (2n+1) * s / 2
    e = rng.integers(-140, 100, k)
    s = np.ldexp(ms, e).astype(np.float32)
    odd = (2 * rng.integers(-2**11, 2**11, k) + 1).astype(np.float64)
    b = np.ldexp(odd * ms, e - 1).astype(np.float32)
    parts += [(b, s), (np.nextafter(b, np.float32(np.inf)), s), (np.nextafter(b, np.float32(-np.inf)), s),
              (b, np.nextafter(s, np.float32(np.inf)))]
    s = np.abs(rng.standard_normal(k)).astype(np.float32) + np.float32(1e-3)  # clamps: 127.5 and 2^31
    at = rng.choice([127.5, 2.0**31, 2.0**31 - 0.5, 2.0**31 + 1.0, 126.5], k) * rng.choice([-1, 1], k)
    b = (at * s.astype(np.float64)).astype(np.float32)
    parts.append((np.nextafter(b, (b * rng.choice([0, 2], k)).astype(np.float32)), s))
    parts.append(_float64_breakers(rng, n - 7 * k))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def exact(b: float, s: float, lo: int, hi: int) -> int:
    """The oracle: Fraction arithmetic (and the documented results off the finite, nonzero domain)."""
    if np.isnan(b) or np.isnan(s) or (np.isinf(b) and np.isinf(s)) or (b == 0 and s == 0):
        return 0
    neg = (np.signbit(b) != np.signbit(s))
    if np.isinf(b) or s == 0:
        return lo if neg else hi
    if b == 0 or np.isinf(s):
        return 0
    return min(max(round(Fraction(float(b)) / Fraction(float(s))), lo), hi)


def test_round_div_equals_exact_rational_arithmetic() -> None:
    """16,000 adversarial pairs, both clamps, against Fractions; broadcasting keeps the shape."""
    b, s = adversarial(np.random.default_rng(1), 16_000)
    for lo, hi in (I32, I8):
        got = round_div(b, s, lo, hi)
        want = np.array([exact(x, y, lo, hi) for x, y in zip(b.tolist(), s.tolist())])
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, [(b[i], s[i], got[i], want[i]) for i in bad[:5]]
    assert round_div(np.float32([[2.5], [3.5]]), np.float32([1, 2, 7]), *I32).tolist() == [[2, 1, 0], [4, 2, 0]]


def test_float64_rint_is_exact_below_2_27_and_not_above() -> None:
    """The docstring's argument: float64 rint of the quotient equals the exact rounding wherever |b / s| < 2^27
    (one million pairs, adversarial ones included), and misses on the breakers between 2^29 and 2^31."""
    b, s = adversarial(np.random.default_rng(2), 1_000_000)
    with np.errstate(all="ignore"):
        v = b.astype(np.float64) / s.astype(np.float64)
        small = np.isfinite(v) & (np.abs(v) < 2.0**27) & (s != 0)
        assert np.array_equal(np.rint(v[small]).astype(np.int64), round_div(b[small], s[small], *I32))
    b, s = _float64_breakers(np.random.default_rng(3), 2000)
    rint = np.rint(b.astype(np.float64) / s.astype(np.float64)).astype(np.int64)
    want = np.array([exact(x, y, *I32) for x, y in zip(b.tolist(), s.tolist())])
    assert np.array_equal(round_div(b, s, *I32), want) and (rint != want).sum() > 100


C_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tinycc_backprop.h"

int main(void) {
    FILE *f = fopen("PAIRS", "rb");
    FILE *o = fopen("OUT", "wb");
    float bs[2];
    if (!f || !o) return 1;
    while (fread(bs, sizeof bs, 1, f) == 1) {
        int32_t q[2];
        q[0] = tcc_bp_round_div(bs[0], bs[1], INT32_MIN, INT32_MAX);
        q[1] = tcc_bp_round_div(bs[0], bs[1], -127, 127);
        if (fwrite(q, sizeof q, 1, o) != 1) return 1;
    }
    fclose(f);
    return fclose(o) != 0;
}
"""


def test_c_round_div_equals_python_on_two_million_pairs(tmp_path: Path) -> None:
    """tcc_bp_round_div (strict warnings, ASan/UBSan) equals round_div on 2,000,000 pairs, int32 and int8 clamps."""
    b, s = adversarial(np.random.default_rng(4), 2_000_000)
    pairs, out = tmp_path / "pairs.bin", tmp_path / "out.bin"
    np.stack([b, s], 1).astype("<f4").tofile(pairs)
    src = C_MAIN.replace("PAIRS", str(pairs)).replace("OUT", str(out))
    run_runtime_program(src, tmp_path, "round_div", timeout=300, runtime=("tinycc_backprop.c",), quiet=True)
    got = np.fromfile(out, "<i4").reshape(-1, 2)
    assert got.shape == (b.size, 2)
    np.testing.assert_array_equal(got[:, 0], round_div(b, s, *I32))
    np.testing.assert_array_equal(got[:, 1], round_div(b, s, *I8))


AVR_MAIN = r"""
#include <avr/io.h>
#include <avr/interrupt.h>
#include <avr/pgmspace.h>
#include <avr/sleep.h>
#include "tinycc_backprop.h"
#include "pairs.h"

static void put(char c) {
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void say(const char *s, uint32_t n) {
    char buf[12];
    int k = 0;
    while (*s) put(*s++);
    do { buf[k++] = (char)('0' + n % 10u); n /= 10u; } while (n);
    while (k) put(buf[--k]);
    put('\n');
}

int main(void) {
    uint32_t bad = 0;
    for (uint16_t i = 0; i < NPAIRS; ++i) {
        union { uint32_t u; float f; } b, s;
        b.u = pgm_read_dword(&PAIRS[i][0]);
        s.u = pgm_read_dword(&PAIRS[i][1]);
        int32_t q32 = tcc_bp_round_div(b.f, s.f, INT32_MIN, INT32_MAX);
        int32_t q8 = tcc_bp_round_div(b.f, s.f, -127, 127);
        int32_t want = (int32_t)pgm_read_dword(&PAIRS[i][2]);
        if (q32 != want || q8 != (want > 127 ? 127 : want < -127 ? -127 : want)) ++bad;
    }
    say("pairs ", NPAIRS);
    say("bad ", bad);
    cli();
    sleep_cpu();
    return 0;
}
"""


@pytest.mark.skipif(not (shutil.which("avr-gcc") and shutil.which("simavr")), reason="avr-gcc or simavr missing")
def test_avr_round_div_equals_python_in_simavr(tmp_path: Path) -> None:
    """tcc_bp_round_div built for the ATmega2560 (-Os, -Wall -Wextra -Werror, no double anywhere: avr-libc's is 32
    bits) gives Python's results on 2,600 adversarial pairs in simavr (a 31 kB table: AVR objects stay below
    32 kB), both clamps (the int8 one is the int32 one clamped)."""
    b, s = adversarial(np.random.default_rng(5), 2600)
    q32 = round_div(b, s, *I32)
    assert np.array_equal(np.clip(q32, *I8), round_div(b, s, *I8))
    rows = np.stack([b.view(np.uint32), s.view(np.uint32), q32.astype(np.int32).view(np.uint32)], 1)
    body = ",\n".join("{" + ", ".join(f"0x{int(v):08x}UL" for v in r) + "}" for r in rows)
    (tmp_path / "pairs.h").write_text(f"#define NPAIRS {len(rows)}u\nstatic const uint32_t PAIRS[][3] PROGMEM = "
                                      f"{{\n{body}\n}};\n")
    (tmp_path / "main.c").write_text(AVR_MAIN)
    elf = tmp_path / "round_div.elf"
    subprocess.run(["avr-gcc", "-mmcu=atmega2560", "-Os", "-std=gnu99", "-Wall", "-Wextra", "-Werror",
                    "-I", str(RUNTIME), "-I", str(tmp_path), "-o", str(elf), str(tmp_path / "main.c"),
                    str(RUNTIME / "tinycc_backprop.c"), "-lm"], check=True, capture_output=True, text=True)
    nm = subprocess.run(["avr-nm", str(elf)], check=True, capture_output=True, text=True).stdout
    assert " T rint" not in nm and "round_div" in nm
    r = subprocess.run(["simavr", "-m", "atmega2560", "-f", "16000000", str(elf)], capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert f"pairs {len(rows)}" in out and "bad 0" in out, out[-2000:]
