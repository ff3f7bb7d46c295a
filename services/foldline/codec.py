"""Typed conversion between frozen dataclasses and JSON-ready values, with validation.

Commands, events and states are plain frozen dataclasses. A converter is compiled once per type from
its annotations, so the per-record cost is a few function calls, not a walk over type hints.

Money is ``Decimal`` and travels as a JSON string: a JSON float is refused for a ``Decimal`` field,
since a binary float cannot hold 0.10 exactly.

A command entering the system is held to more (``check_command_values``): text without NUL characters
or lone surrogates, integers within 64 bits, finite floats, decimals of bounded size — values every
store and projection database can hold, so one accepted command can never stop a reader downstream.
States and events are not: they are what the domain computed from such commands.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from foldline.errors import AggregateDefinitionError, ValidationError

T = TypeVar("T")
Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]
_Raw = Callable[[Any], Any]  # a compiled decoder: no path argument, so success costs no string building

_encoders: dict[Any, Encoder] = {}
_raw_decoders: dict[Any, _Raw] = {}
_decoders: dict[Any, Decoder] = {}


class _Invalid(Exception):
    """A decoding failure on its way up; each level adds where it was (only ever built on failure)."""

    def __init__(self, message: str, segment: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.segments = [segment] if segment else []

    def at(self, segment: str) -> _Invalid:
        self.segments.append(segment)
        return self


def _type_name(value: Any) -> str:
    return type(value).__name__


def _identity(value: Any) -> Any:
    return value


def _decode_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_type_name(value)}")
    return value


def _decode_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {_type_name(value)}")
    return value


def _decode_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number, got {_type_name(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond a float's range
        raise _Invalid("the number is out of range") from None


def _decode_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_type_name(value)}")
    return value


def _decode_decimal(value: Any) -> Decimal:
    if isinstance(value, (bool, float)):
        raise _Invalid('expected a decimal as a string such as "12.50" (floats lose cents)')
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        raise _Invalid(f"expected a decimal string, got {_type_name(value)}")
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise _Invalid(f"{value!r} is not a decimal number") from None
    if not result.is_finite():
        raise _Invalid(f"{value!r} is not a finite number")
    return result


def _decode_date(value: Any) -> date:
    if not isinstance(value, str):
        raise _Invalid("expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"{value!r} is not a date in the form YYYY-MM-DD") from None


def _decode_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Invalid("expected an ISO 8601 timestamp")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"{value!r} is not an ISO 8601 timestamp") from None


def _isoformat(value: Any) -> Any:
    return value.isoformat()


_SCALARS: dict[Any, tuple[Encoder, _Raw]] = {
    str: (_identity, _decode_str),
    int: (_identity, _decode_int),
    float: (_identity, _decode_float),
    bool: (_identity, _decode_bool),
    Decimal: (str, _decode_decimal),
    date: (_isoformat, _decode_date),
    datetime: (_isoformat, _decode_datetime),
}


def _compile(tp: Any) -> tuple[Encoder, _Raw]:
    if tp in _SCALARS:
        return _SCALARS[tp]
    if tp is Any:
        return _identity, _identity
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        allowed = args

        def decode_literal(value: Any) -> Any:
            if value not in allowed:
                raise _Invalid(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
            return value

        return _identity, decode_literal
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1 or len(args) != 2:
            raise AggregateDefinitionError(f"only Optional[X] unions are supported, not {tp!r}")
        inner_encode, inner_decode = _raw(members[0])
        return (
            lambda value: None if value is None else inner_encode(value),
            lambda value: None if value is None else inner_decode(value),
        )
    if origin in (tuple, list, frozenset):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise AggregateDefinitionError(f"use tuple[X, ...] for sequences, not {tp!r}")
        item_encode, item_decode = _raw(args[0])
        build: Callable[[Any], Any] = origin

        def decode_seq(value: Any) -> Any:
            if not isinstance(value, list):
                raise _Invalid(f"expected a list, got {_type_name(value)}")
            try:
                return build([item_decode(item) for item in value])
            except _Invalid as exc:  # find which item, only now that one failed
                for i, item in enumerate(value):
                    try:
                        item_decode(item)
                    except _Invalid:
                        raise exc.at(f"[{i}]") from None
                raise

        return (lambda value: [item_encode(item) for item in value]), decode_seq
    if origin is dict:
        if args[0] is not str:
            raise AggregateDefinitionError(f"mapping keys must be str, not {args[0]!r}")
        value_encode, value_decode = _raw(args[1])

        def decode_map(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Invalid(f"expected an object, got {_type_name(value)}")
            out = {}
            for key, item in value.items():
                try:
                    out[_decode_str(key)] = value_decode(item)
                except _Invalid as exc:
                    raise exc.at(f".{key}") from None
            return out

        return (lambda value: {k: value_encode(v) for k, v in value.items()}), decode_map
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_type = tp

        def decode_enum(value: Any) -> Any:
            try:
                return enum_type(value)
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in enum_type)
                raise _Invalid(f"must be one of {allowed}, got {value!r}") from None

        return (lambda value: value.value), decode_enum
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _compile_dataclass(tp)
    raise AggregateDefinitionError(f"foldline cannot encode fields of type {tp!r}")


_in_progress: set[Any] = set()


def _referenced(tp: Any) -> set[Any]:
    """The type and every type nested in its arguments."""
    found = {tp}
    for arg in get_args(tp):
        found |= _referenced(arg)
    return found


def _compile_dataclass(cls: type[Any]) -> tuple[Encoder, _Raw]:
    _in_progress.add(cls)
    try:
        return _compile_fields(cls)
    finally:
        _in_progress.discard(cls)


def _compile_fields(cls: type[Any]) -> tuple[Encoder, _Raw]:
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise AggregateDefinitionError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc
    specs: list[tuple[str, Encoder, _Raw, bool]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        hint = hints[f.name]
        # Compile eagerly (no per-value indirection) unless the type refers back to one being compiled.
        pair = _lazy(hint) if _in_progress & _referenced(hint) else _raw(hint)
        specs.append((f.name, *pair, not has_default))
    names = frozenset(name for name, *_ in specs)
    required = frozenset(name for name, _, _, needed in specs if needed)
    field_decoders = tuple((name, dec) for name, _, dec, _ in specs)

    # The bytes on the topics have the fields already JSON (str, int, ...) first, then the converted ones.
    plain = [(name, enc) for name, enc, _, _ in specs if enc is _identity]
    encode = _dict_encoder(cls, plain + [(name, enc) for name, enc, _, _ in specs if enc is not _identity])

    def decode(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Invalid(f"expected an object, got {_type_name(value)}")
        if not names.issuperset(value):
            raise _Invalid(f"unknown field(s) {', '.join(sorted(value.keys() - names))}")
        kwargs: dict[str, Any] = {}
        for name, dec in field_decoders:
            if name in value:
                try:
                    kwargs[name] = dec(value[name])
                except _Invalid as exc:
                    raise exc.at(f".{name}") from None
        if not value.keys() >= required:
            missing = min(required - value.keys())
            raise _Invalid("is required", f".{missing}")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            # __post_init__ checks (positive quantities, ...) speak through ValueError.
            raise _Invalid(str(exc)) from exc

    return encode, decode


def _dict_encoder(cls: type[Any], fields: list[tuple[str, Encoder]]) -> Encoder:
    """``value -> {field: encoded value}`` as one generated dict display, as ``dataclasses`` generates
    ``__init__``: a state is encoded on every command that changes it, and a loop of ``getattr`` calls was
    most of the codec's time. Keys keep the order given (the bytes on the topics depend on it); a value
    already JSON (str, int, ...) is read as an attribute, a Decimal is ``str``-ed inline, others call
    their converter."""
    names: dict[str, Any] = {"_str": str}
    items = []
    for i, (name, enc) in enumerate(fields):
        if not name.isidentifier() or name.startswith("__"):  # cannot be written as ``v.name``: the slow way
            names[f"_n{i}"], names[f"_e{i}"] = name, enc
            items.append(f"_n{i}: _e{i}(_getattr(v, _n{i}))")
            names["_getattr"] = getattr
        elif enc is _identity:
            items.append(f"{name!r}: v.{name}")
        elif enc is str:
            items.append(f"{name!r}: _str(v.{name})")
        else:
            names[f"_e{i}"] = enc
            items.append(f"{name!r}: _e{i}(v.{name})")
    source = f"def encode(v):\n    return {{{', '.join(items)}}}\n"
    exec(compile(source, f"<foldline encoder of {cls.__qualname__}>", "exec"), names)
    encode: Encoder = names["encode"]
    return encode


def _lazy(tp: Any) -> tuple[Encoder, _Raw]:
    """Resolve nested converters on first use, so self-referencing types compile."""
    cell: list[tuple[Encoder, _Raw]] = []

    def get() -> tuple[Encoder, _Raw]:
        if not cell:
            cell.append(_raw(tp))
        return cell[0]

    return (lambda value: get()[0](value)), (lambda value: get()[1](value))


def _raw(tp: Any) -> tuple[Encoder, _Raw]:
    """The compiled (encode, raw decode) pair for a type; cached."""
    enc = _encoders.get(tp)
    if enc is None:
        enc, dec = _compile(tp)
        _encoders[tp], _raw_decoders[tp] = enc, dec
    return enc, _raw_decoders[tp]


def converters(tp: Any) -> tuple[Encoder, Decoder]:
    """The (encode, decode) pair for a type; decode raises ValidationError naming the field at fault."""
    decode = _decoders.get(tp)
    if decode is None:
        raw = _raw(tp)[1]

        def decode(value: Any, path: str) -> Any:
            try:
                return raw(value)
            except _Invalid as exc:
                where = (path + "".join(reversed(exc.segments))).lstrip(".") or "payload"
                raise ValidationError(f"{where}: {exc.message}", details={"field": where}) from None

        _decoders[tp] = decode
    return _encoders[tp], decode


def to_json(value: Any) -> Any:
    """A dataclass instance as JSON-ready data."""
    return _raw(type(value))[0](value)


def from_json(tp: type[T], data: Any, path: str = "") -> T:
    """Build and validate ``tp`` from JSON data; raises ValidationError naming the field at fault."""
    result: T = converters(tp)[1](data, path)
    return result


#: What a command may carry (``check_command_values``): integers that orjson and PostgreSQL's BIGINT hold,
#: and decimals of at most this many digits within as many places of the point - beyond any amount, and
#: far within PostgreSQL's NUMERIC after arithmetic on them.
MIN_INT, MAX_INT = -(1 << 63), (1 << 63) - 1
MAX_DECIMAL_DIGITS = 1000


def check_command_values(value: Any, path: str = "") -> None:
    """Refuse, in a decoded command, values no store or projection database can hold (see the module's
    docstring); ValidationError names the field."""
    if _fine(value):
        return
    problem = _value_problem(value)
    if problem is not None:
        where, message = problem
        where = (path + where).lstrip(".") or "payload"
        raise ValidationError(f"{where}: {message}", details={"field": where})


#: The field names of each dataclass checked so far (``dataclasses.fields`` is slow for every command).
_field_names: dict[type[Any], tuple[str, ...]] = {}


def _fine_text(value: str) -> bool:
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fine(value: Any) -> bool:
    """True when ``_value_problem`` would find nothing; False when it might (it then says what): the
    common case without building paths or generators (plain loops, not ``all()``, for that reason).
    Dispatches on exact types; anything else (a str subclass, an enum) is left to ``_value_problem``."""
    t = type(value)
    if t is str:
        return _fine_text(value)
    if t is int:
        fits: bool = MIN_INT <= value <= MAX_INT
        return fits
    if t is bool or value is None or t is date or t is datetime:
        return True
    if t is float:
        return math.isfinite(value)
    if t is Decimal:
        if not value.is_finite():
            return False
        _, digits, exponent = value.as_tuple()
        return (
            len(digits) <= MAX_DECIMAL_DIGITS
            and abs(value.adjusted()) <= MAX_DECIMAL_DIGITS
            and int(exponent) >= -MAX_DECIMAL_DIGITS
        )
    if t is dict:
        for key, item in value.items():  # noqa: SIM110
            if (type(key) is str and not _fine_text(key)) or not _fine(item):
                return False
        return True
    if t is list or t is tuple or t is frozenset or t is set:
        for item in value:  # noqa: SIM110
            if not _fine(item):
                return False
        return True
    names = _field_names.get(t)
    if names is None:
        if not (dataclasses.is_dataclass(t) and isinstance(t, type)):
            return False
        names = _field_names[t] = tuple(f.name for f in dataclasses.fields(t))
    for name in names:  # noqa: SIM110
        if not _fine(getattr(value, name)):
            return False
    return True


def _value_problem(value: Any) -> tuple[str, str] | None:
    if isinstance(value, str):
        if "\x00" in value:
            return "", "a NUL character is not allowed in text"
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return "", "the text holds a lone surrogate, which is not a character"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if MIN_INT <= value <= MAX_INT else ("", "the integer does not fit in 64 bits")
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", "the number is not finite")
    if isinstance(value, Decimal):
        _, digits, exponent = value.as_tuple()
        if not value.is_finite():
            return "", "the decimal is not finite"
        if (
            len(digits) > MAX_DECIMAL_DIGITS
            or abs(value.adjusted()) > MAX_DECIMAL_DIGITS
            or int(exponent) < -MAX_DECIMAL_DIGITS
        ):
            return (
                "",
                f"the decimal is out of range: at most {MAX_DECIMAL_DIGITS} digits, within as many places of the point",
            )
        return None
    items: Any
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        items = ((f".{k}", v) for k, v in value.items())
        for key in value:
            found = _value_problem(key) if isinstance(key, str) else None
            if found is not None:
                return f".{key!r}", found[1]
    elif isinstance(value, (list, tuple, frozenset, set)):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None  # enums, dates: their decoders already checked them
    for segment, item in items:
        found = _value_problem(item)
        if found is not None:
            return segment + found[0], found[1]
    return None
