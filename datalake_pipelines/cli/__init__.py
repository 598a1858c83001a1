"""The ``datalake`` command line: one module per command group, shared helpers in :mod:`.common`."""

from .main import main

__all__ = ["main"]
