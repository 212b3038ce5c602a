"""The few Ray Dataset operations ingest uses, on one in-memory Arrow table, run in this process.

Why: each Ray Data execution costs a second or more before it does any work (the executor, task scheduling,
worker processes that import pandas and this package), and an ingest runs a dozen of them. For a small input
that start-up was most of the time: the demo's 5 000 customers took 16 s, 14 of them in "read and check".
Ingest runs the same plan — the same functions, in the same order — on a `LocalDataset` instead, so the two
paths cannot drift apart; `tests/integration/test_ingest.py` holds them to the same table bit for bit.

Training's read, batch scoring and drift's reads use the same size line (`SMALL_INPUT_BYTES`) to read in-process.

Only the forms ingest calls are implemented; anything else fails loudly (AttributeError) rather than
approximating Ray's behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.data.version import filesystem

__all__ = [
    "LocalDataset",
    "as_pandas",
    "read_parquet",
    "with_path",
    "SMALL_INPUT_BYTES",
    "one_node",
    "available_memory",
    "ingest_in_process",
]

#: Inputs up to this many bytes are "small": ingest, the training read, batch scoring and drift read them in the
#: job's own process instead of through Ray Data, whose start-up per operation costs more than their work.
SMALL_INPUT_BYTES = 64 * 1024 * 1024
#: An ingest in one process holds up to about this many times its input in memory (measured: 3.2 GB at the peak
#: for 267 MB of demo-shaped input, 12x); a bigger input than the node's free memory allows goes through Ray Data,
#: which streams it.
INGEST_MEMORY_FACTOR = 16


def one_node() -> bool:
    """Whether the Ray cluster this process is connected to is one node: Ray Data would only spread the work over
    the cores of the process's own machine, paying its fixed costs per operation and a shuffle for it."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive")) == 1


def available_memory() -> int:
    """Bytes of memory this machine (or its container's limit) has available now; 0 where it cannot be read."""
    free = 0
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # free pages only (not on macOS)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                free = min(free, int(limit) - int(f.read().strip()))
    except (OSError, StopIteration, ValueError):
        pass
    return free


def ingest_in_process(size: int) -> bool:
    """Whether an ingest of `size` input bytes runs in this process: a small input always; a bigger one on a
    one-node cluster when the memory available holds `INGEST_MEMORY_FACTOR` times the input (on 2 cores, 500 000
    demo customers took 44 s through Ray Data and 18 s here)."""
    return size <= SMALL_INPUT_BYTES or (one_node() and size * INGEST_MEMORY_FACTOR <= available_memory())


def as_pandas(table: pa.Table) -> pd.DataFrame:
    """A pandas batch exactly as Ray Data hands it to `map_batches` (Ray 2.56+: Arrow-backed dtypes, so an int
    column with nulls stays int): the functions see the same values on either path."""
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(table).to_pandas()


def with_path(table: pa.Table, path: str) -> pa.Table:
    """`table` with its file in a ``path`` column, as Ray Data's ``include_paths`` adds it — dictionary-encoded: the
    same text on every row (a string per row was 1 GB of 16 M readings' paths)."""
    import numpy as np

    codes = pa.array(np.zeros(table.num_rows, dtype=np.int8))
    return table.append_column("path", pa.DictionaryArray.from_arrays(codes, pa.array([path], pa.string())))


def read_parquet(
    paths: list[str], *, fs: Any = None, columns: list[str] | None = None, with_paths: bool = False
) -> pa.Table:
    """Parquet files read in this process, in threads (pyarrow releases the GIL), as one table.

    Each file is read as itself, without partition columns (as Ray's reads here are told: partitioning=None).

    Args:
        fs: the filesystem holding every path; None resolves each path (a local path or a URI).
        with_paths: each row's file in ``path`` (`with_path`).
    """

    def one(path: str) -> pa.Table:
        where, inner = (fs, path) if fs is not None else filesystem(path)
        with where.open_input_file(inner) as f:
            table = pq.ParquetFile(f).read(columns=columns)
        return with_path(table, path) if with_paths else table

    with ThreadPoolExecutor(max_workers=8) as pool:
        return pa.concat_tables(list(pool.map(one, paths)), promote_options="permissive")


def _as_arrow(frame: pd.DataFrame) -> pa.Table:
    """A pandas batch's result as Ray Data turns it into a block."""
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(frame).to_arrow()


class LocalDataset:
    """One Arrow table with Ray Dataset's method names; every operation runs at once, in this process."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    @property
    def table(self) -> pa.Table:
        return self._table

    def map_batches(
        self, fn: Callable[..., Any], *, batch_format: str, fn_kwargs: dict[str, Any] | None = None, **_: Any
    ) -> LocalDataset:
        """`fn` on the whole table as one batch (Ray's batch size only splits the work; every caller here
        gives the same answer for any split — the fingerprint test checks it)."""
        batch = as_pandas(self._table) if batch_format == "pandas" else self._table
        out = fn(batch, **(fn_kwargs or {}))
        return LocalDataset(_as_arrow(out) if isinstance(out, pd.DataFrame) else out)

    def repartition(self, *_: Any, **__: Any) -> LocalDataset:
        return self  # one block already holds every key

    def union(self, *others: LocalDataset) -> LocalDataset:
        return LocalDataset(pa.concat_tables([self._table, *(o._table for o in others)]))

    def groupby(self, key: str) -> _Grouped:
        return _Grouped(self._table, key)

    def materialize(self) -> LocalDataset:
        return self

    def count(self) -> int:
        return self._table.num_rows

    def take_all(self) -> list[dict[str, Any]]:
        return self._table.to_pylist()

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        return iter(self._table.to_pylist())

    def to_pandas(self) -> pd.DataFrame:
        return as_pandas(self._table)

    def write_parquet(self, path: str, *, filesystem: Any) -> None:
        """One Parquet file in the folder `path`; nothing at all for an empty table (as Ray writes)."""
        if self._table.num_rows:
            filesystem.create_dir(path, recursive=True)
            pq.write_table(self._table, f"{path}/part-00000.parquet", filesystem=filesystem)


class _Grouped:
    def __init__(self, table: pa.Table, key: str) -> None:
        self._table, self._key = table, key

    def count(self) -> LocalDataset:
        """One row per value of the key, with Ray's column name for the count."""
        counted = self._table.group_by(self._key).aggregate([([], "count_all")])
        return LocalDataset(pa.table({self._key: counted[self._key], "count()": counted["count_all"]}))
