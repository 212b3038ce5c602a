"""A real local platform (Ray head + MLflow server), started once per test session with our CLI in a temporary home.

Modules share it: each uses its own registered model and Serve application, so they do not see each other's
state; a module that needs the CPUs to itself removes the Serve applications first (`no_serve_apps`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlplatform.cluster import answers

from tests.conftest import ISOLATED_ENV, ROOT

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


#: The admin key every router of the test platform accepts.
ADMIN_KEY = "test-admin-key"


@pytest.fixture(scope="session")
def platform_env(tmp_path_factory):
    """`mlplatform up` in a fresh home; yields the environment to run commands with; `down` at the end."""
    for url in ("http://127.0.0.1:8265", "http://127.0.0.1:5000/health", "http://127.0.0.1:8000"):
        if answers(url):
            pytest.fail(f"{url} is already in use (a demo still up?): run `make down` before the integration tests")
    home = tmp_path_factory.mktemp("platform")
    # PATH stays as the caller's (like `make demo`, which does not activate the venv): `up` must make
    # job entrypoints find the venv's python by itself.
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    for name in ISOLATED_ENV:
        env.pop(name, None)
    # Inherited by every replica: the admin routes are off without an admin key, even on an open endpoint.
    env["MLPLATFORM_ADMIN_KEYS"] = ADMIN_KEY
    cli("up", env=env, timeout=300)
    try:
        yield env
    finally:
        cli("down", env=env, timeout=300, check=False)
        shutil.rmtree(home, ignore_errors=True)


def no_serve_apps(env: dict[str, str]) -> None:
    """Delete every Serve application of the platform (they hold CPU shares that training needs)."""
    import requests
    from mlplatform.cluster import auth_headers, load_state

    state = load_state(Path(env["MLPLATFORM_HOME"]))
    assert state is not None
    url = f"{state.dashboard_url}/api/serve/applications/"
    r = requests.delete(url, headers=auth_headers(), timeout=60)
    assert r.status_code in (200, 404), r.text
    for _ in range(120):
        if not (requests.get(url, headers=auth_headers(), timeout=10).json().get("applications") or {}):
            return
        time.sleep(1)
    raise AssertionError("Serve applications still up after 2 minutes")
