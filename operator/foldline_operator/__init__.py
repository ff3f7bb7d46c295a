"""The foldline operator: reconciles EventSourcedAggregate and Projection resources (kopf)."""
