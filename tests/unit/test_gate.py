"""The promotion gate's rules and measurements (no Ray, no MLflow)."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from mlplatform.registry import CHALLENGER, CHAMPION
from mlplatform.train.config import GateConfig, TrainConfig
from mlplatform.train.gate import Evaluation, decide, evaluate
from mlplatform.train.task import Task, auc, calibration_error
from pydantic import ValidationError

GATE = GateConfig(
    min_delta=0.001,
    max_logloss_increase=0.01,
    max_calibration_error_increase=0.02,
    max_latency_ratio=2.0,
    latency_slack_ms=0.5,
    min_auc=0.6,
    max_calibration_error=0.1,
)
CHAMP = Evaluation({"auc": 0.80, "logloss": 0.50, "calibration_error": 0.03}, p99_latency_ms=1.0, rows=1000)


def ev(p99_latency_ms: float = 1.0, task: str = "binary", **scores):
    base = CHAMP.scores if task == "binary" else {}
    return Evaluation({**base, **scores}, p99_latency_ms=p99_latency_ms, rows=1000, task=task)


def test_tiny_latency_differences_never_fail_the_gate():
    fast_champion = ev(p99_latency_ms=0.1)
    d = decide(ev(auc=0.85, p99_latency_ms=0.4), fast_champion, GATE, "1")  # ×4, but 0.3 ms more
    assert d.checks["latency"] and "or +0.5 ms" in d.reasons[-1]
    assert not decide(ev(auc=0.85, p99_latency_ms=2.0), fast_champion, GATE, "1").checks["latency"]


def test_first_model_meeting_absolute_thresholds_becomes_champion():
    d = decide(ev(auc=0.75), None, GATE)
    assert d.alias == CHAMPION and d.passed and "no champion yet" in d.reasons[0]


@pytest.mark.parametrize("kw,failed", [({"auc": 0.55}, "auc"), ({"calibration_error": 0.2}, "calibration_error")])
def test_first_model_below_absolute_thresholds_is_refused(kw, failed):
    d = decide(ev(**kw), None, GATE)
    assert d.alias is None and d.checks[failed] is False


def test_better_candidate_becomes_challenger():
    d = decide(ev(auc=0.81), CHAMP, GATE, "3")
    assert d.alias == CHALLENGER and all(d.checks.values())
    assert "vs 0.8000 of champion v3" in d.reasons[0]


@pytest.mark.parametrize(
    "kw,failed",
    [
        ({"auc": 0.8005}, "auc"),  # improves, but by less than min_delta
        ({"auc": 0.79}, "auc"),
        ({"auc": 0.85, "logloss": 0.52}, "logloss"),
        ({"auc": 0.85, "calibration_error": 0.06}, "calibration_error"),
        ({"auc": 0.85, "p99_latency_ms": 2.5}, "latency"),
    ],
)
def test_guards_refuse(kw, failed):
    d = decide(ev(**kw), CHAMP, GATE, "3")
    assert d.alias is None and d.checks[failed] is False
    assert [k for k, ok in d.checks.items() if not ok] == [failed]
    assert d.summary().startswith("→ refused")


def test_measurements_on_a_real_booster():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=2000) > 0).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, label=y), 20)
    e = evaluate(booster, x, y, batch_rows=64, repeats=5)
    assert 0.9 < e.auc <= 1 and 0 < e.logloss < 0.5 and 0 <= e.calibration_error < 0.1 and e.p99_latency_ms > 0
    assert e.rows == 2000
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert calibration_error(np.array([0, 1]), np.array([0.05, 0.95])) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "task,first,better,worse",
    [
        ("multiclass", {"accuracy": 0.7, "mlogloss": 0.6}, {"mlogloss": 0.55}, {"mlogloss": 0.5995}),
        ("regression", {"r2": 0.4, "rmse": 2.0}, {"rmse": 1.9}, {"rmse": 2.1}),
    ],
)
def test_other_tasks_gate_on_their_primary_score_lower_is_better(task, first, better, worse):
    gate = GATE.model_copy(update={"min_accuracy": 0.5, "min_r2": 0.1})
    assert decide(ev(task=task, **first), None, gate).alias == CHAMPION
    floor = {"accuracy": 0.4} if task == "multiclass" else {"r2": -0.1}
    assert decide(ev(task=task, **{**first, **floor}), None, gate).alias is None
    champ = ev(task=task, **first)
    assert decide(ev(task=task, **{**first, **better}), champ, gate, "2").alias == CHALLENGER
    refused = decide(ev(task=task, **{**first, **worse}), champ, gate, "2")
    assert refused.alias is None and "lower by" in refused.reasons[0]


def test_scores_of_each_task():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    s = Task("multiclass", ("a", "b", "c")).scores(y, p)
    assert s["accuracy"] == 0.75 and s["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert s["mlogloss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.8, 0.2])))
    r = Task("regression").scores(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert r["mae"] == pytest.approx(1 / 3) and r["rmse"] == pytest.approx(np.sqrt(1 / 3)) and r["r2"] == 0.5


def test_a_task_refuses_an_objective_of_another():
    from mlplatform.errors import ConfigError

    assert Task("multiclass", ("a", "b", "c")).params({}) == {"objective": "multi:softprob", "num_class": 3}
    assert Task("regression").params({"objective": "count:poisson"})["objective"] == "count:poisson"
    with pytest.raises(ConfigError, match="does not fit the label: this dataset is regression"):
        Task("regression").params({"objective": "binary:logistic"})


BASE = {"model_name": "m", "experiment": "e"}


@pytest.mark.parametrize(
    "extra,needle",
    [
        ({"search_alg": "grid", "search_space": {"eta": {"type": "uniform", "low": 0.1, "high": 0.3}}}, "grid search"),
        ({"scheduler": "pbt", "search_alg": "optuna"}, "pbt explores"),
        ({"report_every": 100, "num_boost_round": 50}, "exceeds num_boost_round"),
        ({"search_alg": "tpe"}, "search_alg"),
        ({"gate": {"min_auc": 2}}, "gate.min_auc"),
        ({"search_space": {"eta": {"type": "uniform", "low": 0.5, "high": 0.1}}}, "low (0.5) must be below high"),
        ({"search_space": {"eta": {"type": "gaussian"}}}, "type"),
    ],
)
def test_bad_train_configs(extra, needle):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({**BASE, **extra})
    text = str(info.value)
    assert needle.split(".")[-1] in text


def test_mode_follows_table_size_unless_forced():
    from mlplatform.train.search import resolve_mode

    auto = TrainConfig.model_validate({**BASE, "max_rows_per_trial": 1000})
    assert resolve_mode(auto, 1000) == "per_trial" and resolve_mode(auto, 1001) == "data_parallel"
    forced = TrainConfig.model_validate({**BASE, "mode": "per_trial", "max_rows_per_trial": 10})
    assert resolve_mode(forced, 10**9) == "per_trial"
