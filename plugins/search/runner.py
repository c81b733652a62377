"""The search loop: an Optuna study (NSGA-II, RDB storage) asks, Ray tasks evaluate, the study is told.

Objectives: maximize the deployed Ω's accuracy, minimize the RAM the network needs besides the replay
buffer, minimize flash. (The buffer fills whatever RAM the budget leaves, as in `tinycc compile`, so a
feasible deployment's total RAM is always close to the budget; what a smaller network buys is buffer
entries.) Infeasible trials are told with accuracy 0 and their smallest deployment's RAM/flash, and carry
positive constraint values (``user_attrs["constraints"]``, read by NSGA-II's ``constraints_func``), so
the sampler ranks every feasible trial before them. The study lives in an RDB storage (SQLite in the output folder by
default): a search started again with the same storage and study name continues where it stopped,
counting the finished trials; several machines may share one storage. Trials that were running when a
search died are found by Optuna's heartbeat (``fail_stale_trials``) and re-enqueued with the same
architecture by ``RetryFailedTrialCallback``; a search stopped with Ctrl-C marks its running trials
failed. Scheduling, worker failures (task retries) and results are Ray's; nothing here retries.
"""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ...errors import TinyccError

log = logging.getLogger("tinycc.search")
HEARTBEAT_S, GRACE_S = 10, 30
RECORD_KEYS = ("feasible", "accuracy", "ram", "ram_network", "flash", "instructions", "buffer", "cut", "params", "epochs",
               "train_seconds", "seconds", "reason", "arch")


@dataclass
class SearchConfig:
    """Everything a trial needs besides its architecture (sent to every Ray task)."""

    budget: dict[str, Any]  # board / ram / flash as compile's options
    limits: tuple[int | None, int | None]  # RAM, flash in bytes (the board's or --ram/--flash)
    max_instructions: int | None
    epochs: int
    objective: str
    seed: int

    def task(self) -> dict[str, Any]:
        return {"budget": self.budget, "max_instructions": self.max_instructions, "epochs": self.epochs,
                "objective": self.objective, "seed": self.seed}

    def fingerprint(self, data: str, subset: int) -> str:
        """What must not change when a study is resumed (stored with the study)."""
        return json.dumps({"data": Path(data).name, "subset": subset, "budget": self.budget,
                           "max_instructions": self.max_instructions, "epochs": self.epochs,
                           "objective": self.objective}, sort_keys=True)


def constraints(trial: Any) -> list[float]:
    """NSGA-II constraint values (<= 0 feasible), stored on the trial before it is told."""
    return list(trial.user_attrs.get("constraints", [1.0]))


def _constraint_values(rec: dict[str, Any], cfg: SearchConfig) -> list[float]:
    ram_limit, flash_limit = cfg.limits
    vals = [float(rec["ram"] - ram_limit) if ram_limit else 0.0,
            float(rec["flash"] - flash_limit) if flash_limit else 0.0,
            float(rec["instructions"] - cfg.max_instructions) if cfg.max_instructions else 0.0]
    if not rec["feasible"] and max(vals) <= 0:
        vals.append(1.0)
    return vals


def open_study(storage_url: str, name: str, fingerprint: str, seed: int, population: int) -> Any:
    """Create or load the study; refuse one made for other data, budget or objective."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                         heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=2))
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=constraints)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                                directions=["maximize", "minimize", "minimize"])
    old = study.user_attrs.get("config")
    if old is None:
        study.set_user_attr("config", fingerprint)
    elif old != fingerprint:
        raise TinyccError(f"study {name!r} in {storage_url} was made with other settings ({old}); "
                          "use another --study or output folder")
    optuna.storages.fail_stale_trials(study)
    return study


def finished(study: Any) -> list[Any]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def best_feasible(trials: list[Any]) -> Any | None:
    ok = [t for t in trials if t.user_attrs.get("feasible")]
    return max(ok, key=lambda t: (t.user_attrs["accuracy"], -t.user_attrs["ram"], -t.number)) if ok else None


def start_ray(address: str | None, workers: int) -> None:
    import ray

    if not log.isEnabledFor(logging.INFO):  # Ray's start-up warnings (token auth notice) unless -v
        logging.getLogger("ray").setLevel(logging.ERROR)
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": False}
    if address:
        try:
            ray.init(address=address, **kw)
        except ConnectionError as e:
            raise TinyccError(f"--ray-address {address}: {str(e).splitlines()[-1]}") from None
    else:
        ray.init(num_cpus=workers, include_dashboard=False, **kw)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, so the study never keeps a trial half asked or half told."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, frame: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def run_search(study: Any, cfg: SearchConfig, data_ref: Any, trials: int, workers: int,
               on_result: Callable[[Any, dict[str, Any]], None], progress: bool) -> int:
    """Run trials until the study holds ``trials`` finished ones; return how many this call evaluated."""
    import optuna
    import ray
    from tqdm import tqdm

    from .objective import run_trial
    from .space import suggest

    task = ray.remote(num_cpus=1)(run_trial)
    storage = study._storage
    running: dict[Any, Any] = {}
    done = len(finished(study))
    evaluated = 0
    best = best_feasible(finished(study))
    host = socket.gethostname()
    bar = tqdm(total=trials, initial=min(done, trials), desc="search", unit="trial", file=sys.stderr,
               disable=None if progress else True)
    try:
        while done < trials or running:
            with _sigint_deferred():  # a trial is asked and submitted, or not asked at all
                while done + len(running) < trials and len(running) < workers:
                    t = study.ask()
                    t.set_user_attr("host", host)
                    running[task.remote(suggest(t), cfg.task(), data_ref)] = t
            ready, _ = ray.wait(list(running), num_returns=1, timeout=HEARTBEAT_S / 2)
            with _sigint_deferred():  # a finished trial is told completely
                for t in running.values():
                    storage.record_heartbeat(t._trial_id)
                for ref in ready:
                    t = running.pop(ref)
                    try:
                        rec = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the task failed after Ray's own retries
                        log.warning("trial %d failed: %s", t.number, str(e).splitlines()[-1] if str(e) else e)
                        study.tell(t, state=optuna.trial.TrialState.FAIL)
                        continue
                    for k in RECORD_KEYS:
                        t.set_user_attr(k, rec[k])
                    t.set_user_attr("constraints", _constraint_values(rec, cfg))
                    study.tell(t, [rec["accuracy"], rec["ram_network"], rec["flash"]])
                    on_result(t, rec)
                    done, evaluated = len(finished(study)), evaluated + 1
                    best = best_feasible(finished(study))
                    bar.n = min(done, trials)
                    bar.set_postfix_str(f"best feasible {best.user_attrs['accuracy']:.3f}" if best else
                                        "no feasible yet")
    except KeyboardInterrupt:
        for ref, t in running.items():
            ray.cancel(ref, force=True)
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        raise
    finally:
        bar.close()
    return evaluated
