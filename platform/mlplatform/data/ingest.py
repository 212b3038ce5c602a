"""Ingest: read every source with Ray Data, enforce the contract, quarantine, aggregate, join, version.

The plan is a chain of Ray Data operations (read → validate → quarantine → project every source onto
one wide schema → union → one groupby by key → write); the driver only collects counts and a fingerprint.
A dataset version is a folder::

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


# One groupby instead of a groupby per source plus a join per source: every source is projected onto the
# same wide schema (key + "<source>__<column>" columns, null where a row does not have them), the sources
# are unioned, and a single distributed aggregation computes the base fields and every feature at once.
# Measured on the demo data (2 CPUs): 3 groupbys + 3 hash joins took 25.6 s, this takes a fraction.


def _wide_columns(cfg: DataConfig, features: list[str]) -> dict[str, list[tuple[str, str, str | None]]]:
    """Per source: (wide column, how, argument) with how in {"field", "one", "x*y"}."""
    base = cfg.base_source
    plan: dict[str, list[tuple[str, str, str | None]]] = {}
    plan[base.name] = [(f"{base.name}__{f}", "field", f) for f in [*features, cfg.label] if f in base.fields]
    plan[base.name].append((f"{base.name}__row", "one", None))
    for source in cfg.sources:
        if source is base:
            continue
        cols: list[tuple[str, str, str | None]] = [(f"{source.name}__row", "one", None)]
        for col in sorted({f.column for f in source.features if f.column}):
            cols.append((f"{source.name}__{col}", "field", col))
        for f in source.features:
            if f.agg == "slope":
                x, y = f.time_column, f.column
                cols += [
                    (f"{source.name}__{f.name}__x", "field", x),
                    (f"{source.name}__{f.name}__y", "field", y),
                    (f"{source.name}__{f.name}__xy", "x*y", f"{x}*{y}"),
                    (f"{source.name}__{f.name}__xx", "x*y", f"{x}*{x}"),
                ]
        plan[source.name] = cols
    return plan


def _project(
    batch: pd.DataFrame,
    key: str,
    mine: list[tuple[str, str, str | None]],
    all_columns: list[str],
    categories: dict[str, list[Any]],
) -> pa.Table:
    """Good records of one source on the wide schema; categoricals become their index in `allowed`."""
    good = batch.loc[batch[REASON] == ""]
    n = len(good)

    def field(name: str) -> np.ndarray:
        col = good[name]
        if name in categories:
            col = col.map({v: float(i) for i, v in enumerate(categories[name])})
        return col.astype("float64").to_numpy()

    out: dict[str, Any] = {key: pa.array(good[key].astype("int64").to_numpy())}
    values = {}
    for wide, how, arg in mine:
        if how == "field":
            values[wide] = field(arg)
        elif how == "one":
            values[wide] = np.ones(n)
        else:
            a, b = arg.split("*")
            values[wide] = field(a) * field(b)
    for wide in all_columns:
        # from_pandas semantics: NaN becomes null, which every aggregation below ignores.
        out[wide] = pa.array(values[wide] if wide in values else np.full(n, np.nan), pa.float64(), from_pandas=True)
    return pa.table(out)


def _aggregations(cfg: DataConfig, features: list[str]) -> list[Any]:
    from ray.data.aggregate import Count, Max, Mean, Min, Std, Sum

    base = cfg.base_source
    simple = {"sum": Sum, "mean": Mean, "min": Min, "max": Max, "std": Std}
    # The base source has one row per key, so Max of a base column is that row's value.
    aggs: list[Any] = [Max(on=f"{base.name}__{f}", alias_name=f) for f in [*features, cfg.label] if f in base.fields]
    aggs.append(Count(on=f"{base.name}__row", ignore_nulls=True, alias_name="__base_rows"))
    for source in cfg.sources:
        if source is base:
            continue
        for f in source.features:
            if f.agg == "count":
                aggs.append(Count(on=f"{source.name}__row", ignore_nulls=True, alias_name=f.name))
            elif f.agg == "slope":
                # Least-squares slope from mergeable sums, so it stays one distributed aggregation.
                terms = ("x", "y", "xy", "xx")
                aggs += [Sum(on=f"{source.name}__{f.name}__{t}", alias_name=f"{f.name}__{t}") for t in terms]
                aggs.append(Count(on=f"{source.name}__{f.name}__x", ignore_nulls=True, alias_name=f"{f.name}__n"))
            else:
                aggs.append(simple[f.agg](on=f"{source.name}__{f.column}", alias_name=f.name))
    return aggs


def _finalize(
    batch: pd.DataFrame, key: str, label: str, features: list[str], zero_fill: list[str], slopes: list[str]
) -> pd.DataFrame:
    """Keys with a valid base record only; slopes from their sums; fixed column order and dtypes.

    A key with no events has a count of 0, not a missing count.
    """
    batch = batch.loc[batch["__base_rows"].fillna(0) > 0]
    for name in slopes:
        n, sx, sy, sxy, sxx = (batch[f"{name}__{t}"].astype("float64") for t in ("n", "x", "y", "xy", "xx"))
        denom = n * sxx - sx * sx
        batch = batch.assign(**{name: np.where(denom > 0, (n * sxy - sx * sy) / denom.where(denom > 0, 1.0), np.nan)})
    out = pd.DataFrame({key: batch[key].astype("int64")})
    for f in features:
        col = batch[f].astype("float64")
        out[f] = col.fillna(0.0) if f in zero_fill else col
    out[label] = batch[label].astype("int64")
    return out.reset_index(drop=True)


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


def _partitions() -> int:
    """Shuffle partitions: a few per CPU (Ray's default of 200 makes small datasets crawl)."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


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
    reconciliation: dict[str, dict[str, int]] = {}
    bad_parts, wide_parts = [], []
    plan = _wide_columns(cfg, features)
    all_columns = [wide for cols in plan.values() for wide, _, _ in cols]
    for source in cfg.sources:
        checked = _read_and_check(source, [f["path"] for f in files[source.name]]).materialize()
        bad = checked.map_batches(_bad, batch_format="pandas", fn_kwargs={"source": source.name}).materialize()
        total, n_bad = checked.count(), bad.count()
        reconciliation[source.name] = {"in": total, "ok": total - n_bad, "quarantined": n_bad}
        bad_parts.append(bad)
        categories = {n: list(s.allowed) for n, s in source.fields.items() if s.type == "str" and s.allowed}
        wide_parts.append(
            checked.map_batches(
                _project,
                batch_format="pandas",
                fn_kwargs={
                    "key": cfg.key,
                    "mine": plan[source.name],
                    "all_columns": all_columns,
                    "categories": categories,
                },
            )
        )

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

    zero_fill = [f.name for src in cfg.sources for f in src.features if f.agg in ("count", "sum")]
    slopes = [f.name for src in cfg.sources for f in src.features if f.agg == "slope"]
    table = (
        wide_parts[0]
        .union(*wide_parts[1:])
        .groupby(cfg.key, num_partitions=_partitions())
        .aggregate(*_aggregations(cfg, features))
        .map_batches(
            _finalize,
            batch_format="pandas",
            fn_kwargs={
                "key": cfg.key,
                "label": cfg.label,
                "features": features,
                "zero_fill": zero_fill,
                "slopes": slopes,
            },
        )
        .materialize()
    )
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
