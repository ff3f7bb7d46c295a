"""Build a command handler from settings: its Kafka clients and its stores. The handler's only wiring."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from foldline.aggregate import AggregateSpec
from foldline.clients import (
    group_member_config,
    restore_consumer_config,
    standby_consumer_config,
    transactional_producer_config,
)
from foldline.errors import ConfigurationError
from foldline.handler.engine import CommandHandler
from foldline.handler.standby import StandbyCommandHandler, StandbyKeeper, handed_over
from foldline.handler.workers import pod_members
from foldline.outage import KafkaWatch
from foldline.settings import HandlerSettings
from foldline.store.base import StateStore
from foldline.store.lock import open_if_free, open_shared_store
from foldline.topics import TopicNames, handler_group, restore_group


def build_command_handler(spec: AggregateSpec, settings: HandlerSettings) -> CommandHandler:
    group = handler_group(spec.name)
    state_root = Path(settings.state_dir) / spec.name
    # The consumers report "all brokers down" through error_cb, in the handler's own thread (inside consume).
    watch = KafkaWatch(f"command-handler {spec.name}")

    def new_consumer(protocol: str) -> Consumer:
        # A stable id per pod (a StatefulSet's) makes the member static: a restart keeps its partitions.
        static = {"group.instance.id": settings.instance_id} if settings.static_membership else {}
        # client.id names the member in the group's description, where standby keepers find their ring.
        config = group_member_config(settings.kafka, group, protocol, **static, **{"client.id": settings.instance_id})
        return Consumer({**config, "error_cb": watch.on_error})

    def new_producer(index: int) -> Producer:
        # Producer 0 keeps the historic id (it fences an older version's zombie); the other takes turns with it.
        suffix = "" if index == 0 else f"~{index}"
        config = transactional_producer_config(settings.kafka, f"foldline.{spec.name}.{settings.instance_id}{suffix}")
        # librdkafka refuses records over message.max.bytes (1,000,000) itself: room for a raised limit.
        config["message.max.bytes"] = max(1_000_000, settings.max_record_bytes + 65_536)
        return Producer(config)

    def new_restore_consumer() -> Consumer:
        return Consumer(
            {**restore_consumer_config(settings.kafka, restore_group(spec.name)), "error_cb": watch.on_error}
        )

    # The workers of a pod share these directories (handler/workers.py); a lock keeps one owner per store.
    def new_store(partition: int) -> StateStore:
        return open_shared_store(settings.store, state_root / f"partition-{partition}")

    def standby_store(partition: int) -> StateStore:
        return open_if_free(settings.store, state_root / f"partition-{partition}")

    try:  # the first clients are made here: a bad setting is a configuration error, before anything runs
        if settings.standby_replicas == 0:
            return CommandHandler(
                spec,
                settings,
                consumer_factory=new_consumer,
                producer_factory=new_producer,
                restore_consumer_factory=new_restore_consumer,
                open_partition_store=new_store,
                watch=watch,
            )
        topics = TopicNames(spec.name)
        keeper = StandbyKeeper(
            spec.name,
            replicas=settings.standby_replicas,
            instance_id=settings.instance_id,
            group=group,
            commands_topic=topics.commands,
            snapshots_topic=topics.snapshots,
            consumer_factory=lambda: Consumer(standby_consumer_config(settings.kafka, restore_group(spec.name))),
            admin_factory=lambda: AdminClient(settings.kafka.client_config()),
            open_store=standby_store,
            pod_members=pod_members(settings),
        )
        return StandbyCommandHandler(
            spec,
            settings,
            consumer_factory=new_consumer,
            producer_factory=new_producer,
            restore_consumer_factory=new_restore_consumer,
            open_partition_store=handed_over(keeper, new_store),
            watch=watch,
            keeper=keeper,
        )
    except KafkaException as exc:
        raise ConfigurationError(f"invalid Kafka client settings: {exc}") from exc
