"""Weighted round robin and router weight configs (no Ray)."""

from __future__ import annotations

from collections import Counter

import pytest
from mlplatform.errors import ConfigError
from mlplatform.serve.policy import normalize_version, parse_policy
from mlplatform.serve.split import WeightedRendezvous, WeightedRoundRobin


def picks(weights, n):
    wrr = WeightedRoundRobin(weights)
    return [wrr.pick() for _ in range(n)]


def test_90_10_shares_exact_within_one_over_every_window():
    seq = picks({"3": 90, "4": 10}, 2000)
    assert Counter(seq) == {"3": 1800, "4": 200}
    for start in range(0, 1001, 7):
        window = Counter(seq[start : start + 1000])
        assert abs(window["3"] - 900) <= 1 and abs(window["4"] - 100) <= 1, (start, window)


def test_smooth_not_bursty():
    # nginx's SWRR spreads the minority version out instead of sending it 10 in a row.
    seq = picks({"a": 90, "b": 10}, 100)
    positions = [i for i, v in enumerate(seq) if v == "b"]
    assert len(positions) == 10
    assert all(b - a == 10 for a, b in zip(positions, positions[1:], strict=False))


@pytest.mark.parametrize(
    "weights", [{"a": 50, "b": 30, "c": 20}, {"a": 33.3, "b": 33.3, "c": 33.4}, {"a": 1, "b": 99}, {"a": 100}]
)
def test_shares_match_weights(weights):
    seq = picks(weights, 3000)
    total = sum(weights.values())
    for start in (0, 500, 1234, 2000):
        window = Counter(seq[start : start + 1000])
        for version, weight in weights.items():
            assert abs(window[version] - 1000 * weight / total) <= 1.5, (start, window)


def test_deterministic():
    assert picks({"a": 70, "b": 30}, 500) == picks({"a": 70, "b": 30}, 500)


def test_zero_weight_never_picked():
    assert set(picks({"a": 0, "b": 100, "c": 0}, 1000)) == {"b"}
    assert WeightedRoundRobin({"a": 0, "b": 5}).weights == {"b": 5.0}


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"a": 0, "b": 0}, "at least one version needs a positive weight"),
        ({}, "at least one version needs a positive weight"),
        ({"a": -1, "b": 101}, "weight of version 'a' must not be negative, got -1"),
        ({"a": float("nan")}, "must be a finite number, got nan"),
        ({"a": "50"}, "must be a finite number, got '50'"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        WeightedRoundRobin(weights)


def test_parse_policy_weights():
    assert parse_policy({"weights": {"3": 90, "4": 10}}, ["3", "4"]).weights == {"3": 90.0, "4": 10.0}
    # YAML may give int keys, people write v3; unlisted versions get 0
    assert parse_policy({"weights": {3: 100}}, ["3", "4"]).weights == {"3": 100.0, "4": 0.0}
    assert parse_policy({"weights": {"v4": 100}}, ["3", "4"]).weights == {"3": 0.0, "4": 100.0}


def test_parse_policy_shadow_and_faults():
    p = parse_policy(
        {"weights": {"3": 100}, "shadow": {"version": 4, "percent": 50}, "faults": {"v3": {"abort_percent": 20}}},
        ["3", "4"],
    )
    assert p.shadow.version == "4" and p.shadow.percent == 50 and p.shadow.timeout_s == 1.0
    assert p.faults["3"].abort_percent == 20 and p.faults["3"].status == 503


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "user_config must be"),
        ({"weights": {"3": 100}, "other": 1}, "other: unknown key"),
        ({"weights": []}, "non-empty mapping"),
        ({"weights": {"5": 100}}, r"weights names version '5', which is not deployed \(deployed: \['3', '4'\]\)"),
        ({"weights": {"3": 120, "4": -20}}, r"weight of version '3' must be a number in 0\.\.100, got 120"),
        ({"weights": {"3": True}}, "must be a number"),
        ({"weights": {"3": 50, "4": 40}}, r"weights must sum to 100, got \{'3': 50, '4': 40\} \(sum 90\)"),
        ({"weights": {"3": 100}, "shadow": {"version": "9"}}, "shadow.version names version '9'"),
        ({"weights": {"3": 100}, "shadow": {"version": "4", "percent": 0}}, "shadow.percent"),
        ({"weights": {"3": 100}, "faults": {"4": {"abort_percent": 150}}}, "faults.4.abort_percent"),
        ({"weights": {"3": 100}, "faults": {"4": {"abort_percent": 5, "status": 404}}}, "faults.4.status"),
    ],
)
def test_parse_policy_rejects(config, message):
    with pytest.raises(ConfigError, match=message):
        parse_policy(config, ["3", "4"])


# ------------------------------------------------------------------------------ consistent hashing


def keys(n):
    return [f"user-{i}" for i in range(n)]


def test_rendezvous_shares_follow_weights():
    ring = WeightedRendezvous({"a": 90, "b": 10})
    counts = Counter(ring.pick(k) for k in keys(20000))
    assert abs(counts["b"] / 20000 - 0.10) < 0.01, counts
    ring3 = WeightedRendezvous({"a": 50, "b": 30, "c": 20})
    counts = Counter(ring3.pick(k) for k in keys(20000))
    for v, w in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert abs(counts[v] / 20000 - w) < 0.015, counts


def test_rendezvous_is_sticky_and_replica_independent():
    one, other = WeightedRendezvous({"a": 90, "b": 10}), WeightedRendezvous({"b": 10, "a": 90})
    for k in keys(500):
        assert one.pick(k) == one.pick(k) == other.pick(k)  # same key, same version, on any replica


def test_rendezvous_moves_few_keys_when_weights_change():
    before = WeightedRendezvous({"a": 90, "b": 10})
    after = WeightedRendezvous({"a": 80, "b": 20})
    moved = [(before.pick(k), after.pick(k)) for k in keys(20000) if before.pick(k) != after.pick(k)]
    # Only the keys that must move do: about 10 % of them, all from the shrinking version to the growing one.
    assert 0.08 < len(moved) / 20000 < 0.12, len(moved)
    assert set(moved) == {("a", "b")}
    # Adding a version takes keys only onto it.
    added = WeightedRendezvous({"a": 80, "b": 20, "c": 25})
    assert {after.pick(k) for k in keys(5000) if after.pick(k) != added.pick(k)} <= {"a", "b"}
    assert {added.pick(k) for k in keys(5000) if after.pick(k) != added.pick(k)} == {"c"}


def test_rendezvous_zero_weight_never_picked():
    ring = WeightedRendezvous({"a": 0, "b": 100})
    assert {ring.pick(k) for k in keys(1000)} == {"b"}


@pytest.mark.parametrize(
    "given,named", [(3, "3"), ("3", "3"), ("v3", "3"), ("V3", "3"), (" v3 ", "3"), ("champion", "champion")]
)
def test_every_way_of_naming_a_version_is_one_name(given, named):
    assert normalize_version(given) == named
