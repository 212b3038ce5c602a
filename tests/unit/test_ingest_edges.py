"""Ingest at the edges (no Ray): hidden paths, line splitting, 64-bit ids, deep JSON, far-away timestamps."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlplatform.data.config import FieldSpec, SourceSpec
from mlplatform.data.contract import REASON, validate_batch
from mlplatform.data.ingest import _files
from mlplatform.data.sources._lines import split_lines
from mlplatform.data.sources.jsonl import parse_json_lines
from mlplatform.data.version import hidden as _hidden


@pytest.mark.parametrize(
    "relative,hidden",
    [
        ("part-0.csv", False),
        ("date=2024-01-01/part-0.csv", False),
        ("_temporary/0/part-0.csv", True),
        (".ipynb_checkpoints/part-0-checkpoint.csv", True),
        ("date=2024-01-01/.part-0.csv.crc", True),
        ("_SUCCESS", True),
    ],
)
def test_hidden_and_temporary_paths_are_not_data(relative, hidden):
    assert _hidden(relative) is hidden


def test_a_folder_source_skips_and_reports_hidden_files(tmp_path):
    (tmp_path / "_temporary" / "0").mkdir(parents=True)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    for rel in ("a.csv", "_temporary/0/a.csv", ".ipynb_checkpoints/a-checkpoint.csv", "_SUCCESS"):
        (tmp_path / rel).write_text("id\n1\n")
    source = SourceSpec(name="s", format="csv", path=str(tmp_path), fields={"id": FieldSpec(type="int")})
    files, skipped = _files(source)
    assert [f["path"] for f in files] == [str(tmp_path / "a.csv")]
    assert sorted(p.rsplit("/", 1)[-1] for p in skipped) == ["_SUCCESS", "a-checkpoint.csv", "a.csv"]


def test_lines_split_on_newline_only():
    data = '{"t": "a\u2028b"}\r\n{"t": "c\u0085d"}\n\n{"t": "f"}'.encode()
    lines = split_lines(data).to_pylist()
    assert lines == ['{"t": "a\u2028b"}', '{"t": "c\u0085d"}', "", '{"t": "f"}']
    assert split_lines(b"x\n").to_pylist() == ["x"] and split_lines(b"").to_pylist() == []
    assert split_lines(b"a\r\r\n\r\nb\n\n").to_pylist() == ["a\r", "", "b", ""]
    fields = {"t": FieldSpec(type="str")}
    parsed = parse_json_lines(pd.Series(lines), fields)
    assert parsed["t"].tolist()[:2] == ["a\u2028b", "c\u0085d"]  # one record each, not two broken ones


def test_deeply_nested_json_quarantines_one_record():
    fields = {"id": FieldSpec(type="int")}
    lines = pd.Series(["[" * 100_000 + "]" * 100_000, json.dumps({"id": 1})])
    out = validate_batch(parse_json_lines(lines, fields), fields)
    assert out[REASON].tolist() == ["malformed JSON: nested too deeply", ""]


def test_integer_ids_keep_all_64_bits():
    fields = {"id": FieldSpec(type="int")}
    big = [2**53 + 1, 2**53, 2**63 - 1, -(2**63)]
    for raw in (pd.Series([str(v) for v in big], dtype="string"), pd.Series(big, dtype=object)):
        out = validate_batch(pd.DataFrame({"id": raw}), fields)
        assert out["id"].tolist() == big and (out[REASON] == "").all()
    out = validate_batch(pd.DataFrame({"id": pd.Series([str(2**63), "1.5", "1e3"], dtype="string")}), fields)
    assert out[REASON].tolist()[:2] == [f"id: expected int, got '{2**63}'", "id: expected int, got '1.5'"]
    assert out["id"].tolist()[2] == 1000


@pytest.mark.parametrize(
    "value,ok",
    [("9999-12-31T23:59:59Z", True), ("0001-01-01", True), ("10000-01-01T00:00:00", False), ("2024-02-30", False)],
)
def test_far_away_timestamps_are_values_or_one_bad_record_never_a_failed_batch(value, ok):
    fields = {"t": FieldSpec(type="timestamp")}
    out = validate_batch(pd.DataFrame({"t": pd.Series(["2024-01-01T00:00:00Z", value], dtype=object)}), fields)
    assert out[REASON].tolist()[0] == "" and (out[REASON].tolist()[1] == "") is ok


def test_the_in_process_read_checks_files_whose_columns_do_not_unify_one_by_one(tmp_path):
    """A small input's files are read in this process; Parquet files typing one field differently (int in one,
    text in the other) cannot be one table, so each is checked on its own, as Ray's blocks would be."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlplatform.data.ingest import _check_local

    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "x": [0.5, 1.5]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": pa.array(["3", "four"]), "x": [2.5, -1.0]}), tmp_path / "b.parquet")
    fields = {"id": FieldSpec(type="int"), "x": FieldSpec(type="float", min=0)}
    source = SourceSpec(name="s", format="parquet", path=str(tmp_path), fields=fields)
    checked = _check_local(source, [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]).to_pandas()
    assert checked["id"].tolist()[:3] == [1, 2, 3]
    reasons = checked[REASON].tolist()
    assert reasons[:3] == ["", "", ""] and "four" in reasons[3] and "x: -1.0 < min 0" in reasons[3]
    assert checked["__file"].tolist() == [str(tmp_path / "a.parquet")] * 2 + [str(tmp_path / "b.parquet")] * 2
