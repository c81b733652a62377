"""Plain-text tables for reports (no dependencies)."""
from __future__ import annotations

from typing import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as an aligned text table; numeric-looking cells are right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        out = []
        for i, c in enumerate(r):
            numeric = c.replace(",", "").replace(".", "").replace("-", "").replace("%", "").isdigit()
            out.append(c.rjust(widths[i]) if numeric else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), line] + [fmt(r) for r in cells[1:]])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
