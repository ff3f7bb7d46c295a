"""Identifiers that must not be mixed up with each other or with plain strings."""

from __future__ import annotations

from typing import NewType

AggregateId = NewType("AggregateId", str)
CommandId = NewType("CommandId", str)
AggregateName = NewType("AggregateName", str)
PartitionId = NewType("PartitionId", int)
Version = NewType("Version", int)
