"""Commands for a person at a terminal (submit, get, tail, projection status); filled in by the read path."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the client subcommands to the ``foldline`` parser."""
    _ = (sub, argparse)
