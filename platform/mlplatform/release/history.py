"""Deployment history: every change to what an application serves, kept in MLflow.

MLflow records runs and model versions but not which version served production when (mlflow #2169).
Each serving application gets one run in the experiment ``mlplatform-deployments`` (tag
``mlplatform.app``) whose artifact ``history.jsonl`` lists every change — deploy, traffic, promote,
rollback, rollout steps — with when, who, the versions and weights, the shadow, the aliases and why;
the versions involved also carry a ``mlplatform.serving.<app>`` tag with their latest weight.
`rollback` reads this history to restore the state before the latest change.
"""

from __future__ import annotations

import getpass
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlplatform.registry import client as registry_client
from mlplatform.settings import MLPLATFORM_SUBMITTED_BY

__all__ = ["Event", "EXPERIMENT", "record", "read", "who"]

EXPERIMENT = "mlplatform-deployments"
ARTIFACT = "history.jsonl"


@dataclass(frozen=True)
class Event:
    """One change to an application: the state after it, and why."""

    app: str
    model: str
    action: str
    weights: dict[str, float]
    shadow: dict[str, Any] | None = None
    faults: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    by: str = ""
    at: str = ""

    def state(self) -> tuple:
        """What rollback restores: the traffic policy and the aliases (not who or why)."""
        return (
            json.dumps(self.weights, sort_keys=True),
            json.dumps(self.shadow, sort_keys=True),
            json.dumps(self.faults, sort_keys=True),
            json.dumps(self.aliases, sort_keys=True),
        )

    def policy(self) -> dict[str, Any]:
        """The router user_config of this state."""
        out: dict[str, Any] = {"weights": self.weights}
        if self.shadow:
            out["shadow"] = self.shadow
        if self.faults:
            out["faults"] = self.faults
        return out


def who() -> str:
    """Who makes a change: the submitting user of a job, else the local user."""
    return MLPLATFORM_SUBMITTED_BY.get() or getpass.getuser()


def _run_id(client: Any, app: str, create: bool) -> str | None:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        if not create:
            return None
        exp_id = client.create_experiment(EXPERIMENT)
    else:
        exp_id = exp.experiment_id
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlplatform.app` = '{app}'", max_results=1)
    if runs:
        return runs[0].info.run_id
    if not create:
        return None
    run = client.create_run(exp_id, run_name=f"deployments-{app}", tags={"mlplatform.app": app})
    return run.info.run_id


def _load(client: Any, run_id: str) -> list[Event]:
    if not any(f.path == ARTIFACT for f in client.list_artifacts(run_id)):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run_id, ARTIFACT, tmp)).read_text(encoding="utf-8")
    return [Event(**json.loads(line)) for line in text.splitlines() if line.strip()]


def record(event: Event, *, tracking_uri: str | None = None) -> Event:
    """Append `event` (stamped with time and author) to its application's history; tag the versions.

    Writers are not serialised: two changes to one application at the same instant may lose one entry.
    """
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    stamped = replace(event, at=event.at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), by=event.by or who())
    run_id = _run_id(client, event.app, create=True)
    assert run_id is not None
    events = _load(client, run_id) + [stamped]
    client.log_text(run_id, "".join(json.dumps(asdict(e)) + "\n" for e in events), ARTIFACT)
    for version, weight in stamped.weights.items():
        try:
            client.set_model_version_tag(
                stamped.model,
                version,
                f"mlplatform.serving.{stamped.app}",
                json.dumps({"weight": weight, "at": stamped.at, "action": stamped.action}),
            )
        except MlflowException:  # a version deleted from the registry must not block recording the change
            continue
    return stamped


def read(app: str, *, tracking_uri: str | None = None) -> list[Event]:
    """The application's history, oldest first (empty when it was never deployed by mlplatform)."""
    client = registry_client(tracking_uri)
    run_id = _run_id(client, app, create=False)
    return [] if run_id is None else _load(client, run_id)
