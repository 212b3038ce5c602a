"""The promotion gate: a candidate gets an alias only if the held-out split says it deserves one.

The candidate and the current champion are evaluated on the same held-out rows of the dataset version:
AUC (primary), log loss, expected calibration error and the p99 latency of predicting a batch. Against a
champion the candidate must improve AUC by ``min_delta`` and keep every guard within its tolerance to
become ``challenger``; with no champion yet, the absolute thresholds decide whether it becomes
``champion``. `decide` is pure, so every rule is unit-tested; `evaluate` measures.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlplatform.registry import CHALLENGER, CHAMPION
from mlplatform.train.config import GateConfig

__all__ = ["Evaluation", "Decision", "evaluate", "decide"]


@dataclass(frozen=True)
class Evaluation:
    """A model's numbers on the held-out split."""

    auc: float
    logloss: float
    calibration_error: float
    p99_latency_ms: float
    rows: int

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Decision:
    """What the gate decided and why; `alias` is None when the candidate was refused."""

    alias: str | None
    reasons: list[str]
    candidate: Evaluation
    champion: Evaluation | None = None
    champion_version: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.alias is not None

    def summary(self) -> str:
        verdict = f"→ {self.alias}" if self.alias else "→ refused"
        return f"{verdict}: " + "; ".join(self.reasons)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties averaged)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += abs(p[mask].mean() - y[mask].mean()) * mask.sum()
    return float(total / len(y))


def evaluate(booster: Any, x: np.ndarray, y: np.ndarray, *, batch_rows: int = 256, repeats: int = 50) -> Evaluation:
    """Score `booster` on held-out rows and time ``inplace_predict`` of a `batch_rows` batch (one thread)."""
    p = np.clip(np.asarray(booster.inplace_predict(x), dtype=float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=float)
    batch = x[: max(1, min(batch_rows, len(x)))]
    if hasattr(booster, "set_param"):
        booster.set_param({"nthread": 1})  # as served: one thread per prediction
    for _ in range(3):
        booster.inplace_predict(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        booster.inplace_predict(batch)
        times.append(1000 * (time.perf_counter() - start))
    return Evaluation(
        auc=auc(y, p),
        logloss=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        calibration_error=calibration_error(y, p),
        p99_latency_ms=float(np.percentile(times, 99)),
        rows=len(y),
    )


def decide(
    candidate: Evaluation, champion: Evaluation | None, cfg: GateConfig, champion_version: str | None = None
) -> Decision:
    """Apply the gate's rules (see the module docstring)."""
    if champion is None:
        checks = {
            "auc": candidate.auc >= cfg.min_auc,
            "calibration_error": candidate.calibration_error <= cfg.max_calibration_error,
        }
        reasons = [
            f"no champion yet; val_auc {candidate.auc:.4f} {'≥' if checks['auc'] else '<'} {cfg.min_auc:g}",
            f"calibration error {candidate.calibration_error:.4f} "
            f"{'≤' if checks['calibration_error'] else '>'} {cfg.max_calibration_error:g}",
        ]
        return Decision(CHAMPION if all(checks.values()) else None, reasons, candidate, None, None, checks)

    delta = candidate.auc - champion.auc
    ratio = candidate.p99_latency_ms / champion.p99_latency_ms if champion.p99_latency_ms > 0 else 1.0
    checks = {
        "auc": delta >= cfg.min_delta,
        "logloss": candidate.logloss - champion.logloss <= cfg.max_logloss_increase,
        "calibration_error": candidate.calibration_error - champion.calibration_error
        <= cfg.max_calibration_error_increase,
        "latency": ratio <= cfg.max_latency_ratio
        or candidate.p99_latency_ms - champion.p99_latency_ms <= cfg.latency_slack_ms,
    }
    who = f"champion v{champion_version}" if champion_version else "the champion"
    reasons = [
        f"val_auc {candidate.auc:.4f} vs {champion.auc:.4f} of {who} (Δ {delta:+.4f}, "
        f"{'≥' if checks['auc'] else '<'} min_delta {cfg.min_delta:g})",
        f"log loss {candidate.logloss:.4f} vs {champion.logloss:.4f} "
        f"({'within' if checks['logloss'] else 'beyond'} +{cfg.max_logloss_increase:g})",
        f"calibration error {candidate.calibration_error:.4f} vs {champion.calibration_error:.4f} "
        f"({'within' if checks['calibration_error'] else 'beyond'} +{cfg.max_calibration_error_increase:g})",
        f"p99 predict of a batch {candidate.p99_latency_ms:.2f} ms vs {champion.p99_latency_ms:.2f} ms "
        f"(×{ratio:.2f}, {'within' if checks['latency'] else 'beyond'} ×{cfg.max_latency_ratio:g} "
        f"or +{cfg.latency_slack_ms:g} ms)",
    ]
    return Decision(
        CHALLENGER if all(checks.values()) else None, reasons, candidate, champion, champion_version, checks
    )
