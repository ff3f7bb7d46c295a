"""The benchmarks' view of processes: a local broker found by its port, and its CPU time."""

from __future__ import annotations

import os
import socket

from bench.contest import local_broker
from bench.procs import cpu_seconds, listening_pid


def test_the_benchmarks_find_a_local_listener_and_its_cpu() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        here = listening_pid(port)
        assert here == os.getpid()
        assert cpu_seconds(here) is not None
        assert local_broker(f"127.0.0.1:{port}") == here
    assert listening_pid(port) is None  # closed: nobody listens there any more
    assert local_broker(f"broker.example:{port}") is None  # not on this machine: no broker CPU figure
