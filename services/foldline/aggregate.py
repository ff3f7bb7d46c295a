"""The aggregate API: commands, events and ``state = fold(events, initial)``, pure and typed.

A team writes frozen dataclasses for its commands, events and state, and one ``Aggregate`` subclass::

    class Invoices(Aggregate[Invoice]):
        name = "invoices"
        state_type = Invoice
        commands = (CreateInvoice, AddLineItem, ...)
        events = (InvoiceCreated, LineItemAdded, ...)

        def initial_state(self) -> Invoice: ...
        def decide(self, state: Invoice, command: object) -> Decision: ...
        def evolve(self, state: Invoice, event: object) -> Invoice: ...

``decide`` returns the new events, or a ``Rejection`` with the reason; ``evolve`` returns the next state.
Neither does I/O, so the engines can call them at any time and tests need no services.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from foldline.codec import check_command_values, converters
from foldline.errors import AggregateDefinitionError, UnknownTypeError, UnsupportedVersionError, ValidationError

S = TypeVar("S")

#: Turns a record's payload at schema version ``v`` into version ``v + 1``.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: The key under which the state's own upcasters are registered.
STATE = "$state"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Rejection:
    """What ``decide`` returns to refuse a command; ``reason`` reaches the sender."""

    reason: str


Decision = Sequence[Any] | Rejection


def type_name(cls: type[Any]) -> str:
    """The name a command, event or state class travels under (``__foldline_type__`` or its class name)."""
    return str(getattr(cls, "__foldline_type__", cls.__name__))


def schema_version(cls: type[Any]) -> int:
    """The current schema version of a class (``__schema_version__``, default 1)."""
    return int(getattr(cls, "__schema_version__", 1))


class Aggregate(Generic[S]):
    """Base class of an aggregate definition. Subclasses set the class variables and three methods."""

    name: ClassVar[str]
    state_type: ClassVar[type[Any]]
    commands: ClassVar[tuple[type[Any], ...]]
    events: ClassVar[tuple[type[Any], ...]]
    #: ``{(type name, from_version): upcaster}`` for events; use ``STATE`` as the type name for the state.
    upcasters: ClassVar[Mapping[tuple[str, int], Upcaster]] = {}
    #: ``{(command type name, from_version): upcaster}``: a command sent at an older ``schema_version``
    #: is brought up to its class's ``__schema_version__`` one step at a time before it is decoded.
    command_upcasters: ClassVar[Mapping[tuple[str, int], Upcaster]] = {}

    def initial_state(self) -> S:
        raise NotImplementedError

    def decide(self, state: S, command: Any) -> Decision:
        raise NotImplementedError

    def evolve(self, state: S, event: Any) -> S:
        raise NotImplementedError

    def fold(self, events: Iterable[Any], state: S | None = None) -> S:
        """``fold(events, initial)``: the state after applying every event in order."""
        current = self.initial_state() if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current


@dataclass(frozen=True)
class _Kind:
    cls: type[Any]
    name: str
    version: int
    encode: Callable[[Any], Any]
    decode: Callable[[Any, str], Any]


class AggregateSpec:
    """An aggregate checked once and compiled for the engines: names, converters and upcasters."""

    def __init__(self, aggregate: Aggregate[Any]) -> None:
        cls = type(aggregate)
        for attr in ("name", "state_type", "commands", "events"):
            if not hasattr(cls, attr):
                raise AggregateDefinitionError(f"{cls.__qualname__} must set the class variable {attr!r}")
        if not _NAME.match(cls.name):
            raise AggregateDefinitionError(
                f"aggregate name {cls.name!r} must be lowercase letters, digits and dashes (it names topics)"
            )
        self.aggregate = aggregate
        self.name = cls.name
        self.commands = self._kinds(cls.commands, "command")
        self.events = self._kinds(cls.events, "event")
        self.state = self._kind(cls.state_type, "state")
        self.upcasters = dict(cls.upcasters)
        self.command_upcasters = dict(cls.command_upcasters)
        for name, version in self.command_upcasters:
            if name not in self.commands or not 1 <= version < self.commands[name].version:
                raise AggregateDefinitionError(
                    f"command upcaster ({name!r}, {version}) names no older schema version of a declared command"
                )
        self._event_names = {kind.cls: kind for kind in self.events.values()}

    def _kinds(self, classes: Sequence[type[Any]], what: str) -> dict[str, _Kind]:
        kinds: dict[str, _Kind] = {}
        for cls in classes:
            kind = self._kind(cls, what)
            if kind.name in kinds:
                raise AggregateDefinitionError(f"two {what} types are named {kind.name!r}")
            kinds[kind.name] = kind
        return kinds

    @staticmethod
    def _kind(cls: type[Any], what: str) -> _Kind:
        params = getattr(cls, "__dataclass_params__", None)
        if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
            raise AggregateDefinitionError(f"{what} type {cls!r} must be a frozen dataclass")
        encode, decode = converters(cls)
        return _Kind(cls, type_name(cls), schema_version(cls), encode, decode)

    # -- commands ------------------------------------------------------------------------------------
    def decode_command(self, type_: str, payload: Any, version: int | None = None) -> Any:
        """A command's payload decoded and checked; ``version`` (its envelope's ``schema_version``, the
        current one when None) below the class's is upcast through ``command_upcasters`` first."""
        kind = self.commands.get(type_)
        if kind is None:
            raise UnknownTypeError(
                f"{self.name} has no command type {type_!r}; known: {', '.join(sorted(self.commands))}",
                details={"type": type_},
            )
        if version is not None and version != kind.version:
            payload = self._upcast_command(kind, version, payload)
        command = kind.decode(payload, "")
        check_command_values(command)  # values every store and view can hold: the command boundary
        return command

    def _upcast_command(self, kind: _Kind, version: int, payload: Any) -> Any:
        details = {"type": kind.name, "schema_version": version, "current": kind.version}
        if version > kind.version:
            raise UnsupportedVersionError(
                f"{kind.name} has schema version {version}, newer than this code's {kind.version}: deploy newer code",
                details=details,
            )
        while version < kind.version:
            step = self.command_upcasters.get((kind.name, version))
            if step is None:
                raise UnsupportedVersionError(
                    f"{kind.name} at schema version {version} is no longer accepted (no upcaster to version "
                    f"{version + 1}; this code reads {kind.version})",
                    details=details,
                )
            try:
                payload = step(payload)
            except Exception as exc:  # the upcaster met a payload it cannot convert: the command's fault
                raise ValidationError(
                    f"{kind.name}: upcasting from schema version {version} failed: {type(exc).__name__}: {exc}",
                    details=details,
                ) from exc
            version += 1
        return payload

    def encode_command(self, command: Any) -> tuple[str, dict[str, Any]]:
        kind = self.commands.get(type_name(type(command)))
        if kind is None or kind.cls is not type(command):
            raise UnknownTypeError(f"{type(command).__qualname__} is not a command of {self.name}")
        return kind.name, kind.encode(command)

    # -- events --------------------------------------------------------------------------------------
    def event_kind(self, event: Any) -> _Kind:
        kind = self._event_names.get(type(event))
        if kind is None:
            raise AggregateDefinitionError(
                f"decide returned {type(event).__qualname__}, which is not among {self.name}'s events"
            )
        return kind

    def decode_event(self, type_: str, version: int, payload: Any) -> Any:
        kind = self.events.get(type_)
        if kind is None:
            raise UnknownTypeError(f"{self.name} has no event type {type_!r}", details={"type": type_})
        return kind.decode(self.upcast(type_, version, kind.version, payload), "")

    # -- state ---------------------------------------------------------------------------------------
    def encode_state(self, state: Any) -> Any:
        return self.state.encode(state)

    def decode_state(self, version: int, data: Any) -> Any:
        return self.state.decode(self.upcast(STATE, version, self.state.version, data), "")

    def upcast(self, type_: str, version: int, current: int, payload: Any) -> Any:
        """Apply the registered upcasters from ``version`` up to ``current``."""
        if version > current:
            raise ValidationError(
                f"{type_} has schema version {version}, newer than this code's {current}: deploy newer code"
            )
        while version < current:
            step = self.upcasters.get((type_, version))
            if step is None:
                raise AggregateDefinitionError(f"no upcaster for {type_} from schema version {version}")
            payload = step(payload)
            version += 1
        return payload


def load_object(path: str) -> Any:
    """Import ``package.module:Name``; the target of ``--aggregate`` and ``--projection``."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise AggregateDefinitionError(f"expected an import path like 'package.module:Name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AggregateDefinitionError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise AggregateDefinitionError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def load_aggregate(path: str) -> AggregateSpec:
    """Import an aggregate class (or instance) by path and compile it."""
    obj = load_object(path)
    instance = obj() if isinstance(obj, type) else obj
    if not isinstance(instance, Aggregate):
        raise AggregateDefinitionError(f"{path} is not a foldline Aggregate")
    return AggregateSpec(instance)
