"""The endpoint's OpenAPI document: every route, with request and response bodies as this model takes them.

FastAPI would describe our routes without bodies (they read the raw request, so that a malformed body is a 400
naming the problem rather than a generic 422), so the document is written here from what the parsers accept:
V1 instances with one property per feature (a number, or one of a categorical's raw values), V2 tensors (JSON
or the binary extension), feedback labels and the admin traffic policy. It is served at ``/openapi.json`` behind
the same auth as inference, and a fuzzer can take it as the contract.
"""

from __future__ import annotations

from typing import Any

from mlplatform.data.schema import InputSchema
from mlplatform.serve.policy import TrafficPolicy
from mlplatform.serve.protocol import FLOAT32_MAX, V2_DATATYPES

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "malformed request: the message names the field",
        401: "no or unknown API key",
        403: "the key may not use this route, or the request's Host or Origin is not one the endpoint answers for",
        404: "no such model, version or route",
        409: "the application keeps no inference log",
        413: "body or batch over the limit",
        415: "the body's Content-Type is not one the route takes",
        502: "the control plane refused the change",
        503: "a version failed or is not ready",
    }
    return {str(s): _json(_ERROR, text[s]) for s in statuses}


def _feature_value(name: str, schema: InputSchema | None, allow_missing: bool) -> dict[str, Any]:
    spec = next((f for f in schema.features if f.name == name), None) if schema is not None else None
    if spec is not None and spec.kind == "categorical":
        value: dict[str, Any] = {"type": "string", "enum": list(spec.categories or [])}
    else:
        value = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}  # XGBoost reads float32
    if spec is not None and spec.example is not None:
        value["example"] = spec.example
    if allow_missing:
        value = {**value, "nullable": True}
    return value


def openapi_document(
    model: str,
    features: list[str],
    schema: InputSchema | None,
    *,
    allow_missing: bool,
    max_instances: int,
    routing_field: str | None,
    api_key: bool,
    version: str,
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one endpoint (model `model`, its features and input schema)."""
    instance = {
        "type": "object",
        "properties": {f: _feature_value(f, schema, allow_missing) for f in features},
        "required": list(features),
        "additionalProperties": False,
    }
    v1_request: dict[str, Any] = {
        "type": "object",
        "properties": {"instances": {"type": "array", "items": instance, "minItems": 1, "maxItems": max_instances}},
        "required": ["instances"],
        "additionalProperties": False,
    }
    if routing_field:
        v1_request["properties"][routing_field] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    tensor = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": list(features), "description": "a feature, or any name for [n, m]"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
            "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
            "data": {"type": "array", "items": {}, "description": "row-major values, flat or nested as shape"},
            "parameters": {"type": "object"},
        },
        # In a JSON body every tensor has its data; binary tensors (`binary_data_size`) come after the JSON
        # header of an application/octet-stream body.
        "required": ["name", "shape", "datatype", "data"],
        "additionalProperties": False,
    }
    v2_request = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": ["predict"]},
                        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                    },
                    "required": ["name"],
                },
            },
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        },
        "required": ["inputs"],
        "additionalProperties": False,
    }
    v2_response = {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["model_name", "model_version", "outputs"],
    }
    feedback = {
        "type": "object",
        "properties": {
            "labels": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_instances,
                "items": {
                    "type": "object",
                    "properties": {
                        "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                        "label": {"type": "integer", "enum": [0, 1]},
                        "row": {"type": "integer", "minimum": 0},
                    },
                    "required": ["request_id", "label"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["labels"],
    }
    policy = TrafficPolicy.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = policy.pop("$defs", {})
    policy["properties"]["reason"] = {"type": "string"}
    secured = [{"apiKey": []}] if api_key else []
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [model]}}
    ver = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    pin = {
        "name": "x-model-version",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "answer with this version",
    }
    v2_body = {
        "required": True,
        "content": {
            "application/json": {"schema": v2_request},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary extension: a JSON header of Inference-Header-Content-Length bytes, then tensors",
            },
        },
    }
    v2_answer = {
        "200": {
            "description": "predictions (binary when asked: a JSON header, then the tensor)",
            "content": {
                "application/json": {"schema": v2_response},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **_errors(400, 401, 404, 413, 415, 503),
    }
    v2_infer = {"security": secured, "parameters": [name, pin], "requestBody": v2_body, "responses": v2_answer}
    open_get = {"security": [], "parameters": [name]}
    ready = {"200": _json({"type": "object"}, "ready"), **_errors(404, 503)}
    paths: dict[str, Any] = {
        "/v1/models/{name}:predict": {
            "post": {
                "summary": "V1 predict",
                "security": secured,
                "parameters": [name, pin],
                "requestBody": {"required": True, "content": {"application/json": {"schema": v1_request}}},
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "predictions": {"type": "array", "items": {"type": "number"}},
                                "model_version": {"type": "string"},
                            },
                        },
                        "one prediction per instance",
                    ),
                    **_errors(400, 401, 404, 413, 415, 503),
                },
            }
        },
        "/v1/models/{name}": {"get": {"summary": "traffic policy and readiness", **open_get, "responses": ready}},
        "/v1/models/{name}/feedback": {
            "post": {
                "summary": "label logged requests by their x-request-id",
                "security": secured,
                "parameters": [name],
                "requestBody": {"required": True, "content": {"application/json": {"schema": feedback}}},
                "responses": {
                    "200": _json({"type": "object"}, "a status per label: accepted|unknown|duplicate|invalid"),
                    **_errors(400, 401, 404, 409, 413, 415),
                },
            }
        },
        "/v2/models/{name}/infer": {"post": {"summary": "Open Inference Protocol infer", **v2_infer}},
        "/v2/models/{name}/versions/{version}/infer": {
            "post": {"summary": "infer with one version", **v2_infer, "parameters": [name, ver]}
        },
        "/v2/models/{name}": {
            "get": {
                "summary": "model metadata",
                "security": secured,
                "parameters": [name],
                "responses": {"200": _json({"type": "object"}, "inputs, outputs"), **_errors(401, 404)},
            }
        },
        "/v2/models/{name}/versions/{version}": {
            "get": {
                "summary": "version metadata",
                "security": secured,
                "parameters": [name, ver],
                "responses": {"200": _json({"type": "object"}, "inputs, outputs"), **_errors(401, 404)},
            }
        },
        "/v2/models/{name}/ready": {"get": {"summary": "model ready", **open_get, "responses": ready}},
        "/v2/models/{name}/versions/{version}/ready": {
            "get": {"summary": "version ready", "security": [], "parameters": [name, ver], "responses": ready}
        },
        "/v2/health/live": {"get": {"summary": "live", "security": [], "responses": {"200": _json({}, "live")}}},
        "/v2/health/ready": {"get": {"summary": "ready", "security": [], "responses": ready}},
        "/v2": {"get": {"summary": "server metadata", "security": [], "responses": {"200": _json({}, "server")}}},
        "/admin/v1/models/{name}/traffic": {
            "get": {
                "summary": "the traffic policy this replica applies",
                "security": [{"apiKey": []}],
                "parameters": [name],
                "responses": {"200": _json({"type": "object"}, "policy"), **_errors(401, 403, 404)},
            },
            "put": {
                "summary": "change the traffic policy cluster-wide (through the release control plane)",
                "security": [{"apiKey": []}],
                "parameters": [name],
                "requestBody": {"required": True, "content": {"application/json": {"schema": policy}}},
                "responses": {
                    "200": _json({"type": "object"}, "the history event"),
                    **_errors(400, 401, 403, 404, 415, 502, 503),
                },
            },
        },
        "/openapi.json": {
            "get": {"summary": "this document", "security": secured, "responses": {"200": _json({}, "OpenAPI")}}
        },
    }
    for operation in (op for route in paths.values() for op in route.values()):
        operation["responses"].update(_errors(403))  # every route checks the request's Host and Origin
    return {
        "openapi": "3.0.3",
        "info": {"title": f"mlplatform endpoint: {model}", "version": version},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                **defs,
            },
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
