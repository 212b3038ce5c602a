"""The router: picks a version for each request, calls it, and tells the observers what was served.

`RouterCore` is plain Python around awaitable "handles" (a DeploymentHandle per version, a version loaded in
the router replica, or a fake in unit tests): the traffic policy (split, sticky keys, faults), the shadow
copy, per-version metrics and readiness. The HTTP routes around it are in `mlplatform.serve.endpoint`.

Observers are the extension point of the data plane: callables the app builder passes in, called once
per answered request with a `ServedRequest` (the inference log plugs in here). They run on the request
path, so they must only hand the record over (append to a buffer); one that raises is logged and counted,
and the client still gets its answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.data.schema import InputSchema
from mlplatform.errors import RequestError
from mlplatform.serve.auth import ApiKeyAuth
from mlplatform.serve.config import AppArgs
from mlplatform.serve.metrics import RouterMetrics
from mlplatform.serve.policy import TrafficPolicy, normalize_version, parse_policy
from mlplatform.serve.protocol import Parsed, clip, codebook
from mlplatform.serve.shadow import ShadowMirror
from mlplatform.serve.split import WeightedRendezvous, WeightedRoundRobin

__all__ = ["RouterCore", "ServedRequest", "RequestObserver", "PolicyApplier", "READY_TIMEOUT_S"]

logger = logging.getLogger("ray.serve")

READY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServedRequest:
    """One answered request, as observers see it.

    Attributes:
        app: the Serve application.
        model: the registered model name.
        version: the version that answered.
        request_id: the request's id: its x-request-id (the client's, the one Serve's proxy set, or the router's).
        features: the rows as the model received them ([n, features] float32, NaN = missing).
        prediction: the model's answer, one value per row.
        latency_ms: time spent in the router for this request's prediction.
        route: how the version was chosen: ``weighted``, ``sticky`` or ``pinned`` (the client named it).
    """

    app: str
    model: str
    version: str
    request_id: str | None
    features: np.ndarray
    prediction: np.ndarray
    latency_ms: float
    route: str


#: An observer: called with every answered request; must return quickly and never block.
RequestObserver = Callable[[ServedRequest], None]

#: ``(policy, reason, who) -> history event as a dict``: applies a traffic policy through the release control
#: plane (the admin route's way to change traffic cluster-wide); the app builder passes it in.
PolicyApplier = Callable[[dict[str, Any], str, str], dict[str, Any]]


class RouterCore:
    """Everything the routes need: config, per-version handles, the traffic policy, auth and observers.

    Args:
        args: the (resolved) application args; versions are concrete.
        features: the model's input features, in model order.
        handles: version → object whose ``.predict.remote(x)`` and ``.version_info.remote()`` are awaitable.
        api_keys: accepted inference keys (default: $MLPLATFORM_API_KEYS when ``args.auth == "api_key"``).
        policy: the initial traffic policy (a router user_config); default: the versions' weights and shadow.
        admin_keys: keys of the admin (traffic) routes (default: $MLPLATFORM_ADMIN_KEYS); inference keys are
            not admin keys, and without admin keys those routes refuse everyone (403).
        apply_policy: how the admin route applies a change cluster-wide (None: the route answers 503).
        observers: called with every answered request (see `ServedRequest`).
        app_name: the Serve application, for observers (default: the model name).
        schema: the versions' input schema: its categorical features take raw values (None: numbers only).

    Raises:
        ConfigError: auth is api_key but there are no keys.
    """

    def __init__(
        self,
        args: AppArgs,
        features: list[str],
        handles: Mapping[str, Any],
        api_keys: list[str] | None = None,
        policy: dict[str, Any] | None = None,
        admin_keys: list[str] | None = None,
        apply_policy: PolicyApplier | None = None,
        observers: Sequence[RequestObserver] = (),
        app_name: str | None = None,
        schema: InputSchema | None = None,
    ):
        self.args = args
        self.model_name = args.model_name
        self.app_name = app_name or args.model_name
        self.features = list(features)
        self.schema = schema
        self.codes = codebook(schema.categories() if schema is not None else None)
        self.handles = {str(v): h for v, h in handles.items()}
        self.versions = list(self.handles)
        self.served = ",".join(self.versions)
        self.auth = ApiKeyAuth(args.auth, api_keys, admin_keys, args.allowed_hosts)
        self.apply_policy = apply_policy
        self.observers = list(observers)
        self.observer_failures = 0
        #: version → when this replica last answered a request pinned to it (x-model-version): a version that
        #: clients still pin must not be retired.
        self.last_pinned: dict[str, float] = {}
        self.metrics = RouterMetrics(self.model_name)
        self.shadow = ShadowMirror(self.handles, self.metrics)
        self.set_policy(policy or args.default_policy())

    # --------------------------------------------------------------------------------------- state

    def set_policy(self, user_config: Any) -> None:
        """Apply a router user_config (weights, shadow, faults); on ConfigError the old policy stays."""
        policy = parse_policy(user_config, self.versions)
        # Build everything first and swap by assignment, so a request never sees a half-updated policy.
        balancer, ring = WeightedRoundRobin(policy.weights), WeightedRendezvous(policy.weights)
        self._balancer, self._ring = balancer, ring
        self._faults = {v: f for v, f in policy.faults.items() if f.abort_percent > 0}
        self.policy: TrafficPolicy = policy
        self.weights = policy.weights
        logger.info(
            "traffic policy for %s: weights %s, shadow %s, faults %s",
            self.model_name,
            policy.weights,
            policy.shadow.model_dump() if policy.shadow else None,
            {v: f.model_dump() for v, f in self._faults.items()} or None,
        )

    def status(self) -> dict[str, Any]:
        """The policy this replica applies, and its shadow tallies (for `GET /v1/models/{name}`)."""
        return {
            "name": self.model_name,
            "versions": self.weights,
            "shadow": self.shadow.status(self.policy.shadow),
            "sticky": self.args.sticky.model_dump(exclude_none=True) if self.args.sticky else None,
            "faults": {v: f.model_dump() for v, f in self._faults.items()},
            "last_pinned": dict(self.last_pinned),
        }

    # ------------------------------------------------------------------------------------- checks

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise RequestError(
                404, f"model {clip(name)!r} is not served here; this endpoint serves {self.model_name!r}"
            )

    def check_version(self, version: str) -> str:
        """A deployed version named by a client ('3' or 'v3'), else 404."""
        named = normalize_version(version)
        if named in self.handles:
            return named
        raise RequestError(
            404,
            f"version {clip(version)!r} of model {self.model_name!r} is not deployed here (deployed: {self.versions})",
        )

    # ---------------------------------------------------------------------------------------- work

    def routing_key(self, headers: Mapping[str, str], parsed: Parsed) -> str | None:
        """The sticky routing key of a request: from the configured header, else from the body field."""
        sticky = self.args.sticky
        if sticky is None:
            return None
        if sticky.header:
            value = headers.get(sticky.header)
            return value.strip() or None if value is not None else None
        return parsed.routing_key

    def choose(self, requested: str | None, key: str | None = None) -> str:
        """The version for a request: the one named by the x-model-version header, else the routing key's
        version on the consistent-hash ring, else the weighted round robin pick."""
        if requested:
            return self.check_version(requested.strip())
        if key is not None:
            return self._ring.pick(key)
        return self._balancer.pick()

    async def predict(
        self, version: str, x: np.ndarray, *, request_id: str | None = None, route: str = "weighted"
    ) -> np.ndarray:
        """Predictions from one version (mirrored to the shadow, if any); a failure is a 5xx naming the version."""
        started = time.perf_counter()
        copy = self.shadow.start(self.policy.shadow, version, x)
        fault = self._faults.get(version)
        try:
            if fault is not None and random.random() * 100 < fault.abort_percent:
                raise RequestError(
                    fault.status,
                    f"model version {version} failed: injected fault ({fault.abort_percent:g}% of requests)",
                )
            try:
                preds = await self.handles[version].predict.remote(x)
            except Exception as exc:
                cause = getattr(exc, "cause", None) or exc
                first = (str(cause).strip().splitlines() or [""])[0][:300]
                logger.warning(
                    "model version %s of %s failed: %s: %s", version, self.model_name, type(cause).__name__, first
                )
                raise RequestError(503, f"model version {version} failed: {type(cause).__name__}: {first}") from None
            preds = np.asarray(preds)
            if preds.dtype.kind == "f" and not np.isfinite(preds).all():
                # JSON has no NaN or infinity: the version failed on this input, it is not a server bug.
                raise RequestError(503, f"model version {version} failed: it predicted NaN or an infinity")
        except RequestError as err:
            self.metrics.answered(version, err.status, 1000 * (time.perf_counter() - started), route=route)
            self.shadow.settle(copy, None)
            raise
        latency_ms = 1000 * (time.perf_counter() - started)
        if route == "pinned":
            self.last_pinned[version] = time.time()
        self.metrics.answered(version, 200, latency_ms, preds.ravel(), route=route)
        self.shadow.settle(copy, preds)
        if self.observers:
            self._observe(
                ServedRequest(self.app_name, self.model_name, version, request_id, x, preds, latency_ms, route)
            )
        return preds

    def _observe(self, record: ServedRequest) -> None:
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # an observer must never cost a client its answer
                self.observer_failures += 1
                if self.observer_failures == 1 or self.observer_failures % 1000 == 0:
                    logger.exception("request observer %r failed (%d so far)", observer, self.observer_failures)

    async def not_ready(self, versions: list[str] | None = None) -> dict[str, str]:
        """version → why it is not ready, for every version with traffic (weight > 0) that does not answer
        `version_info` in time (or of `versions`, when given). A version at weight 0 (kept for pinned requests, a
        shadow, or a rollback) being down does not make the endpoint unready: no client of the split notices."""

        async def probe(version: str) -> str | None:
            try:
                await asyncio.wait_for(self.handles[version].version_info.remote(), READY_TIMEOUT_S)
                return None
            except asyncio.TimeoutError:
                return f"no answer within {READY_TIMEOUT_S:g}s"
            except Exception as exc:
                return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"

        serving = versions if versions is not None else [v for v in self.versions if self.weights.get(v, 0) > 0]
        results = await asyncio.gather(*(probe(v) for v in serving))
        return {v: r for v, r in zip(serving, results, strict=True) if r is not None}
