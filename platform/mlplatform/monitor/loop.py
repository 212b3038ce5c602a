"""Continuous training: watch an application, and when the world moved, retrain → gate → canary → promote or
roll back, recording why each step happened.

One pass (`run_pass`, `mlplatform monitor --config FILE`; ``--every 10m`` repeats it):

1. The champion's lineage gives the reference: the dataset version it was trained on (a version without one
   is refused: there is nothing to compare with).
2. Drift of the log window against it (`mlplatform.monitor.drift`): drift.json and report.html on disk, a
   ``drift`` run in MLflow, gauges for Prometheus.
3. Triggers: the table drifted, labelled performance fell, the champion is older than the schedule, or
   ``--force``. None fired: the pass ends.
4. `retrain` (injected: the pipeline's ingest and training steps, so the loop uses exactly what people run)
   makes a new dataset version, searches, registers and gates against the champion. Refused: the pass ends.
5. `rollout` (injected: the release layer's progressive rollout with the online test) moves traffic through
   the single control-plane path every change takes; it promotes, or rolls back on its own.

Every pass is one MLflow run in experiment ``mlplatform-monitor`` (reasons, drifted features and their
statistics, dataset version, trained run and version, gate decision, what the rollout saw), and the rollout's
history events carry that run's id. Two loops of one application never run at once: a pass holds a named
Ray actor for the application, which dies with the process that holds it (a crashed loop frees it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mlplatform import registry
from mlplatform.data.version import load_version
from mlplatform.errors import ConflictError, DataContractError, PlatformError
from mlplatform.monitor.config import MonitorConfig, parse_duration
from mlplatform.monitor.drift import drift, export_gauges, log_to_mlflow, write_outputs
from mlplatform.release.config import RolloutConfig
from mlplatform.release.rollout import RolloutResult
from mlplatform.release.traffic import TrafficControl
from mlplatform.settings import platform_home

__all__ = ["Retrained", "PassResult", "run_pass", "run_loop", "loop_lock", "MONITOR_EXPERIMENT"]

MONITOR_EXPERIMENT = "mlplatform-monitor"


@dataclass(frozen=True)
class Retrained:
    """What retraining produced: the dataset version, the best registered version and the gate's verdict."""

    dataset: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    gate: str


@dataclass
class PassResult:
    app: str
    run_id: str
    champion: str
    reasons: list[str] = field(default_factory=list)
    outcome: str = "no action"
    drift_dir: str | None = None
    verdict: dict[str, Any] | None = None
    retrained: Retrained | None = None
    rollout: dict[str, Any] | None = None

    def summary(self) -> str:
        return f"monitor pass of {self.app!r} (run {self.run_id}): {self.outcome}"


#: Retrains: returns what it trained (the pipeline's ingest + train steps).
Retrain = Callable[[], Retrained]
#: Rolls a canary out: ``(config, origin) -> RolloutResult`` (the release layer's run_rollout, wired).
Rollout = Callable[[RolloutConfig, dict[str, Any]], RolloutResult]


class _Holder:
    """The lock of one application's loop: a named actor that only says who holds it."""

    def __init__(self, who: str, since: str) -> None:
        self.info = f"held by {who} since {since}"

    def holder(self) -> str:
        return self.info


@contextmanager
def loop_lock(app: str) -> Iterator[None]:
    """Hold the loop of `app` (a named Ray actor owned by this process: gone when the process is).

    Raises:
        ConflictError: another loop of `app` runs.
    """
    import getpass
    import os
    import socket

    import ray

    name = f"mlplatform-monitor-{app}"
    cls = ray.remote(num_cpus=0)(_Holder)
    try:
        actor = cls.options(name=name, namespace="mlplatform", max_restarts=0).remote(
            f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}", datetime.now(timezone.utc).isoformat()
        )
        ray.get(actor.holder.remote())
    except ValueError:
        try:
            info = ray.get(ray.get_actor(name, namespace="mlplatform").holder.remote(), timeout=10)
        except Exception:
            info = "by another process"
        raise ConflictError(
            f"a monitor loop of {app!r} is already running ({info}); not starting a second one"
        ) from None
    try:
        yield
    finally:
        ray.kill(actor)


def _champion_lineage(client: Any, model: str, champion: str) -> str:
    tags = client.get_model_version(model, champion).tags
    path = tags.get("mlplatform.dataset.path")
    if not path:
        raise DataContractError(
            f"{model} v{champion} (the champion) has no dataset lineage (tag mlplatform.dataset.path): it was not "
            "trained by this platform's pipeline, so there is no training data to compare live traffic with. "
            "Train it with `mlplatform submit pipeline`, or compare tables yourself with `mlplatform drift`."
        )
    try:
        load_version(path)
    except DataContractError as exc:
        raise DataContractError(f"the training data of {model} v{champion} (the champion) is unusable: {exc}") from None
    return path


def run_loop(
    cfg: MonitorConfig,
    *,
    retrain: Retrain,
    rollout: Rollout,
    force: bool = False,
    every: timedelta | None = None,
    control: TrafficControl | None = None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> PassResult:
    """One pass, or (with `every`) a pass every so often until the process is stopped; the loop's lock is held
    throughout. With `every`, a pass that fails is logged and the next one runs (a loop must outlive a hiccup
    of MLflow or Serve); `force` applies to the first pass only.

    Raises:
        ConflictError: a loop of the application is already running.
        DataContractError: the champion has no dataset lineage (one pass).
        PlatformError: the application or its champion cannot be found (one pass).
    """
    control = control or TrafficControl()
    with loop_lock(cfg.app):
        while True:
            started = time.time()
            try:
                result = run_pass(cfg, retrain=retrain, rollout=rollout, force=force, control=control, log=log)
            except PlatformError as exc:
                if every is None:
                    raise
                log(f"monitor pass of {cfg.app!r} failed: {exc}")
            if every is None:
                return result
            force = False
            sleep(max(0.0, every.total_seconds() - (time.time() - started)))


def run_pass(
    cfg: MonitorConfig,
    *,
    retrain: Retrain,
    rollout: Rollout,
    force: bool = False,
    control: TrafficControl | None = None,
    log: Callable[[str], None] = print,
) -> PassResult:
    """One pass of the loop (see the module docstring); the caller holds the loop's lock (`run_loop`).

    Raises:
        DataContractError: the champion has no dataset lineage.
        PlatformError: the application or its champion cannot be found.
    """
    control = control or TrafficControl()
    app = control.served(cfg.app)
    model, uri = app.args.model_name, app.args.tracking_uri
    client = registry.client(uri)
    champion = registry.aliases_of(model, tracking_uri=uri).get(registry.CHAMPION)
    if champion is None:
        raise PlatformError(f"{model!r} has no champion: nothing to watch in {cfg.app!r}")
    reference = _champion_lineage(client, model, champion)
    experiment = client.get_experiment_by_name(MONITOR_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(MONITOR_EXPERIMENT)
    run = client.create_run(
        experiment_id,
        tags={
            "mlflow.runName": f"loop-{cfg.app}",
            "mlplatform.app": cfg.app,
            "mlplatform.model.name": model,
            "mlplatform.champion": champion,
            "mlplatform.reference": reference,
        },
    )
    result = PassResult(cfg.app, run.info.run_id, champion)
    try:
        _pass(cfg, result, client, model, champion, reference, uri, retrain, rollout, force, log)
    except BaseException as exc:
        result.outcome = f"failed: {type(exc).__name__}: {exc}"
        _record(client, result)
        client.set_terminated(result.run_id, "FAILED")
        raise
    _record(client, result)
    client.set_terminated(result.run_id)
    log(result.summary())
    return result


def _pass(
    cfg: MonitorConfig,
    result: PassResult,
    client: Any,
    model: str,
    champion: str,
    reference: str,
    uri: str | None,
    retrain: Retrain,
    rollout: Rollout,
    force: bool,
    log: Callable[[str], None],
) -> None:
    log(f"watching {cfg.app!r}: champion {model} v{champion}, trained on {reference}; window {cfg.window}")
    try:
        found = drift(
            reference,
            f"log:{cfg.app}",
            cfg.drift,
            since=parse_duration(cfg.window),
            log_root=cfg.log_path,
            model=(model, champion),
            tracking_uri=uri,
        )
    except DataContractError as exc:  # e.g. an empty window: no drift can be claimed
        found = None
        log(f"no drift check: {exc}")
        client.set_tag(result.run_id, "mlplatform.drift", f"not checked: {exc}"[:5000])
    if found is not None:
        out = Path(cfg.out_dir or platform_home() / "monitor") / cfg.app / time.strftime("%Y%m%d-%H%M%S")
        files = write_outputs(found, out)
        result.drift_dir, result.verdict = str(out), found["verdict"]
        drift_run = log_to_mlflow(found, files, tracking_uri=uri, parent=result.run_id)
        export_gauges(found, cfg.app)
        log(f"drift: {found['verdict']['message']}; report {files[1]} (MLflow run {drift_run})")
        if cfg.triggers.drift and found["verdict"]["drifted"]:
            top = [
                f"{f} ({found['features'][f]['test']} {found['features'][f]['score']:.3g})"
                for f in found["verdict"]["drifted_features"][:8]
            ]
            result.reasons.append(f"drift: {found['verdict']['message']}: {', '.join(top)}")
        perf = found.get("performance")
        if cfg.triggers.performance and perf and perf.get("drifted"):
            result.reasons.append(f"performance: {perf['message']}")
    if cfg.triggers.schedule:
        created = client.get_model_version(model, champion).creation_timestamp / 1000
        age = time.time() - created
        if age > parse_duration(cfg.triggers.schedule).total_seconds():
            result.reasons.append(f"schedule: the champion is {age / 86400:.1f} days old (> {cfg.triggers.schedule})")
    if force:
        result.reasons.append("forced (--force)")
    if not result.reasons:
        result.outcome = "no action: nothing fired"
        return
    log("retraining because " + "; ".join(result.reasons))
    trained = retrain()
    result.retrained = trained
    log(f"trained {model} v{trained.version} on {trained.dataset}: gate {trained.gate}")
    if registry.CHALLENGER not in trained.aliases:
        result.outcome = f"gate refused v{trained.version}: {trained.gate}"
        return
    rollout_cfg = cfg.rollout.model_copy(update={"app": cfg.app, "canary": trained.version, "promote": True})
    outcome = rollout(rollout_cfg, {"monitor_run": result.run_id, "reasons": result.reasons})
    result.rollout = {
        "succeeded": outcome.succeeded,
        "reason": outcome.reason,
        "stable": outcome.stable,
        "steps": [asdict(s) for s in outcome.steps],
    }
    result.outcome = (
        f"promoted v{trained.version} (rollout passed every step)"
        if outcome.succeeded
        else f"rolled back v{trained.version}: {outcome.reason}"
    )


def _record(client: Any, result: PassResult) -> None:
    tags = {
        "mlplatform.outcome": result.outcome,
        "mlplatform.reasons": "; ".join(result.reasons) or "-",
    }
    if result.retrained:
        tags |= {
            "mlplatform.dataset.path": result.retrained.dataset,
            "mlplatform.trained.version": result.retrained.version,
            "mlplatform.trained.run_id": result.retrained.run_id,
            "mlplatform.gate": result.retrained.gate,
        }
    if result.rollout:
        tags["mlplatform.rollout"] = ("passed" if result.rollout["succeeded"] else "rolled back: ") + (
            "" if result.rollout["succeeded"] else result.rollout["reason"]
        )
    for k, v in tags.items():
        client.set_tag(result.run_id, k, str(v)[:5000])
    if result.verdict:
        client.log_metric(result.run_id, "drift_share", float(result.verdict["share"]))
    client.log_dict(result.run_id, json.loads(json.dumps(asdict(result), default=str)), "pass.json")
