import json

import pandas as pd
import pytest
from mlplatform.errors import ConfigError
from mlplatform.tools.sample_data import generate


def test_deterministic_by_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, 300, seed=1)
    generate(b, 300, seed=1)
    generate(c, 300, seed=2)
    for name in ("profiles.csv", "events.jsonl", "transactions.parquet", "readings.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "profiles.csv").read_bytes() != (c / "profiles.csv").read_bytes()


def test_sizes_and_planted_bad_records(tmp_path):
    counts = generate(tmp_path, 1000, seed=0)
    assert counts["profiles"] == 1000
    assert len(pd.read_csv(tmp_path / "profiles.csv")) == 1000
    bad = json.loads((tmp_path / "bad_records.json").read_text())
    assert {b["why"] for b in bad["events"]} == {"broken JSON line", "missing key", "out of range", "wrong type"}
    assert {b["why"] for b in bad["profiles"]} >= {"wrong type", "missing key", "out of range"}
    assert bad["transactions"] and bad["readings"]


def test_label_is_binary_and_balanced_enough(tmp_path):
    generate(tmp_path, 2000, seed=0)
    y = pd.to_numeric(pd.read_csv(tmp_path / "profiles.csv", dtype=str)["churned"], errors="coerce").dropna()
    assert set(y.unique()) == {0, 1}
    assert 0.2 < y.mean() < 0.8


def test_rejects_tiny(tmp_path):
    with pytest.raises(ConfigError, match="at least 10"):
        generate(tmp_path, 3)
