"""The per-key aggregation gives bit-identical floats whatever order its rows arrive in."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlplatform.data.ingest import _aggregate_partition

AGGS = [
    ("total", "tx__amount", "sum"),
    ("avg", "tx__amount", "mean"),
    ("spread", "tx__amount", "std"),
    ("n", "tx__row", "count"),
    ("age", "base__age", "max"),
]


def wide(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 5000
    amount = rng.lognormal(3, 2, n) * rng.choice([1e-6, 1.0, 1e6], n)  # magnitudes that make sums order-sensitive
    base = pd.DataFrame({"key": np.arange(50), "base__age": rng.integers(18, 90, 50).astype(float)})
    events = pd.DataFrame({"key": rng.integers(0, 50, n), "tx__amount": amount, "tx__row": 1.0})
    return pd.concat([base, events], ignore_index=True)[["key", "base__age", "tx__amount", "tx__row"]]


def test_row_order_does_not_change_any_bit():
    rows = wide()
    reference = _aggregate_partition(rows, "key", AGGS)
    for seed in range(5):
        shuffled = rows.sample(frac=1, random_state=seed)
        pd.testing.assert_frame_equal(_aggregate_partition(shuffled, "key", AGGS), reference, check_exact=True)
    # and the order does matter to a naive sum, which is why the rows are put in a canonical order first
    naive = [rows.sample(frac=1, random_state=s).groupby("key")["tx__amount"].sum() for s in range(5)]
    assert any(not (n.to_numpy() == naive[0].to_numpy()).all() for n in naive[1:])


def test_semantics_match_the_feature_definitions():
    rows = wide(1)
    out = _aggregate_partition(rows, "key", AGGS).set_index("key")
    ev = rows.dropna(subset=["tx__amount"]).groupby("key")["tx__amount"]
    np.testing.assert_allclose(out["total"], ev.sum().reindex(out.index).fillna(0), rtol=1e-12)
    np.testing.assert_allclose(out["n"], ev.count().reindex(out.index).fillna(0))
    assert (out["age"] == rows.dropna(subset=["base__age"]).set_index("key")["base__age"].reindex(out.index)).all()
    empty = _aggregate_partition(rows.iloc[:0], "key", AGGS)
    assert list(empty.columns) == ["key", "total", "avg", "spread", "n", "age"] and empty.empty
