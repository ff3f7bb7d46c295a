"""foldline's benchmarks: ``python -m bench`` (``make bench``) prints figures and never fails on a time."""
