"""Report output: plain-text and markdown tables, and matplotlib figures rendered to PNG bytes."""
from __future__ import annotations

from typing import Any, Sequence


MIN_TEXT_WIDTH = 12


def shorten(text: str, width: int) -> str:
    """``text`` cut in the middle to at most ``width`` characters (``head...tail``)."""
    if len(text) <= width:
        return text
    keep = max(width - 3, 2)
    return text[:(keep + 1) // 2] + "..." + text[len(text) - keep // 2:]


def terminal_width() -> int:
    """Columns of the user's terminal (100 when not a terminal)."""
    import shutil

    return shutil.get_terminal_size(fallback=(100, 24)).columns


def _numeric(c: str) -> bool:
    return c.replace(",", "").replace(".", "").replace("-", "").replace("%", "").isdigit()


def table(header: Sequence[str], rows: Sequence[Sequence[object]], width: int | None = None) -> str:
    """Render rows as an aligned text table; numbers are right-aligned in columns of numbers. With ``width``, the
    widest text columns are shortened in the middle (never below 12 characters) until a row fits."""
    from .names import terminal  # cells may hold model names: no escape sequences on the terminal

    cells = [[terminal(c) for c in header]] + [[terminal(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    if width is not None:
        text_cols = [i for i in range(len(header)) if not all(_numeric(r[i]) or not r[i] for r in cells[1:])]
        while sum(widths) + 2 * (len(widths) - 1) > width:
            i = max(text_cols, key=lambda j: widths[j], default=None)
            if i is None or widths[i] <= MIN_TEXT_WIDTH:
                break
            widths[i] = max(MIN_TEXT_WIDTH, widths[i] - (sum(widths) + 2 * (len(widths) - 1) - width))
            cells = [[shorten(c, widths[i]) if j == i else c for j, c in enumerate(r)] for r in cells]
            widths = [max(len(r[j]) for r in cells) for j in range(len(header))]

    # numbers are right-aligned in numeric columns only: a number among text stays under its column's heading
    numeric = [all(_numeric(r[i]) or not r[i] for r in cells[1:]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        out = []
        for i, c in enumerate(r):
            out.append(c.rjust(widths[i]) if _numeric(c) and numeric[i] else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), line] + [fmt(r) for r in cells[1:]])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def png_bytes(fig: Any, dpi: int = 120) -> bytes:
    """Lay out, render and close a matplotlib figure; its PNG bytes (written atomically by the caller)."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
