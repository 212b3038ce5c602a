"""The MLflow model registry as mlplatform uses it: versions, aliases, signatures, boosters, lineage.

All access goes through the tracking server over HTTP (never the SQLite file), so it works from any node.
The alias names are the platform's vocabulary: the gate makes a `champion` or a `challenger`, a promotion
moves `champion` and keeps the one it replaced as `previous`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import requests

from mlplatform.cluster import load_state
from mlplatform.errors import PlatformNotRunningError, RegistryError
from mlplatform.settings import MLFLOW_TRACKING_URI, MLPLATFORM_GIT_COMMIT

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "PREVIOUS",
    "client",
    "resolve_version",
    "model_task",
    "model_uri",
    "model_features",
    "model_extra_file",
    "aliases_of",
    "set_aliases",
    "load_booster",
    "git_commit",
]

#: The version that serves by default; the gate compares every candidate with it.
CHAMPION = "champion"
#: A candidate that beat the champion at the gate and waits for a rollout.
CHALLENGER = "challenger"
#: The champion a promotion replaced: where a rollback goes.
PREVIOUS = "previous"


def client(tracking_uri: str | None = None):
    """An MlflowClient on `tracking_uri`, else $MLFLOW_TRACKING_URI, else the local platform's server.

    Raises:
        PlatformNotRunningError: none of them is known (MLflow would silently start a new ./mlruns store).
    """
    import mlflow  # MLflow costs ≈ 1.3 s to import; only commands that use it pay
    from mlflow import MlflowClient

    tracking_uri = tracking_uri or MLFLOW_TRACKING_URI.get()
    if not tracking_uri:
        state = load_state()
        if state is not None:
            tracking_uri = state.mlflow_url
        elif mlflow.is_tracking_uri_set():
            tracking_uri = mlflow.get_tracking_uri()
        else:
            raise PlatformNotRunningError(
                "no MLflow server known: start the local platform with `mlplatform up`, or set MLFLOW_TRACKING_URI"
            )
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _use_server(tracking_uri: str | None) -> None:
    """Point MLflow's module-level functions at the server `client` would use: without it a process that was
    given no URI (a Ray task, a replica) silently reads a local ./mlruns instead of the platform's registry."""
    import mlflow

    resolved = client(tracking_uri).tracking_uri
    mlflow.set_tracking_uri(resolved)
    mlflow.set_registry_uri(resolved)


def resolve_version(
    name: str, version: str | None = None, alias: str | None = None, *, tracking_uri: str | None = None
) -> str:
    """The concrete version number behind `version` or `alias`.

    Raises:
        RegistryError: the model, version or alias does not exist, or the registry does not answer.
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
    except requests.RequestException as exc:
        raise RegistryError(f"the MLflow registry at {c.tracking_uri} does not answer: {exc}") from None


def model_task(
    name: str, version: str | None = None, alias: str | None = None, *, tracking_uri: str | None = None
) -> str:
    """What the registered version answers: binary | multiclass | regression (versions from before tasks existed
    are binary).

    Raises:
        RegistryError: as `resolve_version`.
    """
    number = resolve_version(name, version, alias, tracking_uri=tracking_uri)
    return client(tracking_uri).get_model_version(name, number).tags.get("mlplatform.task") or "binary"


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def model_features(name: str, version: str, *, tracking_uri: str | None = None) -> list[str]:
    """Input feature names, in order, from the registered version's MLflow signature."""
    from mlflow.models import get_model_info

    _use_server(tracking_uri)
    info = get_model_info(model_uri(name, version))
    if info.signature is None or info.signature.inputs is None:
        raise RegistryError(f"model {name!r} version {version} has no input signature; re-register it with one")
    return list(info.signature.inputs.input_names())


def model_extra_file(name: str, version: str, file: str, *, tracking_uri: str | None = None) -> str | None:
    """The text of a file logged with the registered version (``extra_files`` of its flavor), or None when the
    version has no such file (e.g. ``input_schema.json`` of a version registered before it existed)."""
    import mlflow
    from mlflow.models import get_model_info

    _use_server(tracking_uri)
    info = get_model_info(model_uri(name, version))
    listed = [e.get("path") for flavor in info.flavors.values() for e in (flavor.get("extra_files") or [])]
    if f"extra_files/{file}" not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri(name, version)}/extra_files/{file}", dst_path=tmp
        )
        return Path(path).read_text(encoding="utf-8")


def aliases_of(model: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """alias → version of a registered model (empty when the registry is unreachable or has no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return {a: str(v) for a, v in client(tracking_uri).get_registered_model(model).aliases.items()}
    except (MlflowException, requests.RequestException):
        return {}


def set_aliases(name: str, aliases: dict[str, str | None], *, tracking_uri: str | None = None) -> None:
    """Point each alias at a version (alias → version); an alias mapped to None is removed."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    for alias, version in aliases.items():
        if version is not None:
            c.set_registered_model_alias(name, alias, version)
            continue
        try:
            c.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


#: File names XGBoost's native formats are saved under by the MLflow flavor (`model_format`: ubj, json, xgb).
_NATIVE_SUFFIXES = (".ubj", ".json", ".xgb", ".bin", ".model")


def load_booster(uri: str, tracking_uri: str | None) -> Any:
    """Load the XGBoost Booster of a registered version (or any MLflow model URI) from its native file.

    Only two files are fetched: `MLmodel`, read as YAML data, and the booster file it names, read by XGBoost's
    own loader. Nothing the artifact ships is imported: `mlflow.xgboost.load_model` would put the artifact's
    `code/` folder first on `sys.path` and instantiate the class its `model_class` names, so anyone who can
    write to the registry could run code in every replica. A model saved from XGBoost's scikit-learn API
    holds the same booster file, so it loads too. Nothing is unpickled.

    Args:
        uri: an MLflow model URI, e.g. ``models:/churn/3``.
        tracking_uri: MLflow tracking server; None resolves as `client` does.

    Returns:
        An ``xgboost.Booster``.

    Raises:
        RegistryError: the model is not an XGBoost model saved in a native format.
    """
    import yaml

    from mlplatform.xgb import xgboost as import_xgboost

    xgboost = import_xgboost()
    import mlflow

    _use_server(tracking_uri)
    base = uri.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        meta = mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=tmp)
        try:
            flavor = (yaml.safe_load(Path(meta).read_text(encoding="utf-8")) or {})["flavors"]["xgboost"]
            data = str(flavor["data"])
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise RegistryError(f"{uri} is not an XGBoost model: its MLmodel has no xgboost flavor ({exc})") from None
        # A plain file beside MLmodel, in a native format: not a path out of the artifact, not a pickle.
        if Path(data).name != data or data in {".", ".."} or not data.endswith(_NATIVE_SUFFIXES):
            raise RegistryError(
                f"{uri}: the xgboost flavor names {data!r} as its model file; expected a file beside MLmodel "
                f"ending in one of {', '.join(_NATIVE_SUFFIXES)} (XGBoost's own formats)"
            )
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{data}", dst_path=tmp)
        booster = xgboost.Booster()
        try:
            booster.load_model(path)
        except xgboost.core.XGBoostError as exc:
            raise RegistryError(f"{uri}: {data} is not a model XGBoost can read: {str(exc).splitlines()[0]}") from None
    return booster


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
