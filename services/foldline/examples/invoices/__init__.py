"""The invoices example: an invoice from draft to paid, with the rules an invoicing service enforces."""

from foldline.examples.invoices.domain import (
    AddLineItem,
    CreateInvoice,
    DeleteInvoice,
    Invoice,
    InvoiceCreated,
    InvoiceDeleted,
    InvoicePaid,
    Invoices,
    InvoiceSent,
    LineItem,
    LineItemAdded,
    LineItemRemoved,
    PaymentRecorded,
    RecordPayment,
    RemoveLineItem,
    SendInvoice,
)

__all__ = [
    "AddLineItem",
    "CreateInvoice",
    "DeleteInvoice",
    "Invoice",
    "InvoiceCreated",
    "InvoiceDeleted",
    "InvoicePaid",
    "InvoiceSent",
    "Invoices",
    "LineItem",
    "LineItemAdded",
    "LineItemRemoved",
    "PaymentRecorded",
    "RecordPayment",
    "RemoveLineItem",
    "SendInvoice",
]
