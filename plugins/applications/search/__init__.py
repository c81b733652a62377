"""`tinycc search`: architecture search constrained and scored by the deployed incremental program.

Modules: ``space`` (MobileNetV3-like candidates + cut and classifier knobs), ``feasibility`` (tinycc's
compile path: exact RAM/flash, instruction estimate), ``objective`` (one trial as a Ray task: train,
score the deployed Ω on the host simulator), ``runner`` (Optuna NSGA-II study in an RDB storage, trials
on Ray), ``outputs`` (trials.csv, pareto.png, best.keras, README.md). Needs the ``search`` extra
(optuna, ray); without it the command says how to install it.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ....errors import TinyccError
from ....output import check_output_dir, open_work_dir
from ....options import byte_size as parse_bytes
from ....options import (MAX_COUNT, MAX_EPOCHS, MAX_SAMPLES, MAX_TRIALS, MAX_WORKERS, int_range, non_negative_int,
                         path_text, peer_address, positive_float, positive_int, storage_url)

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.search")
INSTALL = "tinycc search needs optuna and ray: pip install -e '.[search]' (or pip install optuna ray)"
TEST_SAMPLES = 500


def _require_extra() -> None:
    try:
        import optuna  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        raise TinyccError(f"{INSTALL} ({e})") from None


def _check_args(args: argparse.Namespace, session: Any) -> None:
    """The budget (numbers are checked by their argparse types, tinycc/options.py)."""
    if not args.board and not (args.ram or args.flash):
        raise TinyccError("give a budget: --board NAME or --ram N and/or --flash N")
    if args.board:
        session.registry.board(args.board)


def load_data(path: str, subset: int, seed: int, scale: float | None) -> Any:
    """Training subset and held-out samples as stored (checked as `tinycc simulate` checks them)."""
    from ..scenario_data import SOURCE_FILE, load_dataset
    from .objective import TrialData

    ds = load_dataset(path, SOURCE_FILE, seed)
    x, xt = ds.x_train, ds.x_test
    if x.ndim == 3:  # [N, H, W] grey images: add the channel axis
        x, xt = x[..., None], xt[..., None]
    if x.ndim != 4:
        raise TinyccError(f"{path}: search takes images [N, H, W, C] (or [N, H, W]); got samples of shape "
                          f"{x.shape[1:]}")
    if len(xt) == 0:
        raise TinyccError(f"{path}: no held-out samples to score the candidates on")
    n_classes = int(max(ds.y_train.max(), ds.y_test.max())) + 1
    if n_classes < 2:
        raise TinyccError(f"{path}: labels of at least 2 classes needed")
    pick = np.random.default_rng(seed).permutation(len(x))[:subset]
    if scale is None:
        scale = 1 / 255 if x.dtype == np.uint8 else 1.0
    return TrialData(np.ascontiguousarray(x[pick]), ds.y_train[pick], np.ascontiguousarray(xt[:TEST_SAMPLES]),
                     ds.y_test[:TEST_SAMPLES], n_classes, float(scale), path)


def _budget(args: argparse.Namespace, session: Any) -> tuple[dict[str, Any], tuple[int | None, int | None], str]:
    budget = {k: getattr(args, k) for k in ("board", "ram", "flash") if getattr(args, k)}
    ram, flash = args.ram, args.flash
    if args.board:
        b = session.registry.board(args.board)
        ram, flash = ram or b.ram, flash or b.flash
    text = " ".join(f"--{k} {v}" for k, v in budget.items())
    return budget, (ram, flash), text


def _cmd(args: argparse.Namespace, session: Any) -> int:
    _require_extra()
    _check_args(args, session)
    from . import outputs, runner

    out = Path(args.output)
    check_output_dir(out, True)  # a file, device, link, the working folder or a foreign folder: before any work
    runner.check_workers(args.workers, args.ray_address)
    if args.ray_address:
        runner.check_reachable(args.ray_address)
    data = load_data(args.data, args.subset, args.seed, args.scale)
    budget, limits, budget_text = _budget(args, session)
    cfg = runner.SearchConfig(budget, limits, args.max_instructions, args.epochs, args.objective, args.seed)
    resumed = open_work_dir(out, args.force)  # created whole with tinycc's marker; resumed only when tinycc wrote it
    if (out / "trials").is_symlink():
        raise TinyccError(f"{out / 'trials'} is a symbolic link; tinycc does not write through links")
    (out / "trials").mkdir(exist_ok=True)
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        study = runner.open_study(storage, args.study, cfg.fingerprint(args.data, args.subset), args.seed,
                                  max(4, min(50, args.trials // 4)))
    except BaseException:
        if not resumed:  # the folder made by this run holds nothing yet
            shutil.rmtree(out, ignore_errors=True)
        raise
    done = len(runner.finished(study))
    print(f"search: {len(data.x_train)} training / {len(data.x_test)} held-out samples of {args.data}, "
          f"{data.n_classes} classes; budget {budget_text}; study {args.study!r} in {storage} "
          f"({done} of {args.trials} trials done)", flush=True)

    def on_result(t: Any, rec: dict[str, Any]) -> None:
        if rec["model"] is not None:
            outputs.trial_file(out, t.number).write_bytes(rec["model"])
        what = f"accuracy {rec['accuracy']:.3f}" if rec["feasible"] else f"infeasible ({rec['reason'][:80]})"
        print(f"trial {t.number}: {what}, RAM {rec['ram']:,} B, flash {rec['flash']:,} B, "
              f"{rec['seconds']:.1f} s", flush=True)
        outputs.write_trials_csv(out, study.get_trials(deepcopy=False))

    import ray

    runner.start_ray(args.ray_address, args.workers)
    try:
        data_ref = ray.put(data)
        try:
            runner.run_search(study, cfg, data_ref, args.trials, args.workers, on_result, not args.no_progress)
        except KeyboardInterrupt:
            outputs.write_trials_csv(out, study.get_trials(deepcopy=False))
            sys.stderr.write(f"tinycc: search stopped: {len(runner.finished(study))} of {args.trials} trials "
                             "finished; run the same command again to resume\n")
            raise
        trials = study.get_trials(deepcopy=False)
        outputs.write_trials_csv(out, trials)
        outputs.write_pareto_png(out, trials, limits[0])
        best = runner.best_feasible(runner.finished(study))
        if best is None:
            print(f"no feasible architecture in {len(trials)} trials under {budget_text}; wrote {out / 'trials.csv'}")
            return 1
        _write_best(out, best, cfg, data, data_ref, args, budget_text)
    finally:
        ray.shutdown()
    return 0


def _write_best(out: Path, best: Any, cfg: Any, data: Any, data_ref: Any, args: argparse.Namespace,
                budget_text: str) -> None:
    import ray

    from . import outputs
    from ....output import write_atomic
    from .objective import final_train

    src = outputs.trial_file(out, best.number)
    if not src.exists():
        raise TinyccError(f"the best trial ({best.number}) ran in another search sharing the study; its model is "
                          f"in that search's folder")
    task = ray.remote(num_cpus=1)(final_train)
    final = ray.get(task.remote(src.read_bytes(), {**cfg.task(), "cut": best.user_attrs["cut"]}, data_ref,
                                args.final_epochs))
    if not final["feasible"]:  # cannot happen for a model that fitted before: same shapes, same memory
        raise TinyccError(f"best trial {best.number} no longer fits after final training: {final['reason']}")
    write_atomic(out / "best.keras", final["model"])
    outputs.write_readme(out, best, final, budget_text, args.data, args.final_epochs)
    print(f"best feasible: trial {best.number}, accuracy {best.user_attrs['accuracy']:.3f} "
          f"({final['accuracy']:.3f} after {args.final_epochs} more epoch(s)), RAM {final['ram']:,} B, "
          f"flash {final['flash']:,} B; wrote {out / 'best.keras'}, trials.csv, pareto.png, README.md")


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("search", help="architecture search under a RAM/flash budget, scored by the deployed "
                                             "incremental program (needs the 'search' extra: optuna, ray)")
    p.add_argument("--data", required=True, help="labelled images .npz (x_train/y_train [+ x_test/y_test] or x/y)")
    p.add_argument("--board", help="board preset: its RAM/flash are the budget")
    p.add_argument("--ram", type=parse_bytes, help="RAM budget in bytes (suffix K/M allowed)")
    p.add_argument("--flash", type=parse_bytes, help="flash budget in bytes (suffix K/M allowed)")
    p.add_argument("--max-instructions", type=int_range(1, MAX_COUNT), help="bound on the estimated instructions per inference")
    p.add_argument("--trials", type=int_range(1, MAX_TRIALS), required=True,
                   help="finished trials the study should hold")
    p.add_argument("--epochs", type=int_range(0, MAX_EPOCHS), default=3, help="training epochs per feasible trial")
    p.add_argument("--subset", type=int_range(1, MAX_SAMPLES), default=5000, help="training samples per trial")
    p.add_argument("--final-epochs", type=int_range(0, MAX_EPOCHS), default=5, help="further epochs for best.keras")
    p.add_argument("--objective", default="accuracy", choices=["accuracy", "drift"],
                   help="accuracy: the deployed Ω on held-out samples; drift: Ω's final accuracy on a concept-drift "
                        "stream")
    p.add_argument("--scale", type=positive_float,
                   help="input scale built into the model (default 1/255 for uint8 data, else 1)")
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=1,
                   help=f"trials run at the same time (local Ray: at most 4 per CPU; a cluster: at most {MAX_WORKERS})")
    p.add_argument("--ray-address", type=peer_address, metavar="HOST:PORT",
                   help="an existing Ray cluster (default: a local Ray); unreachable: an error within 10 s")
    p.add_argument("--storage", type=storage_url,
                   help="Optuna RDB storage URL, e.g. sqlite:///PATH or postgresql://... (default: sqlite:///DIR/study.db)")
    p.add_argument("--study", default="tinycc-search", help="study name in the storage")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed (>= 0) of the NSGA-II sampler, the training "
                                                                   "subset, weight initialisation and shuffling")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is drawn only on a terminal)")
    p.add_argument("-o", "--output", type=path_text, required=True,
                   help="output folder (DIR): created with tinycc's marker; a folder tinycc wrote is resumed")
    p.add_argument("--force", action="store_true",
                   help="start over: replace an output folder that tinycc wrote before (and its study.db)")
    p.set_defaults(func=_cmd)
