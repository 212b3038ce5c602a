"""JSON lines: one JSON object per line, fields taken by dotted path; one broken line is one bad record.

Lines are parsed by pyarrow's JSON reader many thousand at a time (ten times Python's `json` per line); a line it
refuses — broken JSON, a value of another type than the lines before it, a non-object — and any blank line goes
through Python's parser alone, so one bad line is still one quarantined record with its own reason, and the
records around it stay on the fast path. Both ways give the contract the same values: a column is typed only
where every value of the batch has that one JSON type (pyarrow's numbers are Python's to the last bit), else it
holds the Python values `json.loads` gives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.data.contract import FILE, INT64_RANGE, REASON, RECORD
from mlplatform.data.sources import Probe, SourceKind, lines_table, read_lines, register, utf8_problem

#: Lines handed to pyarrow at once (its error names the row of the chunk where a bad line is).
CHUNK_LINES = 100_000
#: The Arrow type a field may arrive in on the fast path, per declared type: any other (a nested object, a list,
#: a string pyarrow took for a time, an int column widened to double because of one fraction) is parsed line
#: by line. Strings are asked for by schema for str and timestamp fields, so pyarrow does not turn them into times.
_FAST_TYPES = {
    "int": (pa.int64(), pa.string()),
    "float": (pa.int64(), pa.float64(), pa.string()),
    "bool": (pa.bool_(), pa.int64(), pa.string()),
    "str": (pa.string(),),
    "timestamp": (pa.string(), pa.int64(), pa.float64()),
}
#: The Python type of each fast Arrow type's values, as `json.loads` gives them.
_PY_TYPE = {pa.int64(): int, pa.float64(): float, pa.string(): str, pa.bool_(): bool}


def _dig(obj: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _slow(lines: list[str], paths: dict[str, list[str]]) -> tuple[dict[str, list[Any]], list[str]]:
    """Lines parsed one by one with Python's `json`: each field's values, and each line's reason ("" if parsed)."""
    cols: dict[str, list[Any]] = {name: [] for name in paths}
    reasons: list[str] = []
    for line in lines:
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            reasons.append("")
        except ValueError as exc:
            obj = {}
            reasons.append(f"malformed JSON: {exc}")
        except RecursionError:
            obj = {}
            reasons.append("malformed JSON: nested too deeply")
        values = [_dig(obj, path) for path in paths.values()]
        if ("\\ud" in line or "\\uD" in line) and not _encodable(values):
            # A \u escape of half a surrogate pair is valid JSON but no character: no column could hold it.
            values, reasons[-1] = [None] * len(values), "malformed JSON: a \\u escape that is half a surrogate pair"
        for name, value in zip(paths, values, strict=True):
            cols[name].append(value)
    return cols, reasons


def _encodable(values: list[Any]) -> bool:
    try:
        json.dumps(values, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _schema(fields: Mapping[str, Any], paths: dict[str, list[str]]) -> pa.Schema | None:
    """Strings for the str and timestamp fields (nested as their paths say), so pyarrow keeps their text."""
    tree: dict[str, Any] = {}
    for name, spec in fields.items():
        if spec.type in ("str", "timestamp"):
            node = tree
            for part in paths[name][:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    return None  # a path through another field's value: leave it to the line parser
            if paths[name][-1] in node:
                return None
            node[paths[name][-1]] = pa.string()

    def typed(node: dict[str, Any]) -> list[pa.Field]:
        return [pa.field(k, pa.struct(typed(v)) if isinstance(v, dict) else v) for k, v in node.items()]

    return pa.schema(typed(tree))


def _leaf(table: pa.Table, path: list[str]) -> pa.ChunkedArray:
    """The values at `path`; nulls where no row has them (as `_dig` finds None in every row)."""
    missing = pa.chunked_array([pa.nulls(table.num_rows)])
    if path[0] not in table.column_names:
        return missing
    col: Any = table[path[0]]
    for part in path[1:]:
        if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
            return missing
        col = pc.struct_field(col, [part])
    return col


def _arrow(data: pa.Buffer, lines: int, schema: pa.Schema | None) -> tuple[pa.Table | None, int | None]:
    """`lines` lines of UTF-8 `data` (each ending in \\n) as (one table, None), or (None, the index of the first line
    pyarrow refused; None: unknown)."""
    import pyarrow.json as pj

    try:
        table = pj.read_json(
            pa.BufferReader(data),
            # One block: the row in an error is the line's index (no blank line is sent; see `_pieces`).
            read_options=pj.ReadOptions(block_size=data.size + 1, use_threads=False),
            parse_options=pj.ParseOptions(explicit_schema=schema),
        )
    except pa.ArrowException as exc:
        row = str(exc).rsplit(" in row ", 1)[-1].strip().rstrip(".")
        return None, int(row) if row.isdigit() and int(row) < lines else None
    # A line holding two objects is two rows: the lines and rows no longer match up.
    return (table, None) if table.num_rows == lines else (None, None)


def _pieces(lines: pa.Array, schema: pa.Schema | None) -> list[tuple[int, int, pa.Table | None]]:
    """The lines cut into (start, end, table) pieces: a table where pyarrow parsed them, None where each line goes
    through `_slow` (the lines pyarrow refused, blank lines). Chunks of lines are parsed in threads (pyarrow
    releases the GIL): a big input in the job's process uses the node's cores; a Ray block is one chunk."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def fast(first: int, stop: int) -> list[tuple[int, int, pa.Table | None]]:
        out: list[tuple[int, int, pa.Table | None]] = []
        # The lines each with its \n, one after the other in one buffer: pyarrow reads any run of them in place.
        empty, newline = pa.scalar("", lines.type), pa.scalar("\n", lines.type)
        joined = pc.binary_join_element_wise(lines.slice(first, stop - first), empty, newline)
        width = np.int64 if pa.types.is_large_string(joined.type) else np.int32
        ends = np.frombuffer(joined.buffers()[1], width)[: len(joined) + 1]
        data = joined.buffers()[2]
        lo, hi = 0, stop - first

        def run(a: int, b: int) -> pa.Buffer:
            return data.slice(int(ends[a]), int(ends[b] - ends[a]))

        while lo < hi:
            table, bad = _arrow(run(lo, hi), hi - lo, schema)
            if table is not None:
                out.append((first + lo, first + hi, table))
                break
            if bad is None:  # not located: these lines one by one
                out.append((first + lo, first + hi, None))
                break
            if bad:  # the lines before it parsed in this try (again alone: their own types)
                out.append((first + lo, first + lo + bad, _arrow(run(lo, lo + bad), bad, schema)[0]))
            out.append((first + lo + bad, first + lo + bad + 1, None))
            lo += bad + 1
        return out

    # pyarrow skips blank lines; json.loads refuses them (one bad record each).
    blank = np.flatnonzero(pc.equal(pc.utf8_trim_whitespace(lines), "").to_numpy(zero_copy_only=False)).tolist()
    runs: list[tuple[int, int]] = []  # chunks to parse; (i, -1): the blank line i
    start = 0
    for stop in [*blank, len(lines)]:
        runs += [(lo, min(stop, lo + CHUNK_LINES)) for lo in range(start, stop, CHUNK_LINES)]
        runs += [(stop, -1)] if stop < len(lines) else []
        start = stop + 1
    chunks = [r for r in runs if r[1] >= 0]
    with ThreadPoolExecutor(max_workers=max(1, min(len(chunks), os.cpu_count() or 1))) as pool:
        parsed = iter(list(pool.map(lambda r: fast(*r), chunks)))
    return [piece for lo, hi in runs for piece in (next(parsed) if hi >= 0 else [(lo, lo + 1, None)])]


#: A piece of one field's values: (Arrow values, None) from pyarrow, or (None, Python values) from `_slow`; and its
#: lines (start, end).
_Part = tuple[pa.ChunkedArray | None, list[Any] | None, int, int]


def _column(parts: list[_Part], declared: str, reparse: Any) -> pd.Series | pa.ChunkedArray:
    """One field's values over all pieces: an Arrow column where every value has one fast type for its `declared`
    type, else the Python values `json.loads` gives (an object column, as the line parser makes it).
    `reparse(start, end)`: the field's values of those lines through `_slow`, for a piece that pyarrow typed as no
    Python parser would (a time; a nested object given the keys of other lines; integers widened to double, which
    an int field must not see: ids above 2**53 would change). A whole number in a double column reads as a float
    (a reason may say 5.0 where the line says 5; the value is the same)."""
    allowed = _FAST_TYPES[declared]
    types = {a.type for a, _, _, _ in parts if a is not None and a.null_count < len(a)}
    slow = [v for _, values, _, _ in parts if values is not None for v in values if v is not None]
    if len(types) == 1 and next(iter(types)) in allowed:
        (arrow_type,) = types
        py = _PY_TYPE[arrow_type]
        same = all(type(v) is py for v in slow)
        if same and (py is not int or all(INT64_RANGE[0] <= v <= INT64_RANGE[1] for v in slow)):
            arrays: list[pa.Array] = []
            for a, values, _, _ in parts:
                arrays += a.cast(arrow_type).chunks if a is not None else [pa.array(values, arrow_type)]
            column = pa.chunked_array(arrays, arrow_type)
            # JSON's NaN is a missing value to the line parser's pandas (an Arrow column would keep it a number).
            return pc.if_else(pc.is_nan(column), None, column) if arrow_type == pa.float64() else column
    out: list[Any] = []
    for a, values, lo, hi in parts:
        if a is None:
            out += values  # type: ignore[arg-type]
        elif a.type in _PY_TYPE and (a.type != pa.float64() or declared != "int") or pa.types.is_null(a.type):
            out += a.to_pylist()
        else:
            out += reparse(lo, hi)
    return pd.Series(out, dtype=object)


def parse_json_lines(lines: pd.Series, fields: Mapping[str, Any]) -> pd.DataFrame:
    """Parse JSON lines and pull each field from its dotted path (`FieldSpec.path`); a broken line becomes a reason.

    Returns:
        One column per field, plus ``__reason`` and ``__record`` (the raw line) for the contract.
    """
    from mlplatform.data.local import as_pandas

    paths = {name: (spec.path or name).split(".") for name, spec in fields.items()}
    text = pa.array(lines, pa.large_string() if not isinstance(lines.dtype, pd.ArrowDtype) else None)
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    schema = _schema(fields, paths)
    per_field: dict[str, list[_Part]] = {n: [] for n in fields}
    reasons: list[str] = []
    for lo, hi, table in _pieces(text, schema) if schema is not None else [(0, len(text), None)]:
        if table is None:
            cols, why = _slow(text.slice(lo, hi - lo).to_pylist(), paths)
            reasons += why
            for name in fields:
                per_field[name].append((None, cols[name], lo, hi))
        else:
            reasons += [""] * (hi - lo)
            for name in fields:
                per_field[name].append((_leaf(table, paths[name]), None, lo, hi))
    typed, objects = {}, {}
    for name, spec in fields.items():

        def reparse(lo: int, hi: int, name: str = name) -> list[Any]:
            return _slow(text.slice(lo, hi - lo).to_pylist(), {name: paths[name]})[0][name]

        col = _column(per_field[name], spec.type, reparse)
        if isinstance(col, pd.Series):
            objects[name] = col
        else:
            typed[name] = col
    out = as_pandas(pa.table(typed)) if typed else pd.DataFrame(index=pd.RangeIndex(len(text)))
    for name, col in objects.items():
        out[name] = col.to_numpy()
    out = out[list(fields)]
    out[REASON] = pd.Series(reasons, dtype=object)  # as the contract reads it: no string column built
    out[RECORD] = lines.array  # the lines' own column, not converted
    return out


@register
class JsonLinesKind(SourceKind):
    name = "jsonl"

    def probe(self, fs: Any, path: str, source: Any) -> Probe:
        return utf8_problem(fs, path)

    def read(self, source: Any, paths: list[str]) -> Any:
        # Line by line (on \n only), so that one broken line is quarantined instead of failing the whole file.
        return read_lines(paths)

    def read_file(self, fs: Any, path: str, source: Any) -> Any:
        return lines_table(fs, path)

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        raw = parse_json_lines(batch["text"], source.fields)
        raw[FILE] = batch["path"].array
        return raw
