"""Ray Serve's REST API on the Ray dashboard: what `serve deploy` and `serve status` use.

Serve replaces a whole declarative config per PUT and has no version to compare, so callers read the
deployed config, edit it and put it back (`mlplatform.release.traffic` is the one place that does). The
dashboard is reached with Ray's token (the cluster's admin credential), from a laptop through the
forwarded dashboard port or from inside a job.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from mlplatform.cluster import auth_headers, load_state
from mlplatform.errors import PlatformError, PlatformNotRunningError
from mlplatform.settings import RAY_ADDRESS

__all__ = ["SERVE_API", "ServeAdmin", "dashboard_address"]

SERVE_API = "/api/serve/applications/"


def dashboard_address(address: str | None = None) -> str:
    """The Ray dashboard: `address`, else $RAY_ADDRESS (http), else the local platform, else this job's cluster."""
    if address:
        return address.rstrip("/")
    env = RAY_ADDRESS.get() or ""
    if env.startswith("http"):
        return env.rstrip("/")
    state = load_state()
    if state is not None:
        return state.dashboard_url
    try:
        import ray

        if ray.is_initialized():
            url = ray._private.worker.get_dashboard_url()  # inside a job: the cluster's own dashboard
            if url:
                return url if "://" in url else f"http://{url}"
    except Exception:  # not connected to a cluster; fall through to the default
        pass
    return "http://127.0.0.1:8265"


class ServeAdmin:
    """Ray Serve's REST API on the dashboard (what `serve deploy` and `serve status` use).

    Args:
        address: dashboard URL; see `dashboard_address` for the default.
    """

    def __init__(self, address: str | None = None, timeout: float = 30) -> None:
        self.address = dashboard_address(address)
        self.timeout = timeout
        self._headers = auth_headers()

    def _request(self, method: str, json_body: dict | None = None) -> dict[str, Any]:
        try:
            r = requests.request(
                method, self.address + SERVE_API, json=json_body, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise PlatformNotRunningError(
                f"no Ray dashboard at {self.address} ({type(exc).__name__}); start the platform with "
                "`mlplatform up` or pass --address (the forwarded dashboard of a remote cluster)"
            ) from None
        if r.status_code in (401, 403):
            raise PlatformError(
                f"{self.address} refused the Ray token ({r.status_code}); set RAY_AUTH_TOKEN or ~/.ray/auth_token"
            )
        if r.status_code != 200:
            raise PlatformError(f"Serve REST API at {self.address} answered {r.status_code}: {r.text[:1000]}")
        return r.json() if r.content else {}

    def details(self) -> dict[str, Any]:
        """Serve's instance details: http options and every application with its deployed config."""
        return self._request("GET")

    def app(self, name: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        apps = (details or self.details()).get("applications") or {}
        if name not in apps:
            raise PlatformError(f"no Serve application {name!r} at {self.address} (running: {sorted(apps)})")
        return apps[name]

    def apply(self, app_config: dict[str, Any], *, http_options: dict[str, Any] | None = None) -> float:
        """Deploy `app_config` (replacing the application of the same name), keeping every other app.

        Returns:
            The application's previous ``last_deployed_time_s`` (0 when new), for `wait`.
        """
        details = self.details()
        apps = details.get("applications") or {}
        others = []
        for name, app in apps.items():
            if name == app_config["name"]:
                continue
            if app.get("source") != "declarative" or not app.get("deployed_app_config"):
                raise PlatformError(
                    f"Serve application {name!r} was deployed with serve.run (imperatively); a declarative "
                    "deploy would delete it. Redeploy it from a config file (`serve deploy` or mlplatform)."
                )
            others.append(app["deployed_app_config"])
        body: dict[str, Any] = {"applications": [*others, app_config]}
        running_http = {k: v for k, v in (details.get("http_options") or {}).items() if k in ("host", "port")}
        if running_http or http_options:
            body["http_options"] = running_http or {k: v for k, v in (http_options or {}).items()}
        if details.get("proxy_location"):
            body["proxy_location"] = details["proxy_location"]
        previous = float((apps.get(app_config["name"]) or {}).get("last_deployed_time_s") or 0)
        self._request("PUT", body)
        return previous

    def wait(self, name: str, after: float, timeout: float = 600) -> dict[str, Any]:
        """Wait until the deploy that followed `after` is RUNNING; raise on DEPLOY_FAILED or timeout."""
        deadline = time.time() + timeout
        last: dict[str, Any] = {}
        while time.time() < deadline:
            last = (self.details().get("applications") or {}).get(name) or {}
            if float(last.get("last_deployed_time_s") or 0) > after:
                status = last.get("status")
                if status == "RUNNING":
                    return last
                if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                    raise PlatformError(f"Serve application {name!r} is {status}: {_failure(last)}")
            time.sleep(0.5)
        raise PlatformError(
            f"Serve application {name!r} not RUNNING after {timeout:.0f}s (status {last.get('status')}): "
            f"{_failure(last)}"
        )


def _failure(app: dict[str, Any]) -> str:
    parts = [app.get("message") or ""]
    for dep_name, dep in (app.get("deployments") or {}).items():
        if dep.get("status") not in ("HEALTHY", None):
            parts.append(f"{dep_name}: {dep.get('status')} {dep.get('message') or ''}".strip())
    return "; ".join(p for p in parts if p)[:3000] or "no message"

    def router_status(self, app: str, model: str, tries: int = 4) -> list[dict[str, Any]]:
        """What router replicas of `app` report (`GET /v1/models/{model}`, an open route), asked `tries` times
        through Serve's HTTP proxy so that each replica is likely asked; empty when none answers."""
        details = self.details()
        http = details.get("http_options") or {}
        host = http.get("host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        prefix = ((details.get("applications") or {}).get(app) or {}).get("route_prefix") or "/"
        url = f"http://{host}:{int(http.get('port') or 8000)}{prefix.rstrip('/')}/v1/models/{model}"
        answers = []
        for _ in range(tries):
            try:
                r = requests.get(url, timeout=3)
                answers.append(r.json())
            except (requests.RequestException, ValueError):
                continue
        return answers
