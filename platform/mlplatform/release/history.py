"""The deployment history: every change to what an application serves, as an append-only log in MLflow.

MLflow records runs and model versions but not which version served production when (mlflow #2169). Each
serving application gets one run in the experiment ``mlplatform-deployments`` (tag ``mlplatform.app``). Its
change number `n` is the param ``event/<n>``: the change as intended (policy, versions, aliases, who, why)
written *before* it is applied, and ``status/<n>`` once it is (``applied``, or ``failed: why``).

Params are write-once in MLflow (its store refuses a second, different value for a key), which makes
them a compare-and-set: of two writers that read the log at change `n-1` and both try to write ``event/<n>``,
exactly one succeeds; the other learns that the application changed since it read it. The control plane
(`mlplatform.release.traffic`) builds its one path for every change on that. Rollouts keep a heartbeat in
a tag (tags can change) so that a rollout whose process died can be told from one that is baking.

One more run holds a lock on the cluster's whole Serve config (`serve_config_lock`): Serve replaces every
application with each PUT, so two changes to *different* applications at once would otherwise each put back
the other's stale config (one deploy deleting an application another deployed a moment before).
"""

from __future__ import annotations

import getpass
import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mlplatform.errors import ConflictError
from mlplatform.registry import client as registry_client
from mlplatform.settings import MLPLATFORM_SUBMITTED_BY

__all__ = [
    "Event",
    "EXPERIMENT",
    "read",
    "claim",
    "settle",
    "heartbeat",
    "heartbeats",
    "serve_config_lock",
    "who",
    "now",
]

EXPERIMENT = "mlplatform-deployments"
_EVENT, _STATUS, _HEARTBEAT = "event/", "status/", "mlplatform.heartbeat."
_LOCK, _UNLOCK = "lock/", "unlock/"
_APP_TAG, _LOCK_TAG = "mlplatform.app", "mlplatform.lock"
#: A read of the Serve config and its PUT take well under a second, and each gives up after 30 s: a holder
#: still holding after both timeouts died.
LOCK_LEASE_S = 90.0


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Event:
    """One change to an application: the state it leads to, and why.

    Attributes:
        seq: its number in the application's log (1, 2, ...); 0 until claimed.
        status: ``intent`` (written, not yet applied), ``applied``, or ``failed: <why>`` (nothing changed).
        versions: the versions deployed after the change (a version missing from it is retired).
        move_aliases: the aliases the change sets (alias → version), applied with it.
        aliases: every alias of the model after the change, as the history shows it.
        rollout: for rollout changes, ``{"id", ...}``; a ``rollout-start`` holds its config and the policy
            it started from, so that the rollout can be resumed or undone by another process.
        lease_until: until when (epoch seconds) the writer that claimed it is expected to settle it; after
            that another writer may finish it.
    """

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
    seq: int = 0
    id: str = ""
    status: str = "intent"
    versions: list[str] = field(default_factory=list)
    move_aliases: dict[str, str] = field(default_factory=dict)
    rollout: dict[str, Any] | None = None
    lease_until: float = 0.0

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

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    @property
    def pending(self) -> bool:
        return self.status == "intent"


def who() -> str:
    """Who makes a change: the submitting user of a job, else the local user."""
    return MLPLATFORM_SUBMITTED_BY.get() or getpass.getuser()


def _experiment_id(client: Any, create: bool) -> str | None:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    if not create:
        return None
    try:
        return client.create_experiment(EXPERIMENT)
    except MlflowException:  # created by another writer since we looked
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


def _run_id(client: Any, app: str, create: bool, *, tag: str = _APP_TAG, prefix: str = "deployments") -> str | None:
    """The application's history run: the oldest run tagged with it (two writers creating it at once agree)."""
    exp_id = _experiment_id(client, create)
    if exp_id is None:
        return None

    def oldest() -> str | None:
        runs = client.search_runs(
            [exp_id], filter_string=f"tags.`{tag}` = '{app}'", order_by=["start_time ASC"], max_results=5
        )
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if runs else None

    found = oldest()
    if found is not None or not create:
        return found
    mine = client.create_run(exp_id, run_name=f"{prefix}-{app}", tags={tag: app}).info.run_id
    found = oldest()
    if found != mine:
        client.delete_run(mine)
    return found


def read(app: str, *, tracking_uri: str | None = None) -> list[Event]:
    """The application's log, oldest first, each event with its status (empty when never deployed by us)."""
    client = registry_client(tracking_uri)
    run_id = _run_id(client, app, create=False)
    if run_id is None:
        return []
    params = client.get_run(run_id).data.params
    events = []
    for key, value in params.items():
        if key.startswith(_EVENT):
            seq = int(key[len(_EVENT) :])
            status = params.get(f"{_STATUS}{seq:06d}", "intent")
            events.append(replace(Event(**json.loads(value)), seq=seq, status=status))
    return sorted(events, key=lambda e: e.seq)


def claim(event: Event, seq: int, *, tracking_uri: str | None = None, lease_s: float = 900) -> Event | None:
    """Write `event` as change number `seq` of its application, if nobody has; None when somebody has.

    Returns:
        The event as written (stamped with id, time, author, lease), or None: the log moved past `seq - 1`
        since the caller read it.
    """
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    run_id = _run_id(client, event.app, create=True)
    stamped = replace(
        event,
        seq=seq,
        id=event.id or uuid.uuid4().hex,
        at=event.at or now(),
        by=event.by or who(),
        status="intent",
        lease_until=time.time() + lease_s,
    )
    body = {k: v for k, v in asdict(stamped).items() if k not in ("seq", "status")}
    try:
        client.log_param(run_id, f"{_EVENT}{seq:06d}", json.dumps(body, sort_keys=True))
    except MlflowException as exc:
        if "Changing param values is not allowed" in str(exc) or _run_id(client, event.app, create=False) != run_id:
            return None  # taken by another writer, or our history run lost the creation race (deleted)
        raise
    if _run_id(client, event.app, create=False) != run_id:
        return None  # another writer's history run won the creation race; ours was deleted
    return stamped


def settle(event: Event, status: str, *, tracking_uri: str | None = None) -> bool:
    """Mark a claimed change ``applied`` or ``failed: why``; False when another writer settled it first."""
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    run_id = _run_id(client, event.app, create=False)
    try:
        client.log_param(run_id, f"{_STATUS}{event.seq:06d}", status[:500])
    except MlflowException as exc:
        if "Changing param values is not allowed" in str(exc):
            return False
        raise
    if status == "applied":
        _tag_versions(client, event)
    return True


def _tag_versions(client: Any, event: Event) -> None:
    """Each version carries its latest weight in this application (handy in the registry UI)."""
    from mlflow.exceptions import MlflowException

    for version, weight in event.weights.items():
        try:
            client.set_model_version_tag(
                event.model,
                version,
                f"mlplatform.serving.{event.app}",
                json.dumps({"weight": weight, "at": event.at, "action": event.action}),
            )
        except MlflowException:  # a version deleted from the registry must not block recording the change
            continue


def heartbeat(app: str, rollout_id: str, *, tracking_uri: str | None = None) -> None:
    """Say that the process running rollout `rollout_id` of `app` is alive (now)."""
    client = registry_client(tracking_uri)
    run_id = _run_id(client, app, create=True)
    client.set_tag(run_id, f"{_HEARTBEAT}{rollout_id}", f"{time.time():.3f}")


def heartbeats(app: str, *, tracking_uri: str | None = None) -> dict[str, float]:
    """rollout id → its last heartbeat (epoch seconds)."""
    client = registry_client(tracking_uri)
    run_id = _run_id(client, app, create=False)
    if run_id is None:
        return {}
    tags = client.get_run(run_id).data.tags
    return {k[len(_HEARTBEAT) :]: float(v) for k, v in tags.items() if k.startswith(_HEARTBEAT)}


@contextmanager
def serve_config_lock(
    *, tracking_uri: str | None = None, lease_s: float = LOCK_LEASE_S, wait_s: float = 120.0
) -> Iterator[int]:
    """Hold the cluster's Serve config for one read-edit-put of it, against every other mlplatform writer.

    The lock is number `n` of a lock run: the write-once param ``lock/<n>`` taken (of two writers, one
    succeeds), ``unlock/<n>`` when done. A holder that died is passed over once its lease ends; a live
    one holds it for the length of one HTTP round trip to Serve. (`serve deploy` by hand does not take it.)

    Yields:
        The lock's number.

    Raises:
        ConflictError: another writer held it for all of `wait_s`.
    """
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    run_id = _run_id(client, "serve-config", create=True, tag=_LOCK_TAG, prefix="lock")
    me = {"by": who(), "id": uuid.uuid4().hex}
    deadline = time.time() + wait_s
    while True:
        params = client.get_run(run_id).data.params
        n = max((int(k[len(_LOCK) :]) for k in params if k.startswith(_LOCK)), default=0)
        holder = json.loads(params[f"{_LOCK}{n:06d}"]) if n else {}
        if n and f"{_UNLOCK}{n:06d}" not in params and holder.get("until", 0) > time.time():
            if time.time() > deadline:
                raise ConflictError(
                    f"the cluster's Serve config has been held by {holder.get('by')} for {wait_s:.0f}s; try again"
                )
            time.sleep(0.05 + 0.1 * random.random())
            continue
        try:
            client.log_param(run_id, f"{_LOCK}{n + 1:06d}", json.dumps({**me, "until": time.time() + lease_s}))
        except MlflowException as exc:
            if "Changing param values is not allowed" in str(exc):
                continue  # another writer took number n + 1 first
            raise
        break
    try:
        yield n + 1
    finally:
        try:
            client.log_param(run_id, f"{_UNLOCK}{n + 1:06d}", "1")
        except MlflowException:
            pass  # the lease ends it
