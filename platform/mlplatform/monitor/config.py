"""Monitoring configs: drift thresholds, and the continuous-training loop (`mlplatform monitor --config`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlplatform.config import StrictModel
from mlplatform.errors import ConfigError
from mlplatform.release.config import RolloutConfig

__all__ = ["DriftConfig", "TriggerConfig", "MonitorConfig", "parse_duration"]

NumericTest = Literal["ks", "psi", "js"]
CategoricalTest = Literal["chi2", "psi", "js"]


class DriftConfig(StrictModel):
    """Which statistic decides that a feature drifted, its threshold, and when the whole table drifts.

    p-value tests (ks, chi2) flag a feature when the p-value is *below* their threshold; distances (psi, js)
    when the value is *above* it. On large windows every p-value is tiny for a shift nobody cares about, so the
    defaults are distances: PSI > 0.2 is the usual "significant shift" (0.1–0.2 moderate).
    """

    numeric_test: NumericTest = Field("psi", description="Statistic that decides numeric features: ks | psi | js.")
    categorical_test: CategoricalTest = Field(
        "psi", description="Statistic that decides categorical features: chi2 | psi | js."
    )
    ks_pvalue: float = Field(0.05, gt=0, lt=1, description="KS: a feature drifts when its p-value is below this.")
    chi2_pvalue: float = Field(0.05, gt=0, lt=1, description="Chi-square: drifts when its p-value is below this.")
    psi: float = Field(0.2, gt=0, description="PSI: a feature drifts when its PSI is above this.")
    js: float = Field(0.1, gt=0, le=1, description="Jensen–Shannon distance (base 2): drifts above this.")
    drift_share: float = Field(
        0.5, gt=0, le=1, description="The table drifts when this (weighted) share of its features drifted."
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="Feature → weight in the drifted share (default 1 each)."
    )
    categorical: list[str] = Field(
        default_factory=list,
        description="Numeric columns to treat as categorical (codes); string and boolean columns always are.",
    )
    features: list[str] | None = Field(
        None,
        description="Features to compare (default: a dataset version's features, else every column of the tables "
        "but the inference log's own fields; list them to leave out ids and labels of plain Parquet).",
    )
    performance_drop: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Performance drift: labelled AUC (binary) or accuracy (multiclass) this far below the version's "
        "validation value, or labelled RMSE (regression) this fraction above it.",
    )
    min_rows: int = Field(100, ge=1, description="Fewer current rows than this: no verdict (too little to tell).")

    @model_validator(mode="after")
    def _weights_positive(self) -> DriftConfig:
        bad = {f: w for f, w in self.weights.items() if w < 0}
        if bad:
            raise ValueError(f"weights must be ≥ 0, got {bad}")
        return self


class TriggerConfig(StrictModel):
    """What makes the loop retrain."""

    drift: bool = Field(True, description="Retrain when the log window drifted from the champion's training data.")
    performance: bool = Field(
        True,
        description="Retrain on performance drift (labelled quality worse than validation: drift.performance_drop).",
    )
    schedule: str | None = Field(
        None, description="Retrain when the champion is older than this (e.g. 7d), drift or not; None: never."
    )

    @field_validator("schedule")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        return value if value is None else _duration_text(value)


class MonitorConfig(StrictModel):
    """The continuous-training loop of one application: watch → retrain → gate → canary → promote or roll back."""

    app: str = Field(description="The Serve application watched (its inference log, its champion).")
    window: str = Field("1h", description="How far back the log window reaches (e.g. 30m, 24h).")
    log_path: str | None = Field(
        None, description="The inference log's root (default: the serve config's, ${MLPLATFORM_HOME}/inference_log)."
    )
    out_dir: str | None = Field(
        None, description="Where each pass writes drift.json and report.html (default ${MLPLATFORM_HOME}/monitor)."
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    triggers: TriggerConfig = Field(default_factory=TriggerConfig)
    rollout: RolloutConfig = Field(
        description="How the retrained challenger is rolled out (app and canary are filled in by the loop)."
    )

    @model_validator(mode="before")
    @classmethod
    def _rollout_of_this_app(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("rollout", {}), dict):
            rollout = dict(data.get("rollout") or {})
            rollout.setdefault("app", data.get("app"))
            rollout.setdefault("canary", "challenger")
            data = {**data, "rollout": rollout}
        return data

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _duration_text(value)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h`` or ``7d`` as a duration."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not m:
        raise ConfigError(f"a duration is a number and a unit (s, m, h, d), like 30m or 24h; got {text!r}")
    return timedelta(seconds=float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def _duration_text(value: str) -> str:
    try:
        parse_duration(value)
    except ConfigError as exc:  # pydantic reports ValueErrors with the field's name
        raise ValueError(str(exc)) from None
    return value
