"""The team image's processes on the real Kafka broker: a command through its gateway and its handler.

Both containers run as pods do (read-only root filesystem, /tmp a tmpfs, user 10001, the state on
the image's volume) and share the host's network only to reach the development broker on loopback.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.support import wait_for
from tests.image.support import BuiltImage, image_script

pytestmark = [pytest.mark.image, pytest.mark.kafka]
AGGREGATE = "accounts_pkg:Accounts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def container(accounts_image: BuiltImage, kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Start detached containers of the team image on the host's network; removed (logs kept) after."""
    names: list[str] = []

    def start(*args: str, env: dict[str, str]) -> str:
        name = f"foldline-image-test-{uuid.uuid4().hex[:10]}"
        flags = ["--env", f"FOLDLINE_KAFKA_BOOTSTRAP={kafka_bootstrap}", "--env", f"FOLDLINE_INSTANCE_ID={name}"]
        for key, value in env.items():
            flags += ["--env", f"{key}={value}"]
        image_script(
            "podman",
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev",
            *flags,
            accounts_image.reference,
            *args,
        )
        names.append(name)
        return name

    yield start
    for name in names:
        logs = image_script("podman", "logs", "--tail", "40", name, check=False)
        print(f"--- {name} ---\n{logs.stdout}{logs.stderr}")
        image_script("podman", "rm", "--force", "--time", "0", "--volumes", name, check=False)


def running(name: str) -> bool:
    state = image_script("podman", "inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
    assert state in ("created", "running"), f"container {name} is {state}"
    return state == "running"


def submit(client: httpx.Client, amount: int, aggregate_id: str) -> dict[str, Any]:
    response = client.post(
        "/aggregates/accounts/commands",
        params={"timeout": "30"},
        json={"aggregate_id": aggregate_id, "type": "Deposit", "payload": {"amount": amount}},
    )
    while response.status_code == 202:  # still pending after the timeout: ask again where it said
        response = client.get(response.headers["Location"], params={"timeout": "30"})
    result: dict[str, Any] = response.json()
    return result


def test_a_command_goes_through_the_team_image_s_gateway_and_handler(
    accounts_image: BuiltImage, kafka_bootstrap: str, container: Callable[..., str]
) -> None:
    topics = accounts_image.run(
        "topics",
        "--aggregate",
        AGGREGATE,
        "--partitions",
        "2",
        network="host",
        options=("--env", f"FOLDLINE_KAFKA_BOOTSTRAP={kafka_bootstrap}"),
    )
    assert topics.returncode == 0, topics.stderr
    assert "accounts.commands" in topics.stdout

    handler = container("command-handler", "--aggregate", AGGREGATE, env={"FOLDLINE_HTTP_PORT": str(free_port())})
    port = free_port()
    gateway = container(
        "gateway",
        "--aggregate",
        AGGREGATE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={"FOLDLINE_LOG_FORMAT": "json"},
    )

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

        def ready() -> bool:
            running(handler)
            if not running(gateway):
                return False
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the gateway container to be ready", ready, timeout=120, interval=0.5)
        account = f"acct-{uuid.uuid4().hex[:10]}"
        first = submit(client, 5, account)
        assert (first["status"], first["version"], first["events"]) == ("accepted", 1, ["Deposited"]), first
        second = submit(client, 7, account)
        assert (second["status"], second["version"]) == ("accepted", 2), second
        rejected = submit(client, 0, account)
        assert (rejected["status"], rejected["version"]) == ("rejected", 2), rejected
        assert rejected["reason"] == "deposit a positive amount"

    # The handler keeps its store in the state volume, the one writable path besides /tmp.
    stores = image_script("podman", "exec", handler, "find", "/var/lib/foldline/state", "-mindepth", "1").stdout
    assert "/var/lib/foldline/state/accounts" in stores
