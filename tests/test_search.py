"""`tinycc search`: trials scored by the deployed program, feasibility by the compile path, Ray + Optuna.

Searches run on 400 of the bundled digits images (8x8x1, 10 classes) with one training epoch. Tests that
need the optional extra (optuna, ray: `pip install -e '.[search]'`) skip when it is absent.
"""
from __future__ import annotations

import csv
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pytest

from .test_cli import clean_env, tinycc

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits_data.npz"
BUDGET = ("--ram", "64K", "--flash", "256K")
SMALL = ("--data", str(DIGITS), "--subset", "400", "--epochs", "1", "--final-epochs", "1", "--no-progress")


def _extra() -> None:
    for mod in ("optuna", "ray"):
        pytest.importorskip(mod, reason=f"{mod} not installed: pip install -e '.[search]'")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def search(out: Path, *args: str, budget: tuple[str, ...] = BUDGET) -> subprocess.CompletedProcess:
    return tinycc("search", *SMALL, *budget, "-o", str(out), *args)


def one_line_error(code: int, capsys: pytest.CaptureFixture, *argv: str) -> str:
    from tinycc.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's own usage errors (a bad option value)
        rc = e.code
    assert rc == code
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    line = one_line_error(2, capsys, "search", "--data", str(DIGITS), "--board", "nano33ble", "--trials", "1",
                          "-o", str(tmp_path / "s"))
    assert "pip install -e '.[search]'" in line
    assert not (tmp_path / "s").exists()


def test_bad_input_one_line(capsys, tmp_path: Path) -> None:
    _extra()
    base = ("search", "--data", str(DIGITS), "-o", str(tmp_path / "s"))
    assert "--board NAME or --ram" in one_line_error(2, capsys, *base, "--trials", "2")
    assert "argument --trials: must be an integer in 1..100000" in one_line_error(2, capsys, *base, "--trials", "0", "--board",
                                                                         "uno")
    assert "argument --seed: must be an integer >= 0" in one_line_error(2, capsys, *base, "--trials", "1", "--board",
                                                                        "uno", "--seed", "-1")
    assert "unknown board" in one_line_error(2, capsys, *base, "--trials", "1", "--board", "nope").lower()
    assert "no such file" in one_line_error(2, capsys, "search", "--data", str(tmp_path / "x.npz"), "--board", "uno",
                                            "--trials", "1", "-o", str(tmp_path / "s")).lower()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    _extra()
    out = tmp_path_factory.mktemp("search") / "out"
    return out, search(out, "--trials", "3", "--workers", "2")


@pytest.mark.slow
def test_three_trials_outputs(searched) -> None:
    out, r = searched  # its speed is benchmarks/bench_search.py's (no timed unit test)
    assert r.returncode == 0, r.stderr
    assert [l for l in r.stderr.splitlines() if l.strip()] == [], r.stderr  # only tinycc's words, on stdout
    table = rows(out / "trials.csv")
    assert len(table) == 3 and all(t["state"] == "COMPLETE" for t in table)
    for t in table:
        assert t["arch"] and t["cut"] in ("features", "hidden") and int(t["params"]) > 0
        assert int(t["instructions"]) > 0 and float(t["seconds"]) > 0
        assert "stem_width" in t and "s1_b1_kernel" in t  # every architecture parameter has a column
        if t["feasible"] == "True":
            assert int(t["epochs"]) == 1 and float(t["train_seconds"]) > 0 and 0 <= float(t["accuracy"]) <= 1
            assert int(t["ram"]) <= 64 * 1024 and int(t["flash"]) <= 256 * 1024
            assert (out / "trials" / f"trial-{int(t['trial']):04d}.keras").exists()
    best = max((t for t in table if t["feasible"] == "True"), key=lambda t: float(t["accuracy"]))
    assert float(best["accuracy"]) > 0.3  # 10 classes: well above chance after one epoch on 400 images
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    readme = (out / "README.md").read_text()
    assert f"Best feasible trial: {best['trial']} " in readme and "tinycc compile" in readme
    assert f"--cut {best['cut']}" in readme and (out / "best.keras").exists()
    assert f"best feasible: trial {best['trial']}," in r.stdout


@pytest.mark.slow
def test_reported_memory_equals_compile(searched, capsys) -> None:
    from tinycc.cli import main

    out, r = searched
    assert r.returncode == 0, r.stderr
    feasible = [t for t in rows(out / "trials.csv") if t["feasible"] == "True"]
    assert feasible
    for t in feasible:
        proj = out / f"compiled-{t['trial']}"
        model = out / "trials" / f"trial-{int(t['trial']):04d}.keras"
        assert main(["compile", str(model), "--target", "c", "--calib", str(DIGITS), *BUDGET, "--cut", t["cut"],
                     "-o", str(proj)]) == 0
        mem = json.loads((proj / "tinycc_memory.json").read_text())
        assert (mem["ram"], mem["flash"], mem["buffer_capacity"]) == (int(t["ram"]), int(t["flash"]), int(t["buffer"]))
        buffer = sum(i["bytes"] for i in mem["items"] if i["name"] == "replay buffer")
        assert int(t["ram_network"]) == mem["ram"] - buffer > 0
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.toolchain
def test_best_compiles_and_validates_under_the_budget(searched, capsys) -> None:
    from tinycc.cli import main

    out, r = searched
    assert r.returncode == 0, r.stderr
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    cut = [l for l in (out / "README.md").read_text().splitlines() if "--cut" in l][0].split("--cut ")[1].split()[0]
    args = [str(out / "best.keras"), "--target", "c", *BUDGET, "--cut", cut]
    assert main(["compile", *args, "--calib", str(DIGITS), "-o", str(out / "best_c")]) == 0
    capsys.readouterr()
    # the generated C, built and run on the host, equals run_int8 bit for bit and learns as the simulator does
    r = tinycc("validate", *args, "--data", str(DIGITS), "-n", "10")
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.slow
def test_infeasible_budget_ends_trials_before_training(tmp_path: Path) -> None:
    _extra()
    out = tmp_path / "s"
    r = search(out, "--trials", "2", budget=("--ram", "1K", "--flash", "256K"))
    assert r.returncode == 1, r.stderr
    assert "no feasible architecture in 2 trials" in r.stdout
    table = rows(out / "trials.csv")
    assert len(table) == 2
    for t in table:
        assert t["feasible"] == "False" and t["reason"].startswith("RAM needs")
        assert (int(t["epochs"]), float(t["train_seconds"]), float(t["accuracy"])) == (0, 0.0, 0.0)
        assert int(t["buffer"]) == 1 and int(t["ram"]) > 1024  # the smallest deployment, still over budget
    assert not list((out / "trials").iterdir()) and not (out / "best.keras").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_trials_on_a_ray_cluster_drift_objective(tmp_path: Path) -> None:
    """A Ray head on 127.0.0.1, two trials through --ray-address; `ray stop` ends every Ray process of the machine."""
    _extra()
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray, "the ray command is installed with the ray package"
    port = _free_port()
    env = {**clean_env(), "RAY_AUTH_MODE": "disabled"}  # a throw-away local cluster: no token to share
    # its own short temp dir (Ray's socket paths): the head's ray_current_cluster file stays out of /tmp/ray, where
    # a concurrent local search would read it, and only this head's processes (named by the dir) are stopped
    temp = tempfile.mkdtemp(prefix="tcc-ray-", dir="/tmp")
    start = subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                           capture_output=True, text=True, env=env, timeout=300)
    try:
        assert start.returncode == 0, start.stderr
        out = tmp_path / "s"
        r = subprocess.run([sys.executable, "-m", "tinycc.cli", "search", *SMALL, "--board", "nano33ble", "--trials",
                            "2", "--ray-address", f"127.0.0.1:{port}", "--objective", "drift", "-o", str(out)],
                           capture_output=True, text=True,
                           env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        table = rows(out / "trials.csv")
        assert [t["state"] for t in table] == ["COMPLETE", "COMPLETE"]
        assert any(t["feasible"] == "True" for t in table) and (out / "best.keras").exists()
        # --objective drift: Ω's final accuracy on a concept-drift stream (classes 0 and 1 swapped)
        assert all(0.0 < float(t["accuracy"]) <= 1.0 for t in table if t["feasible"] == "True")
    finally:  # not `ray stop`: that ends every Ray process of the machine, a concurrent test's local search too
        subprocess.run(["pkill", "-9", "-f", temp], capture_output=True, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_interrupted_search_resumes_without_repeating_trials(tmp_path: Path) -> None:
    _extra()
    import optuna

    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "tinycc.cli", "search", *SMALL, *BUDGET, "--trials", "2", "-o", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "trials.csv").exists():
            time.sleep(0.5)
        assert (out / "trials.csv").exists(), "no trial finished in 5 minutes"
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (stdout, stderr)
    assert "run the same command again to resume" in stderr
    storage = f"sqlite:///{out / 'study.db'}"
    first = {t.number: t for t in optuna.load_study(study_name="tinycc-search", storage=storage).trials
             if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(first) == 1
    r = search(out, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert "(1 of 2 trials done)" in r.stdout
    evaluated = [int(l.split()[1].rstrip(":")) for l in r.stdout.splitlines() if l.startswith("trial ")]
    assert len(evaluated) == 1 and not set(evaluated) & set(first)
    after = optuna.load_study(study_name="tinycc-search", storage=storage).trials
    done = [t for t in after if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    others = [t.state for t in after if t.number not in first and t.number not in evaluated]
    assert others in ([], [optuna.trial.TrialState.FAIL])  # the trial running at the interruption, marked failed
    for t in done:  # the trials finished before the interruption are untouched
        if t.number in first:
            assert (t.params, t.values, t.datetime_complete) == (first[t.number].params, first[t.number].values,
                                                                 first[t.number].datetime_complete)
    assert len(rows(out / "trials.csv")) == len(after)


@pytest.fixture(scope="module")
def candidate(tmp_path_factory) -> tuple[Path, dict]:
    """A small candidate from the search space (no optuna needed: the architecture is a plain dict)."""
    from tinycc.plugins.applications.search.space import MAX_BLOCKS, MAX_STAGES, build_model

    arch = {"downsample": 1, "stem_width": 8, "stem_stride": 1, "stem_act": "relu", "stages": 2, "head_conv": 0,
            "hidden": 16, "cut": "hidden"}
    for i in range(1, MAX_STAGES + 1):
        arch |= {f"s{i}_blocks": 2, f"s{i}_width": 16}
        for j in range(1, MAX_BLOCKS + 1):
            arch |= {f"s{i}_b{j}_exp": 2, f"s{i}_b{j}_kernel": 5 if j == 1 else 3, f"s{i}_b{j}_se": j == 2,
                     f"s{i}_b{j}_act": "hard_swish" if i == 2 else "relu"}
    path = tmp_path_factory.mktemp("cand") / "cand.keras"
    build_model(arch, (8, 8, 1), 10, 1.0).save(path)
    return path, arch


@pytest.mark.slow
def test_feasibility_is_the_compile_path(candidate, session, tmp_path: Path) -> None:
    import numpy as np

    from .deploy_util import compile_model
    from tinycc.plugins.applications.search.feasibility import check, instruction_estimate
    from tinycc.plugins.applications.search.space import effective_cut

    path, arch = candidate
    calib = np.load(DIGITS)["x_train"][:32]
    cut = effective_cut(arch)
    ok = check(str(path), {"ram": 32 * 1024}, cut, calib, session)
    r = compile_model(str(path), "c", str(tmp_path / "c"), {"ram": 32 * 1024, "cut": cut, "calib": str(DIGITS)}, session)
    assert ok.feasible and (ok.ram, ok.flash, ok.buffer) == (r.deployment.memory["ram"], r.deployment.memory["flash"],
                                                              r.deployment.buffer.capacity)
    assert ok.ram_network == ok.ram - r.deployment.memory["items"][3]["bytes"] and \
        r.deployment.memory["items"][3]["name"] == "replay buffer"
    assert ok.instructions == instruction_estimate(r.deployment.extractor, r.deployment.classifier) > 0
    # over the instruction bound: infeasible, with the estimate in the reason
    slow = check(str(path), {"ram": 32 * 1024}, cut, calib, session, max_instructions=1000)
    assert not slow.feasible and "--max-instructions 1,000" in slow.reason and slow.deployment is None
    # over the RAM budget: the figures of the smallest deployment (one buffer entry), as compile gives them
    small = check(str(path), {"ram": 1024}, cut, calib, session)
    r1 = compile_model(str(path), "c", str(tmp_path / "c1"), {"buffer": 1, "cut": cut, "calib": str(DIGITS)}, session)
    assert not small.feasible and small.reason.startswith("RAM needs") and small.buffer == 1
    assert (small.ram, small.flash) == (r1.deployment.memory["ram"], r1.deployment.memory["flash"])


def test_instruction_estimate_near_the_measured_digits() -> None:
    """The per-op costs give the digits model's features call within 15 % of QEMU's count (benchmarks/results)."""
    import numpy as np

    from tinycc.plugins.applications.search.feasibility import compile_deployment, instruction_estimate
    from tinycc.session import Session

    dep = compile_deployment(str(ROOT / "examples" / "digits_cnn.h5"), {}, Session(autoload=False),
                             np.load(DIGITS)["x_train"][:32])
    measured = 1_165_120  # instr. features, digits, m4 (benchmarks/results/backends.md)
    assert abs(instruction_estimate(dep.extractor, []) - measured) < 0.15 * measured


def test_space_builds_every_choice(candidate) -> None:
    from tinycc.plugins.applications.search.space import build_model, describe, effective_cut

    path, arch = candidate
    assert effective_cut(arch) == "hidden" and effective_cut({**arch, "hidden": 0}) == "features"
    assert describe(arch).startswith("/1 stem8s1 [16x2 e2k5,e2k3se; 16x2 e2k5hs,e2k3sehs]")
    m = build_model({**arch, "downsample": 2, "stages": 4, "head_conv": 64, "hidden": 0}, (16, 16, 3), 4, 1 / 255)
    names = {l.name for l in m.layers}
    assert {"downsample", "head", "features", "s4_b2_se_mul", "s1_b2_add"} <= names and "hidden" not in names
    assert m.output_shape == (None, 4)
