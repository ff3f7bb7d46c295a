"""The pure policy API and the invoices example's customers and policies: no services needed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from foldline import (
    AggregateDefinitionError,
    AggregateSpec,
    Emit,
    Happened,
    Policy,
    PolicySpec,
    Rejection,
    load_policy,
    policy_command_id,
)
from foldline.examples.invoices import (
    ChargeInvoice,
    ChargeOnSend,
    Customer,
    CustomerRegistered,
    Customers,
    InvoiceCharged,
    InvoiceCreated,
    InvoiceLink,
    InvoicePaid,
    Invoices,
    InvoiceSent,
    InvoiceSettled,
    LineItemAdded,
    RegisterCustomer,
    SettleInvoice,
    SettleOnPayment,
)
from foldline.records import COMMAND_ID

D = Decimal


def happened(event: object, version: int, aggregate_id: str = "inv-1") -> Happened:
    return Happened("invoices", aggregate_id, version, event)


LIFE = [
    InvoiceCreated("ACME", "EUR", date(2026, 11, 1), date(2026, 12, 1)),
    LineItemAdded("l1", "work", 2, D("50.00")),
    InvoiceSent(D("100.00")),
    InvoicePaid(D("100.00")),
]


def test_charge_on_send_remembers_the_customer_and_charges_once_on_send():
    events = [happened(e, v) for v, e in enumerate(LIFE, 1)]
    state, emitted = ChargeOnSend().run(events)
    assert state == InvoiceLink("ACME")
    assert emitted == [Emit("ACME", ChargeInvoice("inv-1", D("100.00")))]


def test_settle_on_payment_settles_the_paid_total():
    _, emitted = SettleOnPayment().run([happened(e, v) for v, e in enumerate(LIFE, 1)])
    assert emitted == [Emit("ACME", SettleInvoice("inv-1", D("100.00")))]


def test_a_send_without_a_known_customer_emits_nothing():
    # The policy's state was never folded from InvoiceCreated (e.g. a policy deployed later).
    assert ChargeOnSend().react(InvoiceLink(), happened(InvoiceSent(D("5")), 3)) == (InvoiceLink(), [])


def test_policy_spec_finds_the_target_by_the_command_class():
    spec = PolicySpec(ChargeOnSend())
    assert list(spec.sources) == ["invoices"]
    assert spec.target_of(ChargeInvoice("i", D("1"))).name == "customers"
    with pytest.raises(AggregateDefinitionError, match="not a command of its targets"):
        spec.target_of(RegisterCustomer)  # the class, not an instance: not a command
    assert spec.decode_state(1, spec.encode_state(InvoiceLink("ACME"))) == InvoiceLink("ACME")
    assert load_policy("foldline.examples.invoices:SettleOnPayment").name == "invoice-settlements"
    with pytest.raises(AggregateDefinitionError, match="not a foldline Policy"):
        load_policy("foldline.examples.invoices:Invoices")


def test_policy_definitions_are_checked():
    class NoName(Policy[None]):
        sources = (Invoices,)
        targets = ()

    class BadName(Policy[None]):
        name = "Bad Name"
        sources = (Invoices,)
        targets = ()

    class TwoOwners(Policy[None]):
        name = "two"
        sources = (Invoices,)
        targets = (Customers, type("Other", (Customers,), {"name": "other"}))

    @dataclass
    class Mutable:
        x: int = 0

    class MutableState(Policy[Mutable]):
        name = "mutable"
        sources = (Invoices,)
        targets = ()
        state_type = Mutable

    with pytest.raises(AggregateDefinitionError, match="'name'"):
        PolicySpec(NoName())
    with pytest.raises(AggregateDefinitionError, match="lowercase"):
        PolicySpec(BadName())
    with pytest.raises(AggregateDefinitionError, match="two targets"):
        PolicySpec(TwoOwners())
    with pytest.raises(AggregateDefinitionError, match="frozen dataclass"):
        PolicySpec(MutableState())


def test_a_stateless_policy_keeps_none():
    class Echo(Policy[None]):
        name = "echo"
        sources = (Invoices,)
        targets = (Customers,)

        def react(self, state: None, event: Happened):
            return state, [Emit("c", ChargeInvoice(event.aggregate_id, D("1")))]

    spec = PolicySpec(Echo())
    assert spec.encode_state(None) is None and spec.decode_state(1, None) is None
    assert Echo().run([happened(LIFE[0], 1)]) == (None, [Emit("c", ChargeInvoice("inv-1", D("1")))])


def test_policy_command_ids_are_deterministic_and_valid():
    a = policy_command_id("invoice-charges", "invoices", "inv-1", 3, 0)
    assert a == "invoice-charges:invoices:inv-1:3:0" == policy_command_id("invoice-charges", "invoices", "inv-1", 3, 0)
    assert a != policy_command_id("invoice-charges", "invoices", "inv-1", 3, 1)
    assert a != policy_command_id("invoice-charges", "invoices", "inv-1", 4, 0)
    odd = policy_command_id("p", "invoices", "ünïcode / spaces " * 20, 1, 0)
    assert COMMAND_ID.match(odd) and odd == policy_command_id("p", "invoices", "ünïcode / spaces " * 20, 1, 0)
    assert odd != policy_command_id("p", "invoices", "other", 1, 0)


# -- the customers aggregate --------------------------------------------------------------------------
def test_customers_charge_and_settle_each_invoice_once():
    agg = Customers()
    AggregateSpec(agg)
    state = agg.initial_state()
    assert agg.decide(state, ChargeInvoice("i1", D("10"))) == Rejection("the customer does not exist")
    state = agg.fold(agg.decide(state, RegisterCustomer("ACME", "ap@acme.test", D("150.00"))), state)  # type: ignore[arg-type]
    assert state.status == "active" and state.open_balance == 0
    events = agg.decide(state, ChargeInvoice("i1", D("100.00")))
    assert events == [InvoiceCharged("i1", D("100.00"), D("100.00"))]
    state = agg.fold(events, state)
    assert isinstance(agg.decide(state, ChargeInvoice("i1", D("100.00"))), Rejection)
    state = agg.fold(agg.decide(state, ChargeInvoice("i2", D("60.00"))), state)  # type: ignore[arg-type]
    assert state.open_balance == D("160.00") and state.over_limit
    events = agg.decide(state, SettleInvoice("i1", D("100.00")))
    assert events == [InvoiceSettled("i1", D("100.00"), D("60.00"))]
    state = agg.fold(events, state)
    assert state == Customer("active", "ACME", "ap@acme.test", D("150.00"), D("60.00"), ("i1", "i2"), ("i1",))
    assert state.open_invoices == ("i2",)
    assert isinstance(agg.decide(state, SettleInvoice("i1", D("100.00"))), Rejection)
    assert isinstance(agg.decide(state, ChargeInvoice("i1", D("100.00"))), Rejection)
    assert isinstance(agg.decide(state, RegisterCustomer("ACME", "a@b.c", D("0"))), Rejection)
    assert agg.fold([CustomerRegistered("x", "x@y", D("0"))]).status == "active"


def test_a_settlement_before_its_charge_commutes():
    """The two policies run independently: a payment's settlement may overtake the invoice's charge."""
    agg = Customers()
    state = agg.fold([CustomerRegistered("ACME", "ap@acme.test", D("100"))])
    state = agg.fold(agg.decide(state, SettleInvoice("i1", D("40.00"))), state)  # type: ignore[arg-type]
    assert state.open_balance == D("-40.00") and state.open_invoices == ()
    assert isinstance(agg.decide(state, SettleInvoice("i1", D("40.00"))), Rejection)
    state = agg.fold(agg.decide(state, ChargeInvoice("i1", D("40.00"))), state)  # type: ignore[arg-type]
    assert state.open_balance == 0 and state.open_invoices == ()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": " ", "email": "a@b.c", "credit_limit": "1"}, "name"),
        ({"name": "A", "email": "nope", "credit_limit": "1"}, "email"),
        ({"name": "A", "email": "a@b.c", "credit_limit": "-1"}, "negative"),
        ({"name": "A", "email": "a@b.c", "credit_limit": "1.001"}, "two decimal"),
    ],
)
def test_register_customer_validates(payload, message):
    spec = AggregateSpec(Customers())
    with pytest.raises(Exception, match=message):
        spec.decode_command("RegisterCustomer", payload)
