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
