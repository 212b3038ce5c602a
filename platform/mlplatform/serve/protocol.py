"""The wire formats of the endpoint: V1 (`{"instances": [...]}`) and the Open Inference Protocol V2.

Pure Python + NumPy (no Ray), so every rule about what a request may contain is unit-tested without a cluster.
Parsers raise `RequestError` whose message names the problem (field, instance index, bad value) and whose
status is the HTTP status to answer with; nothing a client sends may surface as a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np

from mlplatform.errors import RequestError

__all__ = [
    "load_json",
    "Parsed",
    "parse_v1",
    "parse_v2",
    "v1_response",
    "v2_response",
    "v2_metadata",
    "V2_DATATYPES",
    "curl_line",
]

#: Tensor datatypes accepted in V2 requests; everything is fed to XGBoost as float32.
V2_DATATYPES = ("FP32", "FP64", "INT32", "INT64")
_INT_RANGE = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
_F32_MAX = float(np.finfo(np.float32).max)


def _show(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of a client value for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def load_json(body: bytes) -> Any:
    """Decode a JSON request body; RequestError (400) names what is wrong."""
    if not body or not body.strip():
        raise RequestError(400, "request body is empty; send a JSON object")
    try:
        # JSON over HTTP is UTF-8 (RFC 8259); json.loads on bytes would also guess UTF-16/32.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"request body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        # json.loads also accepts the NaN/Infinity literals; they are checked per value below.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        ) from None
    except RecursionError:
        # A body of a million '[' would otherwise escape as a 500.
        raise RequestError(400, "malformed JSON: nested too deeply") from None


def _number(value: Any, where: str, allow_missing: bool, integer: str | None = None) -> float:
    """One feature value as a float, or NaN for an allowed missing value.

    Args:
        value: the decoded JSON value.
        where: names the value in messages, e.g. ``feature 'age' of instances[3]``.
        allow_missing: whether null/NaN mean "missing" instead of being an error.
        integer: a V2 integer datatype the value must fit (INT32/INT64), or None for floats.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if allow_missing:
            return math.nan
        shown = "null" if value is None else "NaN"
        raise RequestError(400, f"{where} is {shown}; missing values are not allowed by this endpoint")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{where} must be a number, got {_json_type(value)} {_show(value)}")
    if integer is not None:
        if isinstance(value, float) and not value.is_integer():
            raise RequestError(400, f"{where} must be an integer for datatype {integer}, got {_show(value)}")
        low, high = _INT_RANGE[integer]
        if not low <= value <= high:
            raise RequestError(400, f"{where} is out of range for datatype {integer}: {_show(value)}")
    if isinstance(value, float) and math.isinf(value):
        # Infinity is never "missing" and XGBoost refuses it, so it is refused whatever allow_missing says.
        raise RequestError(400, f"{where} is {value}; infinite values are not allowed")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if abs(number) > _F32_MAX:
        raise RequestError(400, f"{where} is out of float32 range: {_show(value)}")
    return number


def _check_batch_size(n: int, max_instances: int) -> None:
    if n == 0:
        raise RequestError(400, "the batch is empty; send at least one instance")
    if n > max_instances:
        raise RequestError(413, f"batch of {n} instances is over the limit of {max_instances} per request; split it")


class Parsed(NamedTuple):
    """A valid request: the feature matrix, the client's request id (V2) and its sticky routing key."""

    x: np.ndarray
    request_id: str | None = None
    routing_key: str | None = None


def _routing_key(container: Any, field: str | None, where: str) -> str | None:
    if field is None or not isinstance(container, dict) or field not in container:
        return None
    value = container[field]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(400, f"{where} must be a string or an integer, got {_json_type(value)} {_show(value)}")
    return str(value)


def parse_v1(
    body: bytes, features: list[str], *, max_instances: int, allow_missing: bool, routing_field: str | None = None
) -> Parsed:
    """Parse a V1 request ``{"instances": [{feature: value, ...}, ...]}``.

    Args:
        body: the raw request body.
        features: the model's input features, in model order.
        max_instances: the most instances accepted (more → 413).
        allow_missing: accept null/NaN values as missing.
        routing_field: a top-level key allowed beside ``instances`` that holds the sticky routing key.

    Returns:
        A float32 array of shape [n, len(features)] and the routing key, if any.

    Raises:
        RequestError: the body is not a valid request; the message names the problem.
    """
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise RequestError(400, f'request body must be a JSON object {{"instances": [...]}}, got {_json_type(doc)}')
    if "instances" not in doc:
        hint = (
            " (this V1 endpoint takes 'instances'; 'inputs' is for /v2/models/<name>/infer)" if "inputs" in doc else ""
        )
        raise RequestError(400, f"request has no 'instances'{hint}")
    extra = sorted(k for k in doc if k not in ("instances", routing_field))
    if extra:
        allowed = "'instances'" + (f" and {routing_field!r}" if routing_field else "")
        raise RequestError(400, f"unknown key(s) {extra} in request; only {allowed} allowed")
    routing_key = _routing_key(doc, routing_field, f"routing key {routing_field!r}")
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise RequestError(400, f"'instances' must be a list of objects, got {_json_type(instances)}")
    _check_batch_size(len(instances), max_instances)

    known = set(features)
    out = np.empty((len(instances), len(features)), dtype=np.float32)
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RequestError(
                400,
                f"instances[{i}] must be an object of feature: value, got {_json_type(instance)} {_show(instance)}",
            )
        for key in instance:
            if key not in known:
                raise RequestError(400, f"instances[{i}] has unknown feature {key!r}; the model takes {features}")
        for j, feature in enumerate(features):
            if feature not in instance:
                raise RequestError(400, f"instances[{i}] is missing feature {feature!r}")
            out[i, j] = _number(instance[feature], f"feature {feature!r} of instances[{i}]", allow_missing)
    return Parsed(out, None, routing_key)


def _flatten(data: Any, shape: list[int], where: str) -> list[Any]:
    """V2 `data` as a flat row-major list; nested data must follow `shape` exactly."""
    if not isinstance(data, list):
        raise RequestError(400, f"{where}: 'data' must be a list, got {_json_type(data)}")
    expected = math.prod(shape)
    if not any(isinstance(x, list) for x in data):
        if len(data) != expected:
            raise RequestError(400, f"{where}: shape {shape} needs {expected} values, but 'data' has {len(data)}")
        return data

    flat: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(node, list):
                raise RequestError(400, f"{where}: 'data' is nested deeper than shape {shape}")
            flat.append(node)
            return
        if not isinstance(node, list) or len(node) != shape[depth]:
            got = f"length {len(node)}" if isinstance(node, list) else _json_type(node)
            raise RequestError(
                400,
                f"{where}: nested 'data' does not match shape {shape}: expected a list of {shape[depth]} "
                f"at depth {depth}, got {got}",
            )
        for child in node:
            walk(child, depth + 1)

    walk(data, 0)
    return flat


def _tensor(raw: Any, k: int, max_instances: int) -> tuple[str, list[int], str, Any]:
    """Validate one V2 input tensor's envelope; return (name, shape, datatype, data)."""
    where = f"inputs[{k}]"
    if not isinstance(raw, dict):
        raise RequestError(400, f"{where} must be an object with name, shape, datatype and data, got {_json_type(raw)}")
    extra = sorted(set(raw) - {"name", "shape", "datatype", "data", "parameters"})
    if extra:
        raise RequestError(400, f"{where} has unknown key(s) {extra}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise RequestError(400, f"{where}: 'name' must be a string, got {_show(name)}")
    where = f"inputs[{k}] ({name!r})"
    if "data" not in raw:
        params = raw.get("parameters")
        if isinstance(params, dict) and "binary_data_size" in params:
            raise RequestError(400, f"{where}: binary tensor data is not supported; send the values as JSON 'data'")
        raise RequestError(400, f"{where} has no 'data'")
    for key in ("shape", "datatype"):
        if key not in raw:
            raise RequestError(400, f"{where} has no '{key}'")
    shape = raw["shape"]
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(400, f"{where}: 'shape' must be [n] or [n, m] of non-negative integers, got {_show(shape)}")
    # Checked before flattening so an absurd shape cannot make us walk a huge body first.
    _check_batch_size(shape[0], max_instances)
    datatype = raw["datatype"]
    if datatype not in V2_DATATYPES:
        raise RequestError(
            400, f"{where}: datatype {_show(datatype)} is not supported; use one of {', '.join(V2_DATATYPES)}"
        )
    return name, shape, datatype, raw["data"]


def parse_v2(
    body: bytes, features: list[str], *, max_instances: int, allow_missing: bool, routing_field: str | None = None
) -> Parsed:
    """Parse an Open Inference Protocol V2 request.

    Two layouts are accepted: one tensor per feature (named after it, shape [n] or [n, 1]), or a single
    tensor of shape [n, len(features)] (any name) whose columns are the features in model order.

    Args:
        body: the raw request body.
        features: the model's input features, in model order.
        max_instances: the most instances accepted (more → 413).
        allow_missing: accept null/NaN values as missing.
        routing_field: the key of the request's ``parameters`` that holds the sticky routing key.

    Returns:
        The float32 array of shape [n, len(features)], the request's `id` and the routing key (or None).

    Raises:
        RequestError: the body is not a valid request; the message names the problem.
    """
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise RequestError(400, f'request body must be a JSON object {{"inputs": [...]}}, got {_json_type(doc)}')
    extra = sorted(set(doc) - {"id", "inputs", "outputs", "parameters"})
    if extra:
        hint = (
            " (this V2 endpoint takes 'inputs'; 'instances' is for /v1/models/<name>:predict)"
            if "instances" in doc
            else ""
        )
        raise RequestError(400, f"unknown key(s) {extra} in request{hint}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, f"'id' must be a string, got {_show(request_id)}")
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise RequestError(400, f"'parameters' must be an object, got {_json_type(params)}")
    routing_key = _routing_key(params, routing_field, f"parameters.{routing_field}")
    if "inputs" not in doc:
        raise RequestError(400, "request has no 'inputs'")
    inputs = doc["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(400, f"'inputs' must be a list of tensors, got {_json_type(inputs)}")
    if not inputs:
        raise RequestError(400, "'inputs' is empty; send one tensor per feature or one [n, features] tensor")
    tensors = [_tensor(raw, k, max_instances) for k, raw in enumerate(inputs)]
    n_features = len(features)

    # A single 2-D tensor holds the whole batch, columns in model order.
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and not (n_features == 1 and tensors[0][0] == features[0]):
        name, shape, datatype, data = tensors[0]
        if shape[1] != n_features:
            raise RequestError(
                400,
                f"inputs[0] ({name!r}) has shape {shape}, but the model takes {n_features} features "
                f"{features}; "
                f"send shape [n, {n_features}] or one tensor per feature",
            )
        flat = _flatten(data, shape, f"inputs[0] ({name!r})")
        integer = datatype if datatype in _INT_RANGE else None
        out = np.empty((shape[0], n_features), dtype=np.float32)
        for pos, value in enumerate(flat):
            i, j = divmod(pos, n_features)
            out[i, j] = _number(value, f"feature {features[j]!r} of instance {i}", allow_missing, integer)
        return Parsed(out, request_id, routing_key)

    # One tensor per feature.
    by_name: dict[str, int] = {}
    for k, (name, shape, _, _) in enumerate(tensors):
        if name not in features:
            raise RequestError(
                400,
                f"inputs[{k}] has unknown name {name!r}; send one tensor per feature of {features}, "
                f"or a single tensor of shape [n, {n_features}]",
            )
        if name in by_name:
            raise RequestError(400, f"inputs[{k}] repeats feature {name!r} (already inputs[{by_name[name]}])")
        if len(shape) == 2 and shape[1] != 1:
            raise RequestError(400, f"inputs[{k}] ({name!r}) has shape {shape}; a per-feature tensor is [n] or [n, 1]")
        by_name[name] = k
    missing = [f for f in features if f not in by_name]
    if missing:
        raise RequestError(400, f"no input tensor for feature(s) {missing}")
    sizes = {tensors[k][0]: tensors[k][1][0] for k in by_name.values()}
    if len(set(sizes.values())) > 1:
        raise RequestError(400, f"input tensors disagree on the batch size: {sizes}")
    n = next(iter(sizes.values()))
    out = np.empty((n, n_features), dtype=np.float32)
    for j, feature in enumerate(features):
        k = by_name[feature]
        _, shape, datatype, data = tensors[k]
        flat = _flatten(data, shape, f"inputs[{k}] ({feature!r})")
        integer = datatype if datatype in _INT_RANGE else None
        for i, value in enumerate(flat):
            out[i, j] = _number(value, f"feature {feature!r} of instance {i}", allow_missing, integer)
    return Parsed(out, request_id, routing_key)


# ------------------------------------------------------------------------------------------ responses


def _as_list(preds: Any) -> list[Any]:
    return np.asarray(preds, dtype=np.float32).tolist()


def v1_response(preds: Any, version: str) -> dict[str, Any]:
    """The V1 answer: ``{"predictions": [...], "model_version": version}``."""
    return {"predictions": _as_list(preds), "model_version": version}


def v2_response(model_name: str, version: str, preds: Any, request_id: str | None) -> dict[str, Any]:
    """The V2 inference response with one FP32 output tensor named ``predict``."""
    arr = np.asarray(preds, dtype=np.float32)
    out: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        out["id"] = request_id
    out["outputs"] = [{"name": "predict", "shape": list(arr.shape), "datatype": "FP32", "data": arr.ravel().tolist()}]
    return out


def v2_metadata(model_name: str, versions: list[str], features: list[str]) -> dict[str, Any]:
    """The V2 model metadata: one FP32 input per feature, one FP32 output ``predict``."""
    return {
        "name": model_name,
        "versions": list(versions),
        "platform": "xgboost",
        "inputs": [{"name": f, "datatype": "FP32", "shape": [-1]} for f in features],
        "outputs": [{"name": "predict", "datatype": "FP32", "shape": [-1]}],
    }


def curl_line(base_url: str, model: str, features: list[str], *, with_key: bool) -> str:
    """A curl command that works as printed: one V1 instance with every feature set to 1.0.

    With `with_key`, it sends the first key of $MLPLATFORM_API_KEYS (the same variable the endpoint reads).
    """
    body = json.dumps({"instances": [{f: 1.0 for f in features}]})
    auth = ' -H "Authorization: Bearer ${MLPLATFORM_API_KEYS%%,*}"' if with_key else ""
    return f"curl -s -X POST {base_url}/v1/models/{model}:predict -H 'Content-Type: application/json'{auth} -d '{body}'"
