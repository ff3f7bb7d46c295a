from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foldline.aggregate import Aggregate, AggregateSpec
from foldline.handler.engine import CommandHandler
from foldline.handler.wiring import build_command_handler
from foldline.settings import HandlerSettings, KafkaSettings

pytestmark = pytest.mark.kafka


@pytest.fixture
def run_handler(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., CommandHandler]]:
    """Start a command handler in a thread of this process; all are stopped at the end of the test."""
    running: list[tuple[CommandHandler, threading.Thread]] = []

    def start(
        aggregate: Aggregate, *, state_dir: Path | None = None, store: str = HandlerSettings.store, **overrides: object
    ) -> CommandHandler:
        settings = HandlerSettings(
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
            state_dir=state_dir or tmp_path / "state",
            store=store,
            instance_id=uuid.uuid4().hex[:8],
            commit_interval_ms=20,
        ).with_changes(**overrides)
        handler = build_command_handler(AggregateSpec(aggregate), settings)
        thread = threading.Thread(target=handler.run, daemon=True)
        thread.start()
        running.append((handler, thread))
        return handler

    yield start
    for handler, _ in running:
        handler.stop()
    for _, thread in running:
        thread.join(60)
