"""Parquet files: typed columns, read as they are; the contract still checks every value."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from mlplatform.data.contract import FILE
from mlplatform.data.sources import SourceKind, register


@register
class ParquetKind(SourceKind):
    name = "parquet"

    def probe(self, fs: Any, path: str) -> tuple[str, list[dict[str, str]]]:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata  # a truncated file has no valid footer: this raises
        return ("" if meta.num_columns else "Parquet file without columns"), []

    def read(self, source: Any, paths: list[str]) -> Any:
        import ray.data

        return ray.data.read_parquet(paths, columns=list(source.fields), include_paths=True)

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        return batch.rename(columns={"path": FILE})
