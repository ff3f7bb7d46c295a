"""The invoices command handler written on Quix Streams, for the published comparison (``make bench-compare``).

Runs in its own virtual environment (``.cache/quix-venv``: Quix pins an older confluent-kafka):
``python -m bench.quix_invoices BOOTSTRAP COMMANDS RESULTS EVENTS GROUP STATE_DIR COMMIT_INTERVAL_S``.

What a Python team would write with Quix for the same job: one ``StreamingDataFrame`` over the commands
topic, exactly-once processing, the aggregate's state in Quix's RocksDB state (keyed by the message key,
the aggregate id) with its changelog topic. It runs foldline's own invoices domain (``decide``,
``evolve``, the codec) and writes foldline's record formats, so that the same correctness check reads
both contenders: a result per command (with the same deduplication of the last 16 command ids and the
same expected-version check) and the events, each with its version. There is no snapshots topic: the
latest state is Quix's changelog record, which the check reads instead. No dead letters, no metrics
beyond Quix's own, no placement check of the key.
"""

from __future__ import annotations

import sys
from typing import Any

from foldline.aggregate import AggregateSpec, Rejection
from foldline.errors import CommandError, DecodeError
from foldline.examples.invoices import Invoices
from foldline.ids import AggregateId, CommandId
from foldline.records import CommandEnvelope, CommandResult, EventRecord, Status, now_iso

SPEC = AggregateSpec(Invoices())
DEDUP_WINDOW = 16  # foldline's default FOLDLINE_DEDUP_WINDOW
STATE_KEY = "aggregate"


def _failed(command_id: str, aggregate_id: str, version: int, code: str, reason: str) -> CommandResult:
    return CommandResult(
        CommandId(command_id), AggregateId(aggregate_id), Status.FAILED, version, (), reason[:500], code
    )


def handle(value: bytes, state: Any) -> list[tuple[str, bytes]]:
    """One command: ``[("result", bytes), ("event", bytes), ...]``. Never raises for a bad record."""
    try:
        env = CommandEnvelope.from_bytes(value)
    except DecodeError:
        return []  # no command id to answer, and this contender keeps no dead letters (none in the workload)
    entry: dict[str, Any] = state.get(STATE_KEY) or {"v": 0, "s": None, "r": []}
    for item in reversed(entry["r"]):
        if item["command_id"] == env.command_id:
            return [("result", CommandResult.from_compact(item, env.aggregate_id).to_bytes())]
    outputs: list[tuple[str, bytes]] = []
    version = entry["v"]
    now = now_iso()
    result: CommandResult
    if env.expected_version is not None and env.expected_version != version:
        reason = f"expected version {env.expected_version}, but the aggregate is at version {version}"
        result = CommandResult(env.command_id, env.aggregate_id, Status.CONFLICT, version, (), reason, "conflict")
    else:
        try:
            current = SPEC.aggregate.initial_state() if version == 0 else SPEC.decode_state(1, entry["s"])
            command = SPEC.decode_command(env.type, env.payload, env.schema_version)
            decision = SPEC.aggregate.decide(current, command)
            if isinstance(decision, Rejection):
                result = CommandResult(
                    env.command_id, env.aggregate_id, Status.REJECTED, version, (), decision.reason, "rejected"
                )
            else:
                names = []
                for event in decision:
                    kind = SPEC.event_kind(event)
                    current = SPEC.aggregate.evolve(current, event)
                    version += 1
                    record = EventRecord(
                        env.aggregate_id, kind.name, version, kind.encode(event), env.command_id, kind.version, now
                    )
                    outputs.append(("event", record.to_bytes()))
                    names.append(kind.name)
                entry["v"], entry["s"] = version, SPEC.encode_state(current)
                result = CommandResult(env.command_id, env.aggregate_id, Status.ACCEPTED, version, tuple(names))
        except CommandError as exc:
            result = _failed(env.command_id, env.aggregate_id, version, exc.code, exc.message)
        except Exception as exc:  # the domain's own bug must not stop the partition
            result = _failed(env.command_id, env.aggregate_id, version, "decide_failed", f"{type(exc).__name__}: {exc}")
    entry["r"] = [*entry["r"], result.compact()][-DEDUP_WINDOW:]
    state.set(STATE_KEY, entry)
    return [("result", result.to_bytes()), *outputs]


def main(argv: list[str]) -> None:
    from quixstreams import Application  # type: ignore[import-not-found]  # only in .cache/quix-venv

    bootstrap, commands, results, events, group, state_dir, interval = argv
    commit_interval = float(interval)  # seconds between checkpoints (transactions); Quix's default is 5
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=state_dir,
        commit_interval=commit_interval,
        producer_extra_config={"partitioner": "murmur2_random"},  # as foldline's producers place keys
        loglevel="WARNING",
    )
    source = app.topic(commands, key_deserializer="bytes", value_deserializer="bytes")
    results_topic = app.topic(results, key_serializer="bytes", value_serializer="bytes")
    events_topic = app.topic(events, key_serializer="bytes", value_serializer="bytes")
    sdf = app.dataframe(source).apply(handle, stateful=True, expand=True)
    sdf.filter(lambda out: out[0] == "result").apply(lambda out: out[1]).to_topic(results_topic)
    sdf.filter(lambda out: out[0] == "event").apply(lambda out: out[1]).to_topic(events_topic)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
