"""The drift report: `drift.json` drawn as one HTML page that a person can take in at a glance.

`render_report(drift)` returns the page; `write_report(drift, path)` writes it. Top to bottom: the verdict as
a coloured badge with its message, what was compared (reference, current window, model, skipped files), a
table of the features by severity, the reference and current distribution of every feature (drifted ones
first), the model's score distribution, and its labelled performance over time.

The page is self-contained: Plotly's JavaScript (~4.8 MB) is inlined once and nothing is fetched, so the file
opens offline, from an MLflow artifact, a ticket attachment or an air-gapped machine. Every string that comes
from `drift.json` (feature names, categories, paths, messages) is escaped: they are user data.

`drift.json` (written by `monitor.drift`; every part but the top-level keys may be missing or null, and the
report leaves out what is):

    created        ISO time; seconds: how long the comparison took
    reference      {path, rows, dataset, skipped}
    current        {path, rows, files, labelled, skipped: [{path, reason}], window: {since, until}}
    model          {name, version}
    config         DriftConfig as JSON (the tests and thresholds)
    verdict        {drifted: true | false | null (too few rows), share, threshold, drifted_features, message}
    features       name → {kind: numeric | categorical | absent, test, score, threshold, severity (1 = at the
                   threshold), drifted, ks, ks_pvalue | chi2, chi2_pvalue, psi, js, n_ref, n_cur, missing_ref,
                   missing_cur, mean_ref, mean_cur, bins: {edges (deciles) | categories, ref, cur},
                   plot: {edges (equal width), ref, cur}}; an absent feature has only kind, severity, message
    prediction     the numeric statistics of the model's score, as a feature's
    performance    {task, rows, metrics: {auc, logloss, calibration_error} (binary; multiclass: mlogloss, accuracy,
                   macro_f1; regression: rmse, mae, r2), reference: the version's validation metrics, drifted,
                   message, over_time: [{at, rows, auc, logloss, calibration_error}]}
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

__all__ = ["render_report", "write_report"]

REF_COLOR = "#4C78A8"  # reference: a calm blue; current: an orange that reads as "now" and stays legible
CUR_COLOR = "#F58518"
DRIFT_COLOR = "#D64545"
WARN_COLOR = "#E0A526"
OK_COLOR = "#2E9E5B"
NEUTRAL_COLOR = "#8A94A6"
AUC_COLOR = "#2A7F62"
LOGLOSS_COLOR = "#7E57C2"
FONT = "Inter, 'Segoe UI', Roboto, 'Helvetica Neue', 'Liberation Sans', 'DejaVu Sans', Arial, sans-serif"

CHART_HEIGHT = 300
MAX_CATEGORIES = 20  # more bars than this are unreadable; the rest are summed into one "other" bar
MAX_CHIPS = 12
SEVERITY_SCALE = 3.0  # the severity bar is full at 3× the threshold; the threshold sits at a third of it

P_VALUE_TESTS = {"ks", "chi2"}  # drift when the p-value is *below* the threshold; the distances when above
TEST_LABELS = {"ks": "KS p", "chi2": "χ² p", "psi": "PSI", "js": "JS"}
METRIC_LABELS = {
    "auc": "AUC",
    "logloss": "Log loss",
    "calibration_error": "Calibration error",
    "mlogloss": "Log loss",
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
}
LOWER_IS_BETTER = {"logloss", "mlogloss", "calibration_error", "brier", "rmse", "mae"}
#: The two curves of the performance chart, per task: its score (left axis) and its loss (right axis).
CHART_METRICS = (("auc", "logloss"), ("accuracy", "mlogloss"), ("r2", "rmse"))

PLOTLY_CONFIG = {
    "displaylogo": False,  # the logo is a link to plotly.com: nothing on the page points outside it
    "responsive": True,
    # The mode bar covers the legend of a small chart; drag still zooms and a double click resets.
    "displayModeBar": False,
}


# -- the API ------------------------------------------------------------------------------------------------


def render_report(drift: dict) -> str:
    """The full HTML page for `drift` (the content of `drift.json`); missing optional parts are left out."""
    drift = _dict(drift)
    charts = _Charts()
    body = "\n".join(
        [
            _header(drift),
            _compared(drift),
            _summary(_dict(drift.get("features"))),
            _feature_charts(_dict(drift.get("features")), charts),
            _prediction(drift.get("prediction"), charts),
            _performance(drift.get("performance"), charts),
            _footer(drift),
        ]
    )
    # Plotly's bundle goes in <head>, once, and only when there is a chart to draw: every figure's inline
    # script calls Plotly.newPlot as soon as it is parsed, so the library must come before all of them.
    script = f'<script type="text/javascript">{get_plotlyjs()}</script>' if charts.count else ""
    title = "Drift report"
    model = _dict(drift.get("model"))
    if model.get("name"):
        title += f" · {model['name']}" + (f" v{model['version']}" if model.get("version") is not None else "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n{script}\n</head>\n"
        f'<body>\n<main class="page">\n{body}\n</main>\n</body>\n</html>\n'
    )


def write_report(drift: dict, path: str | os.PathLike) -> Path:
    """Write `render_report(drift)` to `path` (UTF-8, parent folders created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(drift), encoding="utf-8")
    return out


# -- formatting ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escaped text; None is empty."""
    return "" if value is None else html.escape(str(value))


def _t(value: Any) -> str:
    """Text for a Plotly label: Plotly reads a subset of HTML in labels, so a category called `<b>` must be
    escaped too; it decodes &lt; &gt; &amp; but not &quot;, hence quote=False."""
    return html.escape(str(value), quote=False)


def _dict(value: Any) -> dict:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else []


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, null, NaN, a string from a hand-edited file)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _nums(values: Any) -> list[float] | None:
    """A list of finite numbers, or None if any is not one (a chart from half a histogram would lie)."""
    out = [_num(v) for v in _list(values)]
    return None if not out or any(v is None for v in out) else out  # type: ignore[return-value]


def _fmt(value: Any) -> str:
    """A number at a glance: 0.41, 48.1, 12,345, 1.2e-40; a dash when missing."""
    x = _num(value)
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 1e-3:
        return f"{x:.3g}"
    return f"{x:.1e}"


def _fmt_p(value: Any) -> str:
    """A p-value; one that underflowed to 0 is 'tiny', not 'exactly nothing'."""
    return "≈0" if _num(value) == 0 else _fmt(value)


def _pct(value: Any) -> str:
    x = _num(value)
    if x is None:
        return "–"
    return "0%" if x == 0 else f"{100 * x:.1f}%" if abs(x) >= 0.001 else "<0.1%"


def _count(value: Any) -> str:
    x = _num(value)
    return "–" if x is None else f"{int(x):,}"


def _when(value: Any) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM UTC'; anything else as it came."""
    if not isinstance(value, str) or not value:
        return "" if value is None else str(value)
    try:
        at = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return value
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc)
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _plot_time(value: Any) -> str:
    """A timestamp Plotly puts on a date axis (it ignores time zones, so everything is shown in UTC)."""
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            return value
        if at.tzinfo is not None:
            at = at.astimezone(timezone.utc).replace(tzinfo=None)
        return at.isoformat(sep=" ")
    return str(value)


# -- statistics in words ------------------------------------------------------------------------------------


def _key_statistic(f: Mapping) -> str:
    """'PSI 0.41 > 0.2': the statistic that decided, against its threshold, with the comparison it made."""
    test = f.get("test")
    score, threshold = _num(f.get("score")), _num(f.get("threshold"))
    label = TEST_LABELS.get(test, str(test or "score"))
    if score is None:
        return ""
    shown = _fmt_p(score) if test in P_VALUE_TESTS else _fmt(score)
    if threshold is None:
        return f"{label} {shown}"
    drifted = f.get("drifted")
    if not isinstance(drifted, bool):
        drifted = score < threshold if test in P_VALUE_TESTS else score > threshold
    if test in P_VALUE_TESTS:
        op = "<" if drifted else "≥"
    else:
        op = ">" if drifted else "≤"
    return f"{label} {shown} {op} {_fmt(threshold)}"


def _p_value(f: Mapping) -> Any:
    return f.get("chi2_pvalue") if f.get("kind") == "categorical" else f.get("ks_pvalue")


def _compared_feature(f: Mapping) -> bool:
    """Whether the feature has statistics to show (not absent from a table, not failed)."""
    return f.get("kind") in ("numeric", "categorical") or _num(f.get("score")) is not None


def _severity(f: Mapping) -> float:
    return _num(f.get("severity")) or 0.0


def _severity_bar(f: Mapping) -> str:
    sev = _num(f.get("severity"))
    if sev is None:
        return ""
    width = max(0.0, min(sev / SEVERITY_SCALE, 1.0)) * 100
    color = DRIFT_COLOR if f.get("drifted") else WARN_COLOR if sev >= 0.5 else OK_COLOR
    return (
        f'<span class="sev" title="severity {_fmt(sev)} (1 = at the threshold)">'
        f'<span class="sev-fill" style="width:{width:.1f}%;background:{color}"></span></span>'
    )


# -- sections -----------------------------------------------------------------------------------------------


def _header(drift: Mapping) -> str:
    verdict = _dict(drift.get("verdict"))
    drifted = verdict.get("drifted") if isinstance(verdict.get("drifted"), bool) else None
    state, label = {True: ("drifted", "Drifted"), False: ("ok", "No drift")}.get(drifted, ("none", "No verdict"))
    model = _dict(drift.get("model"))
    title = "Drift report"
    if model.get("name"):
        version = f" <span class='muted'>v{_e(model['version'])}</span>" if model.get("version") is not None else ""
        title += f" · {_e(model['name'])}{version}"
    message = verdict.get("message") or ("" if drifted is not None else "Too little data to tell.")
    created = f'<div class="created">{_e(_when(drift.get("created")))}</div>' if drift.get("created") else ""

    names = [str(n) for n in _list(verdict.get("drifted_features"))]
    chips = ""
    if names:
        more = f'<span class="chip more">+{len(names) - MAX_CHIPS} more</span>' if len(names) > MAX_CHIPS else ""
        chips = (
            '<div class="chips"><span class="chips-label">Drifted features</span>'
            + "".join(f'<span class="chip">{_e(n)}</span>' for n in names[:MAX_CHIPS])
            + more
            + "</div>"
        )

    share, threshold = _num(verdict.get("share")), _num(verdict.get("threshold"))
    meter = ""
    if share is not None:
        fill = max(0.0, min(share, 1.0)) * 100
        mark = (
            f'<span class="meter-mark" style="left:{max(0.0, min(threshold, 1.0)) * 100:.1f}%"></span>'
            if threshold is not None
            else ""
        )
        limit = f" <span class='muted'>/ threshold {_fmt(threshold)}</span>" if threshold is not None else ""
        meter = (
            f'<div class="meter-box"><div class="meter-label">Drifted share <b>{_fmt(share)}</b>{limit}</div>'
            f'<div class="meter"><span class="meter-fill {state}" style="width:{fill:.1f}%"></span>{mark}</div></div>'
        )
    return (
        f'<header class="hero {state}">'
        f'<div class="badge {state}">{label}</div>'
        f'<div class="hero-text"><h1>{title}</h1><p class="message">{_e(message)}</p>{chips}</div>'
        f'<div class="hero-side">{created}{meter}</div>'
        "</header>"
    )


def _fact(label: str, value: str) -> str:
    return f"<dt>{label}</dt><dd>{value}</dd>" if value else ""


def _fact_card(title: str, facts: str, color: str | None = None) -> str:
    # The two sides of the comparison (with a colour dot) hold paths: they get the wider boxes.
    dot, wide = (f'<span class="dot" style="background:{color}"></span>', " wide") if color else ("", "")
    return f'<div class="fact{wide}"><h3>{dot}{title}</h3><dl>{facts}</dl></div>'


def _compared(drift: Mapping) -> str:
    ref, cur = _dict(drift.get("reference")), _dict(drift.get("current"))
    model, config = _dict(drift.get("model")), _dict(drift.get("config"))
    window = _dict(cur.get("window"))
    span = ""
    if window.get("since") or window.get("until"):
        span = f"{_e(_when(window.get('since')) or '…')} → {_e(_when(window.get('until')) or 'now')}"
    cards = [
        _fact_card(
            "Reference",
            _fact("Source", f"<code>{_e(ref.get('path'))}</code>" if ref.get("path") else "")
            + _fact("Rows", _count(ref.get("rows")) if ref.get("rows") is not None else "")
            + _fact("Dataset", f"<code>{_e(ref.get('dataset'))}</code>" if ref.get("dataset") else ""),
            REF_COLOR,
        ),
        _fact_card(
            "Current",
            _fact("Source", f"<code>{_e(cur.get('path'))}</code>" if cur.get("path") else "")
            + _fact("Window", span)
            + _fact("Rows", _count(cur.get("rows")) if cur.get("rows") is not None else "")
            + _fact("Files", _count(cur.get("files")) if cur.get("files") is not None else "")
            + _fact("Labelled", _count(cur.get("labelled")) if cur.get("labelled") else ""),
            CUR_COLOR,
        ),
    ]
    if model:
        version = f" v{_e(model.get('version'))}" if model.get("version") is not None else ""
        cards.append(
            _fact_card(
                "Model", _fact("Name", f"<code>{_e(model.get('name'))}</code>{version}" if model.get("name") else "")
            )
        )
    if config:
        cards.append(_fact_card("Tests", _config_facts(config)))

    warnings = [_skipped(side, _list(table.get("skipped"))) for side, table in (("reference", ref), ("current", cur))]
    return f'<section><h2>What was compared</h2><div class="facts">{"".join(cards)}</div>{"".join(warnings)}</section>'


def _skipped(side: str, files: list) -> str:
    """The files a side left out (damaged, changed schema), each with its reason: the numbers above lack them."""
    if not files:
        return ""
    items = "".join(
        f"<li><code>{_e(f.get('path'))}</code> — {_e(f.get('reason') or 'skipped')}</li>" for f in map(_dict, files)
    )
    noun = "file" if len(files) == 1 else "files"
    return (
        f'<div class="warning"><b>{len(files)} {noun} skipped</b> while reading the {side} data:<ul>{items}</ul></div>'
    )


def _config_facts(config: Mapping) -> str:
    def rule(test: Any) -> str:
        if test is None:
            return ""
        value = config.get({"ks": "ks_pvalue", "chi2": "chi2_pvalue"}.get(test, test))
        op = "<" if test in P_VALUE_TESTS else ">"
        label = TEST_LABELS.get(test, str(test))
        return _e(f"{label} {op} {_fmt(value)}" if _num(value) is not None else label)

    share = _num(config.get("drift_share"))
    return (
        _fact("Numeric", rule(config.get("numeric_test")))
        + _fact("Categorical", rule(config.get("categorical_test")))
        + _fact("Table drifts", f"share ≥ {_fmt(share)}" if share is not None else "")
        + _fact(
            "Performance",
            f"AUC or accuracy down, or RMSE up, by > {_fmt(drop)}"
            if (drop := _num(config.get("performance_drop")))
            else "",
        )
    )


def _summary(features: Mapping) -> str:
    if not features:
        return '<section><h2>Features</h2><p class="muted">No features were compared.</p></section>'
    rows = []
    ordered = sorted(features.items(), key=lambda kv: (-_severity(_dict(kv[1])), str(kv[0])))
    for name, f in ordered:
        f = _dict(f)
        kind = f.get("kind") or "?"
        drifted = f.get("drifted") is True
        cls = ' class="drifted"' if drifted else ""
        if not _compared_feature(f):
            # An absent (or failed) feature has no statistics: say why, across the statistic columns.
            rows.append(
                f'<tr{cls} data-feature="{_e(name)}"><td class="name">{_e(name)}</td><td>{_e(kind)}</td>'
                f'<td colspan="6" class="note">{_e(f.get("message") or "not compared")}</td>'
                f'<td class="flag">{"✓" if drifted else "–"}</td></tr>'
            )
            continue
        missing = f"{_pct(f.get('missing_ref'))} → {_pct(f.get('missing_cur'))}"
        more_missing = (_num(f.get("missing_cur")) or 0) - (_num(f.get("missing_ref")) or 0) >= 0.05
        rows.append(
            f'<tr{cls} data-feature="{_e(name)}">'
            f'<td class="name">{_e(name)}</td><td>{_e(kind)}</td>'
            f"<td>{_e(TEST_LABELS.get(f.get('test'), f.get('test') or '–'))}</td>"
            f'<td class="score">{_severity_bar(f)}<span>{_e(_key_statistic(f) or "–")}</span></td>'
            f'<td class="num">{_fmt_p(_p_value(f))}</td>'
            f'<td class="num">{_fmt(f.get("psi"))}</td><td class="num">{_fmt(f.get("js"))}</td>'
            f'<td class="num{" warn" if more_missing else ""}">{missing}</td>'
            f'<td class="flag">{"✓" if drifted else "–"}</td></tr>'
        )
    head = (
        "<tr><th>Feature</th><th>Kind</th><th>Test</th><th>Score vs threshold</th><th>KS / χ² p</th>"
        "<th>PSI</th><th>JS</th><th>Missing ref → cur</th><th>Drifted</th></tr>"
    )
    # Counted like the verdict: over the features that were compared, absent ones apart.
    compared = [_dict(f) for f in features.values() if _compared_feature(_dict(f))]
    n_drifted = sum(1 for f in compared if f.get("drifted") is True)
    others = len(features) - len(compared)
    caption = f"{n_drifted} of {len(compared)} drifted" + (f" · {others} not compared" if others else "")
    caption += " · sorted by severity (score relative to its threshold)"
    return (
        f'<section><h2>Features <span class="muted small">{caption}</span></h2>'
        f'<div class="table-wrap"><table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
        "</table></div></section>"
    )


# -- charts -------------------------------------------------------------------------------------------------


class _Charts:
    """Turns figures into <div>s without Plotly's bundle (the page adds it once) and counts them."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, height: int = CHART_HEIGHT) -> str:
        self.count += 1
        return pio.to_html(
            fig,
            include_plotlyjs=False,
            full_html=False,
            config=PLOTLY_CONFIG,
            div_id=f"chart-{self.count}",  # stable ids: the same drift.json gives the same page
            default_width="100%",
            default_height=f"{height}px",
        )


def _style(fig: go.Figure, height: int = CHART_HEIGHT, **layout: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        font={"family": FONT, "size": 12, "color": "#334155"},
        margin={"l": 52, "r": 16, "t": 30, "b": 44},
        legend={"orientation": "h", "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom", "font": {"size": 11}},
        hoverlabel={"font": {"family": FONT}},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="white",
        **layout,
    )
    fig.update_xaxes(showline=True, linecolor="#CBD5E1", gridcolor="#F1F5F9", automargin=True)
    fig.update_yaxes(gridcolor="#EEF2F7", zeroline=False, automargin=True)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _numeric_figure(f: Mapping) -> go.Figure | None:
    """Reference as a filled histogram, current as a step line over it, on the equal-width `plot` bins; the
    decile `bins` (open-ended at both ends) as grouped bars when there is no `plot`."""
    n_ref, n_cur = f.get("n_ref"), f.get("n_cur")
    ref_name = "reference" + (f" (n={_count(n_ref)})" if _num(n_ref) is not None else "")
    cur_name = "current" + (f" (n={_count(n_cur)})" if _num(n_cur) is not None else "")
    plot = _dict(f.get("plot"))
    edges, ref, cur = _nums(plot.get("edges")), _nums(plot.get("ref")), _nums(plot.get("cur"))
    if edges and ref and cur and len(edges) == len(ref) + 1 == len(cur) + 1:
        # Step lines need a point at every edge: repeat the last share so the last bin is drawn to its right edge.
        ranges = [f"[{_fmt(a)}, {_fmt(b)})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ranges.append(ranges[-1])
        fig = go.Figure()
        # Reference filled, current as a bare line on top: two fills would blend into a third colour.
        for name, shares, color, fill in ((ref_name, ref, REF_COLOR, "tozeroy"), (cur_name, cur, CUR_COLOR, "none")):
            fig.add_trace(
                go.Scatter(
                    x=edges,
                    y=shares + [shares[-1]],
                    name=name,
                    mode="lines",
                    line={"shape": "hv", "color": color, "width": 1.5 if fill == "tozeroy" else 2.5},
                    fill=fill,
                    fillcolor=_rgba(color, 0.3),
                    customdata=ranges,
                    hovertemplate="%{customdata}: %{y:.1%}<extra>" + name.split(" ")[0] + "</extra>",
                )
            )
        for mean, color in ((f.get("mean_ref"), REF_COLOR), (f.get("mean_cur"), CUR_COLOR)):
            if _num(mean) is not None:
                fig.add_vline(x=_num(mean), line={"color": color, "width": 1.5, "dash": "dash"})
        return _style(fig, yaxis={"tickformat": ".0%", "rangemode": "tozero"}, hovermode="x")

    bins = _dict(f.get("bins"))
    edges, ref, cur = _nums(bins.get("edges")), _nums(bins.get("ref")), _nums(bins.get("cur"))
    if edges is None or not ref or not cur or not len(ref) == len(cur) == len(edges) + 1:
        return None
    labels = [f"< {_fmt(edges[0])}"]
    labels += [f"{_fmt(a)} – {_fmt(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f"≥ {_fmt(edges[-1])}")
    return _bars([_t(label) for label in labels], None, ref, cur, ref_name, cur_name)


def _categorical_figure(f: Mapping) -> go.Figure | None:
    bins = _dict(f.get("bins"))
    cats = _list(bins.get("categories"))
    ref, cur = _nums(bins.get("ref")), _nums(bins.get("cur"))
    if not cats or ref is None or cur is None or not len(cats) == len(ref) == len(cur):
        return None
    rows = list(zip(cats, ref, cur, strict=True))
    if len(rows) > MAX_CATEGORIES:
        # Keep the categories that weigh most on either side, in their order; the rest still count, as one bar.
        kept = set(sorted(range(len(rows)), key=lambda i: -max(rows[i][1], rows[i][2]))[: MAX_CATEGORIES - 1])
        rest = [r for i, r in enumerate(rows) if i not in kept]
        rows = [r for i, r in enumerate(rows) if i in kept]
        rows.append((f"other ({len(rest)})", sum(r[1] for r in rest), sum(r[2] for r in rest)))
    labels = [_t(r[0]) for r in rows]
    return _bars(
        labels,
        # Long names would run into each other under the bars: shortened there, whole in the hover.
        [_t(_short(str(r[0]))) for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        "reference" + (f" (n={_count(f.get('n_ref'))})" if _num(f.get("n_ref")) is not None else ""),
        "current" + (f" (n={_count(f.get('n_cur'))})" if _num(f.get("n_cur")) is not None else ""),
    )


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bars(
    labels: list[str], ticks: list[str] | None, ref: list[float], cur: list[float], ref_name: str, cur_name: str
) -> go.Figure:
    fig = go.Figure()
    for name, shares, color in ((ref_name, ref, REF_COLOR), (cur_name, cur, CUR_COLOR)):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=shares,
                name=name,
                marker={"color": color, "line": {"width": 0}},
                hovertemplate="%{x}: %{y:.1%}<extra>" + name.split(" ")[0] + "</extra>",
            )
        )
    # A category axis even for labels that look like numbers ("1", "2"): they are codes, not positions.
    return _style(
        fig,
        barmode="group",
        bargap=0.25,
        bargroupgap=0.05,
        xaxis={
            "type": "category",
            "tickangle": -30 if len(labels) > 8 else 0,
            **({"tickmode": "array", "tickvals": labels, "ticktext": ticks} if ticks else {}),
        },
        yaxis={"tickformat": ".0%", "rangemode": "tozero"},
    )


def _figure(f: Mapping) -> go.Figure | None:
    kind = f.get("kind")
    if kind == "categorical":
        return _categorical_figure(f)
    if kind in ("numeric", None) or _dict(f.get("plot")) or _dict(f.get("bins")).get("edges"):
        return _numeric_figure(f)
    return None


def _stat_line(f: Mapping) -> str:
    """The key statistic first (red when it decided 'drifted'), then the others and the means."""
    key = _key_statistic(f)
    parts = [f'<b class="{"bad" if f.get("drifted") is True else "good"}">{_e(key)}</b>'] if key else []
    test = f.get("test")
    p_test = "chi2" if f.get("kind") == "categorical" else "ks"
    for stat, name in ((p_test, f"{p_test}_pvalue"), ("psi", "psi"), ("js", "js")):
        if stat != test and _num(f.get(name)) is not None:  # the deciding one is already shown, first
            value = _fmt_p(f.get(name)) if stat in P_VALUE_TESTS else _fmt(f.get(name))
            parts.append(f"{TEST_LABELS[stat]} {value}")
    if _num(f.get("mean_ref")) is not None and _num(f.get("mean_cur")) is not None:
        parts.append(f"mean {_fmt(f.get('mean_ref'))} → {_fmt(f.get('mean_cur'))}")
    missing_ref, missing_cur = _num(f.get("missing_ref")) or 0, _num(f.get("missing_cur")) or 0
    if missing_ref or missing_cur:
        parts.append(f"missing {_pct(missing_ref)} → {_pct(missing_cur)}")
    return " · ".join(parts)


def _chart_card(name: str, f: Mapping, charts: _Charts, wide: bool = False) -> str:
    fig = _figure(f)
    plot = charts.html(fig) if fig is not None else '<p class="muted empty">No distribution recorded.</p>'
    drifted = f.get("drifted") is True
    flag = '<span class="tag bad">drifted</span>' if drifted else ""
    return (
        f'<article class="card{" drifted" if drifted else ""}{" wide" if wide else ""}" data-feature="{_e(name)}">'
        f'<div class="card-head"><h3>{_e(name)}</h3><span class="tag">{_e(f.get("kind") or "")}</span>{flag}</div>'
        f'<div class="stats">{_stat_line(f)}</div>{plot}</article>'
    )


def _feature_charts(features: Mapping, charts: _Charts) -> str:
    shown = [(str(n), _dict(f)) for n, f in features.items() if _compared_feature(_dict(f))]
    if not shown:
        return ""
    shown.sort(key=lambda nf: (nf[1].get("drifted") is not True, -_severity(nf[1]), nf[0]))
    drifted = [nf for nf in shown if nf[1].get("drifted") is True]
    steady = [nf for nf in shown if nf[1].get("drifted") is not True]
    caption = "reference vs current · dashed lines: the means"
    parts = [f'<section><h2>Distributions <span class="muted small">{caption}</span></h2>']
    if drifted:
        parts.append(f'<h4 class="group bad">Drifted ({len(drifted)})</h4><div class="grid">')
        parts += [_chart_card(n, f, charts) for n, f in drifted]
        parts.append("</div>")
    if steady:
        parts.append(f'<h4 class="group">Not drifted ({len(steady)})</h4><div class="grid">')
        parts += [_chart_card(n, f, charts) for n, f in steady]
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _prediction(prediction: Any, charts: _Charts) -> str:
    if not isinstance(prediction, Mapping):
        return ""
    f = {"kind": "numeric", **prediction}
    return (
        '<section><h2>Model score <span class="muted small">distribution of the predictions</span></h2>'
        f'<div class="grid">{_chart_card("score", f, charts, wide=True)}</div></section>'
    )


def _metric_tile(key: str, value: Any, reference: Any) -> str:
    label = METRIC_LABELS.get(key, key.replace("_", " ").capitalize())
    delta = ""
    if _num(value) is not None and _num(reference) is not None:
        diff = _num(value) - _num(reference)  # type: ignore[operator]
        worse = diff > 0 if key in LOWER_IS_BETTER else diff < 0
        arrow = "▲" if diff > 0 else "▼" if diff < 0 else "="
        cls = "bad" if worse and diff else "good"
        delta = f'<div class="delta {cls}">{arrow} {_fmt(abs(diff))} vs reference {_fmt(reference)}</div>'
    elif _num(reference) is not None:
        delta = f'<div class="delta">reference {_fmt(reference)}</div>'
    return (
        f'<div class="tile"><div class="tile-label">{_e(label)}</div>'
        f'<div class="tile-value">{_fmt(value)}</div>{delta}</div>'
    )


def _performance(performance: Any, charts: _Charts) -> str:
    if not isinstance(performance, Mapping):
        return ""
    metrics, reference = _dict(performance.get("metrics")), _dict(performance.get("reference"))
    tiles = [_metric_tile(str(k), v, reference.get(k)) for k, v in metrics.items()]
    if performance.get("rows") is not None:
        tiles.append(
            f'<div class="tile"><div class="tile-label">Labelled rows</div>'
            f'<div class="tile-value">{_count(performance.get("rows"))}</div></div>'
        )
    drifted = performance.get("drifted")
    state = "bad" if drifted is True else "good" if drifted is False else ""
    label = "performance drifted" if drifted is True else "performance holds" if drifted is False else ""
    tag = f'<span class="tag {state}">{label}</span>' if label else ""
    message = (
        f'<p class="message-sm">{tag} {_e(performance.get("message"))}</p>'
        if label or performance.get("message")
        else ""
    )
    chart = _performance_chart([_dict(p) for p in _list(performance.get("over_time"))], reference, charts)
    return (
        '<section><h2>Labelled performance <span class="muted small">where feedback arrived</span></h2>'
        f'{message}<div class="tiles">{"".join(tiles)}</div>{chart}</section>'
    )


def _performance_chart(points: list[dict], reference: Mapping, charts: _Charts) -> str:
    points = [p for p in points if p.get("at") is not None]
    if not points:
        return ""
    x = [_plot_time(p.get("at")) for p in points]
    rows = [_count(p.get("rows")) for p in points]
    fig = go.Figure()
    # The task's score (AUC, accuracy, R²) on the left; its loss on its own scale on the right, or on the left
    # when it is alone.
    score, loss = next((pair for pair in CHART_METRICS if any(k in p for p in points for k in pair)), CHART_METRICS[0])
    has_score = any(_num(p.get(score)) is not None for p in points)
    for key, color, axis in ((score, AUC_COLOR, "y"), (loss, LOGLOSS_COLOR, "y2" if has_score else "y")):
        ys = [_num(p.get(key)) for p in points]
        if all(y is None for y in ys):
            continue
        label = METRIC_LABELS[key]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=ys,
                name=label,
                yaxis=axis,
                mode="lines+markers",
                line={"color": color, "width": 2.5},
                marker={"size": 7},
                customdata=rows,
                hovertemplate=f"{label} %{{y:.3f}} · %{{customdata}} rows<extra></extra>",
            )
        )
        ref_value = _num(reference.get(key))
        if ref_value is not None:
            # The reference as a dashed line across the whole window: the eye measures the gap to it directly.
            fig.add_trace(
                go.Scatter(
                    x=[x[0], x[-1]] if len(x) > 1 else x * 2,
                    y=[ref_value, ref_value],
                    name=f"reference {label} {_fmt(ref_value)}",
                    yaxis=axis,
                    mode="lines",
                    line={"color": color, "width": 1.5, "dash": "dash" if key == score else "dot"},
                    hoverinfo="skip",
                )
            )
    if not fig.data:
        return ""
    names = {"y": METRIC_LABELS[score if has_score else loss], "y2": METRIC_LABELS[loss]}
    layout: dict[str, Any] = {"hovermode": "x unified", "yaxis": {"title": {"text": names["y"]}}}
    if any(trace.yaxis == "y2" for trace in fig.data):
        layout["yaxis2"] = {"title": {"text": names["y2"]}, "side": "right", "overlaying": "y", "showgrid": False}
    fig = _style(fig, height=320, **layout)
    fig.update_layout(margin={"r": 60})
    return f'<article class="card wide">{charts.html(fig, 320)}</article>'


def _footer(drift: Mapping) -> str:
    created = f" · computed {_e(_when(drift.get('created')))}" if drift.get("created") else ""
    seconds = _num(drift.get("seconds"))
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"<footer>mlplatform drift report{created}{took} · self-contained, opens offline</footer>"


# The colours are the charts' own, so the table, the badges and the legends agree.
CSS = (
    f":root {{ --ref: {REF_COLOR}; --cur: {CUR_COLOR}; --bad: {DRIFT_COLOR}; --ok: {OK_COLOR}; --warn: {WARN_COLOR};"
    f" --none: {NEUTRAL_COLOR}; --ink: #1E293B; --muted: #64748B; --line: #E2E8F0; --bg: #F6F8FB; --font: {FONT};"
    f" --sev-mark: {100 / SEVERITY_SCALE:.1f}%; }}"
    + """
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.5 var(--font); }
.page { max-width: 1200px; margin: 0 auto; padding: 24px 24px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; font-weight: 700; letter-spacing: -0.01em; }
h2 { font-size: 17px; margin: 0 0 12px; font-weight: 650; }
h3 { font-size: 14px; margin: 0; font-weight: 650; }
h4.group { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 16px 0 8px; }
h4.group.bad { color: var(--bad); }
section { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 18px 20px; margin: 16px 0;
  box-shadow: 0 1px 2px rgba(15,23,42,.04); }
code { font: 12.5px/1.4 'DejaVu Sans Mono', Menlo, Consolas, monospace; background: #F1F5F9; padding: 1px 5px;
  border-radius: 4px; overflow-wrap: anywhere; }
.muted { color: var(--muted); font-weight: 400; }
.small { font-size: 13px; margin-left: 6px; }
.bad { color: var(--bad); } .good { color: var(--ok); }
.hero { display: flex; gap: 22px; align-items: center; background: #fff; border: 1px solid var(--line);
  border-left: 8px solid var(--none); border-radius: 14px; padding: 22px 24px;
  box-shadow: 0 1px 3px rgba(15,23,42,.06); }
.hero.drifted { border-left-color: var(--bad); background: linear-gradient(90deg, #FFF5F5, #fff 45%); }
.hero.ok { border-left-color: var(--ok); background: linear-gradient(90deg, #F2FBF5, #fff 45%); }
.badge { flex: none; color: #fff; font-size: 22px; font-weight: 800; letter-spacing: .04em; text-transform: uppercase;
  padding: 14px 22px; border-radius: 12px; background: var(--none); box-shadow: 0 2px 6px rgba(15,23,42,.15); }
.badge.drifted { background: var(--bad); } .badge.ok { background: var(--ok); }
.hero-text { flex: 1; min-width: 0; }
.message { margin: 0; font-size: 16px; color: #334155; }
.message-sm { margin: 0 0 12px; }
.hero-side { flex: none; width: 250px; text-align: right; }
.created { color: var(--muted); font-size: 13px; margin-bottom: 10px; }
.meter-label { font-size: 13px; margin-bottom: 4px; }
.meter { position: relative; height: 10px; background: #E9EEF5; border-radius: 5px; }
.meter-fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 5px; background: var(--none); }
.meter-fill.drifted { background: var(--bad); } .meter-fill.ok { background: var(--ok); }
.meter-mark { position: absolute; top: -4px; bottom: -4px; width: 2px; background: var(--ink); }
.chips { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.chips-label { font-size: 12px; color: var(--muted); margin-right: 4px; }
.chip { font-size: 12px; background: #FDECEC; color: #9B2C2C; border: 1px solid #F8C9C9; border-radius: 999px;
  padding: 1px 9px; }
.chip.more { background: #F1F5F9; color: var(--muted); border-color: var(--line); }
.facts { display: flex; flex-wrap: wrap; gap: 14px; }
.fact { flex: 1 1 200px; min-width: 0; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.fact.wide { flex: 1.7 1 300px; }
.fact h3 { margin-bottom: 6px; display: flex; align-items: center; gap: 7px; }
.dot { width: 10px; height: 10px; border-radius: 50%; display: inline-block; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 3px 12px; margin: 0; font-size: 13px; }
dt { color: var(--muted); } dd { margin: 0; min-width: 0; }
.warning { margin-top: 14px; background: #FFF8E6; border: 1px solid #F5DDA0; border-radius: 10px; padding: 10px 14px;
  font-size: 13px; }
.warning ul { margin: 6px 0 0; padding-left: 20px; }
.table-wrap { overflow-x: auto; }
table.summary { width: 100%; border-collapse: collapse; font-size: 13px; }
.summary th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
  border-bottom: 2px solid var(--line); padding: 6px 8px; white-space: nowrap; }
.summary td { padding: 6px 8px; border-bottom: 1px solid #EEF2F7; white-space: nowrap; }
.summary tr.drifted td { background: #FFF3F3; }
.summary tr.drifted td:first-child { box-shadow: inset 3px 0 0 var(--bad); }
.summary td.name { font-weight: 600; max-width: 260px; overflow: hidden; text-overflow: ellipsis; }
.summary td.num { font-variant-numeric: tabular-nums; }
.summary td.warn { color: #B7791F; font-weight: 600; }
.summary td.note { color: var(--muted); font-style: italic; white-space: normal; }
.summary td.flag { text-align: center; color: var(--muted); }
.summary tr.drifted td.flag { color: var(--bad); font-weight: 700; }
.score { font-variant-numeric: tabular-nums; }
.sev { display: inline-block; vertical-align: middle; position: relative; width: 72px; height: 8px; margin-right: 8px;
  background: #EDF1F6; border-radius: 4px; overflow: hidden; }
.sev::after { content: ""; position: absolute; left: var(--sev-mark); top: 0; bottom: 0; width: 1.5px;
  background: rgba(15,23,42,.45); }
.sev-fill { position: absolute; left: 0; top: 0; bottom: 0; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 12px 12px 4px; background: #fff; min-width: 0; }
.card.drifted { border-top: 3px solid var(--bad); }
.card.wide { grid-column: 1 / -1; }
.card-head { display: flex; align-items: center; gap: 8px; }
.card-head h3 { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tag { font-size: 11px; color: var(--muted); background: #F1F5F9; border-radius: 999px; padding: 0 8px; }
.tag.bad { color: #fff; background: var(--bad); } .tag.good { color: #fff; background: var(--ok); }
.stats { font-size: 12.5px; color: #475569; margin: 3px 0 0; font-variant-numeric: tabular-nums; }
.empty { padding: 24px 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin-bottom: 14px; }
.tile { border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; }
.tile-label { font-size: 12px; color: var(--muted); }
.tile-value { font-size: 24px; font-weight: 700; font-variant-numeric: tabular-nums; }
.delta { font-size: 12px; color: var(--muted); }
.delta.bad { color: var(--bad); } .delta.good { color: var(--ok); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
@media (max-width: 900px) {
  .grid { grid-template-columns: minmax(0, 1fr); }
  .hero { flex-wrap: wrap; } .hero-side { width: 100%; text-align: left; }
}
"""
)
