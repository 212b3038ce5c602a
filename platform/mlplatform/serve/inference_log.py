"""The inference log: what the endpoint saw and answered, and the labels that arrive later (feedback).

Each router replica keeps one `InferenceLog`. It is a `RequestObserver`: on the request path it only samples
and appends to an in-memory buffer (a lock and a list append); a background thread writes the buffer as
Parquet every ``flush_s`` seconds or ``flush_rows`` rows, so a request never waits for storage. A full
buffer or a failed write drops rows, *counted* (`dropped`, and the ``mlplatform_inference_log_rows`` metric
with ``outcome="dropped"``), never a request.

Layout (Hive partitions; local disk or any pyarrow filesystem, e.g. ``s3://bucket/log``)::

    <root>/requests/app=<app>/date=<YYYY-MM-DD>/hour=<HH>/version=<v>/part-<time>-<uuid>.parquet
    <root>/feedback/app=<app>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet

A request row: ``request_id``, ``row`` (the instance's index in its request), ``ts`` (UTC), ``model``,
``route`` (weighted | sticky | pinned), ``latency_ms``, ``prediction`` (a binary model's probability, a
regression's value, a multiclass model's likeliest class index — with ``probabilities``, one per class) and
``features`` — a struct of the feature values as the model received them (NaN = missing), so feature names
never clash with log fields. A feedback row: ``request_id``, ``row``, ``label`` (0/1, the class index, or
the value: `label_code`), ``ts``. Partition values live in the path only.
Files appear whole: on a local disk they are written under a hidden name and renamed; an object-store PUT
is atomic. `mlplatform.monitor` reads this layout; this module never reads the monitor.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from mlplatform.data.version import filesystem, hidden
from mlplatform.serve.config import InferenceLogConfig
from mlplatform.serve.router import ServedRequest

__all__ = [
    "InferenceLog",
    "FeedbackResult",
    "label_code",
    "REQUESTS",
    "FEEDBACK",
    "LOG_FIELDS",
    "partition_path",
    "partitioning",
]

logger = logging.getLogger("ray.serve")

REQUESTS = "requests"
FEEDBACK = "feedback"
#: Columns of a request row besides ``features`` (readers use them to tell log fields from features).
LOG_FIELDS = ("request_id", "row", "ts", "model", "route", "latency_ms", "prediction")
#: Most request ids a replica remembers (to answer feedback without reading the log back): ~100 bytes each.
RECENT_IDS = 200_000


def partitioning(kind: str) -> Any:
    """The Hive partitioning of `kind` (requests | feedback), every partition value a string (a version "10" is
    not the number 10; Arrow would guess integers)."""
    import pyarrow.dataset as pads

    names = ["app", "date", "hour", "version"] if kind == REQUESTS else ["app", "date"]
    return pads.partitioning(pa.schema([(n, pa.string()) for n in names]), flavor="hive")


def partition_path(root: str, kind: str, app: str, when: datetime, version: str | None = None) -> str:
    """The folder of `kind` (requests | feedback) rows of `app` written at `when` (UTC)."""
    path = f"{root.rstrip('/')}/{kind}/app={app}/date={when:%Y-%m-%d}"
    if kind == REQUESTS:
        path += f"/hour={when:%H}/version={version}"
    return path


class FeedbackResult(dict):
    """One feedback item's answer: ``request_id``, ``status`` (accepted | unknown | duplicate | invalid) and,
    unless accepted, ``message``."""


class InferenceLog:
    """A router replica's sampler, buffer and background writer.

    Args:
        cfg: the serve config's ``inference_log`` section.
        app: the Serve application (a partition of the log).
        features: the model's input features, in order.
        root: where the log lives (default ``cfg.path``).
        metrics: a recorder with ``logged(outcome, n)`` (the router's), or None.
        start: start the background writer (tests flush by hand).
    """

    def __init__(
        self,
        cfg: InferenceLogConfig,
        app: str,
        features: list[str],
        *,
        root: str | None = None,
        metrics: Any = None,
        start: bool = True,
    ) -> None:

        self.cfg = cfg
        self.app = app
        self.features = list(features)
        self.root = (root or cfg.resolved_path()).rstrip("/")
        self.fs, self._fs_root = filesystem(self.root)
        self._local = type(self.fs).__name__ == "LocalFileSystem"
        self.metrics = metrics
        self._lock = threading.Lock()
        self._requests: list[tuple] = []  # (ts, ServedRequest)
        self._buffered = 0  # rows in _requests
        self._feedback: list[tuple] = []  # (ts, request_id, row, label)
        self._recent: OrderedDict[str, int] = OrderedDict()  # request id → rows, of sampled requests
        self._labelled: OrderedDict[tuple[str, int], None] = OrderedDict()
        # What the written log holds, per kind: file → hashes of its (request id, row) keys, and all of them
        # sorted. Written files never change, so each is read once, not at every feedback call (which read the
        # whole log each time: 1 500 files and seconds of a router's CPU per call after 15 minutes at 25 rps).
        self._index: dict[str, dict[str, np.ndarray]] = {REQUESTS: {}, FEEDBACK: {}}
        self._sorted: dict[str, np.ndarray] = {REQUESTS: _NO_KEYS, FEEDBACK: _NO_KEYS}
        self._index_lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self._failures = 0
        self._wake = threading.Event()
        self._woken = False
        self._stop = threading.Event()
        self._rate, self._max_rows, self._flush_rows = cfg.sample_rate, cfg.max_buffer_rows, cfg.flush_rows
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name=f"inference-log-{app}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------------------ request path

    def __call__(self, record: ServedRequest) -> None:
        """Sample and buffer one answered request (the observer hook); never blocks, never raises.

        This runs on every answered request, so it does the least it can: the config's numbers are plain
        attributes, and the writer thread is woken once per full buffer, not once per request after it.
        """
        if self._rate < 1 and random.random() >= self._rate:
            return
        n = len(record.features)
        with self._lock:
            if self._buffered + n > self._max_rows:
                self._drop(n, "buffer full")
                return
            self._requests.append((time.time(), record))
            self._buffered += n
            recent = self._recent
            recent[record.request_id] = n
            if len(recent) > RECENT_IDS:
                recent.popitem(last=False)
            wake = self._buffered >= self._flush_rows and not self._woken
            if wake:
                self._woken = True
        if wake:
            self._wake.set()

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        if self.metrics is not None:
            self.metrics.logged("dropped", n)
        if self.dropped == n or self.dropped // 10_000 != (self.dropped - n) // 10_000:
            logger.warning("inference log of %s dropped %d row(s) (%d so far): %s", self.app, n, self.dropped, why)

    # ---------------------------------------------------------------------------------- feedback

    def add_feedback(self, items: Iterable[tuple[str, int, float]], known_on_disk: set[tuple[str, int]]):
        """Record labels; returns one `FeedbackResult` per item, in order.

        Args:
            items: (request id, row, label) triples, already validated.
            known_on_disk: (request id, row) pairs found in the written log (see `lookup`).
        """
        out = []
        now = time.time()
        with self._lock:
            for request_id, row, label in items:
                key = (request_id, row)
                rows = self._recent.get(request_id)
                if key in self._labelled:
                    out.append(FeedbackResult(request_id=request_id, status="duplicate", message="already labelled"))
                elif (rows is None or row >= rows) and key not in known_on_disk:
                    out.append(FeedbackResult(request_id=request_id, status="unknown", message=self._unknown(row)))
                else:
                    self._labelled[key] = None
                    if len(self._labelled) > RECENT_IDS:
                        self._labelled.popitem(last=False)
                    self._feedback.append((now, request_id, row, label))
                    out.append(FeedbackResult(request_id=request_id, status="accepted"))
        self._wake.set()
        return out

    def _unknown(self, row: int) -> str:
        sampled = f", sampled out (sample_rate {self.cfg.sample_rate:g})" if self.cfg.sample_rate < 1 else ""
        return (
            f"no logged request with this id{f' and row {row}' if row else ''}: never served here{sampled}, or "
            f"served by another router replica less than {self.cfg.flush_s:g}s ago (retry later)"
        )

    def needs_lookup(self, keys: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (request id, row) pairs this replica cannot vouch for from memory."""
        with self._lock:
            return [
                (r, i)
                for r, i in keys
                if (r, i) not in self._labelled and (self._recent.get(r) is None or i >= self._recent[r])
            ]

    def lookup(
        self, unsure: list[tuple[str, int]], keys: list[tuple[str, int]], days: int = 7
    ) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """Which of `unsure` the written log holds, and which of `keys` already have a label there, from any
        replica (blocking: call it in a thread). Looks at the last `days` days of this app's partitions; files
        not seen before are read once (their ``request_id`` and ``row`` columns), the request log only when
        there are ids this replica does not remember."""
        if not keys:
            return set(), set()
        logged = self._written(REQUESTS, unsure, days) if unsure else set()
        return logged, self._written(FEEDBACK, keys, days)

    def _written(self, kind: str, keys: list[tuple[str, int]], days: int) -> set[tuple[str, int]]:
        """The `keys` that files of `kind` hold (by a 64-bit hash of each key: a false match is a 2⁻⁶⁴ event)."""
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        base = f"{self._fs_root}/{kind}/app={self.app}"
        today = datetime.now(timezone.utc).date()
        recent = {(today.fromordinal(today.toordinal() - d)).isoformat() for d in range(days + 1)}
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as exc:
            logger.warning("cannot list the inference log at %s: %s", base, exc)
            return set()
        paths = {
            info.path
            for info in infos
            if info.type == pafs.FileType.File
            and not hidden(info.base_name)
            and info.base_name.endswith(".parquet")
            and next((p[5:] for p in info.path.split("/") if p.startswith("date=")), None) in recent
        }
        with self._index_lock:
            index = self._index[kind]
            changed = False
            for path in paths - index.keys():
                try:
                    table = pq.read_table(path, columns=["request_id", "row"], filesystem=self.fs)
                except (OSError, pa.ArrowException) as exc:  # a damaged file: the drift job reports it
                    logger.warning("skipping unreadable inference log file %s: %s", path, exc)
                    continue
                index[path] = _key_hashes(table["request_id"].to_pylist(), table["row"].to_numpy())
                changed = True
            for path in index.keys() - paths:  # out of the window, or removed
                del index[path]
                changed = True
            if changed:
                self._sorted[kind] = np.unique(np.concatenate([_NO_KEYS, *index.values()]))
            known = self._sorted[kind]
        wanted = _key_hashes([r for r, _ in keys], np.asarray([i for _, i in keys]))
        at = np.minimum(np.searchsorted(known, wanted), max(len(known) - 1, 0))
        hit = (known[at] == wanted) if len(known) else np.zeros(len(keys), bool)
        return {k for k, h in zip(keys, hit, strict=True) if h}

    # ------------------------------------------------------------------------------------ writing

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.cfg.flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the writer thread must outlive any bug in one flush
                logger.exception("inference log flush of %s failed", self.app)

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written. Rows that fail to write are dropped, counted."""
        with self._lock:
            requests, self._requests, self._buffered = self._requests, [], 0
            feedback, self._feedback = self._feedback, []
            self._woken = False
        written = 0
        groups: dict[tuple[int, str], list[tuple]] = {}  # one file per partition: (hour since the epoch, version)
        for ts, record in requests:
            groups.setdefault((int(ts // 3600), record.version), []).append((ts, record))
        for (hour, version), rows in groups.items():
            when = datetime.fromtimestamp(hour * 3600, timezone.utc)
            folder = partition_path(self._fs_root, REQUESTS, self.app, when, version)
            n = sum(len(r.features) for _, r in rows)
            written += self._write(folder, lambda rows=rows: self._request_table(rows), n)
        if feedback:
            when = datetime.fromtimestamp(feedback[0][0], timezone.utc)
            folder = partition_path(self._fs_root, FEEDBACK, self.app, when)
            written += self._write(folder, lambda: _feedback_table(feedback), len(feedback))
        return written

    def _write(self, folder: str, build: Any, n: int) -> int:
        import pyarrow.parquet as pq

        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        try:
            table = build()
            self.fs.create_dir(folder, recursive=True)
            if self._local:  # whole files only: write hidden, then rename (atomic on one filesystem)
                tmp = f"{folder}/.{name}.tmp"
                pq.write_table(table, tmp, filesystem=self.fs)
                self.fs.move(tmp, f"{folder}/{name}")
            else:  # an object store PUT is atomic
                pq.write_table(table, f"{folder}/{name}", filesystem=self.fs)
        except Exception as exc:
            self._failures += 1
            self._drop(n, f"writing {folder}: {type(exc).__name__}: {exc}")
            return 0
        self.written += n
        if self.metrics is not None:
            self.metrics.logged("written", n)
        return n

    def _request_table(self, rows: list[tuple]) -> pa.Table:
        # Column-wise with NumPy: this runs in the writer thread while the replica serves, holding the GIL.
        records = [r for _, r in rows]
        counts = np.fromiter((len(r.features) for r in records), dtype=np.int64, count=len(records))
        starts = np.cumsum(counts) - counts
        total = int(counts.sum())

        def per_row(values: list, dtype: Any) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=dtype), counts)

        x = np.concatenate([r.features for r in records]).astype(np.float32, copy=False)
        preds = np.concatenate([r.prediction for r in records]).astype(np.float64, copy=False)
        columns: dict[str, Any] = {}
        if preds.ndim == 2:  # a multiclass model: the likeliest class's index, and every class's probability
            k = preds.shape[1]
            columns["probabilities"] = pa.FixedSizeListArray.from_arrays(pa.array(preds.astype(np.float32).ravel()), k)
            preds = preds.argmax(axis=1).astype(np.float64)
        features = pa.StructArray.from_arrays([pa.array(x[:, j]) for j in range(x.shape[1])], names=self.features)
        return pa.table(
            {
                "request_id": pa.array(per_row([r.request_id for r in records], object), pa.string()),
                "row": pa.array(np.arange(total) - np.repeat(starts, counts), pa.int32()),
                "ts": pa.array((per_row([t for t, _ in rows], np.float64) * 1e6).astype(np.int64)).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "model": pa.array(per_row([r.model for r in records], object), pa.string()),
                "route": pa.array(per_row([r.route for r in records], object), pa.string()),
                "latency_ms": pa.array(per_row([r.latency_ms for r in records], np.float32)),
                "prediction": pa.array(preds),
                **columns,
                "features": features,
            }
        )

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write what is left (a replica shutting down)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()


_NO_KEYS = np.empty(0, np.uint64)


def _key_hashes(request_ids: list[str], rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each (request id, row): pandas' SipHash of the id (the same in every process), mixed
    with the row by a multiplicative constant."""
    import pandas as pd

    if not request_ids:
        return _NO_KEYS
    ids = pd.util.hash_array(np.asarray(request_ids, dtype=object))
    return ids ^ (np.asarray(rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def _feedback_table(items: list[tuple]) -> pa.Table:
    return pa.table(
        {
            "request_id": pa.array([i[1] for i in items], pa.string()),
            "row": pa.array([i[2] for i in items], pa.int32()),
            "label": pa.array([float(i[3]) for i in items], pa.float64()),
            "ts": pa.array([int(i[0] * 1e6) for i in items], pa.timestamp("us", tz="UTC")),
        }
    )


def label_code(value: Any, task: str = "binary", classes: list[str] | tuple[str, ...] = ()) -> float | str:
    """A feedback label as the log keeps it (a float), or why it cannot be one — per the model's task: 0 or 1
    for a binary model; one of `classes` by name or by index for a multiclass one; any finite number for
    regression."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if task == "regression":
        return float(value) if number else "label must be a finite number"
    if task == "multiclass":
        if isinstance(value, str) and value in classes:
            return float(list(classes).index(value))
        if number and float(value).is_integer() and 0 <= value < len(classes):
            return float(value)
        return f"label must be one of {list(classes)} (or its index 0 to {len(classes) - 1})"
    return float(value) if number and value in (0, 1) else "label must be 0 or 1"
