"""``release_heap`` hands the C heap's free pages back: what a restore frees in another thread's arena."""

from __future__ import annotations

import threading
from pathlib import Path

from foldline.store.restore import release_heap


def resident_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_free_pages_of_a_threads_arena_go_back_to_the_system():
    kept: list[bytes] = []

    def churn() -> None:  # ~100 MB of 1 KB blocks (malloc, not Python's small-object allocator), in this
        blocks = [bytes(1000 + i % 7) for i in range(100_000)]  # thread's own glibc arena
        kept.append(blocks[-1])  # the last block stays: glibc cannot just shrink the arena from its top
        del blocks

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    # Whether those pages were resident before (an arena reused from an earlier thread) or newly touched, the
    # ~100 MB now lie free and resident.
    churned = resident_anon_mb()
    release_heap()
    assert churned - resident_anon_mb() > 60, "the free pages stayed resident"
    assert len(kept) == 1
