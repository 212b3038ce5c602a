"""Dataset versions on a real Ray: two ingests at once, an ingest killed half-way, a file rewritten in place."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import ray
from mlplatform.data.ingest import ingest
from mlplatform.data.version import load_version
from mlplatform.tools.sample_data import generate

from tests.integration.test_ingest import spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("versions")
    generate(home / "data" / "demo", entities=400, seed=11)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPLATFORM_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def local_ray(home):
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def versions_of(home: Path, name: str) -> list[str]:
    return sorted(p.name for p in (home / "datasets" / name).iterdir() if p.name != "rejected")


def test_two_ingests_of_one_spec_at_once_commit_one_version(home, local_ray):
    cfg = spec(home).model_copy(update={"name": "twice"})
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(ingest, [cfg, cfg])
    assert a.path == b.path and a.fingerprint == b.fingerprint
    assert versions_of(home, "twice") == [a.version]  # no second copy, no temporary folder left
    table = pd.read_parquet(a.table_path)
    assert table["entity_id"].is_unique and len(table) == a.rows == b.rows  # never every row twice
    assert load_version(a.path, verify=True).rows == a.rows


def test_a_file_rewritten_in_place_with_the_same_size_and_time_is_a_new_version(home, local_ray):
    cfg = spec(home).model_copy(update={"name": "rewritten"})
    first = ingest(cfg)
    profiles = home / "data" / "demo" / "profiles.csv"
    stat = profiles.stat()
    text = profiles.read_text()
    # One label flipped: same bytes count, and the modification time put back.
    line = next(ln for ln in text.splitlines()[1:] if ln.endswith(',"0"'))
    profiles.write_text(text.replace(line, line[:-2] + '1"', 1))
    os.utime(profiles, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    try:
        second = ingest(cfg)
    finally:
        profiles.write_text(text)
    assert profiles.stat().st_size == stat.st_size
    assert not second.reused and second.version != first.version and second.fingerprint != first.fingerprint


# The distributed path: the in-process one writes its table in milliseconds and commits before a poll sees it
# (what a kill leaves does not depend on the path: `VersionWriter` publishes either).
KILLABLE = """
import os, ray, sys
from mlplatform.config import load_config
from mlplatform.data import ingest as ingest_module
from mlplatform.data.ingest import ingest
from mlplatform.pipeline import PipelineConfig
ingest_module.ingest_in_process = lambda size: False
cfg = load_config(sys.argv[1], PipelineConfig).data.model_copy(update={"name": "killed"})
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
ingest(cfg)
"""


# Killed for real once, while it writes its table (the latest stage before the commit); every other state a
# kill can leave is built by hand in tests/unit/test_version.py.
@pytest.mark.parametrize("stage", ["table"])
def test_an_ingest_killed_half_way_leaves_no_version_and_the_rerun_is_whole(home, local_ray, stage):
    from tests.conftest import DEMO_CONFIG

    dataset = home / "datasets" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, str(DEMO_CONFIG)],
        env={**os.environ, "MLPLATFORM_HOME": str(home)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        # Kill it as soon as it has started writing `stage` into its temporary folder.
        while not any(dataset.glob(f".*.tmp-*/{stage}")):
            assert proc.poll() is None, "the ingest ended before it could be killed"
            assert time.time() < deadline, "the ingest never reached the stage"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not [p for p in dataset.iterdir() if not p.name.startswith(".")]  # nothing a reader could take
    version = ingest(spec(home).model_copy(update={"name": "killed"}))
    assert versions_of(home, "killed") == [version.version]  # the dead writer's folder is gone too
    table = pd.read_parquet(version.table_path)
    assert table["entity_id"].is_unique and len(table) == version.rows
    shutil.rmtree(dataset, ignore_errors=True)


def test_a_data_set_of_one_table_ingests(home, local_ray, tmp_path):
    """The most common shape there is: one CSV with the key, the features and the label."""
    from mlplatform.data.config import DataConfig

    table = tmp_path / "patients.csv"
    table.write_text("id,x,y,label\n" + "".join(f"{i},{i * 0.5},{i % 7},{i % 2}\n" for i in range(1, 201)))
    cfg = DataConfig.model_validate(
        {
            "name": "one_table",
            "key": "id",
            "label": "label",
            "output_dir": str(tmp_path / "datasets"),
            "sources": [
                {
                    "name": "patients",
                    "format": "csv",
                    "path": str(table),
                    "fields": {
                        "id": {"type": "int", "unique": True},
                        "x": {"type": "float"},
                        "y": {"type": "float"},
                        "label": {"type": "int", "allowed": [0, 1]},
                    },
                }
            ],
        }
    )
    version = ingest(cfg)
    frame = pd.read_parquet(version.table_path)
    assert version.rows == len(frame) == 200 and version.features == ["x", "y"]
