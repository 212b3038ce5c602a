"""Batch scoring's encoding is the endpoint's: the same raw row gives the same float32 matrix both ways, and a
row the endpoint would refuse is a row with its reason, not a failed job."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from mlplatform.errors import ConfigError
from mlplatform.serve.batch import ModelRef, encode, parse_model_ref
from mlplatform.serve.protocol import codebook, parse_v1

FEATURES = ["age", "plan", "spend"]
CATEGORIES = {"plan": ["basic", "pro", "enterprise"]}
ROWS = [
    {"age": 41, "plan": "pro", "spend": 12.5},
    {"age": 30.25, "plan": "enterprise", "spend": None},
    {"age": None, "plan": None, "spend": 1e-7},
]


def test_rows_encode_exactly_as_the_endpoint_parses_them():
    x, errors = encode(pa.Table.from_pylist(ROWS), FEATURES, CATEGORIES)
    body = json.dumps({"instances": ROWS}).encode()
    parsed = parse_v1(body, FEATURES, max_instances=10, allow_missing=True, codes=codebook(CATEGORIES))
    np.testing.assert_array_equal(x, parsed.x)
    assert x.dtype == np.float32 and errors == {}


def test_csv_text_is_read_as_numbers_and_bad_rows_carry_their_reason():
    table = pa.table(
        {
            "age": pa.array(["41", "", "old", "7"]),
            "plan": pa.array(["pro", "gold", "basic", "basic"]),
            "spend": pa.array([1.0, 2.0, 3.0, 4.0]),
        }
    )
    x, errors = encode(table, FEATURES, CATEGORIES)
    assert x[0, 0] == 41 and np.isnan(x[1, 0]) and x[3].tolist() == [7, 0, 4]
    assert sorted(errors) == [1, 2]
    assert "plan: 'gold' is not one of" in errors[1] and "age: 'old' is not a number" in errors[2]


@pytest.mark.parametrize(
    "text,ref",
    [
        ("churn@champion", ModelRef("churn", alias="champion")),
        ("churn/3", ModelRef("churn", version="3")),
        ("churn/v3", ModelRef("churn", version="3")),
        ("churn", ModelRef("churn", alias="champion")),
    ],
)
def test_model_references(text, ref):
    assert parse_model_ref(text) == ref


@pytest.mark.parametrize("text", ["churn@", "churn/x", "a b", "churn@champ@x", ""])
def test_bad_model_references_say_what_is_expected(text):
    with pytest.raises(ConfigError, match="NAME@ALIAS"):
        parse_model_ref(text)


def test_inputs_are_a_csv_a_parquet_file_or_a_folder_and_say_their_size(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlplatform.errors import ConfigError
    from mlplatform.serve.batch import _input_kind

    (tmp_path / "a.csv").write_text("id,x\n1,2\n")
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "b.parquet")
    (tmp_path / "folder").mkdir()
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "folder" / "part-0.parquet")
    assert _input_kind(str(tmp_path / "a.csv")) == ("csv", 9)
    assert _input_kind(str(tmp_path / "b.parquet"))[0] == "parquet"
    kind, size = _input_kind(str(tmp_path / "folder"))
    assert kind == "parquet" and size == (tmp_path / "folder" / "part-0.parquet").stat().st_size
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ConfigError, match="a .csv or .parquet file"):
        _input_kind(str(tmp_path / "c.json"))
    with pytest.raises(ConfigError, match="no such file or folder"):
        _input_kind(str(tmp_path / "nope.csv"))


def _scorer(features: list[str]):
    import xgboost as xgb
    from mlplatform.serve.batch import _Scorer

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, len(features))).astype(np.float32)
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0] > 0), 5)
    return _Scorer(bytes(booster.save_raw("ubj")), features, {}, "id", "7")


@pytest.mark.parametrize("kind", ["csv", "parquet-folder"])
def test_streamed_scores_are_the_whole_tables_scores_batch_by_batch(tmp_path, kind):
    """The in-process path streams the input (bounded memory at any size) into one file: the same rows and
    scores as the whole table through the same scorer, every batch written, a header-only input an empty file."""
    import pyarrow.csv as pacsv
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from mlplatform.serve.batch import _stream, _write

    rng = np.random.default_rng(2)
    n = 30_000  # a CSV of > 1 MB: pyarrow streams it in blocks of 1 MB
    table = pa.table({"id": [f"C-{i:05d}" for i in range(n)], "a": rng.normal(size=n), "b": rng.normal(size=n)})
    table = table.append_column("extra", pa.array(["x"] * n))
    if kind == "csv":
        path = tmp_path / "in.csv"
        pacsv.write_csv(table, path)
        header_only = tmp_path / "empty.csv"
        header_only.write_text("id,a,b,extra\n")
    else:
        path = tmp_path / "in"
        path.mkdir()
        for i, start in enumerate(range(0, n, 10_000)):  # three files, read in name order
            pq.write_table(table.slice(start, 10_000), path / f"part-{i}.parquet")
        (path / "_SUCCESS").write_text("")
        header_only = tmp_path / "empty"
        header_only.mkdir()
        pq.write_table(table.slice(0, 0), header_only / "part-0.parquet")
    scorer, fs = _scorer(["a", "b"]), pafs.LocalFileSystem()
    columns = ["id", "a", "b"]
    batches = list(_stream(str(path), "csv" if kind == "csv" else "parquet", columns, batch_rows=7000))
    assert len(batches) > 1 and all(b.column_names == columns for b in batches)
    rows, errors = _write(scorer, iter(batches), fs, str(tmp_path / "out"))
    out = pq.read_table(tmp_path / "out")
    assert (rows, errors) == (n, 0) and out["id"].to_pylist() == table["id"].to_pylist()
    whole = scorer(table.select(columns))
    assert out["prediction"].to_pylist() == whole["prediction"].to_pylist()

    empty = list(_stream(str(header_only), "csv" if kind == "csv" else "parquet", columns, batch_rows=7000))
    assert [b.num_rows for b in empty] == [0]
    assert _write(scorer, iter(empty), fs, str(tmp_path / "none")) == (0, 0)
    assert pq.read_table(tmp_path / "none").column_names == ["id", "prediction", "model_version", "error"]


def test_a_small_csv_is_typed_from_all_its_rows(tmp_path):
    """Integers for more than pyarrow's first 1 MB block, then a decimal: a float column, not a failed read."""
    from mlplatform.serve.batch import _stream

    n = 120_000
    lines = ["id,a,b"] + [f"{i},{i % 7},1" for i in range(n)] + [f"{n},0.5,1"]
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    batches = list(_stream(str(tmp_path / "late.csv"), "csv", ["id", "a", "b"], batch_rows=65_536))
    assert sum(b.num_rows for b in batches) == n + 1 and batches[-1]["a"][-1].as_py() == 0.5


def test_a_parquet_folder_is_read_as_ray_data_reads_it(tmp_path):
    """Only .parquet files, hidden and `_` entries skipped, hive partition folders giving a column (a feature
    here) — what Ray Data's reader does, so both paths see the same input; an empty folder has no columns."""
    import pyarrow.parquet as pq
    from mlplatform.serve.batch import _columns, _stream

    for day in (1, 2):
        (tmp_path / "in" / f"day={day}").mkdir(parents=True)
        pq.write_table(
            pa.table({"id": [day * 10, day * 10 + 1], "a": [0.5, 1.5]}), tmp_path / "in" / f"day={day}" / "p.parquet"
        )
    (tmp_path / "in" / "_SUCCESS").write_text("")
    (tmp_path / "in" / "notes.txt").write_text("not a table")
    (tmp_path / "in" / ".staging").mkdir()
    pq.write_table(pa.table({"id": [99], "a": [9.0]}), tmp_path / "in" / ".staging" / "p.parquet")
    assert _columns(str(tmp_path / "in"), "parquet") == ["id", "a", "day"]
    table = pa.concat_tables(_stream(str(tmp_path / "in"), "parquet", ["id", "a", "day"], batch_rows=100))
    assert table.to_pydict() == {"id": [10, 11, 20, 21], "a": [0.5, 1.5, 0.5, 1.5], "day": [1, 1, 2, 2]}
    (tmp_path / "empty").mkdir()
    assert _columns(str(tmp_path / "empty"), "parquet") == []
