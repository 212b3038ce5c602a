"""Monitoring configs: drift thresholds, and the continuous-training loop (`mlplatform monitor --config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlplatform.config import StrictModel

__all__ = ["DriftConfig"]

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
        None, description="Features to compare (default: every column both tables share, but ids, labels, log fields)."
    )
    performance_drop: float = Field(
        0.05, gt=0, le=1, description="Labelled AUC this far below the version's validation AUC is performance drift."
    )
    min_rows: int = Field(100, ge=1, description="Fewer current rows than this: no verdict (too little to tell).")

    @model_validator(mode="after")
    def _weights_positive(self) -> DriftConfig:
        bad = {f: w for f, w in self.weights.items() if w < 0}
        if bad:
            raise ValueError(f"weights must be ≥ 0, got {bad}")
        return self
