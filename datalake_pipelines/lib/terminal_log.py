"""A Dagster logger writing one line per record to stderr: how ``datalake process start`` shows its runs.

Dagster's default console logger prints a failed step's stack trace (some 25 lines of Dagster frames), and the
same error again with the run's failure, for a batch that failed as expected. This logger prints each record as
``HH:MM:SS LEVEL [step_key] message``: the message's first line only and, for an event holding an error, the
error's class and first message line (a run failed by a step's failure does not repeat the step's error). The
full record (every event, every trace) stays in the run's event log for the Dagster UI, whatever the logger.

The code location registers it beside Dagster's ``console`` logger (``definitions.py``), and Dagster instantiates
only the loggers a run's config names, falling back to its default console logger when it names none: a run
launched by the UI or the daemon logs as before; a run given :data:`ONE_LINE_RUN` logs in one line per record.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg

ONE_LINE = "one_line"
# The run config naming only this logger (no other logger of the job is instantiated then).
ONE_LINE_RUN: Mapping[str, Any] = {"loggers": {ONE_LINE: {"config": {"log_level": "INFO"}}}}
_LEVELS = {name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")}


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped, cut before a ``Stack Trace:`` ("" for blank text)."""
    text = text.split("Stack Trace:", 1)[0]
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def error_line(error: Any) -> str:
    """One line for a Dagster ``SerializableErrorInfo``: the class and first message line of the exception
    (``"ClientError: An error occurred (501) ..."``), past Dagster's own wrappers (``DagsterExecution...Error``
    whose cause is the user's exception)."""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    name = error.cls_name or "Error"
    message = first_line(error.message or "")
    head, _, rest = message.partition(": ")
    # Dagster's message starts with the exception's qualified name ("botocore.exceptions.ClientError: ...")
    return f"{name}: {rest if head.rsplit('.', 1)[-1] == name else message}"


def record_line(record: logging.LogRecord) -> str:
    """The one line for a record a Dagster log manager passed on (its ``dagster_meta``: step key, original
    message, event). A run's failure caused by a step's leaves the error out: the step's line showed it."""
    meta = getattr(record, "dagster_meta", None) or {}
    text = first_line(meta.get("orig_message") or record.getMessage())
    event = meta.get("dagster_event")
    data = event.event_specific_data if event is not None else None
    error = getattr(data, "error", None)
    if error is not None and getattr(data, "first_step_failure_event", None) is None:
        text = f"{text} {error_line(error)}" if text else error_line(error)
    stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
    step = meta.get("step_key")
    return " ".join(part for part in (stamp, record.levelname, step, text) if part)


class OneLineHandler(logging.Handler):
    """Writes :func:`record_line` to the ``sys.stderr`` of the moment (a test's capture, the terminal)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(record_line(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@dg.logger(
    config_schema={
        "log_level": dg.Field(
            str, is_required=False, default_value="INFO", description="The threshold: DEBUG, INFO, WARNING, ERROR."
        )
    },
    description="One line per record on stderr, no stack traces (the event log keeps them); "
    "what `datalake process start` shows.",
)
def one_line_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A logger writing :func:`record_line` to stderr; raises ``ValueError`` for an unknown ``log_level``."""
    name = str(init_context.logger_config["log_level"]).upper()
    if name not in _LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(_LEVELS)}, not {name!r}")
    logger = logging.Logger(f"datalake.{ONE_LINE}", _LEVELS[name])
    logger.addHandler(OneLineHandler(_LEVELS[name]))
    return logger


# Jobs without loggers of their own get these (``dg.Definitions(loggers=...)``): Dagster's console logger stays
# there by name, so a run config naming it (the UI's launchpad, runner.QUIET_RUN) is still valid.
LOGGERS: Mapping[str, dg.LoggerDefinition] = {**dg.default_loggers(), ONE_LINE: one_line_logger}
