"""``python -m bench [handler|projection|gateway|throughput|compare|failover ...]``: run benchmarks.

Without names: handler (throughput, latency, restore, memory), projection and gateway. ``throughput`` is
the handler's throughput alone; ``compare`` the published comparison with Quix Streams (``make bench-compare``);
``failover`` the handler failover times with 1,000,000 aggregates (with and without a standby, state kept or wiped).

Each benchmark uses the real broker (and PostgreSQL for projections) through the project's own scripts,
and prints one figure per line. None of them fails on a time.
"""

from __future__ import annotations

import importlib
import sys

SUITES = ("handler", "projection", "gateway")
EXTRA = ("throughput", "compare", "failover")


def main(argv: list[str]) -> int:
    chosen = argv or list(SUITES)
    unknown = [name for name in chosen if name not in SUITES + EXTRA]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SUITES + EXTRA)}", file=sys.stderr)
        return 2
    for name in chosen:
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
