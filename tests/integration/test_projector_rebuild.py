"""Rebuilding a view without downtime: revision 2 (with an extra column) replays the snapshots into a new
table while commands keep flowing and revision 1 keeps serving; at the switch the new table is complete
(equal to the fold of each invoice's events up to the positions it switched at), and the old one is gone.
"""

from __future__ import annotations

import threading
import time

import pytest

from foldline.aggregate import AggregateSpec
from foldline.examples.invoices.views import InvoiceList
from foldline.projection import Column, ProjectionSpec, RowChange, Snapshot, Upsert, open_store, open_target
from foldline.projection.engine import SwitchInfo
from foldline.projection.wiring import build_projector
from foldline.records import SnapshotRecord
from foldline.settings import KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames
from tests.integration.test_projector_kill import invoice_workload, stream, wait_until
from tests.kafka_support import read_topic, send, wait_for_results

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


class InvoiceListV2(InvoiceList):
    revision = 2
    columns = (*InvoiceList.columns, Column("lines", "integer", nullable=False))

    def project(self, record: Snapshot) -> list[RowChange]:
        time.sleep(0.002)  # an expensive projection: the rebuild takes a few seconds, commands flowing meanwhile
        return [
            Upsert({**row.values, "lines": len(record.state.lines)})  # type: ignore[union-attr]
            for row in super().project(record)
        ]


def read_all(target, view="invoice-list"):
    """Every row in one query (one consistent snapshot, unlike pages read while rows change)."""
    rows = target.read_rows(view, filters={}, limit=10_000)
    assert len(rows) < 10_000
    return rows


def expected_row(aid, state, version, with_lines):
    row = {
        "id": aid,
        "customer": state.customer,
        "status": state.status,
        "currency": state.currency,
        "total": str(state.total),
        "balance": str(state.balance),
        "issue_date": state.issue_date.isoformat(),
        "due_date": state.due_date.isoformat(),
        "aggregate_id": aid,
        "aggregate_version": version,
    }
    if with_lines:
        row["lines"] = len(state.lines)
    return row


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_rebuild_switches_atomically_while_commands_flow(
    database, kafka_bootstrap, invoices_aggregate, run_handler, invoice_history, tmp_path, request
):
    url = f"sqlite:///{tmp_path / 'views.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    cls = invoices_aggregate(partitions=3)
    names = TopicNames(cls.name)
    run_handler(cls())
    before = invoice_workload(invoices=500, prefix="old")
    send(kafka_bootstrap, names.commands, before)
    wait_for_results(kafka_bootstrap, cls.name, len(before))

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    settings = ProjectorSettings(kafka=kafka, database=url, batch_wait_ms=20)
    v1 = build_projector(ProjectionSpec(InvoiceList(aggregate_name=cls.name)), settings)
    threads = [threading.Thread(target=v1.run, daemon=True)]
    threads[0].start()
    wait_until(lambda: v1.ready() and v1.lag() == 0 and v1.positions, 60, "revision 1 to catch up")

    reader = open_target(url)
    observed: list[tuple[float, str, bool, int]] = []  # (time, v2 state, has 'lines', sum of versions)
    errors: list[BaseException] = []
    switched: dict = {}
    stop_reading = threading.Event()

    def on_switch(info: SwitchInfo) -> None:  # in v2's thread, before its next batch: the table as switched
        store = open_store(url)
        try:
            revision = store.view_info("invoice-list").revision(2)
            assert revision is not None
            switched["positions"] = revision.positions
            switched["rows"] = read_all(store)
            switched["info"] = info
            switched["at"] = time.monotonic()
        finally:
            store.close()

    def observe() -> None:
        while not stop_reading.is_set():
            try:
                state = v2.state  # before the read: "building" here means the read began before the switch
                rows = read_all(reader)
                observed.append(
                    (
                        time.monotonic(),
                        state,
                        bool(rows) and "lines" in rows[0],
                        sum(r["aggregate_version"] for r in rows),
                    )
                )
            except BaseException as exc:
                errors.append(exc)
                return
            time.sleep(0.05)  # the handler and both revisions share this process's GIL with the reads

    # Three times more commands than the rebuild needs on an idle machine, at the same pace (400 invoices in 30 s):
    # the sender stops a second after the switch, and a loaded machine still switches with commands flowing.
    after = invoice_workload(invoices=1200, prefix="new", seed=5)
    sender = stream(kafka_bootstrap, names.commands, after, seconds=90, chunk=40)
    time.sleep(1)
    v2 = build_projector(
        ProjectionSpec(InvoiceListV2(aggregate_name=cls.name)), settings.with_changes(max_batch=50), on_switch=on_switch
    )
    threads.append(threading.Thread(target=observe, daemon=True))
    threads.append(threading.Thread(target=v2.run, daemon=True))
    for thread in threads[1:]:
        thread.start()
    try:
        wait_until(lambda: "rows" in switched or not sender.is_alive(), 100, "revision 2 to switch")
        assert sender.is_alive(), "the rebuild took longer than the stream of commands"
        threads[0].join(30)
        assert v1.retired and not threads[0].is_alive(), "revision 1 did not stop after the switch"
        time.sleep(1)  # commands go on through the new revision for a while
        sender.halt.set()
        sender.join()
        wait_for_results(kafka_bootstrap, cls.name, len(before) + sender.sent, timeout=120)
        wait_until(lambda: v2.lag() == 0, 60, "revision 2 to catch up")
        time.sleep(0.5)
    finally:
        stop_reading.set()
        v2.stop()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert sender_was_running_at(switched["at"], observed), "no commands flowed during the rebuild"

    # The old revision served every read until the switch, and kept being updated meanwhile.
    shapes = [has_lines for _, _, has_lines, _ in observed]
    flipped = shapes.index(True)
    assert not any(shapes[:flipped]) and all(shapes[flipped:]), "reads went back to the old table"
    building = [o for o in observed[:flipped] if o[1] == "building"]
    assert len(building) >= 3, "too few reads while revision 2 was building"
    assert building[-1][3] > building[0][3], f"revision 1 stood still during the rebuild: {observed}"
    assert all(has_lines for at, _, has_lines, _ in observed if at > switched["at"])
    assert "lines" in reader.columns("invoice-list")
    info = switched["info"]
    assert all(switched["positions"][p] >= end for p, end in info.targets.items())
    assert switched["at"] - info.measured_at < settings.catchup_window_ms / 1000 + 1.0

    # Complete at the switch: exactly the snapshots below the switch positions, each equal to the fold.
    history = invoice_history(cls)
    spec = AggregateSpec(cls())
    latest: dict[str, SnapshotRecord] = {}
    for msg in read_topic(kafka_bootstrap, names.snapshots):
        if msg.offset() < switched["positions"].get(msg.partition(), 0):
            snap = SnapshotRecord.from_bytes(msg.value())
            if snap.version and (snap.aggregate_id not in latest or snap.version > latest[snap.aggregate_id].version):
                latest[snap.aggregate_id] = snap
    expected = {}
    for aid, snap in latest.items():
        state = spec.aggregate.fold(history[aid][2][: snap.version])
        assert spec.decode_state(snap.schema_version, snap.state) == state
        if state.status not in ("none", "deleted"):
            expected[aid] = expected_row(aid, state, snap.version, with_lines=True)
    assert any(aid.startswith("new-") for aid in expected), "the switch came before any new command"
    assert {r["id"]: r for r in switched["rows"]} == expected

    # And at the end, caught up: every row is the fold of all its events; the old tables are gone.
    final = {
        aid: expected_row(aid, state, version, True)
        for aid, (state, version, _) in history.items()
        if state.status not in ("none", "deleted")
    }
    assert {r["id"]: r for r in read_all(reader)} == final
    store = open_store(url)
    try:
        status = store.view_info("invoice-list")
        assert status.active_revision == 2
        assert [(r.revision, r.state) for r in status.revisions] == [(1, "retired"), (2, "active")]
        with store.session(write=False) as s:
            table_names = [
                t
                for (t,) in s.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    if database == "sqlite"
                    else "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            ]
        assert "invoice_list__r2" in table_names and not [t for t in table_names if t.startswith("invoice_list__r1")]
    finally:
        store.close()
        reader.close()


def sender_was_running_at(moment: float, observed: list[tuple[float, str, bool, int]]) -> bool:
    """Versions in the view still grew after the switch: commands were flowing through it."""
    later = [versions for at, _, _, versions in observed if at > moment]
    return len(later) >= 2 and later[-1] > later[0]
