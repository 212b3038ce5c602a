"""Feedback against a grown inference log: the cost of one feedback call as the log fills up.

    python benchmarks/feedback.py [--files 1000] [--rows 100] [--calls 50]

A router replica answers feedback for requests another replica served, so it checks the written log. The log
here holds `--files` request files and half as many feedback files of `--rows` rows each (≈ what 15 minutes
at 25 requests/s left in the loop test: 990 request and 520 feedback files). Measured in-process, no Ray:

- cold: the first call of a replica, which reads every file's key columns — what *every* call cost before
  2026-11-27 (each call read the whole log, and flushed first, adding two files per call);
- warm: later calls, which read only files written since (none here) and look keys up in memory;
- warm + 1 new file per call: another replica keeps writing.

Writes benchmarks/results/feedback-<date>.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from _record import save
from mlplatform.serve.config import InferenceLogConfig
from mlplatform.serve.inference_log import InferenceLog


def fill(root: Path, files: int, rows: int) -> list[str]:
    """Request and feedback files as replicas write them; returns the logged request ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: list[str] = []
    for kind, n in (("requests", files), ("feedback", files // 2)):
        for i in range(n):
            folder = root / kind / "app=bench" / f"date={time.strftime('%Y-%m-%d', time.gmtime())}"
            if kind == "requests":
                folder = folder / "hour=00" / "version=1"
            folder.mkdir(parents=True, exist_ok=True)
            batch = [uuid.uuid4().hex for _ in range(rows)]
            if kind == "requests":
                ids += batch
            pq.write_table(
                pa.table({"request_id": batch, "row": pa.array([0] * rows, pa.int32())}),
                folder / f"part-{i:05d}.parquet",
            )
    return ids


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--calls", type=int, default=50)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = fill(root, a.files, a.rows)
        log = InferenceLog(InferenceLogConfig(path=str(root)), "bench", ["x"], start=False)
        keys = [[(ids[(c * 20 + k) * 7 % len(ids)], 0) for k in range(20)] for c in range(a.calls)]  # 20 labels

        def call(batch):
            started = time.perf_counter()
            logged, _ = log.lookup(batch, batch)
            assert len(logged) == len(batch)
            return 1000 * (time.perf_counter() - started)

        cold = call(keys[0])
        warm = [call(k) for k in keys[1:]]
        writer = InferenceLog(InferenceLogConfig(path=str(root)), "bench", ["x"], start=False)
        growing = []
        for k in keys[1:]:
            writer.add_feedback([(k[0][0], 0, 1.0)], {k[0]})  # another replica's label, written
            writer.flush()
            growing.append(call(k))
    result = {
        "files": {"requests": a.files, "feedback": a.files // 2},
        "rows_per_file": a.rows,
        "cold_ms": round(cold, 1),
        "warm_ms_median": round(statistics.median(warm), 2),
        "warm_plus_one_new_file_ms_median": round(statistics.median(growing), 2),
    }
    print(
        f"{a.files} request + {a.files // 2} feedback files of {a.rows} rows: one feedback call of 20 labels "
        f"cold (read everything; every call before) {cold:.0f} ms, warm {result['warm_ms_median']} ms, "
        f"warm + a new file each call {result['warm_plus_one_new_file_ms_median']} ms "
        f"({cold / result['warm_ms_median']:.0f}× faster warm)"
    )
    print(f"results: {save('feedback', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
