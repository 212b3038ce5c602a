"""One deployment per model version: loads its XGBoost Booster from MLflow and predicts in batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from ray import serve

from mlplatform.errors import ConfigError
from mlplatform.registry import load_booster, model_uri

__all__ = ["ModelVersion", "LocalVersion", "Loader", "predict_together"]

logger = logging.getLogger("ray.serve")

#: ``(model_uri, tracking_uri) -> xgboost.Booster``: `mlplatform.registry.load_booster`, or a fake in tests.
Loader = Callable[[str, "str | None"], Any]


@serve.deployment
class ModelVersion:
    """A replica serving one registered model version.

    Args:
        model_name: registered model name.
        version: concrete registered version.
        tracking_uri: MLflow tracking server (None: $MLFLOW_TRACKING_URI).
        loader: ``(model_uri, tracking_uri) -> Booster``; tests pass a fake one.
        features: the router's feature order; checked against the Booster's feature names if it has them.
        nthread: XGBoost threads per predict (the replica's whole CPUs, at least 1).
    """

    def __init__(
        self,
        model_name: str,
        version: str,
        tracking_uri: str | None,
        loader: Loader = load_booster,
        features: list[str] | None = None,
        nthread: int = 1,
    ) -> None:
        self.model_name = model_name
        self.version = str(version)
        self.booster = loader(model_uri(model_name, self.version), tracking_uri)
        if features is not None:
            _check_features(self.booster, features, f"{model_name} v{self.version}")
        # XGBoost's default is every core of the node, which oversubscribes a replica with a CPU share.
        _set_threads(self.booster, nthread)
        # The batch queue is built per instance: `@serve.batch` on a method keeps ONE queue per class per
        # process, so two versions living in one process (local testing mode) would share batches and the
        # first request's `self` would predict them all.
        self._batched = serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)(self._predict_batch)
        logger.info("loaded %s version %s", model_name, self.version)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply ``{"max_batch_size": int, "batch_wait_timeout_s": float}`` without restarting the replica."""
        cfg = dict(user_config or {})
        unknown = sorted(set(cfg) - {"max_batch_size", "batch_wait_timeout_s"})
        if unknown:
            raise ConfigError(f"unknown user_config key(s) {unknown}; expected max_batch_size, batch_wait_timeout_s")
        if "max_batch_size" in cfg:
            self._batched.set_max_batch_size(int(cfg["max_batch_size"]))
        if "batch_wait_timeout_s" in cfg:
            self._batched.set_batch_wait_timeout_s(float(cfg["batch_wait_timeout_s"]))

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for the rows of `x` ([n, features] float32), batched with concurrent requests."""
        return await self._batched(x)

    async def _predict_batch(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        # XGBoost releases the GIL, so predicting in a thread keeps the replica's event loop free to queue up
        # the next batch meanwhile.
        return await asyncio.to_thread(predict_together, self.booster, xs)

    def version_info(self) -> str:
        """The version this replica serves (also a cheap liveness probe for the router)."""
        return self.version


def predict_together(booster: Any, xs: list[np.ndarray]) -> list[np.ndarray]:
    """The predictions for several requests' rows from one ``inplace_predict``, split back per request."""
    preds = np.asarray(booster.inplace_predict(xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)))
    return list(np.split(preds, np.cumsum([len(x) for x in xs])[:-1]))


def _set_threads(booster: Any, n: int) -> None:
    if hasattr(booster, "set_param"):
        booster.set_param({"nthread": max(1, n)})


def _check_features(booster: Any, features: list[str], what: str) -> None:
    """Refuse to serve a Booster whose inputs disagree with the endpoint's feature list."""
    n = booster.num_features()
    if n != len(features):
        raise ConfigError(f"{what}: the Booster takes {n} features, the endpoint sends {len(features)} {features}")
    names = booster.feature_names
    if names is not None and list(names) != list(features):
        raise ConfigError(f"{what}: the Booster's features {list(names)} differ from the endpoint's {features}")


class _Call:
    """``.remote(*args)`` returning an awaitable, as a DeploymentHandle method does."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def remote(self, *args: Any) -> Any:
        return self._fn(*args)


class LocalVersion:
    """A version loaded inside the router replica (``colocate: true``), with a DeploymentHandle's interface.

    Predicts on the router's event loop, batching opportunistically: the requests that reach the model in one
    turn of the loop (under load, several) share one ``inplace_predict``, which costs about as much for 16 rows
    as for one (its fixed cost is XGBoost's per-call setup, ~100 us). Nothing waits for a batch to fill: an
    idle endpoint predicts a lone request on the next turn of the loop. XGBoost scores rows independently, so
    a row's prediction does not depend on its batch.
    """

    def __init__(self, model_name: str, version: str, tracking_uri: str | None, loader: Loader, features: list[str]):
        self.version = str(version)
        self.booster = loader(model_uri(model_name, self.version), tracking_uri)
        _check_features(self.booster, features, f"{model_name} v{self.version}")
        # One thread: OpenMP workers spinning for a single row cost more than they save, and on a busy
        # node they fight the router's own event loop for the CPU.
        _set_threads(self.booster, 1)
        self._waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self.predict = _Call(self._predict)
        self.version_info = _Call(self._version_info)
        logger.info("loaded %s version %s in the router", model_name, self.version)

    async def _predict(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((x, answer))
        if len(self._waiting) == 1:
            # Runs after the callbacks already ready in this turn: the requests among them join the batch.
            loop.call_soon(self._predict_waiting)
        return await answer

    def _predict_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        xs = [x for x, _ in batch]
        try:
            parts = predict_together(self.booster, xs)
        except Exception as exc:  # every request of the batch gets the error (the router answers a 503)
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, answer), part in zip(batch, parts, strict=True):
            if not answer.done():  # a client that went away cancelled its future
                answer.set_result(part)

    async def _version_info(self) -> str:
        return self.version
