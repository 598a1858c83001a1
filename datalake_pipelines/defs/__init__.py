"""Dagster definitions, one package per domain (ingest, warehouse, exports)."""
