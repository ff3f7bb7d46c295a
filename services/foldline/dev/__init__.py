"""Real services for development and tests: a single-node Kafka broker and a PostgreSQL server."""
