"""Drift statistics held against SciPy (to 1e-9) on samples with known shifts, the decision rules, and the
resolution of tables: damaged, truncated and changed log files are skipped and reported, never read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlplatform.errors import ConfigError, DataContractError
from mlplatform.monitor.config import DriftConfig
from mlplatform.monitor.config import parse_duration as parse_since
from mlplatform.monitor.drift import _verdict, decide
from mlplatform.monitor.stats import categorical_stats, numeric_stats
from mlplatform.monitor.window import log_window, resolve
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

TOL = 1e-9


def reference_psi(ref, cur):
    """PSI written out independently: deciles of the reference, open outer bins, value on a cut goes up."""
    cuts = np.unique(np.quantile(ref, np.linspace(0.1, 0.9, 9)))
    bins = np.concatenate([[-np.inf], cuts, [np.inf]])
    r = np.array([np.sum((ref >= lo) & (ref < hi)) for lo, hi in zip(bins[:-1], bins[1:], strict=True)]) / len(ref)
    c = np.array([np.sum((cur >= lo) & (cur < hi)) for lo, hi in zip(bins[:-1], bins[1:], strict=True)]) / len(cur)
    rr, cc = np.clip(r, 1e-4, None), np.clip(c, 1e-4, None)
    return float(np.sum((cc - rr) * np.log(cc / rr))), r, c


@pytest.mark.parametrize(
    "shift",
    [
        ("same", lambda g, n: g.normal(0, 1, n)),
        ("mean", lambda g, n: g.normal(0.5, 1, n)),
        ("scale", lambda g, n: g.normal(0, 2, n)),
        ("ties", lambda g, n: g.integers(0, 4, n).astype(float)),
        ("outside", lambda g, n: g.normal(10, 1, n)),
    ],
    ids=lambda s: s[0],
)
@pytest.mark.parametrize("sizes", [(300, 200), (5000, 8000), (20_000, 15_000)])
def test_numeric_statistics_match_scipy(shift, sizes):
    g = np.random.default_rng(1)
    ref = g.normal(0, 1, sizes[0]) if shift[0] != "ties" else g.integers(0, 5, sizes[0]).astype(float)
    cur = shift[1](g, sizes[1])
    got = numeric_stats(ref, cur)
    want = ks_2samp(ref, cur)
    assert abs(got["ks"] - want.statistic) < TOL and abs(got["ks_pvalue"] - want.pvalue) < TOL
    psi, r, c = reference_psi(ref, cur)
    assert abs(got["psi"] - psi) < TOL
    assert abs(got["js"] - jensenshannon(r, c, base=2)) < TOL
    assert abs(sum(got["bins"]["ref"]) - 1) < TOL and abs(sum(got["bins"]["cur"]) - 1) < TOL


def test_numeric_known_shifts_are_ordered():
    g = np.random.default_rng(2)
    ref = g.normal(0, 1, 10_000)
    same, small, large = (numeric_stats(ref, g.normal(m, 1, 10_000)) for m in (0, 0.1, 1.0))
    assert same["psi"] < small["psi"] < 0.1 < 0.2 < large["psi"]
    assert same["ks_pvalue"] > 0.01 and large["ks_pvalue"] < 1e-100
    assert same["js"] < small["js"] < large["js"] <= 1


def test_missing_values_are_left_out_and_counted():
    ref = np.array([1.0, 2.0, np.nan, 4.0] * 50)
    cur = np.array([1.0, np.nan, np.nan, 4.0] * 50)
    got = numeric_stats(ref, cur)
    assert got["missing_ref"] == 0.25 and got["missing_cur"] == 0.5
    assert got["n_ref"] == 150 and got["n_cur"] == 100
    want = ks_2samp(ref[~np.isnan(ref)], cur[~np.isnan(cur)])
    assert abs(got["ks"] - want.statistic) < TOL
    empty = numeric_stats(ref, np.array([np.nan, np.nan]))
    assert empty["ks"] is None and empty["psi"] is None and empty["missing_cur"] == 1.0


@pytest.mark.parametrize(
    "ref, cur",
    [
        ({"a": 500, "b": 300, "c": 200}, {"a": 480, "b": 310, "c": 210}),
        ({"a": 500, "b": 300, "c": 200}, {"a": 100, "b": 300, "c": 600}),
        ({"a": 500, "b": 500}, {"a": 450, "b": 550}),  # 2 x 2: SciPy's Yates correction
        ({"a": 500, "b": 500}, {"a": 400, "b": 500, "new": 100}),  # a category the reference never saw
    ],
)
def test_categorical_statistics_match_scipy(ref, cur):
    got = categorical_stats(ref, cur)
    cats = sorted(set(ref) | set(cur))
    table = np.array([[ref.get(k, 0) for k in cats], [cur.get(k, 0) for k in cats]], dtype=float)
    want = chi2_contingency(table)
    assert abs(got["chi2"] - want.statistic) < TOL and abs(got["chi2_pvalue"] - want.pvalue) < TOL
    r, c = table[0] / table[0].sum(), table[1] / table[1].sum()
    rr, cc = np.clip(r, 1e-4, None), np.clip(c, 1e-4, None)
    assert abs(got["psi"] - np.sum((cc - rr) * np.log(cc / rr))) < TOL
    assert abs(got["js"] - jensenshannon(r, c, base=2)) < TOL
    assert got["bins"]["categories"] == cats


def test_one_category_on_both_sides_is_no_drift():
    got = categorical_stats({"a": 10}, {"a": 20})
    assert got["chi2_pvalue"] == 1.0 and got["psi"] == 0.0


def test_decisions_follow_the_configured_test():
    stats = {"ks": 0.3, "ks_pvalue": 1e-8, "psi": 0.15, "js": 0.05}
    assert decide(stats, "numeric", DriftConfig())["drifted"] is False  # psi 0.15 ≤ 0.2
    assert decide(stats, "numeric", DriftConfig(numeric_test="ks"))["drifted"] is True
    assert decide(stats, "numeric", DriftConfig(psi=0.1))["drifted"] is True
    d = decide(stats, "numeric", DriftConfig(numeric_test="ks", ks_pvalue=0.01))
    assert d["severity"] == pytest.approx(np.log(1e-8) / np.log(0.01))
    cat = decide({"chi2": 5.0, "chi2_pvalue": 0.2, "psi": 0.5, "js": 0.3}, "categorical", DriftConfig())
    assert cat["drifted"] is True and cat["test"] == "psi"


def test_the_verdict_is_the_weighted_share():
    feats = {
        "a": {"kind": "numeric", "drifted": True, "severity": 3},
        "b": {"kind": "numeric", "drifted": False, "severity": 0.1},
        "c": {"kind": "categorical", "drifted": False, "severity": 0.2},
        "gone": {"kind": "absent", "drifted": False, "severity": 0},
    }
    plain = _verdict(feats, DriftConfig(), rows=1000)
    assert plain["share"] == pytest.approx(1 / 3) and plain["drifted"] is False
    weighted = _verdict(feats, DriftConfig(weights={"a": 2.0}), rows=1000)
    assert weighted["share"] == pytest.approx(0.5) and weighted["drifted"] is True
    few = _verdict(feats, DriftConfig(), rows=10)
    assert few["drifted"] is None and "no verdict" in few["message"]


# ------------------------------------------------------------------------------------- tables


def write_log(root, app, when, rows=5, features=("a", "b"), version="1", name="part-1.parquet"):
    folder = root / "requests" / f"app={app}" / f"date={when:%Y-%m-%d}" / f"hour={when:%H}" / f"version={version}"
    folder.mkdir(parents=True, exist_ok=True)
    struct = pa.StructArray.from_arrays([pa.array(np.ones(rows, np.float32)) for _ in features], names=list(features))
    pq.write_table(
        pa.table(
            {
                "request_id": [f"r{i}" for i in range(rows)],
                "row": pa.array([0] * rows, pa.int32()),
                "ts": pa.array([int(when.timestamp() * 1e6)] * rows, pa.timestamp("us", tz="UTC")),
                "model": ["m"] * rows,
                "route": ["weighted"] * rows,
                "latency_ms": pa.array([1.0] * rows, pa.float32()),
                "prediction": [0.5] * rows,
                "features": struct,
            }
        ),
        folder / name,
    )
    return folder / name


def test_a_log_window_skips_and_reports_damaged_and_changed_files(tmp_path):
    now = datetime.now(timezone.utc)
    good = write_log(tmp_path, "app", now)
    write_log(tmp_path, "app", now, name="part-2.parquet")
    write_log(tmp_path, "app", now, features=("a", "c"), name="part-3.parquet")  # a feature renamed
    (good.parent / "part-4.parquet").write_bytes(good.read_bytes()[:-100])  # truncated
    (good.parent / "part-5.parquet").write_bytes(b"not parquet at all")
    (good.parent / ".part-6.parquet.tmp").write_bytes(b"being written")
    write_log(tmp_path, "app", now - timedelta(days=3), name="old.parquet")  # outside the window
    table = log_window("app", root=str(tmp_path), since=timedelta(hours=2))
    assert sorted(p.rsplit("/", 1)[1] for p in table.files) == ["part-1.parquet", "part-2.parquet"]
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in table.skipped}
    assert set(reasons) == {"part-3.parquet", "part-4.parquet", "part-5.parquet"}
    assert "schema changed" in reasons["part-3.parquet"] and "'c'" in reasons["part-3.parquet"]
    assert "unreadable" in reasons["part-4.parquet"]
    assert table.features == ["a", "b"] and table.is_log


def test_empty_windows_and_missing_logs_say_so(tmp_path):
    write_log(tmp_path, "app", datetime.now(timezone.utc) - timedelta(days=2))
    with pytest.raises(DataContractError, match="no rows between"):
        log_window("app", root=str(tmp_path), since=timedelta(hours=1))
    with pytest.raises(DataContractError, match="no inference log for application 'other'"):
        log_window("other", root=str(tmp_path), since=timedelta(hours=1))
    with pytest.raises(ConfigError, match="no such file"):
        resolve(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataContractError, match="no Parquet files"):
        resolve(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"junk")
    with pytest.raises(DataContractError, match="no readable Parquet file"):
        resolve(str(tmp_path / "bad"))


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("24h", 86400), ("1.5d", 129600)])
def test_durations(text, seconds):
    assert parse_since(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "h", "-1h", "1w"])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="duration"):
        parse_since(text)


# ------------------------------------------------------------------------ labelled performance by task


def _side(y, prediction, **more):
    n = len(y)
    ts = np.array(["2026-11-27T10:15"] * (n // 2) + ["2026-11-27T11:15"] * (n - n // 2), dtype="datetime64[us]")
    return {"label": np.asarray(y, float), "prediction": np.asarray(prediction, float), "ts": ts, **more}


def test_performance_follows_the_task():
    from mlplatform.monitor.config import DriftConfig
    from mlplatform.monitor.drift import _performance, _reference

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probabilities = np.full((300, 3), 0.1)
    probabilities[np.arange(300), y] = 0.8
    probabilities[:30] = [0.8, 0.1, 0.1]  # a tenth answered "class 0", right or wrong
    multi = _performance(_side(y, probabilities.argmax(1), probabilities=probabilities), None, None, DriftConfig())
    assert multi["task"] == "multiclass" and set(multi["metrics"]) == {"mlogloss", "accuracy", "macro_f1"}
    assert 0.9 <= multi["metrics"]["accuracy"] < 1 and len(multi["over_time"]) == 2

    value = rng.normal(100, 20, 300)
    reg = _performance(_side(value + rng.normal(0, 5, 300), value), None, None, DriftConfig())
    assert reg["task"] == "regression" and set(reg["metrics"]) == {"rmse", "mae", "r2"}
    assert 4 < reg["metrics"]["rmse"] < 6 and reg["metrics"]["r2"] > 0.9

    binary = _performance(_side(y == 1, np.where(y == 1, 0.9, 0.2)), None, None, DriftConfig())
    assert binary["task"] == "binary" and binary["metrics"]["auc"] == 1.0

    # The version's validation metrics, named as the live ones (merror is 1 − accuracy).
    tags = {"mlplatform.metric.val_mlogloss": "0.3", "mlplatform.metric.val_merror": "0.1", "other": "x"}
    assert _reference("multiclass", tags) == {"mlogloss": 0.3, "accuracy": pytest.approx(0.9)}


def test_performance_drift_by_task(monkeypatch):
    """AUC or accuracy down by more than performance_drop, RMSE up by more than that fraction: drift."""
    from mlplatform import registry
    from mlplatform.monitor.config import DriftConfig
    from mlplatform.monitor.drift import _performance

    class Version:
        def __init__(self, tags):
            self.tags = tags

    def registered(tags):
        class Client:
            def get_model_version(self, name, version):
                return Version(tags)

        monkeypatch.setattr(registry, "client", lambda tracking_uri=None: Client())

    rng = np.random.default_rng(1)
    value = rng.normal(100, 20, 300)
    side = _side(value + rng.normal(0, 5, 300), value)  # live RMSE ≈ 5
    registered({"mlplatform.task": "regression", "mlplatform.metric.val_rmse": "4.0"})
    out = _performance(side, ("houses", "1"), None, DriftConfig(performance_drop=0.1))
    assert out["drifted"] and "labelled RMSE" in out["message"] and "10% above" in out["message"]
    registered({"mlplatform.task": "regression", "mlplatform.metric.val_rmse": "4.9"})
    assert not _performance(side, ("houses", "1"), None, DriftConfig(performance_drop=0.1))["drifted"]

    y = rng.integers(0, 3, 300)
    probabilities = np.full((300, 3), 0.1)
    probabilities[np.arange(300), (y + (np.arange(300) % 4 == 0)) % 3] = 0.8  # a quarter wrong
    side = _side(y, probabilities.argmax(1), probabilities=probabilities)
    registered({"mlplatform.task": "multiclass", "mlplatform.metric.val_merror": "0.1"})
    out = _performance(side, ("iris", "1"), None, DriftConfig(performance_drop=0.05))
    assert (
        out["drifted"] and "labelled accuracy 0.75" in out["message"] and "validation accuracy 0.9000" in out["message"]
    )
