"""Shared fixtures: every test runs in an isolated environment and may not leak an active MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "jobs" / "configs" / "demo.yaml"
#: What the endpoint may answer a request its OpenAPI document calls invalid (the fuzzers' expectation):
#: schemathesis's list, and 413 for a batch or body over the limit.
FUZZ_REJECTED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

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


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory):
    """No MLflow/Ray address or key inherited from a developer's shell, and a state folder of the session's own
    (a module or a test may point MLPLATFORM_HOME elsewhere for itself)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ISOLATED_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("MLPLATFORM_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(autouse=True)
def no_leaked_mlflow_run():
    """A test may not leave an MLflow run active (the next one would log into it); it fails if it does."""
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
