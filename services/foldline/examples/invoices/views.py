"""The invoices views: a list of invoices, their line items, and totals per customer.

foldline projector --projection foldline.examples.invoices.views:InvoiceList
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from foldline.examples.invoices.domain import (
    Invoice,
    InvoiceCreated,
    InvoiceDeleted,
    Invoices,
    InvoiceSent,
    PaymentRecorded,
)
from foldline.projection import Column, Event, Increment, Projection, Remember, RowChange, Snapshot, Upsert


class InvoiceList(Projection):
    """One row per invoice that exists (deleted invoices leave the list); from snapshots."""

    name = "invoice-list"
    aggregate = Invoices
    source = "snapshots"
    revision = 1
    columns: ClassVar[tuple[Column, ...]] = (  # declared wide, so a next revision may add columns
        Column("id", "text"),
        Column("customer", "text", nullable=False),
        Column("status", "text", nullable=False),
        Column("currency", "text", nullable=False),
        Column("total", "numeric", nullable=False),
        Column("balance", "numeric", nullable=False),
        Column("issue_date", "date"),
        Column("due_date", "date"),
    )
    key = ("id",)
    indexes = (("customer",), ("status",))

    def project(self, record: Snapshot) -> list[RowChange]:
        invoice: Invoice = record.state
        if invoice.status in ("none", "deleted"):
            return []
        total = invoice.total
        return [
            Upsert(
                {
                    "id": record.aggregate_id,
                    "customer": invoice.customer,
                    "status": invoice.status,
                    "currency": invoice.currency,
                    "total": total,
                    "balance": (total - invoice.paid).quantize(Decimal("0.01")),
                    "issue_date": invoice.issue_date,
                    "due_date": invoice.due_date,
                }
            )
        ]


class InvoiceListV2(InvoiceList):
    """Revision 2 of the invoice list: each row also counts its line items.

    Shipping a new revision is how a view changes: a Projection with ``projector: ...:InvoiceListV2`` and
    ``revision: 2`` rebuilds ``invoice-list`` from the log beside revision 1, which serves until the switch.
    """

    revision = 2
    columns: ClassVar[tuple[Column, ...]] = (*InvoiceList.columns, Column("line_count", "integer"))

    def project(self, record: Snapshot) -> list[RowChange]:
        rows = super().project(record)
        invoice: Invoice = record.state
        return [
            Upsert({**change.values, "line_count": len(invoice.lines)}) for change in rows if isinstance(change, Upsert)
        ]


class InvoiceLineItems(Projection):
    """One row per line item of each existing invoice; items removed since the last snapshot disappear."""

    name = "invoice-line-items"
    aggregate = Invoices
    source = "snapshots"
    revision = 1
    columns = (
        Column("invoice_id", "text"),
        Column("line_id", "text"),
        Column("position", "integer", nullable=False),
        Column("customer", "text", nullable=False),
        Column("description", "text", nullable=False),
        Column("quantity", "integer", nullable=False),
        Column("unit_price", "numeric", nullable=False),
        Column("amount", "numeric", nullable=False),
    )
    key = ("invoice_id", "line_id")

    def project(self, record: Snapshot) -> list[RowChange]:
        invoice: Invoice = record.state
        if invoice.status in ("none", "deleted"):
            return []
        return [
            Upsert(
                {
                    "invoice_id": record.aggregate_id,
                    "line_id": line.line_id,
                    "position": n,
                    "customer": invoice.customer,
                    "description": line.description,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "amount": line.amount,
                }
            )
            for n, line in enumerate(invoice.lines, 1)
        ]


class CustomerTotals(Projection):
    """Per customer: invoices (created, not deleted), invoiced (sent totals, not deleted), paid, events.

    From events, each applied exactly once. Only ``InvoiceCreated`` names the customer, so the view
    remembers it per invoice (``Remember``), with the invoice's sent total for a later deletion.
    """

    name = "customer-totals"
    aggregate = Invoices
    source = "events"
    revision = 1
    columns = (
        Column("customer", "text"),
        Column("invoices", "integer", nullable=False),
        Column("invoiced", "numeric", nullable=False),
        Column("paid", "numeric", nullable=False),
        Column("events", "integer", nullable=False),
    )
    key = ("customer",)

    def project(self, record: Event) -> list[RowChange]:
        event = record.event
        changes: list[RowChange] = []
        invoices, invoiced, paid = 0, Decimal("0"), Decimal("0")
        if isinstance(event, InvoiceCreated):
            memo = {"customer": event.customer}
            changes.append(Remember(memo))
            invoices = 1
        else:
            memo = dict(record.memo)
            if isinstance(event, InvoiceSent):
                invoiced = event.total
                changes.append(Remember({**memo, "sent": str(event.total)}))
            elif isinstance(event, PaymentRecorded):
                paid = event.amount
            elif isinstance(event, InvoiceDeleted):
                invoices, invoiced = -1, -Decimal(memo.get("sent", "0"))
        customer = memo.get("customer")
        if not customer:
            return []  # an invoice whose creation this view never saw
        # Every column is added to, so the first change of a customer creates a complete row.
        changes.append(
            Increment({"customer": customer}, {"invoices": invoices, "invoiced": invoiced, "paid": paid, "events": 1})
        )
        return changes
