"""Ingest: read every source with Ray Data, enforce the contract, quarantine, aggregate, join, version.

The plan is a chain of Ray Data operations (read → validate → quarantine → project every source onto
one wide schema → union → one hash shuffle by key → aggregate → write); the driver only collects counts
and a fingerprint. A dataset version (`mlplatform.data.version`) is a folder::

    <output_dir>/<name>/<version>/
        table/        Parquet training table (key, features, label)
        quarantine/   Parquet: source, file, reason, record — every record the contract refused, and every
                      file that could not be read at all (reason "malformed file: ...", no record)
        profile.json  per-feature statistics: the reference for drift detection
        manifest.json every file above with its size; sources with their files' digests, reconciliation,
                      features, schema, row count, fingerprint — written last, committed atomically

The version id hashes the spec and the sha256 of every input file, so re-running on unchanged inputs
reuses the version instead of recomputing it, and any change of content makes a new one. The fingerprint
hashes the table's content independently of row order and block layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.data import sources
from mlplatform.data.config import DataConfig, SourceSpec
from mlplatform.data.contract import FILE, REASON, RECORD, validate_batch
from mlplatform.data.local import LocalDataset, as_pandas, ingest_in_process, with_path
from mlplatform.data.profile import profile
from mlplatform.data.version import (
    DatasetVersion,
    VersionWriter,
    content_digests,
    filesystem,
    find_version,
    fingerprint,
    hash_frame,
    hidden,
    load_version,
)
from mlplatform.errors import ConfigError, DataContractError

__all__ = ["DatasetVersion", "ingest", "load_version"]  # the version types are re-exported

log = logging.getLogger(__name__)

CHECK_BLOCK_ROWS = 100_000
QUARANTINE_BLOCK_ROWS = 1_000_000
PROFILE = "profile.json"
#: A str feature without `allowed` takes the values the data holds as its categories, up to this many.
MAX_CATEGORIES = 1000


# ------------------------------------------------------------------------------------------ reading


def _files(source: SourceSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """Every data file of a source (a file, a folder — partitioned folders included — or a glob; local or a
    URI) with its size, sorted; and the paths skipped as hidden or temporary.

    Raises:
        ConfigError: the source has no data file.
    """
    import fnmatch

    import pyarrow.fs as pafs

    fs, path = filesystem(source.path)
    scheme = source.path.split("://", 1)[0] + "://" if "://" in source.path else ""
    if any(c in path for c in "*?["):
        base = path[: min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0] or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        infos = [i for i in infos if fnmatch.fnmatch(i.path, path)]
    else:
        info = fs.get_file_info(path)
        base = path if info.type == pafs.FileType.Directory else os.path.dirname(path)
        infos = (
            fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if info.type == pafs.FileType.Directory
            else [info]
        )
    files, skipped = [], []
    for i in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
        shown = f"{scheme}{i.path}" if scheme and scheme != "file://" else i.path
        if hidden(os.path.relpath(i.path, base)):
            skipped.append(shown)
        else:
            files.append({"path": shown, "size": i.size})
    if not files:
        raise ConfigError(f"source {source.name!r}: no file at {source.path!r}")
    return files, skipped


def _probe(row: dict[str, Any], source: SourceSpec) -> dict[str, Any]:
    """Why a file cannot be read as `fmt` ("" when it can), and the parts of it to quarantine one by one.

    Runs per file (in a driver thread for a small source, else as a Ray Data task), so a bad file is
    quarantined with its reason instead of failing the read of its whole source.
    """
    path, fmt = row["path"], source.format
    probe = sources.Probe()
    try:
        fs, inner = filesystem(path)
        if fs.get_file_info(inner).size == 0:
            probe = sources.Probe("empty file", [], 0)
        else:
            probe = sources.get(fmt).probe(fs, inner, source)
    except (OSError, pa.ArrowException) as exc:
        probe = sources.Probe(f"unreadable {fmt}: {exc}")
    rows = -1 if probe.rows is None else probe.rows
    return {"path": path, "reason": probe.reason[:500], "bad_parts": json.dumps(probe.bad_parts), "rows": rows}


def _readable(
    source: SourceSpec, files: list[dict[str, Any]], *, local: bool
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Probe a source's files in parallel — in this process's threads (`local`), else as Ray Data tasks:
    (readable paths, malformed files with their reason and known row
    count, bad parts of readable files)."""
    if local:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:  # pyarrow releases the GIL while it reads
            results = {r["path"]: r for r in pool.map(lambda f: _probe({"path": f["path"]}, source), files)}
    else:
        import ray.data

        probed = ray.data.from_items([{"path": f["path"]} for f in files]).map(_probe, fn_kwargs={"source": source})
        results = {r["path"]: r for r in probed.take_all()}
    good = [f["path"] for f in files if not results[f["path"]]["reason"]]
    bad = [
        {"path": p, "reason": r["reason"], "rows": None if r["rows"] < 0 else int(r["rows"])}
        for p, r in sorted(results.items())
        if r["reason"]
    ]
    parts = [{"path": p, **part} for p in good for part in json.loads(results[p]["bad_parts"])]
    return good, bad, parts


def _with_label_contract(cfg: DataConfig, source: SourceSpec) -> SourceSpec:
    """`source`, its 0/1 label (binary, no `positive` mapping, no `allowed` of its own) held to 0 and 1 by the
    contract: any other value is a record to quarantine with its reason, not a crash inside XGBoost."""
    spec = source.fields.get(cfg.label)
    plain_01 = cfg.task_kind() == "binary" and cfg.positive is None
    if spec is None or not plain_01 or spec.type == "bool" or spec.allowed is not None:
        return source
    fields = {**source.fields, cfg.label: spec.model_copy(update={"allowed": [0, 1]})}
    return source.model_copy(update={"fields": fields})


def _read_and_check(source: SourceSpec, paths: list[str], *, local: bool):
    """Read a source and run the contract in the same task (no Arrow round trip of raw mixed values); `local`:
    in this process (a small input), as one `LocalDataset`."""
    if local:
        return LocalDataset(_check_local(source, paths))
    ds = sources.get(source.format).read(source, paths)
    # A reader makes one task (and blocks of up to 128 MiB) per file, so a source in one big file would be
    # checked on one core: smaller blocks let the contract run on every core whatever the file layout.
    ds = ds.repartition(target_num_rows_per_block=CHECK_BLOCK_ROWS, strict=True)
    return ds.map_batches(_check, batch_format="pandas", fn_kwargs={"source": source})


def _check_local(source: SourceSpec, paths: list[str]) -> pa.Table:
    """`_read_and_check` in this process: the files read in threads (pyarrow releases the GIL), each row's file
    in ``path`` as Ray's readers give it (the path inside its filesystem), then one contract check."""
    from concurrent.futures import ThreadPoolExecutor

    kind = sources.get(source.format)

    def read(path: str) -> pa.Table:
        fs, inner = filesystem(path)
        return with_path(kind.read_file(fs, inner, source), inner)

    with ThreadPoolExecutor(max_workers=8) as pool:
        raw = list(pool.map(read, paths))
    try:
        return _check(as_pandas(pa.concat_tables(raw, promote_options="permissive")), source)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Files whose columns do not unify (a Parquet id int in one, str in another): checked one by one, as
        # Ray's blocks are; the contract's output has the fields' own types.
        return pa.concat_tables([_check(as_pandas(t), source) for t in raw], promote_options="permissive")


def _check(batch: pd.DataFrame, source: SourceSpec) -> pa.Table:
    raw = sources.get(source.format).records(batch, source)
    if source.path_fields:
        paths = batch["path"].astype(str)
        raw = pd.concat([raw, paths.str.extract(source.path_fields, expand=True)], axis=1)
        raw[FILE] = paths.array
    # Arrow out: every later step (quarantine, projection) works on Arrow without converting again.
    return pa.Table.from_pandas(validate_batch(raw, source.fields), preserve_index=False)


# ------------------------------------------------------------------------------------- transforming


#: Every quarantine part has this schema, so that the parts union and read back as one table.
QUARANTINE_SCHEMA = pa.schema(
    [("source", pa.string()), ("file", pa.string()), ("reason", pa.string()), ("record", pa.string())]
)


def _quarantine(source: str, files: Any, reasons: Any, records: Any) -> pa.Table:
    files, reasons, records = (
        pa.array(c, pa.string()) if not isinstance(c, pa.Array) else c for c in (files, reasons, records)
    )
    return pa.Table.from_arrays(
        [pa.array([source] * len(reasons), pa.string()), files, reasons, records], schema=QUARANTINE_SCHEMA
    )


def _bad(batch: pa.Table, source: str) -> pa.Table:
    """The records of a checked batch that failed the contract, as quarantine rows (Arrow: no pandas trip)."""
    bad = batch.filter(pc.not_equal(batch[REASON], ""))
    files = bad[FILE].combine_chunks().cast(pa.string()) if FILE in bad.column_names else [None] * bad.num_rows
    return _quarantine(
        source,
        files,
        bad[REASON].combine_chunks().cast(pa.string()),
        bad[RECORD].combine_chunks().cast(pa.string()),
    )


def _dataset(table: pa.Table, *, local: bool) -> Any:
    """A Ray Dataset of one Arrow table, or a `LocalDataset` on the small-input path."""
    if local:
        return LocalDataset(table)
    import ray.data

    return ray.data.from_arrow(table)


def _valid(batch: pa.Table) -> pa.Table:
    """The records of a checked batch that passed the contract."""
    return batch.filter(pc.equal(batch[REASON], ""))


def _ambiguous(batch: pa.Table) -> pa.Table:
    """The aggregated keys with more than one valid label record."""
    return batch.filter(pc.greater(batch["__base_rows"], 1))


def _bad_files_frame(source: str, bad_files: list[dict[str, Any]]) -> pa.Table:
    """Quarantine rows for files that could not be read at all: one row per file, no record; the reason says
    how many records the file held when that is known."""

    def reason(b: dict[str, Any]) -> str:
        held = f" ({b['rows']} record{'s' if b['rows'] != 1 else ''})" if b["rows"] else ""
        return f"malformed file: {b['reason']}{held}"

    return _quarantine(source, [b["path"] for b in bad_files], [reason(b) for b in bad_files], [""] * len(bad_files))


def _bad_parts_frame(source: str, parts: list[dict[str, Any]]) -> pa.Table:
    """Quarantine rows for parts of readable files that the reader skips (e.g. CSV rows with the wrong column count)."""
    return _quarantine(source, [p["path"] for p in parts], [p["reason"] for p in parts], [p["record"] for p in parts])


def _as_text(values: pd.Series) -> pd.Series:
    """Values as text; whole numbers without a trailing ".0" (an int column with nulls arrives as floats)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        try:
            return values.astype("Int64").astype("string")
        except (TypeError, ValueError):
            pass
    return values.astype("string")


def _duplicate_records(batch: pd.DataFrame, source: str, field: str, counts: dict[str, int]) -> pa.Table:
    """The valid records of `batch` whose `field` value (as text) is duplicated, as quarantine rows."""
    good = batch.loc[batch[REASON] == ""]
    values = _as_text(good[field])
    hit_mask = values.isin(list(counts)).fillna(False).to_numpy()
    hit = good.loc[hit_mask]
    raw = hit.drop(columns=[c for c in hit.columns if str(c).startswith("__")])
    return _quarantine(
        source,
        hit[FILE].astype(str).tolist() if FILE in hit else [None] * len(hit),
        [f"{field}: duplicate value {v} ({counts[v]} records)" for v in values[hit_mask]],
        [json.dumps(r, default=str) for r in raw.to_dict("records")],
    )


def _mark_duplicates(batch: pd.DataFrame, field: str, counts: dict[str, int]) -> pd.DataFrame:
    """Give valid records whose `field` value is duplicated a reason (they then go to quarantine)."""
    values = _as_text(batch[field])
    hit = ((batch[REASON] == "") & values.isin(list(counts)).fillna(False)).to_numpy()
    if hit.any():
        batch = batch.copy()
        batch.loc[hit, REASON] = [f"{field}: duplicate value {v} ({counts[v]} records)" for v in values[hit]]
        raw_cols = [c for c in batch.columns if not str(c).startswith("__")]
        batch.loc[hit, RECORD] = [json.dumps(r, default=str) for r in batch.loc[hit, raw_cols].to_dict("records")]
    return batch


def _text(value: Any) -> str:
    """One value as `_as_text` writes it."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _distinct(batch: pa.Table, fields: list[str]) -> pa.Table:
    """The distinct values of each of `fields` among a checked batch's valid records (one JSON row)."""
    good = _valid(batch)
    found = {f: pc.unique(good[f].combine_chunks().cast(pa.string())).drop_null().to_pylist() for f in fields}
    return pa.table({"distinct": [json.dumps(found)]})


def _categories(source: SourceSpec, checked, names: list[str]) -> dict[str, list[str]]:
    """Each categorical feature's categories in code order: `allowed` as written, else the sorted values of the
    valid records (so the codes do not depend on the order records arrive in).

    Raises:
        DataContractError: a field has more distinct values than `MAX_CATEGORIES` (an id or free text, not a
            category).
    """
    out = {n: [str(v) for v in source.fields[n].allowed] for n in names if source.fields[n].allowed}
    infer = [n for n in names if n not in out]
    if infer:
        seen: dict[str, set[str]] = {n: set() for n in infer}
        parts = checked.map_batches(_distinct, batch_format="pyarrow", fn_kwargs={"fields": infer}).take_all()
        for part in parts:
            for n, values in json.loads(part["distinct"]).items():
                seen[n].update(values)
        for n in infer:
            if len(seen[n]) > MAX_CATEGORIES:
                raise DataContractError(
                    f"source {source.name!r}: str field {n!r} has {len(seen[n])} distinct values, too many for a "
                    f"categorical feature (at most {MAX_CATEGORIES}); list its `allowed` values, or remove it from "
                    "`fields` if it is an id or free text"
                )
            numeric = source.fields[n].type in ("int", "float")  # class ids 2 < 10, not "10" < "2"
            out[n] = sorted(seen[n], key=float) if numeric else sorted(seen[n])
    return out


def _quarantine_duplicates(checked, field: str):
    """Records sharing a value of a `unique` field all fail the contract (which one is right is unknowable)."""
    counts = {
        _text(row[field]): int(row["count()"])
        for row in checked.map_batches(_valid, batch_format="pyarrow").groupby(field).count().take_all()
        if int(row["count()"]) > 1 and row[field] is not None
    }
    if not counts:
        return checked
    return checked.map_batches(
        _mark_duplicates, batch_format="pandas", fn_kwargs={"field": field, "counts": counts}
    ).materialize()


# One shuffle instead of a groupby per source plus a join per source: every source is projected onto the
# same wide schema (key + "<source>__<column>" columns, null where a row does not have them), the sources
# are unioned, hash-partitioned by key, and one aggregation per partition computes every feature at once.
# Measured on the demo data (2 CPUs): 3 groupbys + 3 hash joins took 25.6 s, this takes a fraction.


def _wide_columns(cfg: DataConfig) -> dict[str, list[tuple[str, str | None]]]:
    """Per source: (wide column, source field) pairs; field None is the record-count column (1 per record)."""
    plan = {}
    for source in cfg.sources:
        if source.features:
            used = sorted({c for f in source.features for c in (f.column, f.time_column) if c})
        else:  # one row per key: its fields are the features (and the label, in the label source)
            used = [n for n in source.fields if n != cfg.key]
        plan[source.name] = [(f"{source.name}__row", None), *((f"{source.name}__{c}", c) for c in used)]
    return plan


def _project(
    batch: pa.Table,
    key: str,
    key_type: pa.DataType,
    mine: list[tuple[str, str | None]],
    all_columns: list[str],
    categories: dict[str, list[str]],
    positive: tuple[str, Any] | None,
) -> pa.Table:
    """Good records of one source on the wide schema (Arrow, zero-copy where it can); a categorical becomes
    its index in its categories; a `positive` (label, value) becomes 1 where the label is that value, else 0;
    columns of other sources are null, which every aggregation ignores."""
    good = _valid(batch)
    n = good.num_rows
    values: dict[str, Any] = {}
    for wide, name in mine:
        if name is None:
            values[wide] = pa.array(np.ones(n))
            continue
        col = good[name]
        if name in categories:
            col = pc.index_in(col.cast(pa.string()), value_set=pa.array(categories[name], pa.string()))
        elif positive is not None and name == positive[0]:
            col = pc.equal(col, pa.scalar(positive[1]))
        values[wide] = col.cast(pa.float64())
    out: dict[str, Any] = {key: good[key].cast(key_type)}
    for wide in all_columns:
        out[wide] = values[wide] if wide in values else pa.nulls(n, pa.float64())
    return pa.table(out)


@dataclass(frozen=True)
class _Agg:
    """One per-key output column: `how` over the wide column `column`, in a `window` of `time`."""

    out: str
    column: str
    how: str
    time: str | None = None
    window: float | None = None


def _aggregations(cfg: DataConfig) -> list[_Agg]:
    base = cfg.base_source
    aggs = [_Agg("__base_rows", f"{base.name}__row", "count")]
    for source in cfg.sources:
        if not source.features:
            # One row per key (duplicates went to quarantine), so the max of a column is that row's value.
            aggs += [_Agg(f, f"{source.name}__{f}", "max") for f in source.fields if f != cfg.key]
            continue
        for f in source.features:
            column = f"{source.name}__{f.column}" if f.agg != "count" else f"{source.name}__row"
            time_column = f"{source.name}__{f.time_column}" if f.time_column else None
            aggs.append(_Agg(f.name, column, f.agg, time_column, f.window))
    return aggs


def _aggregate_partition(batch: pa.Table, key: str, key_type: pa.DataType, aggs: list[_Agg]) -> pa.Table:
    """Every feature of the keys in one hash partition (a partition holds all rows of its keys).

    Why not Ray's ``groupby().aggregate()``: it merges partial sums in the order blocks arrive, so a float
    sum differs in its last bits with the number of workers, the block size or the node count, and so
    would the content fingerprint. Here the rows an order-sensitive aggregation reads (sum, mean, std, slope,
    last) are put in a canonical order first — by key, then by their own values (time first, for a time
    series) — so every float is computed in the same order wherever it runs; rows that tie are equal values, so
    their order changes no bit. Count, min and max do not depend on order. Vectorized: pyarrow's sort and pandas
    groupbys over the rows each aggregation reads, not a Python call per key.
    """
    if not batch.num_rows:
        return pa.table({key: pa.array([], key_type), **{a.out: pa.array([], pa.float64()) for a in aggs}})
    codes, keys = pd.factorize(batch[key].to_numpy(zero_copy_only=False), sort=True)
    n = len(keys)
    out = {key: pa.array(np.asarray(keys, dtype=object) if key_type == pa.string() else keys, key_type)}
    ordered: dict[tuple[Any, ...], tuple[np.ndarray, ...]] = {}  # rows in canonical order, shared by aggregations
    for a in aggs:
        values = _floats(batch[a.column])
        t = _floats(batch[a.time]) if a.time else None
        if a.window is not None:
            assert t is not None
            latest = _by_key(pd.Series(t).groupby(codes).max(), n)
            with np.errstate(invalid="ignore"):
                values = np.where(t >= latest[codes] - a.window, values, np.nan)
        rows = (a.column, a.time, a.window, a.how in ("slope", "last"))
        result, ordered[rows] = _aggregate(a.how, codes, values, t, n, ordered.get(rows, ()))
        out[a.out] = pa.array(result, pa.float64(), from_pandas=True)
    return pa.table(out)


def _aggregate_apart(parts: list[pa.Table], key: str, key_type: pa.DataType, aggs: list[_Agg]) -> pa.Table:
    """`_aggregate_partition` of the in-process plan: each source's projected rows aggregated where they are, the
    results joined to the label source's keys (the first part) — no wide table of nulls, no union.

    The same values as the wide table's aggregation, to the bit: each aggregation reads the rows of one source
    only, in the same canonical order. A key another source has no row of gets nulls here where the wide table
    has 0 for a count or a sum; `_finalize` fills those with 0 either way (and keeps the label source's keys).
    """
    out = None
    for part in parts:
        agg = _aggregate_partition(part, key, key_type, [a for a in aggs if a.column in part.column_names])
        out = agg if out is None else out.join(agg, key, join_type="left outer", use_threads=False)
    assert out is not None
    missing = [a.out for a in aggs if a.out not in out.column_names]  # a source none of whose files was readable
    for name in missing:
        out = out.append_column(name, pa.nulls(out.num_rows, pa.float64()))
    return out


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A wide column (float64) as numpy, NaN where it is null."""
    return column.to_numpy(zero_copy_only=False).astype("float64", copy=False)


def _by_key(per_code: pd.Series, n: int) -> np.ndarray:
    """A groupby's result over key codes as one value per key (NaN where a key had no row)."""
    return per_code.reindex(range(n)).to_numpy(dtype="float64")


def _aggregate(
    how: str, codes: np.ndarray, values: np.ndarray, t: np.ndarray | None, n: int, ordered: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One aggregation of `values` per key code (0..n-1): a key without values gets NaN, or 0 for count and sum.

    `ordered`: the (key code, value, time) of the rows read, in canonical order, when an aggregation of the same
    rows computed them (else empty); returned with the result for the next one.
    """
    if not ordered:
        read = ~np.isnan(values) & (codes >= 0)
        if how in ("slope", "last"):
            assert t is not None
            read &= ~np.isnan(t)
        rows = np.flatnonzero(read)
        c, v = codes[rows], values[rows]
        x = t[rows] if t is not None else np.zeros(len(rows))
        if how == "count":
            return np.bincount(c, minlength=n).astype("float64"), ()
        if how in ("min", "max"):
            return _by_key(pd.Series(v).groupby(c).agg(how), n), ()
        # The order-sensitive ones: rows sorted by key, then time (a series), then value (pyarrow's sort: 1.6x
        # numpy's lexsort here).
        order = pc.sort_indices(
            pa.table({"c": c, "x": x, "v": v}), sort_keys=[("c", "ascending"), ("x", "ascending"), ("v", "ascending")]
        ).to_numpy()
        ordered = (c[order], v[order], x[order])
    c, v, x = ordered
    if how == "count":
        return np.bincount(c, minlength=n).astype("float64"), ordered
    if how in ("min", "max", "sum", "mean", "std"):
        result = _by_key(pd.Series(v).groupby(c, sort=False).agg(how), n)
        return (np.where(np.isnan(result), 0.0, result) if how == "sum" else result), ordered
    if how == "last":  # the latest time's value; of equal times, the largest value
        ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])
        result = np.full(n, np.nan)
        result[c[ends]] = v[ends]
        return result, ordered
    return _by_key(_slope(pd.Series(c), pd.Series(x), pd.Series(v)), n), ordered


def _slope(k: pd.Series, t: pd.Series, y: pd.Series) -> pd.Series:
    """Least-squares slope of y over t per key (centered, so large time values do not cancel out); no nulls."""
    dt = t - t.groupby(k).transform("mean")
    dy = y - y.groupby(k).transform("mean")
    sxx = (dt * dt).groupby(k).sum()
    sxy = (dt * dy).groupby(k).sum()
    return (sxy / sxx).where(sxx > 0)


def _finalize(
    batch: pd.DataFrame,
    key: str,
    key_type: pa.DataType,
    label: str,
    label_type: pa.DataType,
    features: list[str],
    zero_fill: list[str],
) -> pa.Table:
    """Keys with a valid base record only; fixed column order and types (Arrow: a block without rows keeps them).

    A key with no events has a count of 0, not a missing count.
    """
    batch = batch.loc[batch["__base_rows"].fillna(0) == 1]  # duplicated keys went to quarantine
    out = {key: pa.array(batch[key], key_type)}
    for f in features:
        col = batch[f].astype("float64")
        out[f] = pa.array(col.fillna(0.0) if f in zero_fill else col, pa.float64())
    out[label] = pa.array(batch[label].astype("float64" if label_type == pa.float64() else "int64"), label_type)
    return pa.table(out)


def _hash_batch(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"h": [hash_frame(batch)], "n": [len(batch)]})


def _fingerprint(table_ds, schema: str) -> str:
    parts = table_ds.map_batches(_hash_batch, batch_format="pandas").take_all()
    total = sum(int(p["h"]) for p in parts) % (1 << 64)
    return fingerprint(total, schema, sum(int(p["n"]) for p in parts))


# -------------------------------------------------------------------------------------------- main


def _union(parts: list[Any]) -> Any:
    """One Ray Dataset of `parts` (Ray's planner fails a union of a single input: a one-table data set)."""
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _partitions() -> int:
    """Shuffle partitions: a few per CPU (Ray's default of 200 makes small datasets crawl)."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def _spec_hash(cfg: DataConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


def ingest(cfg: DataConfig) -> DatasetVersion:
    """Run the ingest plan on the current Ray cluster and return the committed dataset version.

    Unchanged inputs (same contents, same spec) reuse the committed version; concurrent ingests of the same
    inputs commit it once (see `mlplatform.data.version`).

    Raises:
        ConfigError: a source has no file.
        DataContractError: a source's quarantined share exceeds its ``max_bad_fraction``; no version is
            committed and the quarantine is kept under ``<output_dir>/<name>/rejected/<version>/`` (nothing is
            lost).
    """
    started = time.time()
    seconds: dict[str, float] = {}  # where the time goes, per step, in the manifest

    def lap(step: str, since: float) -> float:
        now = time.time()
        seconds[step] = round(seconds.get(step, 0.0) + now - since, 2)
        return now

    listed = {s.name: _files(s) for s in cfg.sources}
    digests = content_digests([f["path"] for files, _ in listed.values() for f in files])
    files = {name: [{**f, "sha256": digests[f["path"]]} for f in fs] for name, (fs, _) in listed.items()}
    skipped = {name: sk for name, (_, sk) in listed.items() if sk}
    contents = {n: [(f["path"], f["sha256"]) for f in fs] for n, fs in files.items()}
    identity = {"spec": _spec_hash(cfg), "files": contents}
    version = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    dataset_dir = f"{cfg.output_dir.rstrip('/')}/{cfg.name}"
    existing = find_version(dataset_dir, version)
    if existing is not None:
        return DatasetVersion(existing.path, {**existing.manifest, "reused": True})
    lap("list and digest files", started)

    writer = VersionWriter(dataset_dir, version)
    writer.begin()
    try:
        return _build(cfg, version, files, skipped, writer, lap, seconds, started)
    except BaseException:
        writer.abort()  # nothing half-written stays behind (a killed process leaves a temporary folder)
        raise


def _build(
    cfg: DataConfig,
    version: str,
    files: dict[str, list[dict[str, Any]]],
    skipped: dict[str, list[str]],
    writer: VersionWriter,
    lap: Any,
    seconds: dict[str, float],
    started: float,
) -> DatasetVersion:
    """Every step of an ingest after the version id is known; writes through `writer`, commits last."""
    features = cfg.feature_columns()
    reconciliation: dict[str, dict[str, int]] = {}
    bad_parts, projected, checked_by_source = [], {}, {}
    plan = _wide_columns(cfg)
    all_columns = [wide for cols in plan.values() for wide, _ in cols]
    base = cfg.base_source
    key_type = pa.string() if base.fields[cfg.key].type == "str" else pa.int64()
    categorical: dict[str, list[str]] = {}  # every categorical feature → its categories, in code order
    task, classes = cfg.task_kind(), []
    bad_files_by_source: dict[str, list[dict[str, Any]]] = {}
    # A small input — or one that fits in memory on a one-node cluster — runs the same plan in this process
    # (`mlplatform.data.local`): Ray Data's start-up per operation would be most of its time, and on one node
    # its shuffle only moves the data between processes of the same machine.
    small = ingest_in_process(sum(f["size"] for fs in files.values() for f in fs))
    for source in cfg.sources:
        t = time.time()
        paths, bad_files, bad_rows = _readable(source, files[source.name], local=small)
        bad_files_by_source[source.name] = bad_files
        t = lap("probe files", t)
        if bad_files:
            bad_parts.append(_dataset(_bad_files_frame(source.name, bad_files), local=small))
        if bad_rows:
            bad_parts.append(_dataset(_bad_parts_frame(source.name, bad_rows), local=small))
        # A bad file's records count when they can be known (a Parquet footer, the lines of a text file).
        n = sum(b["rows"] or 0 for b in bad_files) + len(bad_rows)
        r = {"in": n, "ok": 0, "quarantined": n, "bad_files": len(bad_files)}
        reconciliation[source.name] = r
        if not paths:
            continue
        checked = _read_and_check(_with_label_contract(cfg, source), paths, local=small).materialize()
        for name, spec in source.fields.items():
            # The label source's key is unique by construction (checked on the join below, for free); so is
            # the key of another source of one row per key.
            unique_key = name == cfg.key and (source is not base and not source.features)
            if (spec.unique or unique_key) and not (source is base and name == cfg.key):
                checked = _quarantine_duplicates(checked, name)
        checked_by_source[source.name] = checked
        t = lap("read and check", t)
        bad = checked.map_batches(_bad, batch_format="pyarrow", fn_kwargs={"source": source.name}).materialize()
        total, n_bad = checked.count(), bad.count()
        lap("collect quarantine", t)
        r.update({"in": r["in"] + total, "ok": total - n_bad, "quarantined": r["quarantined"] + n_bad})
        bad_parts.append(bad)
        # Every str field the table uses becomes category codes: a feature as it is, or one an aggregation
        # reads (e.g. the `last` status). A multiclass label becomes class codes the same way; a binary one is
        # mapped by `positive`.
        used = [c for _, c in plan[source.name] if c is not None and c != cfg.label]
        coded = [c for c in used if source.fields[c].type == "str"]
        coded += [cfg.label] if source is base and task == "multiclass" else []
        categories = _categories(source, checked, coded)
        classes = categories.get(cfg.label, classes)
        if not source.features:
            categorical.update({n: c for n, c in categories.items() if n != cfg.label})
        projected[source.name] = checked.map_batches(
            _project,
            batch_format="pyarrow",
            fn_kwargs={
                "key": cfg.key,
                "key_type": key_type,
                "mine": plan[source.name],
                # In this process each source is aggregated apart (`_aggregate_apart`): no null columns.
                "all_columns": [wide for wide, _ in plan[source.name]] if small else all_columns,
                "categories": categories,
                "positive": (cfg.label, cfg.positive) if source is base and cfg.positive is not None else None,
            },
        )
    if base.name not in checked_by_source:
        first = bad_files_by_source[base.name][0]
        raise DataContractError(
            f"source {base.name!r} (it holds the label) has no readable file: {first['path']}: {first['reason']}"
            + (f" (and {len(files[base.name]) - 1} more)" if len(files[base.name]) > 1 else "")
        )

    t = time.time()
    if small:
        parts = [projected[base.name].table, *(p.table for name, p in projected.items() if name != base.name)]
        aggregated = LocalDataset(_aggregate_apart(parts, cfg.key, key_type, _aggregations(cfg)))
    else:
        aggregated = (
            # A hash shuffle keeps every row of a key in one output block (Ray does not split those blocks;
            # Ray's own map_groups relies on the same), so batch_size=None hands over whole keys.
            _union(list(projected.values()))
            .repartition(_partitions(), keys=[cfg.key])
            .map_batches(
                _aggregate_partition,
                batch_size=None,
                batch_format="pyarrow",
                fn_kwargs={"key": cfg.key, "key_type": key_type, "aggs": _aggregations(cfg)},
            )
            .materialize()
        )
    # A key with more than one valid label record is ambiguous: all of its label records go to quarantine.
    duplicates = {
        _text(row[cfg.key]): int(row["__base_rows"])
        for row in aggregated.map_batches(_ambiguous, batch_format="pyarrow").take_all()
    }
    if duplicates:
        dup = (
            checked_by_source[base.name]
            .map_batches(
                _duplicate_records,
                batch_format="pandas",
                fn_kwargs={"source": base.name, "field": cfg.key, "counts": duplicates},
            )
            .materialize()
        )
        n_dup = dup.count()
        bad_parts.append(dup)
        r = reconciliation[base.name]
        r.update({"ok": r["ok"] - n_dup, "quarantined": r["quarantined"] + n_dup})
    t = lap("project, shuffle by key, aggregate", t)

    quarantine = _union(bad_parts)
    # Most checked blocks hold no bad record: without coalescing, each would be a tiny file and a task.
    quarantine = quarantine.repartition(target_num_rows_per_block=QUARANTINE_BLOCK_ROWS, strict=True)
    too_bad = []
    for source in cfg.sources:
        r, total_files = reconciliation[source.name], len(files[source.name])
        if r["in"] and r["quarantined"] / r["in"] > source.max_bad_fraction:
            too_bad.append(
                f"source {source.name!r}: {r['quarantined']} of {r['in']} records failed the contract "
                f"({r['quarantined'] / r['in']:.1%} > max_bad_fraction {source.max_bad_fraction:.1%})"
            )
        elif not r["in"] and r["bad_files"] == total_files:
            # Unreadable files whose records cannot be counted: the share of records says nothing here.
            first = bad_files_by_source[source.name][0]
            too_bad.append(
                f"source {source.name!r}: none of its {total_files} file(s) can be read ({first['path']}: "
                f"{first['reason']})"
            )
    if too_bad:
        # No version: its table would train on a source the contract rejects. The quarantine is kept where
        # no reader looks for versions, so the user can see why.
        rejected = f"{writer.dataset_dir}/rejected/{version}/quarantine"
        rejected_fs, rejected_path = filesystem(rejected)
        quarantine.write_parquet(rejected_path, filesystem=rejected_fs)
        raise DataContractError(f"{'; '.join(too_bad)}; see the quarantine at {rejected}")
    quarantine.write_parquet(writer.path("quarantine"), filesystem=writer.fs)
    t = lap("write quarantine", t)

    zero_fill = [f.name for src in cfg.sources for f in src.features if f.agg in ("count", "sum")]
    table = aggregated.map_batches(
        _finalize,
        batch_format="pandas",
        fn_kwargs={
            "key": cfg.key,
            "key_type": key_type,
            "label": cfg.label,
            "label_type": pa.float64() if task == "regression" else pa.int64(),
            "features": features,
            "zero_fill": zero_fill,
        },
    ).materialize()
    schema = ",".join([cfg.key, *features, cfg.label])
    digest = _fingerprint(table, schema)
    t = lap("finalize and fingerprint", t)
    rows = table.count()
    table.write_parquet(writer.path("table"), filesystem=writer.fs)
    t = lap("write table", t)
    profile_file = writer.write_json(PROFILE, profile(table, features, cfg.label, categorical, in_driver=small))
    lap("profile", t)
    table_files = writer.files("table")
    manifest = {
        "name": cfg.name,
        "version": version,
        "fingerprint": digest,
        "rows": rows,
        "key": cfg.key,
        "label": cfg.label,
        "task": task,
        "classes": classes,
        "positive": cfg.positive,
        "features": features,
        "categories": categorical,
        "schema": schema,
        "spec_hash": _spec_hash(cfg),
        "validation_fraction": cfg.validation_fraction,
        "sources": {s.name: {"files": files[s.name], **reconciliation[s.name]} for s in cfg.sources},
        "skipped": skipped,
        "files": {
            "table_dir": f"{writer.prefix}table",
            "table": table_files,
            "quarantine_dir": f"{writer.prefix}quarantine",
            "quarantine": writer.files("quarantine"),
            "profile": profile_file,
        },
        "writer": writer.work.rsplit("/", 1)[-1],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 2),
        "seconds_by_step": seconds,
    }
    # The manifest is written last and the version published in one step (see mlplatform.data.version).
    return writer.commit(manifest)
