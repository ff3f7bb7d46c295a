"""The invoices policies: a sent invoice charges its customer's open balance, a paid one settles it.

Both remember each invoice's customer (from ``InvoiceCreated``) in their own state, since the later
events do not repeat it. The customer's id is the invoice's ``customer`` field.
"""

from __future__ import annotations

from dataclasses import dataclass

from foldline.examples.invoices.customers import ChargeInvoice, Customers, SettleInvoice
from foldline.examples.invoices.domain import InvoiceCreated, InvoicePaid, Invoices, InvoiceSent
from foldline.policies import Emit, Happened, Policy, Reaction


@dataclass(frozen=True)
class InvoiceLink:
    """What a policy knows of one invoice: whose it is."""

    customer: str = ""


class ChargeOnSend(Policy[InvoiceLink]):
    name = "invoice-charges"
    sources = (Invoices,)
    targets = (Customers,)
    state_type = InvoiceLink

    def initial_state(self) -> InvoiceLink:
        return InvoiceLink()

    def react(self, state: InvoiceLink, event: Happened) -> Reaction:
        match event.event:
            case InvoiceCreated(customer=customer):
                return InvoiceLink(customer), []
            case InvoiceSent(total=total) if state.customer:
                return state, [Emit(state.customer, ChargeInvoice(event.aggregate_id, total))]
        return state, []


class SettleOnPayment(Policy[InvoiceLink]):
    name = "invoice-settlements"
    sources = (Invoices,)
    targets = (Customers,)
    state_type = InvoiceLink

    def initial_state(self) -> InvoiceLink:
        return InvoiceLink()

    def react(self, state: InvoiceLink, event: Happened) -> Reaction:
        match event.event:
            case InvoiceCreated(customer=customer):
                return InvoiceLink(customer), []
            case InvoicePaid(total=total) if state.customer:
                return state, [Emit(state.customer, SettleInvoice(event.aggregate_id, total))]
        return state, []
