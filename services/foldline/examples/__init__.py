"""Example domains shipped with foldline."""
