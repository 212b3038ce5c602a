"""Record a search in MLflow (a parent run, a child run per trial) and register the best trials.

Trials do not talk to MLflow themselves: the driver logs their results after the search, so a trial
never blocks on the tracking server and the SQLite behind it sees one writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mlplatform.config import TrainConfig
from mlplatform.data.ingest import DatasetVersion
from mlplatform.errors import PlatformError
from mlplatform.registry import git_commit, set_aliases
from mlplatform.settings import MLPLATFORM_SUBMITTED_BY
from mlplatform.train.search import METRIC, MODEL_FILE, TrainingData, TrialOutcome

__all__ = ["RegisteredVersion", "config_hash", "log_and_register"]


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    aliases: tuple[str, ...]


def config_hash(config: BaseModel) -> str:
    """Short hash of a validated config: equal configs, equal hashes."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def _numeric(d: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def log_and_register(
    cfg: TrainConfig,
    outcomes: list[TrialOutcome],
    data: TrainingData,
    dataset: DatasetVersion,
    *,
    pipeline_config_hash: str,
) -> list[RegisteredVersion]:
    """Log the search to MLflow and register the best `cfg.register_top` trials as model versions."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    ok = [o for o in outcomes if o.error is None and o.checkpoint_dir and METRIC in o.metrics]
    if len(ok) < cfg.register_top:
        errors = "; ".join(o.error for o in outcomes if o.error)[:2000]
        raise PlatformError(f"only {len(ok)} trial(s) finished, {cfg.register_top} needed to register. {errors}")

    mlflow.set_experiment(cfg.experiment)
    commit = git_commit()
    lineage = {
        "mlplatform.dataset.name": dataset.manifest["name"],
        "mlplatform.dataset.version": dataset.version,
        "mlplatform.dataset.fingerprint": dataset.fingerprint,
        "mlplatform.dataset.path": dataset.path,
        "mlplatform.config_hash": pipeline_config_hash,
        "mlplatform.git_commit": commit,
        "mlplatform.ray_job_id": os.environ.get("RAY_JOB_ID", ""),
        "mlplatform.submitted_by": MLPLATFORM_SUBMITTED_BY.get() or os.environ.get("USER", ""),
    }
    val_df = data.val_frame()
    ds_input = mlflow.data.from_pandas(
        val_df.assign(**{dataset.label: data.y_val}),
        source=dataset.path,
        name=f"{dataset.manifest['name']}@{dataset.version}",
        targets=dataset.label,
        digest=dataset.fingerprint[:16],
    )
    registered: list[RegisteredVersion] = []
    with mlflow.start_run(run_name=f"search-{cfg.model_name}", tags=lineage):
        mlflow.log_input(ds_input, context="training")
        mlflow.log_params({"num_samples": cfg.num_samples, "num_boost_round": cfg.num_boost_round})
        mlflow.log_dict(json.loads(cfg.model_dump_json()), "train_config.json")
        best = ok[0]
        mlflow.log_metrics({f"best_{k}": v for k, v in _numeric(best.metrics).items() if k.startswith("val_")})
        child_runs: dict[str, str] = {}
        for o in outcomes:
            with mlflow.start_run(
                run_name=f"trial-{o.trial_id}", nested=True, tags={**lineage, "trial_id": o.trial_id}
            ) as child:
                mlflow.log_params({k: v for k, v in o.config.items()})
                for row in o.history:
                    step = int(row.get("round", 0))
                    mlflow.log_metrics(
                        {k: v for k, v in _numeric(row).items() if k in (METRIC, "val_logloss", "train_auc")}, step=step
                    )
                if o.error:
                    mlflow.set_tag("error", o.error[:5000])
                child_runs[o.trial_id] = child.info.run_id

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
                )
            version = str(info.registered_model_version)
            client = mlflow.MlflowClient()
            metrics = {k: v for k, v in _numeric(o.metrics).items() if k.startswith("val_")}
            for k, v in {
                **lineage,
                "mlplatform.trial_id": o.trial_id,
                "mlplatform.rank": str(rank),
                **{f"mlplatform.metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
            }.items():
                client.set_model_version_tag(cfg.model_name, version, k, str(v))
            aliases = (cfg.aliases[rank],) if rank < len(cfg.aliases) else ()
            set_aliases(cfg.model_name, {a: version for a in aliases})
            registered.append(RegisteredVersion(cfg.model_name, version, child_runs[o.trial_id], metrics, aliases))
        mlflow.set_tag("mlplatform.registered_versions", ",".join(r.version for r in registered))
    return registered
