"""What is learned: a binary class, one of several classes, or a number — and everything that follows from it.

The dataset version says which (its manifest's ``task`` and ``classes``, decided at ingest from the data
spec); this module turns that into XGBoost's objective and evaluation metrics, the metric the search
optimises and its direction, and the held-out scores the gate compares:

============  =====================  ==============  =========================================
task          objective              search metric   held-out scores
============  =====================  ==============  =========================================
binary        binary:logistic        val_auc (max)   auc, logloss, calibration_error
multiclass    multi:softprob         val_mlogloss    mlogloss, accuracy, macro_f1
regression    reg:squarederror       val_rmse (min)  rmse, mae, r2
============  =====================  ==============  =========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.errors import ConfigError

__all__ = ["Task", "TASKS", "auc", "calibration_error"]

TASKS = ("binary", "multiclass", "regression")

_OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
#: Objectives a user may choose instead of the default, per task (e.g. a Poisson regression).
_COMPATIBLE = {"binary": "binary:", "multiclass": "multi:", "regression": ("reg:", "count:", "survival:")}
_EVAL = {"binary": ["logloss", "auc"], "multiclass": ["mlogloss", "merror"], "regression": ["rmse", "mae"]}
_PRIMARY = {"binary": ("auc", "max"), "multiclass": ("mlogloss", "min"), "regression": ("rmse", "min")}


@dataclass(frozen=True)
class Task:
    """The task of a dataset version; `classes` are a multiclass label's raw values in code order."""

    kind: str = "binary"
    classes: tuple[str, ...] = ()

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> Task:
        """The task a dataset version was ingested for (versions from before tasks existed are binary)."""
        return cls(manifest.get("task") or "binary", tuple(str(c) for c in manifest.get("classes") or ()))

    @property
    def metric(self) -> str:
        """The metric every trial reports and the search optimises (`mode` says which way)."""
        return f"val_{_PRIMARY[self.kind][0]}"

    @property
    def mode(self) -> str:
        return _PRIMARY[self.kind][1]

    def better(self, a: float, b: float) -> bool:
        """Whether metric value `a` beats `b`."""
        return a > b if self.mode == "max" else a < b

    def sort_key(self, value: float) -> float:
        """Ascending sort puts the best first."""
        return -value if self.mode == "max" else value

    def params(self, user: dict[str, Any]) -> dict[str, Any]:
        """XGBoost params the task needs, beside the user's (whose objective must suit the task).

        Raises:
            ConfigError: the user's objective is another task's.
        """
        objective = user.get("objective")
        if objective is not None and not str(objective).startswith(_COMPATIBLE[self.kind]):
            raise ConfigError(
                f"train.params.objective {objective!r} does not fit the label: this dataset is {self.kind}"
                f"{f' ({len(self.classes)} classes)' if self.classes else ''}; drop it to get "
                f"{_OBJECTIVES[self.kind]}"
            )
        out: dict[str, Any] = {"objective": objective or _OBJECTIVES[self.kind]}
        if self.kind == "multiclass":
            out["num_class"] = len(self.classes)
        return out

    @property
    def eval_metric(self) -> list[str]:
        return list(_EVAL[self.kind])

    def report(self, evals_log: dict[str, dict[str, list[float]]]) -> dict[str, float]:
        """A trial's report from XGBoost's evaluation log: every val metric and the train value of the primary."""
        name = _PRIMARY[self.kind][0]
        out = {f"val_{m}": float(evals_log["val"][m][-1]) for m in _EVAL[self.kind]}
        out[f"train_{name}"] = float(evals_log["train"][name][-1])
        return out

    def scores(self, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        """Held-out scores of predictions `p` (probabilities, class probabilities or values) against `y`."""
        y = np.asarray(y, dtype=float)
        p = np.asarray(p, dtype=float)
        if self.kind == "binary":
            q = np.clip(p, 1e-7, 1 - 1e-7)
            return {
                "auc": auc(y, q),
                "logloss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
                "calibration_error": calibration_error(y, q),
            }
        if self.kind == "multiclass":
            k = p.shape[1]
            truth = y.astype(int)
            q = np.clip(p[np.arange(len(truth)), truth], 1e-15, 1.0)
            guess = p.argmax(axis=1)
            f1 = []
            for c in range(k):
                tp = float(np.sum((guess == c) & (truth == c)))
                fp, fn = float(np.sum((guess == c) & (truth != c))), float(np.sum((guess != c) & (truth == c)))
                f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
            return {
                "mlogloss": float(-np.mean(np.log(q))),
                "accuracy": float(np.mean(guess == truth)),
                "macro_f1": float(np.mean(f1)),
            }
        error = p - y
        total = float(np.sum((y - y.mean()) ** 2))
        return {
            "rmse": float(np.sqrt(np.mean(error**2))),
            "mae": float(np.mean(np.abs(error))),
            "r2": 1.0 - float(np.sum(error**2)) / total if total else float("nan"),
        }


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
