"""The ``datalake`` command line: a thin shell over the domain core and :class:`DatalakeClient`.

This module only builds the parser from the command groups (one module each, with its ``add_parser``) and
dispatches. Every command takes flags (for scripts); when a needed flag is missing and stdin is a terminal the
command prompts for it, and when stdin is not a terminal it exits with code 2 naming the missing flag.
Expected errors (``DatalakeError`` and invalid names) print ``error: <message>`` and exit with code 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from ..core.errors import DatalakeError
from ..core.lake.layout import InvalidNameError
from ..settings import DEFAULT_BASE_DIRNAME
from ..settings import load as load_settings
from . import (
    catalog,
    collection,
    config,
    download,
    export,
    ingest_url,
    lifecycle,
    lineage,
    neardup,
    process,
    profile,
    upload,
)
from .common import BASE_HELP, CliError, UsageError, global_options

# In the order of ``datalake --help``.
GROUPS = (
    config,
    upload,
    process,
    collection,
    export,
    catalog,
    ingest_url,
    download,
    profile,
    neardup,
    lifecycle,
    lineage,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``datalake`` parser: global ``--base-path``/``--json``, then one sub-command group per module."""
    parser = argparse.ArgumentParser(prog="datalake", description="Multimodal data lake: config, upload, process.")
    parser.add_argument("--base-path", default=load_settings().base_path or DEFAULT_BASE_DIRNAME, help=BASE_HELP)
    parser.add_argument("--json", action="store_true", default=False, help="machine-readable output")
    subparsers = parser.add_subparsers(dest="command", required=True)
    parents = [global_options()]
    for group in GROUPS:
        group.add_parser(subparsers, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``datalake`` command; returns its exit code (0 ok, 1 refused or failed, 2 usage, 130 interrupted,
    141 stdout closed early: 128 + SIGPIPE, as a shell reports a command a pipe cut short)."""
    try:
        parser = build_parser()  # reads the settings: a bad DATALAKE_* value stops here, named
    except DatalakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors (2) and --help (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit (an "Exception ignored" message)
        return code
    except BrokenPipeError:  # stdout closed early (`datalake ... | head -1`): stop quietly, as a SIGPIPE would
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DatalakeError, InvalidNameError, CliError, ValueError) as exc:  # ValueError: bad selection/query
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
        print(f"error: S3: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:  # e.g. NoSuchBucket, AccessDenied
        error = exc.response.get("Error", {})
        print(f"error: S3 {exc.operation_name}: {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the flush at interpreter exit finds no closed pipe (see the Python docs on
    SIGPIPE); stdout without a file descriptor (captured in tests) is left alone."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
