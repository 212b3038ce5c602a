"""Rollout configs and the per-window judgement (no Ray)."""

from __future__ import annotations

import math

import pytest
from mlplatform.release.config import RolloutConfig
from mlplatform.release.rollout import judge
from mlplatform.serve.metrics import VersionStats
from pydantic import ValidationError

CFG = RolloutConfig(app="churn", canary="3", max_error_rate_increase=0.02, max_p99_ratio=1.5, p99_slack_ms=5)


def stats(requests, errors=0, p99_bucket=10.0):
    # Every request in one latency bucket, so p99 is that bucket's interpolated 99th percentile.
    return VersionStats(requests, errors, {p99_bucket: requests, math.inf: requests})


def test_healthy_canary_passes():
    assert judge(stats(100, 1), stats(1000, 5), CFG) is None


def test_error_rate_breach_names_the_numbers():
    why = judge(stats(100, 10), stats(1000, 10), CFG)
    assert why == "canary error rate 10.0% (10/100) exceeds the stable 1.0% by more than 2.0%"


def test_latency_breach_uses_ratio_and_slack():
    assert judge(stats(100, p99_bucket=100), stats(1000, p99_bucket=10), CFG).startswith("canary p99 99.0 ms exceeds")
    # 12 ms vs 10 ms is 1.2×; and tiny absolute differences never count.
    assert judge(stats(100, p99_bucket=12), stats(1000, p99_bucket=10), CFG) is None
    assert judge(stats(100, p99_bucket=2.9), stats(1000, p99_bucket=1), CFG) is None


def test_without_stable_traffic_only_errors_are_judged():
    assert judge(stats(100, 0, p99_bucket=500), None, CFG) is None
    assert "exceeds the stable 0.0%" in judge(stats(100, 5), None, CFG)


@pytest.mark.parametrize(
    "steps,needle",
    [
        ([10, 5, 100], "must increase"),
        ([10, 50], "last step must be 100"),
        ([0, 100], "in (0, 100]"),
        ([], "at least 1"),
    ],
)
def test_bad_steps_are_refused(steps, needle):
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        RolloutConfig(app="a", canary="2", steps=steps)


# ------------------------------------------------------------------------------ the loop, with fakes


def rollout_world(**cfg):
    from mlplatform.release.traffic import TrafficControl

    from tests.unit.fakes import FakeHistory, FakeRegistry, FakeServe, TrafficSim, app_config

    serve = FakeServe(churn=app_config({"1": 90.0, "2": 10.0}))
    registry = FakeRegistry({"churn": ["1", "2", "3"]}, {"churn": {"champion": "1", "challenger": "3"}})
    history = FakeHistory()
    control = TrafficControl(serve, registry=registry, history=history)
    sim = TrafficSim(serve, rps=10)
    config = RolloutConfig(**{"app": "churn", "canary": "challenger", "steps": [10, 50, 100], "bake_s": 30, **cfg})
    return serve, registry, history, sim, config, control


def run(control, config, sim):
    from mlplatform.release.rollout import run_rollout

    lines = []
    return run_rollout(config, control, sim.read, sleep=sim.sleep, log=lines.append), lines


def test_a_healthy_canary_is_rolled_out_step_by_step_and_promoted():
    serve, registry, history, sim, config, control = rollout_world(min_requests=20)
    result, lines = run(control, config, sim)
    assert result.succeeded and result.canary == "3" and result.stable == "1"
    assert [s.percent for s in result.steps] == [10, 50, 100] and {s.verdict for s in result.steps} == {"pass"}
    assert serve.policy()["weights"] == {"1": 0.0, "2": 0.0, "3": 100.0}
    assert registry.aliases["churn"]["champion"] == "3" and registry.aliases["churn"]["previous"] == "1"
    assert [e.action for e in history.events] == ["rollout-start"] + ["rollout-step"] * 3 + ["rollout-done"]
    assert sim.slept == 90  # one bake per step: 10 % of 10 rps × 30 s = 30 canary requests ≥ 20


def test_a_canary_that_breaches_is_rolled_back_to_the_policy_it_started_from():
    serve, registry, history, sim, config, control = rollout_world()
    sim.error_rate["3"] = 0.3
    result, lines = run(control, config, sim)
    assert not result.succeeded and "canary error rate 30.0%" in result.reason and "failed at 10%" in result.reason
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0, "3": 0.0}
    assert registry.aliases["churn"]["champion"] == "1"
    assert [e.action for e in history.events] == ["rollout-start", "rollout-step", "rollout-rollback"]
    assert lines[-1].startswith("rolling back:")


def test_a_slow_canary_is_rolled_back_on_its_p99():
    _, _, _, sim, config, control = rollout_world()
    sim.latency_ms.update({"1": 5, "3": 100})
    result, _ = run(control, config, sim)
    assert not result.succeeded and "canary p99" in result.reason


def test_a_step_without_enough_canary_traffic_waits_then_rolls_back():
    _, _, history, sim, config, control = rollout_world(min_requests=1000, max_wait_s=60)
    result, _ = run(control, config, sim)
    assert not result.succeeded and "only 60 canary requests in 60s at 10% (need 1000)" in result.reason
    assert sim.slept == 60 and history.events[-1].action == "rollout-rollback"


def test_without_promote_the_aliases_stay():
    _, registry, history, sim, config, control = rollout_world(promote=False)
    result, _ = run(control, config, sim)
    assert result.succeeded and registry.aliases["churn"]["champion"] == "1"
    assert history.events[-1].action == "rollout-done"


def test_unusable_rollouts_change_nothing():
    from mlplatform.errors import PlatformError, RegistryError

    serve, _, history, sim, config, control = rollout_world(canary="champion")
    with pytest.raises(PlatformError, match="same version"):
        run(control, config.model_copy(update={"stable": "1"}), sim)
    with pytest.raises(RegistryError):
        run(control, config.model_copy(update={"canary": "v9"}), sim)
    assert serve.applied == [] and history.events == []


# -------------------------------------------------- a rollout is state in the log: killed, resumed, aborted


class Killed(BaseException):
    """The rollout's process dies (SIGKILL): nothing after this point of the loop runs."""


def dying_world(kill_at_step: float, **cfg):
    serve, registry, history, sim, config, control = rollout_world(**cfg)
    history.clock = control.clock = lambda: sim.slept
    steps_seen = []

    def sleep(seconds):
        current = serve.policy()["weights"].get("3", 0.0)
        if current == kill_at_step:
            steps_seen.append(current)
            if len(steps_seen) > 2:  # a little into the step's bake
                raise Killed()
        sim.sleep(seconds)

    return serve, registry, history, sim, config, control, sleep


@pytest.mark.parametrize("step", [10, 50, 100])
def test_a_rollout_killed_at_any_step_shows_in_status_and_resumes_from_there(step):
    from mlplatform.release.rollout import run_rollout

    serve, registry, history, sim, config, control, sleep = dying_world(step)
    with pytest.raises(Killed):
        run_rollout(config, control, sim.read, sleep=sleep, log=lambda _: None)
    state = control.rollout("churn")
    assert state is not None and state.step == step and state.canary == "3" and state.alive(sim.slept)
    sim.sleep(120)  # its heartbeat stops
    assert not control.rollout("churn").alive(sim.slept)
    result = run_rollout(
        RolloutConfig(**state.config),
        control,
        sim.read,
        sleep=sim.sleep,
        log=lambda _: None,
        resume=control.rollout("churn"),
    )
    assert result.succeeded and [s.percent for s in result.steps] == [p for p in (10, 50, 100) if p >= step]
    assert control.rollout("churn") is None and registry.aliases["churn"]["champion"] == "3"
    steps = [e.rollout["step"] for e in history.events if e.action == "rollout-step"]
    assert steps == [p for p in (10, 50, 100) if p <= step] + [p for p in (10, 50, 100) if p >= step]


@pytest.mark.parametrize("step", [10, 50, 100])
def test_a_rollout_killed_at_any_step_is_aborted_back_to_where_it_started(step):
    from mlplatform.release.rollout import run_rollout

    serve, registry, history, sim, config, control, sleep = dying_world(step)
    with pytest.raises(Killed):
        run_rollout(config, control, sim.read, sleep=sleep, log=lambda _: None)
    event = control.abort_rollout("churn", reason="drill")
    assert event.action == "rollout-abort" and control.rollout("churn") is None
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0, "3": 0.0}
    assert registry.aliases["churn"]["champion"] == "1"


def test_the_next_change_undoes_a_dead_rollout_and_is_refused_during_a_live_one():
    from mlplatform.errors import ConflictError
    from mlplatform.release.rollout import run_rollout

    serve, _, history, sim, config, control, sleep = dying_world(50)
    with pytest.raises(Killed):
        run_rollout(config, control, sim.read, sleep=sleep, log=lambda _: None)
    with pytest.raises(ConflictError, match="is being rolled out .* at step 50%"):
        control.set_traffic("churn", shadow={"version": "2"})  # its heartbeat is fresh: it may be baking
    sim.sleep(120)
    control.set_traffic("churn", shadow={"version": "2"}, reason="after")
    assert [e.action for e in history.events][-2:] == ["rollout-abort", "traffic"]
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0, "3": 0.0} and serve.policy()["shadow"]["version"] == "2"


def test_an_abort_stops_a_live_rollout_at_its_next_step():
    from mlplatform.errors import PlatformError
    from mlplatform.release.rollout import run_rollout

    serve, _, history, sim, config, control, _ = dying_world(999)
    aborted = []

    def sleep(seconds):
        if serve.policy()["weights"].get("3") == 10 and not aborted:
            aborted.append(control.abort_rollout("churn", reason="operator"))
        sim.sleep(seconds)

    with pytest.raises(PlatformError, match="was stopped by someone else"):
        run_rollout(config, control, sim.read, sleep=sleep, log=lambda _: None)
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0, "3": 0.0}
    assert history.events[-1].action == "rollout-abort"


def test_pinned_requests_are_left_out_of_what_a_rollout_judges():
    from mlplatform.serve.metrics import version_stats

    samples = [
        ("ray_mlplatform_requests_total", {"model": "m", "version": "3", "code": "200", "route": "weighted"}, 10.0),
        ("ray_mlplatform_requests_total", {"model": "m", "version": "3", "code": "503", "route": "pinned"}, 90.0),
        ("ray_mlplatform_requests_total", {"model": "m", "version": "3", "code": "200", "route": "sticky"}, 5.0),
    ]
    stats = version_stats(samples, "m")["3"]
    assert stats.requests == 15 and stats.errors == 0
