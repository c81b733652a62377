"""How generated C is laid out for people: shortest exact float literals, tables wrapped under 100 columns,
kernel calls one argument a line with the parameter's name, constant arithmetic folded at generation time.

Only the text changes: the values, the calls and their order are the emitter's, so the compiled code is the same.
"""
from __future__ import annotations

import re
import textwrap
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path

import numpy as np

RUNTIME = Path(__file__).parent / "runtime"
MAX_COLUMNS = 99  # every generated line stays under 100 characters
_PROTOTYPE = re.compile(r"\b(tcc_\w+)\s*\(([^;{}()]*)\)\s*[;{]")


def c_float(v: float) -> str:
    """The shortest C literal that reads back as the same float32 (``0.01f``, ``1e-05f``, ``-0.0f``);
    a non-finite value is refused (ValueError)."""
    f = np.float32(v)
    if not np.isfinite(f):
        raise ValueError("non-finite constant")
    pos = np.format_float_positional(f, unique=True, trim="0")  # "3.0", "0.01"
    sci = np.format_float_scientific(f, unique=True, trim="-", exp_digits=1)  # "1e-5", "1.5e+20"
    return (sci if len(sci) < len(pos) else pos) + "f"


def wrap_values(values: list[str], indent: str = "    ", width: int = MAX_COLUMNS) -> str:
    """C initializer values (tinycc's own literals), as many a line as fit in ``width`` columns (at least one)."""
    # values j..k-1 make a line of ends[k] - ends[j] - 1 columns (each value and ", ", less the last space; the
    # last value of all has no comma): each line's end is found by bisection, not value by value
    ends = [0, *np.cumsum(np.fromiter(map(len, values), np.int64, len(values)) + 2).tolist()]
    room, n = width - len(indent) + 1, len(values)
    lines: list[str] = []
    j = 0
    while j < n:
        k = max(j + 1, bisect_right(ends, ends[j] + room) - 1)
        if k == n - 1 and ends[n] - ends[j] <= room + 1:
            k = n
        lines.append(indent + ", ".join(values[j:k]) + ("," if k < n else ""))
        j = k
    return "\n".join(lines)


def prototypes(text: str) -> dict[str, list[str]]:
    """The parameter names of every ``tcc_*`` function declared or defined in C ``text`` (tinycc's own)."""
    out = {}
    for fn, params in _PROTOTYPE.findall(text):
        names = [re.findall(r"\w+", p)[-1] for p in params.split(",") if re.findall(r"\w+", p)]
        if names != ["void"]:
            out[fn] = names
    return out


@lru_cache(maxsize=1)
def runtime_prototypes() -> dict[str, list[str]]:
    """The parameter names of the runtime's kernels (tinycc_kernels.h, tinycc_cmsis.h)."""
    out: dict[str, list[str]] = {}
    for header in ("tinycc_kernels.h", "tinycc_cmsis.h"):
        out.update(prototypes((RUNTIME / header).read_text()))
    return out


def _bare(arg: str) -> str:
    """``(tcc_arena + 224)`` -> ``tcc_arena + 224`` (an argument needs no parentheses)."""
    m = re.fullmatch(r"\((\w+ \+ \d+)\)", arg)
    return m.group(1) if m else arg


def format_call(fn: str, args: list[str], params: list[str] | None, indent: str = "    ",
                prefix: str = "") -> str:
    """One kernel call: on one line when it has at most three arguments, else one argument a line, each with
    a comment naming its parameter (``params``: the function's parameter names, or None)."""
    args = [_bare(a) for a in args]
    head = f"{indent}{prefix}{fn}("
    if len(args) <= 3 or not params or len(params) != len(args):
        one = f"{head}{', '.join(args)});"
        if len(one) <= MAX_COLUMNS or not params or len(params) != len(args):
            return one
    pad = " " * len(head)
    width = max(len(a) for a in args) + 2  # "arg," or "arg);"
    lines = []
    for i, (a, p) in enumerate(zip(args, params)):
        text = a + (");" if i + 1 == len(args) else ",")
        lines.append(f"{head if i == 0 else pad}{text:<{width}} /* {p} */")
    return "\n".join(lines)


# constant arithmetic folded while a template is rendered (kernel templates: `{{ lin('oy', SH, -PT) }}`)

def lin(var: str, k: int, c: int = 0) -> str:
    """``var * k + c`` without the ``* 1``, ``+ 0``; a negative ``c`` as a subtraction."""
    term = "0" if k == 0 else var if k == 1 else f"{var} * {k}"
    if c == 0:
        return term
    if term == "0":
        return str(c)
    return f"{term} - {-c}" if c < 0 else f"{term} + {c}"


def cdiv(expr: str, add: int, d: int) -> str:
    """``(expr + add) / d`` folded: ``expr`` alone when ``d`` is 1 (the addend is then ``d - 1`` = 0)."""
    inner = lin(expr, 1, add)
    if d == 1:
        return inner if re.fullmatch(r"-?\w+", inner) else f"({inner})"
    return f"({inner}) / {d}"


# x * 1, x / 1, x + 0, x - 0 after an operand (integers only: 10, 0x1, 1.5f are kept)
_IDENTITY = re.compile(r"(?<=[\w)\]]) (?:[*/] 1|[+-] 0(?! [*/%]))(?![\w.])")  # a + 0 * b is not a
# (-iy0) -> -iy0, (n) -> n where the parentheses follow "= ", "? ", ": ", ", ", "(" or "[" (a binary operator too
# for a lone word): never after if/while/for, a cast's or a call's parenthesis, or a unary minus
_LONE = re.compile(r"(?:(?<=[=?:,] )|(?<=[(\[]))\((-?\w+)\)(?![\w(])|(?<=[-+*/%<>] )\((\w+)\)(?![\w(])")
# a line neither rule nor the double-parenthesis rule can change has none of these (a superset of their matches)
_MAYBE = re.compile(r"[*/] 1(?![\w.])|[+-] 0(?![\w.])|\(-?\w+\)|\(\(")


def fold_constants(code: str) -> str:
    """A kernel's C text (tinycc's template, rendered) without the arithmetic its literals made trivial:
    ``oy * 1 - 0`` -> ``oy``, ``(-iy0 + 0) / 1`` -> ``-iy0``, doubled parentheses dropped. Each identity holds
    whatever the operator's neighbours (``a * 1``, ``a / 1``, ``a + 0``, ``a - 0`` are ``a`` in integer C
    arithmetic), so the compiled code is the same; only lines outside preprocessor macros are touched."""
    out = []
    for line in code.split("\n"):
        if not _MAYBE.search(line) or line.rstrip().endswith("\\") or line.lstrip().startswith(("#", "/*", "*")):
            out.append(line)
            continue
        while True:
            new = _LONE.sub(_lone_word, _IDENTITY.sub("", line))
            if "((" in new:  # _drop_double_parens changes only a line with an opening pair of pairs
                new = _drop_double_parens(new)
            if new == line:
                break
            line = new
        out.append(line)
    return "\n".join(out)


def _lone_word(m: re.Match) -> str:
    return m.group(1) or m.group(2)


def _drop_double_parens(line: str) -> str:
    """``((a + b))`` -> ``(a + b)``: an outer pair that holds exactly one inner pair."""
    stack, match = [], {}
    for i, ch in enumerate(line):
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            match[stack.pop()] = i
    for open_, close in sorted(match.items()):
        if line[open_ + 1:open_ + 2] == "(" and match.get(open_ + 1) == close - 1:
            return line[:open_] + line[open_ + 1:close] + line[close + 1:]
    return line


def comment_lines(what: str, name: str, indent: str = "", lead: str = "") -> str:
    """``/* what: name */`` (tinycc's description, the layer's escaped name) on one line when it fits in
    MAX_COLUMNS, else the description wrapped at spaces and the name whole on a line of its own."""
    one = f"{indent}/* {lead}{what}: {name} */"
    if len(one) <= MAX_COLUMNS:
        return one
    width = MAX_COLUMNS - len(indent) - 3  # "/* " or " * "
    lines = textwrap.wrap(f"{lead}{what}:", width, break_long_words=False, break_on_hyphens=False)
    return f"{indent}/* " + f"\n{indent} * ".join(lines + [f"{name} */"])


def reflow_comments(text: str) -> str:
    """A header's block comments that start in column 0 and have a line over MAX_COLUMNS, rewrapped at spaces
    (prose only: model.h's API documentation); code lines are left as they are."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        j = i
        if lines[i].startswith("/*"):
            while "*/" not in lines[j] and j + 1 < len(lines):
                j += 1
        block = lines[i:j + 1]
        if lines[i].startswith("/*") and max(map(len, block)) > MAX_COLUMNS and block[-1].endswith("*/"):
            words = " ".join(l.strip().removeprefix("/*").removeprefix("*").removesuffix("*/").strip()
                             for l in block)
            wrapped = textwrap.wrap(words, MAX_COLUMNS - 6, break_long_words=False, break_on_hyphens=False)
            out.append("/* " + "\n * ".join(wrapped) + " */")
        else:
            out.extend(block)
        i = j + 1
    return "\n".join(out)
