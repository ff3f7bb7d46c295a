"""A policy worker through a broker outage, and with clients that cannot reach the broker at all.

The worker stays up while the broker is away (not-ready on /readyz), waits for it and starts over with new
clients from what Kafka committed; every invoice sent before, during and after the outage is charged once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from foldline import PolicySpec, clients, policy_command_id
from foldline.policy import engine as policy_engine
from foldline.policy import wiring as policy_wiring
from foldline.policy.wiring import build_policy_worker
from foldline.records import Status
from foldline.settings import KafkaSettings, PolicySettings
from foldline.topics import TopicNames, policy_group
from tests import named_policies
from tests.faults_support import Sender, aggregate_name, free_port, get, log_events, own_broker, wait_until
from tests.integration.test_policies import (
    CUSTOMERS,
    Stack,
    committed_to_the_end,
    customer_events,
    invoice_flow,
    register_customers,
    start_aggregate,
)
from tests.integration.test_stranded_clients import Strand
from tests.kafka_support import results, send, start_policy, wait_for_results

pytestmark = [pytest.mark.kafka]


def charged_once(bootstrap: str, stack: Stack, invoices: list[str]) -> None:
    """Each invoice's charge command has exactly one first result, accepted, and one InvoiceCharged event."""
    expected = {policy_command_id(stack.charge, stack.invoices, inv, 3, 0) for inv in invoices}
    got = [r for r in results(bootstrap, stack.customers) if r.command_id.startswith("charge-")]
    firsts = Counter(r.command_id for r in got if not r.duplicate)
    assert set(firsts) == expected
    assert not {k: v for k, v in firsts.items() if v != 1}, "a command was applied twice"
    assert all(r.status == Status.ACCEPTED for r in got), Counter((r.status, r.reason) for r in got)
    charged = Counter(
        r.payload["invoice_id"]
        for rs in customer_events(bootstrap, stack).values()
        for r in rs
        if r.type == "InvoiceCharged"
    )
    assert set(charged) == set(invoices) and set(charged.values()) == {1}


def test_a_policy_worker_waits_out_a_broker_outage_and_charges_each_invoice_once(tmp_path):
    with own_broker() as broker:
        bootstrap = broker.bootstrap
        stack = Stack(AdminClient({"bootstrap.servers": bootstrap}), aggregate_name, partitions=3)
        handlers = [start_aggregate(bootstrap, stack, kind, tmp_path) for kind in ("invoices", "customers")]
        port = free_port()
        worker = start_policy(
            bootstrap,
            stack.policy_path("charge"),
            tmp_path / "charge",
            "c1",
            tmp_path,
            {"FOLDLINE_HTTP_PORT": str(port)},
        )
        try:
            register_customers(bootstrap, stack)
            wait_until(lambda: get(port, "/readyz") == 200, 180, "the policy worker to be ready")
            invoices = [f"INV-{i:03d}" for i in range(150)]
            flows = [
                invoice_flow(inv, CUSTOMERS[i % len(CUSTOMERS)], 1000 + i, pay=False) for i, inv in enumerate(invoices)
            ]
            stream = [flow[n] for n in range(3) for flow in flows]  # create all, then add lines, then send
            sender = Sender(bootstrap, TopicNames(stack.invoices).commands, stream, chunk=9, pause=0.1)
            sender.start()
            # Stopped while invoices are being sent, so while the worker charges them in transactions.
            wait_until(lambda: sender.handed >= 330, 120, "sends under way before the outage")
            broker.stop()
            wait_until(lambda: get(port, "/readyz") == 503, 120, "the policy worker to say not-ready")
            time.sleep(12)  # longer than the transaction timeout (10 s): an open transaction times out meanwhile
            assert worker.alive(), worker.log.read_text()[-3000:]
            assert get(port, "/readyz") == 503
            broker.start(keep_data=True, timeout=180.0)
            wait_until(lambda: get(port, "/readyz") == 200, 300, "the policy worker to be ready after the outage")
            sender.join(600)
            assert not sender.failed, sender.failed
            wait_for_results(bootstrap, stack.invoices, len(stream), timeout=300)
            wait_for_results(bootstrap, stack.customers, len(CUSTOMERS) + len(invoices), timeout=300)
            committed_to_the_end(bootstrap, policy_group(stack.charge), TopicNames(stack.invoices).events, 3)
            charged_once(bootstrap, stack, invoices)
            assert worker.alive() and all(h.alive() for h in handlers)
        finally:
            for proc in (worker, *handlers):
                if proc.alive():
                    proc.terminate()
    events = [e.get("event") for e in log_events(worker.log)]
    assert "kafka unavailable" in events and "kafka available again" in events


def test_a_policy_worker_whose_clients_are_stranded_rebuilds_them(
    kafka_bootstrap, kafka_admin, unique_name, tmp_path, monkeypatch
):
    """Its first clients go nowhere: init_transactions fails, and the worker waits (not ready, not gone)
    until new clients reach the broker."""
    strand = Strand()
    for name in ("group_member_config", "transactional_producer_config", "restore_consumer_config"):
        monkeypatch.setattr(policy_wiring, name, strand(getattr(clients, name)))
    monkeypatch.setattr(policy_engine, "TXN_TIMEOUT", 3.0)
    stack = Stack(kafka_admin, unique_name, partitions=2)
    handlers = [start_aggregate(kafka_bootstrap, stack, kind, tmp_path) for kind in ("invoices", "customers")]
    spec = PolicySpec(named_policies.named("charge", stack.charge, stack.invoices, stack.customers)())
    settings = PolicySettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        state_dir=tmp_path / "state",
        instance_id=uuid.uuid4().hex[:8],
        commit_interval_ms=20,
    )
    worker = build_policy_worker(spec, settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        register_customers(kafka_bootstrap, stack)
        wait_until(lambda: not worker.watch.up, 120, "the stranded worker to see Kafka away")
        assert strand.made >= 3 and not worker.ready() and thread.is_alive()
        strand.on = False
        wait_until(worker.ready, 120, "the worker to be ready with new clients")
        invoices = [f"INV-{i:03d}" for i in range(10)]
        flows = [invoice_flow(inv, CUSTOMERS[i % len(CUSTOMERS)], 500 + i, pay=False) for i, inv in enumerate(invoices)]
        send(kafka_bootstrap, TopicNames(stack.invoices).commands, [c for flow in flows for c in flow])
        wait_for_results(kafka_bootstrap, stack.customers, len(CUSTOMERS) + len(invoices), timeout=180)
        charged_once(kafka_bootstrap, stack, invoices)
    finally:
        worker.stop()
        thread.join(60)
        for proc in handlers:
            proc.terminate()
    assert not thread.is_alive()
