"""What a trial asks of Ray and of XGBoost, on CPUs and on GPUs (CI has no GPU: the real check is in
BENCHMARKS.md, run on a machine with one)."""

from __future__ import annotations

import pytest
from mlplatform.train.config import TrainConfig
from mlplatform.train.parallel import worker_scaling
from mlplatform.train.search import device_params, trial_resources
from pydantic import ValidationError


def config(**kw) -> TrainConfig:
    return TrainConfig(model_name="m", experiment="e", **kw)


def test_cpu_trials_ask_for_cpus_only_and_leave_the_device_alone():
    cfg = config(cpus_per_trial=0.5)
    assert trial_resources(cfg) == {"cpu": 0.5} and device_params(cfg) == {}
    scaling = worker_scaling(2, 1.0, 0)
    assert not scaling.use_gpu and scaling.resources_per_worker == {"CPU": 1.0}


def test_gpu_trials_are_placed_on_a_gpu_and_train_with_cuda():
    cfg = config(cpus_per_trial=1, gpus_per_trial=1)
    assert trial_resources(cfg) == {"cpu": 1, "gpu": 1}
    assert device_params(cfg) == {"device": "cuda"}
    scaling = worker_scaling(2, 1.0, 0.5)
    assert scaling.use_gpu and scaling.resources_per_worker == {"CPU": 1.0, "GPU": 0.5}


def test_the_device_is_chosen_once():
    with pytest.raises(ValidationError, match="params.device and gpus_per_trial"):
        config(gpus_per_trial=1, params={"device": "cpu"})


def test_a_reused_trial_process_trains_on_the_matrices_it_built(monkeypatch):
    """Tune reuses a per-trial process for the next trial; the table's DMatrices are built once per process."""
    import numpy as np
    import ray
    from mlplatform.train.search import TableRef, TrainingData, _matrices

    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    one, two = (TrainingData(["a", "b"], x, x[:, 0] % 2, x[:4], x[:4, 0] % 2) for _ in range(2))
    refs = [TableRef(ray.ObjectRef(bytes([i]) * 28)) for i in (1, 2)]  # the object store, without a cluster
    monkeypatch.setattr(ray, "get", lambda ref: {refs[0].ref.hex(): one, refs[1].ref.hex(): two}[ref.hex()])
    first = _matrices(refs[0])
    assert first[2] and _matrices(refs[0]) == (first[0], first[1], False)
    assert _matrices(refs[1])[0] is not first[0] and _matrices(refs[1])[0].num_row() == 10
    assert _matrices(one)[0] is not _matrices(one)[0]  # a table passed in directly is not cached


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_the_train_metrics_at_a_report_are_xgboosts_own(kind):
    """A trial scores the training set at its reports only; the values are those of an eval set every round."""
    import numpy as np
    import xgboost as xgb
    from mlplatform.train.search import train_metrics
    from mlplatform.train.task import Task

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5)).astype(np.float32)
    y = {"binary": x[:, 0] > 0, "multiclass": (x[:, 0] > 0) + (x[:, 1] > 0), "regression": 3 * x[:, 0]}[kind]
    task = Task(kind, ("a", "b", "c") if kind == "multiclass" else ())
    dtrain, log = xgb.DMatrix(x, label=y.astype(np.float32)), {}
    params = {**task.params({}), "eval_metric": task.eval_metric}
    booster = xgb.train(params, dtrain, 5, evals=[(dtrain, "train")], evals_result=log, verbose_eval=False)
    got = train_metrics(booster, dtrain)
    assert got.keys() == log["train"].keys()
    assert all(got[m][0] == pytest.approx(log["train"][m][-1], abs=1e-9) for m in got)
