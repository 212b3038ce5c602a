"""In-memory stand-ins for what the release control plane talks to: Serve's REST API, the registry, the history.

They keep the same contracts as the real ones (`ServeAdmin`, `mlplatform.registry`, `mlplatform.release.history`)
so `TrafficControl` and the rollout loop run their real logic in unit tests; the integration tests run the
same code against a real Ray Serve and MLflow.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from mlplatform.errors import PlatformError, RegistryError
from mlplatform.release.history import Event
from mlplatform.serve.metrics import VersionStats


def app_config(versions: dict[str, float], *, name: str = "churn", model: str = "churn", **policy: Any) -> dict:
    """A deployed application config as Serve's REST API returns it (versions → weight)."""
    return {
        "name": name,
        "route_prefix": "/",
        "import_path": "mlplatform.release.app:build_app",
        "args": {
            "model_name": model,
            "auth": "none",
            "tracking_uri": "http://mlflow",
            "features": ["a", "b"],
            "versions": [{"version": v, "weight": w} for v, w in versions.items()],
        },
        "deployments": [{"name": f"{model}-router", "user_config": {"weights": versions, **policy}}],
    }


class FakeServe:
    """Serve's declarative API: apply() replaces an app's config; versions in `broken` fail to deploy."""

    def __init__(self, **apps: dict) -> None:
        self.apps = {
            name: {"deployed_app_config": cfg, "status": "RUNNING", "last_deployed_time_s": 1.0}
            for name, cfg in apps.items()
        }
        self.broken: set[str] = set()
        self.applied: list[dict] = []
        self.router_answers: list[dict] = [{"last_pinned": {}}]  # what GET /v1/models/{name} says
        self._clock = 1.0

    def details(self) -> dict[str, Any]:
        return {"applications": copy.deepcopy(self.apps)}

    def app(self, name: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        if name not in self.apps:
            raise PlatformError(f"no Serve application {name!r} (running: {sorted(self.apps)})")
        return copy.deepcopy(self.apps[name])

    def apply(self, app_config: dict[str, Any], *, http_options: dict | None = None) -> float:
        previous = self.apps.get(app_config["name"], {}).get("last_deployed_time_s", 0.0)
        self._clock += 1
        versions = {v["version"] for v in app_config["args"]["versions"]}
        status = "DEPLOY_FAILED" if versions & self.broken else "RUNNING"
        self.apps[app_config["name"]] = {
            "deployed_app_config": copy.deepcopy(app_config),
            "status": status,
            "last_deployed_time_s": self._clock,
        }
        self.applied.append(copy.deepcopy(app_config))
        return previous

    def wait(self, name: str, after: float, timeout: float = 600) -> dict[str, Any]:
        app = self.apps[name]
        if app["status"] != "RUNNING":
            raise PlatformError(f"Serve application {name!r} is {app['status']}")
        return app

    def router_status(self, app: str, model: str, tries: int = 4) -> list[dict]:
        return list(self.router_answers)

    def policy(self, name: str = "churn") -> dict[str, Any]:
        """The router user_config deployed now."""
        config = self.apps[name]["deployed_app_config"]
        router = f"{config['args']['model_name']}-router"
        return next(d for d in config["deployments"] if d["name"] == router)["user_config"]


class FakeRegistry:
    """Versions and aliases of registered models."""

    def __init__(self, versions: dict[str, list[str]], aliases: dict[str, dict[str, str]] | None = None) -> None:
        self.versions = versions
        self.aliases = aliases or {}

    def resolve_version(self, name, version=None, alias=None, *, tracking_uri=None) -> str:
        if alias is not None:
            if alias not in self.aliases.get(name, {}):
                raise RegistryError(f"model {name!r} has no alias {alias!r}")
            return self.aliases[name][alias]
        if str(version) not in self.versions.get(name, []):
            raise RegistryError(f"model {name!r} has no version {version!r}")
        return str(version)

    def aliases_of(self, model, *, tracking_uri=None) -> dict[str, str]:
        return dict(self.aliases.get(model, {}))

    def set_aliases(self, name, aliases, *, tracking_uri=None) -> None:
        mine = self.aliases.setdefault(name, {})
        for alias, version in aliases.items():
            if version is None:
                mine.pop(alias, None)
            else:
                mine[alias] = version


class FakeHistory:
    """The change log of every app, with the real one's compare-and-set: a change number is written once."""

    def __init__(self, clock=lambda: 0.0) -> None:
        self.entries: dict[tuple[str, int], Event] = {}
        self.statuses: dict[tuple[str, int], str] = {}
        self.beats: dict[tuple[str, str], float] = {}
        self.clock = clock
        self.before_claim = None  # a hook: another writer acting between a read and a claim
        self.lock, self.locks = threading.Lock(), 0

    @property
    def events(self) -> list[Event]:
        """Every settled change, in order (what `mlplatform history` shows)."""
        return [e for e in self._all() if e.status != "intent"]

    def _all(self, app: str | None = None) -> list[Event]:
        keys = sorted(k for k in self.entries if app is None or k[0] == app)
        return [replace(self.entries[k], status=self.statuses.get(k, "intent")) for k in keys]

    def read(self, app, *, tracking_uri=None) -> list[Event]:
        return self._all(app)

    def claim(self, event, seq, *, tracking_uri=None, lease_s=900) -> Event | None:
        if self.before_claim is not None:
            hook, self.before_claim = self.before_claim, None
            hook()
        if (event.app, seq) in self.entries:
            return None
        stamped = replace(
            event,
            seq=seq,
            id=f"c{seq}",
            at=event.at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
            by=event.by or "tester",
            lease_until=self.clock() + lease_s,
        )
        self.entries[(event.app, seq)] = stamped
        return stamped

    def settle(self, event, status, *, tracking_uri=None) -> bool:
        key = (event.app, event.seq)
        if key in self.statuses:
            return False
        self.statuses[key] = status
        return True

    def heartbeat(self, app, rollout_id, *, tracking_uri=None) -> None:
        self.beats[(app, rollout_id)] = self.clock()

    def heartbeats(self, app, *, tracking_uri=None) -> dict[str, float]:
        return {r: t for (a, r), t in self.beats.items() if a == app}

    @contextmanager
    def serve_config_lock(self, *, tracking_uri=None) -> Iterator[int]:
        with self.lock:
            self.locks += 1
            yield self.locks


class TrafficSim:
    """Requests arriving at a steady rate, split by the deployed weights; a fake clock drives it.

    `sleep(s)` lets `rps * s` requests through; each version answers with its own error rate and latency.
    `read()` returns cumulative per-version stats, as the routers' Prometheus counters do.
    """

    def __init__(self, serve: FakeServe, *, rps: float = 10, app: str = "churn") -> None:
        self.serve, self.rps, self.app = serve, rps, app
        self.error_rate: dict[str, float] = {}
        self.latency_ms: dict[str, float] = {}
        self.stats: dict[str, VersionStats] = {}
        self.slept = 0.0
        self.pinned_to: str | None = None  # a client pinning every request to one version with x-model-version

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        weights = {v: w for v, w in self.serve.policy(self.app)["weights"].items() if w > 0}
        total = sum(weights.values())
        for version, weight in weights.items():
            n = self.rps * seconds * weight / total
            s = self.stats.setdefault(version, VersionStats(latency_buckets={}))
            s.requests += n
            s.errors += n * self.error_rate.get(version, 0.0)
            le = self.latency_ms.get(version, 5.0)
            for bound in (1.0, 5.0, 10.0, 50.0, 100.0, 500.0, math.inf):
                if bound >= le:
                    s.latency_buckets[bound] = s.latency_buckets.get(bound, 0.0) + n

    def read(self) -> dict[str, VersionStats]:
        return {v: replace(s, latency_buckets=dict(s.latency_buckets)) for v, s in self.stats.items()}
