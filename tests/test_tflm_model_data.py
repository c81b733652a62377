"""The tflm target's src/model_data.cc: the .tflite as one string literal of its bytes (backends/tflm model_bytes).

Oracle: the previous form, the same array as a list of hex numbers (written here). Both compile under -Wall -Wextra
-Werror -pedantic with g++ (host, -O2) and arm-none-eabi-g++ (Cortex-M4, -Os); the array's bytes in the objects are
the .tflite's, 16-byte aligned, and ``_len`` is its length. A flatbuffer ending in 0 compiles to the same object,
byte for byte (that 0 is the string's NUL); any other gets one NUL after it (C++ counts the NUL as an initializer).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinycc.backends.tflm import _env, model_bytes

from .conftest import mlperf_model

WARN = ["-Wall", "-Wextra", "-Werror", "-pedantic"]
CORES = {
    "host": ("g++", "objcopy", ["-std=c++17", "-O2"]),
    "cortex-m4": ("arm-none-eabi-g++", "arm-none-eabi-objcopy",
                  ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c++17", "-Os"]),
}


def embedded_bytes(cc: str) -> bytes:
    """The bytes a model_data.cc's array holds (its escapes and the string's NUL, as many as it declares), up to
    its ``_len``."""
    declared = int(re.search(r"_model_data\[(\d+)\] =", cc).group(1))
    length = int(re.search(r"_model_data_len = (\d+);", cc).group(1))
    raw = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", cc)) + b"\0"
    assert len(raw) == declared and length <= declared
    return raw[:length]


def _listed(data: bytes) -> str:
    """The previous model_data.cc: the bytes as hex numbers, 16 a line."""
    hexes = [f"0x{b:02x}" for b in data]
    body = ",\n".join("    " + ", ".join(hexes[i:i + 16]) for i in range(0, len(hexes), 16))
    return (f'#include "model_data.h"\n\nalignas(16) const unsigned char g_m_model_data[] = {{\n{body}\n}};\n'
            f"const unsigned int g_m_model_data_len = {len(data)};\n")


def _packed(data: bytes) -> str:
    declared, body = model_bytes(data)
    return _env().get_template("model_data.cc.j2").render(name="m", data=body, declared=declared, size=len(data))


def _compile(folder: Path, text: str, core: str) -> tuple[bytes, bytes, bytes]:
    """(object, the array's section, the length's section) of model_data.cc compiled for ``core``."""
    cxx, objcopy, flags = CORES[core]
    folder.mkdir()
    (folder / "model_data.h").write_text(_env().get_template("model_data.h.j2").render(name="m", NAME="M", size=0))
    (folder / "model_data.cc").write_text(text)
    r = subprocess.run([cxx, *flags, *WARN, "-fdata-sections", "-c", "model_data.cc", "-o", "m.o"], cwd=folder,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = []
    for sym in ("g_m_model_data", "g_m_model_data_len"):
        subprocess.run([objcopy, "-O", "binary", f"--only-section=.rodata.{sym}", "m.o", f"{sym}.bin"], cwd=folder,
                       check=True)
        out.append((folder / f"{sym}.bin").read_bytes())
    sections = subprocess.run([objcopy.replace("objcopy", "objdump"), "-h", "m.o"], cwd=folder, check=True,
                              capture_output=True, text=True).stdout
    assert re.search(r"\.rodata\.g_m_model_data [0-9a-f ]+ 2\*\*4\n", sections)  # alignas(16) kept
    return (folder / "m.o").read_bytes(), out[0], out[1]


@pytest.mark.parametrize("last", ["nonzero", "zero"])
def test_model_data_compiles_to_the_listed_bytes(tmp_path: Path, last: str) -> None:
    data = mlperf_model("kws_ref_model.tflite").read_bytes()[:-1]  # a real flatbuffer, its last byte set below
    data += b"\x03" if last == "nonzero" else b"\0"  # tinycc's writer ends with the first opcode's code: CONV_2D 3
    text = _packed(data)
    assert "0x" not in text and all(len(line) < 100 for line in text.splitlines())
    declared = int(re.search(r"g_m_model_data\[(\d+)\]", text).group(1))
    assert declared == len(data) + (last == "nonzero") and embedded_bytes(text) == data
    compared = 0
    for core, (cxx, objcopy, _) in CORES.items():
        if shutil.which(cxx) is None or shutil.which(objcopy) is None:
            assert core != "host", "g++ and objcopy are needed"
            continue
        obj, arr, size = _compile(tmp_path / f"{core}-packed", text, core)
        ref_obj, ref_arr, ref_size = _compile(tmp_path / f"{core}-listed", _listed(data), core)
        assert ref_arr == data and size == ref_size == len(data).to_bytes(4, "little"), core
        if last == "zero":
            assert obj == ref_obj, core  # the same object, byte for byte
        else:
            assert arr == data + b"\0", core
        compared += 1
    assert compared >= 1


def test_model_bytes_of_tiny_buffers() -> None:
    """The text's escapes read back as the bytes, the NUL counted once."""
    for data in (b"\x01", b"\0", b"\x00\x01\x00", b"TFL3\x00"):
        declared, body = model_bytes(data)
        text = "".join(re.findall(r'"([^"]*)"', body))
        raw = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", text))
        assert len(text) == 4 * len(raw) and raw + b"\0" == (data if declared == len(data) else data + b"\0")
