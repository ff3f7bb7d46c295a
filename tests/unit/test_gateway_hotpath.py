"""The command hot path's own decisions: which requests it takes, and the joined head-and-body write."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from foldline.gateway.hotpath import CommandHotPath
from foldline.settings import GatewaySettings


def hot(token: str = "") -> CommandHotPath:
    settings = GatewaySettings(token=token, max_body_bytes=100)
    gateway: Any = SimpleNamespace(settings=settings, specs={"invoices": object()})
    return CommandHotPath(app=None, gateway=gateway, observe=print)  # type: ignore[arg-type]


def test_the_usual_headers_take_the_hot_path_and_the_rest_the_chain():
    usual = [(b"content-type", b"application/json"), (b"content-length", b"42")]
    assert hot()._usual(usual)
    assert hot()._usual([(b"content-length", b"42")])  # no Content-Type: taken as JSON, as read_json does
    assert hot()._usual([(b"content-type", b"application/vnd.x+json; charset=utf-8"), (b"content-length", b"1")])
    assert not hot()._usual([(b"content-type", b"application/json")])  # chunked: the chain reads it
    assert not hot()._usual([(b"content-type", b"text/plain"), (b"content-length", b"42")])  # the chain's 415
    assert not hot()._usual([(b"content-length", b"101")])  # the chain's 413
    assert not hot()._usual([(b"content-length", b"-1")])  # the chain's 400
    # The first Content-Length counts, as starlette's Headers.get reads it.
    assert not hot()._usual([(b"content-length", b"500"), (b"content-length", b"5")])


def test_a_token_is_checked_before_the_hot_path_takes_a_request():
    body = [(b"content-length", b"2")]
    assert hot("s3cret")._usual([*body, (b"authorization", b"Bearer s3cret")])
    assert hot("s3cret")._usual([*body, (b"authorization", b"bearer  s3cret ")])
    assert not hot("s3cret")._usual(body)  # the chain's 401
    assert not hot("s3cret")._usual([*body, (b"authorization", b"Bearer nope")])
    assert not hot("s3cret")._usual([*body, (b"authorization", b"Basic s3cret")])
    assert not hot("s3cret")._usual([*body, (b"authorization", b"Bearer ")])


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
