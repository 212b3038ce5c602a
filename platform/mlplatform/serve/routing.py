"""Traffic split between model versions.

- `WeightedRoundRobin` (nginx's smooth weighted round robin) for requests without a routing key:
  deterministic rather than random, so a 90/10 split is 90/10 over every window of requests (not just on
  average), which keeps canary metrics comparable even at low traffic.
- `WeightedRendezvous` (weighted highest-random-weight hashing) for requests with a routing key: a key
  keeps its version while the weights stay, and when they change only the keys that must move do move.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

from pydantic import Field, ValidationError, field_validator

from mlplatform.config import StrictModel

__all__ = ["WeightedRoundRobin", "WeightedRendezvous", "TrafficPolicy", "ShadowSpec", "FaultSpec", "parse_policy"]

_TWO_64 = float(2**64)


def _check_weights(weights: dict[str, float]) -> dict[str, float]:
    for version, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            raise ValueError(f"weight of version {version!r} must be a finite number, got {weight!r}")
        if weight < 0:
            raise ValueError(f"weight of version {version!r} must not be negative, got {weight!r}")
    positive = {str(v): float(w) for v, w in weights.items() if w > 0}
    if not positive:
        raise ValueError(f"at least one version needs a positive weight, got {weights}")
    return positive


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
        self._weights = _check_weights(weights)
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


class WeightedRendezvous:
    """Weighted rendezvous (highest random weight) hashing of routing keys onto versions.

    Each (key, version) pair gets a pseudo-random u in (0, 1) from a hash; the key goes to the version with
    the highest ``-weight / ln(u)``. A key lands on a version with probability weight / total, the choice
    depends only on the key and the weights (every router replica agrees, no shared state), and when a
    weight changes a key moves only if the change makes another version win for it: shrinking version A
    moves only keys off A, growing B moves only keys onto B. (Plain ``hash(key) % n`` would reshuffle
    almost every key.)

    Args:
        weights: version → weight (any non-negative scale; at least one positive).
    """

    def __init__(self, weights: dict[str, float]) -> None:
        self._weights = _check_weights(weights)
        self._salts = {v: v.encode() + b"\x00" for v in self._weights}

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    @staticmethod
    def _unit(key: bytes, salt: bytes) -> float:
        digest = hashlib.blake2b(salt + key, digest_size=8).digest()
        # (h + 0.5) / 2**64 is strictly inside (0, 1), so the log below is finite and negative.
        return (struct.unpack("<Q", digest)[0] + 0.5) / _TWO_64

    def pick(self, key: str) -> str:
        """The version for routing key `key`."""
        raw = key.encode("utf-8", "surrogatepass")
        best, best_score = "", -math.inf
        for version, weight in self._weights.items():
            score = -weight / math.log(self._unit(raw, self._salts[version]))
            if score > best_score:
                best, best_score = version, score
        return best


class ShadowSpec(StrictModel):
    """Mirror a share of the traffic to a version whose answers are compared, logged and never returned."""

    version: str = Field(description="The deployed version that receives the copies.")
    percent: float = Field(100.0, gt=0, le=100, description="Share of requests copied.")
    timeout_s: float = Field(1.0, gt=0, le=60, description="A shadow answer later than this counts as a timeout.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_str(cls, value: Any) -> Any:
        return _version_key(value)


class FaultSpec(StrictModel):
    """Fault injection for drills (as in Istio): the router fails a share of a version's requests."""

    abort_percent: float = Field(ge=0, le=100, description="Share of the version's requests answered with `status`.")
    status: int = Field(503, ge=500, le=599, description="HTTP status of an injected failure.")


class TrafficPolicy(StrictModel):
    """The router's live settings (its Serve ``user_config``): applied by ``reconfigure()``, no restart."""

    weights: dict[str, float] = Field(description="version → percent of traffic; sums to 100.")
    shadow: ShadowSpec | None = Field(None, description="Mirror traffic to a version (answers never returned).")
    faults: dict[str, FaultSpec] = Field(default_factory=dict, description="Injected failures per version.")


def _version_key(value: Any) -> Any:
    """'3', 3 and 'v3' all name version '3' (YAML reads `3:` as an int; people write v3)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value[:1] in ("v", "V") and value[1:].isdigit():
        return value[1:]
    return value


def parse_policy(user_config: object, versions: list[str]) -> TrafficPolicy:
    """Validate a router user_config against the deployed versions.

    Versions left out of ``weights`` get weight 0: they stay deployed and reachable by the
    x-model-version header (and usable as a shadow).

    Args:
        user_config: ``{"weights": {version: weight}, "shadow": {...}?, "faults": {...}?}``.
        versions: the deployed versions.

    Returns:
        The policy, with a weight for every deployed version (summing to 100).

    Raises:
        ValueError: malformed, an unknown version, a weight outside 0..100, or weights not summing to 100;
            the message names the field.
    """
    if not isinstance(user_config, dict):
        raise ValueError(f'router user_config must be {{"weights": {{version: weight}}, ...}}, got {user_config!r}')
    given = user_config.get("weights")
    if not isinstance(given, dict) or not given:
        raise ValueError(f"weights must be a non-empty mapping of version → weight, got {given!r}")
    for key, weight in given.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
            raise ValueError(f"weight of version {str(key)!r} must be a number in 0..100, got {weight!r}")
    raw = {**user_config, "weights": {str(_version_key(k)): v for k, v in given.items()}}
    if isinstance(raw.get("faults"), dict):
        raw["faults"] = {str(_version_key(k)): v for k, v in raw["faults"].items()}
    try:
        policy = TrafficPolicy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            + ("" if e["type"] == "missing" else f" (got {e['input']!r:.60})")
            for e in exc.errors(include_url=False)
        )
        raise ValueError(f"invalid router user_config: {problems}") from None

    named = [("weights", v) for v in policy.weights] + [("faults", v) for v in policy.faults]
    if policy.shadow is not None:
        named.append(("shadow.version", policy.shadow.version))
    for where, version in named:
        if version not in versions:
            raise ValueError(f"{where} names version {version!r}, which is not deployed (deployed: {versions})")
    weights = {v: float(policy.weights.get(v, 0.0)) for v in versions}
    total = sum(weights.values())
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"weights must sum to 100, got {given} (sum {total:g})")
    return policy.model_copy(update={"weights": weights})
