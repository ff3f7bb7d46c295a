"""Fuzzing the gateway from its own OpenAPI document (schemathesis), against a real gateway, command handler,
projector (PostgreSQL) and broker (issue 10).

For every operation but the endless SSE streams, schemathesis generates requests that fit the document
and requests that break it (wrong types, missing fields, bad media types), a fixed number of each, with a
fixed seed. Never a 5xx (but a 504 ``timeout`` where the request itself bounded a wait: a tiny
``timeout``, or ``min_version`` of an aggregate that never gets there), never a traceback or SQL in a
body, every 4xx a JSON error; and afterwards the gateway still answers a valid command and a valid read.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

#: Requests per operation and mode: bounded, so the suite takes a fixed time (under a minute here).
EXAMPLES = 100
LEAKS = ("Traceback", "SELECT", "INSERT", "psycopg", "sqlite3", 'File "')
CREATE = {"customer": "ACME", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error(hostile_stack):
    agg, client, server = hostile_stack(max_command_timeout_s=5.0)
    with client:
        r = client.post(
            f"/aggregates/{agg}/commands", json={"aggregate_id": "inv-1", "type": "CreateInvoice", "payload": CREATE}
        )
        assert r.status_code == 200, r.text
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        loaded = list(schema.get_all_operations())
        assert all(isinstance(result, Ok) for result in loaded), loaded  # the document itself is valid
        operations = [r.ok() for r in loaded if isinstance(r, Ok) and not r.ok().path.endswith("/stream")]
        # (the SSE streams are endless by design: tests/integration/test_gateway*.py cover them)
        assert len(operations) >= 8, [op.label for op in operations]
        calls: dict[int, int] = {}

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,  # a loaded machine: no per-request time limit, only a bounded count
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def fuzz(case) -> None:
                    response = case.call(base_url=server.url, timeout=30)
                    what = f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}"
                    calls[response.status_code] = calls.get(response.status_code, 0) + 1
                    if response.status_code == 504:  # a wait the request itself bounded (timeout, min_version)
                        assert response.json()["error"]["code"] == "timeout", what
                    else:
                        assert response.status_code < 500, f"{what}: {response.text[:500]}"
                    for leak in LEAKS:
                        assert leak not in response.text, f"{what}: {response.text[:500]}"
                    if response.status_code >= 400:
                        body = json.loads(response.content.decode("utf-8"))
                        if "error" in body:
                            assert body["error"]["code"] and body["error"]["message"], what
                        else:  # a command's own result: rejected 422, conflict 409, failed 400
                            assert body["status"] in ("rejected", "conflict", "failed"), (what, body)

                try:
                    fuzz()
                except Unsatisfiable:  # nothing to break in a parameterless operation (NEGATIVE mode)
                    assert mode == GenerationMode.NEGATIVE, operation.label
        print(f"fuzz: {sum(calls.values())} requests, by status: {dict(sorted(calls.items()))}")
        assert calls.get(400, 0) > 0 and calls.get(200, 0) > 0, calls
        assert {code for code in calls if code >= 500} <= {504}, calls

        # The service keeps serving.
        assert client.get("/healthz").status_code == 200
        r = client.post(
            f"/aggregates/{agg}/commands",
            json={"aggregate_id": "inv-after", "type": "CreateInvoice", "payload": CREATE},
        )
        assert r.status_code == 200, r.text
        r = client.get("/views/invoice-list/rows", params={"aggregate_id": "inv-after", "min_version": 1, "timeout": 2})
        assert r.status_code == 200 and len(r.json()["rows"]) == 1, r.text
