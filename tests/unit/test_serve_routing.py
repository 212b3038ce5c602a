"""Weighted round robin and router weight configs (no Ray)."""

from __future__ import annotations

from collections import Counter

import pytest
from mlplatform.serve.routing import WeightedRoundRobin, parse_weights


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


def test_parse_weights():
    assert parse_weights({"weights": {"3": 90, "4": 10}}, ["3", "4"]) == {"3": 90.0, "4": 10.0}
    # YAML may give int keys; unlisted versions get 0
    assert parse_weights({"weights": {3: 100}}, ["3", "4"]) == {"3": 100.0, "4": 0.0}


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "user_config must be"),
        ({"weights": {"3": 100}, "other": 1}, "user_config must be"),
        ({"weights": []}, "non-empty mapping"),
        ({"weights": {"5": 100}}, r"version '5', which is not deployed \(deployed: \['3', '4'\]\)"),
        ({"weights": {"3": 120, "4": -20}}, r"weight of version '3' must be a number in 0\.\.100, got 120"),
        ({"weights": {"3": True}}, "must be a number"),
        ({"weights": {"3": 50, "4": 40}}, r"weights must sum to 100, got \{'3': 50, '4': 40\} \(sum 90\)"),
    ],
)
def test_parse_weights_rejects(config, message):
    with pytest.raises(ValueError, match=message):
        parse_weights(config, ["3", "4"])
