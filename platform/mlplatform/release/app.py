"""The serving application as mlplatform's Serve configs build it: the data plane wired to the release side.

``import_path: mlplatform.release.app:build_app`` in a Serve config. It is `mlplatform.serve.make_app` with the
router's admin route given `apply_from_router`, so a traffic change made over HTTP (admin keys) takes the same
path as `mlplatform traffic set`: validated, applied to Serve's declarative config for every router replica,
recorded in the history. The serving layer never imports this one; it receives the function.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray import serve

from mlplatform.release.traffic import TrafficControl
from mlplatform.serve.app import make_app
from mlplatform.serve.config import AppArgs

__all__ = ["build_app", "apply_from_router"]


def apply_from_router(policy: dict[str, Any], reason: str, who: str) -> dict[str, Any]:
    """Apply a policy to the calling replica's application (a `PolicyApplier`); returns the history event."""
    app_name = serve.get_replica_context().app_name
    event = TrafficControl().apply_policy(app_name, policy, action="traffic", reason=reason, by=who)
    return asdict(event)


def build_app(args: dict[str, Any] | AppArgs) -> serve.Application:
    """Build the serving application from Serve config `args` (validated as `AppArgs`).

    Raises:
        pydantic.ValidationError: `args` is invalid; the error names the field.
        mlplatform.errors.RegistryError: a version or alias does not exist in the registry.
    """
    return make_app(args, apply_policy=apply_from_router)
