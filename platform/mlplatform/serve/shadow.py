"""Shadow traffic: copy a share of requests to another version, compare its answers, never return them.

The copy runs beside the served request and is awaited after the client's answer is on its way; a slow,
failing or overloaded shadow is counted (``ok``, ``error``, ``timeout``, ``dropped``) and never touches the
client. The share is deterministic (a credit counter), like the weighted round robin of the split.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.serve.metrics import RouterMetrics
from mlplatform.serve.policy import ShadowSpec

__all__ = ["ShadowMirror", "MAX_SHADOW_IN_FLIGHT"]

logger = logging.getLogger("ray.serve")

#: Shadow copies in flight per router replica; beyond this a copy is dropped (and counted), so a slow
#: shadow version can never pile up work or memory in the router.
MAX_SHADOW_IN_FLIGHT = 256


@dataclass(frozen=True)
class _Copy:
    spec: ShadowSpec
    answer: asyncio.Future


class ShadowMirror:
    """Mirrors requests of one router replica to its policy's shadow version.

    Args:
        handles: version → object whose ``.predict.remote(x)`` is awaitable.
        metrics: where outcomes are counted per shadow version.
    """

    def __init__(self, handles: Mapping[str, Any], metrics: RouterMetrics) -> None:
        self._handles = handles
        self._metrics = metrics
        self._credit = 0.0
        self._diff_sum = 0.0
        self.tasks: set[asyncio.Task] = set()
        self.outcomes: Counter[str] = Counter()

    def start(self, spec: ShadowSpec | None, served: str, x: np.ndarray) -> _Copy | None:
        """Send a copy of the request `x` served by version `served`, when this request is in the shadow's share."""
        if spec is None or spec.version == served:
            return None
        self._credit += spec.percent
        if self._credit < 100:
            return None
        self._credit -= 100
        if len(self.tasks) >= MAX_SHADOW_IN_FLIGHT:
            self._outcome(spec.version, "dropped")
            return None
        return _Copy(spec, asyncio.ensure_future(self._call(spec, x)))

    def settle(self, copy: _Copy | None, served: np.ndarray | None) -> None:
        """Compare the copy's answer with what the client got (None: the client got an error), in the background."""
        if copy is None:
            return
        task = asyncio.ensure_future(self._compare(copy, served))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def status(self, spec: ShadowSpec | None) -> dict[str, Any] | None:
        """The shadow spec with this replica's tallies (for `GET /v1/models/{name}`)."""
        if spec is None:
            return None
        compared = self.outcomes["ok"]
        return {
            **spec.model_dump(),
            "outcomes": dict(self.outcomes),
            "mean_abs_diff": round(self._diff_sum / compared, 6) if compared else None,
        }

    async def _call(self, spec: ShadowSpec, x: np.ndarray) -> np.ndarray:
        async def call() -> Any:
            return await self._handles[spec.version].predict.remote(x)

        return np.asarray(await asyncio.wait_for(call(), spec.timeout_s))

    async def _compare(self, copy: _Copy, served: np.ndarray | None) -> None:
        """Wait for the shadow's answer and record how it went; never raises (the client is long gone)."""
        version = copy.spec.version
        try:
            answer = await copy.answer
        except asyncio.TimeoutError:
            self._outcome(version, "timeout")
            return
        except Exception as exc:  # a failing shadow must never touch the client: count it and move on
            logger.debug("shadow version %s failed: %s", version, exc)
            self._outcome(version, "error")
            return
        diff = None
        if served is not None and answer.shape == served.shape:
            diff = float(np.mean(np.abs(answer.astype(np.float64) - served.astype(np.float64))))
            self._diff_sum += diff
        self._outcome(version, "ok", diff)

    def _outcome(self, version: str, outcome: str, diff: float | None = None) -> None:
        self.outcomes[outcome] += 1
        self._metrics.shadowed(version, outcome, diff)
