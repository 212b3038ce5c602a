"""The HTML drift report (monitor.report): one offline page, escaped, in severity order; drawn by a real browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlplatform.monitor.report import render_report, write_report
from plotly.offline import get_plotlyjs

HOSTILE = "<script>alert(1)</script>"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
EPS = 1e-4


# -- a realistic drift.json, computed from synthetic tables the way monitor.drift does ----------------------


def _shares(counts: np.ndarray) -> np.ndarray:
    return counts / max(counts.sum(), 1)


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    r, c = np.clip(ref, EPS, None), np.clip(cur, EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _js(ref: np.ndarray, cur: np.ndarray) -> float:
    m = (ref + cur) / 2

    def kl(p: np.ndarray) -> float:
        nz = p > 0
        return float(np.sum(p[nz] * np.log2(p[nz] / m[nz])))

    return math.sqrt(max(0.5 * kl(ref) + 0.5 * kl(cur), 0.0))


def _ks(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    grid = np.sort(np.concatenate([ref, cur]))
    d = float(
        np.max(
            np.abs(
                np.searchsorted(np.sort(ref), grid, "right") / len(ref)
                - np.searchsorted(np.sort(cur), grid, "right") / len(cur)
            )
        )
    )
    n = len(ref) * len(cur) / (len(ref) + len(cur))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(max(p, 0.0), 1.0)


def _numeric(ref: np.ndarray, cur: np.ndarray, test: str = "psi", threshold: float = 0.2) -> dict:
    miss_ref, miss_cur = float(np.mean(np.isnan(ref))), float(np.mean(np.isnan(cur)))
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    inner = np.unique(np.quantile(ref, np.linspace(0.1, 0.9, 9)))
    b_ref = _shares(np.bincount(np.searchsorted(inner, ref, "right"), minlength=len(inner) + 1))
    b_cur = _shares(np.bincount(np.searchsorted(inner, cur, "right"), minlength=len(inner) + 1))
    lo, hi = np.quantile(np.concatenate([ref, cur]), [0.001, 0.999])
    edges = np.linspace(lo, hi, 41)
    p_ref = _shares(np.histogram(np.clip(ref, lo, hi), edges)[0])
    p_cur = _shares(np.histogram(np.clip(cur, lo, hi), edges)[0])
    psi, js = _psi(b_ref, b_cur), _js(b_ref, b_cur)
    ks, ks_p = _ks(ref, cur)
    score = {"psi": psi, "js": js, "ks": ks_p}[test]
    drifted = score < threshold if test == "ks" else score > threshold
    severity = threshold / max(score, 1e-300) if test == "ks" else score / threshold
    return {
        "kind": "numeric",
        "test": test,
        "score": score,
        "threshold": threshold,
        "severity": min(severity, 1e6),
        "drifted": bool(drifted),
        "ks": ks,
        "ks_pvalue": ks_p,
        "psi": psi,
        "js": js,
        "n_ref": int(ref.size),
        "n_cur": int(cur.size),
        "missing_ref": miss_ref,
        "missing_cur": miss_cur,
        "mean_ref": float(ref.mean()),
        "mean_cur": float(cur.mean()),
        "bins": {"edges": inner.tolist(), "ref": b_ref.tolist(), "cur": b_cur.tolist()},
        "plot": {"edges": edges.tolist(), "ref": p_ref.tolist(), "cur": p_cur.tolist()},
    }


def _categorical(ref: np.ndarray, cur: np.ndarray, threshold: float = 0.2) -> dict:
    cats = sorted(set(ref.tolist()) | set(cur.tolist()))
    c_ref = np.array([(ref == c).sum() for c in cats], dtype=float)
    c_cur = np.array([(cur == c).sum() for c in cats], dtype=float)
    s_ref, s_cur = _shares(c_ref), _shares(c_cur)
    expected = np.clip(s_ref, EPS, None) * c_cur.sum()
    chi2 = float(np.sum((c_cur - expected) ** 2 / expected))
    dof = max(len(cats) - 1, 1)
    # Wilson–Hilferty: the chi-square tail without scipy, plenty for a test fixture.
    z = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    chi2_p = 0.5 * math.erfc(z / math.sqrt(2))
    psi = _psi(s_ref, s_cur)
    return {
        "kind": "categorical",
        "test": "psi",
        "score": psi,
        "threshold": threshold,
        "severity": psi / threshold,
        "drifted": psi > threshold,
        "chi2": chi2,
        "chi2_pvalue": chi2_p,
        "psi": psi,
        "js": _js(s_ref, s_cur),
        "n_ref": int(ref.size),
        "n_cur": int(cur.size),
        "missing_ref": 0.0,
        "missing_cur": 0.0,
        "bins": {"categories": cats, "ref": s_ref.tolist(), "cur": s_cur.tolist()},
    }


def build_drift(seed: int = 7) -> dict:
    """A drift.json as monitor.drift writes it: a churn model, 24 h of traffic against its training table."""
    rng = np.random.default_rng(seed)
    n_ref, n_cur = 5000, 1200

    def with_missing(x: np.ndarray, share: float) -> np.ndarray:
        x = x.astype(float)
        x[rng.random(x.size) < share] = np.nan
        return x

    plans, regions = ["basic", "pro", "enterprise"], ["north", "south", "east", "west", "central", "islands"]
    payments = ["card", "transfer", "invoice", "wallet"]
    features = {
        "age": _numeric(rng.normal(48, 12, n_ref), with_missing(rng.normal(55, 13, n_cur), 0.01)),
        "tenure_months": _numeric(
            with_missing(rng.exponential(30, n_ref), 0.0), with_missing(rng.exponential(16, n_cur), 0.08)
        ),
        "monthly_charges": _numeric(rng.gamma(4, 18, n_ref), rng.gamma(4, 18.5, n_cur)),
        "income": _numeric(
            rng.lognormal(10.6, 0.5, n_ref), rng.lognormal(10.62, 0.5, n_cur), test="ks", threshold=0.05
        ),
        "support_calls": _numeric(rng.poisson(1.2, n_ref).astype(float), rng.poisson(2.1, n_cur).astype(float)),
        HOSTILE: _numeric(rng.normal(0, 1, n_ref), rng.normal(0.05, 1, n_cur)),
        "plan": _categorical(
            rng.choice(plans, n_ref, p=[0.5, 0.35, 0.15]), rng.choice(plans, n_cur, p=[0.3, 0.4, 0.3])
        ),
        "region": _categorical(rng.choice(regions, n_ref), rng.choice(regions, n_cur)),
        "payment_method": _categorical(
            rng.choice(payments, n_ref, p=[0.55, 0.25, 0.15, 0.05]),
            rng.choice(payments + [HOSTILE], n_cur, p=[0.4, 0.2, 0.12, 0.2, 0.08]),
        ),
        "legacy_score": {"kind": "absent", "drifted": False, "severity": 0, "message": "not in the current table"},
    }
    score_ref = rng.beta(2, 5, n_ref)
    score_cur = rng.beta(2.6, 4.2, n_cur)
    prediction = _numeric(score_ref, score_cur)
    compared = [f for f in features.values() if f["kind"] != "absent"]
    drifted = sorted(n for n, f in features.items() if f["drifted"])
    share = len(drifted) / len(compared)
    hours = [f"2026-11-27T{h:02d}:00:00Z" for h in range(2, 10)]
    aucs = [0.86, 0.855, 0.85, 0.84, 0.835, 0.82, 0.815, 0.81]
    return {
        "created": "2026-11-27T10:00:00Z",
        "seconds": 14.2,
        "reference": {"path": "/data/churn/train.parquet", "rows": n_ref, "dataset": "churn/3f2a9c1e", "skipped": []},
        "current": {
            "path": "log:churn since 24h",
            "rows": n_cur,
            "files": 12,
            "labelled": 800,
            "skipped": [{"path": "/logs/churn/2026-11-27/part-0007.parquet", "reason": "truncated Parquet file"}],
            "window": {"since": "2026-11-26T10:00:00Z", "until": "2026-11-27T10:00:00Z"},
        },
        "model": {"name": "churn", "version": "3"},
        "config": {
            "numeric_test": "psi",
            "categorical_test": "psi",
            "psi": 0.2,
            "js": 0.1,
            "ks_pvalue": 0.05,
            "chi2_pvalue": 0.05,
            "drift_share": 0.5,
        },
        "verdict": {
            "drifted": share >= 0.5,
            "share": share,
            "threshold": 0.5,
            "drifted_features": drifted,
            "message": f"{len(drifted)} of {len(compared)} features drifted (weighted share {share:.2f} "
            f"{'≥' if share >= 0.5 else '<'} 0.5)",
        },
        "features": features,
        "prediction": prediction,
        "performance": {
            "rows": 800,
            "metrics": {"auc": 0.81, "logloss": 0.45, "calibration_error": 0.04},
            "reference": {"auc": 0.86, "logloss": 0.40},
            "drifted": True,
            "message": "AUC 0.81 is 0.05 below the version's validation AUC 0.86 (allowed drop 0.05)",
            "over_time": [
                {"at": at, "rows": 100, "auc": auc, "logloss": 0.40 + (0.86 - auc) * 1.1}
                for at, auc in zip(hours, aucs, strict=True)
            ],
        },
    }


# -- the page -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift() -> dict:
    return build_drift()


@pytest.fixture(scope="module")
def page(drift) -> str:
    return render_report(drift)


def _table_order(page: str) -> list[str]:
    table = page[page.index('<table class="summary">') : page.index("</table>")]
    return re.findall(r'<tr[^>]*data-feature="([^"]*)"', table)


def _n_charts(page: str) -> int:
    return page.count("Plotly.newPlot(")


def test_plotly_is_inlined_exactly_once(page):
    assert page.count(get_plotlyjs()) == 1
    assert page.count("plotly.js v") == 1  # the bundle's banner: no second copy under another form
    # features (9 drawn, the absent one not) + score + performance over time
    assert _n_charts(page) == 11
    assert page.index(get_plotlyjs()) < page.index("Plotly.newPlot(")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_nothing_is_fetched_from_the_network(page):
    # Plotly's bundle holds link targets in its code (its logo, map attributions); none is a resource the page
    # loads, and the logo is switched off. Everything outside the bundle must point nowhere.
    rest = page.replace(get_plotlyjs(), "")
    for needle in ('src="http', "src='http", 'href="http', "href='http", "url(http", "@import", "<link", "<script src"):
        assert needle not in rest.lower(), needle
    assert "http://" not in rest and "https://" not in rest
    assert '"displaylogo": false' in rest


def test_summary_table_is_in_severity_order(page, drift):
    expected = sorted(drift["features"], key=lambda n: -drift["features"][n]["severity"])
    assert [n for n in _table_order(page)] == [n.replace("<", "&lt;").replace(">", "&gt;") for n in expected]
    assert _table_order(page)[-1] == "legacy_score"  # absent: severity 0, listed with its message
    assert "not in the current table" in page


def test_drifted_features_come_first_in_the_charts(page, drift):
    cards = re.findall(r'<article class="card( drifted)?" data-feature="([^"]*)"', page)
    flags = [bool(d) for d, _ in cards]
    assert flags == sorted(flags, reverse=True) and any(flags) and not all(flags)
    assert "legacy_score" not in [n for _, n in cards]


def test_user_strings_are_escaped(drift):
    drift = {**drift, "model": {"name": HOSTILE, "version": '"><img src=x onerror=alert(2)>'}}
    drift["current"] = {**drift["current"], "skipped": [{"path": HOSTILE, "reason": "<b>bad</b>"}]}
    page = render_report(drift)
    assert HOSTILE not in page and "<img src=x" not in page and "<b>bad</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the only <script> tags are Plotly's bundle and one per chart
    assert page.count("<script") == 1 + _n_charts(page)


def test_what_was_compared(drift):
    page = render_report(drift)
    assert "1 file skipped</b> while reading the current data" in page and "truncated Parquet file" in page
    assert "reading the reference data" not in page
    assert "2026-11-26 10:00 UTC → 2026-11-27 10:00 UTC" in page
    ref = {**drift["reference"], "skipped": [{"path": "/data/a.parquet", "reason": "schema changed: x"}] * 2}
    page = render_report({**drift, "reference": ref})
    assert "2 files skipped</b> while reading the reference data" in page


def test_verdict_badge(drift):
    for drifted, label in ((True, "Drifted"), (False, "No drift"), (None, "No verdict")):
        page = render_report({**drift, "verdict": {**drift["verdict"], "drifted": drifted}})
        assert re.search(rf'<div class="badge [a-z]+">{label}</div>', page), label


def test_without_prediction_or_performance(drift):
    page = render_report({**drift, "prediction": None, "performance": None})
    assert "Model score" not in page and "Labelled performance" not in page
    assert _n_charts(page) == 9


def test_empty_and_missing_parts_do_not_crash(drift):
    page = render_report({**drift, "features": {}, "prediction": None, "performance": None})
    assert "No features were compared" in page
    assert _n_charts(page) == 0 and get_plotlyjs() not in page  # no chart, no 4.8 MB of JavaScript
    assert "No verdict" in render_report({})
    broken = {
        "verdict": {"drifted": None, "share": None, "message": None},
        "current": {"window": None, "skipped": None},
        "reference": None,
        "model": None,
        "features": {
            "only_bins": {**drift["features"]["age"], "plot": None},
            "nothing": {"kind": "numeric", "score": float("nan"), "drifted": None},
            "odd": {"kind": "categorical", "bins": {"categories": ["a"], "ref": [1.0], "cur": []}},
            "failed": {"kind": "error", "message": "column is all null"},
        },
        "performance": {"metrics": {}, "over_time": [{"at": "yesterday", "auc": None}]},
    }
    page = render_report(broken)
    assert page.count("No distribution recorded.") == 2
    assert "column is all null" in page and _n_charts(page) == 1


def test_many_categories_are_lumped_and_long_names_shortened():
    cats = [f"category_with_a_long_name_{i:02d}" for i in range(30)]
    shares = list(np.full(30, 1 / 30))
    feature = {"kind": "categorical", "test": "psi", "score": 0.01, "threshold": 0.2, "drifted": False}
    feature["bins"] = {"categories": cats, "ref": shares, "cur": shares}
    page = render_report({"features": {"segment": feature}})
    assert _n_charts(page) == 1
    assert "other (11)" in page  # 19 categories kept, the 11 others in one bar
    assert "category_with_a_l\\u2026" in page  # the tick (Plotly writes JSON in ASCII); the hover: the whole name
    assert "category_with_a_long_name_00" in page


def test_log_loss_alone_gets_the_left_axis():
    points = [{"at": f"2026-11-27T0{h}:00:00Z", "rows": 50, "logloss": 0.4 + h / 100} for h in range(4)]
    page = render_report({"performance": {"metrics": {"logloss": 0.43}, "over_time": points}})
    assert _n_charts(page) == 1 and '"yaxis2"' not in page and '"text":"Log loss"' in page


def test_write_report(tmp_path, drift):
    path = write_report(drift, tmp_path / "reports" / "drift.html")
    assert path == tmp_path / "reports" / "drift.html"
    assert path.read_text(encoding="utf-8") == render_report(drift)


# -- a real browser ------------------------------------------------------------------------------------------


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "headless Chromium not installed (Debian: apt-get install chromium); the report's rendering is not checked"
    )


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        # Any host name fails to resolve: the page must draw from what is in the file.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1280,2400",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_chromium_draws_the_report_offline(tmp_path, drift):
    browser = _browser()
    html_path = write_report(drift, tmp_path / "drift.html")
    png = tmp_path / "drift.png"
    out = _chromium(browser, tmp_path / "profile", f"--screenshot={png}", html_path.as_uri())
    assert png.exists(), out.stderr[-3000:]
    assert png.stat().st_size > 20_000

    from PIL import Image

    with Image.open(png) as img:
        assert img.size == (1280, 2400)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 22)
    assert colours is not None and len(colours) > 1000, "a blank or flat page"
    present = {rgb for _, rgb in colours}
    # the categorical bars are solid reference blue and current orange; the badge is drift red
    for rgb in ((0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0xD6, 0x45, 0x45)):
        assert rgb in present, rgb

    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", html_path.as_uri()).stdout
    # Plotly drew every chart: its SVG exists only if the inlined library ran, with no network
    assert 'class="main-svg"' in dom
    assert dom.count('class="plot-container plotly"') == _n_charts(render_report(drift))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # the hostile name is shown, as text


def test_the_performance_chart_follows_the_task():
    points = [
        {"at": f"2026-11-27T0{h}:00:00Z", "rows": 50, "rmse": 4 + h, "mae": 3.0, "r2": 0.9 - h / 10} for h in range(3)
    ]
    page = render_report(
        {
            "performance": {
                "task": "regression",
                "metrics": {"rmse": 5.0},
                "reference": {"rmse": 4.0},
                "over_time": points,
            }
        }
    )
    assert _n_charts(page) == 1 and '"text":"R\\u00b2"' in page  # R² on the left (Plotly writes JSON in ASCII)
    assert '"yaxis2":{"title":{"text":"RMSE"}' in page and "reference RMSE 4" in page
