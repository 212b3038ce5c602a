"""The ingress: HTTP routes (V1 and Open Inference Protocol V2), auth, and the traffic split over versions.

The routes live in `create_app(core)` around a plain `RouterCore`, so they can be exercised with any
awaitable "handles" (unit tests) as well as inside the `Router` Serve deployment.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlplatform.serve.routing import WeightedRoundRobin, parse_weights
from mlplatform.serve.schemas import (
    AppArgs,
    RequestError,
    parse_v1,
    parse_v2,
    v1_response,
    v2_metadata,
    v2_response,
)
from mlplatform.settings import MLPLATFORM_API_KEYS

__all__ = ["Router", "RouterCore", "create_app", "api_keys_from_env"]

logger = logging.getLogger("ray.serve")

VERSION_HEADER = "x-model-version"
READY_TIMEOUT_S = 5.0


def api_keys_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The accepted API keys: $MLPLATFORM_API_KEYS split on commas, blanks dropped."""
    raw = (os.environ if environ is None else environ).get(MLPLATFORM_API_KEYS.name, "")
    return [k.strip() for k in raw.split(",") if k.strip()]


class RouterCore:
    """Everything the routes need: config, per-version handles, the weighted split and auth.

    Args:
        args: the (resolved) application args; versions are concrete.
        features: the model's input features, in model order.
        handles: version → object whose ``.predict.remote(x)`` and ``.version_info.remote()`` are awaitable.
        api_keys: accepted keys when ``args.auth == "api_key"``.

    Raises:
        ValueError: auth is api_key but there are no keys.
    """

    def __init__(
        self,
        args: AppArgs,
        features: list[str],
        handles: Mapping[str, Any],
        api_keys: list[str] | None = None,
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
        self.set_weights({"weights": {v.version: v.weight for v in args.versions}})

    # --------------------------------------------------------------------------------------- state

    def set_weights(self, user_config: Any) -> None:
        """Apply ``{"weights": {version: weight}}``; on ValueError the old split stays."""
        weights = parse_weights(user_config, self.versions)
        # Swap in a whole new balancer so a concurrent pick never sees half-updated state.
        self._balancer = WeightedRoundRobin(weights)
        self.weights = weights
        logger.info("traffic split for %s: %s", self.model_name, weights)

    # ------------------------------------------------------------------------------------- checks

    def check_auth(self, request: Request) -> None:
        """401 without a bearer token, 403 with a wrong one; a no-op when auth is none."""
        if self.args.auth == "none":
            return
        header = request.headers.get("authorization")
        if not header:
            raise RequestError(401, "missing Authorization header; send 'Authorization: Bearer <key>'")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "Authorization header must be 'Bearer <key>'")
        presented = token.strip().encode()
        # Compare against every key in constant time; never log the key.
        if not any(hmac.compare_digest(presented, key) for key in self._keys):
            raise RequestError(403, "API key not accepted")

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

    def choose(self, requested: str | None) -> str:
        """The version for a request: the one named by the x-model-version header, else the weighted pick."""
        if requested:
            return self.check_version(requested.strip())
        return self._balancer.pick()

    async def predict(self, version: str, x: np.ndarray) -> np.ndarray:
        """Predictions from one version; any failure there is a 503 naming the version."""
        try:
            return await self.handles[version].predict.remote(x)
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            first = (str(cause).strip().splitlines() or [""])[0][:300]
            logger.warning(
                "model version %s of %s failed: %s: %s", version, self.model_name, type(cause).__name__, first
            )
            raise RequestError(503, f"model version {version} failed: {type(cause).__name__}: {first}") from None

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
        x = parse_v1(body, core.features, max_instances=args.max_instances, allow_missing=args.allow_missing)
        version = core.choose(requested)
        preds = await core.predict(version, x)
        return JSONResponse(v1_response(preds, version), headers={VERSION_HEADER: version})

    @app.get("/v1/models/{name}")
    async def v1_status(name: str) -> JSONResponse:
        # KServe's V1 "model ready" route; open like the other health routes.
        core.check_model(name)
        failing = await core.not_ready()
        body = {"name": core.model_name, "ready": not failing, "versions": core.weights}
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
        x, request_id = parse_v2(
            body, core.features, max_instances=args.max_instances, allow_missing=args.allow_missing
        )
        version = core.choose(requested)
        preds = await core.predict(version, x)
        return JSONResponse(v2_response(core.model_name, version, preds, request_id), headers={VERSION_HEADER: version})

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
        handles: version → DeploymentHandle of its `ModelVersion` deployment.
    """

    def __init__(self, args: dict[str, Any], features: list[str], handles: dict[str, Any]) -> None:
        parsed = AppArgs.model_validate(args)
        keys = api_keys_from_env() if parsed.auth == "api_key" else None
        self.core = RouterCore(parsed, features, handles, api_keys=keys)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``{"weights": {version: weight}}`` live; a ValueError makes Serve reject the config."""
        self.core.set_weights(user_config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Late-bound ASGI app (serve.ingress() without an app): built after __init__, so the routes close
        # over this replica's RouterCore instead of looking it up from the replica context per request.
        return create_app(self.core)
