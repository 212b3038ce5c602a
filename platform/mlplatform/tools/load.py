"""A small steady load for drills: keeps an endpoint busy while traffic changes or a rollout runs.

Not a benchmark tool (see benchmarks/ for wrk): it paces single-row V1 requests at a target rate from a
few threads and tallies answers by version and status, so a drill can show who answered what.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import requests

__all__ = ["LoadReport", "run_load"]


@dataclass
class LoadReport:
    sent: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        versions = "  ".join(f"v{v}={n}" for v, n in sorted(self.by_version.items()))
        statuses = "  ".join(f"{s}={n}" for s, n in sorted(self.by_status.items()))
        return f"{self.sent} requests  answered by: {versions or '-'}  status: {statuses or '-'}"


def run_load(
    base_url: str,
    model: str,
    features: list[str],
    *,
    rps: float,
    seconds: float,
    threads: int = 4,
    headers: dict[str, str] | None = None,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> LoadReport:
    """Send ~`rps` requests per second for `seconds` (or until `stop` is set); never raises on HTTP errors."""
    url = f"{base_url}/v1/models/{model}:predict"
    report = LoadReport()
    lock = threading.Lock()
    stop = stop or threading.Event()
    interval = threads / rps
    deadline = time.monotonic() + seconds

    def worker(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        session = requests.Session()
        next_at = time.monotonic() + k * interval / threads
        while not stop.is_set() and time.monotonic() < deadline:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            body = {
                "instances": [{f: float(v) for f, v in zip(features, rng.normal(10, 5, len(features)), strict=True)}]
            }
            try:
                r = session.post(url, json=body, headers=headers, timeout=10)
                version, status = r.headers.get("x-model-version", "?"), r.status_code
                error = "" if status == 200 else r.text[:200]
            except requests.RequestException as exc:
                version, status, error = "-", 0, f"{type(exc).__name__}: {exc}"[:200]
            with lock:
                report.sent += 1
                report.by_status[status] += 1
                if status == 200:
                    report.by_version[version] += 1
                elif len(report.errors) < 20:
                    report.errors.append(error)

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return report
