"""Warehouse domain: the DuckDB catalog database, refreshed after every catalog materialization."""
