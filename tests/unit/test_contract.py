import json

import pandas as pd
from mlplatform.data.config import FieldSpec
from mlplatform.data.contract import REASON, RECORD, validate_batch
from mlplatform.data.sources.jsonl import parse_json_lines

FIELDS = {
    "entity_id": FieldSpec(type="int", min=1),
    "age": FieldSpec(type="int", min=18, max=120),
    "plan": FieldSpec(type="str", allowed=["basic", "pro"]),
    "score": FieldSpec(type="float", required=False),
}


def run(rows):
    return validate_batch(pd.DataFrame(rows, dtype=object), FIELDS)


def test_good_record_passes_typed():
    out = run([{"entity_id": "7", "age": "30", "plan": "pro", "score": "0.5"}])
    assert out[REASON].tolist() == [""]
    assert out["entity_id"].iloc[0] == 7 and out["score"].iloc[0] == 0.5


def test_each_kind_of_bad_value_has_its_reason_and_raw_record():
    out = run(
        [
            {"entity_id": "", "age": "30", "plan": "pro", "score": ""},
            {"entity_id": "2", "age": "forty", "plan": "pro", "score": ""},
            {"entity_id": "3", "age": "250", "plan": "pro", "score": ""},
            {"entity_id": "4", "age": "30", "plan": "platinum", "score": ""},
            {"entity_id": "5", "age": "30.5", "plan": "basic", "score": "x"},
        ]
    )
    reasons = out[REASON].tolist()
    assert reasons[0] == "entity_id: missing"
    assert reasons[1] == "age: expected int, got 'forty'"
    assert reasons[2] == "age: 250 > max 120"
    assert reasons[3].startswith("plan: 'platinum' not in allowed")
    assert "age: expected int, got '30.5'" in reasons[4] and "score: expected float, got 'x'" in reasons[4]
    assert json.loads(out[RECORD].iloc[1])["age"] == "forty"
    assert len(out) == 5  # nothing dropped


def test_missing_column_is_missing_value():
    out = validate_batch(pd.DataFrame({"entity_id": ["1"], "age": ["20"]}), FIELDS)
    assert out[REASON].iloc[0] == "plan: missing"


def test_schema_is_the_same_with_and_without_bad_values():
    good = run([{"entity_id": "1", "age": "20", "plan": "pro", "score": "1"}])
    mixed = run(
        [
            {"entity_id": "1", "age": "20", "plan": "pro", "score": "1"},
            {"entity_id": "x", "age": "", "plan": "", "score": "y"},
        ]
    )
    assert good.dtypes.to_dict() == mixed.dtypes.to_dict()


def test_json_lines_broken_line_and_nested_paths():
    fields = {"entity_id": FieldSpec(type="int", path="user.id"), "d": FieldSpec(type="float", path="event.d", min=0)}
    lines = pd.Series(
        ['{"user": {"id": 1}, "event": {"d": 2}}', '{"user": ', "[1, 2]", '{"user": {"id": true}, "event": {"d": -1}}']
    )
    out = validate_batch(parse_json_lines(lines, fields), fields)
    r = out[REASON].tolist()
    assert r[0] == ""
    assert r[1].startswith("malformed JSON")
    assert r[2] == "malformed JSON: expected a JSON object, got list"
    assert r[3] == "entity_id: expected int, got True; d: -1 < min 0"
    assert out[RECORD].iloc[1] == '{"user": '


def test_patterns_timestamps_and_freshness():
    import pytest
    from pydantic import ValidationError

    fields = {
        "sku": FieldSpec(type="str", pattern=r"[A-Z]{3}-\d{4}"),
        "seen": FieldSpec(type="timestamp", max_age_days=30),
    }
    now = pd.Timestamp("2026-11-22T00:00:00Z").timestamp()
    rows = [
        {"sku": "ABC-1234", "seen": "2026-11-20T10:00:00Z"},
        {"sku": "abc-1234", "seen": "2026-11-20T10:00:00Z"},  # pattern
        {"sku": "ABC-1234", "seen": "2025-01-01"},  # stale
        {"sku": "ABC-1234", "seen": "yesterday"},  # not a timestamp
        {"sku": "ABC-1234", "seen": now - 3600},  # epoch seconds
    ]
    out = validate_batch(pd.DataFrame(rows, dtype=object), fields, now=now)
    reasons = out[REASON].tolist()
    assert reasons[0] == "" and reasons[4] == ""
    assert "does not match pattern" in reasons[1]
    assert "older than max_age_days 30" in reasons[2]
    assert "expected timestamp" in reasons[3]
    assert out["seen"].iloc[0] == pd.Timestamp("2026-11-20T10:00:00Z").timestamp()
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        FieldSpec(type="str", pattern="([")
    with pytest.raises(ValidationError, match="max_age_days applies to timestamp"):
        FieldSpec(type="int", max_age_days=3)


def test_a_parquet_bool_column_is_not_a_float_either():
    import pyarrow as pa
    from mlplatform.data.local import as_pandas

    fields = {"d": FieldSpec(type="float")}
    out = validate_batch(as_pandas(pa.table({"d": pa.array([True, None])})), fields)
    assert out[REASON].tolist() == ["d: expected float, got True", "d: missing"]
