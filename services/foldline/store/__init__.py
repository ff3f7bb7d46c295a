"""Local state stores: the latest snapshot of each aggregate of one partition, plus the changelog offset."""

from foldline.store.base import StateStore, open_state_store, store_kinds

__all__ = ["StateStore", "open_state_store", "store_kinds"]
