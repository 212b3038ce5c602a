"""Live traffic changes of a serving application, through Ray Serve's declarative REST API.

Every change reads the application's deployed config from the Ray dashboard, edits the router's
``user_config`` (its `TrafficPolicy`: weights, shadow, faults), validates it against the deployed
versions, and puts the whole config back — exactly what ``serve deploy`` of an edited file does, so the
two never disagree. Serve applies a user_config change by calling the router's ``reconfigure()``: no
replica restarts, no dropped requests. Naming a version that is not deployed adds its deployment (a
rolling update that keeps serving). Each change is appended to the deployment history in MLflow.

The dashboard is reached with Ray's token (the cluster's admin credential), from a laptop through the
forwarded dashboard port or from inside a job.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import requests

from mlplatform import history
from mlplatform.errors import ConfigError, PlatformError, PlatformNotRunningError
from mlplatform.serve.routing import TrafficPolicy, parse_policy
from mlplatform.serve.schemas import AppArgs
from mlplatform.settings import RAY_ADDRESS

__all__ = ["ServeAdmin", "ServedApp", "served", "apply_policy", "set_traffic", "promote", "rollback", "aliases_of"]

SERVE_API = "/api/serve/applications/"
CHAMPION = "champion"
PREVIOUS = "previous"


def dashboard_address(address: str | None = None) -> str:
    """The Ray dashboard: `address`, else $RAY_ADDRESS (http), else the local platform, else this job's cluster."""
    if address:
        return address.rstrip("/")
    env = RAY_ADDRESS.get() or ""
    if env.startswith("http"):
        return env.rstrip("/")
    from mlplatform.cluster import load_state

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
        from mlplatform.cluster import auth_headers

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


# ----------------------------------------------------------------------------------- the served state


@dataclass(frozen=True)
class ServedApp:
    """An application as deployed: its config, its typed args and the traffic policy it runs."""

    name: str
    config: dict[str, Any]
    args: AppArgs
    policy: TrafficPolicy

    @property
    def versions(self) -> list[str]:
        return [v.version for v in self.args.versions if v.version is not None]

    @property
    def router(self) -> str:
        return f"{self.args.model_name}-router"


def served(admin: ServeAdmin, name: str) -> ServedApp:
    """Read an application's deployed config and the traffic policy in it."""
    from mlplatform.serve.router import default_policy

    app = admin.app(name)
    config = app.get("deployed_app_config")
    if not config:
        raise PlatformError(
            f"Serve application {name!r} was deployed with serve.run, so it has no config to edit; "
            "deploy it from a Serve config file (mlplatform deploy step or `serve deploy`)"
        )
    args = AppArgs.model_validate(config.get("args") or {})
    if any(v.version is None for v in args.versions):
        # Deployed by `serve deploy` of a file naming aliases: pin them as the builder did, so the next
        # change writes concrete versions (a rolling update of the router, once).
        from mlplatform.registry import resolve_version

        pinned = [
            v.model_copy(
                update={
                    "version": resolve_version(args.model_name, alias=v.alias, tracking_uri=args.tracking_uri),
                    "alias": None,
                }
            )
            if v.version is None
            else v
            for v in args.versions
        ]
        args = args.model_copy(update={"versions": pinned})
        config = {**config, "args": args.model_dump(mode="json", exclude_none=True)}
    router = f"{args.model_name}-router"
    override = next((d for d in config.get("deployments") or [] if d.get("name") == router), {})
    raw = override.get("user_config") or default_policy(args)
    versions = [v.version for v in args.versions if v.version is not None]
    try:
        policy = parse_policy(raw, versions)
    except ValueError as exc:
        raise PlatformError(f"application {name!r} has an invalid traffic policy deployed: {exc}") from None
    return ServedApp(name, config, args, policy)


def aliases_of(model: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """alias → version of a registered model (empty when the registry is unreachable or has no model)."""
    from mlflow.exceptions import MlflowException

    from mlplatform.registry import client

    try:
        return {a: str(v) for a, v in client(tracking_uri).get_registered_model(model).aliases.items()}
    except (MlflowException, requests.RequestException):
        return {}


def _with_policy(app: ServedApp, policy: TrafficPolicy, add: list[str]) -> dict[str, Any]:
    """The app's config with `policy` as the router's user_config and versions `add` deployed."""
    config = copy.deepcopy(app.config)
    if add:
        template = app.args.versions[0]
        args = dict(config["args"])
        args["versions"] = [
            *args["versions"],
            *(
                template.model_copy(update={"version": v, "alias": None, "weight": 0.0, "shadow": False}).model_dump(
                    mode="json", exclude_none=True
                )
                for v in add
            ),
        ]
        config["args"] = args
    user_config = policy.model_dump(mode="json", exclude_none=True)
    deployments = [d for d in config.get("deployments") or [] if d.get("name") != app.router]
    deployments.append(
        {
            **next((d for d in config.get("deployments") or [] if d.get("name") == app.router), {}),
            "name": app.router,
            "user_config": user_config,
        }
    )
    config["deployments"] = deployments
    return config


def apply_policy(
    admin: ServeAdmin,
    name: str,
    policy: dict[str, Any],
    *,
    action: str,
    reason: str = "",
    move_aliases: dict[str, str] | None = None,
    by: str = "",
    wait_timeout: float = 600,
) -> history.Event:
    """Validate and apply a traffic policy to application `name`; record it in the deployment history.

    Versions the policy names that are not deployed yet are added (loaded from the registry); the rest
    of the change is a live reconfigure. `move_aliases` (alias → version) are set once traffic has moved,
    so that if Serve refuses the change the aliases still say what serves.

    Raises:
        ConfigError: the policy is invalid for the application (nothing is changed).
        PlatformError: Serve refused or failed the update.
    """
    app = served(admin, name)
    named = set(policy.get("weights", {})) | set(policy.get("faults", {}) or {})
    if policy.get("shadow"):
        named.add(policy["shadow"]["version"])
    from mlplatform.serve.routing import _version_key

    add = sorted({str(_version_key(v)) for v in named} - set(app.versions), key=_natural)
    if add:
        from mlplatform.registry import resolve_version

        for v in add:
            resolve_version(app.args.model_name, v, tracking_uri=app.args.tracking_uri)  # RegistryError if absent
    try:
        checked = parse_policy(policy, app.versions + add)
    except ValueError as exc:
        raise ConfigError(f"traffic change for {name!r} refused: {exc}") from None
    if add:
        # New versions come up with no traffic first: one that fails to load must not get any, and the
        # config goes back to what served before so that Serve stops retrying it.
        before = admin.apply(_with_policy(app, app.policy, add))
        try:
            admin.wait(name, before, timeout=wait_timeout)
        except PlatformError as exc:
            admin.wait(name, admin.apply(app.config), timeout=wait_timeout)
            raise PlatformError(
                f"version(s) {', '.join('v' + v for v in add)} of {app.args.model_name!r} failed to deploy, so "
                f"{name!r} keeps its previous traffic: {exc}"
            ) from None
        app = served(admin, name)
    before = admin.apply(_with_policy(app, checked, []))
    admin.wait(name, before, timeout=wait_timeout)
    if move_aliases:
        from mlplatform.registry import set_aliases

        set_aliases(app.args.model_name, move_aliases, tracking_uri=app.args.tracking_uri)
    return history.record(
        history.Event(
            app=name,
            model=app.args.model_name,
            action=action,
            weights={v: w for v, w in checked.weights.items()},
            shadow=checked.shadow.model_dump() if checked.shadow else None,
            faults={v: f.model_dump() for v, f in checked.faults.items()},
            aliases=aliases_of(app.args.model_name, tracking_uri=app.args.tracking_uri),
            reason=reason,
            by=by,
        ),
        tracking_uri=app.args.tracking_uri,
    )


def _natural(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def set_traffic(
    admin: ServeAdmin,
    name: str,
    weights: dict[str, float] | None = None,
    *,
    shadow: dict[str, Any] | None | bool = False,
    faults: dict[str, Any] | None = None,
    reason: str = "",
) -> history.Event:
    """Change some of the policy and keep the rest: weights, shadow (None clears, False keeps), faults."""
    current = served(admin, name).policy
    policy: dict[str, Any] = {"weights": weights if weights is not None else current.weights}
    if shadow is False:
        if current.shadow is not None:
            policy["shadow"] = current.shadow.model_dump()
    elif shadow is not None:
        policy["shadow"] = shadow
    merged = {v: f.model_dump() for v, f in current.faults.items()}
    if faults is not None:
        merged = {**merged, **faults}
    merged = {v: f for v, f in merged.items() if f and f.get("abort_percent", 0) > 0}
    if merged:
        policy["faults"] = merged
    return apply_policy(admin, name, policy, action="traffic", reason=reason)


def promote(admin: ServeAdmin, name: str, version: str, *, reason: str = "") -> history.Event:
    """Send all traffic to `version` and make it the champion; the old champion becomes `previous`."""
    from mlplatform.serve.routing import _version_key

    version = str(_version_key(version))
    app = served(admin, name)
    policy: dict[str, Any] = {"weights": {version: 100.0}}
    if app.policy.shadow is not None and app.policy.shadow.version != version:
        policy["shadow"] = app.policy.shadow.model_dump()
    old = aliases_of(app.args.model_name, tracking_uri=app.args.tracking_uri).get(CHAMPION)
    moves = {CHAMPION: version, **({PREVIOUS: old} if old and old != version else {})}
    return apply_policy(
        admin, name, policy, action="promote", reason=reason or f"promote v{version}", move_aliases=moves
    )


def rollback(admin: ServeAdmin, name: str, *, reason: str = "") -> history.Event:
    """Restore the state before the latest change (traffic policy and aliases) from the history.

    Rolling back twice returns to where the first rollback started, as `kubectl rollout undo` does.

    Raises:
        PlatformError: the history holds no earlier, different state.
    """
    app = served(admin, name)
    events = history.read(name, tracking_uri=app.args.tracking_uri)
    if not events:
        raise PlatformError(f"application {name!r} has no deployment history to roll back with")
    current = events[-1]
    target = next((e for e in reversed(events[:-1]) if e.state() != current.state()), None)
    if target is None:
        raise PlatformError(
            f"application {name!r} has no earlier state to roll back to ({len(events)} change(s), all the same)"
        )
    why = reason or f"rollback to the state of {target.at} ({target.action} by {target.by})"
    moves = target.aliases if target.aliases and target.aliases != current.aliases else None
    return apply_policy(admin, name, target.policy(), action="rollback", reason=why, move_aliases=moves)
