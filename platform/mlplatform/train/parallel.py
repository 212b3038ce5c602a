"""Data-parallel trials: one Tune trial drives a Ray Train XGBoostTrainer over `num_workers` workers.

For tables too big for one worker. Each worker gets a shard of the dataset version (Ray Data, split by key
hash exactly as in per-trial mode), builds its DMatrix, and XGBoost's collective ties the workers into one
model. Workers report to Train every ``report_every`` rounds only: a report is a synchronisation point of
every worker plus a checkpoint upload, and reporting every round made a 100-round fit take 215 s instead
of 18 s here. `TuneReportCallback` relays the reports to the Tune trial so that ASHA and PBT work as in
per-trial mode; a retried or restored trial continues from its last checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from mlplatform.train.common import MODEL_FILE, split_frame
from mlplatform.train.task import Task

__all__ = ["dp_trial", "CHECKPOINT_PATH_KEY"]

#: CPUs of each Ray Data read/split task feeding the workers.
DATA_CPUS = 0.25

#: Where `TuneReportCallback` puts the path of a Train checkpoint in the Tune trial's metrics.
CHECKPOINT_PATH_KEY = "checkpoint_path"


def _worker(config: dict[str, Any]) -> None:
    """One Train worker: its shards → DMatrix → xgboost.train joined to the others by XGBoost's collective."""
    import ray.train

    from mlplatform.xgb import xgboost

    xgb = xgboost()

    params = dict(config["params"])
    task: Task = config["task"]
    features, label = config["features"], config["label"]
    rounds, every = config["num_boost_round"], config["report_every"]

    def matrix(name: str) -> xgb.DMatrix:
        df = ray.train.get_dataset_shard(name).materialize().to_pandas()
        return xgb.DMatrix(
            df[features].to_numpy("float32"), label=df[label].to_numpy("float32"), feature_names=features
        )

    dtrain, dval = matrix("train"), matrix("val")
    start, booster = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            booster = xgb.Booster(model_file=os.path.join(folder, MODEL_FILE))
        start = booster.num_boosted_rounds()
    rank = ray.train.get_context().get_world_rank()

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            rnd = start + epoch + 1
            if rnd % every and rnd != rounds:
                return False
            metrics = {"round": rnd, **task.report(evals_log)}
            # Every worker reports (a collective); only rank 0 uploads the model.
            if rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    model.save_model(os.path.join(tmp, MODEL_FILE))
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)
            return False

    if start < rounds:
        xgb.train(
            {**params, "eval_metric": task.eval_metric},
            dtrain,
            rounds - start,
            evals=[(dtrain, "train"), (dval, "val")],
            verbose_eval=False,
            xgb_model=booster,
            callbacks=[Report()],
        )


def worker_scaling(num_workers: int, cpus: float, gpus: float) -> Any:
    """Ray Train's scaling of a data-parallel fit: each worker's CPUs, and its GPUs when it trains on one (the
    trial's params then say device cuda, see `search.device_params`)."""
    import ray.train

    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return ray.train.ScalingConfig(num_workers=num_workers, use_gpu=bool(gpus), resources_per_worker=per_worker)


def dp_trial(
    config: dict[str, Any],
    *,
    table_files: list[str],
    key: str,
    label: str,
    features: list[str],
    validation_fraction: float,
    num_workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    task: Task,
    num_boost_round: int,
    report_every: int,
    storage_path: str,
    max_failures: int,
) -> None:
    """The Tune trainable of a data-parallel trial: runs one Ray Train fit and relays its reports."""
    import ray.data
    import ray.train
    from ray import tune

    from mlplatform.xgb import xgboost

    xgboost()  # before Ray Train's XGBoost integration imports it with scikit-learn
    from ray.train.xgboost import XGBoostTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    # Reads and splits ask for a quarter CPU: the workers hold whole CPUs' worth, and tasks asking for a
    # whole one could wait forever for the fraction left over (measured: a 10-minute hang on 2 CPUs).
    ray.data.DataContext.get_current().enable_progress_bars = False  # a progress table per shard floods job logs
    table = ray.data.read_parquet(table_files, num_cpus=DATA_CPUS)
    kwargs = {"key": key, "fraction": validation_fraction}
    datasets = {
        name: table.map_batches(
            split_frame, batch_format="pandas", num_cpus=DATA_CPUS, fn_kwargs={**kwargs, "validation": name == "val"}
        )
        for name in ("train", "val")
    }
    nthread = max(1, int(cpus_per_worker))
    context = tune.get_context()
    trainer = XGBoostTrainer(
        _worker,
        train_loop_config={
            "params": {**config, "nthread": nthread},
            "task": task,
            "features": features,
            "label": label,
            "num_boost_round": num_boost_round,
            "report_every": report_every,
        },
        scaling_config=worker_scaling(num_workers, cpus_per_worker, gpus_per_worker),
        run_config=ray.train.RunConfig(
            # Named after the trial: a retried or restored trial resumes this run from its checkpoint.
            name=f"{context.get_experiment_name()}-{context.get_trial_id()}",
            storage_path=storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
        datasets=datasets,
    )
    trainer.fit()
