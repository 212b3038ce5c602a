"""Progressive rollout: move traffic to a canary step by step, judge each step, roll back on a breach.

At each step (e.g. 1 → 10 → 50 → 100 %) the canary's share is set live (`TrafficControl.apply_policy`), the step
bakes for ``bake_s`` on real traffic, and the canary's error rate and p99 latency over exactly that window
are compared with the stable version's. Both come from the router's per-version Prometheus metrics,
scraped from every node (`serve.metrics`), so the judgement covers every router replica. A breach — or a
step that never sees enough canary traffic to be judged — restores the traffic policy the rollout started
from and records why. Every step lands in the deployment history, and the rollout itself is state there:
a rollout whose process died can be resumed or is undone (see `run_rollout`).

Runs where node metrics are reachable: as a Ray job (`mlplatform submit rollout --config ...`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlplatform.errors import PlatformError
from mlplatform.release.config import RolloutConfig
from mlplatform.release.traffic import RolloutState, TrafficControl, epoch_of, new_rollout_id, promotion_aliases
from mlplatform.serve.metrics import VersionStats, metrics_urls, scrape

__all__ = ["RolloutResult", "StepReport", "StatsReader", "OnlineJudge", "judge", "run_rollout", "cluster_stats"]

#: version → cumulative stats, read from wherever the metrics live.
StatsReader = Callable[[], dict[str, VersionStats]]

#: ``(canary, stable, since_epoch) -> evidence``: what the online test says about labelled live quality since
#: the rollout began (a dict with ``decision``: worse | better | inconclusive | too few labels, and ``message``).
#: The monitoring layer provides it (`mlplatform.monitor.online.log_judge`); releases do not read logs.
OnlineJudge = Callable[[str, str, float], dict[str, Any]]


@dataclass(frozen=True)
class StepReport:
    percent: float
    canary: dict[str, float]
    stable: dict[str, float]
    verdict: str  # "pass", or why the step failed
    online: dict[str, Any] | None = None  # what the online test saw, when there is one


@dataclass
class RolloutResult:
    app: str
    canary: str
    stable: str
    succeeded: bool
    reason: str = ""
    steps: list[StepReport] = field(default_factory=list)


def _summary(s: VersionStats) -> dict[str, float]:
    p99 = s.latency_quantile(0.99)
    return {
        "requests": s.requests,
        "errors": s.errors,
        "error_rate": round(s.error_rate, 4),
        "p99_ms": round(p99, 2) if not math.isnan(p99) else math.nan,
    }


def judge(canary: VersionStats, stable: VersionStats | None, cfg: RolloutConfig) -> str | None:
    """Why the canary breaches its budget over one window, or None when it is healthy.

    With no stable traffic in the window (the last step sends it none), the stable baseline is the last
    window that had some; with none at all, only the canary's own error rate is judged (against 0).
    """
    base_rate = stable.error_rate if stable is not None and stable.requests else 0.0
    if canary.error_rate > base_rate + cfg.max_error_rate_increase:
        return (
            f"canary error rate {canary.error_rate:.1%} ({canary.errors:g}/{canary.requests:g}) exceeds the stable "
            f"{base_rate:.1%} by more than {cfg.max_error_rate_increase:.1%}"
        )
    if stable is not None and stable.requests:
        c99, s99 = canary.latency_quantile(0.99), stable.latency_quantile(0.99)
        if not (math.isnan(c99) or math.isnan(s99)):
            limit = max(s99 * cfg.max_p99_ratio, s99 + cfg.p99_slack_ms)
            if c99 > limit:
                return (
                    f"canary p99 {c99:.1f} ms exceeds {limit:.1f} ms (stable p99 {s99:.1f} ms × {cfg.max_p99_ratio:g})"
                )
    return None


#: Seconds between two heartbeats of a running rollout (its lease is `ROLLOUT_LEASE_S`).
HEARTBEAT_S = 5.0


def run_rollout(
    cfg: RolloutConfig,
    control: TrafficControl,
    read_stats: StatsReader,
    *,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
    resume: RolloutState | None = None,
    online: OnlineJudge | None = None,
    origin: dict[str, Any] | None = None,
) -> RolloutResult:
    """Roll `cfg.canary` out in `cfg.app`; returns what happened (a rollback is a result, not an error).

    A rollout is state in the application's log, not a loop in a process: ``rollout-start`` records its config
    and the policy it started from, each step is a change of its own, and the process beats a heartbeat while
    it bakes. If the process dies, `mlplatform rollout status` shows where it was, `resume` continues it from
    that step (`resume`), and `abort` — or the next change anyone makes — restores the starting policy.

    Args:
        cfg: the rollout.
        control: how traffic is read and changed (and where aliases and the log live).
        read_stats: cumulative per-version stats, read before and after each step's bake.
        sleep: waits (tests pass a fake clock).
        log: one line per step.
        resume: an interrupted rollout (`TrafficControl.rollout`) to continue from its current step.
        online: the online test's judge, used when ``cfg.online_test`` is set: a canary significantly worse rolls
            back at any step, and the step before 100 % waits (up to max_wait_s) until ``require`` holds.
        origin: what started the rollout (e.g. ``{"monitor_run": ...}``), kept in its rollout-start event.

    Raises:
        PlatformError: the application, canary or stable version is unusable (nothing was changed), or
            someone aborted the rollout while it ran.
        ConflictError: another rollout is running in the application.
    """
    app = control.served(cfg.app)
    model, uri = app.args.model_name, app.args.tracking_uri
    if resume is not None:
        rollout_id, canary, stable, start_policy = resume.id, resume.canary, resume.stable, resume.start_policy
        done = [p for p in cfg.steps if resume.step is not None and p < resume.step]
        began = epoch_of(resume.started_at) or time.time()
        log(f"resuming rollout {rollout_id} of v{canary} in {cfg.app!r} at step {resume.step or cfg.steps[0]:g}%")
    else:
        canary = control.resolve(model, cfg.canary, tracking_uri=uri)
        start_policy = app.policy.model_dump(mode="json", exclude_none=True)
        if cfg.stable is not None:
            stable = control.resolve(model, cfg.stable, tracking_uri=uri)
        else:
            candidates = {v: w for v, w in app.policy.weights.items() if v != canary and w > 0}
            if not candidates:
                raise PlatformError(f"no stable version with traffic in {cfg.app!r} besides the canary v{canary}")
            stable = max(candidates, key=candidates.__getitem__)
        if stable == canary:
            raise PlatformError(f"canary and stable are the same version ({canary})")
        rollout_id, done, began = new_rollout_id(), [], time.time()
        control.apply_policy(
            cfg.app,
            start_policy,
            action="rollout-start",
            reason=f"rollout of v{canary} against v{stable}: steps {cfg.steps} %, bake {cfg.bake_s:g}s"
            + (f" (monitor run {origin['monitor_run']})" if origin and origin.get("monitor_run") else ""),
            rollout={
                "id": rollout_id,
                "canary": canary,
                "stable": stable,
                "config": cfg.model_dump(mode="json"),
                "start": start_policy,
                **({"origin": origin} if origin else {}),
            },
        )
        log(f"rollout {rollout_id} of v{canary} in {cfg.app!r} against v{stable}: steps {cfg.steps} %")
    tag = {"id": rollout_id}

    def beat() -> None:
        control.history.heartbeat(cfg.app, rollout_id, tracking_uri=uri)

    def bake(seconds: float) -> None:
        """Wait, saying every few seconds that this rollout is alive."""
        left = seconds
        while left > 0:
            beat()
            step = min(HEARTBEAT_S, left)
            sleep(step)
            left -= step
        beat()

    result = RolloutResult(cfg.app, canary, stable, succeeded=False)
    keep = {k: v for k, v in start_policy.items() if k != "weights"}
    if keep.get("shadow", {}).get("version") == canary:
        keep.pop("shadow")  # the canary now answers clients; mirroring it to itself means nothing
    baseline: VersionStats | None = None
    max_wait = cfg.max_wait_s if cfg.max_wait_s is not None else 4 * cfg.bake_s

    def restore(reason: str) -> RolloutResult:
        log(f"rolling back: {reason}")
        control.apply_policy(cfg.app, start_policy, action="rollout-rollback", reason=reason, rollout=tag)
        result.reason = reason
        return result

    beat()
    for percent in [p for p in cfg.steps if p not in done]:
        weights = {stable: 100.0 - percent, canary: percent} if percent < 100 else {canary: 100.0}
        control.apply_policy(
            cfg.app,
            {**keep, "weights": weights},
            action="rollout-step",
            reason=f"rollout of v{canary}: step {percent:g}%",
            rollout={**tag, "step": percent},
        )
        before = read_stats()
        bake(cfg.bake_s)
        waited = cfg.bake_s
        while True:
            now = read_stats()
            window_c = now.get(canary, VersionStats()).minus(before.get(canary, VersionStats()))
            window_s = now.get(stable, VersionStats()).minus(before.get(stable, VersionStats()))
            if window_c.requests >= cfg.min_requests or waited >= max_wait:
                break
            bake(min(cfg.bake_s, max_wait - waited))
            waited += cfg.bake_s
        if window_s.requests >= cfg.min_requests:
            baseline = window_s
        if window_c.requests < cfg.min_requests:
            verdict = (
                f"only {window_c.requests:g} canary requests in {waited:g}s at {percent:g}% (need {cfg.min_requests})"
            )
        else:
            verdict = judge(window_c, baseline, cfg) or "pass"
        evidence = None
        if verdict == "pass" and cfg.online_test is not None and online is not None:
            last_before_full = percent < 100 and [p for p in cfg.steps if p > percent] == [100]
            while True:
                evidence = online(canary, stable, began)
                verdict = _online_verdict(evidence, cfg, final=last_before_full)
                if verdict != "wait" or waited >= max_wait:
                    break
                log(f"  step {percent:5.1f}%  online test: {evidence['message']}; waiting for more labels")
                bake(min(cfg.bake_s, max_wait - waited))
                waited += cfg.bake_s
            if verdict == "wait":
                verdict = f"online test after {waited:g}s: {evidence['message']} (needs {cfg.online_test.require})"
        report = StepReport(percent, _summary(window_c), _summary(window_s), verdict, evidence)
        result.steps.append(report)
        online_note = f"  online: {evidence['decision']}" if evidence else ""
        log(f"  step {percent:5.1f}%  canary {report.canary}  stable {report.stable}{online_note}  → {verdict}")
        if verdict != "pass":
            return restore(f"rollout of v{canary} failed at {percent:g}%: {verdict}")

    aliases = control.registry.aliases_of(model, tracking_uri=uri)
    control.apply_policy(
        cfg.app,
        {**keep, "weights": {canary: 100.0}},
        action="rollout-done",
        reason=f"rollout of v{canary} passed every step",
        move_aliases=promotion_aliases(aliases, canary) if cfg.promote else {},
        rollout=tag,
    )
    result.succeeded = True
    result.reason = "passed every step"
    log(f"rollout of v{canary} done: 100% of {cfg.app!r}")
    return result


def _online_verdict(evidence: dict[str, Any], cfg: RolloutConfig, *, final: bool) -> str:
    """ "pass", "wait" (for more labels), or why the online test stops the rollout."""
    assert cfg.online_test is not None
    decision = evidence.get("decision")
    if decision == "worse":
        return f"online test: {evidence['message']}"
    if not final:
        return "pass"
    if cfg.online_test.require == "better":
        return "pass" if decision == "better" else "wait"
    return "wait" if decision == "too few labels" else "pass"


def cluster_stats(model: str) -> StatsReader:
    """A reader of `model`'s per-version stats from every node of the connected Ray cluster."""

    def read() -> dict[str, Any]:
        return scrape(metrics_urls(), model)

    return read
