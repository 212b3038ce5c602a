"""CSV files with a header row: every field read as text, so the contract, not type inference, decides what is bad."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mlplatform.data.contract import FILE
from mlplatform.data.sources import Probe, SourceKind, column_problem, register, utf8_problem


def _skip_row(row: Any) -> str:
    return "skip"  # the probe found it and quarantines it (CsvKind.probe)


def _header(fs: Any, path: str) -> list[str]:
    """The column names of a CSV file's header, as written (a name twice included)."""
    with fs.open_input_stream(path) as f:
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=1 << 16),
            parse_options=pacsv.ParseOptions(invalid_row_handler=_skip_row),
        )
        return reader.schema.names


def _options(source: Any) -> tuple[pacsv.ConvertOptions, pacsv.ParseOptions]:
    """Every field as text (the contract decides what is bad), rows the probe quarantined skipped."""
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in source.fields},
        include_columns=list(source.fields),
        include_missing_columns=True,
        strings_can_be_null=False,
    )
    return convert, pacsv.ParseOptions(invalid_row_handler=_skip_row)


@register
class CsvKind(SourceKind):
    name = "csv"

    def probe(self, fs: Any, path: str, source: Any) -> Probe:
        """Not UTF-8, a header without a required field's column (or with a name twice), no record at all; or
        rows whose number of columns is not the header's: pyarrow's reader (and so Ray's) would fail the whole
        file on one such row; the reader skips them and the quarantine gets them."""
        text = utf8_problem(fs, path)
        if text.reason:
            return text._replace(rows=max(0, (text.rows or 0) - 1))  # the header is not a record
        bad: list[dict[str, str]] = []

        def collect(row: Any) -> str:
            bad.append(
                {
                    "reason": f"malformed CSV row: expected {row.expected_columns} columns, got {row.actual_columns}",
                    "record": row.text,
                }
            )
            return "skip"

        with fs.open_input_stream(path) as f:
            reader = pacsv.open_csv(
                f,
                parse_options=pacsv.ParseOptions(invalid_row_handler=collect),
                # Converting one column is enough: the row check happens while parsing, before conversion.
                convert_options=pacsv.ConvertOptions(include_columns=["__none__"], include_missing_columns=True),
            )
            rows = sum(batch.num_rows for batch in reader)
        problem = column_problem(_header(fs, path), source)
        if problem:
            return Probe(problem, [], rows + len(bad))
        if not rows and not bad:
            return Probe("no records: the file holds a header only", [], 0)
        return Probe("", bad)

    def read(self, source: Any, paths: list[str]) -> Any:
        import ray.data

        convert, parse = _options(source)
        return ray.data.read_csv(paths, convert_options=convert, parse_options=parse, include_paths=True)

    def read_file(self, fs: Any, path: str, source: Any) -> pa.Table:
        convert, parse = _options(source)
        with fs.open_input_stream(path) as f:
            return pacsv.read_csv(f, convert_options=convert, parse_options=parse)

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        return batch.rename(columns={"path": FILE})
