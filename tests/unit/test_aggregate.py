"""The per-key aggregation gives bit-identical floats whatever order its rows arrive in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from mlplatform.data.ingest import _Agg
from mlplatform.data.ingest import _aggregate_partition as _partition

AGGS = [
    _Agg("total", "tx__amount", "sum"),
    _Agg("avg", "tx__amount", "mean"),
    _Agg("spread", "tx__amount", "std"),
    _Agg("n", "tx__row", "count"),
    _Agg("age", "base__age", "max"),
    _Agg("trend", "tx__amount", "slope", time="tx__day"),
    _Agg("latest", "tx__amount", "last", time="tx__day"),
    _Agg("recent_sum", "tx__amount", "sum", time="tx__day", window=2),
]


def _aggregate_partition(rows: pd.DataFrame, key: str, aggs: list[_Agg]) -> pd.DataFrame:
    return _partition(pa.Table.from_pandas(rows, preserve_index=False), key, pa.int64(), aggs).to_pandas()


def wide(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 5000
    amount = rng.lognormal(3, 2, n) * rng.choice([1e-6, 1.0, 1e6], n)  # magnitudes that make sums order-sensitive
    base = pd.DataFrame({"key": np.arange(50), "base__age": rng.integers(18, 90, 50).astype(float)})
    events = pd.DataFrame(
        {"key": rng.integers(0, 50, n), "tx__amount": amount, "tx__row": 1.0, "tx__day": rng.integers(0, 30, n) * 1.0}
    )
    return pd.concat([base, events], ignore_index=True)[["key", "base__age", "tx__amount", "tx__row", "tx__day"]]


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
    assert list(empty.columns) == ["key", *(a.out for a in AGGS)] and empty.empty


def test_time_series_window_last_and_slope():
    rows = pd.DataFrame(
        {
            "key": [1, 1, 1, 1, 2, 2, 3],
            "v": [1.0, 3.0, 5.0, 100.0, 7.0, np.nan, 4.0],
            "t": [0.0, 1.0, 2.0, 10.0, 5.0, 6.0, 1.0],
        }
    )
    aggs = [
        _Agg("slope", "v", "slope", time="t"),
        _Agg("recent_slope", "v", "slope", time="t", window=9),  # key 1: t in [1, 10]
        _Agg("last", "v", "last", time="t"),
        _Agg("recent_mean", "v", "mean", time="t", window=1.5),  # key 1: only t=10
        _Agg("recent_n", "v", "count", time="t", window=1.5),
    ]
    out = _aggregate_partition(rows, "key", aggs).set_index("key")
    assert np.isclose(out.loc[1, "slope"], np.polyfit([0, 1, 2, 10], [1, 3, 5, 100], 1)[0])
    assert np.isclose(out.loc[1, "recent_slope"], np.polyfit([1, 2, 10], [3, 5, 100], 1)[0])
    assert np.isnan(out.loc[2, "slope"]) and np.isnan(out.loc[3, "slope"])  # one point has no trend
    assert out["last"].to_dict() == {1: 100.0, 2: 7.0, 3: 4.0}  # key 2's latest value is missing: last known
    assert out.loc[1, "recent_mean"] == 100.0 and out["recent_n"].to_dict() == {1: 1, 2: 1, 3: 1}
