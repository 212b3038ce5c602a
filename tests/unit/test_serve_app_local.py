"""The serving app in Ray Serve's local testing mode (in-process, no Ray cluster) with real tiny Boosters.

Local testing mode gives deployment handles but no HTTP proxy, so the routes are driven through the ASGI
app (`create_app`) over real local `ModelVersion` handles. Never call `serve.shutdown()` here: with no Ray
initialised it would `ray.init()` and attach to whatever cluster runs on this machine.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import ray
import xgboost as xgb
from mlplatform.errors import ConfigError
from mlplatform.serve import make_app
from mlplatform.serve.config import AppArgs
from mlplatform.serve.endpoint import create_app
from mlplatform.serve.model import ModelVersion
from mlplatform.serve.router import RouterCore
from ray import serve

from tests.unit.test_serve_router import call

FEATURES = ["a", "b", "c"]


def _booster(label_column: int) -> xgb.Booster:
    rng = np.random.default_rng(label_column)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = (x[:, label_column] > 0).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=FEATURES)
    return xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, d, num_boost_round=5)


BOOSTERS = {"1": _booster(0), "2": _booster(1)}


class CountingBooster:
    """A Booster wrapper that counts predict calls, to see batches merge."""

    calls: list[int] = []

    def __init__(self, booster):
        self._b = booster
        self.feature_names = booster.feature_names

    def num_features(self):
        return self._b.num_features()

    def inplace_predict(self, x):
        CountingBooster.calls.append(len(x))
        return self._b.inplace_predict(x)


def fake_loader(uri: str, tracking_uri: str | None):
    assert uri.startswith("models:/m/") and tracking_uri is None
    return CountingBooster(BOOSTERS[uri.rsplit("/", 1)[1]])


def resolver(name, version, alias, *, tracking_uri=None):
    return {"champion": "1", "challenger": "2"}.get(alias, version)


ARGS = {
    "model_name": "m",
    "auth": "none",
    "versions": [{"alias": "champion", "weight": 90}, {"alias": "challenger", "weight": 10}],
}


@pytest.fixture(scope="module", autouse=True)
def _no_tracking_server():
    # Unit tests must not depend on (or reach) an MLflow server another test or the shell pointed at.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="module", autouse=True)
def _batching_without_replica_context():
    # Ray 2.60's local testing mode sets no replica context, and @serve.batch's queue calls
    # serve.get_replica_context() only to log a max_ongoing_requests warning; skip that warning here.
    from ray.serve import batching

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
        yield


@pytest.fixture(scope="module")
def handles():
    out = {}
    for version in ("1", "2"):
        app = ModelVersion.options(
            name=f"m-v{version}",
            max_ongoing_requests=64,
            user_config={"max_batch_size": 32, "batch_wait_timeout_s": 0.05},
        ).bind("m", version, None, loader=fake_loader, features=FEATURES)
        out[version] = serve.run(app, name=f"local-v{version}", route_prefix=None, _local_testing_mode=True)
    yield out
    assert not ray.is_initialized(), "local testing mode must not start or join a Ray cluster"


def test_whole_app_builds_in_local_mode():
    handle = serve.run(
        make_app(ARGS, loader=fake_loader, features=FEATURES, resolver=resolver),
        name="local-app",
        route_prefix=None,
        _local_testing_mode=True,
    )
    assert handle.deployment_name == "m-router"
    assert not ray.is_initialized()


def test_the_router_waits_boundedly_and_refuses_the_rest_with_503_and_retry_after():
    app = make_app(
        {**ARGS, "max_queued_requests": 50, "retry_after_s": 2},
        loader=fake_loader,
        features=FEATURES,
        resolver=resolver,
    )
    router = app._bound_deployment
    assert router.max_queued_requests == 50 and router.max_ongoing_requests == 256
    assert (router.backpressure_config.status_code, router.backpressure_config.retry_after_s) == (503, 2)


def test_versions_batch_and_predict_like_their_booster(handles):
    rng = np.random.default_rng(7)
    xs = [rng.normal(size=(int(rng.integers(1, 5)), 3)).astype(np.float32) for _ in range(24)]

    async def fire():
        # Interleave both versions: they live in one process here, so a shared batch queue would mix them.
        return await asyncio.gather(*(handles[str(1 + i % 2)].predict.remote(x) for i, x in enumerate(xs)))

    CountingBooster.calls.clear()
    results = asyncio.run(fire())
    for i, (x, got) in enumerate(zip(xs, results, strict=True)):
        expected = BOOSTERS[str(1 + i % 2)].inplace_predict(x)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert got.shape == (len(x),)
    assert sum(CountingBooster.calls) == sum(len(x) for x in xs)
    assert len(CountingBooster.calls) < len(xs), f"no batching happened: {CountingBooster.calls}"
    assert handles["2"].version_info.remote().result() == "2"


def test_routes_over_local_version_handles(handles):
    args = AppArgs.model_validate(
        {**ARGS, "versions": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}]}
    )
    app = create_app(RouterCore(args, FEATURES, handles))
    rows = [{"a": 0.3, "b": -1.2, "c": 2.0}, {"a": -0.5, "b": 0.7, "c": 0.0}]
    x = np.array([[r[f] for f in FEATURES] for r in rows], dtype=np.float32)

    versions = []
    for _ in range(20):
        status, headers, body = call(app, "POST", "/v1/models/m:predict", {"instances": rows})
        assert status == 200 and headers["x-model-version"] == body["model_version"]
        np.testing.assert_allclose(body["predictions"], BOOSTERS[body["model_version"]].inplace_predict(x), rtol=1e-6)
        versions.append(body["model_version"])
    assert versions.count("1") == 18 and versions.count("2") == 2

    doc = {
        "inputs": [
            {"name": f, "shape": [2], "datatype": "FP64", "data": x[:, j].tolist()} for j, f in enumerate(FEATURES)
        ]
    }
    status, _, body = call(app, "POST", "/v2/models/m/versions/2/infer", doc)
    assert status == 200
    np.testing.assert_allclose(body["outputs"][0]["data"], BOOSTERS["2"].inplace_predict(x), rtol=1e-6)
    assert call(app, "GET", "/v2/health/ready")[0] == 200


def test_version_refuses_a_booster_with_other_features():
    app = ModelVersion.options(name="m-v9").bind("m", "1", None, loader=fake_loader, features=["x", "y", "z"])
    with pytest.raises(Exception, match=r"features \['a', 'b', 'c'\] differ from the endpoint's \['x', 'y', 'z'\]"):
        serve.run(app, name="local-bad", route_prefix=None, _local_testing_mode=True)


def test_colocated_versions_predict_inside_the_router():
    handle = serve.run(
        make_app({**ARGS, "colocate": True}, loader=fake_loader, features=FEATURES, resolver=resolver),
        name="local-colocated",
        route_prefix=None,
        _local_testing_mode=True,
    )
    assert handle.deployment_name == "m-router"
    from mlplatform.serve.model import LocalVersion

    local = {v: LocalVersion("m", v, None, fake_loader, FEATURES) for v in ("1", "2")}
    args = AppArgs.model_validate(
        {**ARGS, "versions": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}]}
    )
    app = create_app(RouterCore(args, FEATURES, local))
    row = {"a": 0.3, "b": -1.2, "c": 2.0}
    x = np.array([[row[f] for f in FEATURES]], dtype=np.float32)
    seen = set()
    for _ in range(4):
        status, _, body = call(app, "POST", "/v1/models/m:predict", {"instances": [row]})
        assert status == 200
        np.testing.assert_allclose(body["predictions"], BOOSTERS[body["model_version"]].inplace_predict(x), rtol=1e-6)
        seen.add(body["model_version"])
    assert seen == {"1", "2"} and call(app, "GET", "/v2/health/ready")[0] == 200
    with pytest.raises(ConfigError, match="differ from the endpoint's"):
        LocalVersion("m", "1", None, fake_loader, ["x", "y", "z"])


def test_a_colocated_version_predicts_concurrent_requests_in_one_call_with_the_same_answers():
    from mlplatform.serve.model import LocalVersion

    version = LocalVersion("m", "1", None, fake_loader, FEATURES)
    rows = [np.random.default_rng(i).normal(size=(1 + i % 3, 3)).astype(np.float32) for i in range(12)]
    alone = [BOOSTERS["1"].inplace_predict(x) for x in rows]

    async def together():
        return await asyncio.gather(*(version.predict.remote(x) for x in rows))

    CountingBooster.calls.clear()
    answers = asyncio.run(together())
    assert CountingBooster.calls == [sum(len(x) for x in rows)]  # one call for the twelve requests
    for got, expected in zip(answers, alone, strict=True):
        assert np.array_equal(got, expected)  # a row's score does not depend on its batch
    CountingBooster.calls.clear()
    assert np.array_equal(asyncio.run(version.predict.remote(rows[0])), alone[0])  # alone: no waiting
    assert CountingBooster.calls == [len(rows[0])]

    # A failing predict fails every request of its batch, and the next batch is served.
    version.booster = None

    async def broken():
        return await asyncio.gather(*(version.predict.remote(x) for x in rows[:3]), return_exceptions=True)

    assert all(isinstance(r, AttributeError) for r in asyncio.run(broken()))
    version.booster = BOOSTERS["1"]
    assert np.array_equal(asyncio.run(version.predict.remote(rows[1])), alone[1])
