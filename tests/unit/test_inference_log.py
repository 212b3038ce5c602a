"""The inference log and feedback: request ids on every response, sampling, batched Parquet writes, drops
counted and never a failed request, and feedback answered per item (driven through the ASGI app, no Ray)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from mlplatform.data.schema import FeatureSchema, InputSchema
from mlplatform.serve.config import AppArgs, InferenceLogConfig
from mlplatform.serve.endpoint import create_app
from mlplatform.serve.inference_log import FEEDBACK, REQUESTS, InferenceLog, label_code, partitioning
from mlplatform.serve.router import RouterCore

from tests.unit.test_serve_router import FEATURES, ROW, FakeHandle, _Method, call


class Counts:
    def __init__(self):
        self.by = {}

    def logged(self, outcome, n):
        self.by[outcome] = self.by.get(outcome, 0) + n


def make(tmp_path: Path, start=False, **log):
    parsed = AppArgs.model_validate(
        {
            "model_name": "m",
            "auth": "none",
            "features": FEATURES,
            "versions": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}],
            "allow_missing": True,
            "inference_log": {"path": str(tmp_path / "log"), **log},
        }
    )
    inference_log = InferenceLog(parsed.inference_log, "app", FEATURES, metrics=Counts(), start=start)
    core = RouterCore(
        parsed,
        FEATURES,
        {"1": FakeHandle("1", 1.0), "2": FakeHandle("2", 10.0)},
        observers=[inference_log],
        app_name="app",
    )
    return inference_log, create_app(core, inference_log)


def read_requests(tmp_path: Path):
    return pads.dataset(tmp_path / "log" / "requests", format="parquet", partitioning=partitioning(REQUESTS)).to_table()


def test_every_response_has_a_request_id(tmp_path):
    log, app = make(tmp_path)
    ok = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    bad = call(app, "POST", "/v1/models/m:predict", {"instances": []})
    missing = call(app, "GET", "/nowhere")
    ids = [r[1]["x-request-id"] for r in (ok, bad, missing)]
    assert all(len(i) == 32 for i in ids) and len(set(ids)) == 3
    # An id that came in (the client's, or the one Serve's proxy set and echoes itself) is the logged one.
    given = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-request-id": "abc-1"})
    assert given[0] == 200 and "x-request-id" not in given[1]
    inputs = [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "FP32", "data": [2]},
    ]
    v2 = call(app, "POST", "/v2/models/m/infer", {"id": "v2-id", "inputs": inputs})
    assert v2[0] == 200 and v2[2]["id"] == "v2-id" and len(v2[1]["x-request-id"]) == 32
    log.flush()
    logged = set(read_requests(tmp_path)["request_id"].to_pylist())
    assert logged == {ids[0], "abc-1", v2[1]["x-request-id"]}
    status, _, body = call(
        app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-request-id": "x" * 200}
    )
    assert status == 400 and "x-request-id" in body["error"]


def test_logged_rows_are_partitioned_and_whole(tmp_path):
    log, app = make(tmp_path)
    ids = [
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW, {"a": 5, "b": 7}]})[1]["x-request-id"]
        for _ in range(10)
    ]
    assert log.flush() == 20
    table = read_requests(tmp_path)
    assert table.num_rows == 20
    assert set(table["request_id"].to_pylist()) == set(ids)
    assert set(table["version"].to_pylist()) == {"1", "2"}
    assert set(table["app"].to_pylist()) == {"app"}
    assert sorted(set(table["row"].to_pylist())) == [0, 1]
    features = table["features"].combine_chunks()
    assert features.type.names == FEATURES
    a = features.field("a").to_pylist()
    assert set(a) == {1.0, 5.0}
    # predictions follow the version: v1 → a+b, v2 → 10(a+b)
    rows = table.to_pylist()
    for r in rows:
        if r["row"] == 0:
            assert r["prediction"] == (3.0 if r["version"] == "1" else 30.0)
    files = list((tmp_path / "log").rglob("*"))
    assert not [f for f in files if f.name.startswith(".")], "no temporary file is left behind"
    assert log.metrics.by == {"written": 20}


def test_sampling_and_a_full_buffer_drop_rows_counted_never_requests(tmp_path):
    log, app = make(tmp_path, sample_rate=0.5)
    statuses = [call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[0] for _ in range(400)]
    assert statuses == [200] * 400
    n = log.flush()
    assert 140 < n < 260  # ~200 of 400 at 0.5

    log, app = make(tmp_path / "full", max_buffer_rows=5)
    statuses = [call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[0] for _ in range(12)]
    assert statuses == [200] * 12
    assert log.dropped == 7 and log.metrics.by == {"dropped": 7}
    assert log.flush() == 5


def test_a_failing_store_drops_rows_counted(tmp_path):
    (tmp_path / "log").write_text("a file where the log's folder should be")
    log, app = make(tmp_path)
    assert call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[0] == 200
    assert log.flush() == 0
    assert log.dropped == 1 and log.metrics.by == {"dropped": 1}


def test_the_writer_thread_flushes_on_time_and_on_close(tmp_path):
    log, app = make(tmp_path, start=True, flush_s=0.2)
    call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    deadline = time.time() + 10
    while log.written < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert log.written == 1
    call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    log.close()
    assert read_requests(tmp_path).num_rows == 2


def test_concurrent_requests_lose_no_row(tmp_path):
    log, app = make(tmp_path, start=True, flush_s=0.05, flush_rows=7)

    def send():
        for _ in range(50):
            assert call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[0] == 200

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert read_requests(tmp_path).num_rows == 200 and log.dropped == 0


def feedback(app, labels):
    return call(app, "POST", "/v1/models/m/feedback", {"labels": labels})


def test_feedback_is_answered_per_item(tmp_path):
    log, app = make(tmp_path)
    rid = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW, ROW]})[1]["x-request-id"]
    status, _, body = feedback(
        app,
        [
            {"request_id": rid, "label": 1},
            {"request_id": rid, "label": 0, "row": 1},
            {"request_id": rid, "label": 1, "row": 2},  # the request had two rows
            {"request_id": "never-served", "label": 0},
            {"request_id": rid, "label": 1},  # twice in one request
            {"request_id": rid, "label": 2, "row": 1},
            {"request_id": rid, "label": True},
            "not an object",
            {"request_id": rid, "label": 1, "extra": 1},
        ],
    )
    assert status == 200
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "accepted",
        "unknown",
        "unknown",
        "duplicate",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
    ]
    assert body["counts"] == {"accepted": 2, "unknown": 2, "duplicate": 1, "invalid": 4}
    assert "label must be 0 or 1" in body["results"][5]["message"]
    # labelled again later: a duplicate, and nothing is written twice
    assert feedback(app, [{"request_id": rid, "label": 0}])[2]["results"][0]["status"] == "duplicate"
    log.flush()
    labels = pads.dataset(
        tmp_path / "log" / "feedback", format="parquet", partitioning=partitioning(FEEDBACK)
    ).to_table()
    assert sorted(zip(labels["row"].to_pylist(), labels["label"].to_pylist(), strict=True)) == [(0, 1.0), (1, 0.0)]


def test_feedback_finds_requests_another_replica_logged(tmp_path):
    """A replica that did not serve the request finds it, and later its label, in the written log."""
    one, app_one = make(tmp_path)
    rid = call(app_one, "POST", "/v1/models/m:predict", {"instances": [ROW]})[1]["x-request-id"]
    one.flush()
    two, app_two = make(tmp_path)  # a second router replica, same log
    assert feedback(app_two, [{"request_id": rid, "label": 1}])[2]["results"][0]["status"] == "accepted"
    two.flush()
    answer = feedback(app_one, [{"request_id": rid, "label": 0}])[2]["results"][0]
    assert answer == {"request_id": rid, "status": "duplicate", "message": "already labelled"}


def test_a_replica_reads_each_written_file_once(tmp_path, monkeypatch):
    """Feedback checks the written log at every call; files never change, so each is read once, not at every
    call (reading them all each time made feedback cost grow with the log)."""
    one, app_one = make(tmp_path)
    rids = []
    for _ in range(5):  # five files
        rids.append(call(app_one, "POST", "/v1/models/m:predict", {"instances": [ROW, ROW]})[1]["x-request-id"])
        one.flush()
    two, app_two = make(tmp_path)
    reads = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    assert feedback(app_two, [{"request_id": rids[0], "label": 1, "row": 1}])[2]["counts"] == {"accepted": 1}
    assert len(reads) == 5
    assert feedback(app_two, [{"request_id": rids[1], "label": 1}])[2]["counts"] == {"accepted": 1}
    assert len(reads) == 5  # nothing new was written: nothing read
    two.flush()  # its two labels, one file
    answers = feedback(app_one, [{"request_id": r, "label": 0} for r in rids[:3]])[2]["results"]
    assert [a["status"] for a in answers] == ["accepted", "duplicate", "accepted"]  # row 0 of rids[0] was not
    assert two.lookup([(rids[4], 2)], [(rids[4], 2)]) == (set(), set())  # no row 2 in that request


def test_feedback_survives_a_damaged_log_file(tmp_path):
    log, app = make(tmp_path)
    rid = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[1]["x-request-id"]
    log.flush()
    part = next((tmp_path / "log" / "requests").rglob("*.parquet"))
    (part.parent / "part-broken.parquet").write_bytes(b"PAR1 truncated")
    _, other = make(tmp_path)
    assert feedback(other, [{"request_id": rid, "label": 0}])[2]["results"][0]["status"] == "accepted"
    assert pq.read_table(part).num_rows == 1


@pytest.mark.parametrize(
    "body, status",
    [
        ({"labels": []}, 400),
        ({"labels": "x"}, 400),
        ([1, 2], 400),
        ({"labels": [{"request_id": "a", "label": 1}] * 1001}, 413),
    ],
)
def test_bad_feedback_bodies(tmp_path, body, status):
    _, app = make(tmp_path)
    got, _, answer = call(app, "POST", "/v1/models/m/feedback", body)
    assert got == status and answer["error"]


def test_feedback_without_a_log_is_refused(tmp_path):
    parsed = AppArgs.model_validate(
        {"model_name": "m", "auth": "none", "features": FEATURES, "versions": [{"version": "1", "weight": 100}]}
    )
    app = create_app(RouterCore(parsed, FEATURES, {"1": FakeHandle("1", 1.0)}))
    status, _, body = feedback(app, [{"request_id": "a", "label": 1}])
    assert status == 409 and "inference_log" in body["error"]


def test_inference_log_config_defaults():
    cfg = InferenceLogConfig()
    assert cfg.sample_rate == 1.0 and cfg.resolved_path().endswith("inference_log")


# ------------------------------------------------------------------------ labels and outputs by task

SPECIES = ["setosa", "versicolor", "virginica"]


class ClassHandle:
    """A multiclass model's handle: the same probabilities, one per class, for every row."""

    def __init__(self, version: str, probabilities=(0.2, 0.7, 0.1)):
        async def predict(x):
            return np.tile(np.array([probabilities]), (len(x), 1))

        async def version_info():
            return version

        self.predict = _Method(predict)
        self.version_info = _Method(version_info)


def make_task(tmp_path: Path, task: str, classes: list[str], *handles) -> tuple[InferenceLog, object]:
    """An app of a `task` model whose versions 1, 2, ... are `handles`, splitting traffic evenly."""
    parsed = AppArgs.model_validate(
        {
            "model_name": "m",
            "auth": "none",
            "features": FEATURES,
            "versions": [{"version": str(i + 1), "weight": 100 / len(handles)} for i in range(len(handles))],
            "inference_log": {"path": str(tmp_path / "log")},
        }
    )
    schema = InputSchema(
        features=[FeatureSchema(name=f, kind="numeric", nullable=False) for f in FEATURES], task=task, classes=classes
    )
    inference_log = InferenceLog(parsed.inference_log, "app", FEATURES, metrics=Counts(), start=False)
    versions = {str(i + 1): h for i, h in enumerate(handles)}
    core = RouterCore(parsed, FEATURES, versions, observers=[inference_log], app_name="app", schema=schema)
    return inference_log, create_app(core, inference_log)


def test_a_multiclass_model_logs_every_probability_and_takes_labels_by_class_name(tmp_path):
    log, app = make_task(tmp_path, "multiclass", SPECIES, ClassHandle("1"))
    rid = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW, ROW, ROW, ROW]})[1]["x-request-id"]
    log.flush()
    logged = read_requests(tmp_path).sort_by("row")
    assert logged["prediction"].to_pylist() == [1.0] * 4  # the likeliest class's index
    assert logged["probabilities"].to_pylist()[0] == pytest.approx([0.2, 0.7, 0.1])
    _, _, body = feedback(
        app,
        [
            {"request_id": rid, "label": "virginica"},
            {"request_id": rid, "label": 1, "row": 1},  # by index too
            {"request_id": rid, "label": "rose", "row": 2},
            {"request_id": rid, "label": 3, "row": 3},
        ],
    )
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "invalid", "invalid"]
    assert "one of ['setosa', 'versicolor', 'virginica']" in body["results"][2]["message"]
    assert '"rose"' in body["results"][2]["message"]
    log.flush()
    labels = pads.dataset(tmp_path / "log" / "feedback", format="parquet", partitioning=partitioning(FEEDBACK))
    assert sorted(labels.to_table()["label"].to_pylist()) == [1.0, 2.0]  # class codes, as training had them


def test_a_regression_takes_any_finite_number_as_its_label(tmp_path):
    log, app = make_task(tmp_path, "regression", [], FakeHandle("1", 1.0))
    rid = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW, ROW, ROW]})[1]["x-request-id"]
    _, _, body = feedback(
        app,
        [
            {"request_id": rid, "label": 312.5},
            {"request_id": rid, "label": "312.5", "row": 1},
            {"request_id": rid, "label": True, "row": 2},
        ],
    )
    assert [r["status"] for r in body["results"]] == ["accepted", "invalid", "invalid"]
    assert "finite number" in body["results"][1]["message"]


@pytest.mark.parametrize(
    ("value", "task", "expected"),
    [
        (1, "binary", 1.0),
        (0.0, "binary", 0.0),
        (2, "binary", "label must be 0 or 1"),
        (True, "binary", "label must be 0 or 1"),
        ("virginica", "multiclass", 2.0),
        (2.0, "multiclass", 2.0),
        (1.5, "multiclass", "label must be one of"),
        (-1, "multiclass", "label must be one of"),
        (-3.25, "regression", -3.25),
        (float("inf"), "regression", "finite number"),
        (None, "regression", "finite number"),
    ],
)
def test_label_codes_by_task(value, task, expected):
    got = label_code(value, task, SPECIES)
    assert got == expected if isinstance(expected, float) else expected in got


def test_the_log_read_in_process_as_drift_reads_it_names_each_rows_version(tmp_path):
    """Drift's in-process read gives each row its file's path as a dictionary column (Ray Data's is text): the
    version still comes from the partition folder."""
    from mlplatform.data.local import read_parquet
    from mlplatform.monitor.window import flatten_log

    log, app = make(tmp_path)
    for _ in range(5):
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    assert log.flush() == 5
    files = [str(p) for p in (tmp_path / "log").rglob("*.parquet")]
    flat = flatten_log(read_parquet(files, columns=["request_id", "row", "features"], with_paths=True), None)
    assert set(flat["version"].to_pylist()) == {"1", "2"} and flat.num_rows == 5
    assert set(flat.column_names) >= {"request_id", "version", "label", *FEATURES}
