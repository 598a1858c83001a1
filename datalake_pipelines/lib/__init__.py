"""Shared Dagster-layer code: partitions, tags and resources used by every ``defs/`` domain."""
