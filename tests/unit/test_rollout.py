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
    assert [e.action for e in history.events] == ["rollout-step"] * 3 + ["rollout-done"]
    assert sim.slept == 90  # one bake per step: 10 % of 10 rps × 30 s = 30 canary requests ≥ 20


def test_a_canary_that_breaches_is_rolled_back_to_the_policy_it_started_from():
    serve, registry, history, sim, config, control = rollout_world()
    sim.error_rate["3"] = 0.3
    result, lines = run(control, config, sim)
    assert not result.succeeded and "canary error rate 30.0%" in result.reason and "failed at 10%" in result.reason
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0, "3": 0.0}
    assert registry.aliases["churn"]["champion"] == "1"
    assert [e.action for e in history.events] == ["rollout-step", "rollout-rollback"]
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
