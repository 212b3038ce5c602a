"""Properties that must hold for any input, checked with generated inputs (hypothesis):

- configs: any file text or YAML document is a valid config or a `ConfigError` naming the file — never
  another exception, never a traceback;
- data contracts: any record is typed and kept, or quarantined with a reason and its raw record — never
  lost, never half-typed;
- routing: weights give the shares they say over every window, and a routing key keeps its version while
  the weights stay and moves only to a version whose weight grew.
"""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mlplatform.config import load_config
from mlplatform.data.config import FieldSpec
from mlplatform.data.contract import REASON, RECORD, validate_batch
from mlplatform.errors import ConfigError
from mlplatform.job_configs import PipelineConfig
from mlplatform.serve.config import AppArgs
from mlplatform.serve.split import WeightedRendezvous, WeightedRoundRobin

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------------------- configs

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["${NOPE}", "${HOME}", "csv", "jsonl", "s3://b/x", "../../etc", "champion"]),
)
keys = st.one_of(
    st.sampled_from(["data", "train", "deploy", "sources", "name", "key", "label", "fields", "type", "path"]),
    st.text(max_size=10),
)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5))


@FAST
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error_naming_the_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("c") / "job.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path, PipelineConfig)
    except ConfigError as exc:
        assert str(path) in str(exc)


@FAST
@given(doc=documents)
def test_any_yaml_document_is_a_config_or_a_config_error_naming_the_file(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("c") / "job.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    for model in (PipelineConfig, AppArgs):
        try:
            load_config(path, model)
        except ConfigError as exc:
            assert str(path) in str(exc)


# ---------------------------------------------------------------------------------------------- contracts

FIELDS = {
    "id": FieldSpec(type="int", unique=True),
    "x": FieldSpec(type="float", min=-10, max=10),
    "s": FieldSpec(type="str", allowed=["a", "b"], required=False),
    "p": FieldSpec(type="str", pattern=r"C-\d{3}", required=False),
    "t": FieldSpec(type="timestamp", required=False),
    "b": FieldSpec(type="bool", required=False),
}
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1", "2.5", "1e3", "nan", "inf", "true", "2026-11-28T10:00:00Z", "C-123", "a", "b", ""]),
)
records = st.lists(st.fixed_dictionaries({}, optional={name: values for name in FIELDS}), min_size=1, max_size=25)


@FAST
@given(rows=records)
def test_any_record_is_typed_and_kept_or_quarantined_with_a_reason(rows):
    out = validate_batch(pd.DataFrame(rows, dtype=object), FIELDS, now=1.8e9)
    assert len(out) == len(rows)  # nothing lost: every record is in the output, good or bad
    bad = out[REASON] != ""
    assert (out.loc[bad, RECORD] != "").all()  # a quarantined record keeps its raw text
    assert (out.loc[~bad, RECORD] == "").all()
    good = out[~bad]
    assert good["id"].notna().all() and good["id"].is_unique
    assert good["x"].between(-10, 10).all()
    assert good["s"].dropna().isin(["a", "b"]).all()
    assert good["p"].dropna().str.fullmatch(r"C-\d{3}").all()


# ---------------------------------------------------------------------------------------------- routing

weights = st.dictionaries(
    st.sampled_from(["1", "2", "3", "4"]), st.integers(min_value=0, max_value=100), min_size=1
).filter(lambda w: sum(w.values()) > 0)


@FAST
@given(w=weights, rounds=st.integers(min_value=1, max_value=5))
def test_round_robin_shares_match_the_weights_over_every_full_cycle(w, rounds):
    rr = WeightedRoundRobin(w)
    total = sum(w.values())
    picks = Counter(rr.pick() for _ in range(total * rounds))
    assert picks == Counter({v: n * rounds for v, n in w.items() if n > 0})


@FAST
@given(w=weights, key=st.text(max_size=30))
def test_a_key_keeps_its_version_and_never_lands_on_a_weight_of_zero(w, key):
    ring = WeightedRendezvous(w)
    chosen = ring.pick(key)
    assert w[chosen] > 0 and all(ring.pick(key) == chosen for _ in range(3))
    assert WeightedRendezvous(dict(reversed(list(w.items())))).pick(key) == chosen  # replicas agree


@FAST
@given(w=weights, grow=st.sampled_from(["1", "2", "3", "4"]), by=st.integers(min_value=1, max_value=50))
def test_when_one_weight_grows_keys_move_only_onto_it(w, grow, by):
    assume(grow in w)
    before, after = WeightedRendezvous(w), WeightedRendezvous({**w, grow: w[grow] + by})
    for i in range(300):
        old, new = before.pick(f"user-{i}"), after.pick(f"user-{i}")
        assert new == old or new == grow, (i, old, new)


def test_observed_shares_of_many_keys_follow_the_weights():
    ring = WeightedRendezvous({"1": 90, "2": 10})
    share = sum(ring.pick(f"customer-{i}") == "2" for i in range(20_000)) / 20_000
    assert math.isclose(share, 0.10, abs_tol=0.01), share  # 5 standard deviations: 0.0106
