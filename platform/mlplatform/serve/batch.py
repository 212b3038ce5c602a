"""Batch scoring: a registered version over a whole file with Ray Data (`mlplatform predict`, jobs/predict.py).

On a cluster of several nodes the input's rows stream through ``map_batches`` on a pool of actors; each actor
loads the booster once (from bytes shipped through the object store, not once per actor from MLflow) and
predicts one batch per call with ``inplace_predict``. An input of at most `SMALL_INPUT_BYTES`, or any input on
a one-node cluster, streams through the same `_Scorer` in the job's own process instead, batch by batch
(memory stays one batch deep whatever the file's size), with XGBoost's threads on the node's free CPUs
(``--distributed`` forces the pool): the pool's fixed costs — Ray Data's file listing, worker processes that
import XGBoost, the write — took 30 s for 1 500 rows that score in milliseconds, and on one node the pool
reached 0.21× a plain `inplace_predict` loop at 2 M rows (2026-11-27).

Raw values are encoded exactly as the endpoint encodes them: numbers as float32, a categorical's raw value as
its code in the version's input schema, missing as NaN. So one row scores identically both ways.

Nothing is dropped: a row that cannot be scored (a category training never saw, text in a numeric
feature) is written with a null prediction and its reason in ``error``. The output is Parquet: the key,
``prediction`` (binary: the probability of the positive class; regression: the value; multiclass: the likeliest
class, with every class's probability in ``probabilities``), ``model_version`` and ``error``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlplatform import registry
from mlplatform.data.local import SMALL_INPUT_BYTES, one_node
from mlplatform.data.schema import SCHEMA_FILE, InputSchema
from mlplatform.data.version import filesystem, load_version
from mlplatform.errors import ConfigError, DataContractError, PlatformError

__all__ = ["ModelRef", "BatchResult", "parse_model_ref", "score", "score_here", "encode"]

#: Rows per `inplace_predict` call: large enough that XGBoost's per-call cost vanishes, small enough to stream.
BATCH_ROWS = 65_536
#: CPUs of each read task. Ray Data's default (one) next to actors that hold whole CPUs, on a node where Serve
#: replicas hold fractions, leaves the reads waiting forever for a CPU that never frees (it hung a test).
READ_CPUS = 0.25
#: Ray Data's file-listing task asks for a whole CPU whatever the read asks (Ray 2.60); the pool's actors start
#: first, so they must leave it one, or nothing is ever read (it hung CI).
LIST_CPUS = 1.0


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def parse_model_ref(text: str) -> ModelRef:
    """``churn@champion`` (an alias), ``churn/3`` (a version) or ``churn`` (its champion).

    Raises:
        ConfigError: anything else.
    """
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:@([A-Za-z0-9_-]+)|/v?(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--model {text!r}: write NAME@ALIAS (churn@champion), NAME/VERSION (churn/3) or NAME")
    name, alias, version = m.groups()
    return ModelRef(name, version=version, alias=alias if alias or version else "champion")


@dataclass(frozen=True)
class BatchResult:
    model: str
    version: str
    rows: int
    errors: int
    out: str
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def encode(batch: pa.Table, features: list[str], categories: dict[str, list[str]]) -> tuple[np.ndarray, dict[int, str]]:
    """A batch of raw rows as the float32 matrix the endpoint would build, and the rows that cannot be scored
    (row index → why; rare, so kept sparse).

    A numeric feature takes numbers (or text that is a number, as a CSV holds them); a categorical takes one
    of its categories; null is missing (NaN: XGBoost learned where missing values go).
    """
    n = batch.num_rows
    x = np.empty((n, len(features)), dtype=np.float32)
    errors: dict[int, str] = {}
    for j, name in enumerate(features):
        col = batch[name].combine_chunks()
        if name in categories:
            text = col.cast(pa.string())
            codes = pc.index_in(text, value_set=pa.array(categories[name], pa.string()))
            unknown = pc.and_(pc.is_valid(text), pc.is_null(codes)).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(unknown).tolist():
                errors.setdefault(i, f"{name}: {text[i].as_py()!r} is not one of {categories[name][:20]}")
            x[:, j] = codes.cast(pa.float32()).to_numpy(zero_copy_only=False)
            continue
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            numbers = np.full(n, np.nan, dtype=np.float64)
            for i, value in enumerate(col.to_pylist()):
                if value is None or value == "":
                    continue
                try:
                    numbers[i] = float(value)
                except ValueError:
                    errors.setdefault(i, f"{name}: {value!r} is not a number")
            x[:, j] = numbers
        elif pa.types.is_floating(col.type):
            x[:, j] = col.to_numpy(zero_copy_only=False)  # nulls come out as NaN
        else:
            x[:, j] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return x, errors


class _Scorer:
    """One actor of the pool: the booster, loaded once from its bytes; scores a batch per call."""

    def __init__(
        self,
        raw: Any,
        features: list[str],
        categories: dict[str, list[str]],
        key: str,
        version: str,
        classes: list[str] | None = None,
    ):
        import ray

        from mlplatform.xgb import xgboost

        xgb = xgboost()

        self.booster = xgb.Booster()
        self.booster.load_model(bytearray(ray.get(raw) if isinstance(raw, ray.ObjectRef) else raw))
        self.features, self.categories, self.key, self.version = features, categories, key, version
        self.classes = classes or []

    def __call__(self, batch: pa.Table) -> pa.Table:
        x, errors = encode(batch, self.features, self.categories)
        scores = np.asarray(self.booster.inplace_predict(x), dtype=np.float64)
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        bad[list(errors)] = True
        out: dict[str, Any] = {self.key: batch[self.key]}
        if scores.ndim == 2:  # multiclass: the likeliest class by its raw value, and every class's probability
            names = np.asarray(self.classes or [str(c) for c in range(scores.shape[1])], dtype=object)
            out["prediction"] = pa.array(names[scores.argmax(axis=1)], pa.string(), mask=bad)
            out["probabilities"] = pa.array(
                [None if b else row.tolist() for row, b in zip(scores, bad, strict=True)], pa.list_(pa.float64())
            )
        else:
            out["prediction"] = pa.array(scores, mask=bad)
        out["model_version"] = pa.repeat(pa.scalar(self.version, pa.string()), n)
        out["error"] = pa.array([errors.get(i) for i in range(n)], pa.string()) if errors else pa.nulls(n, pa.string())
        return pa.table(out)


def _training_key(name: str, version: str, tracking_uri: str | None) -> str | None:
    """The key column of the data set the version was trained on (its lineage tags), if it can be read."""
    try:
        model_version = registry.client(tracking_uri).get_model_version(name, version)
        run = registry.client(tracking_uri).get_run(model_version.run_id)
        return load_version(run.data.tags["mlplatform.dataset.path"]).key
    except Exception:  # any failure means "unknown": the caller then asks for --key
        return None


def _input_kind(path: str) -> tuple[str, int]:
    """("csv" | "parquet", bytes) of an input file or folder of Parquet files.

    Raises:
        ConfigError: neither.
    """
    import pyarrow.fs as pafs

    fs, inner = filesystem(path)
    info = fs.get_file_info(inner)
    lower = path.lower().rstrip("/")
    if info.type == pafs.FileType.Directory:
        files = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        return "parquet", sum(f.size or 0 for f in files if f.type == pafs.FileType.File)
    if info.type == pafs.FileType.File and lower.endswith((".csv", ".csv.gz")):
        return "csv", info.size or 0
    if info.type == pafs.FileType.File and lower.endswith(".parquet"):
        return "parquet", info.size or 0
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"--input {path}: no such file or folder")
    raise ConfigError(f"--input {path}: a .csv or .parquet file (or a folder of Parquet files) is expected")


def _read(path: str, kind: str) -> Any:
    import ray.data

    fs = filesystem(path)[0] if "://" in path else None
    reader = ray.data.read_csv if kind == "csv" else ray.data.read_parquet
    return reader(path, filesystem=fs, num_cpus=READ_CPUS)


def _parquet_dataset(fs: Any, inner: str) -> Any:
    """A Parquet file or folder as Ray Data's reader sees it: the ``.parquet`` files (hidden and ``_`` files
    skipped) in path order, with hive partition columns (``day=3/``) as columns."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    # pre_buffer (pyarrow's default) keeps every row group it read until the file is closed: 3.2 GiB of memory
    # to stream a 3 GiB file (2026-11-28).
    options = pads.ParquetFragmentScanOptions(pre_buffer=False)
    parquet = pads.ParquetFileFormat(default_fragment_scan_options=options)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return pads.dataset(inner, filesystem=fs, format=parquet)
    found = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    files = sorted(
        f.path
        for f in found
        if f.type == pafs.FileType.File
        and f.base_name.lower().endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in f.path[len(inner) :].split("/") if part)
    )
    return pads.dataset(files, filesystem=fs, format=parquet, partitioning="hive", partition_base_dir=inner)


def _columns(path: str, kind: str) -> list[str]:
    """The input's column names, from a Parquet footer or a CSV's header (nothing else is read)."""
    fs, inner = filesystem(path)
    if kind == "csv":
        with fs.open_input_stream(inner, compression="detect") as f:
            return _open_csv(f).schema.names
    return _parquet_dataset(fs, inner).schema.names


def _open_csv(f: Any) -> Any:
    import pyarrow.csv as pacsv

    # Ray Data's CSV reader streams with pyarrow's defaults (types inferred from the first block): the same here.
    return pacsv.open_csv(f)


def _stream(path: str, kind: str, columns: list[str], batch_rows: int) -> Iterator[pa.Table]:
    """The input's `columns`, batch by batch, as pyarrow types them (a CSV of up to `SMALL_INPUT_BYTES` from all
    its rows; a larger one from its first block, as Ray Data's reader does); an input without rows gives one
    empty batch, so that the output still says what its columns are."""
    fs, inner = filesystem(path)
    batches = _csv_batches(fs, inner, batch_rows) if kind == "csv" else _parquet_batches(fs, inner, columns, batch_rows)
    first = next(batches, None)  # both readers first yield an empty batch that carries the input's schema
    if first is None:
        return
    given = False
    for batch in batches:
        if batch.num_rows:
            given = True
            yield pa.Table.from_batches([batch]).select(columns)
    if not given:
        yield pa.Table.from_batches([first]).select(columns)


def _csv_batches(fs: Any, inner: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    with fs.open_input_stream(inner, compression="detect") as f:
        if (fs.get_file_info(inner).size or 0) <= SMALL_INPUT_BYTES:
            # Read whole, so column types are inferred from every row (a column of integers with one decimal
            # further down is a float column, not a failed read), then scored batch by batch.
            table = pacsv.read_csv(f)
            yield pa.RecordBatch.from_pylist([], schema=table.schema)
            yield from table.to_batches(max_chunksize=batch_rows)
            return
        reader = _open_csv(f)
        yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        try:
            yield from reader
        except pa.ArrowInvalid as exc:
            raise DataContractError(
                f"{inner}: {exc} (a CSV this large streams, so each column's type comes from its first 1 MB: "
                "write the column the same way throughout, or convert the file to Parquet)"
            ) from None


def _parquet_batches(fs: Any, inner: str, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    dataset = _parquet_dataset(fs, inner)
    yield pa.RecordBatch.from_pylist([], schema=dataset.schema)
    # In path order, each file in order. Read-ahead kept short and single-threaded: with the defaults (16 batches,
    # 4 files, threads) 790 MiB of a 3 GiB file waited for the scorer; so 160 MiB, at the same speed (2026-11-28).
    yield from dataset.to_batches(
        columns=columns, batch_size=batch_rows, batch_readahead=2, fragment_readahead=1, use_threads=False
    )


def _in_process(size: int, distributed: bool, gpus: float) -> bool:
    """Whether to score in the job's process: a small input, or any input on a one-node cluster (where an actor
    pool only adds Ray Data's fixed costs on the same cores). GPU scoring is always a pool of GPU actors."""
    if distributed or gpus:
        return False
    return size <= SMALL_INPUT_BYTES or one_node()


def score_here(
    scorer: _Scorer, input_path: str, kind: str, columns: list[str], out_path: str, batch_rows: int = BATCH_ROWS
) -> tuple[int, int]:
    """Score the input in this process, streamed, into `out_path`; (rows, rows that could not be scored).

    XGBoost's threads are the CPUs Ray has free on this node (Serve replicas keep theirs), at least one.
    """
    import ray

    free = ray.available_resources().get("CPU", 1.0) if ray.is_initialized() else float(os.cpu_count() or 1)
    scorer.booster.set_param({"nthread": max(1, min(os.cpu_count() or 1, int(free)))})
    out_fs, out_inner = filesystem(out_path)
    return _write(scorer, _stream(input_path, kind, columns, batch_rows), out_fs, out_inner)


def _write(scorer: _Scorer, batches: Iterator[pa.Table], out_fs: Any, out_inner: str) -> tuple[int, int]:
    """Score batch by batch into one Parquet file; (rows, rows that could not be scored)."""
    out_fs.create_dir(out_inner, recursive=True)
    rows = errors = 0
    writer = None
    with out_fs.open_output_stream(f"{out_inner.rstrip('/')}/part-00000.parquet") as sink:
        for batch in batches:
            scored = scorer(batch)
            writer = writer or pq.ParquetWriter(sink, scored.schema)
            writer.write_table(scored.cast(writer.schema))
            rows, errors = rows + scored.num_rows, errors + scored.num_rows - scored["error"].null_count
        if writer is not None:
            writer.close()
    return rows, errors


def score(
    model: ModelRef,
    input_path: str,
    out_path: str,
    *,
    key: str | None = None,
    tracking_uri: str | None = None,
    concurrency: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    batch_rows: int = BATCH_ROWS,
    distributed: bool = False,
) -> BatchResult:
    """Score every row of `input_path` with `model`; write Parquet to `out_path` (a new folder).

    Args:
        key: the column identifying a row, copied to the output (default: the training data set's key).
        distributed: score on an actor pool whatever the input's size (a small input, else, is scored in this
            process; GPU actors always are a pool).
        concurrency: most actors in the pool (default: one per CPU of the cluster).
        cpus_per_actor: each actor's CPUs (its XGBoost threads, rounded, at least one). Default: the free CPUs
            less the file listing's and a read's, split over one actor per free CPU (Ray's CPUs are for
            placement: each actor scores with one thread whatever fraction it holds).
        gpus_per_actor: GPUs of each actor; XGBoost then predicts with device cuda.

    Raises:
        RegistryError: no such model, version or alias.
        ConfigError: the output exists, or the input is not a CSV/Parquet file.
        DataContractError: the input lacks a feature or the key column.
    """
    import ray
    import ray.data

    started = time.time()
    version = registry.resolve_version(model.name, model.version, model.alias, tracking_uri=tracking_uri)
    features = registry.model_features(model.name, version, tracking_uri=tracking_uri)
    text = registry.model_extra_file(model.name, version, SCHEMA_FILE, tracking_uri=tracking_uri)
    served = InputSchema.model_validate_json(text) if text else None
    categories = served.categories() if served else {}
    key = key or _training_key(model.name, version, tracking_uri)

    out_fs, out_inner = filesystem(out_path)
    info = out_fs.get_file_info(out_inner)
    if info.type.name == "File" or (info.type.name == "Directory" and out_fs.get_file_info(_selector(out_inner))):
        raise ConfigError(f"--out {out_path} already exists; choose a new folder (nothing is overwritten)")

    kind, size = _input_kind(input_path)
    local = _in_process(size, distributed, gpus_per_actor)
    # From the header or footer, not Ray Data's schema(): that runs the read once more just to name the columns.
    columns = _columns(input_path, kind)
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataContractError(
            f"{input_path} has no column for feature(s) {missing} of {model.name} v{version} (it has {columns[:30]})"
        )
    if not key or key not in columns:
        raise DataContractError(
            f"{input_path} has no key column {key!r}: pass --key COLUMN, the column that identifies each row "
            "(rows are scored in parallel, so the output is matched to the input by it)"
        )
    classes = served.classes if served else []
    wanted = list(dict.fromkeys([key, *features]))
    if local:
        booster = registry.load_booster(registry.model_uri(model.name, version), tracking_uri)
        scorer = _Scorer(bytes(booster.save_raw("ubj")), features, categories, key, version, classes)
        rows, errors = score_here(scorer, input_path, kind, wanted, out_path, batch_rows)
        return BatchResult(str(model), version, rows, errors, out_path, round(time.time() - started, 2))
    free = float(ray.available_resources().get("CPU", 0.0))
    reserved = LIST_CPUS + READ_CPUS
    if cpus_per_actor is None:
        cpus_per_actor = round(max(0.05, free - reserved) / max(1, round(free)), 3)
    if free < cpus_per_actor + reserved:
        raise PlatformError(
            f"batch scoring needs {cpus_per_actor + reserved:g} free CPUs (an actor, Ray Data's file listing and a "
            f"read) and the cluster has {free:g} free (Serve replicas and running jobs hold the rest): lower "
            "--cpus-per-actor, or free CPUs"
        )
    booster = registry.load_booster(registry.model_uri(model.name, version), tracking_uri)
    if gpus_per_actor:
        booster.set_param({"device": "cuda"})
    booster.set_param({"nthread": max(1, round(cpus_per_actor))})
    raw = ray.put(bytes(booster.save_raw("ubj")))
    # The pool starts with as many actors as the free CPUs hold (at least one) and grows to `concurrency`
    # (default: as many as the cluster's CPUs hold), so it takes nodes the autoscaler adds.
    cores = int(ray.cluster_resources().get("CPU", 1))
    most = concurrency or max(1, min(cores, int((cores - READ_CPUS) // cpus_per_actor)))
    start = max(1, min(most, int((free - reserved) // cpus_per_actor + 1e-9)))
    scored = (
        _read(input_path, kind)
        .select_columns(list(dict.fromkeys([key, *features])))
        .map_batches(
            _Scorer,
            fn_constructor_kwargs={
                "raw": raw,
                "features": features,
                "categories": categories,
                "key": key,
                "version": version,
                "classes": classes,
            },
            batch_format="pyarrow",
            batch_size=batch_rows,
            compute=ray.data.ActorPoolStrategy(min_size=start, max_size=most),
            num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
        )
    )
    scored.write_parquet(out_inner, filesystem=out_fs)
    rows, errors = _tally(out_fs, out_inner)
    return BatchResult(str(model), version, rows, errors, out_path, round(time.time() - started, 2))


def _tally(fs: Any, inner: str) -> tuple[int, int]:
    """Rows written, and rows that could not be scored, from the written files: their footers' row counts and
    the `error` column's statistics (read only where a file has none), not a second Ray Data pass."""
    import pyarrow.dataset as pads

    written = _parquet_dataset(fs, inner)
    return written.count_rows(), written.count_rows(filter=pads.field("error").is_valid())


def _selector(path: str) -> Any:
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, recursive=False)


def absolute(path: str) -> str:
    """A local path made absolute (a job runs in its uploaded working dir); a URI as it is."""
    return path if "://" in path else os.path.abspath(path)
