"""Lifecycle jobs: delete rows from the catalog and collect unreferenced assets (core/lifecycle/)."""
