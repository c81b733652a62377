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
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ....errors import TinyccError

log = logging.getLogger("tinycc.search")
HEARTBEAT_S, GRACE_S = 10, 30
CONNECT_TIMEOUT_S = 8  # a Ray head or database server that does not answer: an error within 10 s
LOCAL_WORKERS_PER_CPU = 4
MAX_FAILURES = 3  # trials failing in a row (workers killed, out of memory) stop the search with the last reason
RAY_INIT_TIMEOUT_S = 30  # a peer that accepts connections but never completes Ray's handshake
TASK_RETRIES = 1  # Ray retries a trial whose worker died once, then reports it (never endlessly)
CLUSTER_CHECK_S, NO_CPU_GRACE_S, STALL_WARN_S = 30, 60, 600
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
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=constraints)
    try:
        storage = RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                             heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=2),
                             engine_kwargs=_engine_kwargs(storage_url))
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                                    directions=["maximize", "minimize", "minimize"])
    except (ImportError, ValueError, KeyError) as e:  # no driver for the dialect, a URL SQLAlchemy cannot parse
        raise TinyccError(f"--storage {storage_url}: cannot open ({_first_line(e)})") from None
    except Exception as e:  # SQLAlchemy's errors: unwritable file, no server, wrong password, a foreign database
        if not type(e).__module__.startswith(("sqlalchemy", "optuna", "sqlite3")):
            raise
        raise TinyccError(f"--storage {storage_url}: cannot open the study database ({_first_line(e)})") from None
    old = study.user_attrs.get("config")
    if old is None:
        study.set_user_attr("config", fingerprint)
    elif old != fingerprint:
        raise TinyccError(f"study {name!r} in {storage_url} was made with other settings ({old}); "
                          "use another --study or output folder")
    optuna.storages.fail_stale_trials(study)
    return study


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return (text[0][:200] if text else type(e).__name__)


def _engine_kwargs(url: str) -> dict[str, Any]:
    """A connect timeout (s) for database servers, so an unreachable one fails fast (SQLite has none)."""
    if url.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def check_workers(workers: int, address: str | None) -> None:
    """A local Ray runs at most LOCAL_WORKERS_PER_CPU trials per CPU of this machine."""
    limit = LOCAL_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if address is None and workers > limit:
        raise TinyccError(f"--workers {workers}: a local Ray runs at most {limit} trials at once on this machine "
                          f"({os.cpu_count()} CPUs); give fewer, or --ray-address of a cluster")


def check_reachable(address: str, timeout: float | None = None) -> None:
    """Fail within ``timeout`` seconds, with one line, when nothing accepts connections at HOST:PORT."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout or CONNECT_TIMEOUT_S).close()
    except socket.gaierror as e:
        raise TinyccError(f"--ray-address {address}: unknown host {host!r} ({e.strerror or e})") from None
    except TimeoutError:
        raise TinyccError(f"--ray-address {address}: no answer within {timeout or CONNECT_TIMEOUT_S:g} s "
                          "(is the Ray head running, and the port open?)") from None
    except OSError as e:
        raise TinyccError(f"--ray-address {address}: cannot connect ({e.strerror or e}; is the Ray head "
                          "running?)") from None


def finished(study: Any) -> list[Any]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def best_feasible(trials: list[Any]) -> Any | None:
    ok = [t for t in trials if t.user_attrs.get("feasible")]
    return max(ok, key=lambda t: (t.user_attrs["accuracy"], -t.user_attrs["ram"], -t.number)) if ok else None


def start_ray(address: str | None, workers: int) -> None:
    import ray

    os.environ.setdefault("RAY_task_oom_retries", str(TASK_RETRIES))  # Ray's default retries OOM-killed tasks forever
    if not log.isEnabledFor(logging.INFO):  # Ray's start-up warnings (token auth notice) unless -v
        logging.getLogger("ray").setLevel(logging.ERROR)
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": False}
    if address:
        _init_within(address, kw, RAY_INIT_TIMEOUT_S)
    else:
        # "local": always a new local instance - never a cluster that RAY_ADDRESS or `ray start`'s
        # /tmp/ray/ray_current_cluster names (Ray would take that and then refuse num_cpus)
        ray.init(address="local", num_cpus=workers, include_dashboard=False, **kw)


def _init_within(address: str, kw: dict[str, Any], timeout: float) -> None:
    """``ray.init(address=...)`` bounded in time: Ray retries a peer that accepts connections but is no Ray head
    forever, so the connection is made in a daemon thread and abandoned after ``timeout`` seconds."""
    import ray

    box: dict[str, BaseException | None] = {}

    def connect() -> None:
        try:
            ray.init(address=address, **kw)
            box["error"] = None
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["error"] = e

    thread = threading.Thread(target=connect, name="tinycc-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in box:
        raise TinyccError(f"--ray-address {address}: no Ray cluster answered within {timeout:g} s (a port that "
                          "accepts connections but is no Ray head, or a Ray of another version?)")
    e = box["error"]
    if e is not None:
        raise TinyccError(f"--ray-address {address}: {_first_line(e) if str(e) else type(e).__name__}") from None


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


class _Watchdog:
    """Search never waits silently: trials failing in a row (workers killed, out of memory) stop it, a cluster
    without CPUs stops it, and a long wait without a result is reported."""

    def __init__(self, workers: int) -> None:
        self.failures: list[str] = []
        self.limit = max(MAX_FAILURES, workers)
        self.last = self.checked = time.monotonic()
        self.no_cpu_since: float | None = None

    def succeeded(self) -> None:
        self.failures.clear()
        self.last = time.monotonic()

    def failed(self, number: int, why: str) -> None:
        self.failures.append(f"trial {number}: {why}")
        self.last = time.monotonic()
        if len(self.failures) >= self.limit:
            raise TinyccError(f"{len(self.failures)} trials in a row failed, the last {self.failures[-1][:200]} (Ray "
                              "workers killed or out of memory?); the search stops, run it again to resume")

    def check(self, running: int) -> None:
        import ray

        now = time.monotonic()
        if now - self.checked < CLUSTER_CHECK_S:
            return
        self.checked = now
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        if cpus <= 0:
            self.no_cpu_since = self.no_cpu_since or now
            if now - self.no_cpu_since >= NO_CPU_GRACE_S:
                raise TinyccError(f"the Ray cluster has had no CPU for {NO_CPU_GRACE_S} s (its nodes died or left); "
                                  "the search stops, run it again to resume")
        else:
            self.no_cpu_since = None
        if now - self.last >= STALL_WARN_S:
            log.warning("no trial finished in %.0f min; %d running on %g CPUs", (now - self.last) / 60, running, cpus)
            self.last = now


def run_search(study: Any, cfg: SearchConfig, data_ref: Any, trials: int, workers: int,
               on_result: Callable[[Any, dict[str, Any]], None], progress: bool) -> int:
    """Run trials until the study holds ``trials`` finished ones; return how many this call evaluated."""
    import optuna
    import ray
    from tqdm import tqdm

    from .objective import run_trial
    from .space import suggest

    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(run_trial)
    storage = study._storage
    watch = _Watchdog(workers)
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
            watch.check(len(running))
            with _sigint_deferred():  # a finished trial is told completely
                for t in running.values():
                    storage.record_heartbeat(t._trial_id)
                for ref in ready:
                    t = running.pop(ref)
                    try:
                        rec = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the task failed after Ray's own retries
                        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                        log.warning("trial %d failed: %s", t.number, why)
                        study.tell(t, state=optuna.trial.TrialState.FAIL)
                        watch.failed(t.number, why)
                        continue
                    watch.succeeded()
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
    except (KeyboardInterrupt, TinyccError):
        for ref, t in running.items():
            ray.cancel(ref, force=True)
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        raise
    finally:
        bar.close()
    return evaluated
