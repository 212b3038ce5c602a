"""The traffic policy of a serving application: weights per version, a shadow, injected faults.

It is the router's Serve ``user_config``, so a change is applied live by ``reconfigure()`` on every router
replica without a restart. `parse_policy` is the one check every policy passes, wherever it comes from (a
Serve config, `mlplatform traffic`, the admin route, a rollout). Versions are named the same way
everywhere: `normalize_version`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator

from mlplatform.config import StrictModel, validation_problems
from mlplatform.errors import ConfigError

__all__ = ["TrafficPolicy", "ShadowSpec", "FaultSpec", "parse_policy", "normalize_version"]


def normalize_version(value: Any) -> Any:
    """'3', 3, 'v3' and 'V3' all name version '3' (YAML reads `3:` as an int; people write v3).

    Anything else (an alias such as 'champion', None) is returned as it is.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        value = value.strip()
        if value[:1] in ("v", "V") and value[1:].isdigit():
            return value[1:]
    return value


class ShadowSpec(StrictModel):
    """Mirror a share of the traffic to a version whose answers are compared, logged and never returned."""

    version: str = Field(description="The deployed version that receives the copies.")
    percent: float = Field(100.0, gt=0, le=100, description="Share of requests copied.")
    timeout_s: float = Field(1.0, gt=0, le=60, description="A shadow answer later than this counts as a timeout.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_str(cls, value: Any) -> Any:
        return normalize_version(value)


class FaultSpec(StrictModel):
    """Fault injection for drills (as in Istio): the router fails a share of a version's requests."""

    abort_percent: float = Field(ge=0, le=100, description="Share of the version's requests answered with `status`.")
    status: int = Field(503, ge=500, le=599, description="HTTP status of an injected failure.")


class TrafficPolicy(StrictModel):
    """The router's live settings (its Serve ``user_config``): applied by ``reconfigure()``, no restart."""

    weights: dict[str, float] = Field(description="version → percent of traffic; sums to 100.")
    shadow: ShadowSpec | None = Field(None, description="Mirror traffic to a version (answers never returned).")
    faults: dict[str, FaultSpec] = Field(default_factory=dict, description="Injected failures per version.")


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
        ConfigError: malformed, an unknown version, a weight outside 0..100, or weights not summing to 100;
            the message names the field.
    """
    if not isinstance(user_config, dict):
        raise ConfigError(f'router user_config must be {{"weights": {{version: weight}}, ...}}, got {user_config!r}')
    given = user_config.get("weights")
    if not isinstance(given, dict) or not given:
        raise ConfigError(f"weights must be a non-empty mapping of version → weight, got {given!r}")
    for key, weight in given.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
            raise ConfigError(f"weight of version {str(key)!r} must be a number in 0..100, got {weight!r}")
    raw = {**user_config, "weights": {str(normalize_version(k)): v for k, v in given.items()}}
    if isinstance(raw.get("faults"), dict):
        raw["faults"] = {str(normalize_version(k)): v for k, v in raw["faults"].items()}
    try:
        policy = TrafficPolicy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid router user_config: {'; '.join(validation_problems(exc))}") from None

    named = [("weights", v) for v in policy.weights] + [("faults", v) for v in policy.faults]
    if policy.shadow is not None:
        named.append(("shadow.version", policy.shadow.version))
    for where, version in named:
        if version not in versions:
            raise ConfigError(f"{where} names version {version!r}, which is not deployed (deployed: {versions})")
    weights = {v: float(policy.weights.get(v, 0.0)) for v in versions}
    total = sum(weights.values())
    if abs(total - 100.0) > 1e-6:
        raise ConfigError(f"weights must sum to 100, got {given} (sum {total:g})")
    return policy.model_copy(update={"weights": weights})
