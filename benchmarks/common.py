"""Shared helpers: result writing (Markdown + JSON), machine facts, data loading."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    """Facts printed next to every result."""
    import subprocess

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        gcc = "absent"
    import tensorflow as tf

    return {"date": _dt.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "tensorflow": tf.__version__, "gcc": gcc}


@dataclass
class Result:
    """One benchmark's output: Markdown sections, a JSON payload and plot files."""

    name: str
    sections: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.sections.append(text)

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        facts = machine()
        md = [f"# {self.name}", "", f"Measured {facts['date']} on {facts['cpu']} ({facts['cores']} cores), "
              f"Python {facts['python']}, TensorFlow {facts['tensorflow']}, {facts['gcc']}.", ""]
        md += self.sections
        md += [f"![{p}]({p})" for p in self.plots]
        (out / f"{self.name}.md").write_text("\n\n".join(md) + "\n")
        (out / f"{self.name}.json").write_text(
            json.dumps({"machine": facts, **self.data}, indent=1, sort_keys=True, default=_json_default) + "\n")
        return out / f"{self.name}.md"


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def data_file(data: str | None, name: str) -> Path:
    """Locate ``name`` (e.g. cifar10.npz) given --data (a folder or the file itself)."""
    if not data:
        raise SystemExit(f"this benchmark needs --data pointing at {name} or its folder")
    p = Path(data)
    p = p / name if p.is_dir() else p
    if not p.exists():
        raise SystemExit(f"{p} not found")
    return p
