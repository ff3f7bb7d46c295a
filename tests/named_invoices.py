"""Lets a handler child process load Invoices under a test's unique aggregate name.

``tests.named_invoices:inv_abc`` (any name without a leading ``_``) resolves, through ``__getattr__``,
to an Invoices subclass named ``inv-abc``: the same domain, its own topics.
"""

from __future__ import annotations

from foldline.examples.invoices import Invoices


def __getattr__(attr: str) -> type[Invoices]:
    if attr.startswith("_"):
        raise AttributeError(attr)
    return type(f"Invoices_{attr}", (Invoices,), {"name": attr.replace("_", "-")})
