"""``tinycc compile --report``: one self-contained ``report.html`` in the project (no script, no network).

Sections: the compile summary (the same text ``tinycc compile`` prints), RAM and flash against the budget (the
memory report's items as stacked bars), the memory-plan picture (every planned tensor as a bar over the
schedule, the peak marked), the layer graph, a per-layer table (op, shapes, dtypes, params, MACs, estimated
instructions, arena offset and size) and, for on-device learning, the classifier, training settings and buffer.
Everything is computed from the deployment; the page holds no time or path of the machine, so the same compile
gives the same bytes. Model text (layer and tensor names) reaches the page only through ``html.escape``.
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

import numpy as np

from .ir.graph import Graph
from .ir.stats import op_instructions, op_macs

PEAK_COLOR = "#dc0000"  # the peak line only (the report test finds it in a rendered screenshot)
PALETTE = ("#4e79a7", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#9c755f", "#bab0ac", "#8cd17d")
RAM_COLORS = ("#4e79a7", "#59a14f", "#edc948", "#b07aa1", "#76b7b2", "#9c755f", "#bab0ac", "#8cd17d", "#86bcb6")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg text { font: 11px system-ui, sans-serif; fill: #222; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int) -> str:
    return f"{int(value):,}"


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class _Swatch:
    """A table cell holding the colour of an item's bar (tinycc's own colour, not model text)."""

    def __init__(self, color: str | None) -> None:
        self.color = color

    def html(self) -> str:
        if self.color is None:
            return ""
        return f'<span style="display:inline-block;width:10px;height:10px;background:{self.color}"></span>'


def _cell(value: Any, numeric: bool) -> str:
    text = value.html() if isinstance(value, _Swatch) else _e(value)
    return f'<td class="n">{text}</td>' if numeric else f"<td>{text}</td>"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool], ident: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(_cell(c, numeric[i]) for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table>"


# ---- the memory plan ------------------------------------------------------------------------------------------
def memory_plan_svg(graph: Graph, plan: Any, width: int = 900, height: int = 320) -> str:
    """Each planned buffer as a bar: x = the schedule steps it lives, y = its bytes in the arena (offset up);
    the peak (the arena) marked with a line. Coordinates are whole pixels (crisp edges)."""
    left, top, right, bottom = 70, 24, 16, 36
    steps = len(graph.ops) + 1  # step i: op i runs; graph inputs live from step 0, outputs to the end
    scale = max(int(plan.arena), 1)
    pw, ph = width - left - right, height - top - bottom

    def x(step: int) -> int:
        return left + round(step * pw / steps)

    def y(offset: int) -> int:
        return top + ph - round(offset * ph / scale)

    def over(name: str) -> str:
        n = int(plan.overlaps.get(name, 0))
        return f"; written over {_n(n)} B of its input already read" if n else ""

    out = [f'<svg id="memory-plan-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" shape-rendering="crispEdges" data-arena="{int(plan.arena)}">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>']
    for i, b in enumerate(sorted(plan.buffers, key=lambda b: (b.start, b.offset, b.name))):
        x0, x1, y0, y1 = x(b.start), x(b.end + 1), y(b.offset + b.size), y(b.offset)
        out.append(f'<rect class="buf" x="{x0}" y="{y0}" width="{max(x1 - x0, 1)}" height="{max(y1 - y0, 1)}" '
                   f'fill="{PALETTE[i % len(PALETTE)]}" stroke="#fff" data-tensor="{_e(b.name)}" '
                   f'data-offset="{int(b.offset)}" data-size="{int(b.size)}" data-start="{int(b.start)}" '
                   f'data-end="{int(b.end)}" data-overlap="{int(plan.overlaps.get(b.name, 0))}">'
                   f'<title>{_e(b.name)}: {_n(b.size)} B at offset {_n(b.offset)}, steps {b.start}..{b.end}'
                   f'{over(b.name)}</title></rect>')
    py = y(int(plan.arena))
    out.append(f'<line id="peak" x1="{left}" x2="{left + pw}" y1="{py}" y2="{py}" stroke="{PEAK_COLOR}" '
               f'stroke-width="2" data-bytes="{int(plan.arena)}"/>')
    out.append(f'<text id="peak-label" x="{left + 4}" y="{py - 6}">peak: arena {_n(plan.arena)} B</text>')
    for frac in (0, 0.5, 1):
        v = round(scale * frac)
        out.append(f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{_n(v)}</text>')
    out.append(f'<text x="{left + pw // 2}" y="{height - 8}" text-anchor="middle">schedule step (op), 0 .. '
               f'{steps - 1}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ---- the layer graph ------------------------------------------------------------------------------------------
def layer_graph_svg(graph: Graph, width: int = 520) -> str:
    """The ops in schedule order, one box a row; an edge from producer to consumer (straight to the next row,
    an arc on the right for skips)."""
    row, box_w, box_h, left = 30, 300, 22, 20
    prod = {t: i for i, op in enumerate(graph.ops) for t in op.outputs}
    height = row * (len(graph.ops) + 1) + 10
    out = [f'<svg id="layer-graph-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">']

    def mid(i: int) -> int:  # row i + 1 (row 0: the graph inputs)
        return row * (i + 1) + 10 + box_h // 2

    edges = []
    for j, op in enumerate(graph.ops):
        for t in op.inputs:
            if graph.tensors[t].is_const:
                continue
            i = prod.get(t, -1)  # -1: a graph input
            y0, y1 = mid(i) + box_h // 2, mid(j) - box_h // 2
            if i == j - 1:
                edges.append(f'<line class="edge" x1="{left + 40}" y1="{y0}" x2="{left + 40}" y2="{y1}" stroke="#888"/>')
            else:
                bend = left + box_w + 20 + 12 * min(j - i, 16)
                edges.append(f'<path class="edge" d="M{left + box_w} {mid(i)} C{bend} {mid(i)} {bend} {mid(j)} '
                             f'{left + box_w} {mid(j)}" fill="none" stroke="#888"/>')
    out += edges
    names = ", ".join(graph.inputs)
    out.append(f'<rect x="{left}" y="10" width="{box_w}" height="{box_h}" fill="#eee" stroke="#999"/>'
               f'<text x="{left + 6}" y="{10 + 15}">input {_e(names[:40])}</text>')
    for i, op in enumerate(graph.ops):
        label = f"{i}: {op.kind.value} {op.name}"
        label = label if len(label) <= 46 else label[:45] + "…"
        out.append(f'<g class="node" data-op="{_e(op.name)}"><rect x="{left}" y="{row * (i + 1) + 10}" '
                   f'width="{box_w}" height="{box_h}" fill="#fff" stroke="#4e79a7"/><text x="{left + 6}" '
                   f'y="{row * (i + 1) + 25}">{_e(label)}</text><title>{_e(op.name)} (layer {_e(op.origin)})'
                   f'</title></g>')
    out.append("</svg>")
    return "\n".join(out)


# ---- tables ---------------------------------------------------------------------------------------------------
def layer_rows(graph: Graph, plan: Any) -> list[list[Any]]:
    """One row per op: step, name, Keras layer, op, inputs, output, params, MACs, estimated instructions,
    arena offset and bytes of its output (— when the output is not in the arena)."""
    rows = []
    seen: set[str] = set()
    offsets = plan.offsets if plan is not None else {}
    for i, op in enumerate(graph.ops):
        consts = [t for t in op.inputs if graph.tensors[t].is_const and t not in seen]
        seen.update(consts)
        ins = "; ".join(f"{_shape(graph.tensors[t].shape)} {graph.tensors[t].dtype.value}" for t in op.inputs
                        if not graph.tensors[t].is_const)
        out = graph.tensors[op.outputs[0]]
        off = offsets.get(op.outputs[0])
        rows.append([i, op.name, op.origin, op.kind.value, ins, f"{_shape(out.shape)} {out.dtype.value}",
                     _n(sum(graph.tensors[t].size for t in consts)), _n(op_macs(graph, op)),
                     _n(op_instructions(graph, op)), "—" if off is None else _n(off),
                     "—" if off is None else _n(out.nbytes)])
    return rows


def _budget_section(dep: Any) -> str:
    mem = dep.memory
    cfg = dep.config
    limits = {"ram": cfg.memory.ram if cfg is not None else None,
              "flash": cfg.memory.flash if cfg is not None else None}
    where = cfg.memory.where if cfg is not None else "--ram/--flash"
    parts = []
    for section in ("ram", "flash"):
        items = [i for i in mem.get("items", []) if i["section"] == section]
        total, limit = int(mem.get(section, sum(int(i["bytes"]) for i in items))), limits[section]
        scale = max(total, limit or 0, 1)
        w = 900
        bar = [f'<svg id="{section}-bar" xmlns="http://www.w3.org/2000/svg" width="{w}" height="44" '
               f'viewBox="0 0 {w} 44" shape-rendering="crispEdges" data-total="{total}" '
               f'data-budget="{limit if limit is not None else ""}">']
        x, colors = 0, {}
        for k, it in enumerate(i for i in items if int(i["bytes"]) > 0):
            width = round(int(it["bytes"]) * w / scale)
            colors[it["name"]] = RAM_COLORS[k % len(RAM_COLORS)]
            bar.append(f'<rect x="{x}" y="4" width="{width}" height="24" fill="{colors[it["name"]]}" '
                       f'stroke="#fff"><title>{_e(it["name"])}: {_n(it["bytes"])} B</title></rect>')
            x += width
        if limit is not None:
            lx = min(round(limit * w / scale), w - 1)
            bar.append(f'<line x1="{lx}" x2="{lx}" y1="0" y2="32" stroke="#222" stroke-width="2"/>')
        bar.append("</svg>")
        budget = (f"budget {_n(limit)} B ({_e(where)}), {100 * total / limit:.1f} % used" if limit else
                  "no budget given (--board, --ram/--flash)")
        rows = [[_Swatch(colors.get(it["name"])), it["name"], _n(it["bytes"]), "" if it.get("exact", True) else "~",
                 it.get("detail", "")] for it in items]
        parts.append(f'<h3>{section.upper()}: {_n(total)} B; {budget}</h3>\n' + "\n".join(bar) + "\n"
                     + _table(["", "item", "bytes", "", "detail"], rows, [False, False, True, False, False],
                              f"{section}-items"))
    return "\n".join(parts)


def _learning_section(dep: Any) -> str:
    if dep.inference_only:
        return ""
    rows = []
    for i, layer in enumerate(dep.classifier):
        o, n = layer.weight.shape
        rows.append([i, n, o, layer.activation, _n(layer.weight.size + layer.bias.size),
                     _n(4 * (layer.weight.size + layer.bias.size))])
    items = {i["name"]: i for i in dep.memory.get("items", [])}
    state = items.get("training state", {})
    buffer = items.get("replay buffer", {})
    lr = np.format_float_positional(np.float32(dep.train.lr), trim="-")
    return ("<section id=\"learning\"><h2>On-device learning</h2>\n"
            f"<p>Cut after <code>{_e(dep.meta.get('cut'))}</code>: {_n(dep.feature_count)} int8 features feed the "
            f"float classifier; loss {_e(dep.loss)}.</p>\n"
            + _table(["layer", "inputs", "outputs", "activation", "params", "bytes (float32)"], rows,
                     [True, True, True, False, True, True], "classifier")
            + f"\n<p>Training: SGD, learning rate {lr}, {dep.train.epochs} epoch(s) per sample, batch "
            f"{dep.train.batch_size}, trains {_e(dep.train.mode)}; training state {_n(state.get('bytes', 0))} B "
            f"({_e(state.get('detail', ''))}).</p>\n"
            f"<p>Replay buffer: {_n(dep.buffer.capacity)} entries, {_e(dep.buffer.policy)}, {_e(dep.buffer.storage)}"
            f" storage, {_n(buffer.get('bytes', 0))} B of RAM.</p></section>")


def render(dep: Any, target: str, summary: str) -> str:
    """The report page of ``dep`` compiled for ``target``; ``summary``: the compile summary's figures."""
    g, plan = dep.extractor, dep.plan
    board = dep.board.name if dep.board is not None else "none"
    kind = "inference only (the whole model in int8)" if dep.inference_only else "on-device learning"
    arena = next((i for i in dep.memory.get("items", []) if "arena" in i["name"]), None)
    plan_note = (f"tinycc's plan of the int8 graph: {_n(plan.arena)} B (lower bound {_n(plan.lower_bound)} B, "
                 f"strategy {_e(plan.strategy)})")
    if plan.overlaps:
        plan_note += (f"; {len(plan.overlaps)} output(s) written over the bytes of their input the kernel has "
                      f"already read (overlap bound {_n(plan.overlap_bound)} B): their bars overlap their input's")
    if arena is not None and int(arena["bytes"]) != int(plan.arena):
        plan_note += (f"; the target's arena in the memory report: {_n(arena['bytes'])} B "
                      f"({_e(arena.get('detail', ''))})")
    what = "Φf, the int8 feature extractor" if not dep.inference_only else "the whole int8 model"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tinycc report: {_e(dep.name)} for {_e(target)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>tinycc report: {_e(dep.name)} for target {_e(target)}</h1>",
        f'<p id="overview">{_e(kind)}; board {_e(board)}; {len(g.ops)} int8 ops in {what}.</p>',
        f'<section id="summary"><h2>Summary</h2><pre id="summary-text">{_e(summary)}</pre></section>',
        f'<section id="memory-plan"><h2>Memory plan</h2><p>{plan_note}. Each bar is a tensor: its steps in the '
        f"schedule (x) and its bytes in the arena (y); the red line marks the peak.</p>",
        memory_plan_svg(g, plan), "</section>",
        f'<section id="budget"><h2>RAM and flash</h2>{_budget_section(dep)}</section>',
        _learning_section(dep),
        '<section id="layers"><h2>Per-layer cost</h2><p>Estimated instructions: tinycc\'s int8 C kernels on a '
        "Cortex-M4 (a per-MAC / per-element model fitted to QEMU counts, within about 10 % on the benchmark "
        "models).</p>",
        _table(["step", "layer", "Keras layer", "op", "inputs", "output", "params", "MACs", "est. instructions",
                "arena offset", "bytes"], layer_rows(g, plan),
               [True, False, False, False, False, False, True, True, True, True, True], "layer-table"),
        "</section>",
        f'<section id="graph"><h2>Layer graph</h2>{layer_graph_svg(g)}</section>',
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
