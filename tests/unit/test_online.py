"""The online champion/challenger test: its error rate holds under continuous peeking, it finds real
differences, and a rollout uses it (a worse canary rolls back; the step to 100 % waits for what it needs)."""

from __future__ import annotations

import numpy as np
import pytest
from mlplatform.errors import ConfigError
from mlplatform.monitor.online import loss_for, msprt, per_request_loss
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


def test_losses_follow_the_task():
    probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    y = np.array([1.0, 2.0])  # class indices
    assert per_request_loss(y, y, "logloss", probabilities) == pytest.approx([-np.log(0.7), -np.log(0.25)])
    assert per_request_loss(y, y, "brier", probabilities) == pytest.approx([0.14, 0.25 + 0.0625 + 0.5625])
    values, truth = np.array([10.0, 7.0]), np.array([12.0, 7.5])
    assert per_request_loss(truth, values, "squared_error") == pytest.approx([4.0, 0.25])
    assert per_request_loss(truth, values, "absolute_error") == pytest.approx([2.0, 0.5])
    assert loss_for("regression", OnlineTestConfig()) == "squared_error"
    assert loss_for("multiclass", OnlineTestConfig()) == "logloss"
    with pytest.raises(ConfigError, match="'logloss' does not suit a regression model"):
        loss_for("regression", OnlineTestConfig(metric="logloss"))


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_judge_reads_a_real_log_of_each_task(tmp_path, task):
    """Versions 1 (close to the truth) and 2 (far from it) answer live traffic; labels come back through
    feedback; the judge, reading the log the endpoint wrote, finds version 2 worse and 1 better."""
    import time

    from mlplatform.monitor.online import log_judge

    from tests.unit.test_inference_log import SPECIES, ClassHandle, FakeHandle, call, feedback, make_task

    rng = np.random.default_rng(0)
    rows = [{"a": float(a), "b": 2.0} for a in rng.integers(0, 10, 160)]
    if task == "multiclass":  # the truth is always "setosa"
        good, bad = ClassHandle("1", (0.8, 0.1, 0.1)), ClassHandle("2", (0.2, 0.7, 0.1))
        truth = ["setosa"] * len(rows)
    else:  # the truth is a + b and some noise; version 1 answers a + b, version 2 1.3 × (a + b)
        good, bad = FakeHandle("1", 1.0), FakeHandle("2", 1.3)
        truth = [r["a"] + r["b"] + float(e) for r, e in zip(rows, rng.normal(scale=0.5, size=len(rows)), strict=True)]
    log, app = make_task(tmp_path, task, SPECIES if task == "multiclass" else [], good, bad)
    since = time.time() - 1
    rids = [call(app, "POST", "/v1/models/m:predict", {"instances": [row]})[1]["x-request-id"] for row in rows]
    labels = [{"request_id": r, "label": y} for r, y in zip(rids, truth, strict=True)]
    assert feedback(app, labels)[2]["counts"] == {"accepted": 160}
    log.flush()
    judge = log_judge("app", OnlineTestConfig(), root=str(tmp_path / "log"), task=task)
    worse = judge("2", "1", since)
    assert worse["decision"] == "worse", worse["message"]
    assert judge("1", "2", since)["decision"] == "better"
    assert ("logloss" if task == "multiclass" else "squared_error") in worse["message"]


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
