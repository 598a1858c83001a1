"""Seeing the data: annotated thumbnails, the UI contact sheet, dataset profile plots and a static HTML gallery.

Imports no Dagster. ``annotations`` finds boxes/polygons/text/Q&A in a catalog row, ``thumbnails`` draws them on
small JPEGs and builds the Markdown contact sheet, ``profile`` computes and plots per-partition figures with
DuckDB and matplotlib, ``gallery`` writes the self-contained HTML page of ``datalake preview``.
"""
