"""A real local platform (Ray head + MLflow server), started with our CLI in a temporary home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlplatform.cluster import answers

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str], timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [str(BIN / "mlplatform"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"mlplatform {' '.join(args)} exited {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        )
    return out


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory):
    """`mlplatform up` in a fresh home; yields the environment to run commands with; `down` at the end."""
    for url in ("http://127.0.0.1:8265", "http://127.0.0.1:5000/health", "http://127.0.0.1:8000"):
        if answers(url):
            pytest.fail(f"{url} is already in use (a demo still up?): run `make down` before the integration tests")
    home = tmp_path_factory.mktemp("platform")
    # PATH stays as the caller's (like `make demo`, which does not activate the venv): `up` must make
    # job entrypoints find the venv's python by itself.
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    cli("up", env=env, timeout=300)
    try:
        yield env
    finally:
        cli("down", env=env, timeout=300, check=False)
        shutil.rmtree(home, ignore_errors=True)
