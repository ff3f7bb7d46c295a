"""Projection classes for the e2e tests, by revision: ``tests.e2e.views:invoice_list_r2`` is the invoices
example's InvoiceList at revision 2 (the projector takes the aggregate and view names from its flags)."""

from __future__ import annotations

from foldline.examples.invoices.views import InvoiceList


def __getattr__(attr: str) -> type[InvoiceList]:
    prefix = "invoice_list_r"
    if not attr.startswith(prefix) or not attr[len(prefix) :].isdigit():
        raise AttributeError(attr)
    return type(f"InvoiceListR{attr[len(prefix) :]}", (InvoiceList,), {"revision": int(attr[len(prefix) :])})
