"""The MLflow model registry as mlplatform uses it: versions, aliases, lineage tags, signatures.

All access goes through the tracking server over HTTP (never the SQLite file), so it works from any node.
"""

from __future__ import annotations

import os
import subprocess

from mlplatform.errors import RegistryError
from mlplatform.settings import MLFLOW_TRACKING_URI, MLPLATFORM_GIT_COMMIT

__all__ = ["client", "resolve_version", "model_uri", "model_features", "set_aliases", "git_commit"]


def client(tracking_uri: str | None = None):
    """An MlflowClient on `tracking_uri`, else $MLFLOW_TRACKING_URI, else the local platform's server."""
    from mlflow import MlflowClient

    if not tracking_uri and not MLFLOW_TRACKING_URI.get():
        from mlplatform.cluster import load_state

        state = load_state()
        tracking_uri = state.mlflow_url if state else None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_version(
    name: str, version: str | None = None, alias: str | None = None, *, tracking_uri: str | None = None
) -> str:
    """The concrete version number behind `version` or `alias`.

    Raises:
        RegistryError: the model, version or alias does not exist.
    """
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    what = f"alias {alias!r}" if alias is not None else f"version {version!r}"
    try:
        if alias is not None:
            return str(c.get_model_version_by_alias(name, alias).version)
        return str(c.get_model_version(name, str(version)).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(
                f"model {name!r} has no {what} in the registry at {c.tracking_uri}: {exc.message}"
            ) from None
        raise RegistryError(f"cannot look up {what} of model {name!r} at {c.tracking_uri}: {exc.message}") from None


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def model_features(name: str, version: str, *, tracking_uri: str | None = None) -> list[str]:
    """Input feature names, in order, from the registered version's MLflow signature."""
    from mlflow.models import get_model_info

    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
    info = get_model_info(model_uri(name, version))
    if info.signature is None or info.signature.inputs is None:
        raise RegistryError(f"model {name!r} version {version} has no input signature; re-register it with one")
    return list(info.signature.inputs.input_names())


def set_aliases(name: str, aliases: dict[str, str], *, tracking_uri: str | None = None) -> None:
    """Point each alias at a version (alias → version)."""
    c = client(tracking_uri)
    for alias, version in aliases.items():
        c.set_registered_model_alias(name, alias, version)


def git_commit(repo: str | os.PathLike[str] | None = None) -> str:
    """The commit the code came from: $MLPLATFORM_GIT_COMMIT (set by `mlplatform submit`), else git, else 'unknown'."""
    env = MLPLATFORM_GIT_COMMIT.get()
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
