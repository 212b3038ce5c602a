"""The lock on the cluster's Serve config, on a real MLflow store: one holder at a time, a dead holder passed
over when its lease ends, a live one waited for and then reported."""

from __future__ import annotations

import json
import threading
import time

import pytest
from mlflow import MlflowClient
from mlplatform.errors import ConflictError
from mlplatform.release.history import serve_config_lock


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_writers_at_once_hold_it_one_at_a_time(uri):
    inside, overlaps, taken = [0], [], []

    def writer():
        for _ in range(3):
            with serve_config_lock(tracking_uri=uri) as n:
                inside[0] += 1
                overlaps.append(inside[0] > 1)
                taken.append(n)
                time.sleep(0.02)
                inside[0] -= 1

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not any(overlaps) and sorted(taken) == list(range(1, 10))


def test_a_holder_that_died_is_passed_over_when_its_lease_ends(uri):
    with serve_config_lock(tracking_uri=uri) as first:
        pass
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mlplatform-deployments").experiment_id
    (run,) = client.search_runs([experiment], "tags.`mlplatform.lock` = 'serve-config'")
    # A writer killed between taking number 2 and giving it back: no unlock/2, its lease over a moment ago.
    client.log_param(run.info.run_id, "lock/000002", json.dumps({"by": "killed", "id": "x", "until": time.time() + 1}))
    with pytest.raises(ConflictError, match="held by killed"):
        with serve_config_lock(tracking_uri=uri, wait_s=0.3):
            pass
    time.sleep(1)
    started = time.time()
    with serve_config_lock(tracking_uri=uri, wait_s=0.3) as n:
        assert (first, n) == (1, 3) and time.time() - started < 0.3
