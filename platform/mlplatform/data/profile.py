"""The profile of a dataset version: per-feature statistics, computed distributedly, kept with the version.

It is the reference that drift detection compares live traffic with: counts and null rates, min / max /
mean / std, a fixed-edge histogram and the quantiles read from it, and for categorical features the
frequency of each category. Two passes over the table, both Ray Data operations: one distributed
aggregation for the moments, one `map_batches` for the histograms (their edges need the min and max);
the driver only adds up a few numbers per feature.
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


def profile(table: Any, features: list[str], label: str, categories: dict[str, list[Any]]) -> dict[str, Any]:
    """Profile `table` (a Ray Dataset of the training table).

    Args:
        table: the materialized training table.
        features: the feature columns.
        label: the label column (its positive rate is recorded).
        categories: categorical features → their categories, in code order (codes are 0, 1, ...).

    Returns:
        A JSON-able dict: ``rows``, ``label_rate``, ``label_min``, ``label_max`` and ``features`` → statistics.
    """
    from ray.data.aggregate import Count, Max, Mean, Min, Std

    aggs: list[Any] = [
        Count(alias_name="__rows"),
        Mean(on=label, alias_name="__label_rate"),
        Min(on=label, alias_name="__label_min"),
        Max(on=label, alias_name="__label_max"),
    ]
    for f in features:
        aggs += [
            Count(on=f, ignore_nulls=True, alias_name=f"{f}|count"),
            Min(on=f, alias_name=f"{f}|min"),
            Max(on=f, alias_name=f"{f}|max"),
            Mean(on=f, alias_name=f"{f}|mean"),
            Std(on=f, alias_name=f"{f}|std"),
        ]
    moments = table.aggregate(*aggs)
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
    for part in table.map_batches(_histograms, batch_format="pandas", fn_kwargs={"edges": edges}).iter_rows():
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
        "label_rate": moments["__label_rate"],  # binary: the positive share; otherwise the label's mean
        "label_min": moments["__label_min"],
        "label_max": moments["__label_max"],
        "features": out,
    }
