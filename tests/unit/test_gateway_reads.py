"""Pure parts of the gateway's reads: dead letters decoded defensively, history folded with its gaps."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest

from foldline.aggregate import AggregateSpec
from foldline.examples.invoices import Invoices
from foldline.gateway.app import create_app
from foldline.gateway.deadletters import MAX_TEXT, decode_dead_letter, matches
from foldline.gateway.errors import Unfoldable
from foldline.gateway.history import fold_rows, with_gaps
from foldline.gateway.openapi import openapi_document
from foldline.records import dead_letter
from foldline.settings import GatewaySettings

XSS = "<img src=x onerror=alert(1)>"
SPEC = AggregateSpec(Invoices())


def envelope(**fields: object) -> bytes:
    return json.dumps({"command_id": "c-1", "aggregate_id": "inv-1", "type": "CreateInvoice", **fields}).encode()


def test_a_handler_dead_letter_is_decoded_with_its_cause_and_command_id():
    value = envelope(payload={"customer": XSS})
    record = dead_letter(
        topic="inv.commands", partition=1, offset=7, key=b"inv-1", value=value, code="invalid_payload", message=XSS
    )
    entry = decode_dead_letter(record)
    assert entry["decoded"] is True
    assert entry["cause"] == {"code": "invalid_payload", "message": XSS}
    assert entry["command_id"] == "c-1"
    assert entry["source"] == {"topic": "inv.commands", "partition": 1, "offset": 7}
    assert json.loads(entry["value"])["payload"]["customer"] == XSS  # the original value, as text
    assert "extra" not in entry
    assert matches({**entry, "record_key": "inv-1"}, "inv-1") and not matches({**entry, "record_key": "x"}, "inv-2")


def test_binary_values_are_shown_escaped_and_base64_is_undone():
    record = dead_letter(
        topic="t", partition=0, offset=0, key=None, value=b"\xff\x00ok", code="undecodable", message="not JSON"
    )
    entry = decode_dead_letter(record)
    assert entry["value_encoding"] == "base64" and entry["value"] == "\\xff\x00ok"
    assert entry["key"] is None and entry["command_id"] is None


def test_a_non_utf8_key_and_a_cut_value_are_shown_with_their_sizes():
    record = dead_letter(
        topic="t",
        partition=0,
        offset=3,
        key=b"\xffk<b>",
        value=b"x" * 5_000,
        code="too_large",
        message="cut",
        max_bytes=2_000,
    )
    entry = decode_dead_letter(record)
    assert entry["key"] == "\\xffk<b>" and entry["key_encoding"] == "base64"  # the raw key, escaped text
    assert entry["truncated"] is True and entry["value_bytes"] == 5_000 and entry["key_bytes"] == 5
    assert len(entry["value"]) < 5_000 and "extra" not in entry


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, "no value"),
        (b"\xff\xfe<b>not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
    ],
)
def test_records_that_are_not_dead_letters_are_shown_raw(raw, problem):
    entry = decode_dead_letter(raw)
    assert entry["decoded"] is False and problem in entry["problem"]
    if raw is not None:
        assert isinstance(entry["raw"], str) and entry["raw"].encode("utf-8")  # JSON-safe text
    if raw and raw.startswith(b"\xff"):
        assert entry["raw"].startswith("\\xff\\xfe<b>")


def test_unknown_fields_odd_types_and_huge_values_are_shown_not_trusted():
    """A newer handler's format (raw key, truncation markers) or a hostile record: shown as found."""
    record = json.dumps(
        {
            "error": "plain text cause",
            "key": {"not": "a string"},
            "value": "x" * (MAX_TEXT + 10),
            "value_encoding": "utf-8",
            "raw_key": base64.b64encode(b"\xffk").decode(),
            "value_truncated": True,
            "schema_version": "two",
            "source": ["not", "an", "object"],
            "deep": [[[[[[[[[[["down"]]]]]]]]]]],
            "many": list(range(500)),
        }
    ).encode()
    entry = decode_dead_letter(record)
    assert entry["decoded"] is True
    assert entry["cause"] == {"code": None, "message": "plain text cause"}
    assert entry["source"] is None and entry["schema_version"] is None
    assert entry["value"].endswith("… [10 more characters]") and entry["value_length"] == MAX_TEXT + 10
    assert entry["extra"]["raw_key"] and entry["extra"]["value_truncated"] is True
    assert entry["extra"]["many"][-1] == "… [436 more items]"
    assert isinstance(json.dumps(entry), str)


# -- history -------------------------------------------------------------------------------------------------
def row(version: int, type_: str = "InvoiceCreated", payload: dict | None = None, schema: int = 1) -> dict:
    created = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
    return {
        "version": version,
        "type": type_,
        "schema_version": schema,
        "payload": json.dumps(created if payload is None else payload),
        "recorded_at": "2026-11-01T00:00:00.000Z",
        "command_id": f"c{version}",
    }


def test_gaps_are_entries_of_the_timeline_with_their_causes():
    skips = [{"version": 2, "reason": "undecodable", "error": "DecodeError: x", "topic": "t", "partition": 0}]
    skips[0].update(offset=5, recorded_at="now")
    events = with_gaps(SPEC, [row(1), row(3)], 0, 5, skips)
    assert [(e["version"], e.get("gap", False)) for e in events] == [(1, False), (2, True), (3, False), (4, True)]
    assert events[1]["to_version"] == 2 and events[1]["skipped"][0]["reason"] == "undecodable"
    assert events[3]["to_version"] == 5 and events[3]["skipped"] == []
    assert with_gaps(SPEC, [row(1), row(2)], 0, 2, []) == with_gaps(SPEC, [row(1), row(2)], 0, None, [])


def test_an_event_this_code_cannot_decode_is_marked_in_the_timeline():
    events = with_gaps(SPEC, [row(1), row(2, "SomethingNew", {"a": 1})], 0, None, [])
    assert "undecodable" not in events[0]
    assert "SomethingNew" in events[1]["undecodable"]


def test_folds_that_cannot_be_done_are_422_with_the_event_and_reason():
    assert fold_rows(SPEC, [row(1)], 1).customer == "ACME"
    with pytest.raises(Unfoldable) as gap:
        fold_rows(SPEC, [row(1), row(3)], 3)
    assert gap.value.status == 422 and gap.value.code == "history_gap" and gap.value.details["version"] == 2
    with pytest.raises(Unfoldable) as tail:
        fold_rows(SPEC, [row(1)], 2)
    assert tail.value.code == "history_gap" and tail.value.details["version"] == 2
    with pytest.raises(Unfoldable) as unknown:
        fold_rows(SPEC, [row(1), row(2, "SomethingNew", {})], 2)
    assert unknown.value.code == "unfoldable_history" and unknown.value.details["version"] == 2
    assert "SomethingNew" in unknown.value.message and "Traceback" not in unknown.value.message


class Brittle(Invoices):
    name = "brittle"

    def evolve(self, state, event):
        raise ZeroDivisionError("the aggregate's own bug")


def test_an_evolve_that_raises_anything_is_a_422_not_a_500():
    with pytest.raises(Unfoldable) as failing:
        fold_rows(AggregateSpec(Brittle()), [row(1)], 1)
    assert failing.value.status == 422 and failing.value.details["version"] == 1
    assert "cannot be folded" in failing.value.message and "ZeroDivisionError: the aggregate's own bug" in str(
        failing.value
    )


# -- routes ------------------------------------------------------------------------------------------------------
def test_fixed_route_segments_never_shadow_an_aggregate_id():
    # Only the routing is looked at: no Gateway (its Kafka clients) is made.
    app = create_app(SimpleNamespace(settings=GatewaySettings(), specs={}))  # type: ignore[arg-type]
    # CommandHotPath -> Instrumented -> BodyDeadline -> BearerAuth -> CommandFastPath -> Starlette
    router = app.app.app.app.app.app  # type: ignore[attr-defined]

    def endpoint(path: str, method: str = "GET") -> tuple[str, dict]:
        scope = {"type": "http", "path": path, "method": method}
        for route in router.routes:
            match, child = route.matches(scope)
            if match.name == "FULL":
                return child["endpoint"].__name__, child["path_params"]
        return "none", {}

    assert endpoint("/aggregates/invoices/commands/events") == (
        "aggregate_events",
        {"aggregate": "invoices", "aggregate_id": "commands"},
    )
    assert endpoint("/aggregates/invoices/stream/state")[1]["aggregate_id"] == "stream"
    assert endpoint("/aggregates/invoices/dead-letters/events")[1]["aggregate_id"] == "dead-letters"
    assert endpoint("/aggregates/invoices/a/b/events")[1]["aggregate_id"] == "a/b"
    assert endpoint("/aggregates/invoices/commands/c-1") == (
        "get_command",
        {"aggregate": "invoices", "command_id": "c-1"},
    )
    assert endpoint("/aggregates/invoices/commands")[0] == "get_command"
    assert endpoint("/aggregates/invoices/commands", "POST")[0] == "post_command"
    assert endpoint("/aggregates/invoices/events")[0] == "aggregate_events"
    assert endpoint("/aggregates/invoices/dead-letters")[0] == "dead_letters"


def test_openapi_documents_the_reads():
    paths = openapi_document({"invoices": SPEC}, [], auth=False)["paths"]
    assert "422" in paths["/aggregates/{aggregate}/{aggregate_id}/state"]["get"]["responses"]
    assert "500" not in paths["/aggregates/{aggregate}/{aggregate_id}/state"]["get"]["responses"]
    assert {"/aggregates/{aggregate}/events", "/aggregates/{aggregate}/state"} <= set(paths)
    dead = paths["/aggregates/{aggregate}/dead-letters"]["get"]
    assert [p["name"] for p in dead["parameters"]] == ["aggregate", "limit", "aggregate_id"]
    assert "401" in dead["responses"] and "503" in dead["responses"]
    assert paths["/aggregates/{aggregate}/commands"]["get"]["parameters"][1]["name"] == "command_id"
