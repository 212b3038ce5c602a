"""Training on a real local platform: an interrupted search resumed, the gate both ways, fail-fast checks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from mlplatform.cluster import auth_headers, load_state

from tests.conftest import DEMO_CONFIG, ROOT
from tests.integration.conftest import cli, no_serve_apps

pytestmark = pytest.mark.integration

CONFIGS = ROOT / "jobs" / "configs"


def write_config(name: str, home: Path, **train) -> Path:
    """A copy of the demo config with a changed train section (inside the repo: it is uploaded)."""
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg.pop("deploy")
    cfg["train"] = {**cfg["train"], "model_name": "gated", "experiment": "gated", **train}
    path = CONFIGS / f"_test_{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(platform_env):
    no_serve_apps(platform_env)  # the data-parallel test needs whole CPUs; other modules' endpoints hold shares
    cli("data", "--entities", "6000", env=platform_env)
    written: list[Path] = []
    yield platform_env, written
    for p in written:
        p.unlink(missing_ok=True)


def mlflow_client(env):
    from mlflow import MlflowClient

    state = load_state(Path(env["MLPLATFORM_HOME"]))
    return MlflowClient(tracking_uri=state.mlflow_url, registry_uri=state.mlflow_url)


def gate_of(env, version: str) -> str:
    return mlflow_client(env).get_model_version("gated", version).tags["mlplatform.gate.decision"]


def aliases(env) -> dict[str, str]:
    return {a: str(v) for a, v in mlflow_client(env).get_registered_model("gated").aliases.items()}


WEAK = {
    "num_boost_round": 10,
    "report_every": 10,
    "num_samples": 1,
    "register_top": 1,
    "search_space": {},
    "params": {"objective": "binary:logistic", "max_depth": 1, "eta": 0.05},
    "gate": {"min_auc": 0.5, "max_calibration_error": 0.5},
}
STRONG = {
    "num_boost_round": 80,
    "report_every": 20,
    "num_samples": 1,
    "register_top": 1,
    "search_space": {},
    "params": {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1},
    # 80 deeper trees predict ≈ 2× slower than 10 stumps: the latency guard is tested in unit tests, not here
    # where timing noise would decide (it refused the strong model at ×2.02 once in CI).
    "gate": {"min_auc": 0.5, "max_calibration_error": 0.5, "max_latency_ratio": 20},
}


def test_gate_makes_a_first_champion_then_a_challenger_then_refuses(trained):
    env, written = trained
    weak = write_config("weak", Path(env["MLPLATFORM_HOME"]), **WEAK)
    strong = write_config("strong", Path(env["MLPLATFORM_HOME"]), **STRONG)
    written += [weak, strong]

    out = cli("submit", "train", "--config", str(weak), env=env).stdout
    assert "→ champion: no champion yet" in out
    assert aliases(env) == {"champion": "1"} and gate_of(env, "1") == "champion"

    out = cli("submit", "train", "--config", str(strong), env=env).stdout
    assert "→ challenger" in out
    assert aliases(env) == {"champion": "1", "challenger": "2"} and gate_of(env, "2") == "challenger"

    out = cli("submit", "train", "--config", str(weak), env=env).stdout
    assert "→ refused" in out and "of champion v1" in out
    assert aliases(env) == {"champion": "1", "challenger": "2"} and gate_of(env, "3") == "refused"
    version = mlflow_client(env).get_model_version("gated", "3")
    assert "min_delta" in version.tags["mlplatform.gate.reasons"] and json.loads(
        version.tags["mlplatform.gate.champion"]
    )
    assert version.description.startswith("gate → refused")


@pytest.mark.parametrize(
    "search",
    [
        {"search_alg": "optuna", "scheduler": "asha", "num_samples": 4},
        {"search_alg": "random", "scheduler": "pbt", "num_samples": 3},
        {
            "search_alg": "grid",
            "scheduler": "fifo",
            "num_samples": 1,
            "search_space": {
                "max_depth": {"type": "choice", "values": [2, 3]},
                "min_child_weight": {"type": "randint", "low": 1, "high": 3},
            },
        },
    ],
    ids=["optuna-asha", "random-pbt", "grid-fifo"],
)
def test_every_search_algorithm_and_scheduler_runs(trained, search):
    env, written = trained
    train = {
        "num_boost_round": 40,
        "report_every": 10,
        "register_top": 1,
        "gate": {"min_auc": 0.5, "max_calibration_error": 0.5},
        **search,
    }
    config = write_config(f"search_{search['search_alg']}", Path(env["MLPLATFORM_HOME"]), **train)
    written.append(config)
    out = cli("submit", "train", "--config", str(config), env=env).stdout
    table = out.split("== train:", 1)[1]
    expected = 4 if search["search_alg"] == "grid" else search["num_samples"]
    assert f"{expected} trials ({search['search_alg']} search, {search['scheduler']} scheduler, per-trial)" in table
    assert "registered gated version" in out
    if search["search_alg"] == "optuna":
        # Trials after the first in a process train on the matrices it built (the MLflow trial runs say so).
        client = mlflow_client(env)
        runs = client.search_runs(
            [client.get_experiment_by_name("gated").experiment_id], "tags.`mlplatform.search` != ''", max_results=500
        )
        newest = max(runs, key=lambda r: r.info.start_time).data.tags["mlplatform.search"]
        setup = [r.data.metrics["setup_s"] for r in runs if r.data.tags["mlplatform.search"] == newest]
        assert len(setup) == 4 and 0.0 in setup and max(setup) > 0.0, setup


def test_data_parallel_mode_trains_with_ray_train_workers(trained):
    env, written = trained
    train = {
        "mode": "data_parallel",
        "num_workers": 2,
        "cpus_per_trial": 0.5,
        "num_samples": 1,  # each trial pays Ray Train's fixed start-up (≈ 20 s): one shows the mode works
        "max_concurrent_trials": 1,
        "num_boost_round": 30,
        "report_every": 10,
        "register_top": 1,
        "gate": {"min_auc": 0.5, "max_calibration_error": 0.5},
    }
    config = write_config("dp", Path(env["MLPLATFORM_HOME"]), **train)
    written.append(config)
    out = cli("submit", "train", "--config", str(config), env=env).stdout
    assert "1 trial (random search, asha scheduler, data-parallel)" in out
    assert "registered gated version" in out
    # A trial whose workers would leave Ray Data no CPU fails before it starts instead of hanging.
    greedy = write_config("dp_greedy", Path(env["MLPLATFORM_HOME"]), **{**train, "cpus_per_trial": 1})
    written.append(greedy)
    out = cli("submit", "train", "--config", str(greedy), env=env, check=False)
    assert out.returncode == 1 and "for Ray Data's reads" in out.stdout + out.stderr


def _trial_rounds(experiment: Path) -> dict[str, int]:
    """trial folder → the last round it reported (from Tune's result.json files)."""
    out = {}
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        out[result.parent.name] = max((x.get("round", 0) for x in lines), default=0)
    return out


def test_resume_finishes_an_interrupted_search_without_redoing_finished_trials(trained):
    from ray.job_submission import JobSubmissionClient

    env, written = trained
    home = Path(env["MLPLATFORM_HOME"])
    config = write_config(
        "resume",
        home,
        num_boost_round=600,
        report_every=50,
        num_samples=3,
        max_concurrent_trials=1,
        cpus_per_trial=1,
        scheduler="fifo",
        register_top=1,
        search_space={"max_depth": {"type": "choice", "values": [8]}},
        params={"objective": "binary:logistic", "eta": 0.05},
        gate={"min_auc": 0.5, "max_calibration_error": 0.5},
    )
    written.append(config)
    submitted = time.time()
    out = cli("submit", "train", "--config", str(config), "--no-wait", env=env).stdout
    job_id = out.split("submitted ", 1)[1].split()[0]
    client = JobSubmissionClient("http://127.0.0.1:8265", headers=auth_headers())

    # Interrupt once the first trial has finished and the second has checkpointed at least once.
    deadline, experiment, rounds = time.time() + 300, None, {}
    while time.time() < deadline:
        found = sorted(d for d in (home / "tune").glob("gated-*") if d.stat().st_mtime >= submitted - 1)
        if found:
            experiment = found[-1]
            rounds = _trial_rounds(experiment)
            if sorted(rounds.values(), reverse=True)[:2] >= [600, 50] and len(rounds) >= 2:
                break
        time.sleep(0.5)
    assert experiment is not None and client.get_job_status(job_id).is_terminal() is False, rounds
    client.stop_job(job_id)
    deadline = time.time() + 60
    while not client.get_job_status(job_id).is_terminal() and time.time() < deadline:
        time.sleep(0.5)
    before = _trial_rounds(experiment)
    finished = [t for t, r in before.items() if r == 600]
    assert finished and any(r < 600 for r in before.values()), before
    reports = {t: (experiment / t / "result.json").read_text().count("\n") for t in finished}

    # Ray 2.60 races here: the stopped job's release of its working-dir package can delete it from the GCS
    # while a new job of the same content uses it ("Failed to download runtime_env file package ... deleted
    # prematurely", CI 2026-11-27). One more file makes the resumed job's package its own.
    nonce = CONFIGS / "_test_resume_nonce.yaml"
    nonce.write_text(f"# {time.time()}\n")
    written.append(nonce)
    out = cli("submit", "train", "--config", str(config), "--resume", env=env).stdout
    assert f"resuming search {experiment.name}" in out
    after = _trial_rounds(experiment)
    assert len(after) == 3 and all(r == 600 for r in after.values()), after
    # A finished trial is not trained again: it has exactly the reports it had (a re-run would add 12 more).
    assert {t: (experiment / t / "result.json").read_text().count("\n") for t in finished} == reports
    assert "registered gated version" in out


def test_unsatisfiable_resources_fail_fast(trained):
    env, written = trained
    config = write_config("huge", Path(env["MLPLATFORM_HOME"]), **{**WEAK, "cpus_per_trial": 64})
    written.append(config)
    started = time.time()
    out = cli("submit", "train", "--config", str(config), env=env, check=False)
    assert out.returncode == 1 and "cpus_per_trial 64 exceeds the largest node's" in out.stdout + out.stderr
    assert time.time() - started < 120


def test_missing_dataset_version_is_a_clear_error(trained):
    env, written = trained
    config = write_config("nodata", Path(env["MLPLATFORM_HOME"]), **{**WEAK, "dataset": "/nope/churn/abc"})
    written.append(config)
    out = cli("submit", "train", "--config", str(config), env=env, check=False)
    assert out.returncode == 1 and "no dataset version at /nope/churn/abc" in out.stdout + out.stderr
