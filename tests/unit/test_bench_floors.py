"""The gateway benchmark's HTTP floor: a server that answers every POST on a kept-alive connection."""

from __future__ import annotations

import socket

from bench.http_floor import ANSWER, RESULT, floor_process
from bench.support import free_port, wait_until
from foldline.dev.kafka import port_open


def test_the_http_floor_answers_each_post_on_a_kept_alive_connection() -> None:
    port = free_port()
    proc = floor_process(port, hold_ms=1.0)
    try:
        assert wait_until(lambda: port_open(port), 30), "the floor server did not start"
        body = b'{"aggregate_id": "a-1", "type": "CreateInvoice", "payload": {}}'
        request = (
            b"POST /aggregates/floor/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            for _ in range(3):  # one connection, three requests in turn
                conn.sendall(request)
                answer = b""
                while len(answer) < len(ANSWER):
                    chunk = conn.recv(65536)
                    assert chunk, "the floor server closed the connection"
                    answer += chunk
                assert answer == ANSWER
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(RESULT)
    finally:
        proc.terminate()
        proc.wait(30)
