"""A batch into the database (SQLite, no other service): versions, stale rows, memos, positions, bad input."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

import pytest

from foldline.aggregate import AggregateSpec
from foldline.examples.invoices import Invoice, Invoices, LineItem
from foldline.examples.invoices.views import CustomerTotals, InvoiceLineItems, InvoiceList
from foldline.projection import ProjectionSpec, RevisionRetiredError, Upsert, open_store
from foldline.projection.api import Projection
from foldline.projection.apply import Applier
from foldline.records import EventRecord, SnapshotRecord

SPEC = AggregateSpec(Invoices())


@dataclass
class Msg:
    p: int
    o: int
    v: bytes | None

    def partition(self):
        return self.p

    def offset(self):
        return self.o

    def value(self):
        return self.v


def snap(aggregate_id, version, state):
    return SnapshotRecord(aggregate_id, version, SPEC.encode_state(state)).to_bytes()


def event(aggregate_id, version, ev):
    kind = SPEC.event_kind(ev)
    return EventRecord(aggregate_id, kind.name, version, kind.encode(ev), "c").to_bytes()  # type: ignore[arg-type]


def invoice(*lines, status="draft"):
    return Invoice(
        status,
        "ACME",
        "EUR",
        date(2026, 1, 1),
        date(2026, 2, 1),
        tuple(LineItem(i, i, 1, Decimal(p)) for i, p in lines),
    )


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'views.db'}")
    yield s
    s.close()


def run(store, spec, messages, positions=None):
    store.register(spec.table)
    if positions is None:
        positions = {}
        for m in messages:
            positions[m.p] = max(positions.get(m.p, 0), m.o + 1)
    return Applier(spec).apply(store, messages, positions)


def rows(store, view, **filters):
    return store.read_rows(view, filters=filters, limit=1000)


def test_snapshot_batch_keeps_the_newest_per_aggregate_and_drops_removed_lines(store):
    spec = ProjectionSpec(InvoiceLineItems())
    result = run(
        store,
        spec,
        [
            Msg(0, 0, snap("i1", 2, invoice(("a", "1"), ("b", "2")))),
            Msg(0, 1, snap("i1", 3, invoice(("a", "1"), ("b", "2"), ("c", "3")))),
        ],
    )
    assert (result.applied, result.rows, result.positions) == (1, 3, {0: 2})
    assert [r["line_id"] for r in rows(store, "invoice-line-items")] == ["a", "b", "c"]
    run(store, spec, [Msg(0, 2, snap("i1", 4, invoice(("a", "1"), ("c", "3"))))])
    got = rows(store, "invoice-line-items")
    assert [(r["line_id"], r["aggregate_version"]) for r in got] == [("a", 4), ("c", 4)]
    run(store, spec, [Msg(0, 3, snap("i1", 5, invoice(status="deleted")))])
    assert rows(store, "invoice-line-items") == []
    assert store.aggregate_version("invoice-line-items", "i1") == 5


def test_a_replayed_older_snapshot_never_moves_the_view_back(store):
    spec = ProjectionSpec(InvoiceList())
    run(store, spec, [Msg(0, 10, snap("i1", 4, invoice(("a", "7.00"), status="sent")))])
    # A rewound consumer (positions lost) delivers version 2 again: nothing changes.
    result = run(store, spec, [Msg(0, 3, snap("i1", 2, invoice(("a", "1.00"))))], positions={0: 4})
    assert result.duplicates == 1 and result.applied == 0
    [row] = rows(store, "invoice-list")
    assert (row["status"], row["total"], row["aggregate_version"]) == ("sent", "7.00", 4)
    assert store.positions("invoice-list", 1, spec.topic) == {0: 11}  # positions never move back either


def test_version_zero_snapshots_are_not_projected(store):
    spec = ProjectionSpec(InvoiceList())
    result = run(store, spec, [Msg(0, 0, snap("i9", 0, Invoice()))])
    assert result.applied == 0 and rows(store, "invoice-list") == []


def test_events_are_counted_once_even_when_delivered_again(store):
    from foldline.examples.invoices import InvoiceCreated, InvoiceSent, PaymentRecorded

    spec = ProjectionSpec(CustomerTotals())
    evs = [
        Msg(0, 0, event("i1", 1, InvoiceCreated("ACME", "EUR", date(2026, 1, 1), date(2026, 2, 1)))),
        Msg(0, 1, event("i1", 2, InvoiceSent(Decimal("30.00")))),
        Msg(1, 0, event("i2", 1, InvoiceCreated("ACME", "EUR", date(2026, 1, 1), date(2026, 2, 1)))),
        Msg(0, 2, event("i1", 3, PaymentRecorded("p", Decimal("10.25"), Decimal("19.75")))),
    ]
    run(store, spec, evs[:2])
    run(store, spec, evs)  # the first two again, below the stored position: skipped
    assert run(store, spec, evs, positions={0: 3, 1: 1}).applied == 0
    # Same events at new offsets (a zombie, or a topic re-copied): the per-aggregate version skips them.
    again = [replace(m, o=m.o + 100) for m in evs]
    assert run(store, spec, again).duplicates == 4
    [row] = rows(store, "customer-totals")
    assert (row["invoices"], row["invoiced"], row["paid"], row["events"]) == (2, "30.00", "10.25", 4)


def test_undecodable_records_and_failing_projections_are_skipped(store):
    class Fussy(Projection):
        name = "fussy"
        aggregate = Invoices
        columns = InvoiceList.columns
        key = ("id",)

        def project(self, record):
            if record.aggregate_id == "bad":
                raise RuntimeError("a bug in the projection")
            if record.aggregate_id == "wrong":
                return [Upsert({"id": "wrong", "no_such_column": 1})]
            return InvoiceList().project(record)

    spec = ProjectionSpec(Fussy())
    result = run(
        store,
        spec,
        [
            Msg(0, 0, b"{not json"),
            Msg(0, 1, None),
            Msg(0, 2, snap("bad", 1, invoice())),
            Msg(0, 3, snap("wrong", 1, invoice())),
            Msg(0, 4, snap("ok", 1, invoice())),
        ],
    )
    assert (result.skipped, result.applied) == (4, 1)
    assert [r["id"] for r in rows(store, "fussy")] == ["ok"]
    assert store.positions("fussy", 1, spec.topic) == {0: 5}
    with store.session(write=False) as s:  # each skipped record, with its cause, for an operator to find
        skipped = s.execute('SELECT "offset", aggregate_id, reason, error FROM foldline_skipped ORDER BY "offset"')
    assert [(o, a, r) for o, a, r, _ in skipped] == [
        (0, None, "undecodable"),
        (1, None, "undecodable"),
        (2, "bad", "project_failed"),
        (3, "wrong", "project_failed"),
    ]
    assert "a bug in the projection" in skipped[2][3]


def test_a_record_the_database_refuses_is_skipped_with_its_cause(store):
    spec = ProjectionSpec(InvoiceList())
    store.register(spec.table)
    result = Applier(spec).skip(store, Msg(0, 7, snap("i\x00d", 3, invoice())), "refused_by_database", ValueError("no"))
    assert (result.skipped, result.positions) == (1, {0: 8})
    again = Applier(spec).skip(store, Msg(0, 7, snap("i\x00d", 3, invoice())), "refused_by_database", ValueError("no"))
    assert (again.skipped, again.duplicates) == (0, 1)  # below the stored position: already passed over
    with store.session(write=False) as s:
        assert s.execute("SELECT aggregate_id, version, reason, error FROM foldline_skipped") == [
            ("i\\x00d", 3, "refused_by_database", "ValueError: no")  # the NUL escaped: any database takes it
        ]


def test_a_switch_waits_until_the_new_revision_reached_the_serving_one(store):
    old, new = ProjectionSpec(InvoiceList()), ProjectionSpec(InvoiceList(revision=2))
    history = [Msg(0, o, snap("i1", o + 1, invoice())) for o in range(6)]
    run(store, old, history)  # the serving revision is at offset 6
    run(store, new, history[:4])  # the new one at 4, past the end offsets a catch-up check sampled (3)
    assert not store.switch(new.table, {0: 3})
    assert store.view_info("invoice-list").active_revision == 1
    run(store, new, history[4:])
    assert store.switch(new.table, {0: 3})
    assert store.view_info("invoice-list").active_revision == 2
    assert rows(store, "invoice-list")[0]["aggregate_version"] == 6


def test_a_superseded_revision_stops_writing(store):
    old, new = ProjectionSpec(InvoiceList()), ProjectionSpec(InvoiceList(revision=2))
    run(store, old, [Msg(0, 0, snap("i1", 1, invoice()))])
    run(store, new, [Msg(0, 0, snap("i1", 1, invoice()))])
    assert store.switch(new.table, {0: 1})
    with pytest.raises(RevisionRetiredError):
        run(store, old, [Msg(0, 1, snap("i1", 2, invoice()))])
    with pytest.raises(RevisionRetiredError):
        store.register(old.table)


def test_the_journal_keeps_what_it_cannot_decode_and_skips_only_unreadable_records(store):
    """Unknown types stay rows of the journal (never a gap); a record with a field of the wrong type is
    skipped with its aggregate id and version where they can be read, and the batch goes on."""
    import json

    from foldline.examples.invoices import InvoiceCreated
    from foldline.ids import AggregateId, CommandId
    from foldline.projection.journal import journal_projection

    spec = journal_projection(Invoices)
    unknown = EventRecord(
        AggregateId("inv-1"), "FromTheFuture", 2, {"x": "\x00"}, CommandId("c2"), schema_version=9
    ).to_bytes()
    wrong = json.dumps({"aggregate_id": "inv-1", "version": 3, "type": "T", "payload": {}, "schema_version": "x"})
    result = run(
        store,
        spec,
        [
            Msg(0, 0, event("inv-1", 1, InvoiceCreated("ACME", "EUR", date(2026, 1, 1), date(2026, 2, 1)))),
            Msg(0, 1, unknown),
            Msg(0, 2, wrong.encode()),
            Msg(0, 3, b'{"aggregate_id": "inv-2", "version": 1}'),
            Msg(0, 4, b"\xff"),
        ],
    )
    assert (result.applied, result.skipped) == (2, 3)
    journal = rows(store, spec.view)
    assert [(r["id"], r["version"], r["type"]) for r in journal] == [
        ("inv-1", 1, "InvoiceCreated"),
        ("inv-1", 2, "FromTheFuture"),
    ]
    assert json.loads(journal[1]["payload"]) == {"x": "\x00"} and journal[1]["schema_version"] == 9
    with store.session(write=False) as s:
        skipped = s.execute('SELECT "offset", aggregate_id, version, reason FROM foldline_skipped ORDER BY "offset"')
    assert [tuple(r) for r in skipped] == [
        (2, "inv-1", 3, "undecodable"),
        (3, "inv-2", 1, "undecodable"),
        (4, None, None, "undecodable"),
    ]
