"""`mlplatform run` on an embedded Ray (no `up`): ingest reconciles every record and versions its output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.conftest import cli

pytestmark = pytest.mark.integration


def test_run_ingest_embedded(tmp_path):
    env = {**os.environ, "MLPLATFORM_HOME": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli("data", "--entities", "800", env=env)
    out = cli("run", "ingest", "--config", "jobs/configs/demo.yaml", env=env, timeout=600).stdout
    assert "reused" not in out

    (version_dir,) = [p for p in (tmp_path / "datasets" / "churn").iterdir() if p.is_dir()]
    manifest = json.loads((version_dir / "manifest.json").read_text())
    planted = json.loads((tmp_path / "data" / "demo" / "bad_records.json").read_text())
    quarantine = pd.read_parquet(version_dir / "quarantine")
    for source, stats in manifest["sources"].items():
        assert stats["in"] == stats["ok"] + stats["quarantined"]  # nothing silently lost
        assert stats["quarantined"] == (quarantine["source"] == source).sum()
        assert stats["quarantined"] >= len(planted[source])
    assert quarantine["reason"].str.len().gt(0).all() and quarantine["record"].str.len().gt(0).all()
    assert quarantine["reason"].str.startswith("malformed JSON").any()
    table = pd.read_parquet(version_dir / "table")
    assert len(table) == manifest["rows"] == manifest["sources"]["profiles"]["ok"]
    assert list(table.columns) == [manifest["key"], *manifest["features"], manifest["label"]]

    # Unchanged inputs: the same version is reused, not recomputed.
    again = cli("run", "ingest", "--config", "jobs/configs/demo.yaml", env=env, timeout=600).stdout
    assert f"version {manifest['version']} (reused: inputs unchanged)" in again
    assert Path(version_dir, "manifest.json").exists()
