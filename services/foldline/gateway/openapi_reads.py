"""The OpenAPI entries of the gateway's reads of an aggregate: history, state at a version, dead letters."""

from __future__ import annotations

from typing import Any


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def command_by_query(aggregate_param: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """GET .../commands?command_id=: the path form's operation, reachable for any id."""
    by_path = paths["/aggregates/{aggregate}/commands/{command_id}"]["get"]
    return {
        **by_path,
        "operationId": "getCommandResultByQuery",
        "summary": "A command's result by id (any id, `events` and `state` included)",
        "description": "The same answer as GET /aggregates/{aggregate}/commands/{command_id}.",
        "parameters": [
            aggregate_param,
            {"name": "command_id", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
        ],
        "responses": {**by_path["responses"], "400": _error("no command_id given (invalid_query)")},
    }


def read_paths(aggregate_param: dict[str, Any], id_param: dict[str, Any]) -> dict[str, Any]:
    id_query = {
        "name": "aggregate_id",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "the aggregate's id (any id: this form never collides with a route)",
    }
    history_responses = {
        "400": _error("a bad parameter, or no aggregate id (invalid_query)"),
        "404": _error("unknown aggregate, no events of this id (unknown_aggregate_id), or no journal (no_journal)"),
        "503": _error("the projection database is unavailable"),
    }
    events: dict[str, Any] = {
        "summary": "An aggregate's event timeline, in version order, from the event journal projection",
        "description": "Versions the journal lacks (a record it could not read and passed over) appear as an "
        "entry with `gap: true`, the missing range and the causes the projector recorded; an event this code "
        "cannot decode carries `undecodable` with the reason.",
        "parameters": [
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}, "page size"),
            _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "events to skip"),
            _query(
                "min_version",
                {"type": "integer", "minimum": 0},
                "read-after-write: wait until the journal holds this version",
            ),
        ],
        "responses": {
            "200": _json("Events", "the events (payload as written, with its schema_version), and any gaps"),
            **history_responses,
            "504": _error("the journal did not reach min_version in time"),
        },
    }
    state: dict[str, Any] = {
        "summary": "The aggregate's state at a version or instant: the fold of its first events",
        "description": "Events are read from the journal, upcast to the current schema and folded with "
        "the aggregate's own evolve. Without version or at: the latest state in the journal. A history that "
        "cannot be folded (an event this code cannot decode or fold, or a gap) is a 422 naming the event.",
        "parameters": [
            _query("version", {"type": "integer", "minimum": 0}, "fold the first N events (0: initial)"),
            _query("at", {"type": "string", "format": "date-time"}, "fold the events recorded up to then"),
        ],
        "responses": {
            "200": _json("StateAt", "the state"),
            **history_responses,
            "400": _error("a bad version or timestamp, both given, or no aggregate id"),
            "404": _error("unknown aggregate or id, or a version beyond the last (version_not_found)"),
            "422": _error(
                "the history up to there cannot be folded: an event this code cannot decode or fold "
                "(unfoldable_history) or a version the journal lacks (history_gap); details.version names it"
            ),
        },
    }

    def operation(base: dict[str, Any], op_id: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {**base, "operationId": op_id, "parameters": [*params, *base["parameters"]]}}

    return {
        "/aggregates/{aggregate}/{aggregate_id}/events": operation(
            events, "aggregateEvents", [aggregate_param, id_param]
        ),
        "/aggregates/{aggregate}/{aggregate_id}/state": operation(state, "aggregateState", [aggregate_param, id_param]),
        "/aggregates/{aggregate}/events": operation(events, "aggregateEventsByQuery", [aggregate_param, id_query]),
        "/aggregates/{aggregate}/state": operation(state, "aggregateStateByQuery", [aggregate_param, id_query]),
        "/aggregates/{aggregate}/dead-letters": {
            "get": {
                "operationId": "deadLetters",
                "summary": "The newest dead letters of the aggregate's topics, decoded, with their cause",
                "description": "Read from `<aggregate>.dead-letters` (read_committed) within a bounded time "
                "(`complete: false` when it could not look as far back as asked); a record that is not a dead "
                "letter is shown raw (`decoded: false`). With a projection database, `projector_skips` lists "
                "the records projectors of the aggregate's topics passed over.",
                "parameters": [
                    aggregate_param,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "newest N"),
                    _query("aggregate_id", {"type": "string"}, "only this aggregate's dead letters"),
                ],
                "responses": {
                    "200": _json("DeadLetters", "the dead letters, newest first"),
                    "400": _error("a bad parameter"),
                    "404": _error("unknown aggregate, or the topic does not exist (no_dead_letter_topic)"),
                    "503": _error("Kafka is unavailable, or too many dead-letter reads at once; retry"),
                },
            }
        },
    }


def read_schemas() -> dict[str, Any]:
    text = {"type": ["string", "null"]}
    return {
        "Events": {
            "type": "object",
            "properties": {
                "aggregate": {"type": "string"},
                "aggregate_id": {"type": "string"},
                "version": {"type": "integer", "description": "the last version in the journal"},
                "events": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "version": {"type": "integer"},
                            "type": {"type": "string"},
                            "schema_version": {"type": "integer"},
                            "recorded_at": {"type": "string"},
                            "command_id": {"type": "string"},
                            "payload": {},
                            "undecodable": {"type": "string", "description": "why this code cannot decode it"},
                            "gap": {"type": "boolean", "description": "true: versions version..to_version missing"},
                            "to_version": {"type": "integer"},
                            "skipped": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
                "unattributed_skips": {
                    "type": "integer",
                    "description": "records the journal passed over without knowing their aggregate (with gaps)",
                },
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "StateAt": {
            "type": "object",
            "properties": {
                "aggregate": {"type": "string"},
                "aggregate_id": {"type": "string"},
                "version": {"type": "integer", "description": "the version folded to"},
                "last_version": {"type": "integer"},
                "recorded_at": text,
                "state": {"type": "object"},
            },
        },
        "DeadLetters": {
            "type": "object",
            "properties": {
                "aggregate": {"type": "string"},
                "aggregate_id": text,
                "topic": {"type": "string"},
                "limit": {"type": "integer"},
                "complete": {"type": "boolean", "description": "false: the read ran out of time or budget"},
                "scanned": {"type": "integer"},
                "dead_letters": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "partition": {"type": "integer"},
                            "offset": {"type": "integer"},
                            "timestamp": text,
                            "record_key": text,
                            "headers": {"type": "array", "items": {"type": "array"}},
                            "decoded": {"type": "boolean"},
                            "problem": {"type": "string", "description": "why it is not a dead letter (raw)"},
                            "raw": text,
                            "cause": {
                                "type": ["object", "null"],
                                "properties": {"code": {}, "message": {}},
                            },
                            "command_id": text,
                            "source": {"type": ["object", "null"]},
                            "key": {},
                            "value": {"description": "the dead-lettered record's value, as text"},
                            "value_encoding": {},
                            "recorded_at": {},
                            "extra": {"type": "object", "description": "fields this gateway does not know"},
                        },
                    },
                },
                "projector_skips": {"type": ["array", "null"], "items": {"type": "object"}},
            },
        },
    }
