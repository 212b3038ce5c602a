"""The online champion/challenger test: its error rate holds under continuous peeking, it finds real
differences, and a rollout uses it (a worse canary rolls back; the step to 100 % waits for what it needs)."""

from __future__ import annotations

import numpy as np
import pytest
from mlplatform.monitor.online import msprt, per_request_loss
from mlplatform.release.config import OnlineTestConfig

from tests.unit.test_rollout import rollout_world


def test_alpha_holds_when_looking_after_every_batch():
    """Under H0 (same quality), looking after every 20 labels up to 2 000, the test rejects in ≤ α of runs —
    where a naive fixed-sample z-test looked at as often rejects several times more."""
    cfg = OnlineTestConfig(alpha=0.05, tau=0.1, min_labels=20)
    g = np.random.default_rng(0)
    runs, rejected, naive = 300, 0, 0
    for _ in range(runs):
        a, b = g.exponential(0.5, 2000), g.exponential(0.5, 2000)  # log losses of two equal models
        hit = naive_hit = False
        for n in range(20, 2001, 20):
            ev = msprt(a[:n], b[:n], cfg)
            hit |= ev.decision in ("worse", "better")
            z = (a[:n].mean() - b[:n].mean()) / np.sqrt(a[:n].var(ddof=1) / n + b[:n].var(ddof=1) / n)
            naive_hit |= abs(z) > 1.96
        rejected += hit
        naive += naive_hit
    assert rejected / runs <= 0.05 + 0.02  # α plus Monte Carlo slack
    assert naive / runs > 2 * max(rejected / runs, 0.05)


def test_a_clearly_worse_canary_is_found_with_few_labels():
    g = np.random.default_rng(1)
    y = g.integers(0, 2, 400).astype(float)
    good = np.clip(y * 0.8 + 0.1 + g.normal(0, 0.05, 400), 0.01, 0.99)
    flipped = 1 - good  # a model trained on inverted labels
    cfg = OnlineTestConfig()
    ev = msprt(per_request_loss(y[:60], flipped[:60]), per_request_loss(y[:200], good[:200]), cfg)
    assert ev.decision == "worse" and ev.low > 0 and "worse by" in ev.message
    better = msprt(per_request_loss(y[:200], good[:200]), per_request_loss(y[:60], flipped[:60]), cfg)
    assert better.decision == "better"


def test_the_same_model_is_inconclusive_and_few_labels_say_so():
    g = np.random.default_rng(2)
    loss = g.exponential(0.4, 500)
    cfg = OnlineTestConfig()
    assert msprt(loss[:250], loss[250:], cfg).decision == "inconclusive"
    few = msprt(loss[:5], loss[5:100], cfg)
    assert few.decision == "too few labels" and "needs 30" in few.message
    assert msprt(np.zeros(50), np.zeros(50), cfg).decision == "inconclusive"  # no variance at all


def test_losses():
    y, p = np.array([1.0, 0.0]), np.array([0.8, 0.0])
    assert per_request_loss(y, p) == pytest.approx([-np.log(0.8), -np.log(1 - 1e-6)])
    assert per_request_loss(y, p, "brier") == pytest.approx([0.04, 0.0])


# ------------------------------------------------------------------------------------- in a rollout


def judge_saying(*decisions):
    """A fake judge answering `decisions` in turn (the last one repeats), recording its calls."""
    calls = []

    def judge(canary, stable, since):
        calls.append((canary, stable))
        d = decisions[min(len(calls) - 1, len(decisions) - 1)]
        return {"decision": d, "message": f"it says {d}"}

    return judge, calls


def run_online(judge, **online):
    from mlplatform.release.rollout import run_rollout

    serve, registry, history, sim, config, control = rollout_world(
        online_test={"min_labels": 10, **online}, max_wait_s=90
    )
    lines = []
    result = run_rollout(config, control, sim.read, sleep=sim.sleep, log=lines.append, online=judge, origin={"x": 1})
    return result, history, registry, lines


def test_a_canary_the_online_test_finds_worse_is_rolled_back():
    judge, calls = judge_saying("inconclusive", "worse")
    result, history, registry, _ = run_online(judge)
    assert not result.succeeded and "online test: it says worse" in result.reason and "failed at 50%" in result.reason
    assert [s.online["decision"] for s in result.steps] == ["inconclusive", "worse"]
    assert history.events[-1].action == "rollout-rollback" and registry.aliases["churn"]["champion"] == "1"
    assert history.events[0].rollout["origin"] == {"x": 1} and calls[0] == ("3", "1")


def test_the_step_to_full_traffic_waits_for_labels_then_goes():
    judge, calls = judge_saying("inconclusive", "too few labels", "too few labels", "inconclusive")
    result, history, _, lines = run_online(judge)
    # step 10; step 50 asked three times (twice too few labels); step 100 checks for "worse" once more
    assert result.succeeded and len(calls) == 5
    assert any("waiting for more labels" in ln for ln in lines)


def test_require_better_rolls_back_a_canary_never_shown_better():
    judge, _ = judge_saying("inconclusive")
    result, history, _, _ = run_online(judge, require="better")
    assert not result.succeeded and "needs better" in result.reason and "after 90s" in result.reason
    judge, _ = judge_saying("inconclusive", "better")
    assert run_online(judge, require="better")[0].succeeded


def test_an_online_test_needs_a_step_before_full_traffic():
    from mlplatform.release.config import RolloutConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give a step before 100"):
        RolloutConfig(app="a", canary="2", steps=[100], online_test={})
