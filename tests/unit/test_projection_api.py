"""The projection API without services: definitions, checks of row changes, the invoices views."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from foldline.errors import AggregateDefinitionError
from foldline.examples.invoices import (
    Invoice,
    InvoiceCreated,
    InvoiceDeleted,
    Invoices,
    InvoiceSent,
    LineItem,
    PaymentRecorded,
)
from foldline.examples.invoices.views import CustomerTotals, InvoiceLineItems, InvoiceList, InvoiceListV2
from foldline.projection import (
    Column,
    Delete,
    Event,
    Increment,
    InvalidQueryError,
    Projection,
    ProjectionSpec,
    Remember,
    Snapshot,
    TableDef,
    Upsert,
    load_projection,
)
from foldline.projection.schema import table_name
from foldline.projection.sql import parse_filter
from foldline.settings import ProjectorSettings


def table(**overrides):
    args = {
        "view": "v",
        "revision": 1,
        "aggregate": "a",
        "source": "snapshots",
        "topic": "a.snapshots",
        "columns": (Column("id", "text"), Column("n", "integer")),
        "key": ("id",),
    }
    return TableDef.build(**{**args, **overrides})


@pytest.mark.parametrize("name", ["", "Bad", "1x", "a b", 'x"; drop table t; --', "a" * 49, "ünï"])
def test_column_names_are_plain_words(name):
    with pytest.raises(AggregateDefinitionError):
        Column(name, "text")


def test_column_types_are_checked():
    with pytest.raises(AggregateDefinitionError, match="one of text, integer"):
        Column("x", "float")  # type: ignore[arg-type]


@pytest.mark.parametrize("view", ["", "Invoice", "a_b", "a;b", "-a", "a" * 41])
def test_view_names_are_checked(view):
    with pytest.raises(AggregateDefinitionError):
        table(view=view)


def test_table_names_map_views_one_to_one():
    assert table_name("invoice-list", 2) == "invoice_list__r2"
    t = table(view="invoice-list", revision=3)
    assert (t.table, t.versions_table) == ("invoice_list__r3", "invoice_list__r3__agg")
    assert t.column_names == ["id", "n", "aggregate_id", "aggregate_version"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"columns": (Column("id", "text"), Column("id", "integer"))}, "twice"),
        ({"columns": (Column("aggregate_id", "text"),), "key": ("aggregate_id",)}, "system column"),
        ({"key": ("nope",)}, "not a declared column"),
        ({"key": ()}, "primary key"),
        ({"source": "changelog"}, "source"),
        ({"revision": 0}, "revision"),
        ({"indexes": (("zzz",),)}, "unknown columns"),
    ],
)
def test_bad_tables_are_refused(overrides, message):
    with pytest.raises(AggregateDefinitionError, match=message):
        table(**overrides)


def test_definition_round_trips_through_the_catalog_json():
    t = table(columns=(Column("id", "text"), Column("d", "date", nullable=False)), indexes=(("d",),))
    again = TableDef.from_definition("v", 1, t.definition())
    assert again == t
    assert again.column_map()["id"].nullable is False  # key columns are never null


def spec(cls=InvoiceList, **kw):
    return ProjectionSpec(cls(**kw))


def test_check_accepts_good_changes_and_names_the_fault_in_bad_ones():
    s = spec()
    good = Upsert(
        {
            "id": "i",
            "customer": "c",
            "status": "draft",
            "currency": "EUR",
            "total": Decimal("1.00"),
            "balance": 0,
            "issue_date": date(2026, 1, 1),
            "due_date": None,
        }
    )
    assert s.check(good) is good
    with pytest.raises(ValueError, match="key column 'id'"):
        s.check(Upsert({"customer": "c"}))
    with pytest.raises(ValueError, match="no column 'nope'"):
        s.check(Upsert({"id": "i", "nope": 1}))
    with pytest.raises(ValueError, match="no column 'aggregate_version'"):
        s.check(Upsert({"id": "i", "aggregate_version": 3}))
    with pytest.raises(ValueError, match="is numeric"):
        s.check(Upsert({**good.values, "total": 1.5}))
    with pytest.raises(ValueError, match="is date"):
        s.check(Upsert({**good.values, "due_date": datetime(2026, 1, 1)}))
    with pytest.raises(ValueError, match="must not be null"):
        s.check(Upsert({**good.values, "customer": None}))
    with pytest.raises(ValueError, match="exactly the columns id"):
        s.check(Delete({"id": "i", "customer": "c"}))
    with pytest.raises(ValueError, match="not Upsert"):
        s.check("DROP TABLE")
    totals = spec(CustomerTotals)
    with pytest.raises(ValueError, match="integer or numeric"):
        totals.check(Increment({"customer": "c"}, {"customer": 1}))
    with pytest.raises(ValueError, match="key column or also added"):
        totals.check(Increment({"customer": "c"}, {"paid": 1}, {"paid": 2}))
    assert totals.check(Increment({"customer": "c"}, {"paid": Decimal("1.50"), "events": 1}))
    assert totals.check(Remember({"customer": "c"}))


def test_projection_needs_its_class_variables():
    class Incomplete(Projection):
        name = "incomplete"

    with pytest.raises(AggregateDefinitionError, match="aggregate"):
        Incomplete()


def test_names_can_be_overridden_for_deployments_and_tests():
    s = spec(aggregate_name="inv-x1", view_name="list-b")
    assert (s.view, s.aggregate, s.topic, s.revision) == ("list-b", "inv-x1", "inv-x1.snapshots", 1)
    assert spec(CustomerTotals).topic == "invoices.events"
    loaded = load_projection("foldline.examples.invoices.views:InvoiceLineItems", aggregate_name="inv-y")
    assert loaded.topic == "inv-y.snapshots" and loaded.view == "invoice-line-items"
    with pytest.raises(AggregateDefinitionError, match="not a foldline Projection"):
        load_projection("foldline.examples.invoices:Invoices")


def invoice(status="draft", lines=(("a", 2, "10.00"), ("b", 1, "5.50")), paid="0"):
    return Invoice(
        status,
        "ACME",
        "EUR",
        date(2026, 11, 1),
        date(2026, 12, 1),
        tuple(LineItem(i, f"item {i}", q, Decimal(p)) for i, q, p in lines),
        Decimal(paid),
    )


def test_invoice_list_row_and_deleted_invoices_leave_the_list():
    s = spec()
    [row] = s.projection.project(Snapshot("inv-1", 5, invoice("sent", paid="10.00")))
    assert row.values == {
        "id": "inv-1",
        "customer": "ACME",
        "status": "sent",
        "currency": "EUR",
        "total": Decimal("25.50"),
        "balance": Decimal("15.50"),
        "issue_date": date(2026, 11, 1),
        "due_date": date(2026, 12, 1),
    }
    s.check(row)
    assert s.projection.project(Snapshot("inv-1", 6, invoice("deleted"))) == []


def test_invoice_list_revision_two_counts_line_items_in_the_same_view():
    s = spec(InvoiceListV2)
    assert (s.projection.name, s.projection.revision) == ("invoice-list", 2)
    [row] = s.projection.project(Snapshot("inv-1", 5, invoice("sent")))
    assert row.values["line_count"] == 2 and row.values["total"] == Decimal("25.50")
    s.check(row)
    assert s.projection.project(Snapshot("inv-1", 6, invoice("deleted"))) == []


def test_line_items_one_row_per_line():
    s = spec(InvoiceLineItems)
    rows = s.projection.project(Snapshot("inv-1", 3, invoice()))
    assert [(r.values["line_id"], r.values["position"], r.values["amount"]) for r in rows] == [
        ("a", 1, Decimal("20.00")),
        ("b", 2, Decimal("5.50")),
    ]
    for r in rows:
        s.check(r)


def test_customer_totals_remembers_the_customer_of_each_invoice():
    p = CustomerTotals()
    created = p.project(
        Event("inv-1", 1, "InvoiceCreated", InvoiceCreated("ACME", "EUR", date(2026, 1, 1), date(2026, 2, 1)))
    )
    assert created[0] == Remember({"customer": "ACME"})
    assert isinstance(created[1], Increment)
    assert created[1].key == {"customer": "ACME"} and created[1].add["invoices"] == 1
    sent = p.project(Event("inv-1", 3, "InvoiceSent", InvoiceSent(Decimal("30.00")), memo={"customer": "ACME"}))
    assert sent[0] == Remember({"customer": "ACME", "sent": "30.00"})
    assert isinstance(sent[1], Increment)
    assert sent[1].add == {"invoices": 0, "invoiced": Decimal("30.00"), "paid": Decimal("0"), "events": 1}
    paid = p.project(
        Event(
            "inv-1",
            4,
            "PaymentRecorded",
            PaymentRecorded("p", Decimal("5"), Decimal("25")),
            memo={"customer": "ACME", "sent": "30.00"},
        )
    )
    assert isinstance(paid[0], Increment)
    assert paid[0].add["paid"] == Decimal("5")
    deleted = p.project(
        Event("inv-1", 5, "InvoiceDeleted", InvoiceDeleted(""), memo={"customer": "ACME", "sent": "30.00"})
    )
    assert isinstance(deleted[0], Increment)
    assert deleted[0].add["invoices"] == -1 and deleted[0].add["invoiced"] == Decimal("-30.00")
    assert p.project(Event("inv-2", 2, "InvoiceSent", InvoiceSent(Decimal("1")))) == []  # never saw it created
    for change in (*created, *sent, *paid, *deleted):
        spec(CustomerTotals).check(change)


@pytest.mark.parametrize(
    "kind, raw, value",
    [
        ("text", "O'Brien; --", "O'Brien; --"),
        ("integer", "-12", -12),
        ("numeric", "10.50", Decimal("10.50")),
        ("date", "2026-12-01", date(2026, 12, 1)),
        ("boolean", "TRUE", True),
        ("boolean", "0", False),
    ],
)
def test_filters_are_parsed_to_the_column_type(kind, raw, value):
    assert parse_filter(Column("c", kind), raw) == value


@pytest.mark.parametrize(
    "kind, raw",
    [
        ("integer", "1.5"),
        ("integer", "1 OR 1=1"),
        ("numeric", "NaN"),
        ("numeric", "ten"),
        ("date", "tomorrow"),
        ("boolean", "maybe"),
    ],
)
def test_bad_filter_values_are_invalid_queries(kind, raw):
    with pytest.raises(InvalidQueryError):
        parse_filter(Column("c", kind), raw)


def test_projector_settings_from_env():
    s = ProjectorSettings.from_env(
        {
            "FOLDLINE_PROJECTION_DATABASE": "postgresql://x/y",
            "FOLDLINE_PROJECTION_MAX_BATCH": "100",
            "FOLDLINE_HTTP_PORT": "9000",
        }
    )
    assert (s.database, s.max_batch, s.http_port) == ("postgresql://x/y", 100, 9000)
    assert ProjectorSettings.from_env({}).database.startswith("sqlite:///")
    assert s.with_changes(batch_wait_ms=5).batch_wait_ms == 5


def test_invoices_class_is_the_aggregate():
    assert InvoiceList.aggregate is Invoices


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:", "mysql://h/db", "views.db"])
def test_unsupported_database_urls_are_configuration_errors(url):
    from foldline.errors import ConfigurationError
    from foldline.projection import open_target

    with pytest.raises(ConfigurationError):
        open_target(url)
