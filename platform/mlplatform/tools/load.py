"""A small steady load for drills: keeps an endpoint busy while traffic changes or a rollout runs.

Not a benchmark tool (see benchmarks/ for wrk): it paces single-row V1 requests at a target rate from a
few threads and tallies answers by version and status, so a drill can show who answered what. With `rows`
it sends real rows (e.g. a dataset version's), and with their labels it also sends feedback for each answer,
as an application that learns the outcome later would — what the monitoring loop and its online test use.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from mlplatform.errors import DataContractError
from mlplatform.serve.protocol import categories_of

__all__ = ["LoadReport", "run_load", "dataset_rows"]


@dataclass
class LoadReport:
    sent: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    feedback: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        versions = "  ".join(f"v{v}={n}" for v, n in sorted(self.by_version.items()))
        statuses = "  ".join(f"{s}={n}" for s, n in sorted(self.by_status.items()))
        labels = "  ".join(f"{s}={n}" for s, n in sorted(self.feedback.items()))
        return f"{self.sent} requests  answered by: {versions or '-'}  status: {statuses or '-'}" + (
            f"  feedback: {labels}" if labels else ""
        )


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
    rows: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    categories: dict[str, list[str]] | None = None,
) -> LoadReport:
    """Send ~`rps` requests per second for `seconds` (or until `stop` is set); never raises on HTTP errors.

    Args:
        rows: [n, features] values to send (NaN = missing), a random row per request; default: random numbers.
        categories: the categorical features' raw values in code order (default: the endpoint's V2 metadata):
            a row's code ``i`` (a dataset's encoding) is sent as ``categories[f][i]``, a random number as some
            category.
        labels: the rows' 0/1 outcomes: each answered request is then labelled through the feedback route
            (in batches of 20 per thread).
    """
    url = f"{base_url}/v1/models/{model}:predict"
    feedback_url = f"{base_url}/v1/models/{model}/feedback"
    report = LoadReport()
    lock = threading.Lock()
    stop = stop or threading.Event()
    interval = threads / rps
    deadline = time.monotonic() + seconds

    if categories is None:
        try:
            meta = requests.get(f"{base_url}/v2/models/{model}", headers=headers, timeout=10).json()
            categories = categories_of(meta)
        except (requests.RequestException, ValueError, KeyError, TypeError):
            categories = {}  # the requests will say what is wrong
    cats = categories

    def instance(values: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f, v in zip(features, values, strict=True):
            if np.isnan(v):
                out[f] = None
            elif f in cats:
                out[f] = cats[f][int(abs(v)) % len(cats[f])]
            else:
                out[f] = float(v)
        return out

    def worker(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        session = requests.Session()
        next_at = time.monotonic() + k * interval / threads
        pending: list[dict] = []

        def send_feedback() -> None:
            try:
                r = session.post(feedback_url, json={"labels": pending}, headers=headers, timeout=30)
                answers = [a["status"] for a in r.json()["results"]] if r.status_code == 200 else ["refused"]
            except (requests.RequestException, ValueError, KeyError):
                answers = ["failed"] * len(pending)
            with lock:
                report.feedback.update(answers)
            pending.clear()

        while not stop.is_set() and time.monotonic() < deadline:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            pick = int(rng.integers(len(rows))) if rows is not None else None
            values = rows[pick] if rows is not None else rng.normal(10, 5, len(features))
            body = {"instances": [instance(values)]}
            try:
                r = session.post(url, json=body, headers=headers, timeout=10)
                version, status = r.headers.get("x-model-version", "?"), r.status_code
                error = "" if status == 200 else r.text[:200]
            except requests.RequestException as exc:
                r, version, status, error = None, "-", 0, f"{type(exc).__name__}: {exc}"[:200]
            with lock:
                report.sent += 1
                report.by_status[status] += 1
                if status == 200:
                    report.by_version[version] += 1
                elif len(report.errors) < 20:
                    report.errors.append(error)
            if labels is not None and status == 200 and r is not None:
                pending.append({"request_id": r.headers["x-request-id"], "label": int(labels[pick])})
                if len(pending) >= 20:
                    send_feedback()
        if pending:
            send_feedback()

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return report


def dataset_rows(path: str, features: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """The `features` and labels of a dataset version (`path`), or of the newest version under a dataset folder.

    Raises:
        DataContractError: no committed version there, or it lacks some of `features`.
    """
    import pyarrow.parquet as pq

    from mlplatform.data.version import MANIFEST, load_version

    root = Path(path)
    if not (root / MANIFEST).exists():
        versions = sorted(
            (p for p in root.glob(f"*/{MANIFEST}") if not p.parent.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        if not versions:
            raise DataContractError(f"{path}: no dataset version (no {MANIFEST} in it or its folders)")
        root = versions[-1].parent
    version = load_version(str(root))
    missing = sorted(set(features) - set(version.features))
    if missing:
        raise DataContractError(f"dataset version {root} lacks the model's features {missing}")
    table = pq.ParquetDataset(version.table_files).read(columns=[*features, version.label])
    x = np.column_stack([table[f].to_numpy(zero_copy_only=False).astype(float) for f in features])
    y = table[version.label].to_numpy(zero_copy_only=False)
    return x, y, str(root)
