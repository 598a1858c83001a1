"""Markdown that user data cannot turn into markup: the escape of the contact sheet's captions.

The Dagster UI renders metadata Markdown (images included: ``![t](http://...)`` in a caption would load a
remote image on every page view), so user text that goes into Markdown is escaped first. (The ``preview`` of
the first rows is a ``MetadataValue.table`` instead, whose cells the UI shows as text: ``core/preview/columns.py``.)
"""

from __future__ import annotations


def md_escape(text: str) -> str:
    """Text safe in a Markdown table cell: no pipes, no markup (links, images, emphasis, code), no raw HTML."""
    for ch in "\\|*_`[]<>#!":
        text = text.replace(ch, "\\" + ch)
    return text
