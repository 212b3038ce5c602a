"""The promotion gate: a candidate gets an alias only if the held-out split says it deserves one.

The candidate and the current champion are evaluated on the same held-out rows of the dataset version,
with the scores of its task (`mlplatform.train.task`) and the p99 latency of predicting a batch. Against a
champion the candidate must improve the primary score by ``min_delta`` — binary: AUC up; multiclass: log
loss down; regression: RMSE down — and keep every guard within its tolerance (binary: log loss and
calibration error; every task: latency) to become ``challenger``; with no champion yet, the absolute
thresholds decide whether it becomes ``champion`` (binary: ``min_auc`` and ``max_calibration_error``;
multiclass: ``min_accuracy``; regression: ``min_r2``). `decide` is pure, so every rule is unit-tested;
`evaluate` measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlplatform.registry import CHALLENGER, CHAMPION
from mlplatform.train.config import GateConfig
from mlplatform.train.task import Task

__all__ = ["Evaluation", "Decision", "evaluate", "decide"]


@dataclass(frozen=True)
class Evaluation:
    """A model's numbers on the held-out split: its task's scores (`Task.scores`) and the batch latency."""

    scores: dict[str, float]
    p99_latency_ms: float
    rows: int
    task: str = "binary"

    def __getattr__(self, name: str) -> float:
        scores = self.__dict__.get("scores") or {}
        if name in scores:
            return scores[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: round(v, 6) for k, v in self.scores.items()}
        return {**out, "p99_latency_ms": round(self.p99_latency_ms, 6), "rows": self.rows, "task": self.task}


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


def evaluate(
    booster: Any, x: np.ndarray, y: np.ndarray, *, task: Task = Task(), batch_rows: int = 256, repeats: int = 50
) -> Evaluation:
    """Score `booster` on held-out rows and time ``inplace_predict`` of a `batch_rows` batch (one thread)."""
    scores = task.scores(y, np.asarray(booster.inplace_predict(x), dtype=float))
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
    return Evaluation(scores, float(np.percentile(times, 99)), len(y), task.kind)


def decide(
    candidate: Evaluation, champion: Evaluation | None, cfg: GateConfig, champion_version: str | None = None
) -> Decision:
    """Apply the gate's rules (see the module docstring)."""
    if candidate.task != "binary":
        return _decide_by_primary(candidate, champion, cfg, champion_version)
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
    latency_ok, latency_reason = _latency(candidate, champion, cfg)
    checks = {
        "auc": delta >= cfg.min_delta,
        "logloss": candidate.logloss - champion.logloss <= cfg.max_logloss_increase,
        "calibration_error": candidate.calibration_error - champion.calibration_error
        <= cfg.max_calibration_error_increase,
        "latency": latency_ok,
    }
    who = f"champion v{champion_version}" if champion_version else "the champion"
    reasons = [
        f"val_auc {candidate.auc:.4f} vs {champion.auc:.4f} of {who} (Δ {delta:+.4f}, "
        f"{'≥' if checks['auc'] else '<'} min_delta {cfg.min_delta:g})",
        f"log loss {candidate.logloss:.4f} vs {champion.logloss:.4f} "
        f"({'within' if checks['logloss'] else 'beyond'} +{cfg.max_logloss_increase:g})",
        f"calibration error {candidate.calibration_error:.4f} vs {champion.calibration_error:.4f} "
        f"({'within' if checks['calibration_error'] else 'beyond'} +{cfg.max_calibration_error_increase:g})",
        latency_reason,
    ]
    return Decision(
        CHALLENGER if all(checks.values()) else None, reasons, candidate, champion, champion_version, checks
    )


def _latency(candidate: Evaluation, champion: Evaluation, cfg: GateConfig) -> tuple[bool, str]:
    ratio = candidate.p99_latency_ms / champion.p99_latency_ms if champion.p99_latency_ms > 0 else 1.0
    ok = ratio <= cfg.max_latency_ratio or candidate.p99_latency_ms - champion.p99_latency_ms <= cfg.latency_slack_ms
    return ok, (
        f"p99 predict of a batch {candidate.p99_latency_ms:.2f} ms vs {champion.p99_latency_ms:.2f} ms "
        f"(×{ratio:.2f}, {'within' if ok else 'beyond'} ×{cfg.max_latency_ratio:g} or +{cfg.latency_slack_ms:g} ms)"
    )


def _decide_by_primary(
    candidate: Evaluation, champion: Evaluation | None, cfg: GateConfig, champion_version: str | None
) -> Decision:
    """Multiclass and regression: the primary score (lower is better) must improve; latency is the guard."""
    task = Task(candidate.task)
    name = task.metric.removeprefix("val_")
    if champion is None:
        floor, (score, limit) = (
            ("accuracy", (candidate.accuracy, cfg.min_accuracy))
            if task.kind == "multiclass"
            else ("r2", (candidate.r2, cfg.min_r2))
        )
        ok = score >= limit
        reason = f"no champion yet; {floor} {score:.4f} {'≥' if ok else '<'} min_{floor} {limit:g}"
        return Decision(CHAMPION if ok else None, [reason], candidate, None, None, {floor: ok})
    mine, theirs = candidate.scores[name], champion.scores[name]
    gain = theirs - mine  # lower is better
    latency_ok, latency_reason = _latency(candidate, champion, cfg)
    checks = {name: gain >= cfg.min_delta, "latency": latency_ok}
    who = f"champion v{champion_version}" if champion_version else "the champion"
    reasons = [
        f"val_{name} {mine:.4f} vs {theirs:.4f} of {who} (lower by {gain:+.4f}, "
        f"{'≥' if checks[name] else '<'} min_delta {cfg.min_delta:g})",
        latency_reason,
    ]
    return Decision(
        CHALLENGER if all(checks.values()) else None, reasons, candidate, champion, champion_version, checks
    )
