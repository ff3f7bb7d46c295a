"""The contract both projection databases pass (SQLite and PostgreSQL), for any target to reuse.

Subclass ``ProjectionStoreContract`` in a test module, name the subclass ``Test...`` and give it
``open_store()``, a new connection to one empty database per test (an autouse fixture of the subclass
can create it); pytest then runs every case against that database::

    class TestMyDatabase(ProjectionStoreContract):
        @pytest.fixture(autouse=True)
        def _database(self, tmp_path):
            self.url = f"mydb:///{tmp_path}/views"

        def open_store(self) -> SqlStore:
            return MyStore(self.url)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from foldline.errors import AggregateDefinitionError, FoldlineError
from foldline.projection.api import Delete, Increment, Upsert
from foldline.projection.base import SqlStore
from foldline.projection.errors import (
    InvalidQueryError,
    ProjectionStoreError,
    RevisionRetiredError,
    UnknownColumnError,
    UnknownViewError,
)
from foldline.projection.schema import Column, TableDef
from foldline.projection.target import ProjectionTarget

COLUMNS = (
    Column("id", "text"),
    Column("customer", "text"),
    Column("amount", "numeric"),
    Column("n", "integer"),
    Column("due", "date"),
    Column("at", "timestamp"),
    Column("open", "boolean"),
)


def table(revision=1, columns=COLUMNS, view="things", key=("id",)):
    return TableDef.build(
        view=view,
        revision=revision,
        aggregate="agg",
        source="snapshots",
        topic="agg.snapshots",
        columns=columns,
        key=key,
        indexes=(("customer",),),
    )


def row(id_, **values):
    return Upsert({"id": id_, **values})


def write(store, t, changes, positions=None):
    with store.begin(t) as tx:
        tx.check_revision()
        tx.positions(list(positions or {}))
        tx.apply(changes)
        tx.save_versions({a: (v, None) for a, v, _ in changes})
        tx.save_positions(positions or {})


class ProjectionStoreContract:
    """The cases; ``open_store`` connects to this test's database, ``open_target`` reads it as the gateway does."""

    def open_store(self) -> SqlStore:
        raise NotImplementedError("a ProjectionStoreContract subclass connects to its database here")

    def open_target(self) -> ProjectionTarget:
        return self.open_store()

    @pytest.fixture
    def store(self) -> Iterator[SqlStore]:
        s = self.open_store()
        yield s
        s.close()

    def test_open_target_is_the_readers_interface(self, store):
        store.register(table())
        target = self.open_target()
        assert isinstance(target, ProjectionTarget)
        assert target.columns("things") == [
            "id",
            "customer",
            "amount",
            "n",
            "due",
            "at",
            "open",
            "aggregate_id",
            "aggregate_version",
        ]
        target.close()

    def test_upsert_and_json_ready_values(self, store):
        t = table()
        store.register(t)
        write(
            store,
            t,
            [
                (
                    "a1",
                    1,
                    row(
                        "x",
                        customer="ACME",
                        amount=Decimal("10.50"),
                        n=3,
                        due=date(2026, 12, 1),
                        at=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
                        open=True,
                    ),
                ),
                ("a2", 7, row("y")),
            ],
        )
        assert store.read_rows("things", filters={}) == [
            {
                "id": "x",
                "customer": "ACME",
                "amount": "10.50",
                "n": 3,
                "due": "2026-12-01",
                "at": "2026-01-02T03:04:05.006000+00:00",
                "open": True,
                "aggregate_id": "a1",
                "aggregate_version": 1,
            },
            {
                "id": "y",
                "customer": None,
                "amount": None,
                "n": None,
                "due": None,
                "at": None,
                "open": None,
                "aggregate_id": "a2",
                "aggregate_version": 7,
            },
        ]
        write(store, t, [("a1", 2, row("x", customer="Other", open=False))])
        [x] = store.read_rows("things", filters={"id": "x"})
        assert (x["customer"], x["open"], x["amount"], x["aggregate_version"]) == ("Other", False, None, 2)

    def test_version_never_moves_back(self, store):
        t = table()
        store.register(t)
        write(store, t, [("a1", 5, row("x", customer="v5"))])
        write(store, t, [("a1", 4, row("x", customer="v4")), ("a1", 3, Delete({"id": "x"}))])
        [x] = store.read_rows("things", filters={})
        assert (x["customer"], x["aggregate_version"]) == ("v5", 5)
        write(store, t, [("a1", 5, row("x", customer="v5 again"))])  # the same version may be written again
        assert store.read_rows("things", filters={})[0]["customer"] == "v5 again"
        # A row written by another aggregate is not compared with this one's versions.
        write(store, t, [("a2", 1, row("x", customer="taken over"))])
        assert store.read_rows("things", filters={})[0]["aggregate_id"] == "a2"

    def test_delete(self, store):
        t = table()
        store.register(t)
        write(store, t, [("a1", 1, row("x")), ("a1", 1, row("y")), ("a1", 2, Delete({"id": "x"}))])
        assert [r["id"] for r in store.read_rows("things", filters={})] == ["y"]
        write(store, t, [("a1", 2, Delete({"id": "missing"}))])  # deleting nothing is fine

    def test_stale_rows_of_an_aggregate_are_deleted(self, store):
        t = table()
        store.register(t)
        write(store, t, [("a1", 1, row("x")), ("a1", 1, row("y")), ("a2", 1, row("z"))])
        with store.begin(t) as tx:
            tx.apply([("a1", 2, row("y"))])
            tx.delete_stale({"a1": 2})
        assert [r["id"] for r in store.read_rows("things", filters={})] == ["y", "z"]

    def test_increment_is_exact(self, store):
        t = table(
            columns=(Column("customer", "text"), Column("total", "numeric"), Column("count", "integer")),
            view="totals",
            key=("customer",),
        )
        store.register(t)
        changes = [
            ("a1", 1, Increment({"customer": "c"}, {"total": Decimal("0.10"), "count": 1})),
            ("a2", 1, Increment({"customer": "c"}, {"total": Decimal("0.20"), "count": 1})),
            ("a1", 2, Increment({"customer": "c"}, {"total": Decimal("-0.05"), "count": 1})),
        ]
        write(store, t, changes)
        write(store, t, [("a3", 1, Increment({"customer": "d"}, {"total": Decimal("1e2"), "count": 1}))])
        got = {r["customer"]: (r["total"], r["count"]) for r in store.read_rows("totals", filters={})}
        assert Decimal(got["c"][0]) == Decimal("0.25") and got["c"][1] == 3
        assert Decimal(got["d"][0]) == 100

    def test_positions_commit_atomically_with_rows(self, store):
        t = table()
        store.register(t)
        write(store, t, [("a1", 1, row("x", customer="before"))], {0: 10})
        with pytest.raises(RuntimeError), store.begin(t) as tx:  # the process fails mid-batch
            tx.apply([("a1", 2, row("x", customer="after")), ("a2", 1, row("new"))])
            tx.save_positions({0: 20, 1: 5})
            raise RuntimeError("crash")
        with pytest.raises(FoldlineError), store.begin(t) as tx:  # the database refuses a statement mid-batch
            tx.save_positions({0: 30})
            tx.apply([("a1", 3, row("x", customer="after")), ("a2", 1, Upsert({"id": None}))])
        assert store.positions("things", 1, "agg.snapshots") == {0: 10}
        assert [(r["id"], r["customer"]) for r in store.read_rows("things", filters={})] == [("x", "before")]
        assert store.aggregate_version("things", "a1") == 1

    def test_positions_only_move_forward(self, store):
        t = table()
        store.register(t)
        write(store, t, [], {0: 10, 1: 3})
        write(store, t, [], {0: 7, 1: 4})
        assert store.positions("things", 1, "agg.snapshots") == {0: 10, 1: 4}

    def test_read_rows_filters_ordering_and_paging(self, store):
        t = table()
        store.register(t)
        changes = [
            (
                f"a{i}",
                i,
                row(
                    f"k{i:02}",
                    customer="ACME" if i % 2 else "Beta",
                    amount=Decimal(i) / 4,
                    n=i,
                    due=date(2026, 1, 1 + i),
                    open=i % 3 == 0,
                ),
            )
            for i in range(1, 21)
        ]
        write(store, t, changes)
        read = store.read_rows
        assert [r["id"] for r in read("things", filters={}, limit=3)] == ["k01", "k02", "k03"]
        assert [r["id"] for r in read("things", filters={}, limit=3, offset=18)] == ["k19", "k20"]
        assert len(read("things", filters={"customer": "ACME"}, limit=100)) == 10
        beta = read("things", filters={"customer": "Beta"}, order_by="-amount", limit=3)
        assert [r["n"] for r in beta] == [20, 18, 16]
        assert [r["n"] for r in read("things", filters={}, order_by="amount", limit=2, offset=1)] == [2, 3]
        assert [r["id"] for r in read("things", filters={"amount": "2.5"})] == ["k10"]
        assert [r["id"] for r in read("things", filters={"n": "7", "due": "2026-01-08"})] == ["k07"]
        assert len(read("things", filters={"open": "true"})) == 6
        assert [r["id"] for r in read("things", filters={"aggregate_id": "a4"})] == ["k04"]
        assert read("things", filters={"customer": "x' OR '1'='1"}) == []  # values are parameters, never SQL

    @pytest.mark.parametrize(
        "kwargs, error",
        [
            ({"filters": {"nope": "1"}}, UnknownColumnError),
            ({"filters": {'id" = id; DROP TABLE foldline_views; --': "1"}}, UnknownColumnError),
            ({"filters": {}, "order_by": "customer; DROP TABLE foldline_views"}, UnknownColumnError),
            ({"filters": {"n": "1; DROP TABLE x"}}, InvalidQueryError),
            ({"filters": {}, "limit": 0}, InvalidQueryError),
            ({"filters": {}, "limit": 10_001}, InvalidQueryError),
            ({"filters": {}, "offset": -1}, InvalidQueryError),
        ],
    )
    def test_bad_queries_are_clear_errors(self, store, kwargs, error):
        store.register(table())
        with pytest.raises(error):
            store.read_rows("things", **kwargs)
        assert store.columns("things")  # the catalog is intact

    @pytest.mark.parametrize("view", ["missing", 'things"; DROP TABLE foldline_views; --', "", "THINGS"])
    def test_unknown_views_are_clear_errors(self, store, view):
        with pytest.raises(UnknownViewError):
            store.read_rows(view, filters={})  # before any catalog exists
        store.register(table())
        for call in (
            lambda: store.read_rows(view, filters={}),
            lambda: store.columns(view),
            lambda: store.aggregate_version(view, "a1"),
        ):
            with pytest.raises(UnknownViewError):
                call()

    def test_aggregate_version(self, store):
        t = table()
        store.register(t)
        assert store.aggregate_version("things", "a1") is None
        write(store, t, [("a1", 4, row("x"))])
        assert store.aggregate_version("things", "a1") == 4

    def test_revision_tables_and_atomic_switch(self, store):
        v1, v2 = table(1), table(2, columns=(*COLUMNS, Column("extra", "text")))
        assert store.register(v1).state == "active"  # the first revision serves at once
        write(store, v1, [("a1", 1, row("x", customer="old"))], {0: 1})
        registered = store.register(v2)
        assert (registered.state, registered.active_revision) == ("building", 1)
        write(store, v2, [("a1", 1, Upsert({"id": "x", "customer": "new", "extra": "e"}))], {0: 1})
        target = self.open_target()
        assert "extra" not in target.columns("things")  # the old revision still serves
        assert target.read_rows("things", filters={})[0]["customer"] == "old"
        write(store, v1, [("a1", 2, row("x", customer="old, still updated"))], {0: 2})
        assert not store.switch(v2, {0: 2})  # not caught up: nothing changes
        assert target.read_rows("things", filters={})[0]["customer"] == "old, still updated"
        write(store, v2, [("a1", 2, Upsert({"id": "x", "customer": "new", "extra": "e2"}))], {0: 2})
        assert store.switch(v2, {0: 2})
        assert target.columns("things")[-3:] == ["extra", "aggregate_id", "aggregate_version"]
        assert target.read_rows("things", filters={})[0]["extra"] == "e2"
        info = store.view_info("things")
        assert info.active_revision == 2 and [(r.revision, r.state) for r in info.revisions] == [
            (1, "retired"),
            (2, "active"),
        ]
        assert info.revision(1).positions == {}  # the old revision's positions went with it
        with pytest.raises(RevisionRetiredError):
            write(store, v1, [("a1", 3, row("x"))], {0: 3})
        with pytest.raises(ProjectionStoreError), store.session(write=False) as s:  # its tables are gone
            s.execute('SELECT * FROM "things__r1"')
        with pytest.raises(RevisionRetiredError):
            store.register(v1)
        with pytest.raises(AggregateDefinitionError, match="another definition"):
            store.register(table(2))
        assert store.switch(v2, {0: 2})  # already active: idempotent
        target.close()

    def test_a_newer_revision_supersedes_one_still_building(self, store):
        v1, v2, v3 = table(1), table(2), table(3)
        for t in (v1, v2, v3):
            store.register(t)
        write(store, v3, [], {0: 5})
        assert store.switch(v3, {0: 5})
        with pytest.raises(RevisionRetiredError):
            write(store, v2, [], {0: 5})
        with pytest.raises(RevisionRetiredError):
            store.switch(v2, {0: 0})
        assert store.view_info("things").active_revision == 3

    def test_reads_never_fail_across_switches(self, store):
        target = self.open_target()
        store.register(table(1))
        write(store, table(1), [("a", 1, row("x"))])
        errors: list[BaseException] = []
        seen: set[int] = set()
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    rows = target.read_rows("things", filters={"id": "x"})
                    seen.add(len(rows[0]))
                except BaseException as exc:
                    errors.append(exc)
                    return

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for rev in range(2, 8):
                extra = tuple(Column(f"c{i}", "integer") for i in range(rev))
                t = table(rev, columns=(*COLUMNS, *extra))
                store.register(t)
                write(store, t, [("a", 1, row("x"))], {0: 1})
                assert store.switch(t, {0: 1})
                deadline = time.monotonic() + 5
                while len(COLUMNS) + rev + 2 not in seen and not errors and time.monotonic() < deadline:
                    time.sleep(0.005)  # let the reader see this revision before the next switch
        finally:
            stop.set()
            thread.join(30)
            target.close()
        assert not errors, errors
        assert seen >= {len(COLUMNS) + rev + 2 for rev in range(2, 8)}

    def test_concurrent_batches_of_the_same_records_apply_once(self):
        """Two writers (a zombie and its successor) apply the same events: each is counted once."""
        from dataclasses import dataclass

        from foldline.aggregate import AggregateSpec
        from foldline.examples.invoices import InvoiceCreated, Invoices
        from foldline.examples.invoices.views import CustomerTotals
        from foldline.projection import ProjectionSpec
        from foldline.projection.apply import Applier
        from foldline.records import EventRecord

        agg = AggregateSpec(Invoices())
        kind = agg.event_kind(InvoiceCreated("c", "EUR", date(2026, 1, 1), date(2026, 1, 2)))

        @dataclass
        class Msg:
            o: int

            def partition(self):
                return 0

            def offset(self):
                return self.o

            def value(self):
                ev = InvoiceCreated(f"c{self.o % 7}", "EUR", date(2026, 1, 1), date(2026, 1, 2))
                return EventRecord(f"i{self.o}", kind.name, 1, kind.encode(ev), "x").to_bytes()  # type: ignore[arg-type]

        spec = ProjectionSpec(CustomerTotals())
        stores = [self.open_store() for _ in range(2)]
        stores[0].register(spec.table)
        messages = [Msg(o) for o in range(300)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def writer(store):
            try:
                barrier.wait()
                for start in range(0, 300, 50):
                    batch = messages[start : start + 50]
                    Applier(spec).apply(store, batch, {0: start + 50})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s,)) for s in stores]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        try:
            assert not errors, errors
            got = stores[0].read_rows("customer-totals", filters={}, limit=100)
            assert sum(r["invoices"] for r in got) == 300 and sum(r["events"] for r in got) == 300
        finally:
            for s in stores:
                s.close()
