"""The endpoint: HTTP routes (V1, Open Inference Protocol V2, admin) around a `RouterCore`, and the ingress
deployment that hosts them.

The routes live in `create_app(core)`, so they can be exercised with any awaitable "handles" (unit tests)
as well as inside the `Router` Serve deployment. Every refusal is a `RequestError` turned into a JSON 4xx
naming the problem; nothing a client sends surfaces as a 500, and every response carries x-model-version.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlplatform.data.schema import InputSchema
from mlplatform.errors import ConfigError, RequestError
from mlplatform.registry import load_booster
from mlplatform.serve.config import AppArgs
from mlplatform.serve.inference_log import InferenceLog, label_code
from mlplatform.serve.model import Loader, LocalVersion
from mlplatform.serve.openapi import openapi_document
from mlplatform.serve.policy import parse_policy
from mlplatform.serve.protocol import (
    BINARY_HEADER,
    Parsed,
    clip,
    load_json,
    parse_v1,
    parse_v2,
    v1_response,
    v2_binary_response,
    v2_metadata,
    v2_response,
)
from mlplatform.serve.router import PolicyApplier, RequestObserver, RouterCore

__all__ = ["Router", "create_app", "VERSION_HEADER", "REQUEST_ID_HEADER", "HOT_ROUTES"]

logger = logging.getLogger("ray.serve")

VERSION_HEADER = "x-model-version"
REQUEST_ID_HEADER = "x-request-id"


def _package_version() -> str:
    try:
        return version("mlplatform")
    except PackageNotFoundError:  # run from a source tree (a job's working_dir) without an install
        return "unknown"


#: What a body may be: JSON everywhere; the V2 routes also take the binary tensor extension.
JSON_ONLY = ("application/json",)
JSON_OR_BINARY = ("application/json", "application/octet-stream")


async def read_body(receive: Any, headers: Mapping[str, str], limit: int, media: tuple[str, ...] = JSON_ONLY) -> bytes:
    """The raw body from an ASGI `receive`, refusing (413) anything over `limit` bytes before reading all of it,
    and (415) a body that says it is something else than `media` — a form or text/plain, which a web page can
    send anywhere without asking: a body that names no type is read as `media` says."""
    given = headers.get("content-type")
    if given is not None and given.partition(";")[0].strip().lower() not in media:
        raise RequestError(415, f"Content-Type {clip(given)!r} is not accepted here; send {' or '.join(media)}")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client is gone, nobody reads an answer
            raise RequestError(400, "the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _request_id(value: str | None) -> str | None:
    """A client's request id if it is one we can log and echo: 1–128 printable ASCII characters, else None."""
    if value is not None and 0 < len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


class _ResponseHeaders:
    """ASGI middleware: every response carries x-model-version and x-request-id, and nothing escapes as a bare 500.

    Routes that served a prediction set x-model-version to that version; every other response (errors,
    health, unknown paths) gets the served versions joined by ",". The request's id is its x-request-id
    header — the client's, or the one Serve's proxy made and will echo on the response — else a new one,
    which this middleware then returns itself; it is the id the inference log and feedback use.
    """

    def __init__(self, app: Any, served: str) -> None:
        self.app = app
        self.header = (VERSION_HEADER.encode(), served.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        state["request_id"] = _request_id(given) or uuid.uuid4().hex
        echo = given is None  # a request id that came in is echoed by whoever set it (Serve's proxy)
        started = False

        async def send_with_header(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == self.header[0] for k, _ in headers):
                    headers.append(self.header)
                if echo:
                    headers.append((REQUEST_ID_HEADER.encode(), state["request_id"].encode()))
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


class _Answer(NamedTuple):
    """What a hot route answers: status, body, the version that answered, and for binary V2 the header length."""

    status: int
    body: bytes
    version: str
    media_type: str = "application/json"
    header_length: int | None = None


def _json_bytes(doc: Any) -> bytes:
    # As Starlette's JSONResponse renders it (no NaN: a prediction that is not a number is an error, not JSON).
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


#: FastAPI (>= 0.13x) traces and measures every request with OpenTelemetry once a global provider exists (Ray's
#: metrics may install one in the replica): Serve and `RouterMetrics` already measure each request, so it is off.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)

#: The inference routes, served by `_HotRoutes` (method, path as in the OpenAPI document).
HOT_ROUTES = (
    ("POST", "/v1/models/{name}:predict"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
)
_V1 = re.compile(r"^/v1/models/([^/]+):predict$")
_V2 = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
#: The request headers `_HotRoutes` hands its guard.
_GUARDED = (b"host", b"origin")


def _route_path(scope: dict) -> str:
    """The request's path below the application's route prefix (Serve passes a prefix such as /tumours as the
    ASGI root_path and the whole path in `path`; Starlette's router strips it the same way)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class _HotRoutes:
    """ASGI middleware serving the inference routes without FastAPI's routing, dependency solving and request
    objects: they carry nearly all the traffic, and those layers cost more CPU per request than parsing the
    body and predicting a row (BENCHMARKS.md). Every other route goes on to FastAPI.

    `infer(route, name, version, scope, receive)` answers one request (route ``v1`` or ``v2``); a RequestError
    becomes a JSON error as FastAPI's handlers would answer it.

    It also refuses, on every route, a request whose Host or Origin the endpoint does not answer for
    (`guard`, `ApiKeyAuth.check_origin`): the one place every request passes.
    """

    def __init__(
        self, app: Any, infer: Callable[..., Awaitable[_Answer]], guard: Callable[[Mapping[str, str]], None]
    ) -> None:
        self.app = app
        self.infer = infer
        self.guard = guard

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        match = (_V1.match(path), None) if path.startswith("/v1/") else (None, _V2.match(path))
        headers: list[tuple[bytes, bytes]] = []
        try:
            self.guard({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _GUARDED})
        except RequestError as exc:
            answer = _Answer(exc.status, _json_bytes({"error": exc.message}), "")
        else:
            if match == (None, None):
                await self.app(scope, receive, send)
                return
            answer = await self._answer(scope, receive, path, match, headers)
        headers += [(b"content-type", answer.media_type.encode()), (b"content-length", str(len(answer.body)).encode())]
        if answer.version:
            headers.append((VERSION_HEADER.encode(), answer.version.encode()))
        if answer.header_length is not None:
            headers.append((BINARY_HEADER.encode(), str(answer.header_length).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _answer(self, scope: dict, receive: Any, path: str, match: tuple, headers: list) -> _Answer:
        """One inference request's answer; `headers` gets the extra response headers it needs."""
        if scope["method"] != "POST":
            message = f"method {clip(scope['method'])} is not allowed on {clip(path, 200)}"
            answer = _Answer(405, _json_bytes({"error": message}), "")
            headers.append((b"allow", b"POST"))
        else:
            v1, v2 = match
            try:
                if v1 is not None:
                    answer = await self.infer("v1", v1.group(1), None, scope, receive)
                else:
                    assert v2 is not None
                    answer = await self.infer("v2", v2.group(1), v2.group(2), scope, receive)
            except RequestError as exc:
                answer = _Answer(exc.status, _json_bytes({"error": exc.message}), "")
                if exc.status == 401:
                    headers.append((b"www-authenticate", b"Bearer"))
        return answer


def create_app(core: RouterCore, inference_log: InferenceLog | None = None) -> FastAPI:
    """The FastAPI app of the endpoint around `core` (and its inference log, which the feedback route writes).

    Routes: ``POST /v1/models/{name}:predict``, ``GET /v1/models/{name}``, ``POST /v2/models/{name}/infer``
    (and ``/versions/{v}/infer``), ``GET /v2/models/{name}`` (metadata), ``GET /v2/models/{name}/ready``,
    ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``, ``POST /v1/models/{name}/feedback``,
    ``GET /openapi.json`` (this list with bodies, `mlplatform.serve.openapi`), and the admin traffic routes.
    """
    # No docs routes, and FastAPI's open /openapi.json is replaced by one behind auth (`mlplatform.serve.openapi`).
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **_NO_TELEMETRY)
    args = core.args
    routing_field = args.sticky.field if args.sticky else None
    limits = {
        "max_instances": args.max_instances,
        "allow_missing": args.allow_missing,
        "routing_field": routing_field,
        "codes": core.codes,
    }
    described = core.schema.as_dicts() if core.schema is not None else None
    answers = {"task": core.schema.task, "classes": core.schema.classes} if core.schema is not None else {}

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint: {clip(request.method)} {clip(request.url.path, 200)}"
        elif exc.status_code == 405:
            message = f"method {clip(request.method)} is not allowed on {clip(request.url.path, 200)}"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error(400, f"invalid request: {problems}")

    # ------------------------------------------------------------------- inference (the hot routes)

    async def answer(headers: Mapping[str, str], request_id: str, requested: str | None, parsed: Parsed) -> tuple:
        key = None if requested else core.routing_key(headers, parsed)
        version = core.choose(requested, key)
        route = "pinned" if requested else ("sticky" if key is not None else "weighted")
        given = headers.get(REQUEST_ID_HEADER)
        if given is not None and _request_id(given) is None:
            raise RequestError(400, "x-request-id must be 1 to 128 printable ASCII characters")
        # request_id is the x-request-id of the response (a V2 body id is echoed apart).
        return version, await core.predict(version, parsed.x, request_id=request_id, route=route)

    async def infer(route: str, name: str, forced: str | None, scope: dict, receive: Any) -> _Answer:
        """``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        core.auth.check(headers)
        core.check_model(name)
        requested = forced or headers.get(VERSION_HEADER)
        if requested:
            core.check_version(requested.strip())
        body = await read_body(receive, headers, args.max_body_bytes, JSON_ONLY if route == "v1" else JSON_OR_BINARY)
        request_id = scope["state"]["request_id"]
        if route == "v1":
            parsed = parse_v1(body, core.features, **limits)
            version, preds = await answer(headers, request_id, requested, parsed)
            return _Answer(200, _json_bytes(v1_response(preds, version)), version)
        parsed = parse_v2(body, core.features, header_length=headers.get(BINARY_HEADER), **limits)
        version, preds = await answer(headers, request_id, requested, parsed)
        if parsed.binary_output:
            content, header_length = v2_binary_response(core.model_name, version, preds, parsed.request_id)
            return _Answer(200, content, version, "application/octet-stream", header_length)
        return _Answer(200, _json_bytes(v2_response(core.model_name, version, preds, parsed.request_id)), version)

    @app.get("/v1/models/{name}")
    async def v1_status(name: str) -> JSONResponse:
        # KServe's V1 "model ready" route; open like the other health routes.
        core.check_model(name)
        failing = await core.not_ready()
        # Tallies (shadow outcomes, last pinned) are this replica's own: `replica` says whose, so a client can
        # add up what several router replicas report.
        body = {**core.status(), "replica": _replica_id(), "ready": not failing}
        if failing:
            return error(503, f"versions not ready: {failing}", **body)
        return JSONResponse(body)

    @app.post("/v1/models/{name}/feedback")
    async def v1_feedback(name: str, request: Request) -> JSONResponse:
        core.auth.check(request.headers)
        core.check_model(name)
        if inference_log is None:
            raise RequestError(
                409, f"feedback needs the inference log, which {core.app_name!r} does not keep (inference_log)"
            )
        doc = load_json(await read_body(request.receive, request.headers, args.max_body_bytes))
        labels = doc.get("labels") if isinstance(doc, dict) else None
        if not isinstance(labels, list) or not labels:
            raise RequestError(400, 'body must be {"labels": [{"request_id": "...", "label": ...}, ...]}')
        if len(labels) > args.max_instances:
            raise RequestError(413, f"{len(labels)} labels in one request; the limit is {args.max_instances}")
        results: list[dict[str, Any] | None] = [None] * len(labels)
        good: list[tuple[int, str, int, float]] = []
        answers_by = (core.schema.task, core.schema.classes) if core.schema is not None else ("binary", [])
        for i, item in enumerate(labels):
            problem = _feedback_problem(item)
            code = problem if problem is not None else label_code(item["label"], *answers_by)
            if isinstance(code, str):  # why the item is invalid
                message = code if problem is not None else f"{code}, got {json.dumps(item['label'])[:50]}"
                rid = item.get("request_id") if isinstance(item, dict) else None
                rid = rid if isinstance(rid, str) else None
                results[i] = {"request_id": rid, "status": "invalid", "message": message}
            else:
                good.append((i, item["request_id"], int(item.get("row", 0)), code))
        seen: set[tuple[str, int]] = set()
        unique = []
        for i, rid, row, label in good:
            if (rid, row) in seen:
                results[i] = {"request_id": rid, "status": "duplicate", "message": "labelled twice in this request"}
            else:
                seen.add((rid, row))
                unique.append((i, rid, row, label))
        keys = [(rid, row) for _, rid, row, _ in unique]
        # Labels may have come through another replica: the written feedback is always checked.
        logged, labelled = await asyncio.to_thread(inference_log.lookup, inference_log.needs_lookup(keys), keys)
        fresh = [(i, rid, row, label) for i, rid, row, label in unique if (rid, row) not in labelled]
        for i, rid, row, _ in unique:
            if (rid, row) in labelled:
                results[i] = {"request_id": rid, "status": "duplicate", "message": "already labelled"}
        answers = inference_log.add_feedback([(rid, row, label) for _, rid, row, label in fresh], logged)
        for (i, *_), answer in zip(fresh, answers, strict=True):
            results[i] = dict(answer)
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1  # type: ignore[index]
        return JSONResponse({"results": results, "counts": counts})

    # ------------------------------------------------------------------------------------- V2

    @app.get("/v2/models/{name}")
    async def v2_model_metadata(name: str, request: Request) -> JSONResponse:
        core.auth.check(request.headers)
        core.check_model(name)
        return JSONResponse(v2_metadata(core.model_name, core.versions, core.features, described, **answers))

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_version_metadata(name: str, version: str, request: Request) -> JSONResponse:
        core.auth.check(request.headers)
        core.check_model(name)
        v = core.check_version(version)
        meta = v2_metadata(core.model_name, [v], core.features, described, **answers)
        return JSONResponse(meta, headers={VERSION_HEADER: v})

    async def ready(name: str | None, version: str | None) -> JSONResponse:
        if name is not None:
            core.check_model(name)
        failing = await core.not_ready([core.check_version(version)] if version is not None else None)
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

    # One route for both methods, so that a 405 on it says `Allow: GET, PUT` (two would each name their own).
    @app.api_route("/admin/v1/models/{name}/traffic", methods=["GET", "PUT"])
    async def admin_traffic(name: str, request: Request) -> JSONResponse:
        who = core.auth.check(request.headers, admin=True)
        core.check_model(name)
        if request.method == "GET":
            return JSONResponse(core.status())
        doc = load_json(await read_body(request.receive, request.headers, args.max_body_bytes))
        if not isinstance(doc, dict):
            raise RequestError(400, "body must be a JSON object: {weights, shadow?, faults?, reason?}")
        reason = doc.pop("reason", "")
        if not isinstance(reason, str):
            raise RequestError(400, "'reason' must be a string")
        try:
            parse_policy(doc, core.versions)
        except ConfigError as exc:
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

    document: dict[str, Any] = {}

    @app.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        # Served by hand, behind the inference auth: FastAPI's own would be open and describe no bodies.
        core.auth.check(request.headers)
        if not document:
            document.update(
                openapi_document(
                    core.model_name,
                    core.features,
                    core.schema,
                    allow_missing=args.allow_missing,
                    max_instances=args.max_instances,
                    routing_field=routing_field,
                    api_key=args.auth == "api_key",
                    version=_package_version(),
                )
            )
        return JSONResponse(document)

    @app.get("/v2/health/live")
    async def v2_live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2")
    async def v2_server_metadata() -> JSONResponse:
        return JSONResponse({"name": "mlplatform", "version": _package_version(), "extensions": ["binary_tensor_data"]})

    app.add_middleware(_HotRoutes, infer=infer, guard=core.auth.check_origin)
    app.add_middleware(_ResponseHeaders, served=core.served)  # added last: the outermost, around the hot routes
    return app


def _feedback_problem(item: Any) -> str | None:
    """Why a feedback item is invalid, or None."""
    if not isinstance(item, dict):
        return "each label must be an object {request_id, label, row?}"
    unknown = sorted(set(item) - {"request_id", "label", "row"})
    if unknown:
        return f"unknown field(s) {unknown}; a label has request_id, label and optionally row"
    rid = item.get("request_id")
    if not isinstance(rid, str) or _request_id(rid) is None:
        return "request_id must be the x-request-id of a response: 1 to 128 printable ASCII characters"
    if "label" not in item:
        return "each label needs a label"
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        return f"row must be the instance's index in its request (an integer ≥ 0), got {json.dumps(row)[:50]}"
    return None


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:  # no replica context (local testing mode)
        return None


def _app_name() -> str | None:
    try:
        return serve.get_replica_context().app_name
    except RayServeException:  # serve.run(..., _local_testing_mode=True) has no replica context
        return None


@serve.deployment
@serve.ingress()
class Router:
    """The ingress deployment: the endpoint's routes around a `RouterCore`.

    Args:
        args: the resolved `AppArgs` as a dict (versions concrete).
        features: the model's input features, in model order.
        handles: version → DeploymentHandle of its `ModelVersion` deployment (empty with ``colocate``).
        loader: with ``colocate``, the model loader each replica uses to load every version itself.
        apply_policy: how the admin route applies a traffic change cluster-wide (None: it answers 503).
        observers: called with every answered request (e.g. the inference log).
        schema: the versions' input schema as a dict (`mlplatform.data.schema.InputSchema`); None: numbers only.
    """

    def __init__(
        self,
        args: dict[str, Any],
        features: list[str],
        handles: dict[str, Any],
        loader: Loader | None = None,
        apply_policy: PolicyApplier | None = None,
        observers: Sequence[RequestObserver] = (),
        schema: dict[str, Any] | None = None,
    ) -> None:
        parsed = AppArgs.model_validate(args)
        if parsed.colocate:
            handles = {
                v.version: LocalVersion(
                    parsed.model_name, v.version, parsed.tracking_uri, loader or load_booster, features
                )
                for v in parsed.versions
                if v.version is not None
            }
        app_name = _app_name() or parsed.model_name
        self.inference_log = None
        if parsed.inference_log is not None:
            self.inference_log = InferenceLog(parsed.inference_log, app_name, features)
            observers = [*observers, self.inference_log]
        self.core = RouterCore(
            parsed,
            features,
            handles,
            apply_policy=apply_policy,
            observers=observers,
            app_name=app_name,
            schema=InputSchema.model_validate(schema) if schema is not None else None,
        )
        if self.inference_log is not None:
            self.inference_log.metrics = self.core.metrics

    def __del__(self) -> None:
        # Serve calls this when it stops the replica (a redeploy, a scale-down): write what is buffered.
        log = getattr(self, "inference_log", None)
        if log is not None:
            log.close()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a traffic policy (weights, shadow, faults) live; a ConfigError makes Serve reject the config."""
        self.core.set_policy(user_config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Late-bound ASGI app (serve.ingress() without an app): built after __init__, so the routes close
        # over this replica's RouterCore instead of looking it up from the replica context per request.
        return create_app(self.core, self.inference_log)
