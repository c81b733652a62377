"""Dump a graph to JSON (structure) + .npz (constants, quantization arrays) and load it back."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .graph import Graph, Op
from .tensor import QuantParams, Tensor

FORMAT_VERSION = 1


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return {"__tuple__": [_jsonable(x) for x in v]}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _unjson(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__tuple__"}:
            return tuple(_unjson(x) for x in v["__tuple__"])
        return {k: _unjson(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    return v


def to_dict(graph: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (json-able structure, arrays)."""
    arrays: dict[str, np.ndarray] = {}
    tensors = []
    for i, t in enumerate(graph.tensors.values()):
        entry: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.value,
                                 "meta": _jsonable(t.meta)}
        if t.data is not None:
            arrays[f"t{i}_data"] = t.data
            entry["data"] = f"t{i}_data"
        if t.quant is not None:
            arrays[f"t{i}_scale"] = t.quant.scale
            arrays[f"t{i}_zp"] = t.quant.zero_point
            entry["quant"] = {"scale": f"t{i}_scale", "zero_point": f"t{i}_zp", "axis": t.quant.axis}
        tensors.append(entry)
    ops = [{"name": o.name, "kind": o.kind.value, "inputs": o.inputs, "outputs": o.outputs,
            "attrs": _jsonable(o.attrs), "origin": o.origin} for o in graph.ops]
    doc = {"format": "tinycc-ir", "version": FORMAT_VERSION, "name": graph.name,
           "inputs": graph.inputs, "outputs": graph.outputs, "meta": _jsonable(graph.meta),
           "tensors": tensors, "ops": ops}
    return doc, arrays


def from_dict(doc: dict, arrays: dict[str, np.ndarray]) -> Graph:
    if doc.get("format") != "tinycc-ir":
        raise ValueError("not a tinycc IR dump")
    g = Graph(doc["name"])
    for e in doc["tensors"]:
        q = None
        if "quant" in e:
            qd = e["quant"]
            q = QuantParams(arrays[qd["scale"]], arrays[qd["zero_point"]], qd["axis"])
        data = arrays[e["data"]] if "data" in e else None
        g.add_tensor(Tensor(e["name"], tuple(e["shape"]), e["dtype"], data, q, _unjson(e["meta"])))
    for e in doc["ops"]:
        g.ops.append(Op(e["name"], e["kind"], list(e["inputs"]), list(e["outputs"]),
                        _unjson(e["attrs"]), e["origin"]))
    g.inputs = list(doc["inputs"])
    g.outputs = list(doc["outputs"])
    g.meta = _unjson(doc["meta"])
    return g


def save(graph: Graph, path: str | Path) -> tuple[Path, Path]:
    """Write ``PATH.json`` and ``PATH.npz`` (deterministic bytes)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    doc, arrays = to_dict(graph)
    jpath, npath = base.with_suffix(".json"), base.with_suffix(".npz")
    jpath.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    npath.write_bytes(buf.getvalue())
    return jpath, npath


def load(path: str | Path) -> Graph:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    doc = json.loads(base.with_suffix(".json").read_text())
    with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return from_dict(doc, arrays)
