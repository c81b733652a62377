"""Sample data for calibration, demos and evaluation: .npz/.npy files, image folders, calibration source plugins.

Core (no plugin imports): the deploy stage and the quantization passes both read calibration samples here.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .config import QuantConfig
from .errors import TinyccError
from .ir.calibration import CalibrationDataError, check_sample_size, check_samples
from .ir.graph import Graph

CALIB_KEYS = ("x_calib", "x_train", "x")
EVAL_KEYS = ("x_eval", "x_test", "x_val", "x")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_IMAGE_PIXELS = 1 << 25  # 33.5 Mpixel (about 100 MB decoded as RGB): far above any MCU model's input


def _npz_array(path: Path, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """The first present key of ``keys`` (or the only array) and its ``y`` labels if stored."""
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in keys if k in z.files), z.files[0] if len(z.files) == 1 else None)
        if key is None:
            raise TinyccError(f"{path}: no array named {', '.join(keys)} (found {', '.join(z.files) or 'none'})")
        ykey = "y" + key[1:] if key.startswith("x") else None
        return z[key], (z[ykey] if ykey in z.files else None)


def _load_images(folder: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TinyccError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    mode = "L" if shape is not None and len(shape) == 3 and shape[2] == 1 else "RGB"
    out = []
    for f in files:
        try:
            with Image.open(f) as raw:  # reads the header only: the size is checked before any pixel is decoded
                w, h = raw.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise TinyccError(f"{f}: {w}x{h} pixels, above the image limit of {MAX_IMAGE_PIXELS:,} pixels "
                                      "(a decompression bomb or a photo far larger than any model input; resize it)")
                img = raw.convert(mode)
        except (OSError, Image.DecompressionBombError, ValueError) as e:
            raise TinyccError(f"{f}: cannot read image ({e})") from None
        if shape is not None and len(shape) == 3:
            img = img.resize((shape[1], shape[0]), Image.BILINEAR)
        arr = np.asarray(img, np.float32)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    sizes = {a.shape for a in out}
    if len(sizes) > 1:
        raise TinyccError(f"{folder}: images have different sizes {sorted(sizes)}")
    return np.stack(out)


def load_data(spec: str, registry: Any = None, shape: tuple[int, ...] | None = None,
              keys: tuple[str, ...] = CALIB_KEYS) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples (and labels when an .npz stores them) from a file, an image folder or a plugin source.

    ``shape`` is the model input without the batch axis (images are resized to it).
    """
    p = Path(spec)
    if not p.exists() and ":" in spec and registry is not None:
        name, arg = spec.split(":", 1)
        if name in registry.calibration_sources:
            return np.asarray(registry.calibration_sources[name].obj(arg)), None
        known = ", ".join(sorted(registry.calibration_sources)) or "none"
        raise TinyccError(f"{spec}: no such file, and {name!r} is no calibration source (registered: {known})")
    if not p.exists():
        raise TinyccError(f"{spec}: no such file or folder")
    if p.is_dir():
        return _load_images(p, shape), None
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False), None
        if p.suffix == ".npz":
            return _npz_array(p, keys)
    except TinyccError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise TinyccError(f"{spec}: cannot read ({e or type(e).__name__})") from None
    raise TinyccError(f"{spec}: expected an .npz or .npy file or a folder of images")


def load_samples(spec: str, registry: Any = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Calibration samples only (see :func:`load_data`)."""
    return load_data(spec, registry, shape)[0]


def load_input_arrays(spec: str, count: int) -> list[np.ndarray]:
    """Samples of a model with ``count`` inputs: an .npz holding one array per input, ``x_0`` .. ``x_{count-1}``
    (``x_calib_0`` .. or ``x_train_0`` .. also work), in the model's input order."""
    p = Path(spec)
    if p.suffix != ".npz" or not p.is_file():
        raise TinyccError(f"{spec}: a model with {count} inputs reads its samples from an .npz file holding "
                          f"x_0 .. x_{count - 1} (one array per input)")
    try:
        with np.load(p, allow_pickle=False) as z:
            for base in ("x_calib_", "x_train_", "x_"):
                names = [f"{base}{k}" for k in range(count)]
                if all(n in z.files for n in names):
                    return [z[n] for n in names]
            found = ", ".join(z.files) or "none"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise TinyccError(f"{spec}: cannot read ({e or type(e).__name__})") from None
    raise TinyccError(f"{spec}: a model with {count} inputs needs arrays x_0 .. x_{count - 1} (found {found})")


def calibration_samples(graph: Graph, quant: QuantConfig, calib: Any = None,
                        registry: Any = None) -> np.ndarray | dict[str, np.ndarray]:
    """Checked float32 calibration samples: the array ``calib``, else the file/source ``quant.calib``
    (then ``quant.calib_scale`` and ``quant.calib_limit`` apply). A model with several inputs: a dict of arrays
    by input tensor name (``calib`` as such a dict or a list in input order; a file as :func:`load_input_arrays`)."""
    try:
        check_sample_size(graph)  # from the shapes, before any sample is read
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    x = calib
    if x is None:
        if not quant.calib:
            raise TinyccError("int8 quantization needs calibration data: pass --calib FILE "
                              "(.npz/.npy with samples in the model's input layout, or an image folder)")
        if len(graph.inputs) > 1:
            x = load_input_arrays(str(quant.calib), len(graph.inputs))
        else:
            x = load_samples(str(quant.calib), registry, graph.tensors[graph.inputs[0]].shape[1:])
    try:
        x = check_samples(graph, x)
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    scale = np.float32(quant.calib_scale) if quant.calib_scale is not None else None
    if isinstance(x, dict):
        return {k: (v * scale if scale is not None else v)[:quant.calib_limit] for k, v in x.items()}
    if scale is not None:
        x = x * scale
    return x[:quant.calib_limit]


