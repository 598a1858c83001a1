"""Athena domain: Glue tables (one per task family) over an S3 lake's Parquet catalog."""
