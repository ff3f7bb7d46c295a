"""The gateway's OpenAPI 3.1 document, written by hand; command payload schemas come from the dataclasses."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from foldline.aggregate import AggregateSpec
from foldline.gateway.openapi_reads import _error, _query, command_by_query, read_paths, read_schemas
from foldline.records import Status

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    decimal.Decimal: {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "a decimal, as a string"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.datetime: {"type": "string", "format": "date-time"},
}


def type_schema(tp: Any) -> dict[str, Any]:
    """A JSON schema for a field type, as far as the codec's types go (anything else: any value)."""
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [{"type": "null"} if a is type(None) else type_schema(a) for a in args]}
    if origin in (tuple, list, Sequence):
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return dataclass_schema(tp)
    return {}


def dataclass_schema(cls: type[Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except NameError:
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        properties[f.name] = type_schema(hints.get(f.name, Any))
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _result(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandResult"}}},
    }


def openapi_document(specs: Mapping[str, AggregateSpec], views: Sequence[str], *, auth: bool) -> dict[str, Any]:
    aggregate_param = {
        "name": "aggregate",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted(specs)},
        "description": "the aggregate's name",
    }
    # With no views known (none declared and the database not listing any yet), any name may come to exist.
    view_schema: dict[str, Any] = {"type": "string", "enum": list(views)} if views else {"type": "string"}
    view_param = {"name": "view", "in": "path", "required": True, "schema": view_schema}
    id_param = {"name": "aggregate_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    payloads = {
        f"{agg}.{name}": dataclass_schema(kind.cls)
        for agg, spec in sorted(specs.items())
        for name, kind in sorted(spec.commands.items())
    }
    sse = {"text/event-stream": {"schema": {"type": "string"}}}
    paths: dict[str, Any] = {
        "/aggregates/{aggregate}/commands": {
            "post": {
                "operationId": "submitCommand",
                "summary": "Submit a command and (by default) wait for its result",
                "description": "The payload is checked with the aggregate's codec before anything is written to "
                "Kafka. The result's status picks the HTTP status: accepted 200, rejected 422 (the "
                "domain's reason in `reason`), conflict 409 (expected_version mismatch), failed 400.",
                "parameters": [
                    aggregate_param,
                    _query(
                        "wait",
                        {"type": "boolean", "default": True},
                        "false: answer 202 with the command id and a Location once Kafka has the command",
                    ),
                    _query(
                        "timeout",
                        {"type": "number", "exclusiveMinimum": 0},
                        "seconds to wait for the result (default and maximum set by the operator)",
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandRequest"}}},
                },
                "responses": {
                    "200": _result("accepted"),
                    "202": {
                        "description": "written to Kafka; poll the Location for the result",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pending"}}},
                    },
                    "400": {
                        "description": "malformed JSON or envelope, invalid payload (code invalid_payload), "
                        "or a failed result",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Error"},
                                        {"$ref": "#/components/schemas/CommandResult"},
                                    ]
                                }
                            }
                        },
                    },
                    "401": _error("missing or wrong bearer token"),
                    "404": _error("unknown aggregate (unknown_aggregate) or command type (unknown_command_type)"),
                    "409": _result("conflict: expected_version did not match"),
                    "408": _error("the body did not arrive within the body timeout"),
                    "413": _error("the body is larger than allowed"),
                    "415": _error("the body is not declared as JSON (send Content-Type: application/json)"),
                    "422": _result("rejected by the domain; `reason` says why"),
                    "503": _error("Kafka is unavailable; retry"),
                    "504": _error("no result in time (details.location tells where to look later)"),
                },
            }
        },
        "/aggregates/{aggregate}/commands/{command_id}": {
            "get": {
                "operationId": "getCommandResult",
                "summary": "A command's result by id, from this replica's bounded in-memory index",
                "description": "A command id `events` or `state` is read as an aggregate's history (that route "
                "comes first): use GET /aggregates/{aggregate}/commands?command_id= for those.",
                "parameters": [
                    aggregate_param,
                    {"name": "command_id", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _result("the result (its own status in the body)"),
                    "401": _error("unauthorized"),
                    "404": _error("unknown aggregate, or no result yet (unknown_command)"),
                },
            }
        },
        "/aggregates/{aggregate}/stream": {
            "get": {
                "operationId": "streamResults",
                "summary": "Server-Sent Events: one `result` event per command result, as it arrives",
                "parameters": [aggregate_param, _query("aggregate_id", {"type": "string"}, "only this aggregate's")],
                "responses": {
                    "200": {"description": "an event stream", "content": sse},
                    "401": _error("unauthorized"),
                    "404": _error("unknown aggregate"),
                },
            }
        },
        "/views/{view}/rows": {
            "get": {
                "operationId": "readRows",
                "summary": "Rows of a projection view; any other query parameter filters a column by equality",
                "parameters": [
                    view_param,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size"),
                    _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "rows to skip"),
                    _query("order_by", {"type": "string"}, "a column; prefix '-' for descending"),
                    _query("aggregate_id", {"type": "string"}, "filter by aggregate id; needed by min_version"),
                    _query(
                        "min_version",
                        {"type": "integer", "minimum": 0},
                        "read-after-write: wait until the view holds aggregate_id at this version or later",
                    ),
                    _query("timeout", {"type": "number", "exclusiveMinimum": 0}, "seconds to wait for min_version"),
                ],
                "responses": {
                    "200": {
                        "description": "the rows",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rows"}}},
                    },
                    "400": _error("unknown column (unknown_column) or a bad parameter"),
                    "401": _error("unauthorized"),
                    "404": _error("unknown view"),
                    "503": _error("the projection database is unavailable"),
                    "504": _error("the view did not reach min_version in time"),
                },
            }
        },
        "/views/{view}/stream": {
            "get": {
                "operationId": "streamRows",
                "summary": "Server-Sent Events: a `rows` event whenever the matching rows change (polled)",
                "parameters": [
                    view_param,
                    _query("aggregate_id", {"type": "string"}, "filter"),
                    _query("limit", {"type": "integer"}, "page size"),
                ],
                "responses": {
                    "200": {"description": "an event stream", "content": sse},
                    "401": _error("unauthorized"),
                    "404": _error("unknown view"),
                    "400": _error("unknown column"),
                },
            }
        },
        "/aggregates": {
            "get": {
                "operationId": "listAggregates",
                "summary": "aggregates and their command types",
                "responses": {"200": {"description": "the aggregates"}},
            }
        },
        "/views": {
            "get": {
                "operationId": "listViews",
                "summary": "the views served",
                "responses": {"200": {"description": "the views"}},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    paths.update(read_paths(aggregate_param, id_param))
    paths["/aggregates/{aggregate}/commands"]["get"] = command_by_query(aggregate_param, paths)
    for path, what in (
        ("/healthz", "alive"),
        ("/readyz", "ready: the results reader reached the end once"),
        ("/metrics", "Prometheus metrics"),
    ):
        paths[path] = {
            "get": {
                "operationId": path.strip("/"),
                "summary": what,
                "security": [],
                "responses": {"200": {"description": what}, "503": {"description": "not " + what}},
            }
        }
    result_schema = {
        "type": "object",
        "required": ["command_id", "aggregate_id", "status", "version"],
        "properties": {
            "command_id": {"type": "string"},
            "aggregate_id": {"type": "string"},
            "status": {"enum": [s.value for s in Status]},
            "version": {"type": "integer", "description": "the aggregate's version after the command"},
            "events": {"type": "array", "items": {"type": "string"}},
            "reason": {"type": ["string", "null"]},
            "code": {
                "enum": [
                    None,
                    "undecodable",
                    "unknown_type",
                    "invalid_payload",
                    "conflict",
                    "rejected",
                    "decide_failed",
                ]
            },
            "duplicate": {"type": "boolean", "description": "a resubmitted command id: the first result again"},
            "recorded_at": {"type": "string", "format": "date-time"},
            "schema_version": {"type": "integer"},
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "foldline gateway",
            "version": "1",
            "description": "Commands in, results out, and the projections' rows, over HTTP.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "CommandRequest": {
                    "type": "object",
                    "required": ["aggregate_id", "type"],
                    "additionalProperties": False,
                    "properties": {
                        "aggregate_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "type": {"type": "string", "enum": sorted({n for s in specs.values() for n in s.commands})},
                        "payload": {"type": "object", "description": "the command's fields; see the Payload.* schemas"},
                        "expected_version": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "description": "optimistic concurrency: conflict (409) unless equal",
                        },
                        "command_id": {
                            "type": "string",
                            "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
                            "description": "idempotency key; generated when absent",
                        },
                    },
                },
                "CommandResult": result_schema,
                "Pending": {
                    "type": "object",
                    "properties": {
                        "command_id": {"type": "string"},
                        "aggregate": {"type": "string"},
                        "aggregate_id": {"type": "string"},
                        "status": {"const": "pending"},
                        "location": {"type": "string"},
                    },
                },
                "Rows": {
                    "type": "object",
                    "properties": {
                        "view": {"type": "string"},
                        "rows": {"type": "array", "items": {"type": "object"}},
                        "version": {
                            "type": "integer",
                            "description": "the aggregate's version in the view (min_version)",
                        },
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                },
                **read_schemas(),
                **{f"Payload.{name}": schema for name, schema in payloads.items()},
            }
        },
    }
    for operations in paths.values():
        for operation in operations.values():
            responses = operation["responses"]
            if operation.get("security") != []:  # every route but the probes and /metrics, when a token is set
                responses.setdefault("401", _error("missing or wrong bearer token (when the gateway has a token)"))
    if auth:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
