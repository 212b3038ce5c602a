"""How a traffic split picks a version per request.

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

__all__ = ["WeightedRoundRobin", "WeightedRendezvous"]

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
