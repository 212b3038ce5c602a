"""Deploy: apply a Serve config file (serve_configs/*.yaml) with registry aliases pinned to versions.

The file is an ordinary Ray Serve config, so the same file works with `serve deploy` and `serve run`
(the builder resolves aliases itself there). Here we validate it first, so that a bad file fails before
anything changes, pin aliases to concrete versions, and apply it through Serve's declarative API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from mlplatform.config import parse_config, read_yaml, validation_problems
from mlplatform.errors import ConfigError
from mlplatform.release.serve_api import ServeAdmin
from mlplatform.release.traffic import TrafficControl
from mlplatform.serve.app import resolve_app_args, resolve_input_schema
from mlplatform.serve.config import AppArgs
from mlplatform.serve.protocol import curl_line, example_row, v2_metadata

__all__ = ["Deployment", "load_serve_config", "deploy"]


@dataclass(frozen=True)
class Deployment:
    app_name: str
    model_name: str
    url: str
    weights: dict[str, float]
    features: list[str]
    auth: str
    #: A typical instance (the input schema's examples, raw categories), for the printed curl line.
    example: dict[str, Any]

    def curl(self) -> str:
        return curl_line(self.url, self.model_name, self.example, with_key=self.auth != "none")


def load_serve_config(path: str, application: str | None = None) -> tuple[dict[str, Any], dict[str, Any], AppArgs]:
    """Validate a Serve config file; return (whole file, the chosen application, its typed AppArgs).

    Raises:
        ConfigError: naming the file and the field path.
    """
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a Ray Serve config mapping with `applications`")
    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {path}: {line}" for line in validation_problems(exc)]
        raise ConfigError(f"invalid Serve config {path}:\n" + "\n".join(lines)) from None
    apps = raw["applications"]
    if application is None:
        if len(apps) != 1:
            raise ConfigError(f"{path}: has {len(apps)} applications; name one with deploy.application")
        index = 0
    else:
        names = [a.get("name") for a in apps]
        if application not in names:
            raise ConfigError(f"{path}: no application named {application!r} (has {names})")
        index = names.index(application)
    app = apps[index]
    args = parse_config(app.get("args") or {}, AppArgs, f"{path}: applications[{index}].args")
    return raw, app, args


def deploy(
    serve_config: str,
    application: str | None = None,
    *,
    address: str | None = None,
    control: TrafficControl | None = None,
) -> Deployment:
    """Deploy one application of a Serve config file and wait until it serves.

    Aliases are pinned to the versions they point at now, so the deployed config says exactly what
    serves (and re-deploying after an alias moved is a real change); the router's traffic policy goes in
    its user_config. The config goes through Serve's declarative API (as `serve deploy` does), keeping the
    cluster's other applications, so later `mlplatform traffic` changes and `serve deploy` agree.

    Raises:
        ConfigError: the file or its args are invalid (nothing is deployed).
        mlplatform.errors.RegistryError: a version or alias is not in the registry.
        PlatformError: Serve failed to deploy the application.
    """
    control = control or TrafficControl(ServeAdmin(address))
    raw, app, args = load_serve_config(serve_config, application)
    try:
        resolved, features = resolve_app_args(args)
        schema = resolve_input_schema(resolved, features)
    except ConfigError as exc:
        raise ConfigError(f"{serve_config}: application {app.get('name')!r}: {exc}") from None
    policy = resolved.default_policy()
    config = {
        **app,
        "args": resolved.model_dump(mode="json", exclude_none=True),
        "deployments": [
            *[d for d in app.get("deployments") or [] if d.get("name") != resolved.router],
            {"name": resolved.router, "user_config": policy},
        ],
    }
    control.deploy(config, resolved, reason=f"deploy {Path(serve_config).name}", http_options=raw.get("http_options"))
    http = control.admin.details().get("http_options") or {}
    host, port = http.get("host") or "127.0.0.1", int(http.get("port") or 8000)
    route_prefix = app.get("route_prefix", "/")
    prefix = "" if route_prefix in ("/", None) else route_prefix.rstrip("/")
    return Deployment(
        app_name=app["name"],
        model_name=resolved.model_name,
        url=f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}{prefix}",
        weights=policy["weights"],
        features=features,
        auth=resolved.auth,
        example=example_row(v2_metadata(resolved.model_name, [], features, schema and schema.as_dicts())),
    )
