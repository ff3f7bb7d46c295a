"""Lets a policy worker child process load OverdueOnDueDate for a test's unique aggregate name.

``tests.named_overdue:inv_abc`` resolves, through ``__getattr__``, to an OverdueOnDueDate subclass named
``inv-abc-overdue`` whose source and target is ``tests.named_invoices:inv_abc`` (the aggregate ``inv-abc``).
"""

from __future__ import annotations

from foldline.examples.invoices.policies import OverdueOnDueDate
from tests import named_invoices


def __getattr__(attr: str) -> type[OverdueOnDueDate]:
    if attr.startswith("_"):
        raise AttributeError(attr)
    invoices = getattr(named_invoices, attr)
    return type(
        f"OverdueOnDueDate_{attr}",
        (OverdueOnDueDate,),
        {"name": f"{attr.replace('_', '-')}-overdue", "sources": (invoices,), "targets": (invoices,)},
    )
