"""The router's HTTP routes, driven as a plain ASGI app with fake version handles (no Ray runtime)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import numpy as np
import pytest
from mlplatform.data.schema import FeatureSchema, InputSchema
from mlplatform.errors import ConfigError
from mlplatform.serve.auth import ApiKeyAuth
from mlplatform.serve.config import AppArgs
from mlplatform.serve.endpoint import HOT_ROUTES, create_app
from mlplatform.serve.router import RouterCore

FEATURES = ["a", "b"]
ROW = {"a": 1.0, "b": 2.0}


def call(app, method, path, body=None, headers=None, chunks=None, raw=False, root_path=""):
    """One HTTP request through the ASGI app: (status, headers, JSON body — or the bytes, with `raw`)."""
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
        "root_path": root_path,
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
    return start["status"], headers_out, data if raw else json.loads(data) if data else None


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


def make(auth="none", keys=None, handles=None, admin_keys=None, apply_policy=None, observers=(), schema=None, **args):
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
    core = RouterCore(
        parsed,
        FEATURES,
        handles,
        api_keys=keys,
        admin_keys=admin_keys,
        apply_policy=apply_policy,
        observers=observers,
        app_name="churn-app",
        schema=schema,
    )
    return core, create_app(core)


def test_v1_predict_and_header():
    _, app = make()
    status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW, {"a": 0, "b": 1}]})
    assert status == 200
    assert body == {"predictions": [3.0, 1.0], "model_version": "1"}
    assert headers["x-model-version"] == "1"


def test_an_application_under_a_route_prefix_serves_every_route():
    """Serve hands a prefix such as /tumours as the ASGI root_path, with the whole path in `path`."""
    _, app = make()
    body = {"instances": [ROW]}
    assert call(app, "POST", "/tumours/v1/models/m:predict", body, root_path="/tumours")[0] == 200
    v2 = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    v2["inputs"].append({"name": "b", "shape": [1], "datatype": "FP32", "data": [2]})
    assert call(app, "POST", "/tumours/v2/models/m/infer", v2, root_path="/tumours")[0] == 200
    assert call(app, "GET", "/tumours/v2/models/m", root_path="/tumours")[0] == 200
    assert call(app, "POST", "/tumoursx/v1/models/m:predict", body, root_path="/tumours")[0] == 404


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
    status, _, body = call(app, "POST", "/v2/models/m/infer", doc, headers={"Inference-Header-Content-Length": "x"})
    assert status == 400 and 'inference-header-content-length is "x"' in body["error"]
    status, _, body = call(
        app,
        "POST",
        "/v2/models/m/infer",
        {"inputs": [{"name": "in", "shape": [1, 2], "datatype": "BYTES", "data": [1, 2]}]},
    )
    assert status == 400 and "datatype BYTES; one [n, 2] tensor takes a number type" in body["error"]


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


def test_a_version_that_predicts_an_infinity_is_a_503_naming_it():
    """JSON has no infinity: a version that predicts one failed on this input (found by the fuzzer: a 500)."""
    _, app = make(handles={"1": FakeHandle("1", float("inf")), "2": FakeHandle("2", float("inf"))})
    status, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    assert status == 503 and "predicted NaN or an infinity" in body["error"]


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
    assert status == 200
    assert body == {
        "name": "m",
        "ready": True,
        "versions": {"1": 90.0, "2": 10.0},
        "shadow": None,
        "sticky": None,
        "faults": {},
        "last_pinned": {},
        "replica": None,  # outside a Serve replica
    }
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


def test_api_key_auth_needs_keys(monkeypatch):
    with pytest.raises(ConfigError, match="MLPLATFORM_API_KEYS is empty"):
        make(auth="api_key", keys=[])
    # Without keys given, the router reads the one setting the CLI also reads.
    monkeypatch.setenv("MLPLATFORM_API_KEYS", " a, ,b ,")
    assert ApiKeyAuth("api_key").check({"authorization": "Bearer b"}).startswith("key:")
    monkeypatch.delenv("MLPLATFORM_API_KEYS")
    with pytest.raises(ConfigError, match="MLPLATFORM_API_KEYS is empty"):
        ApiKeyAuth("api_key")


def test_live_reweighting():
    core, app = make()
    core.set_policy({"weights": {"2": 100}})
    assert {
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[1]["x-model-version"] for _ in range(5)
    } == {"2"}
    assert call(app, "GET", "/v1/models/m")[2]["versions"] == {"1": 0.0, "2": 100.0}
    with pytest.raises(ConfigError, match="not deployed"):
        core.set_policy({"weights": {"3": 100}})
    with pytest.raises(ConfigError, match="sum to 100"):
        core.set_policy({"weights": {"1": 10}})
    assert core.weights == {"1": 0.0, "2": 100.0}  # the old split stays


def test_predictions_are_float_lists():
    _, app = make()
    _, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [{"a": np.float32(0.1).item(), "b": 0}]})
    assert isinstance(body["predictions"][0], float)


# ------------------------------------------------------------------------------------ shadow traffic


class SlowHandle(FakeHandle):
    def __init__(self, version, delay):
        super().__init__(version, 100.0)
        inner = self.predict._fn

        async def predict(x):
            await asyncio.sleep(delay)
            return await inner(x)

        self.predict = _Method(predict)


def shadow_run(shadow_handle, n=10, percent=100, timeout_s=1.0):
    """n predictions through the core with version 3 as shadow; returns (core, answers)."""
    handles = {"1": FakeHandle("1", 1.0), "2": FakeHandle("2", 10.0), "3": shadow_handle}
    core, _ = make(
        handles=handles,
        versions=[{"version": "1", "weight": 90}, {"version": "2", "weight": 10}, {"version": "3", "weight": 0}],
    )
    core.set_policy({"weights": {"1": 100}, "shadow": {"version": "3", "percent": percent, "timeout_s": timeout_s}})
    x = np.array([[1.0, 2.0]], dtype=np.float32)

    async def go():
        answers = [await core.predict(core.choose(None), x) for _ in range(n)]
        await asyncio.gather(*list(core.shadow.tasks))
        return answers

    return core, handles, asyncio.run(go())


def test_shadow_gets_a_copy_and_its_answer_is_compared_not_returned():
    core, handles, answers = shadow_run(FakeHandle("3", 5.0))
    assert all(a.tolist() == [3.0] for a in answers)  # the client always gets version 1's answer
    assert handles["3"].calls == 10
    assert core.shadow.outcomes == {"ok": 10}
    assert core.status()["shadow"]["mean_abs_diff"] == 12.0  # |15 - 3|


def test_shadow_percent_is_an_exact_share():
    core, handles, _ = shadow_run(FakeHandle("3", 5.0), n=40, percent=25)
    assert handles["3"].calls == 10


def test_broken_shadow_never_touches_the_client():
    core, _, answers = shadow_run(FakeHandle("3", 5.0, broken=True))
    assert len(answers) == 10 and core.shadow.outcomes == {"error": 10}


def test_slow_shadow_times_out_without_delaying_the_client():
    started = time.perf_counter()
    core, _, answers = shadow_run(SlowHandle("3", 0.5), n=3, timeout_s=0.05)
    assert core.shadow.outcomes == {"timeout": 3}
    assert time.perf_counter() - started < 1.0  # three requests did not wait 3 × 0.5 s


def test_shadow_copies_in_flight_are_bounded(monkeypatch):
    monkeypatch.setattr("mlplatform.serve.shadow.MAX_SHADOW_IN_FLIGHT", 2)
    core, handles, _ = shadow_run(SlowHandle("3", 0.05), n=5)
    assert core.shadow.outcomes["dropped"] >= 1 and handles["3"].calls <= 4


def test_shadow_over_http_answers_from_the_primary():
    handles = {"1": FakeHandle("1", 1.0), "2": FakeHandle("2", 10.0)}
    core, app = make(
        handles=handles, versions=[{"version": "1", "weight": 100}, {"version": "2", "weight": 0, "shadow": True}]
    )
    assert core.policy.shadow.version == "2"
    status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
    assert (status, headers["x-model-version"], body["predictions"]) == (200, "1", [3.0])
    assert call(app, "GET", "/v1/models/m")[2]["shadow"]["version"] == "2"


# ------------------------------------------------------------------------------------ sticky routing


def sticky_app(sticky, weights=None):
    core, app = make(sticky=sticky)
    if weights:
        core.set_policy({"weights": weights})
    return core, app


def test_sticky_header_keeps_a_key_on_its_version():
    _, app = sticky_app({"header": "x-user-id"}, {"1": 50, "2": 50})
    seen = {}
    for user in range(40):
        versions = {
            call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-user-id": f"u{user}"})[1][
                "x-model-version"
            ]
            for _ in range(5)
        }
        assert len(versions) == 1, (user, versions)
        seen[user] = versions.pop()
    assert set(seen.values()) == {"1", "2"}  # keys spread over both versions
    # The override header still wins over stickiness.
    h = {"x-user-id": "u0", "x-model-version": "2" if seen[0] == "1" else "1"}
    assert (
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers=h)[1]["x-model-version"]
        == h["x-model-version"]
    )


def test_sticky_field_in_v1_body_and_v2_parameters():
    core, app = sticky_app({"field": "user"}, {"1": 50, "2": 50})
    v1 = {
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW], "user": "abc"})[1]["x-model-version"]
        for _ in range(5)
    }
    inputs = [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]},
        {"name": "b", "shape": [1], "datatype": "FP32", "data": [2.0]},
    ]
    v2 = {
        call(app, "POST", "/v2/models/m/infer", {"inputs": inputs, "parameters": {"user": "abc"}})[1]["x-model-version"]
        for _ in range(5)
    }
    assert len(v1) == 1 and v1 == v2 == {core._ring.pick("abc")}
    status, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW], "user": {"id": 1}})
    assert status == 400 and "routing key 'user'" in body["error"]
    # Without stickiness the field is just an unknown key.
    _, plain = make()
    assert call(plain, "POST", "/v1/models/m:predict", {"instances": [ROW], "user": "abc"})[0] == 400


def test_sticky_config_is_validated():
    with pytest.raises(ValueError, match="exactly one of `header` or `field`"):
        make(sticky={"header": "x", "field": "y"})
    with pytest.raises(ValueError, match="part of the protocol"):
        make(sticky={"field": "instances"})


# ------------------------------------------------------------------------------------ fault injection


def test_injected_faults_fail_a_share_of_one_version():
    core, app = make()
    core.set_policy({"weights": {"1": 50, "2": 50}, "faults": {"2": {"abort_percent": 100}}})
    codes = Counter()
    for _ in range(20):
        status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})
        codes[(status, headers["x-model-version"].split(",")[0] if status == 200 else "2")] += 1
        if status != 200:
            assert status == 503 and "injected fault" in body["error"] and "version 2" in body["error"]
    assert codes == {(200, "1"): 10, (503, "2"): 10}
    assert call(app, "GET", "/v1/models/m")[2]["faults"] == {"2": {"abort_percent": 100.0, "status": 503}}


# ------------------------------------------------------------------------------------ admin routes

ROOT = {"authorization": "Bearer root"}


def test_admin_traffic_route_applies_through_the_control_plane():
    applied = []

    def apply(policy, reason, who):
        applied.append((policy, reason, who))
        core.set_policy(policy)  # what Serve's reconfigure would do
        return {"action": "traffic", "weights": policy["weights"], "by": who}

    core, app = make(auth="api_key", keys=["infer"], admin_keys=["root"], apply_policy=apply)
    admin = {"authorization": "Bearer root"}
    body = {"weights": {"1": 30, "2": 70}, "reason": "ops"}
    status, _, out = call(app, "PUT", "/admin/v1/models/m/traffic", body, headers=admin)
    assert status == 200 and out["weights"] == {"1": 30, "2": 70}
    ((policy, reason, who),) = applied
    assert reason == "ops" and who.startswith("key:") and "root" not in who  # a fingerprint, never the key
    assert call(app, "GET", "/admin/v1/models/m/traffic", headers=admin)[2]["versions"] == {"1": 30.0, "2": 70.0}


def test_admin_routes_need_an_admin_key():
    core, app = make(auth="api_key", keys=["infer"], admin_keys=["root"], apply_policy=lambda *a: {})
    body = {"weights": {"1": 100}}
    assert call(app, "PUT", "/admin/v1/models/m/traffic", body)[0] == 401
    status, _, out = call(app, "PUT", "/admin/v1/models/m/traffic", body, headers={"authorization": "Bearer infer"})
    assert status == 403 and "admin" in out["error"]  # an inference key is not an admin key
    _, no_admin = make(auth="api_key", keys=["infer"])
    assert call(no_admin, "GET", "/admin/v1/models/m/traffic", headers={"authorization": "Bearer infer"})[0] == 403


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"weights": {"1": 50, "2": 40}}, 400, "sum to 100"),
        ({"weights": {"9": 100}}, 400, "not deployed"),
        ([1, 2], 400, "JSON object"),
        ({"weights": {"1": 100}, "reason": 5}, 400, "reason"),
    ],
)
def test_admin_traffic_bad_changes_are_4xx(body, status, needle):
    core, app = make(admin_keys=["root"], apply_policy=lambda *a: pytest.fail("must not be applied"))
    got, _, out = call(app, "PUT", "/admin/v1/models/m/traffic", body, headers=ROOT)
    assert got == status and needle in out["error"]
    assert core.weights == {"1": 90.0, "2": 10.0}


def test_admin_traffic_without_or_with_a_failing_control_plane():
    _, app = make(admin_keys=["root"])
    assert call(app, "PUT", "/admin/v1/models/m/traffic", {"weights": {"1": 100}}, headers=ROOT)[0] == 503

    def refuse(*a):
        raise RuntimeError("Serve said no")

    _, app = make(admin_keys=["root"], apply_policy=refuse)
    status, _, out = call(app, "PUT", "/admin/v1/models/m/traffic", {"weights": {"1": 100}}, headers=ROOT)
    assert status == 502 and "Serve said no" in out["error"]


def test_admin_routes_are_off_without_an_admin_key_even_on_an_open_endpoint():
    """auth: none opens inference, never traffic changes: a page in the user's browser could post them."""
    _, app = make(admin_keys=[], apply_policy=lambda *a: pytest.fail("must not be applied"))
    for method in ("GET", "PUT"):
        status, _, out = call(app, method, "/admin/v1/models/m/traffic", {"weights": {"1": 100}})
        assert status == 403 and "admin routes are off" in out["error"] and "mlplatform traffic" in out["error"]
    _, keyed = make(admin_keys=["root"], apply_policy=lambda *a: {})
    assert call(keyed, "GET", "/admin/v1/models/m/traffic")[0] == 401  # a key is set: it is needed, locally too
    assert call(keyed, "GET", "/admin/v1/models/m/traffic", headers=ROOT)[0] == 200


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST", None])
def test_an_open_endpoint_answers_requests_to_loopback_names(host):
    _, app = make()
    headers = {} if host is None else {"host": host}  # no Host at all: HTTP/1.0, not a browser
    assert call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers=headers)[0] == 200
    origin = {"origin": "http://localhost:3000", **headers}  # a local notebook or tool's page
    assert call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers=origin)[0] == 200


@pytest.mark.parametrize(
    "headers, needle",
    [
        ({"host": "evil.example:8000"}, "Host 'evil.example:8000' is not allowed"),  # DNS rebinding
        ({"host": "127.0.0.1:8000", "origin": "https://evil.example"}, "Origin 'https://evil.example'"),
        ({"host": "127.0.0.1:8000", "origin": "null"}, "Origin 'null'"),  # a sandboxed frame, a file:// page
        ({"host": "[::1"}, "Host '[::1' is not allowed"),
    ],
)
def test_an_open_endpoint_refuses_other_hosts_and_origins_on_every_route(headers, needle):
    _, app = make(apply_policy=lambda *a: pytest.fail("must not be applied"))
    for method, path in [
        ("POST", "/v1/models/m:predict"),
        ("POST", "/v2/models/m/infer"),
        ("GET", "/v2/models/m"),
        ("GET", "/v2/health/ready"),
        ("POST", "/v1/models/m/feedback"),
        ("GET", "/openapi.json"),
    ]:
        status, _, out = call(app, method, path, {"instances": [ROW]}, headers=headers)
        assert status == 403 and needle in out["error"], (method, path, status, out)
        assert "127.0.0.1, ::1, localhost" in out["error"]


def test_with_api_keys_any_host_is_answered_unless_allowed_hosts_narrows_them():
    key = {"authorization": "Bearer k"}
    _, app = make(auth="api_key", keys=["k"])
    assert (
        call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"host": "api.corp", **key})[0] == 200
    )
    _, narrow = make(auth="api_key", keys=["k"], allowed_hosts=["api.corp"])
    assert (
        call(narrow, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"host": "api.corp", **key})[0]
        == 200
    )
    status, _, out = call(
        narrow, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"host": "x.corp", **key}
    )
    assert status == 403 and "answers for api.corp" in out["error"]


# --------------------------------------------------------------------------------------------- observers


def test_observers_see_every_answered_request_with_how_it_was_routed():
    seen = []
    _, app = make(observers=[seen.append], sticky={"header": "x-user"})
    call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-request-id": "r-1"})
    call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-user": "u"})
    call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]}, headers={"x-model-version": "v2"})
    inputs = [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]},
        {"name": "b", "shape": [1], "datatype": "FP32", "data": [2.0]},
    ]
    call(app, "POST", "/v2/models/m/infer", {"id": "r-4", "inputs": inputs})
    call(app, "POST", "/v1/models/m:predict", {"instances": [{"a": "x"}]})  # refused: not an answer
    # without an id from the client, the router makes one (and returns it in x-request-id)
    generated = [r.request_id for r in seen[1:3]]
    assert all(len(g) == 32 for g in generated) and generated[0] != generated[1]
    assert [(r.request_id, r.route) for r in seen] == [
        ("r-1", "weighted"),
        (generated[0], "sticky"),
        (generated[1], "pinned"),
        (seen[3].request_id, "weighted"),  # a V2 body id is echoed in the body; the request's id is x-request-id
    ]
    assert len(seen[3].request_id) == 32
    first = seen[0]
    assert (first.app, first.model) == ("churn-app", "m")
    assert first.features.tolist() == [[1.0, 2.0]] and first.prediction.tolist() == [
        3.0 if first.version == "1" else 30.0
    ]
    assert first.latency_ms >= 0 and seen[2].version == "2"


def test_a_failing_observer_never_costs_the_client_its_answer():
    def broken(record):
        raise RuntimeError("log is full")

    seen = []
    core, app = make(observers=[broken, seen.append])
    for _ in range(3):
        assert call(app, "POST", "/v1/models/m:predict", {"instances": [ROW]})[0] == 200
    assert core.observer_failures == 3 and len(seen) == 3


# ------------------------------------------------------------------- raw categories, binary tensors

PLANS = ["basic", "pro", "enterprise"]
SCHEMA = InputSchema(
    features=[
        FeatureSchema(name="a", kind="numeric", nullable=False, example=2.5),
        FeatureSchema(name="b", kind="categorical", nullable=True, categories=PLANS, example="basic"),
    ]
)


def test_categorical_features_take_their_raw_values_encoded_as_in_training():
    _, app = make(schema=SCHEMA)
    # "pro" is index 1 of the categories, the code ingest gave it: the fake model sums a + code.
    status, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [{"a": 1, "b": "pro"}]})
    assert (status, body["predictions"]) == (200, [2.0])
    doc = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 1]},
            {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["enterprise", "basic"]},
        ]
    }
    status, _, body = call(app, "POST", "/v2/models/m/infer", doc)
    assert (status, body["outputs"][0]["data"]) == (200, [3.0, 1.0])
    status, _, meta = call(app, "GET", "/v2/models/m")
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1], "parameters": {"nullable": False, "example": 2.5}},
        {
            "name": "b",
            "datatype": "BYTES",
            "shape": [-1],
            "parameters": {"nullable": True, "categories": PLANS, "example": "basic"},
        },
    ]


@pytest.mark.parametrize(
    "path,doc,needle",
    [
        (
            "/v1/models/m:predict",
            {"instances": [{"a": 1, "b": "gold"}]},
            "feature 'b' of instances[0] is \"gold\", not one of ['basic', 'pro', 'enterprise']",
        ),
        (
            "/v1/models/m:predict",
            {"instances": [{"a": 1, "b": 1}]},
            "feature 'b' of instances[0] takes one of ['basic', 'pro', 'enterprise'] (a string), got a number 1",
        ),
        (
            "/v1/models/m:predict",
            {"instances": [{"a": "pro", "b": "pro"}]},
            "feature 'a' of instances[0] must be a number, got a string \"pro\"",
        ),
        (
            "/v2/models/m/infer",
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
                    {"name": "b", "shape": [1], "datatype": "FP32", "data": [1]},
                ]
            },
            "inputs[1] ('b'): datatype FP32 does not match the model's metadata: the input takes BYTES",
        ),
        (
            "/v2/models/m/infer",
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["1"]},
                    {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
                ]
            },
            "inputs[0] ('a'): datatype BYTES does not match the model's metadata: the input takes a number type",
        ),
        (
            "/v2/models/m/infer",
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
            "this model has categorical feature(s) ['b']; send one tensor per feature",
        ),
    ],
)
def test_categorical_mistakes_get_a_4xx_naming_the_field(path, doc, needle):
    _, app = make(schema=SCHEMA)
    status, _, body = call(app, "POST", path, doc)
    assert status == 400 and needle in body["error"], body
    assert call(app, "POST", "/v1/models/m:predict", {"instances": [{"a": 1, "b": "basic"}]})[0] == 200


def _triton_body(inputs, outputs=None):
    """A request body exactly as tritonclient.http builds it (binary tensors by default)."""
    from tritonclient.http._utils import _get_inference_request

    body, json_size = _get_inference_request(inputs, "", outputs, 0, False, False, 0, None, None)
    return body, ({"Inference-Header-Content-Length": str(json_size)} if json_size is not None else {})


def test_binary_tensors_in_and_out_as_tritonclient_sends_them():
    import tritonclient.http as httpclient

    _, app = make(schema=SCHEMA)
    a = httpclient.InferInput("a", [3], "FP64")
    a.set_data_from_numpy(np.array([1.0, 2.0, 3.0]))
    b = httpclient.InferInput("b", [3], "BYTES")
    b.set_data_from_numpy(np.array([b"pro", b"enterprise", b"basic"], dtype=object))
    for outputs in (None, [httpclient.InferRequestedOutput("predict")]):  # both default to binary output
        body, headers = _triton_body([a, b], outputs)
        status, out_headers, data = call(app, "POST", "/v2/models/m/infer", body, headers=headers, raw=True)
        assert status == 200, data
        result = httpclient.InferResult.from_response_body(
            data, header_length=int(out_headers["inference-header-content-length"])
        )
        assert result.as_numpy("predict").tolist() == [2.0, 4.0, 3.0]
    # JSON output asked for, binary input: a JSON answer.
    body, headers = _triton_body([a, b], [httpclient.InferRequestedOutput("predict", binary_data=False)])
    status, _, out = call(app, "POST", "/v2/models/m/infer", body, headers=headers)
    assert (status, out["outputs"][0]["data"]) == (200, [2.0, 4.0, 3.0])


def _binary_request(tensors: list[tuple[dict, bytes]], header_length=None, extra=b""):
    head = json.dumps({"inputs": [t for t, _ in tensors]}).encode()
    body = head + b"".join(data for _, data in tensors) + extra
    return body, {"Inference-Header-Content-Length": str(len(head) if header_length is None else header_length)}


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


@pytest.mark.parametrize(
    "tensors,header_length,extra,needle",
    [
        # a binary payload shorter than declared
        (
            [
                ({"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}, b"\0" * 4),
                ({"name": "b", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 0}}, b""),
            ],
            None,
            b"",
            "binary_data_size is 8 bytes, but only 4 bytes of binary data remain",
        ),
        # sizes that do not fit the datatype
        (
            [({"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 6}}, b"\0" * 6)],
            None,
            b"",
            "binary_data_size is 6 bytes, but 2 FP32 values take 8",
        ),
        # a wrong header length: the JSON part is cut
        (
            [({"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4)],
            10,
            b"",
            "malformed JSON",
        ),
        # a header length past the body
        (
            [({"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4)],
            10_000,
            b"",
            "at most the body's",
        ),
        # bytes left over after the declared tensors
        (
            [
                ({"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4),
                (
                    {"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}},
                    _bytes_tensor([b"pro"]),
                ),
            ],
            None,
            b"junk",
            "bytes after the tensors' declared binary data",
        ),
        # a BYTES element that claims more than there is
        (
            [
                ({"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4),
                (
                    {"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}},
                    (99).to_bytes(4, "little") + b"pro",
                ),
            ],
            None,
            b"",
            "BYTES element 0 declares 99 bytes, only 3 remain",
        ),
        # mixed JSON and binary inputs, binary infinity
        (
            [
                (
                    {"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
                    np.array([np.inf], dtype="<f4").tobytes(),
                ),
                ({"name": "b", "shape": [1], "datatype": "BYTES", "data": ["pro"]}, b""),
            ],
            None,
            b"",
            "inputs[0] ('a'): infinite values are not allowed",
        ),
        # an unknown category in binary BYTES
        (
            [
                ({"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4),
                (
                    {"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}},
                    _bytes_tensor([b"gold"]),
                ),
            ],
            None,
            b"",
            'is "gold", not one of',
        ),
    ],
)
def test_bad_binary_requests_get_a_400_naming_the_problem(tensors, header_length, extra, needle):
    _, app = make(schema=SCHEMA)
    body, headers = _binary_request(tensors, header_length, extra)
    status, _, out = call(app, "POST", "/v2/models/m/infer", body, headers=headers)
    assert status == 400 and needle in out["error"], out
    # mixed JSON and binary inputs that are right are served
    good, headers = _binary_request(
        [
            (
                {"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
                np.array([1.0], dtype="<f4").tobytes(),
            ),
            ({"name": "b", "shape": [1], "datatype": "BYTES", "data": ["pro"]}, b""),
        ]
    )
    status, _, out = call(app, "POST", "/v2/models/m/infer", good, headers=headers)
    assert (status, out["outputs"][0]["data"]) == (200, [2.0])


def test_openapi_document_describes_every_route_behind_the_inference_auth():
    _, app = make(auth="api_key", keys=["k1"], schema=SCHEMA)
    assert call(app, "GET", "/openapi.json")[0] == 401
    status, _, doc = call(app, "GET", "/openapi.json", headers={"Authorization": "Bearer k1"})
    assert status == 200 and doc["openapi"].startswith("3.")
    routes = {
        (method.upper(), r.path)
        for r in app.routes
        if getattr(r, "methods", None) and r.path != "/openapi.json"
        for method in r.methods
        if method != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p != "/openapi.json"}
    assert routes | set(HOT_ROUTES) == documented
    instance = doc["paths"]["/v1/models/{name}:predict"]["post"]["requestBody"]["content"]["application/json"]
    props = instance["schema"]["properties"]["instances"]["items"]["properties"]
    assert props["b"] == {"type": "string", "enum": PLANS, "example": "basic"}
    assert props["a"]["type"] == "number"
    put = doc["paths"]["/admin/v1/models/{name}/traffic"]["put"]["requestBody"]["content"]["application/json"]
    assert "weights" in put["schema"]["properties"]
