"""Drift statistics of one feature: reference sample vs current sample. Pure NumPy/SciPy, no Ray.

Definitions (stated because tools differ; Evidently, for one, bins PSI equal-width over both samples):

- numeric, missing values (NaN) left out and counted apart:
  - two-sample Kolmogorov–Smirnov: `scipy.stats.ks_2samp` itself (exact statistic; the p-value of its default
    method: exact for small samples, asymptotic for large);
  - PSI on 10 bins cut at the reference deciles (duplicate cuts merged; the outer bins are open, so every
    current value falls in one; a value equal to a cut goes to the bin above it), bin shares clipped at 1e-4:
    ``Σ (cur − ref) · ln(cur / ref)``;
  - Jensen–Shannon distance, base 2, on the same bins (shares not clipped): `scipy.spatial.distance.jensenshannon`.
- categorical, missing values left out and counted apart:
  - chi-square on the 2 × k table of counts of the categories seen in either sample:
    `scipy.stats.chi2_contingency` (Yates' correction when k = 2, as SciPy does);
  - PSI and JS distance on the category shares, as above.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["numeric_stats", "categorical_stats", "psi", "js_distance", "decile_edges", "bin_shares", "CLIP", "BINS"]

#: Smallest bin share PSI uses: an empty bin would make it infinite.
CLIP = 1e-4
#: Reference-quantile bins of PSI and JS.
BINS = 10
#: Equal-width bins of the overlaid distributions in the report (drawing only; no statistic uses them).
PLOT_BINS = 40


def psi(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins, shares clipped at `CLIP`."""
    r = np.clip(np.asarray(ref_shares, dtype=float), CLIP, None)
    c = np.clip(np.asarray(cur_shares, dtype=float), CLIP, None)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) of two share vectors."""
    from scipy.spatial.distance import jensenshannon

    if not np.sum(ref_shares) or not np.sum(cur_shares):
        return math.nan
    return float(jensenshannon(np.asarray(ref_shares, float), np.asarray(cur_shares, float), base=2))


def decile_edges(ref: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The inner cut points of `bins` reference-quantile bins (duplicates merged)."""
    return np.unique(np.quantile(ref, np.arange(1, bins) / bins))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each of the ``len(edges) + 1`` open-ended bins that `edges` cut."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def numeric_stats(ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    """KS, PSI and JS of a numeric feature, plus what the report draws (see the module docstring).

    Returns:
        ``ks``, ``ks_pvalue``, ``psi``, ``js``, ``n_ref``, ``n_cur`` (non-missing values), ``missing_ref`` and
        ``missing_cur`` (shares), ``mean_ref``, ``mean_cur``, ``bins`` (decile edges and both shares) and
        ``plot`` (equal-width histogram shares for drawing). Statistics are None when a side has no values.
    """
    from scipy.stats import ks_2samp

    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    r, c = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    out: dict[str, Any] = {
        "n_ref": int(len(r)),
        "n_cur": int(len(c)),
        "missing_ref": float(1 - len(r) / len(ref)) if len(ref) else None,
        "missing_cur": float(1 - len(c) / len(cur)) if len(cur) else None,
    }
    if not len(r) or not len(c):
        return {**out, "ks": None, "ks_pvalue": None, "psi": None, "js": None, "mean_ref": None, "mean_cur": None}
    ks = ks_2samp(r, c)
    edges = decile_edges(r)
    ref_shares, cur_shares = bin_shares(r, edges), bin_shares(c, edges)
    lo, hi = float(min(r.min(), c.min())), float(max(r.max(), c.max()))
    plot_edges = np.linspace(lo, hi if hi > lo else lo + 1, PLOT_BINS + 1)
    return {
        **out,
        "ks": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "psi": psi(ref_shares, cur_shares),
        "js": js_distance(ref_shares, cur_shares),
        "mean_ref": _finite(r.mean()),
        "mean_cur": _finite(c.mean()),
        "bins": {"edges": edges.tolist(), "ref": ref_shares.tolist(), "cur": cur_shares.tolist()},
        "plot": {
            "edges": plot_edges.tolist(),
            "ref": (np.histogram(r, plot_edges)[0] / len(r)).tolist(),
            "cur": (np.histogram(c, plot_edges)[0] / len(c)).tolist(),
        },
    }


def categorical_stats(ref_counts: dict[Any, int], cur_counts: dict[Any, int], *, missing: tuple[int, int] = (0, 0)):
    """Chi-square, PSI and JS of a categorical feature from its category counts (missing values excluded).

    Args:
        ref_counts: category → count in the reference.
        cur_counts: category → count in the current table.
        missing: (reference, current) counts of missing values, for the missing shares.
    """
    from scipy.stats import chi2_contingency

    categories = sorted(set(ref_counts) | set(cur_counts), key=lambda v: (str(type(v)), v))
    r = np.array([ref_counts.get(k, 0) for k in categories], dtype=float)
    c = np.array([cur_counts.get(k, 0) for k in categories], dtype=float)
    n_ref, n_cur = int(r.sum()), int(c.sum())
    out: dict[str, Any] = {
        "n_ref": n_ref,
        "n_cur": n_cur,
        "missing_ref": missing[0] / (n_ref + missing[0]) if n_ref + missing[0] else None,
        "missing_cur": missing[1] / (n_cur + missing[1]) if n_cur + missing[1] else None,
    }
    if not n_ref or not n_cur:
        return {**out, "chi2": None, "chi2_pvalue": None, "psi": None, "js": None}
    ref_shares, cur_shares = r / n_ref, c / n_cur
    if len(categories) >= 2:
        test = chi2_contingency(np.vstack([r, c]))
        chi2, pvalue = float(test.statistic), float(test.pvalue)
    else:  # one category on both sides: nothing to compare, nothing moved
        chi2, pvalue = 0.0, 1.0
    return {
        **out,
        "chi2": chi2,
        "chi2_pvalue": pvalue,
        "psi": psi(ref_shares, cur_shares),
        "js": js_distance(ref_shares, cur_shares),
        "bins": {"categories": [str(k) for k in categories], "ref": ref_shares.tolist(), "cur": cur_shares.tolist()},
    }
