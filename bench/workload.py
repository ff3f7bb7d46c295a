"""The invoices workload of the benchmarks: a realistic mix of commands and, for each, what should become of it.

Each invoice lives a short life: created, a few line items (now and then one removed), sent, paid in
one or two payments, or deleted while a draft. Into that stream go the faults a real client makes: ~1%
resubmitted command ids (the same record sent again later), ~1% wrong expected versions, and ~1.2%
commands the domain rejects (a line item after sending, a payment above the balance, a second create).
Every command is decided here first, with the aggregate's own ``decide`` and ``evolve``, so the
checker knows the status and version each result must carry.

Records are keyed by the aggregate id and placed with Kafka's murmur2, as the gateway's producer places
them, and the lives of many invoices interleave while each invoice's commands keep their order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from foldline.aggregate import AggregateSpec, Rejection
from foldline.examples.invoices import (
    AddLineItem,
    CreateInvoice,
    DeleteInvoice,
    Invoices,
    RecordPayment,
    RemoveLineItem,
    SendInvoice,
)
from foldline.ids import AggregateId, CommandId
from foldline.partitioner import partition_for
from foldline.records import CommandEnvelope

#: Shares of the faults, per command of the clean stream.
RESUBMIT = 0.01
WRONG_VERSION = 0.01
REJECTED = 0.015


@dataclass(frozen=True, slots=True)
class Planned:
    """One command record as sent, and the result it must get."""

    command_id: str
    aggregate_id: str
    partition: int
    value: bytes
    #: accepted, rejected or conflict (a resubmission: its first sending's).
    status: str
    #: The aggregate's version after the command.
    version: int
    resubmitted: bool = False

    @property
    def key(self) -> bytes:
        return self.aggregate_id.encode()


@dataclass
class Workload:
    commands: list[Planned] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.commands)

    def mix(self) -> dict[str, int]:
        """How many records of each kind: by type, by expected status, resubmissions."""
        out: dict[str, int] = {}
        for planned in self.commands:
            for name in (f"status {planned.status}", "resubmitted" if planned.resubmitted else ""):
                if name:
                    out[name] = out.get(name, 0) + 1
        return out

    def describe(self) -> str:
        mix = self.mix()
        n = len(self.commands) or 1
        parts = [f"{k} {v / n * 100:.1f}%" for k, v in sorted(mix.items())]
        return f"{len(self.commands):,} commands: " + ", ".join(parts)


class _Life:
    """One invoice: its current state and version, decided with the real domain."""

    def __init__(self, spec: AggregateSpec, aggregate_id: str, partition: int) -> None:
        self.spec = spec
        self.aggregate_id = aggregate_id
        self.partition = partition
        self.state = spec.aggregate.initial_state()
        self.version = 0
        self.sent: list[Planned] = []

    def submit(self, rng: random.Random, command: Any, *, expect: bool = False, wrong: bool = False) -> Planned:
        type_, payload = self.spec.encode_command(command)
        expected: int | None = None
        if wrong:
            expected = self.version + rng.choice((1, 2)) if self.version < 2 else self.version - 1
        elif expect:
            expected = self.version
        cid = f"{rng.getrandbits(128):032x}"
        envelope = CommandEnvelope(CommandId(cid), AggregateId(self.aggregate_id), type_, payload, expected)
        if expected is not None and expected != self.version:
            status = "conflict"
        else:
            decision = self.spec.aggregate.decide(self.state, command)
            if isinstance(decision, Rejection):
                status = "rejected"
            else:
                status = "accepted"
                for event in decision:
                    self.state = self.spec.aggregate.evolve(self.state, event)
                    self.version += 1
        planned = Planned(cid, self.aggregate_id, self.partition, envelope.to_bytes(), status, self.version)
        self.sent.append(planned)
        return planned

    def resubmit(self, rng: random.Random) -> Planned:
        first = rng.choice(self.sent)
        return Planned(
            first.command_id, first.aggregate_id, first.partition, first.value, first.status, first.version, True
        )


def _price(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(1_000, 50_000)) / 100


def _script(life: _Life, rng: random.Random) -> Iterator[tuple[Any, bool]]:
    """The clean life of one invoice: (command, send with the expected version?)."""
    issued = date(2026, 11, rng.randrange(1, 28))
    yield CreateInvoice(f"customer-{rng.randrange(5_000)}", "EUR", issued, date(2026, 12, issued.day)), False
    lines = rng.randrange(1, 5)
    for n in range(lines):
        yield AddLineItem(f"l{n}", "Consulting, senior engineer", rng.randrange(1, 10), _price(rng)), False
    if lines > 1 and rng.random() < 0.1:
        yield RemoveLineItem(f"l{rng.randrange(lines)}"), False
    if rng.random() < 0.06:
        yield DeleteInvoice("entered twice"), True
        return
    yield SendInvoice(), True  # a careful client sends with the version it has seen
    roll = rng.random()
    if roll < 0.7:
        balance = life.state.balance
        if rng.random() < 0.4 and balance >= Decimal("0.02"):
            part = (balance / 2).quantize(Decimal("0.01"))
            yield RecordPayment(f"p{rng.getrandbits(32):x}", part, "EUR"), False
            balance = life.state.balance
        yield RecordPayment(f"p{rng.getrandbits(32):x}", balance, "EUR"), False


def _rejected(life: _Life, rng: random.Random) -> Any:
    """A command the domain turns down in the invoice's present state."""
    status = life.state.status
    if status == "draft" and rng.random() < 0.5:
        return CreateInvoice("customer-0", "EUR", date(2026, 11, 1), date(2026, 12, 1))  # already exists
    if status == "draft":
        return RecordPayment("early", Decimal("1.00"), "EUR")  # not sent yet
    if status in ("sent", "overdue"):
        return AddLineItem("late", "After sending", 1, Decimal("1.00"))
    return RecordPayment("extra", Decimal("999999.00"), "EUR")  # paid, deleted or none


def invoices_workload(aggregates: int, partitions: int, seed: int = 7, prefix: str = "inv") -> Workload:
    """About 5.7 commands per invoice; the lives of ``aggregates`` invoices interleaved round by round."""
    rng = random.Random(seed)
    spec = AggregateSpec(Invoices())
    lives = [_Life(spec, f"{prefix}-{i}", 0) for i in range(aggregates)]
    for life in lives:
        life.partition = partition_for(life.aggregate_id.encode(), partitions)
    scripts = {id(life): _script(life, rng) for life in lives}
    out = Workload()
    active = list(lives)
    while active:
        still: list[_Life] = []
        # A shuffled round: invoices advance at different paces, each one's own order kept.
        rng.shuffle(active)
        for life in active:
            step = next(scripts[id(life)], None)
            if step is None:
                continue
            still.append(life)
            command, expect = step
            if life.sent and rng.random() < REJECTED:
                out.commands.append(life.submit(rng, _rejected(life, rng)))
            if life.sent and rng.random() < WRONG_VERSION:
                command_wrong = life.submit(rng, command, wrong=True)
                out.commands.append(command_wrong)
            out.commands.append(life.submit(rng, command, expect=expect))
            if rng.random() < RESUBMIT:
                out.commands.append(life.resubmit(rng))
        active = still
    return out
