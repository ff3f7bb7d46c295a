"""Identifiers that must not be mixed up with each other or with plain strings."""

from __future__ import annotations

from typing import NewType

AggregateId = NewType("AggregateId", str)
CommandId = NewType("CommandId", str)
Version = NewType("Version", int)
