"""Policies exactly once against the real broker: invoices and customers handlers, the invoices policies'
workers; SIGKILLed workers and handlers, a replay, poison events and a failing ``react``.

Every check reads the topics read_committed, as any downstream reader would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path

import pytest

from foldline import AggregateSpec, EventRecord, Happened, PolicySpec, policy_command_id
from foldline.examples.invoices import ChargeOnSend, Customers, InvoiceCreated, InvoiceLink, Invoices, InvoiceSent
from foldline.policy import PolicyWorker, build_policy_worker
from foldline.records import CommandEnvelope, Status, loads
from foldline.settings import KafkaSettings, PolicySettings
from foldline.topics import PolicyTopics, TopicNames, aggregate_topics, ensure_topics, policy_group, policy_topics
from tests import named_policies
from tests.kafka_support import (
    HandlerProcess,
    command,
    committed_offsets,
    read_topic,
    results,
    send,
    start_handler,
    start_policy,
    wait_for_results,
)

pytestmark = pytest.mark.kafka

CUSTOMERS = [f"cust-{i}" for i in range(4)]


def create(customer: str) -> dict[str, str]:
    return {"customer": customer, "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}


def invoice_flow(invoice: str, customer: str, cents: int, pay: bool) -> list[CommandEnvelope]:
    """Create (v1), one line item (v2), send (v3); paid in full: payment (v4) and InvoicePaid (v5)."""
    amount = f"{cents // 100}.{cents % 100:02d}"
    out = [
        command(invoice, "CreateInvoice", create(customer)),
        command(invoice, "AddLineItem", {"line_id": "l1", "description": "work", "quantity": 1, "unit_price": amount}),
        command(invoice, "SendInvoice"),
    ]
    if pay:
        out.append(command(invoice, "RecordPayment", {"payment_id": "p1", "amount": amount, "currency": "EUR"}))
    return out


class Stack:
    """Unique invoices and customers aggregates (topics created) and the names of the two policies."""

    def __init__(self, admin, unique_name, partitions: int) -> None:
        self.invoices = unique_name("inv")
        self.customers = unique_name("cust")
        self.charge = unique_name("charge")
        self.settle = unique_name("settle")
        ensure_topics(admin, aggregate_topics(self.invoices, partitions))
        ensure_topics(admin, aggregate_topics(self.customers, partitions))
        for policy in (self.charge, self.settle):
            ensure_topics(admin, policy_topics(policy, {self.invoices: partitions}))

    def policy_path(self, kind: str) -> str:
        name = self.charge if kind == "charge" else self.settle
        return named_policies.path(kind, name, self.invoices, self.customers)

    def invoices_cls(self):
        return named_policies.named("charge", self.charge, self.invoices, self.customers).sources[0]

    def customers_cls(self):
        return type(f"Customers_{self.customers}", (Customers,), {"name": self.customers})


def customer_events(bootstrap: str, stack: Stack) -> dict[str, list[EventRecord]]:
    out: dict[str, list[EventRecord]] = defaultdict(list)
    for msg in read_topic(bootstrap, TopicNames(stack.customers).events):
        record = EventRecord.from_bytes(msg.value())
        out[record.aggregate_id].append(record)
    return out


def balances(bootstrap: str, stack: Stack) -> dict[str, Decimal]:
    spec = AggregateSpec(stack.customers_cls()())
    out = {}
    for customer, records in customer_events(bootstrap, stack).items():
        state = spec.aggregate.fold(spec.decode_event(r.type, r.schema_version, r.payload) for r in records)
        out[customer] = state.open_balance
    return out


def register_customers(bootstrap: str, stack: Stack) -> None:
    send(
        bootstrap,
        TopicNames(stack.customers).commands,
        [
            command(c, "RegisterCustomer", {"name": c, "email": f"{c}@example.test", "credit_limit": "1000.00"})
            for c in CUSTOMERS
        ],
    )
    wait_for_results(bootstrap, stack.customers, len(CUSTOMERS))


def committed_to_the_end(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 60.0) -> None:
    """Wait until ``group`` committed offsets past the last record of every partition of ``topic``
    (the end offset itself lies beyond the transaction markers, which no consumer commits past)."""
    last = dict.fromkeys(range(partitions), 0)
    for msg in read_topic(bootstrap, topic):
        last[msg.partition()] = max(last[msg.partition()], msg.offset() + 1)
    deadline = time.monotonic() + timeout
    while True:
        committed = committed_offsets(bootstrap, group, topic, partitions)
        if all(offset >= last[p] for p, offset in committed.items()):
            return
        assert time.monotonic() < deadline, f"{group} did not reach the end of {topic}"
        time.sleep(0.5)


@pytest.fixture
def processes() -> Iterator[list[HandlerProcess]]:
    """Child processes a test started; those still alive are stopped afterwards."""
    started: list[HandlerProcess] = []
    yield started
    for proc in started:
        if proc.alive():
            proc.terminate()


def start_aggregate(bootstrap: str, stack: Stack, kind: str, tmp_path: Path) -> HandlerProcess:
    """``foldline command-handler`` for the stack's invoices or customers, as a child process to SIGKILL."""
    name = stack.invoices if kind == "invoices" else stack.customers
    path = named_policies.aggregate_path(kind, name)
    env = {"FOLDLINE_COMMIT_INTERVAL_MS": "10"}
    return start_handler(bootstrap, path, tmp_path / kind, kind, tmp_path, extra_env=env)


def test_each_invoice_charges_and_settles_once_under_sigkill_and_a_replay_adds_nothing(
    kafka_bootstrap, kafka_admin, unique_name, processes, tmp_path
):
    partitions = 3
    stack = Stack(kafka_admin, unique_name, partitions)
    handlers = {kind: start_aggregate(kafka_bootstrap, stack, kind, tmp_path) for kind in ("invoices", "customers")}
    processes.extend(handlers.values())
    register_customers(kafka_bootstrap, stack)

    starts = dict.fromkeys(handlers, 1)
    log_from = dict.fromkeys(handlers, 0)  # where the running handler's lines begin in its (appended) log

    def kill_handlers(*kinds: str) -> None:
        """SIGKILL mid-stream (maybe an open transaction of events, results and snapshots), once the handler
        has its partitions, and restart under the same instance id, which fences and aborts what it left open."""
        for kind in kinds:
            deadline = time.monotonic() + 60
            while "partitions assigned" not in handlers[kind].log.read_text()[log_from[kind] :]:
                assert handlers[kind].alive() and time.monotonic() < deadline, handlers[kind].log.read_text()[-2000:]
                time.sleep(0.2)
            handlers[kind].kill()
            log_from[kind] = len(handlers[kind].log.read_text())
            handlers[kind] = start_aggregate(kafka_bootstrap, stack, kind, tmp_path)
            processes.append(handlers[kind])
            starts[kind] += 1

    invoices = {f"INV-{i:03d}": (CUSTOMERS[i % len(CUSTOMERS)], 1000 + 37 * i, i % 3 != 0) for i in range(90)}
    flows = [invoice_flow(inv, c, cents, pay) for inv, (c, cents, pay) in invoices.items()]
    # Interleave the invoices' commands, in order per invoice, as real traffic would.
    stream = [flow[n] for n in range(4) for flow in flows if n < len(flow)]
    charge = start_policy(kafka_bootstrap, stack.policy_path("charge"), tmp_path / "charge", "c1", tmp_path)
    settle = start_policy(kafka_bootstrap, stack.policy_path("settle"), tmp_path / "settle", "s1", tmp_path)
    try:
        slices = 12
        size = -(-len(stream) // slices)
        for n, i in enumerate(range(0, len(stream), size)):
            send(kafka_bootstrap, TopicNames(stack.invoices).commands, stream[i : i + size])
            time.sleep(0.5)
            if n == 3:
                kill_handlers("invoices", "customers")
            if n == 8:
                kill_handlers("customers")  # while it applies the policies' charges and settlements
            if n == 5:
                charge.kill()  # SIGKILL mid-stream: maybe an open transaction with commands in it
                settle.kill()
                charge = start_policy(kafka_bootstrap, stack.policy_path("charge"), tmp_path / "charge", "c1", tmp_path)
                settle = start_policy(kafka_bootstrap, stack.policy_path("settle"), tmp_path / "settle", "s1", tmp_path)
        wait_for_results(kafka_bootstrap, stack.invoices, len(stream), timeout=180)
        paid = sum(1 for _, _, pay in invoices.values() if pay)
        wait_for_results(kafka_bootstrap, stack.customers, len(CUSTOMERS) + len(invoices) + paid, timeout=180)
        for policy in (stack.charge, stack.settle):
            committed_to_the_end(kafka_bootstrap, policy_group(policy), TopicNames(stack.invoices).events, partitions)
    finally:
        for proc in (charge, settle):
            if proc.alive():
                proc.terminate()

    expected = {policy_command_id(stack.charge, stack.invoices, inv, 3, 0) for inv in invoices} | {
        policy_command_id(stack.settle, stack.invoices, inv, 5, 0) for inv, (_, _, pay) in invoices.items() if pay
    }
    got = [r for r in results(kafka_bootstrap, stack.customers) if r.command_id.startswith(("charge-", "settle-"))]
    firsts = Counter(r.command_id for r in got if not r.duplicate)
    assert set(firsts) == expected
    assert not {k: v for k, v in firsts.items() if v != 1}, "a command was applied twice"
    assert all(r.status == Status.ACCEPTED for r in got), Counter((r.status, r.reason) for r in got)
    # Checked from the topics: each customer's balance is the sum over its sent, unpaid invoices.
    want = {c: Decimal("0.00") for c in CUSTOMERS}
    for customer, cents, pay in invoices.values():
        if not pay:
            want[customer] += Decimal(cents) / 100
    assert balances(kafka_bootstrap, stack) == want
    charged = Counter(
        r.payload["invoice_id"]
        for rs in customer_events(kafka_bootstrap, stack).values()
        for r in rs
        if r.type == "InvoiceCharged"
    )
    assert set(charged) == set(invoices) and set(charged.values()) == {1}

    # A replay from offset 0: the group forgets its offsets and the local stores are wiped; the state
    # restored from the changelog knows every event was handled, so no command is emitted again.
    commands_before = len(read_topic(kafka_bootstrap, TopicNames(stack.customers).commands))
    kafka_admin.delete_consumer_groups([policy_group(stack.charge)])[policy_group(stack.charge)].result(30)
    import shutil

    shutil.rmtree(tmp_path / "charge")
    again = start_policy(kafka_bootstrap, stack.policy_path("charge"), tmp_path / "charge", "c2", tmp_path)
    try:
        committed_to_the_end(kafka_bootstrap, policy_group(stack.charge), TopicNames(stack.invoices).events, partitions)
    finally:
        assert again.terminate() == 0
    assert "store restored" in again.log.read_text()
    assert len(read_topic(kafka_bootstrap, TopicNames(stack.customers).commands)) == commands_before

    # The ids are deterministic: the policies' latest commands sent again are answered by the target's dedup
    # (it keeps the last FOLDLINE_DEDUP_WINDOW results per aggregate; older ones meet the domain's own check).
    per_customer: dict[bytes, list[tuple[bytes, bytes]]] = defaultdict(list)
    for m in read_topic(kafka_bootstrap, TopicNames(stack.customers).commands):
        if loads(m.value(), "command")["command_id"] in expected:
            per_customer[m.key()].append((m.key(), m.value()))
    assert sum(len(v) for v in per_customer.values()) == len(expected)
    resent = [item for items in per_customer.values() for item in items[-5:]]
    resent_ids = {loads(v, "command")["command_id"] for _, v in resent}
    events_before = sum(len(v) for v in customer_events(kafka_bootstrap, stack).values())
    send(kafka_bootstrap, TopicNames(stack.customers).commands, resent)
    deadline = time.monotonic() + 120
    while True:
        dups = [r for r in results(kafka_bootstrap, stack.customers) if r.duplicate]
        if len(dups) >= len(resent):
            break
        assert time.monotonic() < deadline, f"only {len(dups)} of {len(resent)} duplicates answered"
        time.sleep(0.5)
    assert {r.command_id for r in dups} == resent_ids and len(dups) == len(resent)
    assert all(r.status == Status.ACCEPTED for r in dups)
    assert sum(len(v) for v in customer_events(kafka_bootstrap, stack).values()) == events_before
    assert balances(kafka_bootstrap, stack) == want
    assert all(h.alive() for h in handlers.values())  # the restarted handlers ran to the end
    assert starts == {"invoices": 2, "customers": 3}
    for kind, count in starts.items():  # each handler had its partitions (so was at work) when killed
        assert handlers[kind].log.read_text().count("partitions assigned") >= count


class Touchy(ChargeOnSend):
    """Raises for one customer: a bug in a policy's ``react``."""

    def react(self, state: InvoiceLink, event: Happened):
        if isinstance(event.event, InvoiceCreated) and event.event.customer == "BOOM":
            raise RuntimeError("react exploded on BOOM")
        return super().react(state, event)


def test_poison_events_and_a_failing_react_become_dead_letters_and_the_partition_goes_on(
    kafka_bootstrap, kafka_admin, unique_name, run_handler, tmp_path
):
    stack = Stack(kafka_admin, unique_name, partitions=1)  # one partition: what follows the poison must pass it
    policy_cls = type(
        "TouchyNamed",
        (Touchy,),
        {"name": stack.charge, "sources": (stack.invoices_cls(),), "targets": (stack.customers_cls(),)},
    )
    events_topic = TopicNames(stack.invoices).events
    send(
        kafka_bootstrap,
        events_topic,
        [
            (b"INV-X", b"\xff not json"),
            (b"INV-Y", b'{"aggregate_id": "INV-Y", "type": "NoSuchEvent", "version": 1, "payload": {}}'),
        ],
    )
    worker: PolicyWorker = build_policy_worker(
        PolicySpec(policy_cls()),
        PolicySettings(
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
            state_dir=tmp_path / "policy",
            instance_id=uuid.uuid4().hex[:8],
            commit_interval_ms=20,
        ),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        run_handler(stack.invoices_cls()(), commit_interval_ms=10)
        run_handler(stack.customers_cls()(), commit_interval_ms=10)
        register_customers(kafka_bootstrap, stack)
        flows = [*invoice_flow("INV-BOOM", "BOOM", 500, False), *invoice_flow("INV-OK", "cust-1", 700, False)]
        send(kafka_bootstrap, TopicNames(stack.invoices).commands, flows)
        wait_for_results(kafka_bootstrap, stack.invoices, len(flows))
        got = wait_for_results(kafka_bootstrap, stack.customers, len(CUSTOMERS) + 1)
        # The emitted command sent again (as a replay without state would): the target's dedup answers it.
        charge_id = policy_command_id(stack.charge, stack.invoices, "INV-OK", 3, 0)
        emitted = [
            (m.key(), m.value())
            for m in read_topic(kafka_bootstrap, TopicNames(stack.customers).commands)
            if loads(m.value(), "command")["command_id"] == charge_id
        ]
        assert len(emitted) == 1
        send(kafka_bootstrap, TopicNames(stack.customers).commands, emitted)
        again = wait_for_results(kafka_bootstrap, stack.customers, len(CUSTOMERS) + 1)
        deadline = time.monotonic() + 60
        while not any(r.duplicate for r in again):
            assert time.monotonic() < deadline, "the resent command was not answered"
            time.sleep(0.5)
            again = results(kafka_bootstrap, stack.customers)
        [dup] = [r for r in again if r.duplicate]
        assert (dup.command_id, dup.status) == (charge_id, Status.ACCEPTED)
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    charges = [r for r in got if r.command_id.startswith(stack.charge)]
    assert [(r.command_id, r.status) for r in charges] == [
        (policy_command_id(stack.charge, stack.invoices, "INV-OK", 3, 0), Status.ACCEPTED)
    ]
    assert balances(kafka_bootstrap, stack)["cust-1"] == Decimal("7.00")
    letters = [
        loads(m.value(), "dead letter") for m in read_topic(kafka_bootstrap, PolicyTopics(stack.charge).dead_letters)
    ]
    codes = [(letter["key"], letter["error"]["code"]) for letter in letters]
    assert codes == [("INV-X", "undecodable"), ("INV-Y", "undecodable"), ("INV-BOOM", "react_failed")]
    assert "react exploded on BOOM" in letters[2]["error"]["message"]
    assert letters[0]["source"] == {"topic": events_topic, "partition": 0, "offset": 0}
    assert "NoSuchEvent" in letters[1]["error"]["message"]
    # INV-BOOM's later events (it was never linked to a customer) emit nothing; nothing stops the partition.
    assert worker.dead_letters == 3 and worker.emitted == 1


def test_the_cli_creates_the_policy_topics_and_refuses_missing_sources(
    kafka_bootstrap, kafka_admin, unique_name, tmp_path
):
    from foldline.topics import describe_partitions

    invoices, customers, policy = unique_name("inv"), unique_name("cust"), unique_name("charge")
    path = named_policies.path("charge", policy, invoices, customers)
    early = start_policy(kafka_bootstrap, path, tmp_path / "s", "early", tmp_path, args=("--create-topics",))
    assert early.proc.wait(60) == 2  # a PermanentError: the source events topic does not exist yet
    assert "source events topics do not exist" in early.log.read_text()
    ensure_topics(kafka_admin, aggregate_topics(invoices, 5))
    worker = start_policy(kafka_bootstrap, path, tmp_path / "s", "w", tmp_path, args=("--create-topics",))
    try:
        names = PolicyTopics(policy)
        deadline = time.monotonic() + 60
        while "policy worker started" not in worker.log.read_text():
            assert worker.alive() and time.monotonic() < deadline, worker.log.read_text()
            time.sleep(0.2)
        assert describe_partitions(kafka_admin, [names.state(invoices), names.dead_letters]) == {
            names.state(invoices): 5,
            names.dead_letters: 5,
        }
    finally:
        assert worker.terminate() == 0


def run_worker(policy_cls, bootstrap: str, state_dir: Path, clock) -> tuple[PolicyWorker, threading.Thread]:
    worker = build_policy_worker(
        PolicySpec(policy_cls()),
        PolicySettings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap),
            state_dir=state_dir,
            instance_id=uuid.uuid4().hex[:8],
            commit_interval_ms=20,
        ),
        clock=clock,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def overdue_results(bootstrap: str, invoices: str) -> list:
    return [r for r in results(bootstrap, invoices) if r.command_id.startswith("overdue-")]


def test_a_deadline_fires_once_after_a_restart_and_a_rebalance_and_not_after_payment(
    kafka_bootstrap, kafka_admin, unique_name, run_handler, tmp_path
):
    from datetime import UTC, datetime

    from foldline.examples.invoices import OverdueOnDueDate

    invoices, policy = unique_name("inv"), unique_name("overdue")
    ensure_topics(kafka_admin, aggregate_topics(invoices, 2))
    ensure_topics(kafka_admin, policy_topics(policy, {invoices: 2}))
    inv_cls = type(f"Invoices_{invoices}", (Invoices,), {"name": invoices})
    policy_cls = type("Overdue", (OverdueOnDueDate,), {"name": policy, "sources": (inv_cls,), "targets": (inv_cls,)})
    run_handler(inv_cls(), commit_interval_ms=10)
    now = [datetime(2026, 11, 20, tzinfo=UTC)]  # the test's clock: before the due date (2026-12-01)

    first = run_worker(policy_cls, kafka_bootstrap, tmp_path / "first", lambda: now[0])
    unpaid = [f"LATE-{i}" for i in range(6)]
    flows = [invoice_flow(i, "cust-1", 1000, False) for i in unpaid]
    flows += [invoice_flow(f"PAID-{i}", "cust-1", 1000, True) for i in range(6)]
    sent = [c for flow in flows for c in flow]
    send(kafka_bootstrap, TopicNames(invoices).commands, sent)
    wait_for_results(kafka_bootstrap, invoices, len(sent))
    committed_to_the_end(kafka_bootstrap, policy_group(policy), TopicNames(invoices).events, 2)
    time.sleep(1)  # the loop keeps checking deadlines: none is due yet
    first[0].stop()
    first[1].join(60)
    assert first[0].deadlines_fired == 0 and overdue_results(kafka_bootstrap, invoices) == []

    # After the due date, a restart on an empty disk (state restored from the changelog), then a second
    # worker joins (a rebalance): each deadline fires once, wherever its partition lands.
    now[0] = datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)
    workers = [run_worker(policy_cls, kafka_bootstrap, tmp_path / "second", lambda: now[0])]
    try:
        time.sleep(2)
        workers.append(run_worker(policy_cls, kafka_bootstrap, tmp_path / "third", lambda: now[0]))
        deadline = time.monotonic() + 90
        while len(overdue_results(kafka_bootstrap, invoices)) < len(unpaid):
            assert time.monotonic() < deadline, overdue_results(kafka_bootstrap, invoices)
            time.sleep(0.5)
        time.sleep(3)  # both keep checking: nothing fires a second time
    finally:
        for worker, _ in workers:
            worker.stop()
        for _, thread in workers:
            thread.join(60)
    got = overdue_results(kafka_bootstrap, invoices)
    assert sorted(r.aggregate_id for r in got) == unpaid
    assert all(r.status == Status.ACCEPTED and not r.duplicate for r in got)
    assert {r.command_id for r in got} == {policy_command_id(policy, invoices, i, 3, 0) for i in unpaid}
    overdue_events = [
        EventRecord.from_bytes(m.value()).aggregate_id
        for m in read_topic(kafka_bootstrap, TopicNames(invoices).events)
        if EventRecord.from_bytes(m.value()).type == "InvoiceOverdue"
    ]
    assert sorted(overdue_events) == unpaid


def test_a_deadline_fires_by_the_wall_clock(kafka_bootstrap, kafka_admin, unique_name, run_handler, tmp_path):
    """A real clock: due a few seconds after the invoice was sent (the event's own time, so react stays pure)."""
    from datetime import datetime, timedelta

    from foldline import Emit, Schedule
    from foldline.examples.invoices import MarkOverdue, OverdueOnDueDate

    class Soon(OverdueOnDueDate):
        def react(self, state, event: Happened):
            if isinstance(event.event, InvoiceSent):
                at = datetime.fromisoformat(event.recorded_at.replace("Z", "+00:00")) + timedelta(seconds=4)
                return state, [Schedule("overdue", at, Emit(event.aggregate_id, MarkOverdue()))]
            return super().react(state, event)

    invoices, policy = unique_name("inv"), unique_name("overdue")
    ensure_topics(kafka_admin, aggregate_topics(invoices, 1))
    ensure_topics(kafka_admin, policy_topics(policy, {invoices: 1}))
    inv_cls = type(f"Invoices_{invoices}", (Invoices,), {"name": invoices})
    policy_cls = type("SoonNamed", (Soon,), {"name": policy, "sources": (inv_cls,), "targets": (inv_cls,)})
    run_handler(inv_cls(), commit_interval_ms=10)
    worker, thread = run_worker(policy_cls, kafka_bootstrap, tmp_path / "w", lambda: datetime.now(UTC))
    try:
        sent = invoice_flow("LATE", "c", 500, False) + invoice_flow("PAID", "c", 500, True)
        send(kafka_bootstrap, TopicNames(invoices).commands, sent)
        wait_for_results(kafka_bootstrap, invoices, len(sent))
        deadline = time.monotonic() + 60
        while not overdue_results(kafka_bootstrap, invoices):
            assert time.monotonic() < deadline, "the deadline did not fire"
            time.sleep(0.5)
        time.sleep(2)
    finally:
        worker.stop()
        thread.join(60)
    got = overdue_results(kafka_bootstrap, invoices)
    assert [(r.aggregate_id, r.status) for r in got] == [("LATE", Status.ACCEPTED)]
    assert worker.deadlines_fired == 1
