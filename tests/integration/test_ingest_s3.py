"""s3:// sources: a real S3 API (moto's server) on this machine, configured the way a user configures AWS
(the standard AWS_* variables), read through pyarrow's S3 filesystem by the same ingest as local files."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import ray
from mlplatform.data.ingest import ingest
from mlplatform.data.version import MANIFEST, VersionWriter, load_version
from mlplatform.tools.sample_data import generate

from tests.integration.test_ingest import spec

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
    with pytest.MonkeyPatch.context() as mp:
        # Set before ray.init, so that every Ray worker inherits them, as a job's runtime_env would give them.
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_an_s3_dataset_ingests_exactly_like_the_same_files_on_disk(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    local = tmp_path / "data" / "demo"
    generate(local, entities=400, seed=5)
    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint, region="us-east-1", allow_bucket_creation=True)
    s3.create_dir("lake")
    pafs.copy_files(str(local), "lake/demo", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)

    on_disk = spec(tmp_path).model_copy(update={"name": "disk"})
    sources = [s.model_copy(update={"path": s.path.replace(str(local), "s3://lake/demo")}) for s in on_disk.sources]
    assert all(s.path.startswith("s3://lake/demo/") for s in sources)
    # Versions written to S3 too: there the manifest is the commit (no rename on an object store).
    in_s3 = on_disk.model_copy(update={"sources": sources, "name": "s3", "output_dir": "s3://lake/datasets"})

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        a, b = ingest(on_disk), ingest(in_s3)
        again = ingest(in_s3)
    finally:
        ray.shutdown()
    assert b.path.startswith("s3://lake/datasets/s3/") and again.reused and again.path == b.path
    assert load_version(b.path, verify=True).fingerprint == a.fingerprint
    assert all(f.startswith(f"{b.path}/") for f in b.table_files)
    assert b.fingerprint == a.fingerprint and b.manifest["rows"] == a.manifest["rows"] > 300
    for name, stats in b.manifest["sources"].items():
        counts = {k: stats[k] for k in ("in", "ok", "quarantined", "bad_files")}
        assert counts == {k: a.manifest["sources"][name][k] for k in counts}, name  # same bad files and rows
        assert all(f["path"].startswith("s3://lake/demo/") for f in stats["files"])


def test_two_writers_racing_on_s3_leave_one_whole_version(s3_endpoint):
    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint, region="us-east-1", allow_bucket_creation=True)
    s3.create_dir("race")

    def prepared(rows: int) -> VersionWriter:
        w = VersionWriter("s3://race/datasets/d", "v1")
        w.begin()
        with w.fs.open_output_stream(w.path("table/p0.parquet")) as f:
            pq.write_table(pa.table({"id": list(range(rows))}), f)
        w.manifest = {"version": "v1", "rows": rows, "schema": "id", "fingerprint": "-", "writer": w.work}
        w.manifest["files"] = {"table_dir": f"{w.prefix}table", "table": w.files("table"), "profile": "-"}
        return w

    first, second = prepared(10), prepared(20)
    a = first.commit(first.manifest)
    b = second.commit(second.manifest)  # finds the committed manifest: keeps it, removes its own files
    assert not a.reused and b.reused and b.rows == 10
    left = {i.path for i in s3.get_file_info(pafs.FileSelector("race/datasets/d/v1", recursive=True)) if i.is_file}
    assert left == {f"race/datasets/d/v1/{MANIFEST}", *(f.split("://", 1)[1] for f in a.table_files)}


def test_the_inference_log_and_feedback_live_on_s3(s3_endpoint):
    """The router's log writer and the monitor's readers on an object store: rows written whole, found by
    feedback from another replica, read back as a window with labels joined."""
    from datetime import datetime, timedelta, timezone

    import numpy as np
    from mlplatform.monitor.online import labelled_requests
    from mlplatform.monitor.window import log_window, read_feedback
    from mlplatform.serve.config import InferenceLogConfig
    from mlplatform.serve.inference_log import InferenceLog
    from mlplatform.serve.router import ServedRequest

    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint, region="us-east-1", allow_bucket_creation=True)
    s3.create_dir("logs")
    root = "s3://logs/inference"
    one = InferenceLog(InferenceLogConfig(path=root), "churn", ["a", "b"], start=False)
    for i in range(5):
        x = np.array([[i, 2 * i]], dtype=np.float32)
        one(ServedRequest("churn", "m", "1", f"r{i}", x, np.array([0.1 * i]), 1.0, "weighted"))
    assert one.flush() == 5
    two = InferenceLog(InferenceLogConfig(path=root), "churn", ["a", "b"], start=False)
    keys = [(f"r{i}", 0) for i in range(5)] + [("nope", 0)]
    logged, labelled = two.lookup(two.needs_lookup(keys), keys)
    assert logged == set(keys[:5]) and labelled == set()
    answers = two.add_feedback([(r, 0, float(i % 2)) for i, (r, _) in enumerate(keys)], logged)
    assert [a["status"] for a in answers] == ["accepted"] * 5 + ["unknown"]
    two.flush()
    window = log_window("churn", root=root, since=timedelta(hours=1))
    assert len(window.files) == 1 and window.features == ["a", "b"] and not window.skipped
    assert read_feedback(window).num_rows == 5
    rows = labelled_requests("churn", datetime.now(timezone.utc) - timedelta(minutes=5), root=root)
    assert sorted(rows["label"].to_pylist()) == [0.0, 0.0, 0.0, 1.0, 1.0]
