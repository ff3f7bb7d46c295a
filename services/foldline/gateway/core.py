"""One gateway replica's parts: its aggregates, the command producer, the results reader, the views.

The routes (``app``, ``commands``, ``stream``) read it from ``request.app.state.gateway``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from foldline.aggregate import AggregateSpec
from foldline.clients import verify_access
from foldline.gateway.errors import NotFound
from foldline.gateway.producer import CommandProducer
from foldline.gateway.results import ResultHub, ResultsReader
from foldline.gateway.views import ViewService
from foldline.settings import GatewaySettings
from foldline.topics import TopicNames

log = structlog.get_logger("foldline.gateway")


class Gateway:
    """Everything one gateway replica holds: aggregates, the producer, the results reader, the views."""

    def __init__(
        self, specs: Iterable[AggregateSpec], settings: GatewaySettings, views: ViewService | None = None
    ) -> None:
        self.settings = settings
        verify_access(settings.kafka)  # a refused login stops here, with the broker's reason
        self.specs = {spec.name: spec for spec in specs}
        self.topics = {name: TopicNames(name) for name in self.specs}
        self.hub = ResultHub(settings.result_index_size)
        self.reader = ResultsReader(settings.kafka, self.specs, self.hub, lookback_s=settings.results_lookback_s)
        self.producer = CommandProducer(settings.kafka, linger_ms=settings.producer_linger_ms)
        self.views = views
        self.closing = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Reads of dead-letter topics running at once (each holds a Kafka consumer for a few seconds).
        self.dead_letter_slots = asyncio.Semaphore(settings.dead_letter_readers)

    def spec(self, aggregate: str) -> AggregateSpec:
        spec = self.specs.get(aggregate)
        if spec is None:
            raise NotFound(
                f"no aggregate named {aggregate!r}; known: {', '.join(sorted(self.specs)) or 'none'}",
                code="unknown_aggregate",
                details={"aggregate": aggregate, "known": sorted(self.specs)},
            )
        return spec

    def require_views(self) -> ViewService:
        if self.views is None:
            raise NotFound(
                "this gateway serves no views (start it with --database and --projection)", code="unknown_view"
            )
        return self.views

    async def start(self) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.closing = asyncio.Event()
        self.producer.start(loop)
        self.reader.start(loop)
        if self.views is not None:
            await self.views.start()
        log.info(
            "gateway started",
            aggregates=sorted(self.specs),
            views=sorted(self.views.views) if self.views else [],
            settings=repr(self.settings),
        )

    def begin_shutdown(self) -> None:
        """End every open stream so the server can drain; runs on the loop."""
        self.closing.set()
        self.hub.close_streams()

    async def stop(self) -> None:
        self.begin_shutdown()
        await asyncio.to_thread(self.reader.stop)
        await self.producer.stop()
        if self.views is not None:
            await self.views.close()
        log.info("gateway stopped")

    def live(self) -> bool:
        return self.reader.error is None and self.reader.alive()

    def ready(self) -> bool:
        return self.live() and self.reader.caught_up and (self.views is None or self.views.ready())
