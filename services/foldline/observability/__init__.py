"""Metrics, logs and the health endpoints every foldline process serves."""
