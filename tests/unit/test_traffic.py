"""TrafficControl through its injected dependencies: Serve's REST API, the registry and the history (no Ray)."""

from __future__ import annotations

import pytest
from mlplatform.errors import ConfigError, ConflictError, PlatformError, RegistryError
from mlplatform.release.history import Event
from mlplatform.release.traffic import Plan, TrafficControl

from tests.unit.fakes import FakeHistory, FakeRegistry, FakeServe, app_config


@pytest.fixture
def world():
    serve = FakeServe(churn=app_config({"1": 90.0, "2": 10.0}))
    registry = FakeRegistry({"churn": ["1", "2", "3", "4"]}, {"churn": {"champion": "1", "challenger": "2"}})
    history = FakeHistory()
    return serve, registry, history, TrafficControl(serve, registry=registry, history=history)


def test_served_reads_the_deployed_policy(world):
    serve, _, _, control = world
    app = control.served("churn")
    assert app.versions == ["1", "2"] and app.router == "churn-router"
    assert app.policy.weights == {"1": 90.0, "2": 10.0}
    with pytest.raises(PlatformError, match="no Serve application 'nope'"):
        control.served("nope")


def test_set_traffic_changes_weights_keeps_the_rest_and_records_it(world):
    serve, _, history, control = world
    control.set_traffic("churn", shadow={"version": "2", "percent": 50}, reason="mirror")
    event = control.set_traffic("churn", {"v1": 50, "2": 50}, reason="even split")
    assert serve.policy() == {
        "weights": {"1": 50.0, "2": 50.0},
        "shadow": {"version": "2", "percent": 50.0, "timeout_s": 1.0},
    }
    assert event.action == "traffic" and event.reason == "even split"
    assert event.aliases == {"champion": "1", "challenger": "2"}
    assert [e.reason for e in history.events] == ["mirror", "even split"]


def test_faults_are_merged_and_cleared(world):
    serve, _, _, control = world
    control.set_traffic("churn", faults={"v2": {"abort_percent": 40}})
    assert serve.policy()["faults"] == {"2": {"abort_percent": 40.0, "status": 503}}
    control.set_traffic("churn", faults={"2": None})
    assert serve.policy().get("faults", {}) == {}
    control.set_traffic("churn", faults={"1": {"abort_percent": 5}, "2": {"abort_percent": 5}})
    control.set_traffic("churn", clear_faults=True)
    assert serve.policy().get("faults", {}) == {}


@pytest.mark.parametrize(
    "weights,error,needle",
    [
        ({"1": 50, "2": 40}, ConfigError, "weights must sum to 100"),
        ({"1": 150, "2": -50}, ConfigError, "must be a number in 0..100"),
        ({"1": 50, "9": 50}, RegistryError, "no version '9'"),
    ],
)
def test_a_refused_change_changes_nothing(world, weights, error, needle):
    serve, _, history, control = world
    with pytest.raises(error, match=needle):
        control.set_traffic("churn", weights)
    assert serve.applied == [] and history.events == []
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0}


def test_a_new_version_comes_up_without_traffic_first(world):
    serve, _, _, control = world
    control.set_traffic("churn", {"1": 80, "2": 10, "3": 10})
    first, second = serve.applied
    assert [v["version"] for v in first["args"]["versions"]] == ["1", "2", "3"]
    assert first["deployments"][-1]["user_config"]["weights"] == {"1": 90.0, "2": 10.0}  # v3: 0 by omission
    assert second["deployments"][-1]["user_config"]["weights"] == {"1": 80.0, "2": 10.0, "3": 10.0}


def test_a_version_that_cannot_deploy_gets_no_traffic_and_the_old_config_returns(world):
    serve, _, history, control = world
    serve.broken = {"4"}
    with pytest.raises(PlatformError, match="v4 of 'churn' failed to deploy, so 'churn' keeps its previous traffic"):
        control.set_traffic("churn", {"1": 80, "2": 10, "4": 10})
    assert [v["version"] for v in serve.apps["churn"]["deployed_app_config"]["args"]["versions"]] == ["1", "2"]
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0}
    (failed,) = history.events  # the intent was logged first; it is marked failed, nothing else changed
    assert failed.status.startswith("failed: ") and "DEPLOY_FAILED" in failed.status


def test_every_put_of_the_serve_config_holds_the_clusters_lock(world):
    """Serve replaces every application with each PUT: a change to another application at the same moment
    would be put back stale, so each put reads the others and writes under one cluster-wide lock."""
    serve, _, history, control = world
    held, put = [], serve.apply

    def apply(config, **kwargs):
        held.append(history.lock.locked())
        return put(config, **kwargs)

    serve.apply = apply
    control.set_traffic("churn", {"1": 50, "2": 50})
    control.set_traffic("churn", {"1": 50, "2": 40, "3": 10})  # a new version: two puts
    serve.broken = {"4"}
    with pytest.raises(PlatformError):
        control.set_traffic("churn", {"1": 80, "2": 10, "4": 10})  # a failed version: its config put back
    control.rollback("churn")
    assert len(held) == 6 and all(held) and history.locks == 6


def test_promote_moves_the_champion_and_keeps_the_previous_one(world):
    serve, registry, _, control = world
    event = control.promote("churn", "v2")
    assert serve.policy()["weights"] == {"1": 0.0, "2": 100.0}
    # The challenger alias leaves the new champion: champion + challenger can be deployed again.
    assert registry.aliases["churn"] == {"champion": "2", "previous": "1"}
    assert event.action == "promote" and event.aliases["champion"] == "2"


def test_rollback_restores_weights_and_aliases_and_twice_undoes_itself(world):
    serve, registry, _, control = world
    control.set_traffic("churn", {"1": 90, "2": 10}, reason="baseline")
    control.promote("churn", "2")
    control.rollback("churn")
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0}
    assert registry.aliases["churn"]["champion"] == "1"
    control.rollback("churn")  # as `kubectl rollout undo`: back to the promoted state
    assert serve.policy()["weights"] == {"1": 0.0, "2": 100.0}
    assert registry.aliases["churn"]["champion"] == "2"


def test_rollback_without_an_earlier_state_says_so(world):
    _, _, _, control = world
    with pytest.raises(PlatformError, match="no deployment history"):
        control.rollback("churn")
    control.set_traffic("churn", {"1": 90, "2": 10})
    with pytest.raises(PlatformError, match="no earlier state"):
        control.rollback("churn")


def test_an_app_deployed_with_aliases_is_pinned_on_first_read(world):
    serve, _, _, control = world
    config = app_config({"1": 90.0, "2": 10.0})
    config["args"]["versions"] = [{"alias": "champion", "weight": 90}, {"alias": "challenger", "weight": 10}]
    config["deployments"] = []
    serve.apps["churn"]["deployed_app_config"] = config
    app = control.served("churn")
    assert app.versions == ["1", "2"] and app.policy.weights == {"1": 90.0, "2": 10.0}
    control.set_traffic("churn", {"1": 70, "2": 30})
    assert [v["version"] for v in serve.apps["churn"]["deployed_app_config"]["args"]["versions"]] == ["1", "2"]


def test_resolve_takes_versions_and_aliases(world):
    _, _, _, control = world
    assert control.resolve("churn", "v3") == "3"
    assert control.resolve("churn", "champion") == "1"
    with pytest.raises(RegistryError):
        control.resolve("churn", "v9")


# ------------------------------------------------------------------ one writer: compare-and-set, intents


def test_a_change_that_lost_the_race_is_replanned_on_the_winner_and_nothing_is_lost(world):
    serve, _, history, control = world
    other = TrafficControl(serve, registry=control.registry, history=history)
    # Between our read and our claim, another writer sets a shadow: our claim of that change number fails,
    # we read again and set our weights on top of its shadow.
    history.before_claim = lambda: other.set_traffic("churn", shadow={"version": "2"}, reason="theirs")
    control.set_traffic("churn", {"1": 50, "2": 50}, reason="ours")
    assert serve.policy()["weights"] == {"1": 50.0, "2": 50.0} and serve.policy()["shadow"]["version"] == "2"
    assert [(e.seq, e.reason) for e in history.events] == [(1, "theirs"), (2, "ours")]


def test_twenty_rounds_of_two_writers_lose_no_change(world):
    serve, _, history, control = world
    other = TrafficControl(serve, registry=control.registry, history=history)
    for i in range(20):
        w = 10 + i
        history.before_claim = lambda i=i: other.set_traffic("churn", shadow={"version": "2", "percent": i + 1})
        control.set_traffic("churn", {"1": 100 - w, "2": w})
        assert serve.policy()["weights"] == {"1": 100.0 - w, "2": float(w)}
        assert serve.policy()["shadow"]["percent"] == i + 1
    assert len(history.events) == 40 and all(e.applied for e in history.events)


def test_a_caller_that_replaces_what_it_read_is_refused_when_it_changed(world):
    _, _, _, control = world
    first = control.set_traffic("churn", {"1": 80, "2": 20})
    control.set_traffic("churn", {"1": 70, "2": 30})
    with pytest.raises(ConflictError, match=r"changed since you read it \(change 1; now 2: traffic"):
        control.apply_policy("churn", {"weights": {"1": 100}}, action="traffic", expect_seq=first.seq)


def test_a_writer_that_died_after_its_intent_is_finished_by_the_next_one(world):
    serve, _, history, control = world
    clock = {"t": 0.0}
    control.clock = history.clock = lambda: clock["t"]
    control.sleep = lambda s: clock.__setitem__("t", clock["t"] + s)
    # The dead writer claimed change 1 (its intent: 60/40) and never applied it.
    dead = history.claim(
        Event(app="churn", model="churn", action="traffic", weights={"1": 60.0, "2": 40.0}, versions=["1", "2"]),
        1,
        lease_s=30,
    )
    assert dead is not None and serve.policy()["weights"] == {"1": 90.0, "2": 10.0}
    # The next writer waits out the dead one's lease, applies its intent, then makes its own change.
    control.set_traffic("churn", shadow={"version": "2"})
    assert clock["t"] >= 30
    assert [(e.seq, e.status) for e in history.events] == [(1, "applied"), (2, "applied")]
    assert serve.policy()["weights"] == {"1": 60.0, "2": 40.0} and serve.policy()["shadow"]["version"] == "2"


def test_a_change_applied_but_never_marked_is_marked_not_doubled(world):
    serve, _, history, control = world
    # Killed after Serve took the change, before the log said so: finishing it again changes nothing.
    event = history.claim(
        Event(app="churn", model="churn", action="traffic", weights={"1": 30.0, "2": 70.0}, versions=["1", "2"]),
        1,
        lease_s=-1,
    )
    control.admin.apply(  # what the dead writer did
        {
            **serve.apps["churn"]["deployed_app_config"],
            "deployments": [{"name": "churn-router", "user_config": event.policy()}],
        }
    )
    control.set_traffic("churn", shadow={"version": "1"})  # the next change settles it first
    assert [(e.seq, e.status) for e in history.events] == [(1, "applied"), (2, "applied")]
    assert serve.policy()["weights"] == {"1": 30.0, "2": 70.0}


def test_retiring_a_version_and_rolling_back_to_it(world):
    serve, _, history, control = world
    control.set_traffic("churn", {"1": 90, "2": 10}, reason="as deployed")
    control.change("churn", lambda app, log: Plan({"weights": {"1": 100}}, versions=["1"]), action="retire")
    assert [v["version"] for v in serve.apps["churn"]["deployed_app_config"]["args"]["versions"]] == ["1"]
    assert history.events[-1].versions == ["1"]
    control.rollback("churn")  # the state before had v2 at 10 %: it is deployed again
    assert [v["version"] for v in serve.apps["churn"]["deployed_app_config"]["args"]["versions"]] == ["1", "2"]
    assert serve.policy()["weights"] == {"1": 90.0, "2": 10.0}


@pytest.fixture
def idle_world():
    clock = {"t": 1_800_000_000.0}
    config = app_config({"1": 90.0, "2": 10.0})
    config["args"]["retire_after_s"] = 3600
    serve = FakeServe(churn=config)
    registry = FakeRegistry({"churn": ["1", "2", "3"]}, {"churn": {"champion": "1"}})
    history = FakeHistory(clock=lambda: clock["t"])
    control = TrafficControl(serve, registry=registry, history=history, clock=lambda: clock["t"])
    return serve, history, control, clock


def deployed(serve):
    return [v["version"] for v in serve.apps["churn"]["deployed_app_config"]["args"]["versions"]]


def test_a_version_without_traffic_for_retire_after_is_retired_at_the_next_change(idle_world):
    serve, history, control, clock = idle_world
    control.set_traffic("churn", {"1": 100, "2": 0}, reason="v2 out")
    clock["t"] += 1800
    control.set_traffic("churn", shadow={"version": "1"})  # too early: v2 stays
    assert deployed(serve) == ["1", "2"]
    clock["t"] += 3600
    event = control.set_traffic("churn", shadow=None, reason="later")
    assert deployed(serve) == ["1"] and event.versions == ["1"]
    assert event.reason == "later; retired v2: no traffic for 3600s"
    assert sum(v["weight"] for v in serve.apps["churn"]["deployed_app_config"]["args"]["versions"]) == 100
    control.rollback("churn")  # back to a state that served v2 (at 0 %, shadow v1): deployed again
    assert deployed(serve) == ["1", "2"]


@pytest.mark.parametrize("answers", [[], [{"last_pinned": {}}, {"last_pinned": {"2": 1_800_005_000.0}}]])
def test_a_version_still_pinned_or_of_unknown_use_is_kept(idle_world, answers):
    serve, _, control, clock = idle_world
    control.set_traffic("churn", {"1": 100, "2": 0})
    clock["t"] += 7200
    serve.router_answers = answers  # no router answered / one replica served a pinned v2 request lately
    control.set_traffic("churn", shadow={"version": "1"})
    assert deployed(serve) == ["1", "2"]
