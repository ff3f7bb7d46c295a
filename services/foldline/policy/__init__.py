"""The policy worker: reacts to source aggregates' events with commands for targets, exactly once."""

from foldline.policy.engine import PolicyWorker
from foldline.policy.wiring import build_policy_worker

__all__ = ["PolicyWorker", "build_policy_worker"]
