"""The router's HTTP routes, driven as a plain ASGI app with fake version handles (no Ray runtime)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import numpy as np
import pytest
from mlplatform.serve.router import RouterCore, api_keys_from_env, create_app
from mlplatform.serve.schemas import AppArgs

FEATURES = ["a", "b"]
ROW = {"a": 1.0, "b": 2.0}


def call(app, method, path, body=None, headers=None, chunks=None):
    """One HTTP request through the ASGI app: (status, headers, JSON body)."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    parts = chunks if chunks is not None else [body or b""]
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    if chunks is None:
        hdrs.setdefault("content-length", str(len(body or b"")))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict] = []

    async def run():
        queue = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

        async def receive():
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers_out = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers_out, json.loads(data) if data else None


class _Method:
    def __init__(self, fn):
        self._fn = fn

    def remote(self, *args):
        return self._fn(*args)


class FakeHandle:
    """Stands in for a DeploymentHandle: `.predict.remote(x)` and `.version_info.remote()` are awaitable."""

    def __init__(self, version: str, factor: float, broken: bool = False, dead: bool = False, garbage: bool = False):
        self.calls = 0

        async def predict(x):
            self.calls += 1
            if broken:
                raise RuntimeError("boom in booster\nTraceback (most recent call last): ...")
            if garbage:
                return "not an array"
            return x.sum(axis=1) * factor

        async def version_info():
            if dead:
                raise ConnectionError("replica died")
            return version

        self.predict = _Method(predict)
        self.version_info = _Method(version_info)


def make(auth="none", keys=None, handles=None, **args):
    parsed = AppArgs.model_validate(
        {
            "model_name": "m",
            "auth": auth,
            "features": FEATURES,
            "versions": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}],
            **args,
        }
    )
    handles = handles or {"1": FakeHandle("1", 1.0), "2": FakeHandle("2", 10.0)}
    core = RouterCore(parsed, FEATURES, handles, api_keys=keys)
    return core, create_app(core)


def test_v1_predict_and_header():
    _, app = make()
    status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW, {"a": 0, "b": 1}]})
    assert status == 200
    assert body == {"predictions": [3.0, 1.0], "model_version": "1"}
    assert headers["x-model-version"] == "1"


def test_traffic_split_over_http():
    _, app = make()
    seen = Counter(
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[1]["x-model-version"] for _ in range(100)
    )
    assert seen == {"1": 90, "2": 10}


def test_bad_requests_do_not_move_the_split():
    core, app = make()
    for _ in range(5):
        assert call(app, "POST", "/v1/models/m:predict", {"instances": []})[0] == 400
    seen = Counter(
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[1]["x-model-version"] for _ in range(10)
    )
    assert seen == {"1": 9, "2": 1}


def test_pinned_version_header():
    _, app = make()
    for pinned in ("2", "v2"):
        status, headers, body = call(
            app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-model-version": pinned}
        )
        assert (status, headers["x-model-version"], body["predictions"]) == (200, "2", [30.0])
    status, headers, body = call(
        app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-model-version": "7"}
    )
    assert status == 404 and "version '7' of model 'm' is not deployed here (deployed: ['1', '2'])" in body["error"]
    assert headers["x-model-version"] == "1,2"


def test_v2_infer_routes():
    _, app = make()
    doc = {"id": "q", "inputs": [{"name": "in", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    status, headers, body = call(app, "POST", "/v2/models/m/infer", doc)
    assert status == 200 and body["id"] == "q" and body["outputs"][0]["data"] == [3.0]
    assert body["model_version"] == headers["x-model-version"]
    status, headers, body = call(app, "POST", "/v2/models/m/versions/2/infer", doc)
    assert (status, body["model_version"], headers["x-model-version"], body["outputs"][0]["data"]) == (
        200,
        "2",
        "2",
        [30.0],
    )
    status, _, body = call(app, "POST", "/v2/models/m/versions/9/infer", doc)
    assert status == 404 and "version '9'" in body["error"]
    status, _, body = call(app, "POST", "/v2/models/m/infer", doc, headers={"Inference-Header-Content-Length": "10"})
    assert status == 400 and "binary tensor data is not supported" in body["error"]
    status, _, body = call(
        app,
        "POST",
        "/v2/models/m/infer",
        {"inputs": [{"name": "in", "shape": [1, 2], "datatype": "BYTES", "data": [1, 2]}]},
    )
    assert status == 400 and '"BYTES" is not supported' in body["error"]


def test_unknown_model_and_paths():
    _, app = make()
    status, headers, body = call(app, "POST", "/v1/models/other:predict", {"instances": [ROW]})
    assert status == 404 and body["error"] == "model 'other' is not served here; this endpoint serves 'm'"
    assert headers["x-model-version"] == "1,2"
    status, headers, body = call(app, "GET", "/v2/models/other")
    assert status == 404 and "'other'" in body["error"]
    status, headers, body = call(app, "GET", "/nowhere")
    assert (status, body, headers["x-model-version"]) == (
        404,
        {"error": "no such endpoint: GET /nowhere"},
        "1,2",
    )
    status, headers, body = call(app, "PUT", "/v2/models/m/infer")
    assert status == 405 and "method PUT is not allowed" in body["error"] and headers["x-model-version"] == "1,2"
    assert call(app, "GET", "/docs")[0] == 404


def test_body_limit_is_413_before_parsing():
    _, app = make(max_body_bytes=100)
    status, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW] * 20})
    assert status == 413 and "over the limit of 100 bytes" in body["error"]
    # no content-length (chunked): counted while streaming
    status, _, body = call(app, "POST", "/v1/models/m:predict", chunks=[b"{" * 60, b"[" * 60])
    assert status == 413 and "over the limit of 100 bytes" in body["error"]


def test_bad_input_is_4xx_with_json_error():
    _, app = make()
    for payload in (b"{", b"[]", b'{"instances": [{"a": "x", "b": 1}]}', b"[" * 100_000):
        status, headers, body = call(app, "POST", "/v1/models/m:predict", payload)
        assert status == 400 and body["error"] and headers["x-model-version"] == "1,2"


def test_version_failure_is_503_and_server_keeps_serving():
    handles = {"1": FakeHandle("1", 1.0, broken=True), "2": FakeHandle("2", 10.0)}
    _, app = make(handles=handles)
    status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    assert status == 503 and body == {"error": "model version 1 failed: RuntimeError: boom in booster"}
    assert headers["x-model-version"] == "1,2"
    status, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-model-version": "2"})
    assert status == 200 and body["predictions"] == [30.0]


def test_unexpected_router_error_is_json_500_with_header():
    _, app = make(handles={"1": FakeHandle("1", 1.0, garbage=True), "2": FakeHandle("2", 1.0)})
    status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    assert status == 500 and "internal error" in body["error"] and headers["x-model-version"] == "1,2"


def test_health_and_metadata():
    _, app = make()
    assert call(app, "GET", "/v2/health/live")[:3:2] == (200, {"live": True})
    assert call(app, "GET", "/v2/health/ready")[:3:2] == (200, {"ready": True})
    assert call(app, "GET", "/v2/models/m/ready")[:3:2] == (200, {"name": "m", "ready": True})
    status, headers, body = call(app, "GET", "/v1/models/m")
    assert (status, body) == (200, {"name": "m", "ready": True, "versions": {"1": 90.0, "2": 10.0}})
    assert headers["x-model-version"] == "1,2"
    status, _, body = call(app, "GET", "/v2/models/m")
    assert status == 200 and [i["name"] for i in body["inputs"]] == FEATURES and body["versions"] == ["1", "2"]
    status, headers, body = call(app, "GET", "/v2/models/m/versions/2")
    assert status == 200 and body["versions"] == ["2"] and headers["x-model-version"] == "2"


def test_not_ready_is_503_naming_the_version():
    _, app = make(handles={"1": FakeHandle("1", 1.0), "2": FakeHandle("2", 1.0, dead=True)})
    for path in ("/v2/health/ready", "/v2/models/m/ready", "/v1/models/m"):
        status, _, body = call(app, "GET", path)
        assert status == 503 and "'2': 'ConnectionError: replica died'" in body["error"] and body["ready"] is False
    assert call(app, "GET", "/v2/models/m/versions/1/ready")[0] == 200
    assert call(app, "GET", "/v2/models/m/versions/2/ready")[0] == 503


def test_api_key_auth():
    _, app = make(auth="api_key", keys=["k1", "s3cret"])
    url, doc = "/v1/models/m:predict", {"instances": [ROW]}
    status, headers, body = call(app, "POST", url, doc)
    assert status == 401 and "missing Authorization header" in body["error"]
    assert headers["www-authenticate"] == "Bearer" and headers["x-model-version"] == "1,2"
    status, _, body = call(app, "POST", url, doc, headers={"Authorization": "Basic czNjcmV0"})
    assert status == 401 and "must be 'Bearer <key>'" in body["error"]
    status, _, body = call(app, "POST", url, doc, headers={"Authorization": "Bearer wrong"})
    assert (status, body) == (403, {"error": "API key not accepted"})
    assert call(app, "POST", url, doc, headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert call(app, "POST", url, doc, headers={"Authorization": "bearer k1"})[0] == 200
    # inference, metadata are protected; health stays open
    assert call(app, "POST", "/v2/models/m/infer", {"inputs": []})[0] == 401
    assert call(app, "GET", "/v2/models/m")[0] == 401
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/m/ready", "/v1/models/m"):
        assert call(app, "GET", path)[0] == 200, path
    # auth comes before the model check, so model names do not leak
    assert call(app, "POST", "/v1/models/zzz:predict", doc)[0] == 401


def test_api_key_auth_needs_keys():
    with pytest.raises(ValueError, match="MLPLATFORM_API_KEYS is empty"):
        make(auth="api_key", keys=[])
    assert api_keys_from_env({"MLPLATFORM_API_KEYS": " a, ,b ,"}) == ["a", "b"]
    assert api_keys_from_env({}) == []


def test_live_reweighting():
    core, app = make()
    core.set_weights({"weights": {"2": 100}})
    assert {
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[1]["x-model-version"] for _ in range(5)
    } == {"2"}
    assert call(app, "GET", "/v1/models/m")[2]["versions"] == {"1": 0.0, "2": 100.0}
    with pytest.raises(ValueError, match="not deployed"):
        core.set_weights({"weights": {"3": 100}})
    with pytest.raises(ValueError, match="sum to 100"):
        core.set_weights({"weights": {"1": 10}})
    assert core.weights == {"1": 0.0, "2": 100.0}  # the old split stays


def test_predictions_are_float_lists():
    _, app = make()
    _, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [{"a": np.float32(0.1).item(), "b": 0}]})
    assert isinstance(body["predictions"][0], float)
