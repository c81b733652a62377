"""`tinycc compile --report`: report.html in the project, self-contained, the same bytes for the same compile, its
figures those of the compile; rendered in headless Chromium (when installed) without console errors, the peak
line drawn at the top of the highest tensor bar."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tinycc.api import compile_model, make_config

from .test_cli import tinycc

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"
PEAK_RGB = (0xDC, 0x00, 0x00)
PALETTE = ("#4e79a7", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#9c755f", "#bab0ac", "#8cd17d")


class Page(HTMLParser):
    """Elements (tag, attributes), the text of every element with an id, and the rows of every table."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[str] = []  # ids of the open elements with an id
        self._stack: list[str | None] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag in ("rect", "line", "path", "meta"):  # void/self-closing in this page
            return
        self._stack.append(a.get("id"))
        if a.get("id"):
            self._open.append(a["id"])
            self.text[a["id"]] = ""
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("rect", "line", "path", "meta"):
            return
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        ident = self._stack.pop() if self._stack else None
        if ident:
            self._open.remove(ident)

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            self.text[ident] += data
        if self._cell is not None:
            self._cell.append(data)

    def all(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and (cls is None or cls in a.get("class", "").split())]


def _num(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """The digits model compiled twice with --report (the CLI, then the API) and once without."""
    tmp = tmp_path_factory.mktemp("report")
    r = tinycc("compile", str(MODEL), "-t", "c", "--calib", str(DATA), "--report", "-o", str(tmp / "cli"))
    assert r.returncode == 0, r.stderr
    from tinycc.session import Session

    session = Session(autoload=False)
    result = compile_model(str(MODEL), "c", str(tmp / "api"), make_config(session, calib=str(DATA), report=True),
                           session)
    plain = tinycc("compile", str(MODEL), "-t", "c", "--calib", str(DATA), "-o", str(tmp / "plain"))
    assert plain.returncode == 0, plain.stderr
    return {"tmp": tmp, "stdout": r.stdout, "result": result, "plain": tmp / "plain", "plain_stdout": plain.stdout}


def test_report_only_with_the_flag_and_the_same_bytes(compiled: dict) -> None:
    tmp = compiled["tmp"]
    page = (tmp / "cli" / "report.html").read_bytes()
    assert page == (tmp / "api" / "report.html").read_bytes()  # same compile, same bytes (CLI and API)
    assert not (compiled["plain"] / "report.html").exists()
    assert Path(tmp / "api" / "report.html") in compiled["result"].files
    def written(text: str) -> int:
        return int(re.match(r"wrote (\d+) files", text).group(1))

    assert written(compiled["stdout"]) == written(compiled["plain_stdout"]) + 1  # counted with the project's files


def test_report_is_self_contained(compiled: dict) -> None:
    text = (compiled["tmp"] / "cli" / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert not page.all("script") and not page.all("link") and not page.all("img") and not page.all("iframe")
    assert not [a for _, a in page.elements if "src" in a or "href" in a]
    assert "url(" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text


def test_report_figures_are_the_compiles(compiled: dict) -> None:
    """The peak equals the memory report's arena; the bars are a valid plan whose top is the peak; the summary is
    what compile printed; the layer table has one row per op with MACs that follow from its shapes."""
    tmp, dep = compiled["tmp"], compiled["result"].deployment
    memory = json.loads((tmp / "cli" / "tinycc_memory.json").read_text())
    arena = next(i["bytes"] for i in memory["items"] if i["name"] == "feature extractor arena")
    page = Page((tmp / "cli" / "report.html").read_text(encoding="utf-8"))
    assert [a for a in page.all("line") if a.get("id") == "peak"][0]["data-bytes"] == str(arena)
    assert page.text["peak-label"] == f"peak: arena {arena:,} B"
    bars = [(int(a["data-offset"]), int(a["data-size"]), int(a["data-start"]), int(a["data-end"]),
             int(a["data-overlap"])) for a in page.all("rect", "buf")]
    assert len(bars) == len(dep.plan.buffers) >= 3 and max(o + s for o, s, _, _, _ in bars) == arena
    assert sorted(n for _, _, _, _, n in bars if n) == sorted(dep.plan.overlaps.values())
    for i, (o1, s1, a1, e1, n1) in enumerate(bars):  # no two tensors share bytes while both live, except an
        for o2, s2, a2, e2, n2 in bars[i + 1:]:  # output over its input at the step it is made (declared bytes)
            if a1 <= e2 and a2 <= e1 and o1 < o2 + s2 and o2 < o1 + s1:
                shared = min(o1 + s1, o2 + s2) - max(o1, o2)
                made_over = (a2 == e1 and shared <= n2) or (a1 == e2 and shared <= n1)
                assert made_over, ((o1, s1, a1, e1, n1), (o2, s2, a2, e2, n2))
    assert page.text["summary-text"].strip() == compiled["stdout"].split("\n", 1)[1].strip()
    assert f"RAM: {memory['ram']:,} B" in page.text["budget"] and f"FLASH: {memory['flash']:,} B" in page.text["budget"]
    rows = page.tables["layer-table"]
    header, body = rows[0], rows[1:]
    assert [r[3] for r in body] == [op.kind.value for op in dep.extractor.ops]
    col = {h: i for i, h in enumerate(header)}
    convs = [r for r in body if r[col["op"]] == "conv2d"]
    assert len(convs) == 2
    for r in convs:  # MACs = output elements x (weights per output channel); params = weights + one bias a channel
        out = [int(d) for d in re.findall(r"\d+", r[col["output"]].split("]")[0])]
        cout, params = out[-1], _num(r[col["params"]])
        assert _num(r[col["MACs"]]) == int(np.prod(out[1:])) * (params - cout) // cout > 0
        assert _num(r[col["est. instructions"]]) == 24 * _num(r[col["MACs"]])
    placed = [r for r in body if r[col["arena offset"]] != "—"]
    assert max(_num(r[col["arena offset"]]) + _num(r[col["bytes"]]) for r in placed) == arena
    clf = page.tables["classifier"][1:]
    assert [(int(r[1]), int(r[2])) for r in clf] == [tuple(l.weight.shape[::-1]) for l in dep.classifier]
    assert "learning rate 0.01," in page.text["learning"] and "64 entries" in page.text["learning"]


def test_inference_only_report_has_no_learning_section(tmp_path: Path) -> None:
    r = tinycc("compile", str(MODEL), "-t", "c", "--calib", str(DATA), "--inference-only", "--report",
               "-o", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    page = Page((tmp_path / "o" / "report.html").read_text(encoding="utf-8"))
    assert "learning" not in page.text and "inference only" in page.text["overview"]
    assert len(page.tables["layer-table"]) - 1 == len(page.all("g", "node")) > 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, png: Path, height: int = 1400) -> str:
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size=1000,{height}", f"--screenshot={png}", "--enable-logging=stderr", "--v=0",
                        url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and png.is_file(), r.stderr[-2000:]
    return r.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_rendered_in_chromium(compiled: dict, tmp_path: Path) -> None:
    """No console message; in the screenshot the red peak line lies on the top edge of the highest bar."""
    from PIL import Image

    bad = tmp_path / "bad.html"  # the oracle: a page with a script error logs it
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    assert ":CONSOLE" in _chromium(bad.as_uri(), tmp_path / "bad.png")

    log = _chromium((compiled["tmp"] / "cli" / "report.html").as_uri(), tmp_path / "shot.png")
    assert ":CONSOLE" not in log, log
    px = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    red = np.all(px == PEAK_RGB, axis=2)
    rows = np.nonzero(red.sum(axis=1) > 300)[0]  # the peak line spans the plot (over 800 px wide)
    assert 1 <= len(rows) <= 3, rows
    cols = np.nonzero(red[rows[0]])[0]
    palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in PALETTE])
    bar = np.zeros(red.shape, bool)
    for c in palette:
        bar |= np.all(px == c, axis=2)
    bar[:, :cols[0]] = bar[:, cols[-1] + 1:] = False  # inside the plot only
    bar[:rows[0] - 40] = False  # the memory plan, not the RAM/flash bars further down
    bar[rows[0] + 400:] = False
    bar_rows = np.nonzero(bar.any(axis=1))[0]
    assert len(bar_rows) > 100  # the bars fill the plot below the line
    assert rows[0] - 1 <= bar_rows[0] <= rows[-1] + 1, (rows, bar_rows[:5])  # the highest bar ends at the peak
