"""Hyperparameter search: XGBoost trials under Ray Tune with ASHA early stopping and native checkpoints.

One process per trial (xgboost's own threads = the trial's CPUs): the demo table fits in one worker, and
the measured cost of Ray Train's per-round reporting (215 s vs 6 s for 100 rounds) is not worth paying
here. Trials report every `report_every` rounds so that ASHA can stop the bad ones early.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.data.ingest import DatasetVersion
from mlplatform.data.local import SMALL_INPUT_BYTES, as_pandas, read_parquet
from mlplatform.errors import ConfigError, DataContractError, PlatformError
from mlplatform.train.common import DATA_RESERVE_CPUS, MODEL_FILE, split_frame
from mlplatform.train.config import ParamSpec, TrainConfig
from mlplatform.train.parallel import dp_trial
from mlplatform.train.task import Task

__all__ = [
    "TrainingData",
    "TrialOutcome",
    "check_table",
    "device_params",
    "trial_resources",
    "errors_summary",
    "load_training_data",
    "training_data",
    "search",
    "to_tune_space",
    "check_resources",
    "resolve_mode",
    "experiment_name",
    "latest_experiment",
]


@dataclass(frozen=True)
class TrainingData:
    features: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: Task = Task()

    def val_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.x_val, columns=self.features)


@dataclass
class TrialOutcome:
    trial_id: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_dir: str | None = None
    error: str | None = None


def load_training_data(
    dataset: DatasetVersion, *, validation_only: bool = False, max_rows: int | None = None
) -> TrainingData:
    """Read the version's table and split it by a hash of the key (stable across runs).

    The whole table (per-trial mode) is read in this process with pyarrow: it ends up here whichever way it is
    read, and Ray Data's read cost start-up for nothing (6 s for 900 rows; 1 M rows × 28: 5.2 s against
    0.95 s, 2026-11-28). Held-out rows only (data-parallel mode) go through Ray Data unless the table is
    small (what ingest calls a small input), so that a large table is filtered where it is read. Both give
    the frame Ray Data gives (`as_pandas`), sorted by key afterwards.

    Args:
        dataset: the dataset version.
        validation_only: keep only held-out rows (data-parallel mode: training rows stay in the workers).
        max_rows: read at most this many rows (after the split).
    """
    fraction = float(dataset.manifest.get("validation_fraction", 0.2))
    if not dataset.table_files:  # every record quarantined: nothing was written
        raise DataContractError(f"dataset {dataset.path} has no rows")
    small = sum(int(f.get("size", 0)) for f in dataset.manifest["files"]["table"]) <= SMALL_INPUT_BYTES
    if small or not validation_only:
        df = as_pandas(read_parquet(dataset.table_files))
        if validation_only:
            df = split_frame(df, dataset.key, fraction, validation=True)
        return training_data(df if max_rows is None else df.iloc[:max_rows], dataset, validation_only=validation_only)

    import ray.data

    ds = ray.data.read_parquet(dataset.table_files)  # the manifest's files, nothing else in the folder
    ds = ds.map_batches(
        split_frame, batch_format="pandas", fn_kwargs={"key": dataset.key, "fraction": fraction, "validation": True}
    )
    if max_rows is not None:
        ds = ds.limit(max_rows)
    return training_data(ds.to_pandas(), dataset, validation_only=True)


def training_data(df: pd.DataFrame, dataset: DatasetVersion, *, validation_only: bool = False) -> TrainingData:
    """The table's rows as training and held-out matrices, in key order.

    Ray Data hands blocks over in no promised order, and XGBoost's histograms add rows in the order they come:
    sorting by key makes a trial's booster depend on the data, not on the read (`reproduce` relies on it).
    """
    if df.empty:
        raise DataContractError(f"dataset {dataset.path} has no rows")
    df = df.sort_values(dataset.key, kind="stable", ignore_index=True)
    fraction = float(dataset.manifest.get("validation_fraction", 0.2))
    train = df.iloc[:0] if validation_only else split_frame(df, dataset.key, fraction, validation=False)
    val = df if validation_only else split_frame(df, dataset.key, fraction, validation=True)

    def xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return frame[dataset.features].to_numpy(dtype=np.float32), frame[dataset.label].to_numpy(dtype=np.float32)

    return TrainingData(dataset.features, *xy(train), *xy(val), Task.of(dataset.manifest))


def check_table(dataset: DatasetVersion) -> None:
    """Refuse, before any trial, a table no trial can learn from: no rows, one class, a feature with no value.

    Read from the version's profile (a few KB), so it costs nothing whatever the table's size.

    Raises:
        DataContractError: one line naming the dataset and the column.
    """
    stats = dataset.profile()
    where = f"dataset {dataset.manifest.get('name', '?')} version {dataset.version}"
    if not stats.get("rows"):
        raise DataContractError(f"{where} has no rows: every record was quarantined or no key has a label record")
    low, high = stats.get("label_min"), stats.get("label_max", stats.get("label_rate"))
    if low is None:  # a profile written before label_min/label_max: the positive share tells for 0/1 labels
        low = high = stats.get("label_rate") if stats.get("label_rate") in (0, 1) else None
    if low is not None and low == high:
        value = dataset.manifest.get("classes", [])[int(low)] if dataset.manifest.get("classes") else f"{low:g}"
        raise DataContractError(
            f"label {dataset.label!r} is {value} in all {stats['rows']} rows of {where}: nothing to learn (a "
            "classifier needs two classes, a regression a label that varies); check the label source or `positive:`"
        )
    empty = [name for name, f in stats.get("features", {}).items() if f.get("count") == 0]
    if empty:
        raise DataContractError(
            f"feature(s) {empty} of {where} have no value in any row: remove them, or fix the source (a wrong "
            "`path`, or a field the records do not have)"
        )


def errors_summary(outcomes: list[TrialOutcome]) -> str:
    """Failed trials said once: how many, which, and the first error's last line (not its traceback)."""
    failed = [o for o in outcomes if o.error]
    if not failed:
        return ""
    first = failed[0].error or ""
    lines = [line.strip() for line in first.strip().splitlines() if line.strip()]
    return (
        f"{len(failed)} of {len(outcomes)} trial(s) failed ({', '.join(o.trial_id for o in failed[:5])}"
        f"{', ...' if len(failed) > 5 else ''}); first error: {(lines[-1] if lines else first)[:300]}"
    )


def resolve_mode(cfg: TrainConfig, rows: int) -> str:
    """per_trial or data_parallel: the config's choice, or by table size in auto mode."""
    if cfg.mode != "auto":
        return cfg.mode
    return "data_parallel" if rows > cfg.max_rows_per_trial else "per_trial"


def to_tune_space(space: dict[str, ParamSpec], *, grid: bool = False) -> dict[str, Any]:
    """Tune's search space; with `grid`, every choice/randint dimension becomes a grid axis."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, p in space.items():
        if grid:
            values = p.values if p.type == "choice" else list(range(int(p.low), int(p.high)))
            out[name] = tune.grid_search(values)
        elif p.type == "uniform":
            out[name] = tune.uniform(p.low, p.high)
        elif p.type == "loguniform":
            out[name] = tune.loguniform(p.low, p.high)
        elif p.type == "quniform":
            out[name] = tune.quniform(p.low, p.high, p.q)
        elif p.type == "randint":
            out[name] = tune.randint(int(p.low), int(p.high))
        else:
            out[name] = tune.choice(p.values)
    return out


def _trainable(
    config: dict[str, Any], table: Any, num_boost_round: int, report_every: int, nthread: int, task: Task
) -> None:
    """One trial: xgboost.train on the whole table in this process, resuming from the trial's checkpoint.

    A retried trial (FailureConfig) and a PBT exploit both arrive with a checkpoint: training continues
    from its booster for the remaining rounds instead of starting over. Each report carries `setup_s`: the
    seconds spent getting the table and building its DMatrices (0 in a process that already had them).
    """
    import time

    from ray import tune

    from mlplatform.xgb import xgboost

    xgb = xgboost()

    started = time.perf_counter()
    dtrain, dval, built = _matrices(table)
    setup_s = time.perf_counter() - started if built else 0.0
    params = {**config, "eval_metric": task.eval_metric, "nthread": nthread}

    start, booster = 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            booster = xgb.Booster(model_file=os.path.join(folder, MODEL_FILE))
        start = booster.num_boosted_rounds()
    if start >= num_boost_round:
        return

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            rnd = start + epoch + 1
            if rnd % report_every and rnd != num_boost_round:
                return False
            metrics = {
                "round": rnd,
                "setup_s": setup_s,
                **task.report({**evals_log, "train": train_metrics(model, dtrain)}),
            }
            with tempfile.TemporaryDirectory() as tmp:
                model.save_model(os.path.join(tmp, MODEL_FILE))  # native format, never pickle
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
            return False

    # The training set is scored at reports only: as an eval set XGBoost scores it every round, which took
    # half the time of 10 depth-3 rounds on 800 000 rows (0.64 of 1.37 s; benchmarks, 2026-11-27).
    xgb.train(
        params,
        dtrain,
        num_boost_round - start,
        evals=[(dval, "val")],
        verbose_eval=False,
        xgb_model=booster,
        callbacks=[Report()],
    )


def train_metrics(booster: Any, dtrain: Any) -> dict[str, list[float]]:
    """The booster's eval metrics on its training matrix now, as XGBoost's evals log holds them (the training
    matrix's predictions are cached in the booster: this is one metric pass, not a prediction)."""
    out: dict[str, list[float]] = {}
    for part in booster.eval(dtrain, name="train").split("\t")[1:]:
        name, value = part.split(":")
        out[name.removeprefix("train-")] = [float(value)]
    return out


@dataclass(frozen=True)
class TableRef:
    """The training table's object ref, wrapped: `tune.with_parameters` hands a trial a bare ObjectRef's
    *value* — a fresh copy of the table in every trial, so nothing to know it again by — but an object
    holding a ref keeps the ref."""

    ref: Any


#: The DMatrices of the table the process last trained on: (its object ref's id, train, val). Tune reuses a
#: trial's process for the next trial (`reuse_actors`), which then trains on the same matrices — and on
#: XGBoost's histogram index built into them by the first trial — instead of fetching the table and sketching
#: its quantiles again: at 1 M rows × 28 on one thread, 3.0 s of a reused trial's 4.5 s when it stopped at
#: round 10 (2026-11-28; until then the cache was keyed by a ref that Tune had already resolved, so it never hit).
_MATRICES: list[Any] = []


def _matrices(table: TableRef | TrainingData) -> tuple[Any, Any, bool]:
    """The table's (train, val) DMatrices, and whether they were built now (False: this process had them)."""
    import ray

    if not isinstance(table, TableRef):  # a table passed in directly: nothing to know it again by
        return (*_build(table), True)
    if _MATRICES and _MATRICES[0] == table.ref.hex():
        return _MATRICES[1], _MATRICES[2], False
    _MATRICES[:] = [table.ref.hex(), *_build(ray.get(table.ref))]
    return _MATRICES[1], _MATRICES[2], True


def _build(data: TrainingData) -> tuple[Any, Any]:
    from mlplatform.xgb import xgboost

    xgb = xgboost()
    dtrain = xgb.DMatrix(data.x_train, label=data.y_train, feature_names=data.features)
    return dtrain, xgb.DMatrix(data.x_val, label=data.y_val, feature_names=data.features)


def device_params(cfg: TrainConfig) -> dict[str, Any]:
    """XGBoost's device for the trials: CUDA when the trial holds a GPU (Ray sets CUDA_VISIBLE_DEVICES to it)."""
    return {"device": "cuda"} if cfg.gpus_per_trial else {}


def trial_resources(cfg: TrainConfig) -> dict[str, float]:
    """What one per-trial process asks Ray for (Tune's names): its CPUs, and its GPUs when it trains on one."""
    return {"cpu": cfg.cpus_per_trial, **({"gpu": cfg.gpus_per_trial} if cfg.gpus_per_trial else {})}


def check_resources(cfg: TrainConfig, mode: str = "per_trial") -> None:
    """Fail fast when the cluster could never run a trial (Tune would wait forever)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    if cfg.gpus_per_trial > most_gpus:
        raise PlatformError(
            f"gpus_per_trial {cfg.gpus_per_trial:g} but no node has that many GPUs (the most is {most_gpus:g}); "
            "set train.gpus_per_trial to 0 to train on CPUs, or add GPU nodes"
        )
    largest = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    total = sum(n["Resources"].get("CPU", 0.0) for n in nodes)
    what = "per worker" if mode == "data_parallel" else ""
    if cfg.cpus_per_trial > largest:
        raise PlatformError(
            f"cpus_per_trial {cfg.cpus_per_trial:g}{' ' + what if what else ''} exceeds the largest node's "
            f"{largest:g} CPUs, so no trial could start; lower train.cpus_per_trial or add bigger nodes"
        )
    if mode == "data_parallel":
        # The workers' shards stream from Ray Data, which excludes the workers' CPUs from its budget and
        # needs a whole CPU of what is left (its file listing asks for one); less and the fit hangs forever.
        if cfg.num_workers * cfg.cpus_per_trial > total - DATA_RESERVE_CPUS:
            raise PlatformError(
                f"a data-parallel trial needs {cfg.num_workers} workers × {cfg.cpus_per_trial:g} CPUs plus "
                f"{DATA_RESERVE_CPUS:g} CPU for Ray Data's reads, but the cluster has {total:g}; lower "
                "train.num_workers or train.cpus_per_trial (fractions are fine: XGBoost uses one thread per worker)"
            )


def _search_alg(cfg: TrainConfig, task: Task) -> Any:
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if cfg.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(metric=task.metric, mode=task.mode, seed=cfg.seed)
        return ConcurrencyLimiter(searcher, cfg.max_concurrent_trials)
    # The limit goes to the generator itself: Tune ignores TuneConfig.max_concurrent_trials when given a
    # search_alg instance (it wants a Searcher), and then runs every trial at once.
    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials)


def _scheduler(cfg: TrainConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if cfg.scheduler == "asha":
        return ASHAScheduler(
            time_attr="round",
            max_t=cfg.num_boost_round,
            grace_period=min(cfg.report_every, cfg.num_boost_round),
            reduction_factor=cfg.asha_reduction_factor,
        )
    if cfg.scheduler == "pbt":
        mutations = {
            name: space
            for name, space in to_tune_space(cfg.search_space).items()
            if cfg.search_space[name].type in ("uniform", "loguniform", "quniform")
        }
        if not mutations:
            raise ConfigError("train.scheduler pbt needs a uniform, loguniform or quniform search dimension to mutate")
        return PopulationBasedTraining(
            time_attr="round", perturbation_interval=cfg.report_every, hyperparam_mutations=mutations
        )
    return FIFOScheduler()


def search(
    cfg: TrainConfig,
    data: TrainingData,
    *,
    storage_path: str,
    name: str,
    resume: bool = False,
    mode: str = "per_trial",
    dataset: DatasetVersion | None = None,
    callbacks: list[Any] | None = None,
) -> list[TrialOutcome]:
    """Run (or with `resume`, finish) the search on the current Ray cluster; outcomes best first.

    Args:
        cfg: the search.
        data: the training table, split.
        storage_path: where Tune keeps experiment state and checkpoints.
        name: the experiment folder under `storage_path`; with `resume`, the one to restore.
        resume: restore an interrupted experiment with ``Tuner.restore``: unfinished and errored trials
            continue from their checkpoints, finished ones are kept as they are.
        mode: ``per_trial`` (train on `data` in one process per trial) or ``data_parallel`` (each trial a
            Ray Train fit over `dataset`'s table; `data` then only holds held-out rows).
        dataset: the dataset version (data-parallel mode).
        callbacks: Tune callbacks of a new search (`tracking.LiveTrials`); a restored one keeps its own.

    Raises:
        PlatformError: nothing to resume at `storage_path/name`, or no node can run a trial.
    """
    import ray
    from ray import tune

    check_resources(cfg, mode)
    if mode == "data_parallel":
        assert dataset is not None, "data-parallel mode needs the dataset version"
        trainable = tune.with_resources(
            tune.with_parameters(
                dp_trial,
                table_files=dataset.table_files,
                key=dataset.key,
                label=dataset.label,
                features=dataset.features,
                validation_fraction=float(dataset.manifest.get("validation_fraction", 0.2)),
                num_workers=cfg.num_workers,
                cpus_per_worker=cfg.cpus_per_trial,
                gpus_per_worker=cfg.gpus_per_trial,
                task=data.task,
                num_boost_round=cfg.num_boost_round,
                report_every=cfg.report_every,
                storage_path=storage_path,
                max_failures=cfg.max_failures,
            ),
            # The trial only drives the fit and holds no CPU: a fraction of one would leave less than a whole
            # CPU for Ray Data's reads, which then wait forever (Tune refuses an empty request, hence memory).
            {"cpu": 0, "memory": 64 * 1024 * 1024},
        )
    else:
        trainable = tune.with_resources(
            tune.with_parameters(
                _trainable,
                table=TableRef(ray.put(data)),
                num_boost_round=cfg.num_boost_round,
                report_every=cfg.report_every,
                nthread=max(1, math.ceil(cfg.cpus_per_trial)),
                task=data.task,
            ),
            trial_resources(cfg),
        )
    path = os.path.join(storage_path, name)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise PlatformError(f"nothing to resume at {path}: no Tune experiment state there")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={
                **cfg.params,
                **data.task.params(cfg.params),
                **device_params(cfg),
                "seed": cfg.seed,
                **to_tune_space(cfg.search_space, grid=cfg.search_alg == "grid"),
            },
            tune_config=tune.TuneConfig(
                metric=data.task.metric,
                mode=data.task.mode,
                num_samples=cfg.num_samples,
                scheduler=_scheduler(cfg),
                search_alg=_search_alg(cfg, data.task),
                # A per-trial process trains the next trial on its cached matrices (`_matrices`).
                reuse_actors=mode == "per_trial",
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                verbose=1,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                # PBT hands checkpoints between trials; with a retention limit, Tune deleted a checkpoint
                # that a finished trial's result still pointed at (CI, 2026-11-23). Checkpoints are small.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if cfg.scheduler == "pbt" else 2),
            ),
        )
    grid = tuner.fit()
    outcomes = []
    for result in grid:
        metrics = dict(result.metrics or {})
        error = repr(result.error) if result.error else None
        if result.checkpoint and not _has_model(result.checkpoint):
            # Registering another checkpoint would pair a model with metrics it did not score.
            error = error or f"its last checkpoint is gone ({result.checkpoint.path}); not registrable"
        history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
        outcomes.append(
            TrialOutcome(
                # A trial that failed before its first report has no metrics, hence no trial_id in them.
                trial_id=str(metrics.get("trial_id") or os.path.basename(result.path or "?")),
                config=dict(result.config or {}),
                metrics=metrics,
                history=history,
                # Data-parallel trials keep their checkpoints in the Train run and report the path.
                checkpoint_dir=result.checkpoint.path if result.checkpoint else metrics.get("checkpoint_path"),
                error=error,
            )
        )
    task, worst = data.task, -math.inf if data.task.mode == "max" else math.inf
    outcomes.sort(key=lambda o: (o.error is not None, task.sort_key(float(o.metrics.get(task.metric, worst)))))
    return outcomes


def _has_model(checkpoint: Any) -> bool:
    import pyarrow.fs as pafs

    info = checkpoint.filesystem.get_file_info(f"{checkpoint.path}/{MODEL_FILE}")
    return info.type != pafs.FileType.NotFound


def experiment_name(cfg: TrainConfig, dataset: DatasetVersion, config_hash: str) -> str:
    """The folder prefix of a search: same config on the same dataset version, same prefix."""
    return f"{cfg.experiment}-{dataset.version[:8]}-{config_hash[:8]}"


def latest_experiment(storage_path: str, prefix: str) -> str | None:
    """The newest experiment folder named `prefix`-<time> under `storage_path` (local or a URI), if any."""
    import pyarrow.fs as pafs

    try:
        fs, root = (
            pafs.FileSystem.from_uri(storage_path) if "://" in storage_path else (pafs.LocalFileSystem(), storage_path)
        )
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (OSError, ValueError):
        return None
    found = sorted(
        i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix + "-")
    )
    return found[-1] if found else None
