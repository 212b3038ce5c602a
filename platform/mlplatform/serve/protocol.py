"""The wire formats of the endpoint: V1 (`{"instances": [...]}`) and the Open Inference Protocol V2, with its
binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes, then raw tensors).

Pure Python + NumPy (no Ray), so every rule about what a request may contain is unit-tested without a cluster.
Parsers raise `RequestError` whose message names the problem (field, instance index, bad value) and whose
status is the HTTP status to answer with; nothing a client sends may surface as a 500.

A categorical feature (one with categories in the model's input schema) takes its raw values, e.g.
``"plan": "pro"``, and reaches the model as the value's index in its categories: the encoding ingest used
(`mlplatform.data.schema`). A number there is refused, as is a value outside the categories.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np

from mlplatform.errors import RequestError

__all__ = [
    "load_json",
    "Codebook",
    "codebook",
    "BINARY_HEADER",
    "Parsed",
    "parse_v1",
    "parse_v2",
    "v1_response",
    "v2_response",
    "v2_binary_response",
    "v2_metadata",
    "V2_DATATYPES",
    "FLOAT32_MAX",
    "curl_line",
    "example_row",
    "categories_of",
    "clip",
]

#: Tensor datatypes accepted in V2 requests: numbers (fed to XGBoost as float32) and BYTES (categorical values).
V2_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BYTES")
_NUMPY = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
#: The binary tensor extension's header: the length of the JSON part of the body.
BINARY_HEADER = "inference-header-content-length"

#: Categorical feature → {raw value: code}; built once per endpoint with `codebook`.
Codebook = dict[str, dict[str, int]]


def codebook(categories: dict[str, list[str]] | None) -> Codebook:
    """The lookup of each categorical feature's raw values: the code of a value is its index in `categories`."""
    return {f: {value: code for code, value in enumerate(values)} for f, values in (categories or {}).items()}


_INT_RANGE = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}
#: The largest magnitude a feature value may have: XGBoost predicts on float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def clip(text: str, limit: int = 60) -> str:
    """A client's text cut for an error message: an answer never echoes a long request back."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of a client value for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return clip(text, limit)


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
    except ValueError as exc:
        # Python refuses to convert an integer of more than 4 300 digits (CVE-2020-10735); a 500 before this.
        raise RequestError(400, f"malformed JSON: {str(exc).split(';')[0]}") from None
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
    kind = type(value)
    if (kind is float or kind is int) and integer is None and -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return value  # the common case, checked once (NaN and infinities fail the range test)
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
    if abs(number) > FLOAT32_MAX:
        raise RequestError(400, f"{where} is out of float32 range: {_show(value)}")
    return number


def _allowed(codes: dict[str, int], limit: int = 20) -> str:
    """The allowed values for a message: all of them, or the first `limit` and how many more."""
    values = list(codes)
    return str(values) if len(values) <= limit else f"{values[:limit]} and {len(values) - limit} more"


def _category(value: Any, where: str, allow_missing: bool, codes: dict[str, int]) -> float:
    """One categorical value as its code, or NaN for an allowed missing value."""
    if isinstance(value, str):
        code = codes.get(value)
        if code is not None:
            return float(code)
        raise RequestError(400, f"{where} is {_show(value)}, not one of {_allowed(codes)}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if allow_missing:
            return math.nan
        raise RequestError(400, f"{where} is null; missing values are not allowed by this endpoint")
    shown = f"{_json_type(value)} {_show(value)}"
    raise RequestError(400, f"{where} takes one of {_allowed(codes)} (a string), got {shown}")


def _check_batch_size(n: int, max_instances: int) -> None:
    if n == 0:
        raise RequestError(400, "the batch is empty; send at least one instance")
    if n > max_instances:
        raise RequestError(413, f"batch of {n} instances is over the limit of {max_instances} per request; split it")


class Parsed(NamedTuple):
    """A valid request: the feature matrix, the client's request id (V2), its sticky routing key, and whether
    it asked for binary output tensors (V2 binary extension)."""

    x: np.ndarray
    request_id: str | None = None
    routing_key: str | None = None
    binary_output: bool = False


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
    body: bytes,
    features: list[str],
    *,
    max_instances: int,
    allow_missing: bool,
    routing_field: str | None = None,
    codes: Codebook | None = None,
) -> Parsed:
    """Parse a V1 request ``{"instances": [{feature: value, ...}, ...]}``.

    Args:
        body: the raw request body.
        features: the model's input features, in model order.
        max_instances: the most instances accepted (more → 413).
        allow_missing: accept null/NaN values as missing.
        routing_field: a top-level key allowed beside ``instances`` that holds the sticky routing key.
        codes: the categorical features' raw values (`codebook`); the others take numbers.

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
    codes = codes or {}
    kinds = [codes.get(f) for f in features]
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
            where = f"feature {feature!r} of instances[{i}]"
            cats = kinds[j]
            value = instance[feature]
            out[i, j] = (
                _number(value, where, allow_missing) if cats is None else _category(value, where, allow_missing, cats)
            )
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


class _Tensor(NamedTuple):
    """One V2 input tensor: its values are a flat row-major list (JSON) or NumPy array (binary)."""

    name: str
    shape: list[int]
    datatype: str
    values: Any
    where: str


def _tensor(raw: Any, k: int, max_instances: int) -> tuple[str, list[int], str, Any, int | None]:
    """Validate one V2 input tensor's envelope; return (name, shape, datatype, JSON data, binary size or None)."""
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
    params = raw.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise RequestError(400, f"{where}: 'parameters' must be an object, got {_json_type(params)}")
    size = (params or {}).get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise RequestError(400, f"{where}: parameters.binary_data_size must be an integer >= 0, got {_show(size)}")
    if size is not None and "data" in raw:
        raise RequestError(400, f"{where} has both 'data' and parameters.binary_data_size; send one")
    if size is None and "data" not in raw:
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
    return name, shape, datatype, raw.get("data"), size


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    """The JSON part of a V2 body and, with the binary extension's header, the binary part after it."""
    if header_length is None:
        return body, None
    length = header_length.strip()
    if not length.isdigit() or int(length) > len(body):
        raise RequestError(
            400,
            f"{BINARY_HEADER} is {_show(header_length)}, but it must be the length of the JSON header "
            f"(an integer, at most the body's {len(body)} bytes)",
        )
    return body[: int(length)], memoryview(body)[int(length) :]


def _binary_values(chunk: memoryview, datatype: str, count: int, where: str) -> Any:
    """The `count` values of one binary tensor: a NumPy array (numbers) or a list of str (BYTES)."""
    if datatype != "BYTES":
        itemsize = np.dtype(_NUMPY[datatype]).itemsize
        if len(chunk) != count * itemsize:
            raise RequestError(
                400,
                f"{where}: binary_data_size is {len(chunk)} bytes, but {count} {datatype} values take "
                f"{count * itemsize}",
            )
        return np.frombuffer(chunk, dtype=_NUMPY[datatype])
    # BYTES: each element is a 4-byte little-endian length, then that many bytes.
    out: list[str] = []
    pos = 0
    raw = bytes(chunk)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise RequestError(400, f"{where}: BYTES element {len(out)} is cut short (no 4-byte length)")
        n = int.from_bytes(raw[pos : pos + 4], "little")
        if pos + 4 + n > len(raw):
            raise RequestError(
                400, f"{where}: BYTES element {len(out)} declares {n} bytes, only {len(raw) - pos - 4} remain"
            )
        try:
            out.append(raw[pos + 4 : pos + 4 + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, f"{where}: BYTES element {len(out)} is not UTF-8 text") from None
        pos += 4 + n
    if len(out) != count:
        raise RequestError(400, f"{where}: shape needs {count} BYTES elements, the binary data holds {len(out)}")
    return out


def _binary_numbers(values: np.ndarray, datatype: str, where: str, allow_missing: bool) -> np.ndarray:
    """Binary numbers as float32, with the same rules as JSON numbers (NaN is missing, never an infinity)."""
    if datatype in ("FP32", "FP64"):
        if np.isinf(values).any():
            raise RequestError(400, f"{where}: infinite values are not allowed")
        if not allow_missing and np.isnan(values).any():
            raise RequestError(400, f"{where}: NaN values; missing values are not allowed by this endpoint")
        if datatype == "FP64" and (np.abs(values[~np.isnan(values)]) > FLOAT32_MAX).any():
            raise RequestError(400, f"{where}: a value is out of float32 range")
    return values.astype(np.float32)


def _outputs(doc: dict[str, Any], params: dict[str, Any] | None) -> bool:
    """Validate the requested outputs; True when the client asked for them as binary tensors."""
    binary = (params or {}).get("binary_data_output", False)
    if not isinstance(binary, bool):
        raise RequestError(400, f"parameters.binary_data_output must be true or false, got {_show(binary)}")
    outputs = doc.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list):
        raise RequestError(400, f"'outputs' must be a list, got {_json_type(outputs)}")
    for k, out in enumerate(outputs):
        if not isinstance(out, dict) or out.get("name") != "predict":
            name = out.get("name") if isinstance(out, dict) else out
            raise RequestError(400, f"outputs[{k}] asks for {_show(name)}; this model has one output, 'predict'")
        given = out.get("parameters")
        if given is not None and not isinstance(given, dict):
            raise RequestError(400, f"outputs[{k}].parameters must be an object, got {_json_type(given)}")
        flag = (given or {}).get("binary_data", binary)
        if not isinstance(flag, bool):
            raise RequestError(400, f"outputs[{k}].parameters.binary_data must be true or false, got {_show(flag)}")
        binary = flag
    return binary


def parse_v2(
    body: bytes,
    features: list[str],
    *,
    max_instances: int,
    allow_missing: bool,
    routing_field: str | None = None,
    codes: Codebook | None = None,
    header_length: str | None = None,
) -> Parsed:
    """Parse an Open Inference Protocol V2 request, JSON or with binary tensors.

    Two layouts are accepted: one tensor per feature (named after it, shape [n] or [n, 1]; BYTES for a
    categorical feature, a number type otherwise), or a single numeric tensor of shape [n, len(features)] (any
    name) whose columns are the features in model order (only for models without categorical features).

    Args:
        body: the raw request body.
        features: the model's input features, in model order.
        max_instances: the most instances accepted (more → 413).
        allow_missing: accept null/NaN values as missing.
        routing_field: the key of the request's ``parameters`` that holds the sticky routing key.
        codes: the categorical features' raw values (`codebook`).
        header_length: the request's Inference-Header-Content-Length header, if any (binary extension).

    Returns:
        The float32 array of shape [n, len(features)], the request's `id`, the routing key (or None) and
        whether the answer should be binary.

    Raises:
        RequestError: the body is not a valid request; the message names the problem.
    """
    header, binary = _split_binary(body, header_length)
    doc = load_json(header)
    if not isinstance(doc, dict):
        raise RequestError(400, f'request body must be a JSON object {{"inputs": [...]}}, got {_json_type(doc)}')
    # KServe's client also sends model_name (and model_version): the route names both, so they are ignored.
    extra = sorted(set(doc) - {"id", "inputs", "outputs", "parameters", "model_name", "model_version"})
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
    binary_output = _outputs(doc, params)
    if "inputs" not in doc:
        raise RequestError(400, "request has no 'inputs'")
    inputs = doc["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(400, f"'inputs' must be a list of tensors, got {_json_type(inputs)}")
    if not inputs:
        raise RequestError(400, "'inputs' is empty; send one tensor per feature or one [n, features] tensor")
    tensors = []
    offset = 0
    for k, raw in enumerate(inputs):
        name, shape, datatype, data, size = _tensor(raw, k, max_instances)
        where = f"inputs[{k}] ({name!r})"
        if size is None:
            values: Any = _flatten(data, shape, where)
        else:
            if binary is None:
                raise RequestError(
                    400, f"{where} has parameters.binary_data_size but the request has no {BINARY_HEADER} header"
                )
            if offset + size > len(binary):
                raise RequestError(
                    400,
                    f"{where}: binary_data_size is {size} bytes, but only {len(binary) - offset} bytes of binary "
                    "data remain in the body",
                )
            values = _binary_values(binary[offset : offset + size], datatype, math.prod(shape), where)
            offset += size
        tensors.append(_Tensor(name, shape, datatype, values, where))
    if binary is not None and offset != len(binary):
        raise RequestError(
            400,
            f"the body holds {len(binary) - offset} bytes after the tensors' declared binary data; check "
            f"{BINARY_HEADER} and each binary_data_size",
        )
    codes = codes or {}
    n_features = len(features)

    # A single 2-D tensor holds the whole batch, columns in model order.
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and not (n_features == 1 and tensors[0].name == features[0]):
        t = tensors[0]
        if t.shape[1] != n_features:
            raise RequestError(
                400,
                f"{t.where} has shape {t.shape}, but the model takes {n_features} features {features}; "
                f"send shape [n, {n_features}] or one tensor per feature",
            )
        if codes:
            raise RequestError(
                400,
                f"{t.where}: one [n, {n_features}] tensor holds numbers only, and this model has categorical "
                f"feature(s) {list(codes)}; send one tensor per feature (BYTES for those)",
            )
        if t.datatype == "BYTES":
            raise RequestError(400, f"{t.where}: datatype BYTES; one [n, {n_features}] tensor takes a number type")
        out = _numeric_tensor(t, allow_missing, features).reshape(t.shape[0], n_features)
        return Parsed(out, request_id, routing_key, binary_output)

    # One tensor per feature.
    by_name: dict[str, int] = {}
    for k, t in enumerate(tensors):
        if t.name not in features:
            raise RequestError(
                400,
                f"inputs[{k}] has unknown name {t.name!r}; send one tensor per feature of {features}, "
                f"or a single tensor of shape [n, {n_features}]",
            )
        if t.name in by_name:
            raise RequestError(400, f"inputs[{k}] repeats feature {t.name!r} (already inputs[{by_name[t.name]}])")
        if len(t.shape) == 2 and t.shape[1] != 1:
            raise RequestError(400, f"{t.where} has shape {t.shape}; a per-feature tensor is [n] or [n, 1]")
        expected = "BYTES" if t.name in codes else None
        if (expected == "BYTES") != (t.datatype == "BYTES"):
            wanted = "BYTES" if expected else f"a number type ({', '.join(_NUMPY)})"
            raise RequestError(
                400, f"{t.where}: datatype {t.datatype} does not match the model's metadata: the input takes {wanted}"
            )
        by_name[t.name] = k
    missing = [f for f in features if f not in by_name]
    if missing:
        raise RequestError(400, f"no input tensor for feature(s) {missing}")
    sizes = {tensors[k].name: tensors[k].shape[0] for k in by_name.values()}
    if len(set(sizes.values())) > 1:
        raise RequestError(400, f"input tensors disagree on the batch size: {sizes}")
    n = next(iter(sizes.values()))
    out = np.empty((n, n_features), dtype=np.float32)
    for j, feature in enumerate(features):
        t = tensors[by_name[feature]]
        cats = codes.get(feature)
        if cats is None:
            out[:, j] = _numeric_tensor(t, allow_missing, [feature])
        else:
            for i, value in enumerate(t.values):
                out[i, j] = _category(value, f"feature {feature!r} of instance {i}", allow_missing, cats)
    return Parsed(out, request_id, routing_key, binary_output)


def _numeric_tensor(t: _Tensor, allow_missing: bool, columns: list[str]) -> np.ndarray:
    """A numeric tensor's values as a flat float32 array; `columns` name its columns in messages."""
    if isinstance(t.values, np.ndarray):
        return _binary_numbers(t.values, t.datatype, t.where, allow_missing)
    integer = t.datatype if t.datatype in _INT_RANGE else None
    m = len(columns)
    out = np.empty(len(t.values), dtype=np.float32)
    for pos, value in enumerate(t.values):
        i, j = divmod(pos, m)
        out[pos] = _number(value, f"feature {columns[j]!r} of instance {i}", allow_missing, integer)
    return out


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


def v2_binary_response(model_name: str, version: str, preds: Any, request_id: str | None) -> tuple[bytes, int]:
    """The V2 response with the ``predict`` tensor as binary data: (body, length of its JSON header)."""
    arr = np.ascontiguousarray(preds, dtype="<f4")
    head: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        head["id"] = request_id
    head["outputs"] = [
        {
            "name": "predict",
            "shape": list(arr.shape),
            "datatype": "FP32",
            "parameters": {"binary_data_size": arr.nbytes},
        }
    ]
    header = json.dumps(head, separators=(",", ":")).encode()
    return header + arr.tobytes(), len(header)


def v2_metadata(
    model_name: str,
    versions: list[str],
    features: list[str],
    schema: list[dict[str, Any]] | None = None,
    *,
    task: str = "binary",
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """The V2 model metadata: one input per feature (BYTES for a categorical, FP32 otherwise), one FP32 output
    ``predict``. With the model's input schema (`mlplatform.data.schema.FeatureSchema` dicts), each input's
    ``parameters`` say whether it may be missing, a typical value and, for a categorical, its categories.
    The output's ``parameters`` say the task; a multiclass output is one probability per class (shape
    [-1, classes]), the classes named in the label's raw values."""
    described = {f["name"]: f for f in schema or []}
    inputs = []
    for name in features:
        spec = described.get(name)
        categorical = spec is not None and spec.get("kind") == "categorical"
        tensor: dict[str, Any] = {"name": name, "datatype": "BYTES" if categorical else "FP32", "shape": [-1]}
        if spec is not None:
            tensor["parameters"] = {
                "nullable": bool(spec.get("nullable")),
                **({"categories": list(spec.get("categories") or [])} if categorical else {}),
                **({"example": spec["example"]} if spec.get("example") is not None else {}),
            }
        inputs.append(tensor)
    return {
        "name": model_name,
        "versions": list(versions),
        "platform": "xgboost",
        "inputs": inputs,
        "outputs": [
            {
                "name": "predict",
                "datatype": "FP32",
                "shape": [-1, len(classes)] if task == "multiclass" and classes else [-1],
                "parameters": {"task": task, **({"classes": list(classes)} if classes else {})},
            }
        ],
    }


def curl_line(base_url: str, model: str, example: dict[str, Any], *, with_key: bool) -> str:
    """A curl command that works as printed: one V1 instance with the given feature values.

    With `with_key`, it sends the first key of $MLPLATFORM_API_KEYS (the same variable the endpoint reads).
    """
    body = json.dumps({"instances": [example]})
    auth = ' -H "Authorization: Bearer ${MLPLATFORM_API_KEYS%%,*}"' if with_key else ""
    return f"curl -s -X POST {base_url}/v1/models/{model}:predict -H 'Content-Type: application/json'{auth} -d '{body}'"


def example_row(metadata: dict[str, Any]) -> dict[str, Any]:
    """A realistic instance from V2 metadata: each input's typical value, 1.0 where the metadata has none."""
    row = {}
    for tensor in metadata.get("inputs") or []:
        example = (tensor.get("parameters") or {}).get("example")
        row[tensor["name"]] = example if example is not None else 1.0
    return row


def categories_of(metadata: dict[str, Any]) -> dict[str, list[str]]:
    """Categorical input → its raw values in code order, from V2 metadata (`v2_metadata`)."""
    return {
        t["name"]: list(t["parameters"]["categories"])
        for t in metadata.get("inputs") or []
        if "categories" in (t.get("parameters") or {})
    }
