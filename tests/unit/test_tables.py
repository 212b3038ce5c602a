"""Plain tables: what a spec of one table (or a label table and wide feature tables) means, and the CSV files
that cannot be one, refused by the probe with the file's reason before any record is read."""

from __future__ import annotations

import pytest
from mlplatform.data.config import DataConfig
from mlplatform.data.ingest import _probe
from pydantic import ValidationError


def spec(sources: list[dict], **top) -> DataConfig:
    return DataConfig.model_validate(
        {"name": "t", "key": "id", "label": "y", "output_dir": "/tmp/unused", "sources": sources, **top}
    )


def csv_source(name: str = "t", path: str = "/tmp/t.csv", **fields) -> dict:
    return {"name": name, "format": "csv", "path": path, "fields": {"id": {"type": "str"}, **fields}}


def test_one_table_every_field_is_a_feature_a_str_one_categorical():
    cfg = spec(
        [csv_source(x={"type": "float"}, site={"type": "str"}, y={"type": "str"})],
        positive="malignant",
    )
    assert cfg.feature_columns() == ["x", "site"]


def test_a_label_table_and_wide_feature_tables_without_aggregations():
    cfg = spec(
        [
            csv_source("labels", y={"type": "int"}),
            csv_source("wide", "/tmp/w.csv", w1={"type": "float"}, w2={"type": "str"}),
            {
                **csv_source("events", "/tmp/e.csv", amount={"type": "float"}),
                "features": [{"name": "n", "agg": "count"}, {"name": "spend", "agg": "sum", "column": "amount"}],
            },
        ]
    )
    assert cfg.feature_columns() == ["w1", "w2", "n", "spend"]


@pytest.mark.parametrize(
    "sources,top,message",
    [
        ([csv_source(y={"type": "int"})], {}, "no features"),
        ([csv_source(x={"type": "float"}, y={"type": "int"}), csv_source("b", x={"type": "float"})], {}, "both source"),
        ([{**csv_source(x={"type": "float"}, y={"type": "int"}), "fields": {"id": {"type": "float"}}}], {}, "label"),
        (
            [{**csv_source(), "fields": {"id": {"type": "float"}, "x": {"type": "int"}, "y": {"type": "int"}}}],
            {},
            "a key is int or str",
        ),
        ([csv_source(x={"type": "int"}, y={"type": "str"})], {"positive": 1}, "quote the value"),
        ([csv_source(x={"type": "int"}, y={"type": "bool"})], {"positive": "yes"}, "true/false"),
    ],
)
def test_specs_that_cannot_work_fail_at_validation(sources, top, message):
    with pytest.raises(ValidationError, match=message):
        spec(sources, **top)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("id,x,y\n", "header only"),
        ("id,x\n1,2\n", "no column for field(s) ['y']"),
        ("id,x,x,y\n1,2,3,0\n", "duplicate column name(s) ['x']"),
        ("id,y,x\n1,0,2\n2,1,\n", ""),  # columns in any order; an optional field may be empty
    ],
)
def test_csv_files_that_cannot_be_the_table_are_refused_with_their_reason(tmp_path, text, reason):
    path = tmp_path / "t.csv"
    path.write_text(text)
    cfg = spec([csv_source(path=str(path), x={"type": "float", "required": False}, y={"type": "int"})])
    probed = _probe({"path": str(path)}, cfg.sources[0])
    assert reason in probed["reason"] and bool(probed["reason"]) == bool(reason)
