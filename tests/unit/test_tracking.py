"""The search in MLflow while it runs: each report of a trial lands in its run at once (a real MLflow store)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from mlflow import MlflowClient
from mlplatform.train.tracking import LiveTrials, trial_runs


def test_each_report_is_logged_as_it_comes_and_the_runs_are_found_again(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("search", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="search-m").info.run_id
    live = LiveTrials(uri, experiment, parent, "churn-abc", {"mlplatform.dataset.version": "v1"})
    a, b = SimpleNamespace(trial_id="a", config={"eta": 0.1}), SimpleNamespace(trial_id="b", config={"eta": 0.3})

    live.on_trial_result(0, [], a, {"round": 10, "val_auc": 0.70, "train_auc": 0.8, "time_total_s": 1.0})
    (run,) = client.search_runs([experiment], "tags.trial_id = 'a'")  # visible after the first report
    assert run.data.metrics == {"val_auc": 0.70, "train_auc": 0.8} and run.data.params == {"eta": "0.1"}
    assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "RUNNING"

    live = pickle.loads(pickle.dumps(live))  # as Tune keeps it in the experiment state for a resume
    live.on_trial_result(0, [], a, {"round": 20, "val_auc": 0.75, "train_auc": 0.85})
    live.on_trial_complete(0, [], a)
    live.on_trial_error(0, [], b)
    history = client.get_metric_history(live.runs["a"], "val_auc")
    assert [(m.step, m.value) for m in history] == [(10, 0.70), (20, 0.75)]
    assert client.get_run(live.runs["a"]).info.status == "FINISHED"
    assert client.get_run(live.runs["b"]).info.status == "FAILED"
    assert trial_runs(client, experiment, "churn-abc") == live.runs
    assert trial_runs(client, experiment, "another") == {}
