"""The training config: the search, its space and the promotion gate (the `train:` section of a config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mlplatform.config import StrictModel

__all__ = ["ParamSpec", "GateConfig", "TrainConfig"]


class ParamSpec(StrictModel):
    """A search-space dimension."""

    type: Literal["uniform", "loguniform", "quniform", "randint", "choice"]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty `values` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if self.type == "quniform" and not self.q:
            raise ValueError("quniform needs `q`")
        return self


class GateConfig(StrictModel):
    """The promotion gate: what a candidate must show on the held-out split before it gets an alias.

    Against a champion: the primary metric (binary ``val_auc``) must improve by at least ``min_delta`` and no guard
    may regress beyond its tolerance. With no champion yet, the absolute thresholds decide.
    """

    min_delta: float = Field(
        0.001,
        ge=0,
        description="Least improvement over the champion of the primary score (binary: AUC up; multiclass: log loss "
        "down; regression: RMSE down, in the label's units).",
    )
    max_logloss_increase: float = Field(0.01, ge=0, description="Guard: val log loss may rise by at most this.")
    max_calibration_error_increase: float = Field(
        0.02, ge=0, description="Guard: expected calibration error (10 bins) may rise by at most this."
    )
    max_latency_ratio: float = Field(
        2.0, ge=1, description="Guard: p99 predict latency of a batch may be at most this × the champion's."
    )
    latency_slack_ms: float = Field(
        5.0,
        ge=0,
        description="Guard: latency differences below this many ms never fail the gate (a batch timed on a busy "
        "machine varies by more than that; deeper trees are legitimately slower); as the rollout's p99_slack_ms.",
    )
    latency_batch_rows: int = Field(256, ge=1, description="Rows of the batch whose predict latency is timed.")
    min_auc: float = Field(0.6, ge=0, le=1, description="Absolute: least val_auc of a first champion.")
    max_calibration_error: float = Field(0.1, ge=0, le=1, description="Absolute: largest ECE of a first champion.")
    min_accuracy: float = Field(
        0.0, ge=0, le=1, description="Multiclass, absolute: least accuracy of a first champion."
    )
    min_r2: float = Field(
        0.0, le=1, description="Regression, absolute: least R² of a first champion (0: no better than the mean)."
    )


class TrainConfig(StrictModel):
    """An XGBoost hyperparameter search with Ray Tune, and what to register from it."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Registered model name in MLflow.")
    experiment: str = Field(description="MLflow experiment of the search runs.")
    num_boost_round: int = Field(50, ge=1, le=10_000)
    report_every: int = Field(10, ge=1, description="Rounds between reports to Tune (ASHA rungs, checkpoints).")
    num_samples: int = Field(4, ge=1, description="Trials to sample (grid: repetitions of the whole grid).")
    max_concurrent_trials: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0, description="Also XGBoost's nthread (rounded up).")
    gpus_per_trial: float = Field(
        0,
        ge=0,
        description="GPUs of a trial (of each worker in data-parallel mode): XGBoost trains with device cuda and "
        "Ray places the trial on a node with that many free GPUs. 0 trains on CPUs.",
    )
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed XGBoost params.")
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    search_alg: Literal["random", "grid", "optuna"] = Field(
        "random", description="random sampling, the grid of every `choice`/`randint` value, or Optuna's TPE."
    )
    scheduler: Literal["asha", "pbt", "fifo"] = Field(
        "asha", description="ASHA stops weak trials early; PBT mutates continuous params of weak trials; fifo none."
    )
    asha_reduction_factor: int = Field(
        3, ge=2, description="ASHA keeps 1/this of the trials at each rung (2 keeps more, 4 stops more)."
    )
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial, each from its last checkpoint.")
    mode: Literal["auto", "per_trial", "data_parallel"] = Field(
        "auto",
        description="per_trial: one process per trial (the table fits a worker); data_parallel: Ray Train's "
        "XGBoostTrainer over num_workers; auto: data_parallel above max_rows_per_trial rows.",
    )
    num_workers: int = Field(2, ge=1, description="Workers of one data-parallel trial.")
    max_rows_per_trial: int = Field(2_000_000, ge=1, description="auto mode: largest table trained per trial.")
    dataset: str | None = Field(
        None,
        description="Folder of an existing dataset version to train on (default: ingest `data`, reusing the "
        "version when the inputs are unchanged).",
    )
    register_top: int = Field(1, ge=1, description="Register the best N trials as model versions.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Who gets the champion/challenger alias.")
    storage_path: str | None = Field(
        None,
        description="Where Tune keeps trial checkpoints: a local folder or a URI such as s3://bucket/tune "
        "(shared storage is needed on a multi-node cluster). Default: $MLPLATFORM_HOME/tune.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.gpus_per_trial and "device" in self.params:
            raise ValueError("params.device and gpus_per_trial both choose the device; keep gpus_per_trial")
        overlap = set(self.params) & set(self.search_space)
        if overlap:
            raise ValueError(f"{sorted(overlap)} appear in both params and search_space")
        if self.search_alg == "grid":
            continuous = sorted(n for n, p in self.search_space.items() if p.type not in ("choice", "randint"))
            if continuous:
                raise ValueError(f"grid search needs choice or randint dimensions; {continuous} are continuous")
        if self.scheduler == "pbt" and self.search_alg != "random":
            raise ValueError("pbt explores by mutating trials; use it with search_alg random")
        if self.report_every > self.num_boost_round:
            raise ValueError(f"report_every ({self.report_every}) exceeds num_boost_round ({self.num_boost_round})")
        return self
