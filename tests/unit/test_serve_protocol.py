"""Serving configs and the wire formats (no Ray)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlplatform.errors import RequestError
from mlplatform.serve.config import AppArgs, VersionSpec
from mlplatform.serve.protocol import (
    parse_v1,
    parse_v2,
    v1_response,
    v2_metadata,
    v2_response,
)
from pydantic import ValidationError

FEATURES = ["age", "income", "visits"]


def v1(doc, *, max_instances=1000, allow_missing=False, features=FEATURES):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_v1(body, features, max_instances=max_instances, allow_missing=allow_missing).x


def v2(doc, *, max_instances=1000, allow_missing=False, features=FEATURES):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    parsed = parse_v2(body, features, max_instances=max_instances, allow_missing=allow_missing)
    return parsed.x, parsed.request_id


def refused(fn, *a, status=400, **kw) -> str:
    with pytest.raises(RequestError) as info:
        fn(*a, **kw)
    assert info.value.status == status, info.value.message
    assert str(info.value) == info.value.message
    return info.value.message


ROW = {"age": 31, "income": 52000.5, "visits": 4}


# ------------------------------------------------------------------------------------------- configs


def test_version_spec_needs_exactly_one_of_version_or_alias():
    assert VersionSpec(version="3", weight=100).version == "3"
    assert VersionSpec(alias="champion", weight=100).alias == "champion"
    with pytest.raises(ValidationError, match="exactly one of `version` or `alias`.*version=None alias=None"):
        VersionSpec(weight=100)
    with pytest.raises(ValidationError, match="version='3' alias='champion'"):
        VersionSpec(version="3", alias="champion", weight=100)


def test_version_spec_defaults_and_int_version():
    spec = VersionSpec(version=3, weight=50)
    assert spec.version == "3"
    assert (spec.num_replicas, spec.num_cpus, spec.max_batch_size, spec.batch_wait_timeout_s) == (
        1,
        0.25,
        64,
        0.002,
    )


@pytest.mark.parametrize("bad", [{"weight": -1}, {"weight": 100.5}, {"num_cpus": 0}, {"max_batch_size": 0}])
def test_version_spec_ranges(bad):
    with pytest.raises(ValidationError):
        VersionSpec(**{"version": "1", "weight": 10, **bad})


def test_version_spec_forbids_unknown_keys():
    with pytest.raises(ValidationError, match="weigth"):
        VersionSpec(version="1", weight=100, weigth=3)


def app_args(**kw):
    base = {
        "model_name": "churn",
        "versions": [{"alias": "champion", "weight": 90}, {"alias": "challenger", "weight": 10}],
    }
    return AppArgs.model_validate({**base, **kw})


def test_app_args_defaults():
    args = app_args()
    assert args.auth == "api_key" and args.features is None and args.tracking_uri is None
    assert (args.max_instances, args.max_body_bytes, args.allow_missing, args.ingress_num_cpus) == (
        1000,
        2_000_000,
        False,
        0.1,
    )


def test_app_args_weights_must_sum_to_100():
    with pytest.raises(ValidationError, match=r"weights must sum to 100, got \[90\.0, 20\.0\] \(sum 110\)"):
        app_args(versions=[{"version": "1", "weight": 90}, {"version": "2", "weight": 20}])
    # float rounding is tolerated
    app_args(versions=[{"version": str(i), "weight": 100 / 3} for i in range(3)])


def test_app_args_versions_must_be_distinct():
    with pytest.raises(ValidationError, match=r"version \['1'\] is listed more than once"):
        app_args(versions=[{"version": "1", "weight": 50}, {"version": 1, "weight": 50}])
    with pytest.raises(ValidationError, match=r"alias \['champion'\]"):
        app_args(versions=[{"alias": "champion", "weight": 50}, {"alias": "champion", "weight": 50}])


def test_app_args_other_errors_name_the_field():
    with pytest.raises(ValidationError, match="versions"):
        app_args(versions=[])
    with pytest.raises(ValidationError, match="auth"):
        app_args(auth="basic")
    with pytest.raises(ValidationError, match="model_name"):
        app_args(model_name="bad name")
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        app_args(max_instance=3)
    with pytest.raises(ValidationError, match=r"features must be unique, \['a'\]"):
        app_args(features=["a", "b", "a"])


# ---------------------------------------------------------------------------------------------- V1


def test_v1_happy_path_orders_columns_by_features():
    x = v1({"instances": [ROW, {"visits": 1, "age": 2.5, "income": -3}]})
    assert x.dtype == np.float32 and x.shape == (2, 3)
    np.testing.assert_allclose(x, [[31, 52000.5, 4], [2.5, -3, 1]])


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"{not json", r"malformed JSON: .* at line 1 column 2 \(char 1\)"),
        (b'{"instances": [1,]}', r"malformed JSON: .*line 1 column"),
        (b"", "empty"),
        (b"\xff\xfe\x00", "not UTF-8 text: invalid start byte at byte 0"),
        (b"\xef\xbb\xbf{}", "malformed JSON: Unexpected UTF-8 BOM"),
        (b"[" * 50_000, "nested too deeply"),
        (b'{"instances": [{"age": ' + b"9" * 5000 + b"}]}", r"malformed JSON: Exceeds the limit \(4300 digits\)"),
    ],
)
def test_v1_malformed_json(body, expected):
    assert refused(v1, body) == refused(v1, body)  # deterministic
    import re

    assert re.search(expected, refused(v1, body))


@pytest.mark.parametrize(
    "doc, expected",
    [
        ([ROW], "must be a JSON object"),
        ("hello", "must be a JSON object"),
        ({}, "no 'instances'"),
        ({"inputs": []}, "'inputs' is for /v2"),
        ({"instances": [ROW], "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({"instances": ROW}, "'instances' must be a list of objects, got an object"),
        ({"instances": []}, "batch is empty"),
        (
            {"instances": [ROW, [1, 2, 3]]},
            r"instances\[1\] must be an object of feature: value, got a list \[1, 2, 3\]",
        ),
        ({"instances": [ROW, {"age": 1, "income": 2}]}, r"instances\[1\] is missing feature 'visits'"),
        ({"instances": [{**ROW, "zip": 1}]}, r"instances\[0\] has unknown feature 'zip'"),
        (
            {"instances": [{**ROW, "age": "31"}]},
            r"feature 'age' of instances\[0\] must be a number, got a string \"31\"",
        ),
        (
            {"instances": [{**ROW, "age": True}]},
            r"feature 'age' of instances\[0\] must be a number, got a boolean true",
        ),
        ({"instances": [{**ROW, "age": [1]}]}, r"'age' of instances\[0\] must be a number, got a list \[1\]"),
        (
            {"instances": [{**ROW, "age": {"v": 1}}]},
            r"'age' of instances\[0\] must be a number, got an object",
        ),
        (
            {"instances": [ROW, {**ROW, "income": None}]},
            r"feature 'income' of instances\[1\] is null; missing values",
        ),
        (
            {"instances": [{**ROW, "visits": 1e300}]},
            r"'visits' of instances\[0\] is out of float32 range: 1e\+300",
        ),
        ({"instances": [{**ROW, "visits": 10**400}]}, r"'visits' of instances\[0\] is out of float32 range"),
    ],
)
def test_v1_bad_requests(doc, expected):
    import re

    message = refused(v1, doc)
    assert re.search(expected, message), message


def test_v1_nan_and_inf_literals():
    body = b'{"instances": [{"age": NaN, "income": 1, "visits": 2}]}'
    assert "feature 'age' of instances[0] is NaN" in refused(v1, body)
    x = v1(body, allow_missing=True)
    assert math.isnan(x[0, 0])
    for literal in (b"Infinity", b"-Infinity"):
        body = b'{"instances": [{"age": 1, "income": ' + literal + b', "visits": 2}]}'
        assert "feature 'income' of instances[0] is" in refused(v1, body, allow_missing=True)
        assert "infinite" in refused(v1, body)


def test_v1_null_allowed_as_missing():
    x = v1({"instances": [{**ROW, "income": None}]}, allow_missing=True)
    assert math.isnan(x[0, 1]) and x[0, 0] == 31


def test_v1_batch_limit_is_413():
    assert v1({"instances": [ROW] * 3}, max_instances=3).shape == (3, 3)
    assert "batch of 4 instances is over the limit of 3" in refused(
        v1, {"instances": [ROW] * 4}, max_instances=3, status=413
    )


# ---------------------------------------------------------------------------------------------- V2


def per_feature(n=2, datatype="FP32", **over):
    cols = {"age": [31, 40][:n], "income": [1.5, 2.5][:n], "visits": [4, 5][:n]}
    return {
        "inputs": [
            {"name": f, "shape": [n], "datatype": over.get(f, datatype), "data": cols[f]}
            for f in ["visits", "age", "income"]
        ]
    }


def test_v2_one_tensor_per_feature_any_order():
    x, rid = v2({"id": "r1", **per_feature()})
    assert rid == "r1" and x.dtype == np.float32
    np.testing.assert_allclose(x, [[31, 1.5, 4], [40, 2.5, 5]])


def test_v2_per_feature_shape_n_by_1_and_nested_data():
    doc = per_feature()
    doc["inputs"][0] = {"name": "visits", "shape": [2, 1], "datatype": "INT64", "data": [[4], [5]]}
    x, rid = v2(doc)
    assert rid is None
    np.testing.assert_allclose(x[:, 2], [4, 5])


def test_v2_single_2d_tensor_flat_or_nested():
    flat = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]}
    nested = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}]}
    for doc in (flat, nested):
        x, _ = v2(doc)
        np.testing.assert_allclose(x, [[1, 2, 3], [4, 5, 6]])


def test_v2_accepts_tritonclient_extras():
    doc = {
        **per_feature(),
        "outputs": [{"name": "predict", "parameters": {"binary_data": False}}],
        "parameters": {},
    }
    doc["inputs"][0]["parameters"] = {}
    assert v2(doc)[0].shape == (2, 3)


def test_v2_single_feature_model():
    x, _ = v2({"inputs": [{"name": "age", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}, features=["age"])
    np.testing.assert_allclose(x, [[1], [2]])


def _tensor(**kw):
    return {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], **kw}]}


@pytest.mark.parametrize(
    "doc, expected",
    [
        (b"{", r"malformed JSON: .*\(char 1\)"),
        ([1], "must be a JSON object"),
        ({"instances": [ROW]}, "'instances' is for /v1"),
        ({"id": 5, **per_feature()}, "'id' must be a string, got 5"),
        ({}, "no 'inputs'"),
        ({"inputs": {"name": "x"}}, "'inputs' must be a list of tensors, got an object"),
        ({"inputs": []}, "'inputs' is empty"),
        ({"inputs": [3]}, r"inputs\[0\] must be an object"),
        (_tensor(name=3), r"inputs\[0\]: 'name' must be a string, got 3"),
        (_tensor(colour="red"), r"inputs\[0\] has unknown key\(s\) \['colour'\]"),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]},
            r"inputs\[0\] \('x'\) has no 'data'",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]},
            "has parameters.binary_data_size but the request has no inference-header-content-length header",
        ),
        ({"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2, 3]}]}, r"\('x'\) has no 'shape'"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "data": [1, 2, 3]}]}, r"\('x'\) has no 'datatype'"),
        (
            _tensor(datatype="BYTES"),
            r"inputs\[0\] \('x'\): datatype BYTES; one \[n, 3\] tensor takes a number type",
        ),
        (_tensor(datatype="FP16"), r"datatype \"FP16\" is not supported"),
        (
            _tensor(shape=[1, 3, 1]),
            r"'shape' must be \[n\] or \[n, m\] of non-negative integers, got \[1, 3, 1\]",
        ),
        (_tensor(shape=[-1, 3]), r"'shape' must be .* got \[-1, 3\]"),
        (_tensor(shape="1x3"), r"'shape' must be"),
        (_tensor(shape=[0, 3], data=[]), "batch is empty"),
        (_tensor(shape=[1, 3], data=[1, 2]), r"shape \[1, 3\] needs 3 values, but 'data' has 2"),
        (_tensor(shape=[2, 3], data=[[1, 2], [3, 4, 5, 6]]), r"nested 'data' does not match shape \[2, 3\]"),
        (_tensor(shape=[1, 3], data=[[[1, 2, 3]]]), r"does not match shape|nested deeper"),
        (_tensor(data="123"), r"'data' must be a list, got a string"),
        (_tensor(shape=[1, 4], data=[1, 2, 3, 4]), r"has shape \[1, 4\], but the model takes 3 features"),
        (_tensor(data=[1, "2", 3]), r"feature 'income' of instance 0 must be a number, got a string \"2\""),
        (_tensor(data=[1, 2, None]), r"feature 'visits' of instance 0 is null"),
        (
            _tensor(datatype="INT32", data=[1, 2.5, 3]),
            r"'income' of instance 0 must be an integer for datatype INT32",
        ),
        (
            _tensor(datatype="INT32", data=[1, 2**31, 3]),
            r"'income' of instance 0 is out of range for datatype INT32",
        ),
        (
            {"inputs": [{"name": "zip", "shape": [1], "datatype": "FP32", "data": [1]}]},
            r"inputs\[0\] has unknown name 'zip'; send one tensor per feature",
        ),
        (
            {"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}] * 2},
            r"inputs\[1\] repeats feature 'age' \(already inputs\[0\]\)",
        ),
        (
            {"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}]},
            r"no input tensor for feature\(s\) \['income', 'visits'\]",
        ),
        (  # found by the fuzzer: a 500 before
            {"inputs": [], "outputs": [{"name": "predict", "parameters": "binary"}]},
            r"outputs\[0\]\.parameters must be an object, got a string",
        ),
    ],
)
def test_v2_bad_requests(doc, expected):
    import re

    message = refused(v2, doc)
    assert re.search(expected, message), message


def test_v2_per_feature_errors():
    doc = per_feature()
    doc["inputs"][1]["shape"] = [2, 2]
    doc["inputs"][1]["data"] = [1, 2, 3, 4]
    assert "inputs[1] ('age') has shape [2, 2]; a per-feature tensor is [n] or [n, 1]" in refused(v2, doc)

    doc = per_feature()
    doc["inputs"][2] = {"name": "income", "shape": [1], "datatype": "FP32", "data": [1.0]}
    assert "input tensors disagree on the batch size: {'visits': 2, 'age': 2, 'income': 1}" in refused(v2, doc)

    doc = per_feature(age="BOOL")
    assert "inputs[1] ('age'): datatype \"BOOL\" is not supported" in refused(v2, doc)

    doc = per_feature()
    doc["inputs"][1]["data"] = [31, True]
    assert "feature 'age' of instance 1 must be a number, got a boolean true" in refused(v2, doc)


def test_v2_missing_values_and_limits():
    body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, NaN, 3]}]}'
    assert "feature 'income' of instance 0 is NaN" in refused(v2, body)
    assert math.isnan(v2(body, allow_missing=True)[0][0, 1])
    body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, Infinity, 3]}]}'
    assert "infinite" in refused(v2, body, allow_missing=True)
    # the batch limit is checked from the shape, before walking the data
    big = {"inputs": [{"name": "x", "shape": [10**9, 3], "datatype": "FP32", "data": []}]}
    assert "batch of 1000000000 instances is over the limit of 1000" in refused(v2, big, status=413)
    assert v2(_tensor(shape=[1, 3]), max_instances=1)[0].shape == (1, 3)


# ----------------------------------------------------------------------------------------- responses


def test_responses():
    preds = np.array([0.25, 0.5], dtype=np.float32)
    assert v1_response(preds, "3") == {"predictions": [0.25, 0.5], "model_version": "3"}
    assert v2_response("churn", "3", preds, "r1") == {
        "model_name": "churn",
        "model_version": "3",
        "id": "r1",
        "outputs": [{"name": "predict", "shape": [2], "datatype": "FP32", "data": [0.25, 0.5]}],
    }
    assert "id" not in v2_response("churn", "3", preds, None)
    meta = v2_metadata("churn", ["3", "4"], ["a", "b"])
    assert meta == {
        "name": "churn",
        "versions": ["3", "4"],
        "platform": "xgboost",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1]},
            {"name": "b", "datatype": "FP32", "shape": [-1]},
        ],
        "outputs": [{"name": "predict", "datatype": "FP32", "shape": [-1], "parameters": {"task": "binary"}}],
    }
    json.dumps(meta)
