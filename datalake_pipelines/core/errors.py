"""Errors of the domain core. Each carries a message a user can act on."""


class DatalakeError(Exception):
    """Base class of every error the lake raises on purpose."""


class SchemaConfigError(DatalakeError):
    """``config/schema.yaml`` itself is malformed."""


class ValidationError(DatalakeError):
    """Input (manifest, meta, rows, names) does not satisfy the schema."""


class BatchError(DatalakeError):
    """A staged batch cannot be processed; the batch goes to ``staging/failed``."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


class CodedError(DatalakeError, ValueError):
    """An expected refusal with a stable machine-readable ``code`` (shown as ``[code] message``)."""

    code = "error"

    def __init__(self, message: str):
        super().__init__(f"[{self.code}] {message}")
        self.message = message
