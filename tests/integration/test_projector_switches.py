"""Reads never go back in time across revision switches (issue 10, defect 9).

Revisions 1..N of the invoice list take over one after another while commands flow. A reader polls the
view and checks, read after read, that no row's version goes down and that a row disappears only when its
invoice was deleted; a second reader asks through the gateway's ``min_version`` path (``ViewService``) for
the versions it saw and checks that no answer is below the version waited for.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from foldline.errors import StoreUnavailableError
from foldline.examples.invoices.views import InvoiceList
from foldline.gateway.errors import GatewayTimeout, Unavailable
from foldline.gateway.views import RowQuery, ViewService
from foldline.projection import ProjectionSpec, RowChange, Snapshot, open_target
from foldline.projection.wiring import build_projector
from foldline.records import EventRecord
from foldline.settings import KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames
from tests.integration.test_projector_kill import invoice_workload, stream, wait_until
from tests.kafka_support import read_topic, send, wait_for_results

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

SWITCHES = 6


def revision(n: int) -> type[InvoiceList]:
    """Revision ``n`` of the invoice list: the same rows, rebuilt from the start of the snapshots."""

    def project(self: InvoiceList, record: Snapshot) -> list[RowChange]:
        time.sleep(0.001)  # a rebuild takes a moment, with commands flowing meanwhile
        return InvoiceList.project(self, record)

    return type(f"InvoiceListR{n}", (InvoiceList,), {"revision": n, "project": project})


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_switches_under_load_never_move_reads_back(
    database, kafka_bootstrap, invoices_aggregate, run_handler, tmp_path, request
):
    url = f"sqlite:///{tmp_path / 'views.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    run_handler(cls(), commit_interval_ms=5)
    before = invoice_workload(invoices=200, prefix="old")
    send(kafka_bootstrap, names.commands, before)
    wait_for_results(kafka_bootstrap, cls.name, len(before))

    settings = ProjectorSettings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap), database=url, batch_wait_ms=10)
    threads: list[threading.Thread] = []

    def run(n: int):
        projector = build_projector(ProjectionSpec(revision(n)(aggregate_name=cls.name)), settings)
        thread = threading.Thread(target=projector.run, daemon=True)
        thread.start()
        threads.append(thread)
        return projector

    current = run(1)
    wait_until(lambda: current.ready() and current.lag() == 0, 60, "revision 1 to catch up")

    stop = threading.Event()
    errors: list[BaseException] = []
    went_back: list[str] = []
    vanished: list[tuple[str, int]] = []  # (invoice, version it was last seen at)
    reads = {"plain": 0, "min_version": 0, "retried": 0}
    last_seen: dict[str, int] = {}

    def poll() -> None:
        reader = open_target(url)
        seen: dict[str, int] = {}
        try:
            while not stop.is_set():
                try:
                    page = reader.read_rows("invoice-list", filters={}, limit=10_000)
                except StoreUnavailableError:  # the table changed under three reads in a row: read again
                    reads["retried"] += 1
                    continue
                rows = {r["id"]: r["aggregate_version"] for r in page}
                for aid, version in seen.items():
                    if aid not in rows:
                        vanished.append((aid, version))
                    elif rows[aid] < version:
                        went_back.append(f"{aid}: {version} -> {rows[aid]}")
                seen = rows
                last_seen.update(rows)
                reads["plain"] += 1
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader.close()

    def read_after_write() -> None:
        async def loop() -> None:
            views = ViewService(url, {"invoice-list": cls.name}, opener=open_target)
            await views.start()
            rng = random.Random(3)
            try:
                while not stop.is_set():
                    if not last_seen:
                        await asyncio.sleep(0.01)
                        continue
                    aid, version = rng.choice(list(last_seen.items()))
                    query = RowQuery(filters={"aggregate_id": aid}, aggregate_id=aid, min_version=version, timeout=10.0)
                    try:
                        got, rows = await views.rows_at_version("invoice-list", query)
                    except GatewayTimeout:
                        continue  # deleted since: its version stays, its row is gone
                    except Unavailable:  # 503: the table changed under three reads in a row; a client retries
                        reads["retried"] += 1
                        continue
                    if got < version or any(r["aggregate_version"] < version for r in rows):
                        went_back.append(f"min_version {version} of {aid}: {got}, {rows}")
                    reads["min_version"] += 1
            finally:
                await views.close()

        try:
            asyncio.run(loop())
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=poll, daemon=True), threading.Thread(target=read_after_write, daemon=True)]
    for thread in readers:
        thread.start()
    after = invoice_workload(invoices=2000, prefix="new", seed=7)
    sender = stream(kafka_bootstrap, names.commands, after, seconds=300, chunk=20)
    switched = 0
    try:
        for n in range(2, SWITCHES + 2):
            previous, current = current, run(n)
            wait_until(lambda: current.state == "active", 120, f"revision {n} to switch")  # noqa: B023
            wait_until(lambda: previous.retired, 60, f"revision {n - 1} to retire")  # noqa: B023
            switched += 1
            assert sender.is_alive(), "the commands stopped before the last switch"
            time.sleep(0.3)  # reads on the new revision while commands go on
    finally:
        sender.halt.set()
        sender.join()
        stop.set()
        for thread in readers:
            thread.join(30)
        current.stop()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert switched == SWITCHES
    assert reads["plain"] > 50 and reads["min_version"] > 50, reads
    assert reads["retried"] < reads["plain"] / 10, reads
    assert not went_back, went_back[:20]

    # A row vanished only if its invoice was deleted after the version it was last seen at.
    deleted_at: dict[str, int] = {}
    for msg in read_topic(kafka_bootstrap, names.events):
        event = EventRecord.from_bytes(msg.value())
        if event.type == "InvoiceDeleted":
            deleted_at[event.aggregate_id] = event.version
    wrongly = [(aid, v) for aid, v in vanished if not deleted_at.get(aid, 0) > v]
    assert not wrongly, wrongly[:20]
