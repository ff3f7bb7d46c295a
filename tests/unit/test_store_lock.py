"""One owner per partition store (foldline.store.lock): the workers of a pod share the directories, a new
owner waits for the previous one to close the store, a dead holder frees it, a hung one is bypassed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from foldline.store.base import store_kinds
from foldline.store.lock import StoreLockedError, open_if_free, open_shared_store, try_lock, wait_for_lock
from tests.kafka_support import REPO

KINDS = store_kinds()


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_owner_waits_for_the_previous_one_and_gets_its_snapshots(kind: str, tmp_path: Path) -> None:
    directory = tmp_path / "invoices" / "partition-0"
    first = open_shared_store(kind, directory)
    first.write([(b"a", b"1")], 5)
    closed = threading.Event()
    seen: dict[str, object] = {}

    def take_over() -> None:
        store = open_shared_store(kind, directory, wait=30.0)
        seen["closed before"] = closed.is_set()  # it may only get the store once the first owner let go
        seen["path"], seen["offset"], seen["a"] = store.path, store.changelog_offset(), store.get(b"a")
        store.close()

    with capture_logs() as logs:
        taker = threading.Thread(target=take_over)
        taker.start()
        time.sleep(0.3)  # the taker is polling for the lock now
        assert taker.is_alive()
        closed.set()
        first.close()
        taker.join(30)
    assert seen == {"closed before": True, "path": directory, "offset": 5, "a": b"1"}
    assert [e["event"] for e in logs] == ["store handed over"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_holders_lock_is_freed_by_the_kernel(kind: str, tmp_path: Path) -> None:
    directory = tmp_path / "invoices" / "partition-3"
    script = (
        "import sys\nfrom pathlib import Path\nfrom foldline.store.lock import open_shared_store\n"
        f"s = open_shared_store({kind!r}, Path({str(directory)!r}))\n"
        # release_memory flushes RocksDB's memtable (no WAL): what a killed process wrote survives it.
        "s.write([(b'k', b'v')], 9)\ns.release_memory()\nprint('held', flush=True)\nsys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"held\n"
            assert try_lock(directory) is None
            with pytest.raises(StoreLockedError):
                open_if_free(kind, directory)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    store = open_shared_store(kind, directory, wait=10.0)  # the killed worker never closed it
    try:
        assert (store.path, store.changelog_offset(), store.get(b"k")) == (directory, 9, b"v")
    finally:
        store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_holder_that_never_lets_go_sends_the_new_owner_to_a_private_store(kind: str, tmp_path: Path) -> None:
    directory = tmp_path / "invoices" / "partition-1"
    hung = open_shared_store(kind, directory)
    hung.write([(b"a", b"1")], 7)
    with capture_logs() as logs:
        fallback = open_shared_store(kind, directory, wait=0.2)
    assert [e["private"] for e in logs if "private directory" in e["event"]] == [str(fallback.path)]
    try:
        assert fallback.path != directory and fallback.path.parent == directory.parent
        assert fallback.changelog_offset() == 0  # a fresh store: a full restore, but never blocked
        fallback.write([(b"b", b"2")], 3)
        assert hung.get(b"b") is None and hung.changelog_offset() == 7
    finally:
        fallback.close()
    assert not fallback.path.exists()  # private: wiped when closed
    hung.close()
    again = open_shared_store(kind, directory, wait=0.2)
    try:
        assert (again.path, again.changelog_offset()) == (directory, 7)
    finally:
        again.close()


def test_private_stores_of_dead_owners_are_swept(tmp_path: Path) -> None:
    directory = tmp_path / "invoices" / "partition-2"
    stale = directory.with_name("partition-2.private-1-1")
    (stale / "rocksdb").mkdir(parents=True)
    holder = try_lock(directory)
    assert holder is not None
    try:
        with capture_logs():
            live = open_shared_store("sqlite", directory, wait=0.0)
            later = open_shared_store("sqlite", directory, wait=0.0)
        try:
            later.close()
            assert not stale.exists()  # nobody held its lock: its owner is gone
            assert live.path.exists()  # held: never swept
        finally:
            live.close()
    finally:
        holder.release()


def test_the_lock_is_exclusive_between_openings_of_one_process(tmp_path: Path) -> None:
    directory = tmp_path / "partition-0"
    first = try_lock(directory)
    assert first is not None
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    assert wait_for_lock(directory, 0.5, sleep=sleep) is None
    assert len(sleeps) >= 2 and sleeps[1] > sleeps[0]  # polls with a growing pause
    first.release()
    second = wait_for_lock(directory, 0.5)
    assert second is not None
    second.release()
