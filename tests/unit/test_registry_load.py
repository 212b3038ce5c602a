"""A registered version is loaded from XGBoost's native file and nothing else: a version whose artifact ships a
`code/` folder and names its own `model_class` (what `mlflow.xgboost.load_model` would import and run) serves
without running either. On a real MLflow store (SQLite, local artifacts)."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlplatform.errors import RegistryError
from mlplatform.registry import load_booster
from mlplatform.xgb import xgboost

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")

class Boom:
    def __init__(self):
        pathlib.Path({marker!r}).write_text("instantiated")
"""


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # local artifacts land under ./mlruns here
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield uri
    mlflow.set_tracking_uri(before[0])  # load_booster points MLflow's module state at the store it reads
    mlflow.set_registry_uri(before[1])


def register(uri: str, tmp_path, *, flavor: dict, files: dict[str, bytes]) -> str:
    """Log a model folder with this MLmodel flavor and these files, register it, return its models:/ URI.

    Through a client on `uri` alone: MLflow's fluent API would reuse an experiment id another test set."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"xgboost": flavor}}))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("tampered"))
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tampered")
    version = client.create_model_version("tampered", f"runs:/{run.info.run_id}/model", run.info.run_id).version
    return f"models:/tampered/{version}"


def booster_bytes() -> tuple[bytes, np.ndarray, np.ndarray]:
    xgb = xgboost()
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), num_boost_round=3)
    return bytes(booster.save_raw("ubj")), x[:5], booster.inplace_predict(x[:5])


def test_a_version_with_a_malicious_code_folder_and_model_class_serves_without_running_either(store, tmp_path):
    raw, rows, expected = booster_bytes()
    marker = tmp_path / "pwned"
    evil = EVIL.format(marker=str(marker)).encode()
    # `code/` first on sys.path would shadow any module imported later; model_class would be imported and called.
    files = {"model.ubj": raw, "code/mlplatform_evil.py": evil, "code/json.py": evil, "code/yaml.py": evil}
    flavor = {"data": "model.ubj", "code": "code", "model_class": "mlplatform_evil.Boom", "model_format": "ubj"}
    uri = register(store, tmp_path, flavor=flavor, files=files)
    path_before = list(sys.path)

    booster = load_booster(uri, store)

    np.testing.assert_array_equal(booster.inplace_predict(rows), expected)
    assert not marker.exists() and "mlplatform_evil" not in sys.modules
    assert sys.path == path_before


@pytest.mark.parametrize(
    ("data", "message"),
    [("../../escape.ubj", "expected a file beside MLmodel"), ("model.pkl", "XGBoost's own formats")],
)
def test_a_model_file_outside_the_artifact_or_not_native_is_refused(store, tmp_path, data, message):
    uri = register(store, tmp_path, flavor={"data": data}, files={"model.pkl": b"\x80\x04pickle"})
    with pytest.raises(RegistryError, match=message):
        load_booster(uri, store)


def test_a_model_that_is_not_xgboost_is_refused(store, tmp_path):
    uri = register(store, tmp_path, flavor={}, files={})
    with pytest.raises(RegistryError, match="not an XGBoost model"):
        load_booster(uri, store)
