"""The online champion/challenger test: is the canary's live quality worse than the stable version's?

Labels arrive through feedback while a rollout runs, and the rollout looks at them after every step — so
the test must stay valid however often it is looked at. A fixed-sample t-test checked at every step would
reject a good challenger far more often than its α says. We use the mixture sequential probability ratio
test (mSPRT) of Johari, Koomen, Pekelis & Walsh, "Always valid inference" (2017, the test behind
Optimizely's stats engine), on the difference of the mean per-request log loss (challenger − champion):

    Λ(θ₀) = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 V (V + τ²))),  V = s²_c / n_c + s²_s / n_s

with a normal mixing prior of scale τ over the effect. Rejecting θ₀ when Λ(θ₀) ≥ 1/α controls the type-I
error at α uniformly over time, so the rollout may look after every step; inverting it gives an
always-valid confidence sequence θ̂ ± r. It is written out here (a dozen lines) rather than taken from a
library: the maintained packages (`savvi`, `confseq`) bring heavier dependencies for this one formula, and
the property that matters — α held under continuous peeking — is tested (tests/unit/test_online.py).
Requests pinned to a version by the client are left out: they did not take part in the split.

The loss follows the model's task: log loss (or Brier score) of the probability of the true class for a binary
or multiclass model; squared (or absolute) error for a regression, divided by the variance of the window's
labels so that the test's τ and margin are fractions of that variance whatever the label's unit — a scale
common to both versions, which leaves the comparison as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from mlplatform.errors import ConfigError, DataContractError
from mlplatform.monitor.window import flatten_log, log_window, read_feedback
from mlplatform.release.config import OnlineTestConfig

__all__ = ["Evidence", "LOSSES", "loss_for", "msprt", "per_request_loss", "log_judge"]


@dataclass(frozen=True)
class Evidence:
    """What the online test saw: per-version labelled requests and mean loss, the always-valid confidence
    sequence of (canary − stable) loss, and the decision: worse | better | inconclusive | too few labels."""

    decision: str
    message: str
    n_canary: int = 0
    n_stable: int = 0
    loss_canary: float | None = None
    loss_stable: float | None = None
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


#: The losses that suit each task, the first being the default.
LOSSES = {
    "binary": ("logloss", "brier"),
    "multiclass": ("logloss", "brier"),
    "regression": ("squared_error", "absolute_error"),
}


def loss_for(task: str, cfg: OnlineTestConfig) -> str:
    """The per-request loss the online test compares for a model of `task`.

    Raises:
        ConfigError: the configured loss does not suit the task (a log loss of a regression).
    """
    if cfg.metric is None:
        return LOSSES[task][0]
    if cfg.metric not in LOSSES[task]:
        raise ConfigError(
            f"rollout.online_test.metric {cfg.metric!r} does not suit a {task} model: "
            f"choose one of {list(LOSSES[task])}"
        )
    return cfg.metric


def per_request_loss(
    y: np.ndarray, p: np.ndarray, metric: str = "logloss", probabilities: np.ndarray | None = None
) -> np.ndarray:
    """Each labelled request's loss. A classifier: log loss of the true class's probability (clipped to
    [1e-6, 1 − 1e-6]) or Brier score — of `p` (the positive class) for a binary model, of `probabilities`
    (one column per class, `y` the class index) for a multiclass one. A regression: squared or absolute error.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if metric == "squared_error":
        return (p - y) ** 2
    if metric == "absolute_error":
        return np.abs(p - y)
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=float)
        truth = y.astype(int)
        if metric == "brier":
            onehot = np.zeros_like(probabilities)
            onehot[np.arange(len(truth)), truth] = 1.0
            return np.sum((probabilities - onehot) ** 2, axis=1)
        return -np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-6, 1 - 1e-6))
    if metric == "brier":
        return (p - y) ** 2
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def msprt(canary: np.ndarray, stable: np.ndarray, cfg: OnlineTestConfig, metric: str | None = None) -> Evidence:
    """The mSPRT of mean loss (canary − stable) = 0, with its confidence sequence and decision."""
    metric = metric or cfg.metric or "logloss"
    nc, ns = len(canary), len(stable)
    if nc < cfg.min_labels or ns < cfg.min_labels:
        return Evidence(
            "too few labels",
            f"{nc} labelled canary and {ns} stable requests; the test needs {cfg.min_labels} of each",
            nc,
            ns,
        )
    mc, ms = float(np.mean(canary)), float(np.mean(stable))
    v = float(np.var(canary, ddof=1) / nc + np.var(stable, ddof=1) / ns)
    v = max(v, 1e-12)  # identical constant losses: no variance, and nothing to tell apart
    tau2 = cfg.tau**2
    theta = mc - ms
    radius = math.sqrt(2 * v * (v + tau2) / tau2 * (math.log(1 / cfg.alpha) + 0.5 * math.log((v + tau2) / v)))
    log_lr = 0.5 * math.log(v / (v + tau2)) + tau2 * theta**2 / (2 * v * (v + tau2))
    p_value = min(1.0, math.exp(-log_lr)) if log_lr > 0 else 1.0
    low, high = theta - radius, theta + radius
    if low > cfg.margin:
        decision = "worse"
        why = f"the canary's {metric} is worse by {low:.4f} to {high:.4f}"
    elif high < 0:
        decision = "better"
        why = f"the canary's {metric} is better by {-high:.4f} to {-low:.4f}"
    else:
        decision = "inconclusive"
        why = f"(canary − stable) {metric} in [{low:+.4f}, {high:+.4f}]"
    return Evidence(
        decision,
        f"{why} (always-valid {1 - cfg.alpha:.0%} interval; {nc} canary vs {ns} stable labelled requests, "
        f"mean {mc:.4f} vs {ms:.4f}, p = {p_value:.3g})",
        nc,
        ns,
        mc,
        ms,
        theta,
        low,
        high,
        p_value,
    )


def labelled_requests(app: str, since: datetime, *, root: str | None = None) -> pa.Table:
    """The labelled, non-pinned requests of `app` logged since `since`: version, prediction, label (and
    probabilities, a multiclass model's)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    now = datetime.now(timezone.utc)
    try:
        window = log_window(app, root=root, since=now - since + timedelta(minutes=1))
    except DataContractError:
        return pa.table({"version": pa.array([], pa.string()), "prediction": [], "label": []})
    labels = read_feedback(window)
    parts = []
    for path in window.files:
        try:
            table = pq.read_table(
                path,
                filesystem=window.filesystem,
                columns=["request_id", "row", "ts", "route", "prediction", "features"]
                + (["probabilities"] if "probabilities" in window.columns else []),
            )
        except (OSError, pa.ArrowException):  # damaged past its footer: the drift report lists such files
            continue
        table = table.append_column("path", pa.array([path] * table.num_rows, pa.string()))
        parts.append(flatten_log(table, labels))
    if not parts:
        return pa.table({"version": pa.array([], pa.string()), "prediction": [], "label": []})
    rows = pa.concat_tables(parts, promote_options="default")
    keep = pc.and_(
        pc.and_(pc.is_valid(rows["label"]), pc.not_equal(rows["route"], "pinned")),
        pc.greater_equal(rows["ts"], pa.scalar(since, pa.timestamp("us", tz="UTC"))),
    )
    return rows.filter(keep).select(
        [c for c in ("version", "prediction", "probabilities", "label") if c in rows.column_names]
    )


def log_judge(app: str, cfg: OnlineTestConfig, *, root: str | None = None, task: str = "binary"):
    """An `OnlineJudge` for `mlplatform.release.rollout`: reads the labelled log of `app` since the rollout began
    and compares the versions' losses for a model of `task`.

    Raises:
        ConfigError: the configured loss does not suit the task (before any traffic moves).
    """
    metric = loss_for(task, cfg)

    def judge(canary: str, stable: str, since: float) -> dict[str, Any]:
        rows = labelled_requests(app, datetime.fromtimestamp(since, timezone.utc), root=root)
        version = np.asarray(rows["version"].to_pylist(), dtype=object)
        y = rows["label"].to_numpy(zero_copy_only=False)
        p = rows["prediction"].to_numpy(zero_copy_only=False)
        probabilities = None
        if task == "multiclass":
            if "probabilities" not in rows.column_names:
                return msprt(np.array([]), np.array([]), cfg, metric).as_dict()  # too few labels to decide
            probabilities = np.asarray(rows["probabilities"].to_pylist(), dtype=float).reshape(len(y), -1)
        loss = per_request_loss(y, p, metric, probabilities)
        if task == "regression" and len(y) > 1 and np.var(y) > 0:
            loss = loss / (np.var(y) if metric == "squared_error" else np.std(y))
        return msprt(loss[version == canary], loss[version == stable], cfg, metric).as_dict()

    return judge
