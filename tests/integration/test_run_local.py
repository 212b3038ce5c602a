"""`mlplatform run` on an embedded Ray (no `up`): ingest reconciles every record and versions its output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DEMO_CONFIG
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
    assert quarantine["reason"].str.len().gt(0).all()
    # Every record has its raw form; a file that could not be read at all has none (its reason says so).
    unreadable = quarantine["reason"].str.startswith("malformed file:")
    assert quarantine.loc[~unreadable, "record"].str.len().gt(0).all()
    assert set(quarantine.loc[unreadable, "source"]) == {"tickets", "scans"}  # the files the generator planted
    assert quarantine["reason"].str.startswith("malformed JSON").any()
    table = pd.read_parquet(version_dir / "table")
    assert len(table) == manifest["rows"] == manifest["sources"]["profiles"]["ok"]
    assert list(table.columns) == [manifest["key"], *manifest["features"], manifest["label"]]

    # Unchanged inputs: the same version is reused, not recomputed.
    again = cli("run", "ingest", "--config", "jobs/configs/demo.yaml", env=env, timeout=600).stdout
    assert f"version {manifest['version']} (reused: inputs unchanged)" in again
    assert Path(version_dir, "manifest.json").exists()


def test_too_many_bad_records_fails_the_job_but_keeps_the_quarantine(tmp_path):
    env = {**os.environ, "MLPLATFORM_HOME": str(tmp_path)}
    cli("data", "--entities", "300", env=env)
    strict = tmp_path / "strict.yaml"
    text = DEMO_CONFIG.read_text()
    strict.write_text(text.replace("      format: jsonl\n", "      format: jsonl\n      max_bad_fraction: 0.0\n"))
    out = cli("run", "ingest", "--config", str(strict), env=env, timeout=600, check=False)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "source 'events'" in out.stderr and "max_bad_fraction" in out.stderr
    assert "Traceback" not in out.stderr
    dataset = tmp_path / "datasets" / "churn"
    (rejected,) = (dataset / "rejected").iterdir()
    quarantine = pd.read_parquet(rejected / "quarantine")
    assert (quarantine["source"] == "events").sum() > 0  # nothing lost, even when the job fails
    assert str(rejected / "quarantine") in out.stderr
    assert sorted(p.name for p in dataset.iterdir()) == ["rejected"]  # and no version, whole or half
