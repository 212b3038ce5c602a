"""The tables drift compares: a dataset version, any Parquet path, or a time window of the inference log.

A table is resolved into a `Table`: the Parquet files to read (each checked first: a truncated or corrupt
file, or a log file whose features changed, is skipped and reported, never read half-way), its features,
and how to read a log file (its ``features`` struct flattened into columns, its labels joined from the
feedback log). Reading itself is Ray Data's (`mlplatform.monitor.drift`).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from mlplatform.data.version import MANIFEST, filesystem, hidden, load_version
from mlplatform.errors import ConfigError, DataContractError
from mlplatform.serve.inference_log import FEEDBACK, LOG_FIELDS, REQUESTS, partitioning
from mlplatform.settings import platform_home

__all__ = ["Table", "resolve", "log_window", "read_feedback", "flatten_log"]

#: Columns that are never features: the log's own fields and its partitions.
NOT_FEATURES = {*LOG_FIELDS, "probabilities", "features", "label", "app", "date", "hour", "version"}


@dataclass
class Table:
    """One side of a comparison.

    Attributes:
        description: how the user named it (for the report).
        files: the readable Parquet files.
        columns: column → Arrow type, as read (a log's features already flattened).
        features: candidate features (columns that are not ids, labels or log fields).
        categorical: features the source says are categorical (a dataset version's profile).
        is_log: files are inference-log files (flatten ``features``, join labels, add ``version``).
        skipped: files left out, each ``{"path", "reason"}``.
        dataset: ``name/version`` when it is a dataset version.
        root: the inference log root, when it is a log window.
        app: the application, when it is a log window.
        window: ``{"since", "until"}`` of a log window.
    """

    description: str
    files: list[str]
    filesystem: Any
    columns: dict[str, pa.DataType]
    features: list[str]
    categorical: set[str] = field(default_factory=set)
    is_log: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)
    dataset: str | None = None
    label: str | None = None
    root: str | None = None
    app: str | None = None
    window: dict[str, str] | None = None
    model: str | None = None


def _list_parquet(path: str) -> tuple[Any, list[str]]:
    import pyarrow.fs as pafs

    fs, root = filesystem(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"{path}: no such file or folder")
    if info.type == pafs.FileType.File:
        return fs, [root]
    files = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not hidden(i.path[len(root) :])
    ]
    return fs, sorted(files)


def _schemas(fs: Any, files: list[str]) -> tuple[dict[str, pa.Schema], list[dict[str, str]]]:
    """Each readable file's schema (footers read in parallel threads); the others, with why."""
    import pyarrow.parquet as pq

    def one(path: str) -> tuple[str, pa.Schema | None, str]:
        try:
            with fs.open_input_file(path) as f:
                return path, pq.ParquetFile(f).schema_arrow, ""
        except (OSError, pa.ArrowException) as exc:
            return path, None, f"unreadable Parquet file: {type(exc).__name__}: {str(exc)[:200]}"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, files))
    good = {p: s for p, s, _ in results if s is not None}
    return good, [{"path": p, "reason": why} for p, s, why in results if s is None]


def _columns(schema: pa.Schema) -> dict[str, pa.DataType]:
    """Columns as read: a log's ``features`` struct becomes one column per feature."""
    out: dict[str, pa.DataType] = {}
    for f in schema:
        if f.name == "features" and pa.types.is_struct(f.type):
            out.update({c.name: c.type for c in f.type})
        else:
            out[f.name] = f.type
    return out


def _consistent(
    fs: Any, files: list[str], description: str
) -> tuple[list[str], dict[str, pa.DataType], list[dict[str, str]]]:
    """Readable files that share the most common schema; the rest are skipped with the reason."""
    schemas, skipped = _schemas(fs, files)
    if not schemas:
        why = f" ({len(skipped)} unreadable)" if skipped else ""
        first = f": {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""
        raise DataContractError(f"{description}: no readable Parquet file{why}{first}")
    keyed = {p: tuple((n, str(t)) for n, t in _columns(s).items()) for p, s in schemas.items()}
    common, _ = Counter(keyed.values()).most_common(1)[0]
    columns = dict(_columns(schemas[next(p for p, k in keyed.items() if k == common)]))
    good = []
    for path in files:
        if path not in keyed:
            continue
        if keyed[path] == common:
            good.append(path)
            continue
        mine = dict(keyed[path])
        gone = sorted(set(dict(common)) - set(mine))
        new = sorted(set(mine) - set(dict(common)))
        changed = sorted(c for c in set(mine) & set(dict(common)) if mine[c] != dict(common)[c])
        parts = [
            f"missing {gone}" if gone else "",
            f"extra {new}" if new else "",
            f"retyped {changed}" if changed else "",
        ]
        skipped.append({"path": path, "reason": "schema changed: " + ", ".join(p for p in parts if p)})
    return good, columns, skipped


def resolve(spec: str, *, log_root: str | None = None, since: timedelta | None = None, until=None) -> Table:
    """A table from what a user typed: ``log:<app>`` (with `since`), a dataset version folder, or a Parquet path.

    Raises:
        ConfigError: nothing there.
        DataContractError: nothing readable there, or an empty log window.
    """
    if spec.startswith("log:"):
        return log_window(spec[4:], root=log_root, since=since or timedelta(hours=24), until=until)
    fs, root = filesystem(spec)
    try:
        has_manifest = fs.get_file_info(f"{root.rstrip('/')}/{MANIFEST}").is_file
    except OSError:
        has_manifest = False
    if has_manifest:
        return _dataset(spec)
    fs, files = _list_parquet(spec)
    if not files:
        raise DataContractError(f"{spec}: no Parquet files (hidden and _-prefixed ones are not read)")
    good, columns, skipped = _consistent(fs, files, spec)
    is_log = "features" in {f.name for f in _first_schema(fs, good)} and "request_id" in columns
    return Table(spec, good, fs, columns, [c for c in columns if c not in NOT_FEATURES], is_log=is_log, skipped=skipped)


def _first_schema(fs: Any, files: list[str]) -> pa.Schema:
    import pyarrow.parquet as pq

    with fs.open_input_file(files[0]) as f:
        return pq.ParquetFile(f).schema_arrow


def _dataset(path: str) -> Table:
    version = load_version(path)
    fs, _ = filesystem(path)
    files = version.table_files
    good, columns, skipped = _consistent(fs, files, path)
    if skipped:
        raise DataContractError(f"dataset version {path} is damaged: {skipped[0]['path']}: {skipped[0]['reason']}")
    categorical: set[str] = set()
    try:
        profile = version.profile()
        categorical = {n for n, s in profile.get("features", {}).items() if s.get("kind") == "categorical"}
    except (OSError, ValueError):
        pass  # no profile: kinds come from the column types
    return Table(
        path,
        good,
        fs,
        columns,
        list(version.features),
        categorical=categorical,
        dataset=f"{version.manifest['name']}/{version.version}",
        label=version.label,
    )


def log_window(app: str, *, root: str | None = None, since: timedelta, until: datetime | None = None) -> Table:
    """The inference log of `app` written in the last `since` (up to `until`, default now), by partition.

    Raises:
        DataContractError: no log for `app`, or no rows in the window.
    """
    import pyarrow.fs as pafs

    root = (root or str(platform_home() / "inference_log")).rstrip("/")
    fs, base = filesystem(f"{root}/{REQUESTS}/app={app}")
    end = until or datetime.now(timezone.utc)
    start = end - since
    # Hours the window touches: partitions outside them are not even listed.
    hours = set()
    t = start.replace(minute=0, second=0, microsecond=0)
    while t <= end:
        hours.add((f"{t:%Y-%m-%d}", f"{t:%H}"))
        t += timedelta(hours=1)
    window = {"since": start.isoformat(), "until": end.isoformat()}
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        raise DataContractError(f"no inference log for application {app!r} under {root} (is inference_log set?)")
    files = []
    for date, hour in sorted(hours):
        folder = f"{base}/date={date}/hour={hour}"
        if fs.get_file_info(folder).type == pafs.FileType.NotFound:
            continue  # a missing partition is an hour without traffic
        for i in fs.get_file_info(pafs.FileSelector(folder, recursive=True)):
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not hidden(i.base_name):
                files.append(i.path)
    if not files:
        raise DataContractError(
            f"the inference log of {app!r} has no rows between {start:%Y-%m-%d %H:%M} and {end:%H:%M} UTC: "
            "no drift can be claimed on an empty window"
        )
    good, columns, skipped = _consistent(fs, sorted(files), f"log:{app}")
    return Table(
        f"log:{app}",
        good,
        fs,
        columns,
        [c for c in columns if c not in NOT_FEATURES],
        is_log=True,
        skipped=skipped,
        root=root,
        app=app,
        window=window,
    )


def read_feedback(table: Table) -> pa.Table | None:
    """The labels of a log window's requests (request_id, row, label; the first label of a pair wins)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    if not table.is_log or table.root is None or table.app is None:
        return None
    fs, base = filesystem(f"{table.root}/{FEEDBACK}/app={table.app}")
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return None
    files = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not hidden(i.base_name)
    ]
    good, _ = _schemas(fs, files)
    if not good:
        return None
    labels = pads.dataset(
        sorted(good), filesystem=fs, format="parquet", partitioning=partitioning(FEEDBACK), partition_base_dir=base
    ).to_table(columns=["request_id", "row", "label", "ts"])
    # The first label of a (request, row) wins, as the endpoint answered "duplicate" to the later ones.
    first: dict[tuple[str, int], float] = {}
    for r in labels.sort_by([("ts", "ascending")]).to_pylist():
        first.setdefault((r["request_id"], r["row"]), r["label"])
    return pa.table(
        {
            "request_id": pa.array([k[0] for k in first], pa.string()),
            "row": pa.array([k[1] for k in first], pa.int32()),
            "label": pa.array(list(first.values()), pa.float64()),
        }
    )


def flatten_log(batch: pa.Table, labels: pa.Table | None) -> pa.Table:
    """A batch of log rows as a flat table: the features as columns, ``label`` joined, and ``version`` read
    from the file's partition (a ``path`` column, as Ray Data's ``include_paths`` adds)."""
    import pyarrow.compute as pc

    columns: dict[str, Any] = {}
    for name in batch.column_names:
        col = batch[name]
        if name == "features":
            struct = col.combine_chunks()
            for i, f in enumerate(struct.type):
                columns[f.name] = struct.field(i)
        elif name == "path":
            # Ray Data's paths are text; an in-process read's are a dictionary column (`with_path`).
            text = col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
            columns["version"] = pc.extract_regex(text, r"version=(?P<v>[^/]+)").combine_chunks().field(0)
        else:
            columns[name] = col
    flat = pa.table(columns)
    if labels is not None and labels.num_rows:
        # Arrow joins carry no list column (a multiclass model's probabilities): it follows by row number.
        lists = [
            n
            for n in flat.column_names
            if pa.types.is_list(flat.schema.field(n).type) or pa.types.is_fixed_size_list(flat.schema.field(n).type)
        ]
        held = flat.select(lists)
        flat = flat.drop_columns(lists).append_column("__row", pa.array(np.arange(flat.num_rows)))
        flat = flat.join(labels, ["request_id", "row"], join_type="left outer")
        at = flat["__row"]
        flat = flat.drop_columns(["__row"])
        for n in lists:
            flat = flat.append_column(n, held[n].take(at))
    elif "request_id" in flat.column_names:
        flat = flat.append_column("label", pa.nulls(flat.num_rows, pa.float64()))
    return flat
