"""The gateway (a process, as in a pod) through a broker outage, with a command handler behind it.

While the broker is away the gateway stays up: a command gets a bounded 503 or 504 (never a hang, never a
500), the API's own routes answer, and a command id sent then may be retried. Once the broker is back,
the same gateway process takes commands again and answers them with their results, with no restart; the
command retried with its id is handled exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from foldline.records import EventRecord
from foldline.topics import TopicNames
from tests.conftest import aggregate_path
from tests.faults_support import (
    aggregate_name,
    free_port,
    get,
    handler,
    log_events,
    make_aggregate,
    own_broker,
    spawn,
    stop,
    wait_until,
)
from tests.kafka_support import read_topic

pytestmark = [pytest.mark.kafka]

CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def create(client: httpx.Client, agg: str, invoice: str, command_id: str, timeout: float = 10) -> httpx.Response:
    body = {"command_id": command_id, "aggregate_id": invoice, "type": "CreateInvoice", "payload": CREATE}
    return client.post(f"/aggregates/{agg}/commands", params={"timeout": timeout}, json=body)


def test_the_gateway_answers_through_an_outage_and_takes_commands_again_after_it(tmp_path: Path) -> None:
    with own_broker() as broker:
        bootstrap = broker.bootstrap
        cls = make_aggregate(bootstrap, aggregate_name("gwout"), partitions=3)
        agg = cls.name
        ports = {"handler": free_port(), "gateway": free_port()}
        env = {"FOLDLINE_KAFKA_BOOTSTRAP": bootstrap, "FOLDLINE_GATEWAY_HOST": "127.0.0.1"}
        args = ["gateway", "--aggregate", aggregate_path(cls), "--port", str(ports["gateway"])]
        procs = [handler(bootstrap, cls, "a", tmp_path, ports["handler"]), spawn(args, env, tmp_path / "gateway.log")]
        client = httpx.Client(base_url=f"http://127.0.0.1:{ports['gateway']}", timeout=90)
        try:
            wait_until(lambda: all(get(p, "/readyz") == 200 for p in ports.values()), 180, "both ready")
            before = create(client, agg, "before", str(uuid.uuid4()))
            assert before.status_code == 200 and before.json()["status"] == "accepted", before.text

            broker.stop()
            wait_until(lambda: get(ports["handler"], "/readyz") == 503, 120, "the handler to see the outage")
            during = str(uuid.uuid4())
            started = time.monotonic()
            answer = create(client, agg, "during", during, timeout=5)
            took = time.monotonic() - started
            # Refused at once (503) or not answered in time (504: the record may still be delivered).
            assert answer.status_code in (503, 504), answer.text
            assert answer.json()["error"]["code"] in ("unavailable", "timeout"), answer.text
            assert took < 60, f"the command waited {took:.0f} s"
            assert client.get("/aggregates").status_code == 200  # the API goes on without Kafka
            assert get(ports["gateway"], "/healthz") == 200
            assert all(p.poll() is None for p in procs), "a process exited during the outage"

            broker.start(keep_data=True, timeout=180.0)
            back = time.monotonic()
            wait_until(lambda: get(ports["handler"], "/readyz") == 200, 300, "the handler ready again")

            # The same gateway process takes commands again, each answered with its result.
            answers: dict[str, dict[str, object]] = {}

            def accepted(invoice: str, command_id: str) -> bool:
                r = create(client, agg, invoice, command_id, timeout=10)
                assert r.status_code in (200, 503, 504), r.text  # 503/504 while the pieces reconnect
                answers[invoice] = r.json()
                return r.status_code == 200 and r.json()["status"] == "accepted"

            after = str(uuid.uuid4())
            wait_until(lambda: accepted("after", after), 240, "a command answered after the outage", step=1.0)
            print(
                f"\nduring the outage: {answer.status_code} {answer.json()['error']['code']} after {took:.1f} s; "
                f"first command accepted {time.monotonic() - back:.1f} s after the broker was back"
            )
            # The command sent during the outage, retried with its id, is handled once (``duplicate`` if its
            # first record reached the handler after all).
            wait_until(lambda: accepted("during", during), 120, "the retried command answered", step=1.0)
            print(f"the retry of the command sent during the outage: duplicate={answers['during'].get('duplicate')}")
            for invoice in ("later-1", "later-2"):
                r = create(client, agg, invoice, str(uuid.uuid4()))
                assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            found = client.get(f"/aggregates/{agg}/commands/{during}")
            assert found.status_code == 200 and found.json()["status"] == "accepted", found.text

            records = [EventRecord.from_bytes(m.value()) for m in read_topic(bootstrap, TopicNames(agg).events)]
            versions = Counter((r.aggregate_id, r.version) for r in records)
            assert versions == {(i, 1): 1 for i in ("before", "during", "after", "later-1", "later-2")}, versions
            assert all(p.poll() is None for p in procs), "a process exited"
        finally:
            client.close()
            stop(procs)
    gateway = [e.get("event") for e in log_events(tmp_path / "gateway.log")]
    assert "gateway stopped" in gateway, gateway[-20:]
