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
