"""Long-running processes collect garbage less often and never walk what start-up made."""

from __future__ import annotations

import subprocess
import sys

from foldline.service import GC_YOUNG_THRESHOLD

# Run in a child: the collector's settings are the whole process's, and this one runs the other tests.
PROBE = """
import gc
from foldline.service import quiet_gc
before = gc.get_threshold()
quiet_gc()
after = gc.get_threshold()
print(before[0], after[0], after[1:] == before[1:], gc.get_freeze_count() > 1000)
"""


def test_quiet_gc_raises_the_young_threshold_and_freezes_start_up() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["700", str(GC_YOUNG_THRESHOLD), "True", "True"]
