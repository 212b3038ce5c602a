"""Shared fixtures: every test runs in an isolated environment and may not leak an active MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "jobs" / "configs" / "demo.yaml"

#: Settings a developer's shell may hold that must not leak into a test (each test sets what it needs).
ISOLATED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "RAY_ADDRESS",
    "MLPLATFORM_API_KEYS",
    "MLPLATFORM_ADMIN_KEYS",
    "MLPLATFORM_GIT_COMMIT",
    "MLPLATFORM_SUBMITTED_BY",
)


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path_factory):
    """A fresh MLPLATFORM_HOME, no inherited MLflow/Ray addresses; afterwards, no MLflow run may be left active."""
    for name in ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path_factory.mktemp("home")))
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    leaked = mlflow.active_run()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # in-process code (e.g. load_booster) may have pointed MLflow elsewhere
    if leaked is not None:
        pytest.fail(f"the test left MLflow run {leaked.info.run_id} active; end it (use `with mlflow.start_run()`)")
