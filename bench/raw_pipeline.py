"""The broker's limit for a command handler's I/O, with no domain work: ``python -m bench.raw_pipeline``.

Per command record: one consume and three produces (a result, an event, a snapshot: the record's own
bytes, keyed as it was, to the same partition), in Kafka transactions with the consumed offsets, read
``read_committed`` — what a handler must do at the least. A batch is what one ``consume`` returns (at most
``--batch`` records), committed at once: no waiting. ``--processes`` splits the partitions between that
many processes, each with its own transactional producer, as the handler's workers do.
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from foldline.clients import transactional_producer_config
from foldline.consumer import take
from foldline.settings import KafkaSettings
from foldline.topics import TopicNames


def pipe(bootstrap: str, source: str, sinks: list[str], partitions: list[int], group: str, batch: int) -> None:
    stop = False

    def halt(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, halt)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    # The handler's own producer settings (linger, retry backoff, batch size): the floor for its latency too.
    config = transactional_producer_config(KafkaSettings(bootstrap), f"bench-raw-{uuid.uuid4().hex[:8]}")
    producer = Producer({**config, "queue.buffering.max.messages": 1_000_000})
    producer.init_transactions(30)
    consumer.assign([TopicPartition(source, p, 0) for p in partitions])
    while not stop:
        msgs = [m for m in take(consumer, batch, 0.1) if m.error() is None]
        if not msgs:
            continue
        producer.begin_transaction()
        ends: dict[int, int] = {}
        for msg in msgs:
            part, value, key = msg.partition() or 0, msg.value(), msg.key()
            for sink in sinks:
                while True:
                    try:
                        producer.produce(sink, value, key, partition=part)
                        break
                    except BufferError:
                        producer.poll(0.01)
            ends[part] = (msg.offset() or 0) + 1
        offsets = [TopicPartition(source, p, o) for p, o in ends.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
    consumer.close()


def command_line(bootstrap: str, names: TopicNames, partitions: int, processes: int) -> list[str]:
    """How a benchmark runs this pipeline in a child, from an aggregate's commands to its result, event
    and snapshot topics."""
    return [
        sys.executable,
        "-m",
        "bench.raw_pipeline",
        "--bootstrap",
        bootstrap,
        "--source",
        names.commands,
        "--partitions",
        str(partitions),
        "--processes",
        str(processes),
        *(f"--sink={topic}" for topic in (names.results, names.events, names.snapshots)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", action="append", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    shares = [list(range(args.partitions))[i :: args.processes] for i in range(args.processes)]
    shares = [s for s in shares if s]
    if len(shares) == 1:
        pipe(args.bootstrap, args.source, args.sink, shares[0], group, args.batch)
        return
    procs = [
        multiprocessing.Process(target=pipe, args=(args.bootstrap, args.source, args.sink, share, group, args.batch))
        for share in shares
    ]
    for proc in procs:
        proc.start()

    def stop_all(*_: object) -> None:
        for proc in procs:
            proc.terminate()

    signal.signal(signal.SIGTERM, stop_all)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
