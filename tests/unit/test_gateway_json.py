"""The gateway's fast JSON paths (orjson) answer exactly as the stdlib path they shortcut."""

from __future__ import annotations

import json
from typing import Any

import pytest

from foldline.gateway.commands import check_json, parse_json, result_response
from foldline.gateway.errors import BadRequest, SafeJSON
from foldline.ids import AggregateId, CommandId
from foldline.records import CommandResult, Status

BODIES = [
    b'{"aggregate_id": "a-1", "type": "CreateInvoice", "payload": {"amount": 12.5, "lines": [1, 2, 3]}}',
    b'{"a": 9223372036854775807, "b": -9223372036854775808}',  # the int64 bounds: accepted
    b'{"a": 9223372036854775808}',  # one past: orjson reads it as an int, the check refuses it
    b'{"a": 18446744073709551616}',  # past 64 bits: orjson would read a float
    b'{"a": 0.12345678901234567890123}',
    b'{"a": "x\\u0000y"}',
    b'{"a\\u0000": 1}',
    b'{"a": "\\ud800"}',  # a lone surrogate
    b'{"a": "\\ud83d\\ude00 \\u00e9 \\u2028"}',
    b'{"a": NaN}',
    b'{"a": 1e400}',
    b'{"a": -Infinity}',
    b'{"a": 1, "a": 2}',
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark: the stdlib reads it
    b'{"a": "\xff"}',  # not UTF-8
    b'"\\\\u0000"',  # an escaped backslash before u0000: not a NUL
    b"[" * 63 + b"]" * 63,
    b"[" * 64 + b"]" * 64,
    b'{"a": [' + b"[" * 70 + b"]" * 70 + b"]}",
    b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
    b"{",
    b" 1 ",
    b'{"a": 1}  x',
]


def stdlib(body: bytes) -> Any:
    """What the gateway did before the fast path: ``json.loads`` then ``check_json``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid UTF-8 JSON: {exc}", code="malformed_json") from exc
    check_json(data)
    return data


def outcome(parse: Any, body: bytes | bytearray) -> tuple[str, Any]:
    try:
        return "ok", parse(body)
    except BadRequest as exc:
        return "refused", (exc.code, exc.message)


@pytest.mark.parametrize("body", BODIES)
def test_the_fast_json_path_answers_as_the_stdlib_path(body):
    fast = outcome(parse_json, bytearray(body))
    assert fast == outcome(stdlib, body)
    if fast[0] == "ok":  # same types too (an int never turns into a float)
        assert json.dumps(fast[1]) == json.dumps(stdlib(body))


@pytest.mark.parametrize("reason", [None, "not enough money: 5 € left", "broken \ud800 record"])
def test_result_bodies_match_what_safejson_writes(reason):
    result = CommandResult(
        CommandId("c-1"), AggregateId("a-1"), Status.REJECTED, 3, ("E",), reason=reason, code="rejected"
    )
    fast = result_response(result, 422, {"Location": "/x"})
    slow = SafeJSON(result.to_json(), status_code=422, headers={"Location": "/x"})
    assert fast.body == slow.body
    assert fast.status_code == slow.status_code == 422
    assert fast.headers["content-type"] == slow.headers["content-type"]
    assert fast.headers["location"] == "/x"
