"""Invoices: commands, events, state, and the rules. Pure: no I/O, no clock, no randomness.

Money is ``Decimal`` with at most two decimal places in the invoice's currency; quantities are
positive integers. Payments may be partial; the balance never goes below zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from foldline.aggregate import Aggregate, Decision, Rejection

Status = Literal["none", "draft", "sent", "overdue", "paid", "deleted"]
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CENT = Decimal("0.01")


def _money(value: Decimal, name: str, *, positive: bool) -> None:
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError(f"{name} must have at most two decimal places, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


def _text(value: str, name: str, limit: int = 200) -> None:
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{name} must be at most {limit} characters")


# -- commands -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CreateInvoice:
    customer: str
    currency: str
    issue_date: date
    due_date: date

    def __post_init__(self) -> None:
        _text(self.customer, "customer")
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"currency must be a three-letter ISO 4217 code such as EUR, got {self.currency!r}")
        if self.due_date < self.issue_date:
            raise ValueError(f"due_date {self.due_date} is before issue_date {self.issue_date}")


@dataclass(frozen=True)
class AddLineItem:
    line_id: str
    description: str
    quantity: int
    unit_price: Decimal

    def __post_init__(self) -> None:
        _text(self.line_id, "line_id", 64)
        _text(self.description, "description")
        if self.quantity <= 0:
            raise ValueError(f"quantity must be a positive whole number, got {self.quantity}")
        _money(self.unit_price, "unit_price", positive=False)


@dataclass(frozen=True)
class RemoveLineItem:
    line_id: str


@dataclass(frozen=True)
class SendInvoice:
    pass


@dataclass(frozen=True)
class RecordPayment:
    payment_id: str
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        _text(self.payment_id, "payment_id", 64)
        _money(self.amount, "amount", positive=True)


@dataclass(frozen=True)
class DeleteInvoice:
    reason: str = ""


@dataclass(frozen=True)
class MarkOverdue:
    """Sent at the due date by the ``OverdueOnDueDate`` policy's deadline."""


# -- events -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvoiceCreated:
    customer: str
    currency: str
    issue_date: date
    due_date: date


@dataclass(frozen=True)
class LineItemAdded:
    line_id: str
    description: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class LineItemRemoved:
    line_id: str


@dataclass(frozen=True)
class InvoiceSent:
    total: Decimal


@dataclass(frozen=True)
class PaymentRecorded:
    payment_id: str
    amount: Decimal
    balance: Decimal


@dataclass(frozen=True)
class InvoicePaid:
    total: Decimal


@dataclass(frozen=True)
class InvoiceDeleted:
    reason: str


@dataclass(frozen=True)
class InvoiceOverdue:
    pass


# -- state --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineItem:
    line_id: str
    description: str
    quantity: int
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Invoice:
    status: Status = "none"
    customer: str = ""
    currency: str = ""
    issue_date: date | None = None
    due_date: date | None = None
    lines: tuple[LineItem, ...] = ()
    paid: Decimal = Decimal("0")
    payments: tuple[str, ...] = ()

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0")).quantize(_CENT)

    @property
    def balance(self) -> Decimal:
        return (self.total - self.paid).quantize(_CENT)


class Invoices(Aggregate[Invoice]):
    name = "invoices"
    state_type = Invoice
    commands = (CreateInvoice, AddLineItem, RemoveLineItem, SendInvoice, RecordPayment, DeleteInvoice, MarkOverdue)
    events = (
        InvoiceCreated,
        LineItemAdded,
        LineItemRemoved,
        InvoiceSent,
        PaymentRecorded,
        InvoicePaid,
        InvoiceDeleted,
        InvoiceOverdue,
    )

    def initial_state(self) -> Invoice:
        return Invoice()

    def decide(self, state: Invoice, command: Any) -> Decision:
        if isinstance(command, CreateInvoice):
            if state.status == "deleted":
                return Rejection("the invoice was deleted")
            if state.status != "none":
                return Rejection("the invoice already exists")
            return [InvoiceCreated(command.customer, command.currency, command.issue_date, command.due_date)]
        if state.status == "none":
            return Rejection("the invoice does not exist")
        if state.status == "deleted":
            return Rejection("the invoice was deleted")
        match command:
            case AddLineItem():
                if state.status != "draft":
                    return Rejection("line items cannot change after the invoice was sent")
                if any(line.line_id == command.line_id for line in state.lines):
                    return Rejection(f"line item {command.line_id!r} already exists")
                return [LineItemAdded(command.line_id, command.description, command.quantity, command.unit_price)]
            case RemoveLineItem():
                if state.status != "draft":
                    return Rejection("line items cannot change after the invoice was sent")
                if not any(line.line_id == command.line_id for line in state.lines):
                    return Rejection(f"line item {command.line_id!r} does not exist")
                return [LineItemRemoved(command.line_id)]
            case SendInvoice():
                if state.status != "draft":
                    return Rejection("the invoice was already sent")
                if not state.lines or state.total <= 0:
                    return Rejection("an invoice needs at least one line item and a total above zero to be sent")
                return [InvoiceSent(state.total)]
            case RecordPayment():
                if state.status == "draft":
                    return Rejection("payments can only be recorded after the invoice was sent")
                if state.status == "paid":
                    return Rejection("the invoice is already paid in full")
                if command.currency != state.currency:
                    return Rejection(f"payment is in {command.currency}, the invoice in {state.currency}")
                if command.payment_id in state.payments:
                    return Rejection(f"payment {command.payment_id!r} was already recorded")
                if command.amount > state.balance:
                    return Rejection(f"payment {command.amount} exceeds the balance {state.balance}")
                balance = state.balance - command.amount
                events: list[Any] = [PaymentRecorded(command.payment_id, command.amount, balance)]
                if balance == 0:
                    events.append(InvoicePaid(state.total))
                return events
            case MarkOverdue():
                if state.status != "sent":
                    return Rejection(f"only a sent, unpaid invoice can become overdue; it is {state.status}")
                return [InvoiceOverdue()]
            case DeleteInvoice():
                if state.paid > 0:
                    return Rejection("an invoice with recorded payments cannot be deleted")
                return [InvoiceDeleted(command.reason)]
        raise TypeError(f"not an invoices command: {type(command).__name__}")

    def evolve(self, state: Invoice, event: Any) -> Invoice:
        match event:
            case InvoiceCreated():
                return Invoice("draft", event.customer, event.currency, event.issue_date, event.due_date)
            case LineItemAdded():
                line = LineItem(event.line_id, event.description, event.quantity, event.unit_price)
                # The most frequent event: built directly, as ``replace`` walks the fields each time.
                s = state
                return Invoice(
                    s.status, s.customer, s.currency, s.issue_date, s.due_date, (*s.lines, line), s.paid, s.payments
                )
            case LineItemRemoved():
                return replace(state, lines=tuple(x for x in state.lines if x.line_id != event.line_id))
            case InvoiceSent():
                return replace(state, status="sent")
            case PaymentRecorded():
                return replace(state, paid=state.paid + event.amount, payments=(*state.payments, event.payment_id))
            case InvoicePaid():
                return replace(state, status="paid")
            case InvoiceDeleted():
                return replace(state, status="deleted")
            case InvoiceOverdue():
                return replace(state, status="overdue")
        raise TypeError(f"not an invoices event: {type(event).__name__}")
