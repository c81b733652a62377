"""C for the deep bias learner (``tinycc.ir.deep.DeepLearner`` mode ``bias``): the int8 region and its learn path.

``emit_bias_learn(learner, batch)`` gives one C99 translation unit (compile with runtime/tinycc_backprop.c,
tinycc_learn.c and tinycc_kernels.c) holding

- the bias step of ``deep_emit.learner_step`` without a float cut input (``tcc_deep_step_known(known, y, n, lr)``):
  Φc's float parameters, the float master copies of the region's biases and their int32 biases ``tcc_bq<k>`` (RAM);
- the region's int8 forward on the runtime's generic kernels (``tcc_conv2d_s8``, ``tcc_dwconv2d_s8``,
  ``tcc_fc_s8``, ``tcc_add_s8``, ...), whose bias pointers are those RAM int32 biases, so inference runs the int8
  kernels with the learned biases (on AVR, where the kernels read their tables from flash, a layer with a RAM bias
  calls the kernel's ``_bram_`` variant, which reads that bias with a plain load; the region's tables are
  ``TCC_WEIGHT``); every region output is written into its kept array ``tcc_k<j>`` (``batch`` rows,
  the step's ``known`` tensors), which is the region's whole working memory (no arena); a weight the step keeps as
  int8 for its backward (``tcc_wq<k>``, ``ir.backprop.int8_weights``) is the forward's too (one copy in flash);
- ``int32_t tcc_deep_learn(tcc_buffer_t *b, const int8_t *q, uint8_t label, float lr, int32_t epochs)``: push the
  int8 cut tensor ``q`` and its label, then ``epochs`` epochs over the buffer in training order, batches of
  ``batch`` consecutive entries (region forward per row, then one step), as ``DeepLearner.learn``. Returns the
  buffer count; -1 a label out of range (or a buffer of another shape); -2 ``b`` or ``q`` NULL (nothing stored or
  trained); -4 a step was refused: the retraining stopped there and the sample was removed again;
- ``int32_t tcc_deep_predict(const int8_t *q, float *z)``: the logits of one int8 cut tensor (the region with the
  current int32 biases, then Φc); returns the class, -1 for NULL.

Identifiers come from positions only; nothing of the model's text reaches the C (comments: none).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...config import CompileConfig
from ...ir.backprop import int8_weights, step_plan
from ...ir.deep import DeepLearner
from ...ir.deployment import BufferConfig, Deployment
from ...ir.ops import OpKind
from .deep_emit import emit_learn, emit_step, known_order, learner_step, value_name
from ...memory import MemoryPlan
from .emitter import CArray, _Builder
from .tables import definitions, element_ref

_IDENTITY = (OpKind.FLATTEN, OpKind.RESHAPE, OpKind.DROPOUT)


class _Region(_Builder):
    """The emitter's generic-kernel calls for the region's ops, pointers redirected: the cut is ``q``, every output
    its kept array at row ``r``, a trained bias the step's int32 array."""

    def __init__(self, learner: DeepLearner, kept: dict[str, str], sizes: dict[str, int], biases: dict[str, str],
                 config: CompileConfig):
        # the region as a deployment of its own: generic kernels (the specialised ones fold bias values into their
        # tables), no arena (every tensor is the cut or a kept array), the board's config otherwise
        cfg = replace(config, kernels="generic", memory=replace(config.memory, widen=False))
        cut = learner.view.tensors[learner.cut]
        super().__init__(Deployment("deep", learner.region, cut.quant, [], learner.num_classes,
                                    BufferConfig(0, "fifo", "int8"), config=cfg, plan=MemoryPlan(0, 0, 0, "none")))
        self.cut, self.kept, self.sizes, self.biases = learner.cut, kept, sizes, biases
        for t, name in biases.items():
            self.names[t] = name  # the RAM int32 bias, defined by the step

    def ptr(self, tensor: str) -> str:
        if self.g.tensors[tensor].is_const:
            return self.const(tensor)
        if tensor == self.cut:
            return "q"
        return f"({self.kept[tensor]} + r * {self.sizes[tensor]})"

    def array(self, base: str, ctype: str, values: np.ndarray, flash: bool = True, guard: str = "") -> str:
        super().array(base, ctype, values, flash, guard)
        a = self.m.arrays[-1]
        a.name = a.name.replace("tcc_", "tcc_rg_", 1)
        return a.ref


def _tables(arrays: list[CArray]) -> str:
    return definitions(arrays)  # flash tables (PROGMEM on AVR), read by the kernels through TCC_READ_*


# layer kernel -> its variant reading the learned int32 biases from RAM (bias argument at the same place): on a
# Harvard core (AVR) the layer kernels read every table from flash, the trained region's biases live in RAM
_BRAM = {fn: fn.replace("_s8", "_bram_s8") for fn in ("tcc_conv2d_s8", "tcc_dwconv2d_s8", "tcc_fc_s8",
                                                       "tcc_conv2d_rows_s8", "tcc_dwconv2d_rows_s8", "tcc_fc_rows_s8")}


def _ram_bias(fn: str, args: list[str], ram: set[str], harvard: bool) -> str:
    """The kernel to call for ``fn(args)``: on a Harvard core, its RAM-bias variant where an argument is one of the
    ``ram`` int32 biases (ValueError: a kernel without one)."""
    if not harvard or not ram.intersection(args):
        return fn
    if fn not in _BRAM:
        raise ValueError(f"{fn} reads a learned RAM bias but has no RAM-bias variant for a Harvard core")
    return _BRAM[fn]


_ROWS = {"tcc_conv2d_s8": ("tcc_conv2d_rows_s8", 4), "tcc_dwconv2d_s8": ("tcc_dwconv2d_rows_s8", 4),
         "tcc_fc_s8": ("tcc_fc_rows_s8", 3)}  # layer kernel -> its trained-channel kernel, weight argument


def emit_bias_learn(learner: DeepLearner, batch: int, config: CompileConfig | None = None) -> str:
    """The translation unit of the module docstring for ``learner`` (mode ``bias``, or ``sparse``: see
    ``emit_sparse_learn``) and batches of ``batch``; ``config``: the deployment's compile config (default: a plain
    one; the region always uses generic kernels)."""
    if learner.mode not in ("bias", "sparse"):
        raise ValueError("emit_bias_learn is for the bias and sparse modes")
    _, order = learner_step(learner, batch)  # checks the bias scales
    tail, tensors = learner.tail, learner.view.tensors
    known = {t: (float(tensors[t].quant.scale[0]), int(tensors[t].quant.zero_point[0])) for t in order}
    biases = {}
    for op in learner.region_params:
        if tail.trains(op.name)[1]:  # a layer without a bias trains none
            t = tensors[op.inputs[2]]
            biases[op.name] = (np.asarray(t.quant.scale, np.float64).astype(np.float32), np.asarray(t.data, np.int32))
    floats = step_plan(tail, tuple(known)).values
    cut_input = tail.cut in floats  # sparse: the first op's channels train (their update reads the cut in float)
    feat = learner.region.outputs[0]
    step = emit_step(tail, batch, known, biases, cut_input=cut_input, rates=learner.rates,
                     head_from=feat if learner.mode == "sparse" else None)
    assert known_order(tail, known) == order
    params = {name: k for k, name in enumerate(tail.params)}
    sizes = {t: int(np.prod(tensors[t].shape[1:])) for t in order}
    kept = {t: f"tcc_k{j}" for j, t in enumerate(order)}
    bias_names = {op.inputs[2]: element_ref(f"tcc_bq{params[op.name]}", "int32_t", biases[op.name][1].size)
                  for op in learner.region_params if op.name in biases}  # ``.v``: a packed table (tables.py)
    shared = int8_weights(tail, tuple(order))  # the step's int8 weights: the forward reads the same array
    bias_names.update({op.inputs[1]: f"tcc_wq{params[op.name]}" for op in learner.region_params if op.name in shared})
    config = config or CompileConfig()
    region = _Region(learner, kept, sizes, bias_names, config)
    harvard = config.target is not None and config.target.harvard  # tables in program memory, biases in RAM
    ram = {name for name in bias_names.values() if name.startswith("tcc_bq")}
    calls: list[str] = []
    for pos, op in enumerate(learner.region.ops):
        region.layer, region.op_now = (pos, op.kind.value), op
        if op.kind in _IDENTITY:
            calls.append(f"    memcpy({region.ptr(op.outputs[0])}, {region.ptr(op.inputs[0])}, "
                         f"{sizes[op.outputs[0]]});\n")
            continue
        n = len(region.m.calls)
        region.op(op)
        if len(region.m.calls) == n:
            raise ValueError(f"{op.describe()}: no int8 kernel call for the deep region")
        calls += [f"    {_ram_bias(c.fn, c.args, ram, harvard)}({', '.join(c.args)});\n" for c in region.m.calls[n:]]
        if op.name in shared and tail.trains(op.name)[0]:  # sparse: then its trained channels from RAM
            c = region.m.calls[-1]
            if len(region.m.calls) != n + 1 or c.fn not in _ROWS:
                raise ValueError(f"{op.describe()}: no trained-channel kernel for its int8 kernel")
            fn, at = _ROWS[c.fn]
            k = params[op.name]
            rix = element_ref(f"tcc_row{k}", "int32_t", int(tail.params[op.name].bias.size))
            args = c.args[:at] + [f"tcc_w8{k}"] + c.args[at + 1:] + [rix]
            calls.append(f"    {_ram_bias(fn, args, ram, harvard)}({', '.join(args)});\n")
    cut, classes = learner.buffer.feature_count, learner.num_classes
    # set one by one: an initialized automatic array would be a constant image (.rodata: RAM on a Harvard core)
    known_decl = f"    const int8_t *known[{len(order)}];\n"
    known_set = "".join(f"    known[{j}] = {kept[t]};\n" for j, t in enumerate(order))
    src = step.replace('#include "tinycc_backprop.h"\n',
                       '#include <string.h>\n#include "tinycc_backprop.h"\n#include "tinycc_kernels.h"\n'
                       '#include "tinycc_learn.h"\n', 1)
    xcall = "tcc_t0, " if cut_input else ""
    fill = (f"                (void)tcc_buffer_entry(b, s + r, tcc_t0 + r * {cut}, NULL);\n" if cut_input else "")
    dq_q = (f"    for (int32_t k = 0; k < {cut}; ++k)\n"
            f"        tcc_t0[k] = {float(np.float32(learner.cut_scale)):.9e}f * (float)((int32_t)q[k] - "
            f"{learner.cut_zp});\n" if cut_input else "")
    out = src + "\n" + _tables(region.m.arrays) + "".join(
        f"static int8_t {kept[t]}[{batch * sizes[t]}];\n" for t in order) + (
        f"static int32_t tcc_y[{batch}];\n\n"
        "/* the region's int8 forward of one cut tensor q into row r of the kept arrays */\n"
        "static void tcc_deep_region(const int8_t *q, int32_t r) {\n" + "".join(calls) + "}\n\n"
        "int32_t tcc_deep_learn(tcc_buffer_t *b, const int8_t *q, uint8_t label, float lr, int32_t epochs) {\n"
        f"{known_decl}"
        "    uint32_t before[4];\n    int32_t slot, n;\n" + known_set +
        "    if (!b || !q) return -2;\n"
        f"    if (label >= {classes} || b->features != {cut} || b->targets != 0 || !b->int8_storage) return -1;\n"
        "    tcc_buffer_save(b, before);\n    slot = tcc_buffer_push(b, NULL, q, label, NULL);\n"
        "    n = tcc_buffer_count(b);\n"
        "    for (int32_t e = 0; e < epochs; ++e)\n"
        f"        for (int32_t s = 0; s < n; s += {batch}) {{\n"
        f"            const int32_t m = n - s < {batch} ? n - s : {batch};\n"
        "            for (int32_t r = 0; r < m; ++r) {\n"
        "                const int32_t k = tcc_buffer_slot(b, s + r);\n"
        "                tcc_y[r] = b->labels[k];\n" + fill +
        f"                tcc_deep_region(b->q + (size_t)k * {cut}, r);\n            }}\n"
        f"            if (tcc_deep_step_known({xcall}known, tcc_y, m, lr) != 1) {{\n"
        "                tcc_buffer_unpush(b, slot, before); /* refused: nothing of this step was written */\n"
        "                return -4;\n            }\n        }\n"
        "    return n;\n}\n\n"
        "int32_t tcc_deep_predict(const int8_t *q, float *z) {\n"
        f"{known_decl}"
        "    int32_t best = 0;\n" + known_set +
        "    if (!q || !z) return -1;\n" + dq_q +
        "    tcc_deep_region(q, 0);\n"
        f"    if (tcc_deep_logits({xcall}known, 1, z) != 0) return -1;\n"
        f"    for (int32_t c = 1; c < {classes}; ++c) if (z[c] > z[best]) best = c;\n"
        "    return best;\n}\n")
    if learner.mode == "sparse":
        out += _two_level(learner, batch, kept[feat], value_name(tail, feat), sizes[feat])
    return out


def _two_level(learner: DeepLearner, batch: int, kept: str, values: str, size: int) -> str:
    """``tcc_sparse_learn``: the two-level learn of ``TwoLevelLearner`` (see ``emit_sparse_learn``)."""
    classes = learner.num_classes
    return (
        "\nint32_t tcc_sparse_learn(tcc_buffer_t *b, tcc_buffer_t *fb, const int8_t *q, uint8_t label, float lr,\n"
        "                         int32_t epochs) {\n"
        "    uint32_t before[4];\n    int32_t slot, n, got;\n"
        "    if (!b || !fb || !q) return -2;\n"
        f"    if (label >= {classes} || fb->features != {size} || fb->targets != 0 || !fb->int8_storage) return -1;\n"
        f"    if (b->features != {learner.buffer.feature_count} || b->targets != 0 || !b->int8_storage) return -1;\n"
        "    tcc_deep_region(q, 0); /* the sample's features with the backbone as it is now */\n"
        f"    tcc_buffer_save(fb, before);\n    slot = tcc_buffer_push(fb, NULL, {kept}, label, NULL);\n"
        "    got = tcc_deep_learn(b, q, label, lr, epochs);\n"
        "    if (got < 0) {\n        tcc_buffer_unpush(fb, slot, before);\n        return got;\n    }\n"
        "    n = tcc_buffer_count(fb);\n"
        "    for (int32_t e = 0; e < epochs; ++e)\n"
        f"        for (int32_t s = 0; s < n; s += {batch}) {{\n"
        f"            const int32_t m = n - s < {batch} ? n - s : {batch};\n"
        "            for (int32_t r = 0; r < m; ++r)\n"
        f"                tcc_y[r] = tcc_buffer_entry(fb, s + r, {values} + r * {size}, NULL);\n"
        "            if (tcc_head_step(tcc_y, m, lr) != 1) return n; /* refused: the classifier stops there */\n"
        "        }\n"
        "    return n;\n}\n")


def emit_sparse_learn(learner: DeepLearner, batch: int, config: CompileConfig | None = None) -> str:
    """The learn unit of ``--train sparse`` (``TwoLevelLearner`` mode ``sparse``, ``backbone_only``): the bias
    unit's pieces for the chosen subset (the int8 region on the generic kernels reading the RAM int32 biases of the
    ops whose bias trains and, after each layer whose channels train, ``tcc_*_rows_s8`` recomputing those channels
    from their RAM int8 copy; the step of the subset, Φc at rate 0; ``tcc_deep_learn`` over the buffer of int8 cut
    tensors; ``tcc_deep_predict``) and ``int32_t tcc_sparse_learn(tcc_buffer_t *b, tcc_buffer_t *fb, const int8_t
    *q, uint8_t label, float lr, int32_t epochs)``: the features of ``q`` (the region as it is) go into ``fb`` (int8
    features), ``q`` into ``b`` with ``epochs`` epochs of the backbone step over ``b``, then ``epochs`` epochs of
    Φc's step (``tcc_head_step``, at ``lr``) over ``fb``. Returns the feature count; -1 a label out of range or a
    buffer of another shape; -2 a NULL; -4 a backbone step was refused (both entries removed again: an entry of a
    full buffer it replaced is gone, as the head-only API's); a refused classifier step ends Φc's retraining."""
    if learner.mode != "sparse":
        raise ValueError("emit_sparse_learn is for the sparse mode")
    return emit_bias_learn(learner, batch, config)


def emit_blocks_learn(learner: DeepLearner, batch: int) -> str:
    """The learn unit of mode ``blocks`` (compile with runtime/tinycc_backprop.c and tinycc_learn.c): the float
    step and learn path of ``deep_emit.emit_learn`` (the region's weights and biases and Φc's in RAM, float32,
    updated element by element in place; ``tcc_deep_learn`` over the buffer of int8 cut tensors) and
    ``int32_t tcc_deep_predict(const int8_t *q, float *z)``: the logits of one int8 cut tensor, dequantized into
    row 0 of the step's cut values, through the trained float region and Φc; returns the class, -1 for NULL."""
    if learner.mode != "blocks":
        raise ValueError("emit_blocks_learn is for the blocks mode")
    cut, classes = learner.buffer.feature_count, learner.num_classes
    scale = float(np.float32(learner.cut_scale))  # the buffer's scale, as tcc_buffer_entry dequantizes
    return emit_learn(learner.tail, batch, learner.rates) + (
        "\nint32_t tcc_deep_predict(const int8_t *q, float *z) {\n"
        "    int32_t best = 0;\n"
        "    if (!q || !z) return -1;\n"
        f"    for (int32_t k = 0; k < {cut}; ++k)\n"
        f"        tcc_t0[k] = {scale:.9e}f * (float)((int32_t)q[k] - {learner.cut_zp});\n"
        "    if (tcc_deep_logits(tcc_t0, 1, z) != 0) return -1;\n"
        f"    for (int32_t c = 1; c < {classes}; ++c) if (z[c] > z[best]) best = c;\n"
        "    return best;\n}\n")
