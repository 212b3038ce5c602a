"""The input schema: from a dataset version's profile to what the endpoint serves and documents (no Ray)."""

from __future__ import annotations

import json

from mlplatform.data.schema import InputSchema, input_schema
from mlplatform.serve.protocol import categories_of, curl_line, example_row, v2_metadata

PROFILE = {
    "features": {
        "age": {"kind": "numeric", "nulls": 0, "quantiles": {"0.5": 48.4875}},
        "plan": {"kind": "categorical", "nulls": 0, "categories": {"basic": 0.5, "pro": 0.35, "enterprise": 0.15}},
        "mean_duration_s": {"kind": "numeric", "nulls": 12, "quantiles": {"0.5": 61.23456}},
    }
}


def test_the_schema_keeps_ingests_code_order_nullability_and_a_typical_value():
    schema = input_schema(PROFILE, ["age", "plan", "mean_duration_s"])
    assert schema.names == ["age", "plan", "mean_duration_s"]
    assert schema.categories() == {"plan": ["basic", "pro", "enterprise"]}  # code i is categories[i]
    assert [f.nullable for f in schema.features] == [False, False, True]
    assert [f.example for f in schema.features] == [48.49, "basic", 61.23]
    assert InputSchema.model_validate_json(schema.model_dump_json()) == schema  # what travels in the registry


def test_metadata_and_the_printed_curl_line_use_raw_values():
    schema = input_schema(PROFILE, ["age", "plan", "mean_duration_s"])
    meta = v2_metadata("churn", ["1"], schema.names, schema.as_dicts())
    assert [i["datatype"] for i in meta["inputs"]] == ["FP32", "BYTES", "FP32"]
    assert categories_of(meta) == {"plan": ["basic", "pro", "enterprise"]}
    row = example_row(meta)
    assert row == {"age": 48.49, "plan": "basic", "mean_duration_s": 61.23}
    line = curl_line("http://127.0.0.1:8000", "churn", row, with_key=False)
    assert json.loads(line.split("-d '")[1].rstrip("'")) == {"instances": [row]}
    # A version without a schema: every input a number, 1.0 in the sample request.
    bare = v2_metadata("churn", ["1"], ["a"])
    assert bare["inputs"] == [{"name": "a", "datatype": "FP32", "shape": [-1]}] and example_row(bare) == {"a": 1.0}
