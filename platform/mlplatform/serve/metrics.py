"""Per-version serving metrics: recorded by the router through Ray's Prometheus endpoint, read back by rollouts.

The router records, per model and version: requests by status code, latency, the predicted score and, for
shadow traffic, the outcome and the disagreement with the answer the client got. Ray exports them from
every node's metrics agent (``http://<node>:<MetricsExportPort>/metrics``, Prometheus text) with the
``ray_`` prefix, where Prometheus (and `dashboards/grafana.json`) pick them up, and where
`scrape` reads them for progressive rollouts. Outside a Ray process recording is a no-op, so the routes
run the same in unit tests.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "RouterMetrics",
    "VersionStats",
    "parse_prometheus",
    "version_stats",
    "metrics_urls",
    "scrape",
    "LATENCY_BOUNDARIES_MS",
]

#: Latency histogram buckets (ms); p99 is interpolated inside them.
LATENCY_BOUNDARIES_MS = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000]
SCORE_BOUNDARIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
DIFF_BOUNDARIES = [0.001, 0.01, 0.05, 0.1, 0.2, 0.5]

REQUESTS = "mlplatform_requests"
LATENCY = "mlplatform_request_latency_ms"
SCORE = "mlplatform_prediction_score"
SHADOW = "mlplatform_shadow_requests"
SHADOW_DIFF = "mlplatform_shadow_abs_diff"
LOG_ROWS = "mlplatform_inference_log_rows"


class RouterMetrics:
    """The router's recorders; no-ops when the process is not part of a Ray cluster."""

    def __init__(self, model_name: str) -> None:
        self.model = model_name
        self._on = False
        try:
            import ray
            from ray.serve.metrics import Counter, Histogram

            self._on = ray.is_initialized()
        except ImportError:  # pragma: no cover - ray is a dependency
            return
        if not self._on:
            return
        tags = ("model", "version")
        self._requests = Counter(
            REQUESTS, "Requests answered by a model version, by HTTP status and route.", (*tags, "code", "route")
        )
        self._latency = Histogram(
            LATENCY, "Router-observed latency of a version's answer (ms).", LATENCY_BOUNDARIES_MS, (*tags, "route")
        )
        self._score = Histogram(SCORE, "Predicted scores returned to clients.", SCORE_BOUNDARIES, tags)
        self._shadow = Counter(SHADOW, "Shadow copies by outcome (ok, error, timeout, dropped).", (*tags, "outcome"))
        self._shadow_diff = Histogram(
            SHADOW_DIFF, "Mean |shadow - served| score per mirrored request.", DIFF_BOUNDARIES, tags
        )
        self._log_rows = Counter(
            LOG_ROWS, "Inference log rows: written, or dropped (buffer full, write failed).", ("model", "outcome")
        )

    def logged(self, outcome: str, rows: int) -> None:
        """Count inference log rows `written` or `dropped`."""
        if self._on and rows:
            self._log_rows.inc(rows, tags={"model": self.model, "outcome": outcome})

    def answered(
        self, version: str, code: int, latency_ms: float, scores: Iterable[float] = (), route: str = "weighted"
    ) -> None:
        """Count one answer; `route` is how its version was chosen: weighted, sticky, or pinned (by the client)."""
        if not self._on:
            return
        tags = {"model": self.model, "version": version}
        self._requests.inc(tags={**tags, "code": str(code), "route": route})
        self._latency.observe(latency_ms, tags={**tags, "route": route})
        for s in scores:
            self._score.observe(float(s), tags=tags)

    def shadowed(self, version: str, outcome: str, abs_diff: float | None = None) -> None:
        if not self._on:
            return
        tags = {"model": self.model, "version": version}
        self._shadow.inc(tags={**tags, "outcome": outcome})
        if abs_diff is not None:
            self._shadow_diff.observe(abs_diff, tags=tags)


# ------------------------------------------------------------------------------------------ reading

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        out.append((name, dict(_LABEL.findall(labels or "")), number))
    return out


@dataclass
class VersionStats:
    """Counters of one version, summed over router replicas and nodes (cumulative, as Prometheus has them)."""

    requests: float = 0.0
    errors: float = 0.0
    latency_buckets: dict[float, float] = field(default_factory=dict)  # upper bound (ms) → cumulative count

    def minus(self, before: VersionStats) -> VersionStats:
        """What happened between `before` and this snapshot (a counter that went down was reset: a router
        replica restarted, so everything it counts now happened since)."""
        if self.requests < before.requests:
            return self
        return VersionStats(
            requests=self.requests - before.requests,
            errors=self.errors - before.errors,
            latency_buckets={le: n - before.latency_buckets.get(le, 0.0) for le, n in self.latency_buckets.items()},
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    def latency_quantile(self, q: float) -> float:
        """Latency quantile in ms, interpolated linearly inside its histogram bucket (as PromQL does)."""
        buckets = sorted(self.latency_buckets.items())
        if not buckets or buckets[-1][1] <= 0:
            return math.nan
        rank = q * buckets[-1][1]
        lower_bound, lower_count = 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if math.isinf(le):
                    return lower_bound  # beyond the last finite bucket: its bound is the best we know
                span = count - lower_count
                return lower_bound + (le - lower_bound) * ((rank - lower_count) / span if span else 1.0)
            lower_bound, lower_count = le, count
        return lower_bound


def version_stats(samples: Iterable[tuple[str, dict[str, str], float]], model: str) -> dict[str, VersionStats]:
    """Per-version stats of `model` from scraped samples (any number of nodes and router replicas).

    Requests a client pinned to a version (x-model-version) are left out: the traffic split did not send
    them, so a client pinning the canary must not skew a rollout's judgement of it.
    """
    stats: dict[str, VersionStats] = defaultdict(VersionStats)
    for name, labels, value in samples:
        if labels.get("model") != model or "version" not in labels or labels.get("route") == "pinned":
            continue
        s = stats[labels["version"]]
        if name in (f"ray_{REQUESTS}_total", f"ray_{REQUESTS}"):
            s.requests += value
            if labels.get("code", "").startswith("5"):
                s.errors += value
        elif name == f"ray_{LATENCY}_bucket":
            le = math.inf if labels.get("le") == "+Inf" else float(labels["le"])
            s.latency_buckets[le] = s.latency_buckets.get(le, 0.0) + value
    return dict(stats)


def metrics_urls() -> list[str]:
    """The Prometheus endpoint of every alive node of the cluster this process is connected to."""
    import ray

    return [
        f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        for n in ray.nodes()
        if n.get("Alive") and n.get("MetricsExportPort")
    ]


def scrape(urls: list[str], model: str, timeout: float = 5.0) -> dict[str, VersionStats]:
    """Scrape every node and sum the per-version stats of `model`. An unreachable node is skipped."""
    import requests

    samples: list[tuple[str, dict[str, str], float]] = []
    for url in urls:
        try:
            samples += parse_prometheus(requests.get(url, timeout=timeout).text)
        except requests.RequestException:
            continue
    return version_stats(samples, model)
