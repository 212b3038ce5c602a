"""JSON lines parsed by pyarrow many at a time give the contract exactly what Python's parser, line by line, gives:
the same reasons, records and typed values, whatever odd lines sit among the good ones (no Ray)."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from mlplatform.data.config import FieldSpec
from mlplatform.data.contract import REASON, RECORD, validate_batch
from mlplatform.data.sources import jsonl
from mlplatform.data.sources.jsonl import _slow, parse_json_lines

FIELDS = {
    "id": FieldSpec(type="int", path="user.id"),
    "kind": FieldSpec(type="str", path="event.type"),
    "d": FieldSpec(type="float", path="event.d", min=0),
    "flag": FieldSpec(type="bool", required=False),
    "at": FieldSpec(type="timestamp", required=False),
    "note": FieldSpec(type="str", required=False),
}


def good(i: int, rng: random.Random) -> str:
    return json.dumps(
        {
            "user": {"id": i},
            "event": {"type": rng.choice(["view", "login"]), "d": round(rng.uniform(0, 100), rng.randint(0, 4))},
            "flag": rng.random() < 0.5,
            "at": "2024-05-01T10:00:00Z",
        }
    )


ODD = [
    '{"user": {"id": 5}, "event": {"type": "view", "d": ',  # broken
    '{"user": {"id": 5}, "event": {"type": "view", "d": "long"}}',  # a str where numbers are
    '{"event": {"type": "view", "d": 1}}',  # missing key
    '{"user": 7, "event": {"type": "view", "d": 1}}',  # a parent that is not an object
    '{"user": {"id": 12345678901234567890123}, "event": {"type": "view", "d": 1.5}}',  # beyond int64
    '{"user": {"id": 9007199254740993}, "event": {"type": "view", "d": 1.5}}',  # beyond 2**53, exact
    '{"user": {"id": 3.0}, "event": {"type": "view", "d": 2}}',  # a whole float for an int
    '{"user": {"id": 3.5}, "event": {"type": 4, "d": true}}',
    '{"user": {"id": "42"}, "event": {"type": "view", "d": "2.5"}, "flag": "yes"}',
    '{"user": {"id": 8}, "event": {"type": {"nested": 1}, "d": [1, 2]}, "flag": 1}',
    '{"user": {"id": 9}, "event": {"type": "view", "d": NaN}, "at": 1714557600}',
    '{"user": {"id": 9}, "event": {"type": "view", "d": Infinity}, "at": "2024-02-30"}',
    '{"user": {"id": 10}, "user": {"id": 11}, "event": {"type": "view", "d": 1}}',  # a key twice
    '{"user": {"id": 1}, "event": {"type": "view", "d": 1}} {"user": {"id": 2}}',  # two objects
    "[1, 2]",
    "5",
    "",
    "   ",
    '{"user": {"id": 12}, "event": {"type": "a\u2028b", "d": 0}, "note": "\\ud800"}',
    '{"user": {"id": 13}, "event": {"type": "view", "d": 1}, "note": 2024}',
    '{"user": {"id": 14}, "event": {"type": "view", "d": -1e400}}',
    '{"user": {"id": null}, "event": null, "flag": null}',
    "[" * 5000 + "]" * 5000,
]


def reference(lines: list[str]) -> pd.DataFrame:
    """Every line through Python's parser, as ingest parsed JSON lines before pyarrow."""
    cols, reasons = _slow(lines, {n: (s.path or n).split(".") for n, s in FIELDS.items()})
    frame = pd.DataFrame({n: pd.Series(v, dtype=object) for n, v in cols.items()})
    frame[REASON], frame[RECORD] = reasons, lines
    return frame


def same(lines: list[str]) -> pd.DataFrame:
    fast = validate_batch(parse_json_lines(pd.Series(lines), FIELDS), FIELDS, now=2e9)
    slow = validate_batch(reference(lines), FIELDS, now=2e9)
    assert fast[REASON].tolist() == slow[REASON].tolist()
    assert fast[RECORD].tolist() == slow[RECORD].tolist()
    for name in FIELDS:
        assert fast[name].astype(object).where(fast[name].notna(), None).tolist() == (
            slow[name].astype(object).where(slow[name].notna(), None).tolist()
        ), name
    return fast


@pytest.mark.parametrize("chunk", [3, 50, 100_000])
def test_odd_lines_among_good_ones_give_what_the_line_parser_gives(monkeypatch, chunk):
    monkeypatch.setattr(jsonl, "CHUNK_LINES", chunk)
    rng = random.Random(chunk)
    for trial in range(6):
        lines = [good(i, rng) for i in range(300)]
        for odd in rng.sample(ODD, k=trial * 4 if trial < 5 else len(ODD)):
            lines.insert(rng.randrange(len(lines) + 1), odd)
        out = same(lines)
        assert (out[REASON] == "").sum() >= 300 - 1


@pytest.mark.parametrize("odd", ODD)
def test_each_odd_line_alone_and_among_good_ones(odd):
    rng = random.Random(0)
    same([odd])
    same([good(1, rng), odd, good(2, rng)])


def test_clean_lines_arrive_typed_and_quarantine_nothing():
    rng = random.Random(1)
    parsed = parse_json_lines(pd.Series([good(i, rng) for i in range(1000)]), FIELDS)
    assert not pd.api.types.is_object_dtype(parsed["id"].dtype) and not pd.api.types.is_object_dtype(parsed["d"])
    out = validate_batch(parsed, FIELDS, now=2e9)
    assert (out[REASON] == "").all() and out["id"].tolist() == list(range(1000))
    np.testing.assert_array_equal(out["at"].to_numpy(), np.full(1000, 1714557600.0))


def test_a_bool_is_not_a_number_in_a_typed_column():
    fields = {"d": FieldSpec(type="float")}
    out = validate_batch(parse_json_lines(pd.Series(['{"d": true}', '{"d": false}']), fields), fields)
    assert out[REASON].tolist() == ["d: expected float, got True", "d: expected float, got False"]
