"""Name fuzzer: nothing from a model file becomes code.

Hostile layer names (Keras .h5) and tensor names (.tflite: any bytes, the issue's
``*/ { int system(const char *); system("touch X"); } //`` included) go through both frontends into every target
(c with each --kernels choice, arduino, tflm; learning and --inference-only). Oracle: each project is compiled twice,
from the hostile model and from its twin with plain names (same file name, same weights), and the twins' C/C++
files preprocess (gcc -E: trigraphs, line splices and comments applied) to the same tokens, every other file has
the same lines outside comments, every generated text file is printable ASCII; then the hostile projects are built
(their own Makefiles with -Werror -pedantic, the Arduino protocol with ASan/UBSan, arduino-builder for AVR, the
tflm sources against TFLite Micro's headers) and their demos run, and no payload's marker file appears. Hostile
model *file* names compile into projects that build and run (c) and into valid Arduino sketch names.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends import names
from tinycc.backends.c import cmsis_nn
from .deploy_util import compile_model

from . import arduino_harness, c_harness

ROOT = Path(__file__).resolve().parents[1]
VENDOR = Path(os.environ.get("TINYCC_VENDOR", ROOT.parent / "shared" / "vendor"))
MARKER = "MARKER"  # the file every payload tries to create
TOUCH = f'system("touch {MARKER}")'
# Keras layer names may hold anything but "/" (Keras refuses it) and NUL (HDF5 refuses it)
LAYER_NAMES = [
    "input \x1b]0;title\x07", "*\\", "x\n#include <stdlib.h>\nint pwn(void) { return " + TOUCH + "; }",
    "cr\r#define tcc_arena pwn", "trailing backslash \\", '"); ' + TOUCH + '; ("', "$(touch MARKER) `touch MARKER`",
    "ctl \x01\x07\x08\x0b\x0c\x7f \x1b[31mred\x1b[0m", "\u202egnp.exe\u2066 \u2067 \u2069",
    "modèle ²½ ŉ 模型 🤖", "??= ??( ??! ??-", "int", "tcc_buffer_count", "main", "'; DROP", "#define main pwn",
    "\u2028 line sep \u0085 nel \t tab", "L" * 3000, "-- *\\ \\*", "return", "?? ?", "# $@ %", "{{ name }}", "last",
]
# .tflite tensor names: any bytes (NUL, invalid UTF-8, "/", empty)
TENSOR_NAMES = [  # in order: the model input, its QUANTIZE (the issue's "input's quantize comment"), the conv, ...
    b"\x1b[2J input", ("*/ { int system(const char *); " + TOUCH + "; } //").encode(), b"/* opened", b"x */ y /* z",
    b"nul \x00 byte", b"\xff\xfe invalid utf-8", b"", b"a\\\nint pwn;", b"//\\", b"??/", "\u202e".encode() + b"*/",
    *[n.encode() for n in LAYER_NAMES[1:]],  # as many as the file has activation tensors (25)
]
FILE_STEM = "modèle ½ $(touch MARKER) `x`"  # the model file's name in the twin test (the C prefix comes from it)
X = np.random.default_rng(0).random((24, 6, 6, 2), dtype=np.float32)
TEXT_OK = set(range(32, 127)) | {9, 10}  # printable ASCII, tab (Makefile recipes), newline


def _model(layer_names: list[str]):
    """Conv, depthwise, activations, pools, add, pad, flatten, a chain of Dense: every kind of kernel call."""
    import keras
    from keras import layers as L

    n = layer_names
    inp = keras.Input((6, 6, 2), name=n[0])
    x = L.Conv2D(4, 3, padding="same", name=n[1])(inp)
    x = L.LeakyReLU(0.2, name=n[2])(x)
    x = L.DepthwiseConv2D(3, padding="same", name=n[3])(x)
    x = L.Activation("tanh", name=n[4])(x)
    x = L.MaxPooling2D(2, name=n[5])(x)
    y = L.Conv2D(4, 1, name=n[6])(x)
    x = L.Add(name=n[7])([x, y])
    x = L.Activation("sigmoid", name=n[8])(x)
    x = L.ZeroPadding2D(1, name=n[9])(x)
    x = L.AveragePooling2D(2, name=n[10])(x)
    x = L.Flatten(name=n[11])(x)
    for name in n[12:-1]:
        x = L.Dense(8, name=name)(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name=n[-1])(x))


def _rename_tensors(data: bytes, new: list[bytes]) -> bytes:
    """The same .tflite with its activation tensors (no data) renamed, in order, to the first names of ``new``."""
    import flatbuffers

    from tinycc.tflite_schema import schema

    m = schema().ModelT.InitFromPackedBuf(data, 0)
    acts = [t for t in m.subgraphs[0].tensors if m.buffers[t.buffer].data is None]
    assert len(acts) >= 12  # the special names and some of LAYER_NAMES
    for t, name in zip(acts, new):
        t.name = name
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{frontend: (plain model, hostile model)}: twins with the same file name and weights."""
    import keras

    from tinycc.config import QuantConfig
    from tinycc.plugins.passes.quantize import quantize_model
    from tinycc.tflite_writer import write_tflite
    from tinycc.session import Session

    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    plain = _model([f"layer{i}" for i in range(len(LAYER_NAMES))])
    hostile = _model(LAYER_NAMES)
    hostile.set_weights(plain.get_weights())
    out = {}
    for kind, m in (("plain", plain), ("hostile", hostile)):
        (root / kind).mkdir()
        m.save(root / kind / f"{FILE_STEM}.h5")
    out["keras"] = (root / "plain" / f"{FILE_STEM}.h5", root / "hostile" / f"{FILE_STEM}.h5")
    graph, _ = quantize_model(str(out["keras"][0]), QuantConfig(int8_input=True, int8_output=True),
                              Session(autoload=False), calib=X)
    data = write_tflite(graph)
    for kind, d in (("plain", data), ("hostile", _rename_tensors(data, TENSOR_NAMES))):
        (root / kind / f"{FILE_STEM}.tflite").write_bytes(d)
    out["tflite"] = (root / "plain" / f"{FILE_STEM}.tflite", root / "hostile" / f"{FILE_STEM}.tflite")
    return out


@pytest.fixture(scope="module")
def cmsis_include() -> Path:
    archive = cmsis_nn.vendor_archive(VENDOR)
    if archive is None:
        pytest.skip(f"no cmsis-nn snapshot in {VENDOR} (set TINYCC_VENDOR)")
    return cmsis_nn.extract(archive) / "Include"


@pytest.fixture(scope="module")
def tflm_dir(tmp_path_factory) -> Path:
    """TensorFlow Lite Micro's source tree (headers) from the vendored snapshot."""
    import tarfile

    hits = sorted(VENDOR.glob("tflite-micro-*.tar.xz"))
    if not hits:
        pytest.skip(f"no tflite-micro snapshot in {VENDOR} (set TINYCC_VENDOR)")
    dest = tmp_path_factory.mktemp("tflm")
    with tarfile.open(hits[0], "r:xz") as tar:
        tar.extractall(dest, filter="data")
    return dest / "tflite-micro"


def _compile(session, model: Path, target: str, out: Path, extra: dict) -> object:
    return compile_model(str(model), target, str(out), {"calib_data": X, "test_count": 4, **extra}, session)


def _check_ascii(project: Path) -> None:
    """Every generated text file is printable ASCII (tab and newline allowed); the .tflite is data."""
    for p in project.rglob("*"):
        if p.is_file() and p.suffix != ".tflite":
            bad = sorted({b for b in p.read_bytes() if b not in TEXT_OK})
            assert not bad, (p, bad)


def _tokens(path: Path, project: Path, flags: list[str]) -> str:
    """A C/C++ file's tokens as the compiler sees them (trigraphs, line splices, comments and includes done)."""
    cxx = path.suffix in (".cc", ".ino")
    cmd = ["g++", "-std=c++17", "-x", "c++"] if cxx else ["gcc", "-std=c99"]
    dirs = {path.parent, *(h.parent for h in project.rglob("*.h"))}
    r = subprocess.run([*cmd, "-trigraphs", "-E", "-P", *flags, *[f"-I{d}" for d in sorted(dirs)], str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, (path, r.stderr[-2000:])
    return " ".join(r.stdout.split())


def _same_code(plain: Path, hostile: Path, flags: list[str]) -> None:
    """The hostile project is its plain twin but for comments, Markdown code spans and JSON strings."""
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(hostile) for p in hostile.rglob("*") if p.is_file())
    for rel in files:
        a, b = plain / rel, hostile / rel
        if rel.suffix in (".c", ".h", ".cc", ".ino"):
            assert _tokens(a, plain, flags) == _tokens(b, hostile, flags), rel
        elif rel.suffix == ".json":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            ja.pop("cut", None), jb.pop("cut", None)
            assert ja == jb, rel
        elif rel.suffix != ".tflite":  # Makefile, CMakeLists.txt, README.md: same lines outside comments
            la, lb = a.read_text().split("\n"), b.read_text().split("\n")
            assert len(la) == len(lb), rel
            if rel.name in ("Makefile", "CMakeLists.txt"):
                assert [re.sub(r"#.*", "", l) for l in la] == [re.sub(r"#.*", "", l) for l in lb], rel


def _no_marker(*roots: Path) -> None:
    for r in roots:
        assert not list(r.rglob(MARKER)), f"a payload ran: {list(r.rglob(MARKER))}"


def _make_run(project: Path) -> str:
    """The project's own Makefile (cc -Wall -Wextra -Werror -pedantic) and its demo, run in the project."""
    r = subprocess.run(["make", "-s", "-C", str(project), "run"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


def _build_tflm(project: Path, tflm: Path, tmp: Path) -> None:
    """Compile every source of a tflm project with its own flags (C: -Werror -pedantic; C++ against TFLite
    Micro's headers, -Werror): with its Makefile, the object of main.c and of every source under src/ (an
    inference-only project has no model.c: TFLite Micro runs the model), else (CMake only) its .cc."""
    lib = tmp / "libempty.a"  # the Makefile's check wants a library; objects are not linked here
    lib.write_bytes(b"!<arch>\n")
    if (project / "Makefile").exists():
        sources = ["main.c"] + sorted(p.relative_to(project).as_posix() for p in (project / "src").iterdir()
                                      if p.suffix in (".c", ".cc"))
        assert "src/tinycc_tflm.cc" in sources and "src/model_data.cc" in sources
        objs = ["build/host/" + s.rsplit(".", 1)[0] + ".o" for s in sources]
        r = subprocess.run(["make", "-s", "-C", str(project), *objs, f"TFLM_DIR={tflm}", f"TFLM_LIB={lib}"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        return
    inc = ["-isystem", str(tflm), "-isystem", str(tflm / "fb" / "include"), "-isystem", str(tflm / "gemmlowp")]
    for src in sorted((project / "src").glob("*.cc")):
        r = subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti",
                            "-DTF_LITE_STATIC_MEMORY", "-I", str(project / "src"), *inc, "-c", str(src), "-o",
                            str(tmp / (src.stem + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0, (src, r.stderr[-3000:])


@pytest.mark.parametrize("extra", [{}, {"inference_only": True}])
def test_issue_reproduction_tensor_name_injection(session, models, tmp_path: Path, extra: dict) -> None:
    """The reported case: the input's QUANTIZE output named ``*/ { int system(...); system("touch MARKER"); } //``;
    the project builds with its own Makefile, the demo runs, and MARKER is never created."""
    data = _rename_tensors(models["tflite"][0].read_bytes(), [b"input", TENSOR_NAMES[1]])
    model = tmp_path / "evil.tflite"
    model.write_bytes(data)
    proj = tmp_path / "proj"
    _compile(session, model, "c", proj, extra)
    _make_run(proj)
    assert (proj / "tinycc_demo").is_file()
    _no_marker(tmp_path)


# (frontend, target, options): every target and mode; --kernels choices on the c target
CONFIGS = [
    ("tflite", "c", {}), ("tflite", "c", {"inference_only": True}), ("tflite", "c", {"kernels": "cmsis-nn"}),
    ("tflite", "c", {"kernels": "generic", "inference_only": True}), ("tflite", "arduino", {}),
    ("tflite", "arduino", {"inference_only": True}),
    ("keras", "c", {}), ("keras", "arduino", {"inference_only": True}),
]


def test_hostile_layer_and_tensor_names(session, models, cmsis_include, tmp_path: Path) -> None:
    ident = names.c_identifier(FILE_STEM)
    for i, (frontend, target, extra) in enumerate(CONFIGS):
        plain_model, hostile_model = models[frontend]
        plain, hostile = tmp_path / f"{i}-plain", tmp_path / f"{i}-hostile"
        _compile(session, plain_model, target, plain, extra)
        res = _compile(session, hostile_model, target, hostile, extra)
        _check_ascii(hostile)
        cmsis = extra.get("kernels") == "cmsis-nn"
        _same_code(plain, hostile, ["-isystem", str(cmsis_include)] if cmsis else [])
        if not extra.get("inference_only"):  # the cut is a hostile name; JSON keeps it exactly
            cut = json.loads((hostile / "tinycc_memory.json").read_text())["cut"]
            assert cut == res.deployment.meta["cut"] and cut not in [f"layer{k}" for k in range(len(LAYER_NAMES))]
        if target == "c" and cmsis:  # the CMSIS-NN calls need the library to link: model.c compiles -Werror
            r = subprocess.run(["gcc", *c_harness.STRICT, "-isystem", str(cmsis_include), "-I", str(hostile),
                                "-I", str(hostile / "runtime"), "-c", str(hostile / "model.c"), "-o",
                                str(tmp_path / "model.o")], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-3000:]
        elif target == "c":
            out = _make_run(hostile)
            assert f'"{ident}"' in out or "inference demo" in out, out[:500]
        else:
            exe = arduino_harness.build_host_proto(hostile, ident, tmp_path / f"proto{i}")
            r = subprocess.run([str(exe)], input=b"", capture_output=True, cwd=hostile, timeout=60)
            assert r.returncode == 0, r.stderr[-2000:]
    _no_marker(tmp_path, Path.cwd())
    # the model's own names stay model text: in the .tflite that tinycc writes (tflm), exactly as read
    text = (tmp_path / "0-hostile" / "model.c").read_text()
    assert "* / { int system(const char *); system(\"touch MARKER\"); } //" in text  # the issue's name, inert


def test_hostile_names_tflm(session, models, tflm_dir: Path, tmp_path: Path) -> None:
    """The tflm target (learning and inference-only) from the hostile .tflite: ASCII, and every source compiles
    against TFLite Micro's headers with the project's own -Werror flags."""
    for extra in ({}, {"inference_only": True}):
        proj = tmp_path / ("infer" if extra else "learn")
        _compile(session, models["tflite"][1], "tflm", proj, extra)
        _check_ascii(proj)
        _build_tflm(proj, tflm_dir, tmp_path)
    _no_marker(tmp_path)


@pytest.mark.toolchain
def test_hostile_sketch_builds_with_arduino_builder(session, models, tmp_path: Path) -> None:
    """The hostile .tflite under a non-ASCII file name: the sketch (its .ino, model.c and protocol) builds for
    the Arduino Mega with arduino-builder's own flags."""
    if not arduino_harness.available():
        pytest.skip("arduino-builder, simavr or avr-gcc missing")
    _compile(session, models["tflite"][1], "arduino", tmp_path / "proj", {})
    ident = names.c_identifier(FILE_STEM)
    elf, flash, ram = arduino_harness.build(tmp_path / "proj" / ident / f"{ident}.ino", tmp_path / "work")
    assert elf.is_file() and flash > 0 and ram > 0


FILE_NAMES = ["x½", "²x", "ŉ", "modèle", "tcc", "tcc_buffer", "int", "m", "all", "$(touch MARKER) `touch MARKER`",
              'x"y*\\', "a\nb\r", "\x1b[31mred\u202eevil", os.fsdecode(b"\xff\xfe"), "L" * 200, "-rf", "__init__"]
ARDUINO_SKETCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # the Arduino sketch specification's name rule


def test_hostile_model_file_names(session, models, tmp_path: Path) -> None:
    """Each file name compiles (c) into a project whose demo builds with the project's flags and runs, with the
    prefix names.c_identifier gives; the Arduino sketch of the reported names is a valid sketch name whose
    sources build (host protocol build)."""
    src = models["tflite"][0]  # the file name is what varies: the .tflite frontend loads fastest
    runtime_objs: list[str] = []
    for i, stem in enumerate(FILE_NAMES):
        d = tmp_path / f"m{i}"
        d.mkdir()
        model = d / f"{stem}.tflite"
        shutil.copyfile(src, model)
        proj = d / "proj"
        res = _compile(session, model, "c", proj, {})
        ident = names.c_identifier(stem)
        assert res.deployment.name == ident
        _check_ascii(proj)
        assert f"int32_t {ident}_init(void);" in (proj / "model.h").read_text()
        if not runtime_objs:  # the runtime is the same in every project: compiled once
            for f in ("tinycc_kernels.c", "tinycc_learn.c"):
                obj = tmp_path / f"{f}.o"
                subprocess.run(["gcc", *c_harness.STRICT, "-I", str(proj / "runtime"), "-c",
                                str(proj / "runtime" / f), "-o", str(obj)], check=True)
                runtime_objs.append(str(obj))
        exe = proj / "demo"
        r = subprocess.run(["gcc", *c_harness.STRICT, "-I", str(proj), "-I", str(proj / "runtime"), "-o", str(exe),
                            str(proj / "main.c"), str(proj / "model.c"), *runtime_objs, "-lm"],
                           capture_output=True, text=True)
        assert r.returncode == 0, (stem, r.stderr[-3000:])
        r = subprocess.run([str(exe)], capture_output=True, text=True, cwd=proj, timeout=60)
        assert r.returncode == 0 and f'tinycc demo "{ident}"' in r.stdout, (stem, r.stdout[-500:], r.stderr)
    for stem in ("x½", "²x", "ŉ", "modèle", "tcc"):  # the reported Arduino cases (arduino-builder: see above)
        d = tmp_path / f"a-{names.c_identifier(stem)}"
        d.mkdir()
        shutil.copyfile(src, d / f"{stem}.tflite")
        _compile(session, d / f"{stem}.tflite", "arduino", d / "proj", {})
        ident = names.c_identifier(stem)
        assert ARDUINO_SKETCH.fullmatch(ident) and (d / "proj" / ident / f"{ident}.ino").is_file()
        _check_ascii(d / "proj")
    arduino_harness.build_host_proto(d / "proj", ident, d / "proto")  # "tcc": no clash with the runtime's names
    _no_marker(tmp_path, Path.cwd())


def test_cli_prints_model_names_without_control_characters(models, tmp_path: Path, capsys) -> None:
    """inspect (table and JSON), compile's summary and an error naming the model: no terminal escape sequence,
    no bidi override, one line per error."""
    from tinycc.cli import main

    model = tmp_path / "\x1b[31mred \u202eevil.tflite"  # the file's name is model text too
    shutil.copyfile(models["tflite"][1], model)
    np.savez(tmp_path / "calib.npz", x=X)
    runs = [["inspect", str(model)], ["inspect", str(model), "--json"],
            ["compile", str(model), "-t", "c", "-o", str(tmp_path / "p")],
            ["quantize", str(models["keras"][1]), "--calib", str(tmp_path / "calib.npz"), "-o",
             str(tmp_path / "q.tflite")],
            ["prune", str(model), "--ratio", "0.5", "-o", str(tmp_path / "x.h5")]]
    codes = []
    for argv in runs:
        codes.append(main(argv))
        out, err = capsys.readouterr()
        for line in (out + err).splitlines():
            assert line.isprintable(), (argv[0], line[:200])
        assert "\x1b" not in out + err and "\u202e" not in out + err
        if argv[0] == "quantize":  # its report names the hostile layers, escaped
            assert "ctl \\x01\\x07\\x08\\x0b\\x0c\\x7f \\x1b[31mred" in out, out[:2000]
    assert codes == [0, 0, 0, 0, 2]
    assert "\\x1b[31mred \\u202eevil" in err and len(err.strip().splitlines()) == 1  # the prune refusal
