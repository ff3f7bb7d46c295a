"""Customers: who is invoiced, their credit limit, and the open balance of their sent, unpaid invoices.

The open balance moves only through the invoices policies (``policies.py``): a sent invoice charges it,
a paid one settles it. Each invoice is charged at most once and settled at most once, by its id. The two
policies run independently, so a settlement may arrive before its charge: charge and settle commute
(the balance may dip below zero meanwhile), and the balance ends as the sum over charged, unsettled invoices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from foldline.aggregate import Aggregate, Decision, Rejection
from foldline.examples.invoices.domain import _money, _text

CustomerStatus = Literal["none", "active"]


# -- commands -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisterCustomer:
    name: str
    email: str
    credit_limit: Decimal

    def __post_init__(self) -> None:
        _text(self.name, "name")
        _text(self.email, "email", 254)
        if "@" not in self.email:
            raise ValueError(f"email must contain @, got {self.email!r}")
        _money(self.credit_limit, "credit_limit", positive=False)


@dataclass(frozen=True)
class ChargeInvoice:
    invoice_id: str
    amount: Decimal

    def __post_init__(self) -> None:
        _text(self.invoice_id, "invoice_id", 256)
        _money(self.amount, "amount", positive=True)


@dataclass(frozen=True)
class SettleInvoice:
    invoice_id: str
    amount: Decimal

    def __post_init__(self) -> None:
        _text(self.invoice_id, "invoice_id", 256)
        _money(self.amount, "amount", positive=True)


# -- events -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CustomerRegistered:
    name: str
    email: str
    credit_limit: Decimal


@dataclass(frozen=True)
class InvoiceCharged:
    invoice_id: str
    amount: Decimal
    open_balance: Decimal


@dataclass(frozen=True)
class InvoiceSettled:
    invoice_id: str
    amount: Decimal
    open_balance: Decimal


# -- state --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Customer:
    status: CustomerStatus = "none"
    name: str = ""
    email: str = ""
    credit_limit: Decimal = Decimal("0")
    open_balance: Decimal = Decimal("0")
    #: Invoices charged, and invoices settled: each moves the balance once.
    charged: tuple[str, ...] = ()
    settled: tuple[str, ...] = ()

    @property
    def open_invoices(self) -> tuple[str, ...]:
        return tuple(i for i in self.charged if i not in self.settled)

    @property
    def over_limit(self) -> bool:
        return self.open_balance > self.credit_limit


class Customers(Aggregate[Customer]):
    name = "customers"
    state_type = Customer
    commands = (RegisterCustomer, ChargeInvoice, SettleInvoice)
    events = (CustomerRegistered, InvoiceCharged, InvoiceSettled)

    def initial_state(self) -> Customer:
        return Customer()

    def decide(self, state: Customer, command: Any) -> Decision:
        match command:
            case RegisterCustomer():
                if state.status != "none":
                    return Rejection("the customer already exists")
                return [CustomerRegistered(command.name, command.email, command.credit_limit)]
            case ChargeInvoice():
                if state.status == "none":
                    return Rejection("the customer does not exist")
                if command.invoice_id in state.charged:
                    return Rejection(f"invoice {command.invoice_id!r} was already charged")
                # A sent invoice is a fact: it is charged even past the credit limit (``over_limit`` shows it).
                return [InvoiceCharged(command.invoice_id, command.amount, state.open_balance + command.amount)]
            case SettleInvoice():
                if state.status == "none":
                    return Rejection("the customer does not exist")
                if command.invoice_id in state.settled:
                    return Rejection(f"invoice {command.invoice_id!r} was already settled")
                return [InvoiceSettled(command.invoice_id, command.amount, state.open_balance - command.amount)]
        raise TypeError(f"not a customers command: {type(command).__name__}")

    def evolve(self, state: Customer, event: Any) -> Customer:
        match event:
            case CustomerRegistered():
                return Customer("active", event.name, event.email, event.credit_limit)
            case InvoiceCharged():
                return replace(state, open_balance=event.open_balance, charged=(*state.charged, event.invoice_id))
            case InvoiceSettled():
                return replace(state, open_balance=event.open_balance, settled=(*state.settled, event.invoice_id))
        raise TypeError(f"not a customers event: {type(event).__name__}")
