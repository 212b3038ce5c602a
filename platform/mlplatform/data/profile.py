"""The profile of a dataset version: per-feature statistics, computed distributedly, kept with the version.

It is the reference that drift detection compares live traffic with: counts and null rates, min / max /
mean / std, a fixed-edge histogram and the quantiles read from it, and for categorical features the
frequency of each category. Two passes over the table, each a `map_batches` (partial moments per batch,
combined exactly by Chan's formula; then the histograms, whose edges need the min and max); the driver only
adds up a few numbers per feature. A small table is profiled in the driver by the same functions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["profile", "BINS", "QUANTILES"]

BINS = 20
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def _histograms(batch: pd.DataFrame, edges: dict[str, list[float]]) -> pd.DataFrame:
    """Histogram counts of every feature in one batch (one output row, one list column per feature)."""
    out = {}
    for name, e in edges.items():
        values = batch[name].to_numpy(dtype="float64")
        values = values[np.isfinite(values)]
        out[name] = [np.histogram(values, bins=np.asarray(e))[0].astype("int64").tolist()]
    return pd.DataFrame(out)


def _quantiles(edges: list[float], counts: list[int]) -> dict[str, float]:
    """Quantiles interpolated inside the histogram's bins (exact at the edges, linear between them)."""
    total = sum(counts)
    if not total:
        return {}
    cumulative = np.concatenate([[0], np.cumsum(counts)]) / total
    return {str(q): float(np.interp(q, cumulative, edges)) for q in QUANTILES}


def _moments(batch: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One batch's partial moments per column (non-null count, min, max, mean, sum of squared deviations):
    batches combine exactly in any order by Chan's formula (`_combine`)."""
    out: dict[str, list[Any]] = {"__rows": [len(batch)]}
    for c in columns:
        v = batch[c].to_numpy(dtype="float64")
        v = v[~np.isnan(v)]
        mean = float(v.mean()) if len(v) else 0.0
        out[f"{c}|n"] = [len(v)]
        out[f"{c}|min"] = [float(v.min()) if len(v) else math.nan]
        out[f"{c}|max"] = [float(v.max()) if len(v) else math.nan]
        out[f"{c}|mean"] = [mean]
        out[f"{c}|m2"] = [float(((v - mean) ** 2).sum())]
    return pd.DataFrame(out)


def _combine(parts: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    """Rows, and per column count / min / max / mean / std (ddof 1; None without values) of all parts."""
    out: dict[str, Any] = {"__rows": sum(int(p["__rows"]) for p in parts)}
    for c in columns:
        n, mean, m2, lo, hi = 0, 0.0, 0.0, math.inf, -math.inf
        for p in parts:
            k = int(p[f"{c}|n"])
            if not k:
                continue
            delta = float(p[f"{c}|mean"]) - mean
            total = n + k
            mean += delta * k / total
            m2 += float(p[f"{c}|m2"]) + delta * delta * n * k / total
            n, lo, hi = total, min(lo, float(p[f"{c}|min"])), max(hi, float(p[f"{c}|max"]))
        out[f"{c}|count"] = n
        out[f"{c}|min"], out[f"{c}|max"] = (lo, hi) if n else (None, None)
        out[f"{c}|mean"] = mean if n else None
        out[f"{c}|std"] = math.sqrt(m2 / (n - 1)) if n > 1 else None
    return out


def profile(
    table: Any, features: list[str], label: str, categories: dict[str, list[Any]], *, in_driver: bool = False
) -> dict[str, Any]:
    """Profile `table` (a Ray Dataset of the training table).

    Args:
        table: the materialized training table.
        features: the feature columns.
        label: the label column (its positive rate is recorded).
        categories: categorical features → their categories, in code order (codes are 0, 1, ...).
        in_driver: compute in this process from one pandas frame (a small table: each Ray Data pass costs
            about a second of start-up, more than the work); the same functions either way.

    Returns:
        A JSON-able dict: ``rows``, ``label_rate``, ``label_min``, ``label_max`` and ``features`` → statistics.
    """
    frame = table.to_pandas() if in_driver else None

    def each_batch(fn: Any, **kw: Any) -> list[dict[str, Any]]:
        if frame is not None:
            return fn(frame, **kw).to_dict("records")
        return list(table.map_batches(fn, batch_format="pandas", fn_kwargs=kw).iter_rows())

    columns = [*features, label]
    moments = _combine(each_batch(_moments, columns=columns), columns)
    rows = int(moments["__rows"])

    edges: dict[str, list[float]] = {}
    for f in features:
        if f in categories:
            k = len(categories[f])
            edges[f] = [i - 0.5 for i in range(k + 1)]  # one bin per category code
        else:
            lo, hi = moments[f"{f}|min"], moments[f"{f}|max"]
            if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
                continue
            if hi <= lo:
                hi = lo + 1.0
            edges[f] = np.linspace(lo, hi, BINS + 1).tolist()
    counts = {f: np.zeros(len(e) - 1, dtype="int64") for f, e in edges.items()}
    for part in each_batch(_histograms, edges=edges):
        for f in edges:
            counts[f] += np.asarray(part[f], dtype="int64")

    out: dict[str, Any] = {}
    for f in features:
        n = int(moments[f"{f}|count"] or 0)
        stats: dict[str, Any] = {
            "kind": "categorical" if f in categories else "numeric",
            "count": n,
            "nulls": rows - n,
            "null_rate": (rows - n) / rows if rows else 0.0,
            "min": moments[f"{f}|min"],
            "max": moments[f"{f}|max"],
            "mean": moments[f"{f}|mean"],
            "std": moments[f"{f}|std"],
        }
        if f in edges:
            c = counts[f].tolist()
            if f in categories:
                stats["categories"] = {str(cat): (c[i] / n if n else 0.0) for i, cat in enumerate(categories[f])}
            else:
                stats["histogram"] = {"edges": edges[f], "counts": c}
                stats["quantiles"] = _quantiles(edges[f], c)
        out[f] = stats
    return {
        "rows": rows,
        "label_rate": moments[f"{label}|mean"],  # binary: the positive share; otherwise the label's mean
        "label_min": moments[f"{label}|min"],
        "label_max": moments[f"{label}|max"],
        "features": out,
    }
