"""Lets a policy worker child process load the invoices policies under a test's unique names.

``tests.named_policies:charge__pol_a__inv_b__cust_c`` resolves, through ``__getattr__``, to the
``ChargeOnSend`` policy named ``pol-a``, reading the invoices aggregate ``inv-b`` and commanding the
customers aggregate ``cust-c`` (``settle__...`` for ``SettleOnPayment``): the same rules, their own topics.
``tests.named_policies:invoices__inv_b`` and ``customers__cust_c`` are those aggregates, for handler processes.
"""

from __future__ import annotations

from typing import Any

from foldline.examples.invoices import ChargeOnSend, Customers, Invoices, SettleOnPayment

KINDS: dict[str, type[Any]] = {"charge": ChargeOnSend, "settle": SettleOnPayment}
AGGREGATES: dict[str, type[Any]] = {"invoices": Invoices, "customers": Customers}


def aggregate(kind: str, name: str) -> type[Any]:
    """The invoices or customers aggregate under the name ``name``."""
    return type(f"{kind.capitalize()}_{name}", (AGGREGATES[kind],), {"name": name})


def aggregate_path(kind: str, name: str) -> str:
    return f"tests.named_policies:{kind}__{name.replace('-', '_')}"


def named(kind: str, policy: str, invoices: str, customers: str) -> type[Any]:
    sources = (aggregate("invoices", invoices),)
    targets = (aggregate("customers", customers),)
    return type(f"Policy_{policy}", (KINDS[kind],), {"name": policy, "sources": sources, "targets": targets})


def path(kind: str, policy: str, invoices: str, customers: str) -> str:
    parts = [kind, *(n.replace("-", "_") for n in (policy, invoices, customers))]
    return "tests.named_policies:" + "__".join(parts)


def __getattr__(attr: str) -> type[Any]:
    parts = attr.split("__")
    if not attr.startswith("_") and len(parts) == 2 and parts[0] in AGGREGATES:
        return aggregate(parts[0], parts[1].replace("_", "-"))
    if attr.startswith("_") or len(parts) != 4 or parts[0] not in KINDS:
        raise AttributeError(attr)
    kind, *names = parts
    return named(kind, *(n.replace("_", "-") for n in names))
