"""Ingest: read every source with Ray Data, enforce the contract, quarantine, aggregate, join, version.

The plan is a chain of Ray Data operations (read → validate → split → aggregate → join → write); the
driver only collects counts and a fingerprint. A dataset version is a folder::

    <output_dir>/<name>/<version>/
        table/        Parquet training table (key, features, label)
        quarantine/   Parquet: source, file, reason, record — every record the contract refused
        manifest.json sources with file stats, reconciliation, features, schema, fingerprint

The version id hashes the spec and the source files' sizes and mtimes, so re-running on unchanged inputs
reuses the version instead of recomputing it. The fingerprint hashes the table's content independently
of row order and block layout.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mlplatform.config import DataConfig, SourceSpec
from mlplatform.data.contract import FILE, REASON, RECORD, parse_json_lines, validate_batch
from mlplatform.errors import ConfigError, DataContractError

__all__ = ["DatasetVersion", "ingest", "load_version", "feature_columns"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DatasetVersion:
    """A versioned training table on disk, as described by its manifest."""

    path: str
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def label(self) -> str:
        return self.manifest["label"]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def table_path(self) -> str:
        return os.path.join(self.path, "table")

    @property
    def reused(self) -> bool:
        return bool(self.manifest.get("reused"))


def load_version(path: str) -> DatasetVersion:
    """Open a dataset version folder by its manifest."""
    try:
        manifest = json.loads(Path(path, MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataContractError(f"no dataset version at {path} (missing {MANIFEST}); run the ingest job") from None
    return DatasetVersion(path=path, manifest=manifest)


def feature_columns(cfg: DataConfig) -> list[str]:
    """Feature columns of the training table, in the order the model sees them."""
    base = cfg.base_source
    cols = [
        name
        for name, spec in base.fields.items()
        if name not in (cfg.key, cfg.label) and (spec.type != "str" or spec.allowed)
    ]
    for source in cfg.sources:
        cols += [f.name for f in source.features]
    return cols


# ------------------------------------------------------------------------------------------ reading


def _files(source: SourceSpec) -> list[dict[str, Any]]:
    """Local files of a source with their size and mtime (URIs are listed by Ray Data, not here)."""
    if "://" in source.path:
        return [{"path": source.path}]
    matches = sorted(glob.glob(source.path)) if any(c in source.path for c in "*?[") else [source.path]
    files: list[str] = []
    for m in matches:
        if os.path.isdir(m):
            files += sorted(str(p) for p in Path(m).rglob("*") if p.is_file() and not p.name.startswith("."))
        elif os.path.exists(m):
            files.append(m)
    if not files:
        raise ConfigError(f"source {source.name!r}: no file at {source.path!r}")
    return [{"path": f, "size": os.path.getsize(f), "mtime_ns": os.stat(f).st_mtime_ns} for f in files]


def _read_and_check(source: SourceSpec, paths: list[str]):
    """Read a source and run the contract in the same task (no Arrow round trip of raw mixed values)."""
    import ray.data

    if source.format == "csv":
        # Read everything as text: the contract, not the CSV reader's type inference, decides what is bad.
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in source.fields},
            include_columns=list(source.fields),
            include_missing_columns=True,
            strings_can_be_null=False,
        )
        ds = ray.data.read_csv(paths, convert_options=convert, include_paths=True)
    elif source.format == "jsonl":
        # Line by line, so that one broken line is quarantined instead of failing the whole file.
        ds = ray.data.read_text(paths, include_paths=True)
    else:
        ds = ray.data.read_parquet(paths, columns=list(source.fields), include_paths=True)
    return ds.map_batches(
        _check, batch_format="pandas", fn_kwargs={"fields": source.fields, "json_lines": source.format == "jsonl"}
    )


def _check(batch: pd.DataFrame, fields, json_lines: bool) -> pd.DataFrame:
    if json_lines:
        raw = parse_json_lines(batch["text"], fields)
        raw[FILE] = batch["path"].astype(str).to_numpy()
    else:
        raw = batch.rename(columns={"path": FILE})
    return validate_batch(raw, fields)


# ------------------------------------------------------------------------------------- transforming


def _good(batch: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return batch.loc[batch[REASON] == "", columns]


def _bad(batch: pd.DataFrame, source: str) -> pd.DataFrame:
    bad = batch.loc[batch[REASON] != ""]
    return pd.DataFrame(
        {
            "source": pd.Series([source] * len(bad), dtype="string"),
            "file": bad[FILE].astype("string").to_numpy() if FILE in bad else pd.NA,
            "reason": bad[REASON].astype("string").to_numpy(),
            "record": bad[RECORD].astype("string").to_numpy(),
        }
    )


def _encode_base(batch: pd.DataFrame, categories: dict[str, list[Any]]) -> pd.DataFrame:
    """Categorical fields become the index of their value in the contract's `allowed` list."""
    out = batch.copy()
    for name, allowed in categories.items():
        out[name] = out[name].map({v: float(i) for i, v in enumerate(allowed)}).astype("float64")
    return out


def _aggregate(ds, source: SourceSpec, key: str):
    """Per-key features of a many-rows-per-key source, with Ray Data's distributed groupby."""
    from ray.data.aggregate import Count, Max, Mean, Min, Std, Sum

    simple = {"sum": Sum, "mean": Mean, "min": Min, "max": Max, "std": Std}
    aggs: list[Any] = []
    slopes = [f for f in source.features if f.agg == "slope"]
    cols = {key} | {f.column for f in source.features if f.column} | {f.time_column for f in slopes if f.time_column}
    ds = ds.select_columns(sorted(cols))
    for f in source.features:
        if f.agg == "count":
            aggs.append(Count(alias_name=f.name))
        elif f.agg == "slope":
            # Least-squares slope from four sums, so it stays a mergeable (distributed) aggregation.
            aggs += [Sum(on=f"{f.name}__{t}", alias_name=f"{f.name}__{t}") for t in ("x", "y", "xy", "xx")]
        else:
            aggs.append(simple[f.agg](on=f.column, alias_name=f.name))
    if slopes:
        if not any(f.agg == "count" for f in source.features):
            aggs.append(Count(alias_name="__n"))
        ds = ds.map_batches(_add_slope_terms, batch_format="pandas", fn_kwargs={"slopes": slopes})
    out = ds.groupby(key).aggregate(*aggs)
    if slopes:
        count_col = next((f.name for f in source.features if f.agg == "count"), "__n")
        out = out.map_batches(
            _finish_slopes, batch_format="pandas", fn_kwargs={"slopes": [f.name for f in slopes], "n": count_col}
        )
    return out


def _add_slope_terms(batch: pd.DataFrame, slopes) -> pd.DataFrame:
    out = batch.copy()
    for f in slopes:
        x = batch[f.time_column].astype("float64")
        y = batch[f.column].astype("float64")
        out[f"{f.name}__x"], out[f"{f.name}__y"] = x, y
        out[f"{f.name}__xy"], out[f"{f.name}__xx"] = x * y, x * x
    return out


def _finish_slopes(batch: pd.DataFrame, slopes: list[str], n: str) -> pd.DataFrame:
    out = batch.copy()
    cnt = out[n].astype("float64")
    for name in slopes:
        sx, sy, sxy, sxx = (out.pop(f"{name}__{t}").astype("float64") for t in ("x", "y", "xy", "xx"))
        denom = cnt * sxx - sx * sx
        out[name] = np.where(denom > 0, (cnt * sxy - sx * sy) / denom.where(denom > 0, 1.0), np.nan)
    return out.drop(columns=["__n"], errors="ignore")


def _finalize(batch: pd.DataFrame, key: str, label: str, features: list[str], zero_fill: list[str]) -> pd.DataFrame:
    """Fixed column order and dtypes; a key with no events has a count of 0, not a missing count."""
    out = pd.DataFrame({key: batch[key].astype("int64")})
    for f in features:
        col = batch[f].astype("float64")
        out[f] = col.fillna(0.0) if f in zero_fill else col
    out[label] = batch[label].astype("int64")
    return out


def _hash_batch(batch: pd.DataFrame) -> pd.DataFrame:
    hashes = pd.util.hash_pandas_object(batch[sorted(batch.columns)], index=False).to_numpy(dtype=np.uint64)
    # Sum mod 2**64: independent of row order and of how rows are split into blocks.
    return pd.DataFrame({"h": [int(hashes.sum(dtype=np.uint64))], "n": [len(batch)]})


def _fingerprint(table_ds, schema: str) -> str:
    parts = table_ds.map_batches(_hash_batch, batch_format="pandas").take_all()
    total = sum(int(p["h"]) for p in parts) % (1 << 64)
    rows = sum(int(p["n"]) for p in parts)
    return hashlib.sha256(f"{schema}|{rows}|{total}".encode()).hexdigest()


# -------------------------------------------------------------------------------------------- main


def _spec_hash(cfg: DataConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


def ingest(cfg: DataConfig) -> DatasetVersion:
    """Run the ingest plan on the current Ray cluster and return the dataset version.

    Raises:
        ConfigError: a source has no file.
        DataContractError: a source's quarantined share exceeds its ``max_bad_fraction`` (the quarantine
            output is written first, so nothing is lost).
    """
    files = {s.name: _files(s) for s in cfg.sources}
    version = hashlib.sha256(
        json.dumps({"spec": _spec_hash(cfg), "files": files}, sort_keys=True).encode()
    ).hexdigest()[:16]
    vdir = os.path.join(cfg.output_dir, cfg.name, version)
    if os.path.exists(os.path.join(vdir, MANIFEST)):
        existing = load_version(vdir)
        return DatasetVersion(vdir, {**existing.manifest, "reused": True})

    started = time.time()
    features = feature_columns(cfg)
    base = cfg.base_source
    reconciliation: dict[str, dict[str, int]] = {}
    bad_parts = []
    joined = None
    zero_fill: list[str] = []
    # The base source (one row per key, with the label) goes first: it is the left side of every join.
    for source in [base] + [s for s in cfg.sources if s is not base]:
        checked = _read_and_check(source, [f["path"] for f in files[source.name]]).materialize()
        good = checked.map_batches(_good, batch_format="pandas", fn_kwargs={"columns": list(source.fields)})
        bad = checked.map_batches(_bad, batch_format="pandas", fn_kwargs={"source": source.name}).materialize()
        total, n_bad = checked.count(), bad.count()
        reconciliation[source.name] = {"in": total, "ok": total - n_bad, "quarantined": n_bad}
        bad_parts.append(bad)
        if source is base:
            categories = {n: list(s.allowed) for n, s in source.fields.items() if s.type == "str" and s.allowed}
            keep = [cfg.key, cfg.label] + [f for f in features if f in source.fields]
            left = good.map_batches(_encode_base, batch_format="pandas", fn_kwargs={"categories": categories})
            joined = left.select_columns(keep)
        else:
            zero_fill += [f.name for f in source.features if f.agg in ("count", "sum")]
            joined = joined.join(_aggregate(good, source, cfg.key), "left_outer", 2, on=(cfg.key,))

    Path(vdir).mkdir(parents=True, exist_ok=True)
    quarantine = bad_parts[0].union(*bad_parts[1:]) if len(bad_parts) > 1 else bad_parts[0]
    quarantine.write_parquet(os.path.join(vdir, "quarantine"))
    for source in cfg.sources:
        r = reconciliation[source.name]
        if r["in"] and r["quarantined"] / r["in"] > source.max_bad_fraction:
            raise DataContractError(
                f"source {source.name!r}: {r['quarantined']} of {r['in']} records failed the contract "
                f"({r['quarantined'] / r['in']:.1%} > max_bad_fraction {source.max_bad_fraction:.1%}); "
                f"see the quarantine at {vdir}/quarantine"
            )

    table = joined.map_batches(
        _finalize,
        batch_format="pandas",
        fn_kwargs={"key": cfg.key, "label": cfg.label, "features": features, "zero_fill": zero_fill},
    ).materialize()
    schema = ",".join([cfg.key, *features, cfg.label])
    manifest = {
        "name": cfg.name,
        "version": version,
        "fingerprint": _fingerprint(table, schema),
        "rows": table.count(),
        "key": cfg.key,
        "label": cfg.label,
        "features": features,
        "schema": schema,
        "spec_hash": _spec_hash(cfg),
        "validation_fraction": cfg.validation_fraction,
        "sources": {s.name: {"files": files[s.name], **reconciliation[s.name]} for s in cfg.sources},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 2),
    }
    table.write_parquet(os.path.join(vdir, "table"))
    # The manifest is written last: its presence marks a complete version.
    Path(vdir, MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return DatasetVersion(vdir, manifest)
