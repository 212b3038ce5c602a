"""Traffic split between model versions: nginx's smooth weighted round robin.

Deterministic rather than random, so a 90/10 split is 90/10 over every window of requests (not just on
average), which keeps canary metrics comparable even at low traffic.
"""

from __future__ import annotations

import math

__all__ = ["WeightedRoundRobin", "parse_weights"]


class WeightedRoundRobin:
    """Smooth weighted round robin over versions (nginx's algorithm).

    Every pick adds each version's weight to its running score, picks the highest score and takes the total
    weight off the winner. Versions with weight 0 are never picked.

    Args:
        weights: version → weight (any non-negative scale; at least one positive).

    Raises:
        ValueError: a weight is negative or not finite, or no weight is positive.
    """

    def __init__(self, weights: dict[str, float]) -> None:
        for version, weight in weights.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
                raise ValueError(f"weight of version {version!r} must be a finite number, got {weight!r}")
            if weight < 0:
                raise ValueError(f"weight of version {version!r} must not be negative, got {weight!r}")
        self._weights = {str(v): float(w) for v, w in weights.items() if w > 0}
        if not self._weights:
            raise ValueError(f"at least one version needs a positive weight, got {weights}")
        self._total = sum(self._weights.values())
        self._current = dict.fromkeys(self._weights, 0.0)

    @property
    def weights(self) -> dict[str, float]:
        """The positive weights in use (version → weight)."""
        return dict(self._weights)

    def pick(self) -> str:
        """The version for the next request."""
        best: str | None = None
        for version, weight in self._weights.items():
            self._current[version] += weight
            # Strict > keeps ties deterministic: the first version in insertion order wins.
            if best is None or self._current[version] > self._current[best]:
                best = version
        assert best is not None
        self._current[best] -= self._total
        return best


def parse_weights(user_config: object, versions: list[str]) -> dict[str, float]:
    """Validate a router user_config ``{"weights": {version: weight}}`` against the deployed versions.

    Versions left out get weight 0 (they stay deployed and reachable by the x-model-version header).

    Args:
        user_config: the router's user_config.
        versions: the deployed versions.

    Returns:
        version → weight for every deployed version, summing to 100.

    Raises:
        ValueError: not a mapping with only `weights`, an unknown version, a weight outside 0..100,
            or weights not summing to 100.
    """
    if not isinstance(user_config, dict) or set(user_config) != {"weights"}:
        raise ValueError(f'router user_config must be {{"weights": {{version: weight}}}}, got {user_config!r}')
    given = user_config["weights"]
    if not isinstance(given, dict) or not given:
        raise ValueError(f"weights must be a non-empty mapping of version → weight, got {given!r}")
    weights = dict.fromkeys(versions, 0.0)
    for key, weight in given.items():
        version = str(key)
        if version not in weights:
            raise ValueError(f"weights name version {version!r}, which is not deployed (deployed: {versions})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
            raise ValueError(f"weight of version {version!r} must be a number in 0..100, got {weight!r}")
        weights[version] = float(weight)
    total = sum(weights.values())
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"weights must sum to 100, got {given} (sum {total:g})")
    return weights
