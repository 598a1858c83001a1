"""Ingest domain: the catalog partition asset, its checks, the staging sensor and the reaper."""
