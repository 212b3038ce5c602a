"""Deploy: apply a Serve config file (serve_configs/*.yaml) with registry aliases resolved to versions.

The file is an ordinary Ray Serve config, so the same file works with `serve deploy` and `serve run`
(the builder resolves aliases itself there). Here we validate it first, so that a bad file fails before
anything changes, resolve aliases to concrete versions for the record, and run it on the current cluster.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplatform.config import parse_config, read_yaml
from mlplatform.errors import ConfigError

__all__ = ["Deployment", "load_serve_config", "deploy", "curl_line"]


@dataclass(frozen=True)
class Deployment:
    app_name: str
    model_name: str
    url: str
    weights: dict[str, float]
    features: list[str]
    auth: str

    def curl(self) -> str:
        return curl_line(self.url, self.model_name, self.features, with_key=self.auth != "none")


def curl_line(base_url: str, model: str, features: list[str], *, with_key: bool) -> str:
    """A curl command that works as printed: one instance with every feature set to 1.0."""
    body = json.dumps({"instances": [{f: 1.0 for f in features}]})
    auth = ' -H "Authorization: Bearer $MLPLATFORM_API_KEY"' if with_key else ""
    return f"curl -s -X POST {base_url}/v1/models/{model}:predict -H 'Content-Type: application/json'{auth} -d '{body}'"


def load_serve_config(path: str, application: str | None = None) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Validate a Serve config file; return (whole file, the chosen application, its typed AppArgs).

    Raises:
        ConfigError: naming the file and the field path.
    """
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from mlplatform.serve import AppArgs

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a Ray Serve config mapping with `applications`")
    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)]
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


def deploy(serve_config: str, application: str | None = None) -> Deployment:
    """Deploy one application of a Serve config file on the current Ray cluster and wait until it serves."""
    from ray import serve

    from mlplatform.registry import client
    from mlplatform.serve import build_app
    from mlplatform.serve.app import resolve_app_args

    raw, app, args = load_serve_config(serve_config, application)
    resolved, features = resolve_app_args(args)
    http = raw.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), int(http.get("port", 8000))
    serve.start(http_options={"host": host, "port": port})
    route_prefix = app.get("route_prefix", "/")
    serve.run(build_app(resolved), name=app["name"], route_prefix=route_prefix, blocking=False)

    weights = {v.version: v.weight for v in resolved.versions}
    c = client(resolved.tracking_uri)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for version, weight in weights.items():
        c.set_model_version_tag(
            resolved.model_name,
            version,
            "mlplatform.deployment",
            json.dumps({"app": app["name"], "weight": weight, "at": stamp, "config": Path(serve_config).name}),
        )
    prefix = "" if route_prefix in ("/", None) else route_prefix.rstrip("/")
    return Deployment(
        app_name=app["name"],
        model_name=resolved.model_name,
        url=f"http://{host}:{port}{prefix}",
        weights=weights,
        features=features,
        auth=resolved.auth,
    )
