"""Assemble benchmarks/README.md from the runner's results (every number comes from a run)."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["backends", "quant", "scenarios", "thesis"]

HEADER = """# tinycc benchmarks

Each section below is `benchmarks/results/NAME.md` as written by `python -m benchmarks NAME --data DIR`
(machine and date in each section); JSON next to it. Regenerate this page with
`python -m benchmarks.make_readme`. Commands used for the current numbers:

```bash
python -m benchmarks backends
python -m benchmarks quant --data ../shared/data --model MODEL.keras --test 1000
python -m benchmarks scenarios --data ../shared/data --model MODEL.keras --runs 5 --scenarios concept-drift,transfer
```
"""


def main() -> int:
    res = HERE / "results"
    parts = [HEADER]
    notes = HERE / "NOTES.md"
    if notes.exists():
        parts.append(notes.read_text())
    names = [n for n in ORDER if (res / f"{n}.md").exists()]
    names += sorted(p.stem for p in res.glob("*.md") if p.stem not in names)
    for n in names:
        text = (res / f"{n}.md").read_text().replace("](", "](results/")
        parts.append(text.replace("# ", "## ", 1))
    (HERE / "README.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'README.md'} from {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
