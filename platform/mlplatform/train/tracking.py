"""The search in MLflow while it runs: a run per trial, its metrics as the trial reports them.

`LiveTrials` is a Ray Tune callback on the driver. A trial's first report opens its MLflow run (a child of the
search's run, tagged with the trial id and the search's name), every report logs the trial's metrics at its
round, and the trial's end closes the run FINISHED or FAILED. A user watching the MLflow UI sees the curves
grow instead of everything appearing when the search ends; registration (`register.log_and_register`) then
finds these runs by their tags and logs the models into them.

Tune pickles its callbacks into the experiment's state (for `Tuner.restore`), so the callback holds only
strings and makes its MLflow client when first used; a resumed search's trials go on in the same runs.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

__all__ = ["LiveTrials", "SEARCH_TAG", "TRIAL_TAG", "trial_runs"]

SEARCH_TAG = "mlplatform.search"
TRIAL_TAG = "trial_id"


class LiveTrials(Callback):
    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, search: str, tags: dict[str, str]):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.search, self.tags = search, dict(tags)
        self.runs: dict[str, str] = {}  # trial id → run id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _run(self, trial: Any) -> str:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{trial.trial_id}",
                tags={
                    **self.tags,
                    "mlflow.parentRunId": self.parent_run_id,
                    SEARCH_TAG: self.search,
                    TRIAL_TAG: trial.trial_id,
                },
            )
            run_id = self.runs[trial.trial_id] = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in (trial.config or {}).items()]
            if params:
                self.client.log_batch(run_id, params=params)
        return run_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        step = int(result.get("round", result.get("training_iteration", 0)) or 0)
        now = int(1000 * float(result.get("timestamp", 0) or 0))
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in result.items()
            if (k.startswith(("val_", "train_")) or k == "setup_s")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(self._run(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.runs:
            self.client.set_terminated(self.runs[trial.trial_id], "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        error = getattr(trial, "error_file", None) or "the trial failed"
        self.client.set_tag(run_id, "error", str(error)[:5000])
        self.client.set_terminated(run_id, "FAILED")


def trial_runs(client: Any, experiment_id: str, search: str) -> dict[str, str]:
    """Trial id → run id of the runs `LiveTrials` opened for the search named `search`."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{search}'", max_results=5000)
    return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if TRIAL_TAG in r.data.tags}
