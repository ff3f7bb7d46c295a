"""The invoices policies: a sent invoice charges its customer's open balance, a paid one settles it, and
an unpaid one becomes overdue when its due date has passed (a deadline).

Both remember each invoice's customer (from ``InvoiceCreated``) in their own state, since the later
events do not repeat it. The customer's id is the invoice's ``customer`` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from foldline.examples.invoices.customers import ChargeInvoice, Customers, SettleInvoice
from foldline.examples.invoices.domain import (
    InvoiceCreated,
    InvoiceDeleted,
    InvoicePaid,
    Invoices,
    InvoiceSent,
    MarkOverdue,
)
from foldline.policies import Cancel, Emit, Happened, Policy, Reaction, Schedule


@dataclass(frozen=True)
class InvoiceLink:
    """What a policy knows of one invoice: whose it is."""

    customer: str = ""


class _InvoiceCustomerPolicy(Policy[InvoiceLink]):
    """Remembers each invoice's customer, and tells the customer of one invoice event (``_emit``)."""

    sources = (Invoices,)
    targets = (Customers,)
    state_type = InvoiceLink

    def initial_state(self) -> InvoiceLink:
        return InvoiceLink()

    def react(self, state: InvoiceLink, event: Happened) -> Reaction:
        if isinstance(event.event, InvoiceCreated):
            return InvoiceLink(event.event.customer), []
        command = self._emit(event) if state.customer else None
        return state, [] if command is None else [Emit(state.customer, command)]

    def _emit(self, event: Happened) -> Any:
        raise NotImplementedError


class ChargeOnSend(_InvoiceCustomerPolicy):
    name = "invoice-charges"

    def _emit(self, event: Happened) -> ChargeInvoice | None:
        match event.event:
            case InvoiceSent(total=total):
                return ChargeInvoice(event.aggregate_id, total)
        return None


class SettleOnPayment(_InvoiceCustomerPolicy):
    name = "invoice-settlements"

    def _emit(self, event: Happened) -> SettleInvoice | None:
        match event.event:
            case InvoicePaid(total=total):
                return SettleInvoice(event.aggregate_id, total)
        return None


@dataclass(frozen=True)
class DueDate:
    due_date: date | None = None


def overdue_at(due_date: date) -> datetime:
    """An invoice is overdue once its due date has passed: at the start of the next day, UTC."""
    return datetime.combine(due_date + timedelta(days=1), time(0), tzinfo=UTC)


class OverdueOnDueDate(Policy[DueDate]):
    """A sent invoice gets a deadline at its due date; payment or deletion first cancels it."""

    name = "invoice-overdue"
    sources = (Invoices,)
    targets = (Invoices,)
    state_type = DueDate

    def initial_state(self) -> DueDate:
        return DueDate()

    def react(self, state: DueDate, event: Happened) -> Reaction:
        match event.event:
            case InvoiceCreated(due_date=due_date):
                return DueDate(due_date), []
            case InvoiceSent() if state.due_date is not None:
                return state, [Schedule("overdue", overdue_at(state.due_date), Emit(event.aggregate_id, MarkOverdue()))]
            case InvoicePaid() | InvoiceDeleted():
                return state, [Cancel("overdue")]
        return state, []
