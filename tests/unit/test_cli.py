"""The CLI fails early and clearly, without a cluster."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEMO_CONFIG, ROOT

MLPLATFORM = Path(sys.executable).parent / "mlplatform"


def run(*args, home):
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([str(MLPLATFORM), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_submit_without_a_cluster_says_what_to_do(tmp_path):
    out = run("submit", "ingest", "--config", str(DEMO_CONFIG), "--address", "http://127.0.0.1:9", home=tmp_path)
    assert out.returncode == 1
    assert "no Ray Jobs API at http://127.0.0.1:9" in out.stderr and "mlplatform up" in out.stderr
    assert "Traceback" not in out.stderr


def test_submit_config_outside_repo_is_refused(tmp_path):
    outside = tmp_path / "c.yaml"
    outside.write_text(DEMO_CONFIG.read_text())
    out = run("submit", "ingest", "--config", str(outside), home=tmp_path)
    assert out.returncode == 2 and "must live inside the repository" in out.stderr


def test_run_with_malformed_config_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    out = run("run", "ingest", "--config", str(bad), home=tmp_path)
    assert out.returncode == 2 and f"{bad}:" in out.stderr and "malformed YAML" in out.stderr


def test_status_before_up(tmp_path):
    out = run("status", home=tmp_path)
    assert out.returncode == 1 and "mlplatform up" in out.stderr


def test_endpoint_without_server(tmp_path):
    out = run("endpoint", "churn", "--url", "http://127.0.0.1:9", home=tmp_path)
    assert out.returncode == 1 and "no endpoint answers at http://127.0.0.1:9" in out.stderr


def test_down_when_nothing_runs(tmp_path):
    out = run("down", home=tmp_path)
    assert out.returncode == 0 and "nothing was running" in out.stdout
