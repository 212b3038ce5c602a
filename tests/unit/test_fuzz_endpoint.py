"""The endpoint fuzzed from its own OpenAPI document (schemathesis), and by hand with what a hostile client
sends: every answer is documented, none is a 5xx, and the endpoint keeps answering.

In-process through the ASGI app (the router's real routes, parsing and auth over stand-in model handles), so
thousands of requests take seconds; `tests/integration/test_e2e.py` fuzzes the served endpoint over HTTP with
a bounded number. The admin routes are fuzzed with the admin key and a control plane that records.
"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from mlplatform.xgb import xgboost
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import HOST
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import FUZZ_REJECTED
from tests.unit.test_serve_router import ROW, SCHEMA, call, make

ADMIN = {"authorization": "Bearer root"}
#: Requests fuzzed in this module by operation, for SECURITY.md's figures (printed with `pytest -s`).
SEEN: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    print(f"\nfuzzed: {SEEN.total()} generated requests over {len(SEEN)} operations, {len(hostile())} hostile ones")


class BoosterHandle:
    """A version's handle over a real tiny Booster (a stand-in's arithmetic would overflow where XGBoost's
    trees never do): `.predict.remote(x)` is awaitable."""

    def __init__(self, seed: int):
        x = np.random.default_rng(seed).normal(size=(200, 2)).astype(np.float32)
        x[:, 1] = np.abs(x[:, 1] * 2).round() % 3  # b: the code of a plan
        booster = xgboost().train({"max_depth": 2}, xgboost().DMatrix(x, label=x[:, 0] > 0), num_boost_round=3)

        async def predict(x):
            return booster.inplace_predict(x)

        async def version_info():
            return {"features": 2}

        self.predict = SimpleNamespace(remote=predict)
        self.version_info = SimpleNamespace(remote=version_info)


def endpoint():
    applied = []
    # schemathesis's client names its host "testserver"; an open endpoint answers loopback names only.
    core, app = make(
        handles={"1": BoosterHandle(1), "2": BoosterHandle(2)},
        schema=SCHEMA,
        admin_keys=["root"],
        allowed_hosts=["127.0.0.1", HOST],
        apply_policy=lambda policy, reason, who: applied.append(policy) or {"weights": policy["weights"]},
    )
    return app


CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": FUZZ_REJECTED}}})
# Schemathesis 4.32 cannot generate bodies for the traffic change's schema (a map of $ref'd objects: its
# UnsupportedSchema); that route is fuzzed by hand below and in test_serve_router.
schema = schemathesis.openapi.from_asgi("/openapi.json", endpoint(), config=CONFIG).exclude(
    method="PUT", path="/admin/v1/models/{name}/traffic"
)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_documented_route_answers_as_documented_and_never_5xx(case):
    headers = ADMIN if case.path.startswith("/admin/") else None  # the checks retry it without, and with a bad one
    response = case.call(headers=headers)
    SEEN[case.operation.label] += 1
    assert response.status_code < 500, (case.operation.label, case.body, response.text[:500])
    # "Valid by the document, so it must be accepted" holds for V1 and feedback bodies. V2 requests have rules
    # JSON Schema cannot state (a shape that matches its data, one tensor per feature, a binary body's JSON
    # header), so the generator's "valid" ones may rightly be refused: for them, every other check (no 5xx,
    # answers and statuses as documented, invalid data refused, auth enforced).
    beyond_schema = case.method == "POST" and case.path.startswith("/v2/")
    excluded = [positive_data_acceptance] if beyond_schema else None
    case.validate_response(response, excluded_checks=excluded, headers=headers)


def hostile() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers) a hostile or broken client sends."""
    v1, v2 = "/v1/models/m:predict", "/v2/models/m/infer"
    js = {"content-type": "application/json"}
    row = json.dumps({"instances": [ROW]}).encode()
    return [
        ("POST", v1, b'{"instances": [{"a": ' + b"9" * 5000 + b', "b": "pro"}]}', js),  # over Python's 4300 digits
        ("POST", v1, b'{"instances": [{"a": 1e999, "b": "pro"}]}', js),  # an infinity by overflow
        ("POST", v1, b'{"instances": [{"a": NaN, "b": "pro"}]}', js),
        ("POST", v1, b'{"instances": [{"a": -Infinity, "b": "pro"}]}', js),
        ("POST", v1, b"[" * 100_000, js),
        ("POST", v1, b'{"a":' * 5_000 + b"1" + b"}" * 5_000, js),
        ("POST", v1, b'{"instances": [' + b"{}," * 20_000 + b"{}]}", js),  # more instances than allowed
        ("POST", v1, b'{"instances": "' + b"x" * 3_000_000 + b'"}', js),  # over the body limit
        ("POST", v1, b"\xff\xfe" + row, js),
        ("POST", v1, row.replace(b"1.0", b"\xed\xa0\x80"), js),  # a UTF-8 surrogate
        ("POST", v1, b'{"instances": [{"a": "\\ud800", "b": "pro"}]}', js),  # a lone surrogate escape
        ("POST", v1, b'{"instances": [{"a": 1, "b": "\\u0000"}]}', js),
        ("POST", v1, b'{"instances": [{"a": true, "b": "pro"}]}', js),
        ("POST", v1, b'{"instances": [{"a": [1], "b": {"x": 1}}]}', js),
        ("POST", v1, row, {"content-type": "text/plain"}),  # what a web page may post anywhere
        ("POST", v1, row, {"content-type": "application/x-www-form-urlencoded"}),  # curl -d without -H
        ("POST", v1, row, {"content-type": "application/octet-stream"}),  # binary is for V2
        ("POST", "/v1/models/m/feedback", b'{"labels": []}', {"content-type": "multipart/form-data; b=x"}),
        ("POST", v1, row, {"content-length": "99999999"}),
        ("POST", v1, row, {"content-length": "-1"}),
        ("POST", v1, row, {"content-length": "abc"}),
        ("POST", v1, row, {"x-model-version": "9" * 300}),
        ("POST", v1, row, {"x-model-version": "../../etc/passwd"}),
        ("POST", v1, row, {"x-request-id": "\x00" * 10}),
        ("POST", v1, row, {"authorization": "Bearer " + "k" * 100_000}),
        ("POST", v1, row, {"authorization": "Basic Zm9vOmJhcg=="}),
        ("POST", v2, b'{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}]}', js),
        ("POST", v2, b'{"inputs": [{"name": "a", "shape": [1e9], "datatype": "FP32", "data": [1]}]}', js),
        ("POST", v2, b'{"inputs": [{"name": "a", "shape": [99999999999999999999], "datatype": "FP32"}]}', js),
        ("POST", v2, b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP99", "data": [1]}]}', js),
        ("POST", v2, b"{}", {"inference-header-content-length": "99999"}),
        ("POST", v2, b"{}", {"inference-header-content-length": "-5"}),
        ("POST", "/v2/models/m/versions/../../1/infer", row, js),
        ("POST", "/v1/models/" + "m" * 10_000 + ":predict", row, js),
        ("POST", "/v1/models/m/feedback", b'{"labels": [{"request_id": "x", "label": 1e999}]}', js),
        ("DELETE", v1, b"", {}),
        ("TRACE", "/v2/health/ready", b"", {}),
        ("GET", "/%00", b"", {}),
        ("PUT", "/admin/v1/models/m/traffic", b'{"weights": {"1": 1e308, "2": -1e308}}', {**js, **ADMIN}),
        ("PUT", "/admin/v1/models/m/traffic", b'{"weights": {"1": NaN, "2": NaN}}', {**js, **ADMIN}),
        ("PUT", "/admin/v1/models/m/traffic", b'{"weights": {}}', {**js, **ADMIN}),
    ]


@pytest.mark.parametrize("method, path, body, headers", hostile(), ids=lambda v: str(v)[:40])
def test_hostile_requests_get_a_4xx_and_the_endpoint_keeps_serving(method, path, body, headers):
    app = endpoint()
    status, _, out = call(app, method, path, body, headers=headers, raw=True)
    assert 400 <= status < 500, (status, out[:500])
    error = json.loads(out)["error"]
    assert len(error) < 1_000  # never the request echoed back
    good = call(app, "POST", "/v1/models/m:predict", {"instances": [{"a": 1.0, "b": "pro"}]})
    assert good[0] == 200
