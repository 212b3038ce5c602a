"""Reproduce a registered version from what the registry recorded (`mlplatform reproduce churn/3`).

The version's lineage says which dataset version it learned from (path and content fingerprint) and which
code (git commit); its trial run holds the resolved XGBoost params (seed included) and the search run the
train config (threads, rounds). The table is read again, checked against the fingerprint, split the same way
(a hash of the key, rows in key order) and one `xgboost.train` runs with those params for as many rounds as
the registered booster has. The metrics are reported beside the original's, and the two boosters compared
tree by tree.

Deterministic: a per-trial version (one process, XGBoost's ``hist`` on CPU with the same thread count and
seed) comes back tree for tree identical. Not: a data-parallel version (Ray Train's workers see their shards
in no fixed order and sum histograms across them), a PBT trial (its params changed mid-training, the run
records the last ones), a GPU-trained one (CUDA's floating-point atomics), and code at another commit
(the report says when the commit differs).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform import registry
from mlplatform.data.version import load_version
from mlplatform.errors import DataContractError, RegistryError
from mlplatform.train.config import TrainConfig
from mlplatform.train.search import resolve_mode, training_data
from mlplatform.train.task import Task

__all__ = ["Reproduction", "reproduce"]


@dataclass
class Reproduction:
    model: str
    version: str
    task: str
    dataset: str
    rounds: int
    original: dict[str, float]
    reproduced: dict[str, float]
    identical: bool
    commit: str
    commit_now: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [f"{'metric':<16} {'original':>12} {'reproduced':>12} {'difference':>12}"]
        for name in sorted(set(self.original) | set(self.reproduced)):
            a, b = self.original.get(name, math.nan), self.reproduced.get(name, math.nan)
            rows.append(f"{name:<16} {a:>12.6f} {b:>12.6f} {b - a:>+12.6f}")
        return "\n".join(rows)


def _artifact_json(client: Any, run_id: str, path: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return json.loads(Path(local).read_text())


def reproduce(name: str, version: str | None, alias: str | None, *, tracking_uri: str | None = None) -> Reproduction:
    """Retrain the version from its records and compare (see the module docstring).

    Raises:
        RegistryError: no such version, or it lacks the records (registered by something else than mlplatform).
        DataContractError: its dataset version is gone or its content changed (the fingerprint differs).
    """
    import numpy as np
    import pyarrow.parquet as pq

    from mlplatform.xgb import xgboost

    xgb = xgboost()

    started = time.time()
    client = registry.client(tracking_uri)
    tracking_uri = client.tracking_uri
    version = registry.resolve_version(name, version, alias, tracking_uri=tracking_uri)
    record = client.get_model_version(name, version)
    tags = record.tags
    if "mlplatform.dataset.path" not in tags or not record.run_id:
        raise RegistryError(f"{name} v{version} has no mlplatform lineage (dataset, run): it cannot be reproduced")
    run = client.get_run(record.run_id)
    params = _artifact_json(client, run.info.run_id, "resolved_params.json")
    parent = run.data.tags.get("mlflow.parentRunId")
    train_cfg = _artifact_json(client, parent, "train_config.json") if parent else {}

    try:
        dataset = load_version(tags["mlplatform.dataset.path"])
    except (OSError, ValueError) as exc:
        raise DataContractError(f"the dataset of {name} v{version} cannot be read: {exc}") from None
    recorded = tags.get("mlplatform.dataset.fingerprint")
    if recorded and dataset.fingerprint != recorded:
        raise DataContractError(
            f"dataset {dataset.path} changed since {name} v{version} was trained (fingerprint "
            f"{dataset.fingerprint[:16]}, recorded {recorded[:16]})"
        )
    data = training_data(pq.ParquetDataset(dataset.table_files).read().to_pandas(), dataset)
    task: Task = data.task
    original = registry.load_booster(registry.model_uri(name, version), tracking_uri)
    rounds = original.num_boosted_rounds()
    nthread = max(1, math.ceil(float(train_cfg.get("cpus_per_trial", 1.0))))
    dtrain = xgb.DMatrix(data.x_train, label=data.y_train, feature_names=data.features)
    dval = xgb.DMatrix(data.x_val, label=data.y_val, feature_names=data.features)
    evals: dict[str, Any] = {}
    booster = xgb.train(
        {**params, "eval_metric": task.eval_metric, "nthread": nthread},
        dtrain,
        rounds,
        evals=[(dtrain, "train"), (dval, "val")],
        evals_result=evals,
        verbose_eval=False,
    )
    reproduced = {k: v for k, v in task.report(evals).items() if k.startswith("val_")}
    original_metrics = {
        k.removeprefix("mlplatform.metric."): float(v) for k, v in tags.items() if k.startswith("mlplatform.metric.")
    }
    identical = original.get_dump() == booster.get_dump() and bool(
        np.array_equal(original.inplace_predict(data.x_val), booster.inplace_predict(data.x_val))
    )
    notes = []
    if train_cfg.get("scheduler") == "pbt":
        notes.append("a PBT search changes a trial's params while it trains; the run records the last ones")
    if params.get("device", "cpu") != "cpu" or train_cfg.get("gpus_per_trial"):
        notes.append("trained on a GPU: CUDA's floating-point sums do not come back bit for bit")
    if train_cfg and resolve_mode(TrainConfig.model_validate(train_cfg), dataset.rows) == "data_parallel":
        notes.append("data-parallel training: workers see their shards in no fixed order; reproduced per trial")
    return Reproduction(
        model=name,
        version=version,
        task=task.kind,
        dataset=f"{dataset.manifest.get('name')}@{dataset.version}",
        rounds=rounds,
        original=original_metrics,
        reproduced=reproduced,
        identical=identical,
        commit=tags.get("mlplatform.git_commit", "unknown"),
        commit_now=registry.git_commit(),
        seconds=round(time.time() - started, 2),
        notes=notes,
    )
