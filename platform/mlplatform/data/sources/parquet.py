"""Parquet files: typed columns, read as they are; the contract still checks every value."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.data.contract import FILE
from mlplatform.data.sources import Probe, SourceKind, column_problem, register


@register
class ParquetKind(SourceKind):
    name = "parquet"

    def probe(self, fs: Any, path: str, source: Any) -> Probe:
        """A footer that does not parse (a truncated file), or data pages that do not: reading the file whole
        here means a corrupt page quarantines its file instead of failing the read of every file; with a
        valid footer its row count is known."""
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)  # a truncated file has no valid footer: this raises
            meta = parquet.metadata
            if not meta.num_columns:
                return Probe("Parquet file without columns")
            # The reader selects the source's fields by name: a missing one would fail every file's read.
            problem = column_problem(parquet.schema_arrow.names, source, optional_may_miss=False)
            if problem:
                return Probe(problem, [], meta.num_rows)
            try:
                for _ in parquet.iter_batches(batch_size=65536):
                    pass
            except (OSError, pa.ArrowException) as exc:
                return Probe(f"unreadable parquet data: {exc}"[:500], [], meta.num_rows)
        return Probe()

    def read(self, source: Any, paths: list[str]) -> Any:
        import ray.data

        return ray.data.read_parquet(paths, columns=list(source.fields), include_paths=True)

    def read_file(self, fs: Any, path: str, source: Any) -> pa.Table:
        return pq.read_table(path, filesystem=fs, columns=list(source.fields))

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        return batch.rename(columns={"path": FILE})
