"""One owner per partition store: an inter-process lock beside the store's directory.

The workers of a handler pod (``foldline.handler.workers``) share ``<state dir>/<agg>/partition-<n>``, so a
partition that moves to another worker of the same pod keeps its snapshots and restores only the tail.
LMDB and SQLite would let two processes open the same files, and two writers would break "the store is
never ahead of its changelog offset"; RocksDB would refuse the second one. So whoever opens a partition's
store first takes ``partition-<n>.lock`` (``flock``, beside the directory so wiping the store keeps it)
and holds it while the store is open. The kernel frees it when the process dies, so a killed worker never
leaves a partition locked. ``flock`` locks belong to the open file, so two threads of one process
contend too.

Hand-over: the worker that lost a partition closes its store in its revoke callback, and the group hands
the partition on after that; the new owner waits for the lock, bounded. A holder that never lets go (a hung
worker) does not block the new owner: after the bound it restores into a private directory, wiped when
closed, so the partition still runs correctly, only from a full restore.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from foldline.errors import StoreUnavailableError
from foldline.store.base import ClosingStore, StateStore, destroy_store, open_state_store

log = structlog.get_logger("foldline.store")

#: How long a new owner waits for the previous one to close the store before it falls back.
HANDOVER_WAIT_S = 30.0
_PRIVATE = ".private-"


class StoreLockedError(StoreUnavailableError):
    """Another process (or another opening in this one) holds the partition's store."""


class DirectoryLock:
    """An exclusive ``flock`` on one file; released by ``release`` or by the process's death."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file drops its flock


def lock_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".lock")


def try_lock(directory: Path) -> DirectoryLock | None:
    """The lock of ``directory``'s store, or None if someone holds it now."""
    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise StoreUnavailableError(f"cannot lock {path}: {exc}") from exc
    return DirectoryLock(fd, path)


def wait_for_lock(directory: Path, bound: float, sleep: Callable[[float], object] = time.sleep) -> DirectoryLock | None:
    """The lock, waiting up to ``bound`` seconds (polling with backoff); None if it stayed held."""
    deadline = time.monotonic() + bound
    pause = 0.02
    while True:
        lock = try_lock(directory)
        if lock is not None:
            return lock
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


class LockedStore(ClosingStore):
    """A store opened under its directory's lock: closing it closes the store, then lets go of the lock
    (and wipes the directory if it was a private fallback)."""

    def __init__(self, store: StateStore, lock: DirectoryLock, *, private: bool = False) -> None:
        super().__init__(store)
        self._lock = lock
        self.private = private

    def after_close(self) -> None:
        try:
            if self.private:
                destroy_store(self.path)
                with contextlib.suppress(OSError):
                    lock_path(self.path).unlink()
        finally:
            self._lock.release()


def _open_locked(kind: str, directory: Path, lock: DirectoryLock, *, private: bool = False) -> LockedStore:
    try:
        return LockedStore(open_state_store(kind, directory), lock, private=private)
    except BaseException:
        lock.release()
        raise


def open_shared_store(kind: str, directory: Path, *, wait: float = HANDOVER_WAIT_S) -> StateStore:
    """Open the store at ``directory`` as its only owner, waiting up to ``wait`` seconds for the previous
    owner to close it; past that, a fresh private store beside it (a full restore, but never blocked)."""
    started = time.monotonic()
    lock = wait_for_lock(directory, wait)
    if lock is not None:
        waited = time.monotonic() - started
        if waited >= 0.1:
            log.info("store handed over", path=str(directory), waited_s=round(waited, 3))
        return _open_locked(kind, directory, lock)
    _sweep_private(directory)
    private = directory.with_name(f"{directory.name}{_PRIVATE}{os.getpid()}-{time.monotonic_ns()}")
    private_lock = try_lock(private)
    if private_lock is None:  # a unique name: nobody else can hold it
        raise StoreLockedError(f"cannot lock the private store {private}")
    destroy_store(private)
    log.warning(
        "store still held by another process; restoring into a private directory",
        path=str(directory),
        private=str(private),
        waited_s=round(time.monotonic() - started, 3),
    )
    return _open_locked(kind, private, private_lock, private=True)


def open_if_free(kind: str, directory: Path) -> StateStore:
    """Open the store at ``directory`` only if nobody holds it (a standby keeper never waits for it)."""
    lock = try_lock(directory)
    if lock is None:
        raise StoreLockedError(f"the store at {directory} is held by another owner")
    return _open_locked(kind, directory, lock)


def _sweep_private(directory: Path) -> None:
    """Wipe private stores whose owner is gone (killed before it closed them): their lock is free."""
    for path in directory.parent.glob(f"{directory.name}{_PRIVATE}*"):
        if not path.is_dir():
            continue
        lock = try_lock(path)
        if lock is None:
            continue
        try:
            destroy_store(path)
            with contextlib.suppress(OSError):
                lock_path(path).unlink()
        finally:
            lock.release()
