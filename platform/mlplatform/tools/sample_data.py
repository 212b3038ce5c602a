"""Sample data: heterogeneous sources about the same customers (tables, JSON, text, images), deterministic by seed.

- ``profiles.csv``      one row per customer: age, plan, tenure, and the label ``churned``
- ``events.jsonl``      app events with nested fields (``user.id``, ``event.type``, ``event.duration_s``)
- ``transactions.parquet`` purchases: ``entity_id``, ``amount``
- ``readings.csv``      a daily usage time series: ``entity_id``, ``day``, ``usage``
- ``tickets/<id>.txt``  support tickets, one per line, for the customers who wrote some (text)
- ``scans/<id>-<n>.png`` scanned documents for a few customers (images)

Tickets and scans are files per customer, so their number is capped (at 1 000 and 300 customers): they are
there for the formats, not for volume.

The label depends on something from every source (plan and tenure, event engagement, spend, and the
usage trend), so a model that ignores a source loses AUC. A few deliberately bad records are planted in
each source (wrong type, missing key, out-of-range value, unknown category, broken JSON line) and listed
in ``bad_records.json`` so tests can check that the contract quarantines exactly those.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlplatform.errors import ConfigError

__all__ = ["generate", "PLANS", "EVENT_TYPES"]

PLANS = ["basic", "pro", "enterprise"]
EVENT_TYPES = ["login", "view", "purchase", "support"]
READING_DAYS = 8


def _bad_count(n: int) -> int:
    return max(1, n // 500)


def generate(
    out_dir: str | Path, entities: int = 5000, seed: int = 0, *, shift: float = 0.0, flip_labels: bool = False
) -> dict[str, int]:
    """Write the four sources for `entities` customers into `out_dir`.

    Args:
        out_dir: Folder to create or overwrite.
        entities: Number of customers (rows of profiles.csv before bad records).
        seed: Same seed, same bytes.
        shift: How far the world moved (0: the training world): customers engage less, spend less, are older and
            pick the basic plan more (drift in most features), and what makes them churn changes (a model of
            the old world gets worse). 1 is a large, plainly visible shift.
        flip_labels: Invert every label (a broken label pipeline): a model trained on it is deliberately worse.

    Returns:
        Records written per source, bad ones included.
    """
    if entities < 10:
        raise ConfigError(f"--entities must be at least 10, got {entities}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = entities
    ids = np.arange(1, n + 1, dtype=np.int64)

    # Latent traits that drive both the sources and the label.
    engagement = rng.normal(-0.8 * shift, 1, n)
    spend = rng.normal(-0.6 * shift, 1, n)
    trend = rng.normal(-0.5 * shift, 1, n)

    age = np.minimum(rng.integers(18, 80, n) + int(round(12 * shift)), 120)
    basic = min(0.9, 0.5 + 0.25 * shift)
    plan_idx = rng.choice(3, n, p=[basic, (1 - basic) * 0.7, (1 - basic) * 0.3])
    tenure = np.round(rng.gamma(2.0, 12.0 * (1 + 0.5 * shift), n), 1)

    # In a moved world the reasons change too (concept drift): spend no longer keeps customers, a rising usage
    # trend now goes before leaving, the basic plan stops driving churn and the enterprise plan starts to — so
    # a model of the old world gets clearly worse there.
    logit = (
        -0.4
        - 1.0 * engagement
        - 0.6 * (1 - 1.6 * min(shift, 1.0)) * spend
        - 0.9 * (1 - 2 * min(shift, 1.0)) * trend
        + 0.8 * (1 - min(shift, 1.0)) * (plan_idx == 0)
        + 1.2 * min(shift, 1.0) * (plan_idx == 2)
        - 0.025 * (tenure - 24)
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    if flip_labels:
        churned = 1 - churned

    bad: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    k = _bad_count(n)

    # profiles.csv: strings so that bad values survive the CSV round trip as they would in the wild.
    prof = {
        "entity_id": ids.astype(str).astype(object),
        "age": age.astype(str).astype(object),
        "plan": np.array(PLANS, dtype=object)[plan_idx],
        "tenure_months": tenure.astype(str).astype(object),
        "churned": churned.astype(str).astype(object),
    }
    picks = rng.choice(n, 4 * k, replace=False)
    plants = [
        ("age", "forty", "wrong type"),
        ("entity_id", "", "missing key"),
        ("age", "250", "out of range"),
        ("plan", "platinum", "not allowed"),
    ]
    bad["profiles"] = []
    for j, (col, value, why) in enumerate(plants):
        for row in picks[j * k : (j + 1) * k]:
            prof[col][row] = value
            bad["profiles"].append({"row": int(row), "field": col, "why": why})
    pacsv.write_csv(pa.table({c: pa.array(v, pa.string()) for c, v in prof.items()}), out / "profiles.csv")
    counts["profiles"] = n

    # events.jsonl: engagement drives how many events and how long they last.
    n_events = rng.poisson(3.0 * np.exp(0.5 * engagement)) + 1
    ev_ids = np.repeat(ids, n_events)
    ev_eng = np.repeat(engagement, n_events)
    ev_type = rng.choice(len(EVENT_TYPES), len(ev_ids), p=[0.4, 0.35, 0.15, 0.1])
    ev_dur = np.round(rng.exponential(60.0 * np.exp(0.4 * ev_eng)), 2)
    lines = [
        json.dumps({"user": {"id": int(i)}, "event": {"type": EVENT_TYPES[t], "duration_s": float(d)}})
        for i, t, d in zip(ev_ids.tolist(), ev_type.tolist(), ev_dur.tolist(), strict=True)
    ]
    picks = rng.choice(len(lines), 4 * k, replace=False)
    bad["events"] = []
    for j, row in enumerate(picks):
        kind = j // k
        rec = json.loads(lines[row])
        if kind == 0:
            lines[row], why = lines[row][: len(lines[row]) // 2], "broken JSON line"
        elif kind == 1:
            del rec["user"]["id"]
            lines[row], why = json.dumps(rec), "missing key"
        elif kind == 2:
            rec["event"]["duration_s"] = -5.0
            lines[row], why = json.dumps(rec), "out of range"
        else:
            rec["event"]["duration_s"] = "long"
            lines[row], why = json.dumps(rec), "wrong type"
        bad["events"].append({"row": int(row), "why": why})
    (out / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts["events"] = len(lines)

    # transactions.parquet: spend drives the amounts. Parquet is typed, so the bad ones are nulls and ranges.
    n_tx = rng.poisson(2.0 * np.exp(0.3 * spend)) + 1
    tx_ids = np.repeat(ids, n_tx).astype(object)
    tx_amount = np.round(rng.lognormal(3.0 + 0.5 * np.repeat(spend, n_tx), 0.5), 2)
    picks = rng.choice(len(tx_ids), 2 * k, replace=False)
    bad["transactions"] = []
    for row in picks[:k]:
        tx_ids[row] = None
        bad["transactions"].append({"row": int(row), "why": "missing key"})
    for row in picks[k:]:
        tx_amount[row] = -10.0
        bad["transactions"].append({"row": int(row), "why": "out of range"})
    pq.write_table(
        pa.table({"entity_id": pa.array(tx_ids, pa.int64()), "amount": pa.array(tx_amount, pa.float64())}),
        out / "transactions.parquet",
    )
    counts["transactions"] = len(tx_ids)

    # readings.csv: a daily usage series whose slope is the latent trend.
    days = np.tile(np.arange(READING_DAYS), n)
    r_ids = np.repeat(ids, READING_DAYS).astype(str).astype(object)
    usage = np.round(50 + np.repeat(trend, READING_DAYS) * 2.0 * days + rng.normal(0, 3, n * READING_DAYS), 3)
    usage = usage.astype(str).astype(object)
    day_s = days.astype(str).astype(object)
    picks = rng.choice(len(r_ids), 3 * k, replace=False)
    bad["readings"] = []
    for j, row in enumerate(picks):
        kind = j // k
        if kind == 0:
            usage[row], why = "n/a", "wrong type"
        elif kind == 1:
            r_ids[row], why = "", "missing key"
        else:
            day_s[row], why = "-1", "out of range"
        bad["readings"].append({"row": int(row), "why": why})
    pacsv.write_csv(
        pa.table(
            {
                "entity_id": pa.array(r_ids, pa.string()),
                "day": pa.array(day_s, pa.string()),
                "usage": pa.array(usage, pa.string()),
            }
        ),
        out / "readings.csv",
    )
    counts["readings"] = len(r_ids)

    counts["tickets"], bad["tickets"] = _tickets(out / "tickets", ids, engagement, rng)
    counts["scans"], bad["scans"] = _scans(out / "scans", ids, spend, rng)

    (out / "bad_records.json").write_text(json.dumps(bad, indent=1), encoding="utf-8")
    return counts


_WORDS = "app slow login fails billing charged twice cancel plan refund error page crash thanks help please".split()


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _tickets(folder: Path, ids: np.ndarray, engagement: np.ndarray, rng) -> tuple[int, list[dict]]:
    """Disengaged customers write more and longer tickets. Plants a file that is not UTF-8 and one whose
    name says nobody's (its lines have no key)."""
    folder = _fresh(folder)
    chosen = np.sort(rng.choice(len(ids), min(1000, max(10, len(ids) // 10)), replace=False, p=_softmax(-engagement)))
    records = 0
    for i in chosen:
        lines = [
            " ".join(rng.choice(_WORDS, rng.integers(3, 8 + int(6 * max(0.0, -engagement[i])))))
            for _ in range(rng.integers(1, 4))
        ]
        (folder / f"{ids[i]}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        records += len(lines)
    bad_id = int(ids[chosen[0]])
    records -= len((folder / f"{bad_id}.txt").read_text(encoding="utf-8").splitlines())
    (folder / f"{bad_id}.txt").write_bytes("refund the r\xe9sum\xe9 fee\n".encode("latin-1"))
    (folder / "unassigned.txt").write_text("who wrote this\n", encoding="utf-8")
    bad = [{"file": f"{bad_id}.txt", "why": "not UTF-8"}, {"file": "unassigned.txt", "why": "missing key"}]
    return records + 2, bad


def _scans(folder: Path, ids: np.ndarray, spend: np.ndarray, rng) -> tuple[int, list[dict]]:
    """Small greyscale or RGB PNGs; brighter for big spenders (paper receipts). Plants a truncated PNG."""
    import PIL.Image

    folder = _fresh(folder)
    chosen = np.sort(rng.choice(len(ids), min(300, max(10, len(ids) // 20)), replace=False))
    files = 0
    for i in chosen:
        for j in range(rng.integers(1, 3)):
            level = np.clip(128 + 40 * spend[i] + rng.normal(0, 30, (24, 32)), 0, 255).astype(np.uint8)
            img = PIL.Image.fromarray(level, "L")
            (img.convert("RGB") if j % 2 else img).save(folder / f"{ids[i]}-{j}.png")
            files += 1
    bad_id = int(ids[chosen[-1]])
    (folder / f"{bad_id}-9.png").write_bytes((folder / f"{bad_id}-0.png").read_bytes()[:60])
    return files + 1, [{"file": f"{bad_id}-9.png", "why": "unreadable image"}]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
