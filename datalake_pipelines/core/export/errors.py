"""``ExportError`` and its stable codes (shared by export tasks and destinations)."""

from __future__ import annotations

from ..errors import DatalakeError

INVALID_FILTER_FIELD = "INVALID_FILTER_FIELD"
EMPTY_FILTER_VALUES = "EMPTY_FILTER_VALUES"
INVALID_FILTER_TYPE = "INVALID_FILTER_TYPE"
INVALID_FILE_TYPE = "INVALID_FILE_TYPE"
INVALID_OPTION = "INVALID_OPTION"
UNKNOWN_PARTITION = "UNKNOWN_PARTITION"
UNWRITABLE_DESTINATION = "UNWRITABLE_DESTINATION"
EXPORT_FAILED = "EXPORT_FAILED"
AS_OF_UNAVAILABLE = "AS_OF_UNAVAILABLE"  # as_of not a timestamp / version id, or older than the retention holds


class ExportError(DatalakeError):
    """An export that cannot run or did not finish; ``code`` is one of the stable codes above."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
