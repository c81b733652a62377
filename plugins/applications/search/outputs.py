"""What a search leaves in its folder: trials.csv, pareto.png, best.keras, README.md (each written atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ....report import png_bytes
from ....output import write_atomic
from ..scenarios import _csv_bytes

COLUMNS = ("trial", "state", "feasible", "accuracy", "ram", "ram_network", "flash", "instructions", "buffer", "cut",
           "params",
           "epochs", "train_seconds", "seconds", "arch", "reason")


def trial_file(out: Path, number: int) -> Path:
    return out / "trials" / f"trial-{number:04d}.keras"


def write_trials_csv(out: Path, trials: list[Any]) -> Path:
    """Every trial of the study: its record, then every architecture parameter (``arch_NAME`` where a parameter
    has a record column's name: the searched ``cut`` knob beside the deployed ``cut`` layer)."""
    names = sorted({k for t in trials for k in t.params})
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        u = t.user_attrs
        row = [t.number, t.state.name] + [_fmt(u.get(k, "")) for k in COLUMNS[2:]]
        rows.append(row + [t.params.get(k, "") for k in names])
    path = out / "trials.csv"
    write_atomic(path, _csv_bytes(list(COLUMNS) + [f"arch_{k}" if k in COLUMNS else k for k in names], rows))
    return path


def _fmt(v: Any) -> Any:
    return f"{v:.4f}" if isinstance(v, float) else v


def pareto_front(points: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """(accuracy, ram) points not dominated by another (higher or equal accuracy with less or equal RAM)."""
    front, best = [], -1.0
    for acc, ram in sorted(points, key=lambda p: (p[1], -p[0])):
        if acc > best:
            front.append((acc, ram))
            best = acc
    return front


def write_pareto_png(out: Path, trials: list[Any], ram_limit: int | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t.user_attrs for t in trials if "feasible" in t.user_attrs]
    ok = [(u["accuracy"], u["ram_network"]) for u in done if u["feasible"]]
    bad = [u["ram_network"] for u in done if not u["feasible"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if ok:
        ax.scatter([r / 1024 for _, r in ok], [a for a, _ in ok], marker="o", label="feasible", zorder=3)
        front = pareto_front(ok)
        ax.step([r / 1024 for _, r in front], [a for a, _ in front], where="post", color="C2", label="Pareto front")
    if bad:
        ax.scatter([r / 1024 for r in bad], [0.0] * len(bad), marker="x", color="C3",
                   label="infeasible (not trained)", zorder=3)
    if ram_limit:
        ax.axvline(ram_limit / 1024, color="grey", ls="--", label=f"RAM budget {ram_limit / 1024:g} KiB "
                   "(the buffer fills the rest)")
    ax.set_xlabel("RAM without the replay buffer (KiB): arena, classifier, training state")
    ax.set_ylabel("accuracy of the deployed Ω")
    ax.set_ylim(-0.03, 1.0)
    ax.set_title(f"{len(done)} trials: accuracy vs RAM")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "pareto.png"
    write_atomic(path, png_bytes(fig))
    return path


def write_readme(out: Path, best: Any, final: dict[str, Any] | None, budget_args: str, data: str,
                 final_epochs: int) -> Path:
    u = best.user_attrs
    lines = ["# tinycc search result", "",
             f"Best feasible trial: {best.number} ({u['arch']}), {u['params']:,} parameters.",
             f"In the search: accuracy {u['accuracy']:.4f} after {u['epochs']} epoch(s), RAM {u['ram']:,} B "
             f"({u['ram_network']:,} B without the replay buffer), "
             f"flash {u['flash']:,} B, replay buffer {u['buffer']} entries, about {u['instructions']:,} "
             f"instructions per inference.", ""]
    if final is not None:
        lines += [f"`best.keras` is that model trained {final_epochs} more epoch(s): accuracy {final['accuracy']:.4f}, "
                  f"RAM {final['ram']:,} B, flash {final['flash']:,} B, buffer {final['buffer']} entries.", ""]
    lines += ["Compile it (the model takes samples as stored in the data file; its first layer scales them):", "",
              "```bash",
              f"tinycc compile {out / 'best.keras'} --target c --calib {data} {budget_args} --cut {u['cut']} "
              f"-o {out / 'best_c'}",
              f"make -C {out / 'best_c'} run", "```", "",
              "`trials.csv` lists every trial (architecture, feasibility, memory, instructions, accuracy, time), "
              "`pareto.png` plots accuracy against RAM, `trials/trial-NNNN.keras` are the trained candidates.", ""]
    path = out / "README.md"
    write_atomic(path, "\n".join(lines).encode())
    return path
