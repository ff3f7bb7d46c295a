"""The policy API (process managers): when something happens to one aggregate, tell another. Pure, typed.

A policy reads the events of its ``sources`` and returns commands for its ``targets``::

    class ChargeOnSend(Policy[InvoiceLink]):
        name = "charge-on-send"
        sources = (Invoices,)
        targets = (Customers,)
        state_type = InvoiceLink  # optional: None for a policy without state

        def initial_state(self) -> InvoiceLink: ...
        def react(self, state: InvoiceLink, event: Happened) -> Reaction: ...

``react(state, event) -> (state, [Emit(...)])``; besides ``Emit`` it may return ``Schedule`` (a command
due at a time: a deadline) and ``Cancel`` (drop a pending deadline). The state is kept per source
aggregate instance (the key of the event), so it lives on the same partition as the events that fold
it: the worker keeps it in a partitioned local store with a compacted changelog, as the command
handler keeps aggregates. An ``Emit`` names the target aggregate instance and a command of one of the
``targets``; the worker finds the target from the command's class and gives each command a
deterministic id (``policy_command_id``), so a replay emits the same ids and the target's
deduplication answers them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from foldline.aggregate import _NAME, STATE, Aggregate, AggregateSpec, Upcaster, load_object, type_name
from foldline.errors import AggregateDefinitionError
from foldline.records import COMMAND_ID

S = TypeVar("S")


@dataclass(frozen=True)
class Happened:
    """One event of a source aggregate, as a policy sees it."""

    source: str  #: the source aggregate's name
    aggregate_id: str
    version: int  #: the event's version in its aggregate (1, 2, ...)
    event: Any  #: the decoded event (a frozen dataclass of the source aggregate)
    recorded_at: str = ""


@dataclass(frozen=True)
class Emit:
    """A command for ``aggregate_id`` of the target aggregate that declares the command's class."""

    aggregate_id: str
    command: Any
    expected_version: int | None = None


@dataclass(frozen=True)
class Schedule:
    """Emit ``emit`` once at ``at`` (an aware datetime) unless cancelled first; a later ``Schedule`` of the
    same ``name`` for the same source aggregate replaces it. Kept in the policy's store and changelog."""

    name: str
    at: datetime
    emit: Emit


@dataclass(frozen=True)
class Cancel:
    """Drop the deadline ``name`` of this source aggregate, if it is still pending."""

    name: str


Reaction = tuple[Any, Sequence[Emit | Schedule | Cancel]]


class Policy(Generic[S]):
    """Base class of a policy definition. Subclasses set the class variables and ``react``."""

    name: ClassVar[str]
    sources: ClassVar[tuple[type[Aggregate[Any]], ...]]
    targets: ClassVar[tuple[type[Aggregate[Any]], ...]]
    #: A frozen dataclass, or None for a policy that keeps no state of its own.
    state_type: ClassVar[type[Any] | None] = None
    #: ``{(STATE, from_version): upcaster}`` for the state's older schema versions.
    upcasters: ClassVar[Mapping[tuple[str, int], Upcaster]] = {}

    def initial_state(self) -> S:
        """The state before a source aggregate's first event (None when ``state_type`` is None)."""
        return None  # type: ignore[return-value]

    def react(self, state: S, event: Happened) -> Reaction:
        raise NotImplementedError

    def run(self, events: Sequence[Happened], state: S | None = None) -> tuple[S, list[Emit | Schedule | Cancel]]:
        """Everything the events produce (commands, deadlines), in order, and the state after them (for tests)."""
        current = self.initial_state() if state is None else state
        emitted: list[Emit | Schedule | Cancel] = []
        for event in events:
            current, commands = self.react(current, event)
            emitted.extend(commands)
        return current, emitted


def policy_command_id(policy: str, source: str, aggregate_id: str, version: int, index: int) -> str:
    """The id of the ``index``-th command a policy emitted for one source event: the same on every replay.

    Readable when the aggregate id allows it; otherwise (odd characters, too long) the id is hashed.
    """
    readable = f"{policy}:{source}:{aggregate_id}:{version}:{index}"
    if COMMAND_ID.match(readable):
        return readable
    digest = hashlib.sha256(aggregate_id.encode(errors="surrogatepass")).hexdigest()[:32]
    return f"{policy}:{source}:h{digest}:{version}:{index}"


class PolicySpec:
    """A policy checked once and compiled for the worker: its sources, targets and state codec."""

    def __init__(self, policy: Policy[Any]) -> None:
        cls = type(policy)
        for attr in ("name", "sources", "targets"):
            if not hasattr(cls, attr):
                raise AggregateDefinitionError(f"{cls.__qualname__} must set the class variable {attr!r}")
        if not _NAME.match(cls.name):
            raise AggregateDefinitionError(
                f"policy name {cls.name!r} must be lowercase letters, digits and dashes (it names topics)"
            )
        if not cls.sources:
            raise AggregateDefinitionError(f"policy {cls.name} needs at least one source aggregate")
        self.policy = policy
        self.name = cls.name
        self.sources = {spec.name: spec for spec in (AggregateSpec(a()) for a in cls.sources)}
        if len(self.sources) != len(cls.sources):
            raise AggregateDefinitionError(f"policy {cls.name} lists a source aggregate twice")
        self.targets = [AggregateSpec(a()) for a in cls.targets]
        self._target_of: dict[type[Any], AggregateSpec] = {}
        for target in self.targets:
            for kind in target.commands.values():
                if kind.cls in self._target_of:
                    raise AggregateDefinitionError(
                        f"command {kind.name} belongs to two targets of policy {cls.name}: "
                        f"{self._target_of[kind.cls].name} and {target.name}"
                    )
                self._target_of[kind.cls] = target
        self.upcasters = dict(cls.upcasters)
        self.state: Any = None
        if cls.state_type is not None:
            self.state = AggregateSpec._kind(cls.state_type, "state")

    def target_of(self, command: Any) -> AggregateSpec:
        """The target aggregate whose commands include ``command``'s class."""
        spec = self._target_of.get(type(command))
        if spec is None:
            known = ", ".join(t.name for t in self.targets) or "none"
            raise AggregateDefinitionError(
                f"policy {self.name} emitted {type(command).__qualname__}, not a command of its targets ({known})"
            )
        return spec

    def encode_state(self, state: Any) -> Any:
        return None if self.state is None else self.state.encode(state)

    def decode_state(self, version: int, data: Any) -> Any:
        if self.state is None:
            return None
        if version > self.state.version:
            raise AggregateDefinitionError(f"policy state has schema version {version}, newer than this code's")
        while version < self.state.version:
            step = self.upcasters.get((STATE, version))
            if step is None:
                raise AggregateDefinitionError(f"no upcaster for {type_name(self.state.cls)} from version {version}")
            data = step(data)
            version += 1
        return self.state.decode(data, "")

    @property
    def state_version(self) -> int:
        return 1 if self.state is None else int(self.state.version)


def load_policy(path: str) -> PolicySpec:
    """Import a policy class (or instance) by path and compile it."""
    obj = load_object(path)
    instance = obj() if isinstance(obj, type) else obj
    if not isinstance(instance, Policy):
        raise AggregateDefinitionError(f"{path} is not a foldline Policy")
    return PolicySpec(instance)
