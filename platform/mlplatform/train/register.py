"""Record a search in MLflow (a parent run, a child run per trial) and register the best trials.

Trials do not talk to MLflow themselves: the driver logs their results after the search, so a trial
never blocks on the tracking server and the SQLite behind it sees one writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mlplatform.data.ingest import DatasetVersion
from mlplatform.data.schema import SCHEMA_FILE, input_schema
from mlplatform.errors import PlatformError
from mlplatform.registry import CHALLENGER, CHAMPION, client, git_commit, load_booster, model_uri, set_aliases
from mlplatform.settings import MLPLATFORM_SUBMITTED_BY
from mlplatform.train.common import MODEL_FILE
from mlplatform.train.config import TrainConfig
from mlplatform.train.gate import Decision, Evaluation, decide, evaluate
from mlplatform.train.search import TrainingData, TrialOutcome, errors_summary
from mlplatform.train.task import Task
from mlplatform.train.tracking import LiveTrials, trial_runs

__all__ = ["RegisteredVersion", "config_hash", "open_search", "log_and_register", "gate_and_alias"]


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    aliases: tuple[str, ...]


def ray_job() -> str:
    """The Ray job this process runs in: its submission id (`ray job submit`, `mlplatform submit`), else the
    driver's job id; "" outside Ray.

    Ray strips RAY_JOB_ID from a submitted job's environment and its runtime context (2.60) has no submission
    id; the job supervisor hands the driver its job config, whose metadata holds it, in this variable.
    """
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        submission = (config.get("metadata") or {}).get("job_submission_id")
    except (ValueError, AttributeError):
        submission = None
    if submission:
        return str(submission)
    import ray

    return ray.get_runtime_context().get_job_id() if ray.is_initialized() else ""


def config_hash(config: BaseModel) -> str:
    """Short hash of a validated config: equal configs, equal hashes."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def _numeric(d: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def search_lineage(dataset: DatasetVersion, pipeline_config_hash: str) -> dict[str, str]:
    """The tags of a search's runs and versions: the data set, the config, the code, the job, who."""
    return {
        "mlplatform.dataset.name": dataset.manifest["name"],
        "mlplatform.dataset.version": dataset.version,
        "mlplatform.dataset.fingerprint": dataset.fingerprint,
        "mlplatform.dataset.path": dataset.path,
        "mlplatform.config_hash": pipeline_config_hash,
        "mlplatform.git_commit": git_commit(),
        "mlplatform.ray_job_id": ray_job(),
        "mlplatform.submitted_by": MLPLATFORM_SUBMITTED_BY.get() or os.environ.get("USER", ""),
    }


def open_search(cfg: TrainConfig, dataset: DatasetVersion, pipeline_config_hash: str, search: str) -> LiveTrials:
    """The search's MLflow run, opened before its first trial, and the Tune callback that logs each trial into
    a child run of it as the trial reports (pass its ``parent_run_id`` and `search` to `log_and_register`)."""
    import mlflow

    experiment = mlflow.set_experiment(cfg.experiment)
    lineage = search_lineage(dataset, pipeline_config_hash)
    run = client().create_run(experiment.experiment_id, run_name=f"search-{cfg.model_name}", tags=lineage)
    return LiveTrials(mlflow.get_tracking_uri(), experiment.experiment_id, run.info.run_id, search, lineage)


def log_and_register(
    cfg: TrainConfig,
    outcomes: list[TrialOutcome],
    data: TrainingData,
    dataset: DatasetVersion,
    *,
    pipeline_config_hash: str,
    parent_run_id: str | None = None,
    search: str | None = None,
) -> tuple[list[RegisteredVersion], Decision]:
    """Log the search to MLflow, register the best `cfg.register_top` trials, and run the promotion gate.

    With `parent_run_id` (`open_search`), the search's run and the trial runs logged live under `search` are
    completed rather than made anew (trials without a live run, e.g. finished before a resume, get one here).

    Returns:
        The registered versions (best first, with the aliases the gate gave them) and the gate's decision.
    """
    from mlplatform.xgb import xgboost

    xgb = xgboost()  # before MLflow's flavor imports it with scikit-learn
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    ok = [o for o in outcomes if o.error is None and o.checkpoint_dir and data.task.metric in o.metrics]
    if len(ok) < cfg.register_top:
        if parent_run_id:
            client().set_terminated(parent_run_id, "FAILED")
        raise PlatformError(
            f"only {len(ok)} trial(s) finished, {cfg.register_top} needed to register: {errors_summary(outcomes)}"
        )

    experiment = mlflow.set_experiment(cfg.experiment)
    lineage = search_lineage(dataset, pipeline_config_hash)
    val_df = data.val_frame()
    ds_input = mlflow.data.from_pandas(
        val_df.assign(**{dataset.label: data.y_val}),
        source=dataset.path,
        name=f"{dataset.manifest['name']}@{dataset.version}",
        targets=dataset.label,
        digest=dataset.fingerprint[:16],
    )
    registered: list[RegisteredVersion] = []
    live = trial_runs(client(), experiment.experiment_id, search) if search else {}
    opened = mlflow.start_run(run_id=parent_run_id) if parent_run_id else None
    with opened or mlflow.start_run(run_name=f"search-{cfg.model_name}", tags=lineage):
        mlflow.log_input(ds_input, context="training")
        # The version's manifest (source files, reconciliation) and profile: run → dataset → source files.
        for name in ("manifest.json", "profile.json"):
            if os.path.exists(os.path.join(dataset.path, name)):
                mlflow.log_artifact(os.path.join(dataset.path, name), "dataset")
        mlflow.log_params({"num_samples": cfg.num_samples, "num_boost_round": cfg.num_boost_round})
        mlflow.log_dict(json.loads(cfg.model_dump_json()), "train_config.json")
        best = ok[0]
        mlflow.log_metrics({f"best_{k}": v for k, v in _numeric(best.metrics).items() if k.startswith("val_")})
        child_runs: dict[str, str] = {}
        for o in outcomes:
            if o.trial_id in live:  # logged while the search ran (`tracking.LiveTrials`)
                child_runs[o.trial_id] = live[o.trial_id]
                continue
            with mlflow.start_run(
                run_name=f"trial-{o.trial_id}", nested=True, tags={**lineage, "trial_id": o.trial_id}
            ) as child:
                mlflow.log_params({k: v for k, v in o.config.items()})
                for row in o.history:
                    step = int(row.get("round", 0))
                    mlflow.log_metrics(
                        {k: v for k, v in _numeric(row).items() if k.startswith(("val_", "train_"))}, step=step
                    )
                if o.error:
                    mlflow.set_tag("error", o.error[:5000])
                child_runs[o.trial_id] = child.info.run_id

        # The served signature: the raw values each feature takes, categories in ingest's code order.
        served = input_schema(dataset.profile(), list(val_df.columns), data.task.kind, data.task.classes)
        schema = served.model_dump_json(indent=1)
        boosters = {}
        with tempfile.TemporaryDirectory(prefix="mlplatform-schema-") as schema_dir:
            schema_file = os.path.join(schema_dir, SCHEMA_FILE)
            with open(schema_file, "w") as f:
                f.write(schema)
            for rank, o in enumerate(ok[: cfg.register_top]):
                booster = xgb.Booster()
                booster.load_model(os.path.join(o.checkpoint_dir, MODEL_FILE))
                example = val_df.head(5)
                signature = infer_signature(example, booster.inplace_predict(example.to_numpy(dtype="float32")))
                with mlflow.start_run(run_id=child_runs[o.trial_id], nested=True):
                    info = mlflow.xgboost.log_model(
                        booster,
                        name="model",
                        model_format="ubj",
                        signature=signature,
                        input_example=example.head(2),
                        registered_model_name=cfg.model_name,
                        extra_files=[schema_file],
                        # The flavor's own requirement (xgboost==<this version>), stated: left to infer them,
                        # MLflow starts a Python that imports the model to list modules — 2.7 s per version.
                        pip_requirements=mlflow.xgboost.get_default_pip_requirements(),
                    )
                    _log_importance(booster)
                    mlflow.log_dict(o.config, "resolved_params.json")
                version = str(info.registered_model_version)
                mlflow_client = mlflow.MlflowClient()
                metrics = {k: v for k, v in _numeric(o.metrics).items() if k.startswith("val_")}
                for k, v in {
                    **lineage,
                    "mlplatform.trial_id": o.trial_id,
                    "mlplatform.rank": str(rank),
                    "mlplatform.task": data.task.kind,
                    **({"mlplatform.classes": json.dumps(data.task.classes)} if data.task.classes else {}),
                    **{f"mlplatform.metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
                }.items():
                    mlflow_client.set_model_version_tag(cfg.model_name, version, k, str(v))
                boosters[version] = booster
                registered.append(RegisteredVersion(cfg.model_name, version, child_runs[o.trial_id], metrics, ()))
        mlflow.set_tag("mlplatform.registered_versions", ",".join(r.version for r in registered))
        decision, moves = gate_and_alias(cfg, registered, boosters, data)
        numbers = {k: v for k, v in decision.candidate.as_dict().items() if isinstance(v, (int, float))}
        mlflow.log_metrics({f"gate_candidate_{k}": float(v) for k, v in numbers.items()})
        mlflow.set_tag("mlplatform.gate", decision.summary()[:5000])
    registered = [
        RegisteredVersion(r.name, r.version, r.run_id, r.metrics, tuple(a for a, v in moves.items() if v == r.version))
        for r in registered
    ]
    return registered, decision


def _log_importance(booster: Any) -> None:
    """Feature importance (gain) as a table and a bar chart in the current run."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    import mlflow

    gain = booster.get_score(importance_type="gain")
    if not gain:
        return
    mlflow.log_dict({k: float(v) for k, v in sorted(gain.items(), key=lambda kv: -kv[1])}, "feature_importance.json")
    names, values = zip(*sorted(gain.items(), key=lambda kv: kv[1]), strict=True)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1))
    ax.barh(names, values)
    ax.set_xlabel("gain")
    ax.set_title("feature importance")
    fig.tight_layout()
    mlflow.log_figure(fig, "feature_importance.png")
    plt.close(fig)


def _record(mlflow_client: Any, name: str, version: str, decision: Decision) -> None:
    tags = {
        "mlplatform.gate.decision": decision.alias or "refused",
        "mlplatform.gate.reasons": "; ".join(decision.reasons),
        "mlplatform.gate.candidate": json.dumps(decision.candidate.as_dict()),
    }
    if decision.champion is not None:
        tags["mlplatform.gate.champion"] = json.dumps(
            {"version": decision.champion_version, **decision.champion.as_dict()}
        )
    for k, v in tags.items():
        mlflow_client.set_model_version_tag(name, version, k, v[:5000])
    mlflow_client.update_model_version(name, version, description=f"gate {decision.summary()}"[:5000])


def gate_and_alias(
    cfg: TrainConfig, registered: list[RegisteredVersion], boosters: dict[str, Any], data: TrainingData
) -> tuple[Decision, dict[str, str]]:
    """Judge the best new version against the champion on the held-out split; move aliases accordingly.

    With no champion, a best version that meets the absolute thresholds becomes champion, and the
    runner-up (when one was registered and meets them too) becomes challenger, so that a first
    deployment can already split traffic between the two. The decision and its numbers are recorded on
    the version (tags and description).

    Returns:
        (the decision on the best version, the aliases set: alias → version).
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        current = {a: str(v) for a, v in mlflow_client.get_registered_model(cfg.model_name).aliases.items()}
    except MlflowException:
        current = {}
    best = registered[0]

    def measure(booster: Any) -> Evaluation:
        return evaluate(booster, data.x_val, data.y_val, task=data.task, batch_rows=cfg.gate.latency_batch_rows)

    candidate = measure(boosters[best.version])
    champion_version = current.get(CHAMPION)
    if champion_version and champion_version != best.version:
        champion = load_booster(model_uri(cfg.model_name, champion_version), None)
        champion_tags = mlflow_client.get_model_version(cfg.model_name, champion_version).tags
        champion_task = Task(champion_tags.get("mlplatform.task", "binary"))
        if champion_task.kind != data.task.kind:
            decision = Decision(
                None,
                [
                    f"champion v{champion_version} is a {champion_task.kind} model and this one {data.task.kind}: "
                    "they cannot be compared; promote by hand if the change is intended"
                ],
                candidate,
                None,
                champion_version,
            )
        elif list(champion.feature_names or []) != list(data.features):
            decision = Decision(
                None,
                [
                    f"champion v{champion_version} takes other features {champion.feature_names}, so it cannot be "
                    f"compared on this dataset; promote by hand if the change is intended"
                ],
                candidate,
                None,
                champion_version,
            )
        else:
            decision = decide(candidate, measure(champion), cfg.gate, champion_version)
    else:
        decision = decide(candidate, None, cfg.gate)
    _record(mlflow_client, cfg.model_name, best.version, decision)

    moves: dict[str, str] = {}
    if decision.alias == CHAMPION:
        moves[CHAMPION] = best.version
        if len(registered) > 1:
            runner = registered[1]
            runner_decision = decide(measure(boosters[runner.version]), None, cfg.gate)
            if runner_decision.passed:
                moves[CHALLENGER] = runner.version
                runner_decision = Decision(
                    CHALLENGER, [*runner_decision.reasons, "runner-up of the first champion"], runner_decision.candidate
                )
            _record(mlflow_client, cfg.model_name, runner.version, runner_decision)
    elif decision.alias == CHALLENGER:
        moves[CHALLENGER] = best.version
    set_aliases(cfg.model_name, moves)
    return decision, moves
