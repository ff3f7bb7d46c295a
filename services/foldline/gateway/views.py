"""Reads of projection views for the gateway, through the projector's ``ProjectionTarget``.

Database calls are blocking, so they run on a small pool of dedicated threads; the event loop never
waits on the database. The target checks view and column names (a view's columns change when a new
revision takes over): ``UnknownViewError`` becomes 404, ``InvalidQueryError`` (an unknown column, a
value that does not fit it) 400, an unavailable database 503. ``min_version`` reads poll
``aggregate_version`` with a short backoff until the projection has caught up, or answer 504.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import structlog

from foldline.errors import CommandError, FoldlineError, PermanentError, RetryableError
from foldline.gateway.errors import BadRequest, GatewayTimeout, HttpError, NotFound, Unavailable

log = structlog.get_logger("foldline.gateway.views")

T = TypeVar("T")
RESERVED = frozenset({"limit", "offset", "order_by", "aggregate_id", "min_version", "timeout"})
#: The most rows one HTTP page may ask for; the projection target bounds any one read further (its MAX_LIMIT).
MAX_PAGE_ROWS = 1000
#: The largest offset and version a query may name: within the 64-bit integers every database binds.
MAX_OFFSET = MAX_VERSION = (1 << 63) - 1


class ViewCatalog(Protocol):
    """Where views come from: the projections' side, handed to the gateway by the composition root
    (``foldline.cli``), so the gateway and the projector stay independent of each other."""

    def view_of(self, projection: str) -> tuple[str, str]:
        """``(view, aggregate)`` of the projection at an import path."""
        ...

    def open(self, database_url: str) -> Any:
        """A reader of the projection database (``ProjectionTarget``: ``read_rows``, ``aggregate_version``)."""
        ...

    def journal_of(self, aggregate: str) -> str:
        """The view of the aggregate's event journal (the built-in projection of every event)."""
        ...


@dataclass(frozen=True)
class RowQuery:
    filters: dict[str, str] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0
    order_by: str | None = None
    aggregate_id: str | None = None
    min_version: int | None = None
    timeout: float = 10.0


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:  # also past Python's limit on the digits of an int
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}", code="invalid_query") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bound}, got {value}", code="invalid_query")
    return value


class ViewService:
    """The views of one projection database. ``views`` maps each served view to its aggregate; when it is
    empty, every view the database holds is served."""

    def __init__(
        self,
        database_url: str,
        views: Mapping[str, str],
        *,
        opener: Callable[[str], Any],
        read_timeout_s: float = 10.0,
        max_read_timeout_s: float = 60.0,
        threads: int = 4,
        journals: Mapping[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.views = dict(views)
        self.journals = dict(journals or {})  # aggregate -> its event journal's view
        self._opener = opener
        self.read_timeout_s = read_timeout_s
        self.max_read_timeout_s = max_read_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="foldline-gateway-db")
        self._target: Any = None
        self._opening = asyncio.Lock()
        self.error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._ensure_target()
        except HttpError as exc:
            if isinstance(exc.__cause__, PermanentError):  # a bad URL or driver: fail at start, loudly
                raise exc.__cause__ from None
            self.error = exc.message  # the database may come later: /readyz says so, reads answer 503
            log.warning("projection database not available", error=exc.message)

    def ready(self) -> bool:
        return self._target is not None

    async def close(self) -> None:
        target, self._target = self._target, None
        if target is not None:
            await self._call(target.close)
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except HttpError:
            raise
        except CommandError as exc:  # UnknownViewError, InvalidQueryError (UnknownColumnError), ...
            if exc.code == "unknown_view":
                raise NotFound(exc.message, code="unknown_view", details=exc.details) from exc
            raise BadRequest(exc.message, code=exc.code, details=exc.details) from exc
        except RetryableError as exc:
            log.warning("projection database unavailable", error=str(exc))
            raise Unavailable("the projection database is unavailable; retry later") from exc
        except FoldlineError as exc:  # the database refused this read (a value out of its range, ...)
            # Its text (SQL, driver detail) goes to the log only, never to the client.
            log.warning("projection database refused a read", error=f"{type(exc).__name__}: {exc}")
            raise BadRequest(
                "the projection database cannot answer this query (a value out of its range?)", code="invalid_query"
            ) from exc
        except (ValueError, OverflowError, UnicodeError) as exc:  # a driver refusing to bind a value
            log.warning("projection read refused a value", error=f"{type(exc).__name__}: {exc}")
            raise BadRequest("a query value cannot be used with this view", code="invalid_query") from exc

    async def _ensure_target(self) -> Any:
        if self._target is None:
            async with self._opening:
                if self._target is None:
                    self._target = await self._call(self._opener, self.database_url)
                    self.error = None
        return self._target

    # -- views -----------------------------------------------------------------------------------------
    def aggregate_of(self, view: str) -> str:
        return self.views.get(view, "")

    async def served(self) -> dict[str, str]:
        """The views served: the declared ones, or (none declared) those the database lists."""
        if self.views:
            return dict(self.views)
        target = await self._ensure_target()
        lister = getattr(target, "views", None)  # not part of ProjectionTarget: SqlStore has it
        names: list[str] = await self._call(lister) if callable(lister) else []
        return {name: "" for name in names}

    def check_view(self, view: str) -> None:
        if self.views and view not in self.views:
            raise NotFound(
                f"no view named {view!r}; known: {', '.join(sorted(self.views))}",
                code="unknown_view",
                details={"view": view, "known": sorted(self.views)},
            )

    def parse_query(self, view: str, params: Mapping[str, str], *, allow_wait: bool = True) -> RowQuery:
        """The query string of a rows read: column filters, paging, ordering, read-after-write."""
        self.check_view(view)
        for name, value in params.items():
            if "\x00" in name or "\x00" in value:  # no column, id or value holds one; PostgreSQL refuses it
                raise BadRequest(
                    f"query parameter {name!r}: a NUL character is not allowed",
                    code="invalid_query",
                    details={"field": name},
                )
        filters = {k: v for k, v in params.items() if k not in RESERVED}
        aggregate_id = params.get("aggregate_id") or None
        if aggregate_id is not None:
            filters["aggregate_id"] = aggregate_id  # every view has the column
        min_version = None
        if params.get("min_version") not in (None, ""):
            if not allow_wait:
                raise BadRequest("min_version is for reads, not streams", code="invalid_query")
            min_version = _int(params, "min_version", 0, 0, MAX_VERSION)
            if aggregate_id is None:
                raise BadRequest("min_version needs aggregate_id: whose version to wait for", code="invalid_query")
        timeout = self.read_timeout_s
        if params.get("timeout") not in (None, ""):
            try:
                timeout = float(params["timeout"])
            except ValueError:
                raise BadRequest(
                    f"timeout must be a number of seconds, got {params['timeout']!r}", code="invalid_query"
                ) from None
            if not 0 < timeout <= self.max_read_timeout_s:
                raise BadRequest(
                    f"timeout must be above 0 and at most {self.max_read_timeout_s} seconds", code="invalid_query"
                )
        return RowQuery(
            filters=filters,
            limit=_int(params, "limit", 100, 1, MAX_PAGE_ROWS),
            offset=_int(params, "offset", 0, 0, MAX_OFFSET),
            order_by=params.get("order_by") or None,
            aggregate_id=aggregate_id,
            min_version=min_version,
            timeout=timeout,
        )

    async def rows(self, view: str, query: RowQuery) -> list[dict[str, Any]]:
        target = await self._ensure_target()
        rows: list[dict[str, Any]] = await self._call(
            target.read_rows,
            view,
            filters=query.filters,
            limit=query.limit,
            offset=query.offset,
            order_by=query.order_by,
        )
        return rows

    # -- event journals ----------------------------------------------------------------------------------
    def journal_view(self, aggregate: str) -> str:
        view = self.journals.get(aggregate)
        if view is None:
            raise NotFound(f"this gateway serves no event journal of {aggregate!r}", code="no_journal")
        return view

    async def journal_version(self, aggregate: str, aggregate_id: str) -> int | None:
        """The last version of ``aggregate_id`` in the journal; None if it has no events there."""
        view = self.journal_view(aggregate)
        try:
            return await self.version(view, aggregate_id)
        except NotFound as exc:
            if exc.code != "unknown_view":
                raise
            raise NotFound(
                f"the projection database has no event journal of {aggregate!r} (view {view!r}): run "
                f"`foldline projector --journal <import path of the aggregate>` beside the other projectors",
                code="no_journal",
            ) from None

    async def journal_rows(self, aggregate: str, aggregate_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
        """Events of one aggregate in version order, a page at a time (the journal's rows, as stored)."""
        target = await self._ensure_target()
        rows: list[dict[str, Any]] = await self._call(
            target.read_rows,
            self.journal_view(aggregate),
            filters={"id": aggregate_id},
            limit=limit,
            offset=offset,
            order_by="version",
        )
        return rows

    async def skipped(self, **query: Any) -> list[dict[str, Any]]:
        """Records projectors passed over, newest first (``SqlStore.skipped_records``; empty for a
        target without a ``foldline_skipped`` table)."""
        target = await self._ensure_target()
        read = getattr(target, "skipped_records", None)  # not part of ProjectionTarget: SqlStore has it
        if read is None:
            return []
        rows: list[dict[str, Any]] = await self._call(read, **query)
        return rows

    async def journal_skips(self, aggregate: str, aggregate_id: str) -> list[dict[str, Any]]:
        """What the aggregate's journal passed over of this aggregate id (the causes of its gaps)."""
        return await self.skipped(views=[self.journal_view(aggregate)], aggregate_id=aggregate_id, limit=1000)

    async def journal_unattributed_skips(self, aggregate: str) -> int:
        """How many records the journal passed over without knowing whose they were (up to 1000)."""
        return len(await self.skipped(views=[self.journal_view(aggregate)], unattributed=True, limit=1000))

    async def version(self, view: str, aggregate_id: str) -> int | None:
        target = await self._ensure_target()
        version: int | None = await self._call(target.aggregate_version, view, aggregate_id)
        return version

    async def rows_at_version(self, view: str, query: RowQuery) -> tuple[int, list[dict[str, Any]]]:
        """Read-after-write: poll until the view reflects ``query.aggregate_id`` at ``query.min_version`` or
        later, then its rows, both read from one table in one session, so a revision switch in between can
        never answer rows below the version waited for; 504 after ``query.timeout``."""
        assert query.aggregate_id is not None and query.min_version is not None
        target = await self._ensure_target()
        read = getattr(target, "read_rows_at_version", None)
        if read is None:  # a target without the combined read: wait, then read (a switch may come between)
            version = await self.wait_for_version(view, query.aggregate_id, query.min_version, query.timeout)
            return version, await self.rows(view, query)
        found: list[tuple[int, list[dict[str, Any]]]] = []

        async def reached() -> int | None:
            version, rows = await self._call(
                read,
                view,
                query.aggregate_id,
                query.min_version,
                filters=query.filters,
                limit=query.limit,
                offset=query.offset,
                order_by=query.order_by,
            )
            if rows is not None:
                found.append((int(version), rows))
            return cast(int | None, version)

        await self._poll(view, query.aggregate_id, query.min_version, query.timeout, reached)
        return found[-1]

    async def wait_for_version(self, view: str, aggregate_id: str, min_version: int, timeout: float) -> int:
        """Poll until the view reflects ``aggregate_id`` at ``min_version`` or later; 504 after ``timeout``."""
        return await self._poll(view, aggregate_id, min_version, timeout, lambda: self.version(view, aggregate_id))

    async def _poll(
        self, view: str, aggregate_id: str, min_version: int, timeout: float, read: Callable[[], Awaitable[int | None]]
    ) -> int:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            version = await read()
            if version is not None and version >= min_version:
                return version
            left = deadline - time.monotonic()
            if left <= 0:
                raise GatewayTimeout(
                    f"view {view!r} has {aggregate_id!r} at version {version} after {timeout}s; "
                    f"waited for {min_version}",
                    details={
                        "view": view,
                        "aggregate_id": aggregate_id,
                        "min_version": min_version,
                        "version": version,
                    },
                )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
