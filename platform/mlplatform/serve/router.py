"""The ingress: HTTP routes (V1 and Open Inference Protocol V2), auth, and the traffic split over versions.

The routes live in `create_app(core)` around a plain `RouterCore`, so they can be exercised with any
awaitable "handles" (unit tests) as well as inside the `Router` Serve deployment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlplatform.serve.metrics import RouterMetrics
from mlplatform.serve.routing import ShadowSpec, TrafficPolicy, WeightedRendezvous, WeightedRoundRobin, parse_policy
from mlplatform.serve.schemas import (
    AppArgs,
    Parsed,
    RequestError,
    load_json,
    parse_v1,
    parse_v2,
    v1_response,
    v2_metadata,
    v2_response,
)
from mlplatform.settings import MLPLATFORM_ADMIN_KEYS, MLPLATFORM_API_KEYS

__all__ = ["Router", "RouterCore", "create_app", "api_keys_from_env", "default_policy"]

logger = logging.getLogger("ray.serve")

VERSION_HEADER = "x-model-version"
READY_TIMEOUT_S = 5.0
#: Shadow copies in flight per router replica; beyond this a copy is dropped (and counted), so a slow
#: shadow version can never pile up work or memory in the router.
MAX_SHADOW_IN_FLIGHT = 256


def api_keys_from_env(environ: Mapping[str, str] | None = None, name: str = MLPLATFORM_API_KEYS.name) -> list[str]:
    """The accepted API keys: $MLPLATFORM_API_KEYS (or `name`) split on commas, blanks dropped."""
    raw = (os.environ if environ is None else environ).get(name, "")
    return [k.strip() for k in raw.split(",") if k.strip()]


#: ``(policy, reason, who) -> history event as a dict``: applies a traffic policy through the control plane.
PolicyApplier = Callable[[dict[str, Any], str, str], dict[str, Any]]


class RouterCore:
    """Everything the routes need: config, per-version handles, the traffic policy and auth.

    Args:
        args: the (resolved) application args; versions are concrete.
        features: the model's input features, in model order.
        handles: version → object whose ``.predict.remote(x)`` and ``.version_info.remote()`` are awaitable.
        api_keys: accepted keys when ``args.auth == "api_key"``.
        policy: the initial traffic policy (a router user_config); default: the versions' weights and shadow.
        admin_keys: keys accepted by the admin (traffic) routes when ``args.auth == "api_key"``; inference keys
            are not admin keys. Without admin keys those routes refuse everyone (403).
        apply_policy: how the admin route applies a change cluster-wide (None: the route answers 503).

    Raises:
        ValueError: auth is api_key but there are no keys.
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
    ):
        self.args = args
        self.model_name = args.model_name
        self.features = list(features)
        self.handles = {str(v): h for v, h in handles.items()}
        self.versions = list(self.handles)
        self.served = ",".join(self.versions)
        if args.auth == "api_key" and not api_keys:
            raise ValueError(
                "auth is 'api_key' but $MLPLATFORM_API_KEYS is empty on the router replica; set it (e.g. in "
                "the application's runtime_env env_vars) or use auth: none for a local demo"
            )
        self._keys = [k.encode() for k in (api_keys or [])]
        self._admin_keys = [k.encode() for k in (admin_keys or [])]
        self.apply_policy = apply_policy
        self.metrics = RouterMetrics(self.model_name)
        self._shadow_tasks: set[asyncio.Task] = set()
        self._shadow_credit = 0.0
        self.shadow_outcomes: Counter[str] = Counter()
        self._shadow_diff_sum = 0.0
        self.set_policy(policy or default_policy(args))

    # --------------------------------------------------------------------------------------- state

    def set_policy(self, user_config: Any) -> None:
        """Apply a router user_config (weights, shadow, faults); on ValueError the old policy stays."""
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
        shadow = None
        if self.policy.shadow is not None:
            compared = self.shadow_outcomes["ok"]
            shadow = {
                **self.policy.shadow.model_dump(),
                "outcomes": dict(self.shadow_outcomes),
                "mean_abs_diff": round(self._shadow_diff_sum / compared, 6) if compared else None,
            }
        return {
            "name": self.model_name,
            "versions": self.weights,
            "shadow": shadow,
            "sticky": self.args.sticky.model_dump(exclude_none=True) if self.args.sticky else None,
            "faults": {v: f.model_dump() for v, f in self._faults.items()},
        }

    # ------------------------------------------------------------------------------------- checks

    def check_auth(self, request: Request, *, admin: bool = False) -> str:
        """401 without a bearer token, 403 with a wrong one; a no-op when auth is none.

        Returns:
            Who the caller is, for the deployment history: a short fingerprint of the key, never the key.
        """
        if self.args.auth == "none":
            return "anonymous (auth: none)"
        header = request.headers.get("authorization")
        if not header:
            raise RequestError(401, "missing Authorization header; send 'Authorization: Bearer <key>'")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "Authorization header must be 'Bearer <key>'")
        presented = token.strip().encode()
        keys = self._admin_keys if admin else self._keys
        # Compare against every key in constant time; never log the key.
        if not any(hmac.compare_digest(presented, key) for key in keys):
            raise RequestError(403, "admin API key not accepted" if admin else "API key not accepted")
        return "key:" + hashlib.sha256(presented).hexdigest()[:8]

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise RequestError(404, f"model {name!r} is not served here; this endpoint serves {self.model_name!r}")

    def check_version(self, version: str) -> str:
        """A deployed version named by a client ('3' or 'v3'), else 404."""
        if version in self.handles:
            return version
        if version[:1] in ("v", "V") and version[1:] in self.handles:
            return version[1:]
        raise RequestError(
            404,
            f"version {version!r} of model {self.model_name!r} is not deployed here (deployed: {self.versions})",
        )

    async def read_body(self, request: Request) -> bytes:
        """The raw body, refusing (413) anything over max_body_bytes before reading all of it."""
        limit = self.args.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # ---------------------------------------------------------------------------------------- work

    def routing_key(self, request: Request, parsed: Parsed) -> str | None:
        """The sticky routing key of a request: from the configured header, else from the body field."""
        sticky = self.args.sticky
        if sticky is None:
            return None
        if sticky.header:
            value = request.headers.get(sticky.header)
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

    async def predict(self, version: str, x: np.ndarray) -> np.ndarray:
        """Predictions from one version (mirrored to the shadow, if any); a failure is a 5xx naming the version."""
        started = time.perf_counter()
        shadow = self._shadow_for(version)
        copy = asyncio.ensure_future(self._shadow_call(shadow, x)) if shadow else None
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
        except RequestError as err:
            self.metrics.answered(version, err.status, 1000 * (time.perf_counter() - started))
            if copy is not None:
                self._track(self._compare(shadow, copy, None))
            raise
        preds = np.asarray(preds)
        self.metrics.answered(version, 200, 1000 * (time.perf_counter() - started), preds.ravel())
        if copy is not None:
            self._track(self._compare(shadow, copy, preds))
        return preds

    # ------------------------------------------------------------------------------------- shadow

    def _shadow_for(self, version: str) -> ShadowSpec | None:
        """The shadow spec when this request is to be mirrored (a deterministic share of `percent`)."""
        shadow = self.policy.shadow
        if shadow is None or shadow.version == version:
            return None
        self._shadow_credit += shadow.percent
        if self._shadow_credit < 100:
            return None
        self._shadow_credit -= 100
        if len(self._shadow_tasks) >= MAX_SHADOW_IN_FLIGHT:
            self._shadow_outcome(shadow.version, "dropped")
            return None
        return shadow

    async def _shadow_call(self, shadow: ShadowSpec, x: np.ndarray) -> np.ndarray:
        async def call() -> Any:
            return await self.handles[shadow.version].predict.remote(x)

        return np.asarray(await asyncio.wait_for(call(), shadow.timeout_s))

    async def _compare(self, shadow: ShadowSpec, copy: asyncio.Future, served: np.ndarray | None) -> None:
        """Wait for the shadow's answer and record how it went; never raises (the client is long gone)."""
        try:
            answer = await copy
        except asyncio.TimeoutError:
            self._shadow_outcome(shadow.version, "timeout")
            return
        except Exception as exc:  # a failing shadow must never touch the client: count it and move on
            logger.debug("shadow version %s failed: %s", shadow.version, exc)
            self._shadow_outcome(shadow.version, "error")
            return
        diff = None
        if served is not None and answer.shape == served.shape:
            diff = float(np.mean(np.abs(answer.astype(np.float64) - served.astype(np.float64))))
            self._shadow_diff_sum += diff
        self._shadow_outcome(shadow.version, "ok", diff)

    def _shadow_outcome(self, version: str, outcome: str, diff: float | None = None) -> None:
        self.shadow_outcomes[outcome] += 1
        self.metrics.shadowed(version, outcome, diff)

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def not_ready(self) -> dict[str, str]:
        """version → why it is not ready, for every version that does not answer `version_info` in time."""

        async def probe(version: str) -> str | None:
            try:
                await asyncio.wait_for(self.handles[version].version_info.remote(), READY_TIMEOUT_S)
                return None
            except asyncio.TimeoutError:
                return f"no answer within {READY_TIMEOUT_S:g}s"
            except Exception as exc:
                return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"

        results = await asyncio.gather(*(probe(v) for v in self.versions))
        return {v: r for v, r in zip(self.versions, results, strict=True) if r is not None}


def default_policy(args: AppArgs) -> dict[str, Any]:
    """The router user_config the versions of `args` describe: their weights and the shadow version, if any."""
    policy: dict[str, Any] = {"weights": {v.version: v.weight for v in args.versions}}
    shadows = [v for v in args.versions if v.shadow]
    if shadows:
        policy["shadow"] = {"version": shadows[0].version}
    return policy


def _apply_through_serve(policy: dict[str, Any], reason: str, who: str) -> dict[str, Any]:
    """Apply a policy to this replica's application the way `mlplatform traffic set` does (a `PolicyApplier`)."""
    from dataclasses import asdict

    from mlplatform import traffic

    event = traffic.apply_policy(
        traffic.ServeAdmin(), serve.get_replica_context().app_name, policy, action="traffic", reason=reason, by=who
    )
    return asdict(event)


class _VersionHeader:
    """ASGI middleware: every response carries x-model-version, and nothing escapes as a bare 500.

    Routes that served a prediction set the header to that version; every other response (errors, health,
    unknown paths) gets the served versions joined by ",".
    """

    def __init__(self, app: Any, served: str) -> None:
        self.app = app
        self.header = (VERSION_HEADER.encode(), served.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_header(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == self.header[0] for k, _ in headers):
                    headers.append(self.header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        except Exception:
            logger.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse({"error": "internal error in the router; see the replica logs"}, status_code=500)
            await response(scope, receive, send_with_header)


def create_app(core: RouterCore) -> FastAPI:
    """The FastAPI app of the endpoint around `core`.

    Routes: ``POST /v1/models/{name}:predict``, ``GET /v1/models/{name}``, ``POST /v2/models/{name}/infer``
    (and ``/versions/{v}/infer``), ``GET /v2/models/{name}`` (metadata), ``GET /v2/models/{name}/ready``,
    ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``.
    """
    # No docs/openapi routes: the endpoint is an API, and they would bypass auth.
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    args = core.args
    routing_field = args.sticky.field if args.sticky else None

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error(400, f"invalid request: {problems}")

    # ------------------------------------------------------------------------------------- V1

    @app.post("/v1/models/{name}:predict")
    async def v1_predict(name: str, request: Request) -> JSONResponse:
        core.check_auth(request)
        core.check_model(name)
        requested = request.headers.get(VERSION_HEADER)
        if requested:
            core.check_version(requested.strip())
        body = await core.read_body(request)
        parsed = parse_v1(
            body,
            core.features,
            max_instances=args.max_instances,
            allow_missing=args.allow_missing,
            routing_field=routing_field,
        )
        version = core.choose(requested, core.routing_key(request, parsed))
        preds = await core.predict(version, parsed.x)
        return JSONResponse(v1_response(preds, version), headers={VERSION_HEADER: version})

    @app.get("/v1/models/{name}")
    async def v1_status(name: str) -> JSONResponse:
        # KServe's V1 "model ready" route; open like the other health routes.
        core.check_model(name)
        failing = await core.not_ready()
        body = {**core.status(), "ready": not failing}
        if failing:
            return error(503, f"versions not ready: {failing}", **body)
        return JSONResponse(body)

    # ------------------------------------------------------------------------------------- V2

    async def v2_infer(name: str, forced: str | None, request: Request) -> JSONResponse:
        core.check_auth(request)
        core.check_model(name)
        requested = forced or request.headers.get(VERSION_HEADER)
        if requested:
            core.check_version(requested.strip())
        if "inference-header-content-length" in request.headers:
            raise RequestError(400, "binary tensor data is not supported; send JSON tensors (binary_data=False)")
        body = await core.read_body(request)
        parsed = parse_v2(
            body,
            core.features,
            max_instances=args.max_instances,
            allow_missing=args.allow_missing,
            routing_field=routing_field,
        )
        version = core.choose(requested, core.routing_key(request, parsed))
        preds = await core.predict(version, parsed.x)
        return JSONResponse(
            v2_response(core.model_name, version, preds, parsed.request_id), headers={VERSION_HEADER: version}
        )

    @app.post("/v2/models/{name}/infer")
    async def v2_infer_any(name: str, request: Request) -> JSONResponse:
        return await v2_infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer_version(name: str, version: str, request: Request) -> JSONResponse:
        return await v2_infer(name, version, request)

    @app.get("/v2/models/{name}")
    async def v2_model_metadata(name: str, request: Request) -> JSONResponse:
        core.check_auth(request)
        core.check_model(name)
        return JSONResponse(v2_metadata(core.model_name, core.versions, core.features))

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_version_metadata(name: str, version: str, request: Request) -> JSONResponse:
        core.check_auth(request)
        core.check_model(name)
        v = core.check_version(version)
        return JSONResponse(v2_metadata(core.model_name, [v], core.features), headers={VERSION_HEADER: v})

    async def ready(name: str | None, version: str | None) -> JSONResponse:
        if name is not None:
            core.check_model(name)
        failing = await core.not_ready()
        if version is not None:
            v = core.check_version(version)
            failing = {k: r for k, r in failing.items() if k == v}
        body: dict[str, Any] = {"name": core.model_name} if name is not None else {}
        if failing:
            return error(503, f"versions not ready: {failing}", ready=False, **body)
        return JSONResponse({**body, "ready": True})

    @app.get("/v2/health/ready")
    async def v2_server_ready() -> JSONResponse:
        return await ready(None, None)

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> JSONResponse:
        return await ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_version_ready(name: str, version: str) -> JSONResponse:
        return await ready(name, version)

    # ---------------------------------------------------------------------------------- admin

    @app.get("/admin/v1/models/{name}/traffic")
    async def admin_traffic(name: str, request: Request) -> JSONResponse:
        core.check_auth(request, admin=True)
        core.check_model(name)
        return JSONResponse(core.status())

    @app.put("/admin/v1/models/{name}/traffic")
    async def admin_set_traffic(name: str, request: Request) -> JSONResponse:
        who = core.check_auth(request, admin=True)
        core.check_model(name)
        doc = load_json(await core.read_body(request))
        if not isinstance(doc, dict):
            raise RequestError(400, "body must be a JSON object: {weights, shadow?, faults?, reason?}")
        reason = doc.pop("reason", "")
        if not isinstance(reason, str):
            raise RequestError(400, "'reason' must be a string")
        try:
            parse_policy(doc, core.versions)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None
        if core.apply_policy is None:
            raise RequestError(503, "traffic changes need the Serve control plane, which this replica cannot reach")
        try:
            # Through Serve's declarative config, so every router replica (and the deployed config) agrees.
            event = await asyncio.to_thread(core.apply_policy, doc, reason, who)
        except Exception as exc:
            logger.warning("admin traffic change failed: %s: %s", type(exc).__name__, exc)
            raise RequestError(502, f"the control plane refused the change: {exc}") from None
        return JSONResponse(event)

    @app.get("/v2/health/live")
    async def v2_live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2")
    async def v2_server_metadata() -> JSONResponse:
        from mlplatform import __version__

        return JSONResponse({"name": "mlplatform", "version": __version__, "extensions": []})

    app.add_middleware(_VersionHeader, served=core.served)
    return app


@serve.deployment
@serve.ingress()
class Router:
    """The ingress deployment: routes requests to the version deployments by weight.

    Args:
        args: the resolved `AppArgs` as a dict (versions concrete).
        features: the model's input features, in model order.
        handles: version → DeploymentHandle of its `ModelVersion` deployment (empty with ``colocate``).
        loader: with ``colocate``, the model loader each replica uses to load every version itself.
    """

    def __init__(self, args: dict[str, Any], features: list[str], handles: dict[str, Any], loader: Any = None) -> None:
        parsed = AppArgs.model_validate(args)
        if parsed.colocate:
            from mlplatform.serve.model import LocalVersion, load_booster

            handles = {
                v.version: LocalVersion(
                    parsed.model_name, v.version, parsed.tracking_uri, loader or load_booster, features
                )
                for v in parsed.versions
            }
        keys = api_keys_from_env() if parsed.auth == "api_key" else None
        admin_keys = api_keys_from_env(name=MLPLATFORM_ADMIN_KEYS.name) if parsed.auth == "api_key" else None
        self.core = RouterCore(
            parsed, features, handles, api_keys=keys, admin_keys=admin_keys, apply_policy=_apply_through_serve
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a traffic policy (weights, shadow, faults) live; a ValueError makes Serve reject the config."""
        self.core.set_policy(user_config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Late-bound ASGI app (serve.ingress() without an app): built after __init__, so the routes close
        # over this replica's RouterCore instead of looking it up from the replica context per request.
        return create_app(self.core)
