"""``datalake config provider|task create|list``: edit the lake's ``config/schema.yaml``.

On an S3 lake the schema is edited in a local copy (the lake's cache folder) and saved back to S3.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

from .common import ask, emit, lake_of, parse_allowed_values, split_list, stdin_is_tty


def lake_schema(args: argparse.Namespace) -> tuple[Any, Callable[[], None], str]:
    """(schema, save, where) of the lake's ``config/schema.yaml``, folder or S3 (saved back by ``save()``)."""
    lake = lake_of(args)
    editing = contextlib.ExitStack()
    schema = editing.enter_context(lake.edit_schema())
    return schema, editing.close, lake.schema_uri


def cmd_provider_create(args: argparse.Namespace) -> int:
    schema, save, where = lake_schema(args)
    name = ask(args.name, "--name", "Provider name")
    schema.add_provider(name)
    save()
    emit(args, {"provider": name, "schema": where}, f"provider {name!r} created in {where}")
    return 0


def cmd_provider_list(args: argparse.Namespace) -> int:
    schema = lake_of(args).schema()
    emit(args, list(schema.providers), lambda: "\n".join(schema.providers) or "(no providers)")
    return 0


def cmd_task_create(args: argparse.Namespace) -> int:
    schema, save, where = lake_schema(args)
    name = ask(args.name, "--name", "Task name")
    required_text = ask(
        args.required_fields,
        "--required-fields",
        "Required fields (comma separated, e.g. lang,src)",
        allow_empty=True,
    )
    allowed_items = list(args.allowed_values or [])
    if not allowed_items and args.required_fields is None and stdin_is_tty():
        answer = ask(
            None,
            "--allowed-values",
            "Allowed values (e.g. lang=ko,en,ja,multi / src=real,synthetic)",
            allow_empty=True,
        )
        allowed_items = [answer] if answer else []
    spec = schema.add_task(name, split_list(required_text), parse_allowed_values(allowed_items))
    save()
    emit(
        args,
        {"task": name, **spec.as_yaml(), "schema": where},
        f"task {name!r} created in {where}: required {spec.required_fields}, allowed {spec.allowed_values}",
    )
    return 0


def cmd_task_list(args: argparse.Namespace) -> int:
    schema = lake_of(args).schema()
    doc = {name: spec.as_yaml() for name, spec in schema.tasks.items()}

    def text() -> str:
        lines = []
        for name, spec in schema.tasks.items():
            allowed = "; ".join(f"{k}={','.join(v)}" for k, v in spec.allowed_values.items())
            lines.append(f"{name}: required [{', '.join(spec.required_fields)}] allowed [{allowed}]")
        return "\n".join(lines) or "(no tasks)"

    emit(args, doc, text)
    return 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``config provider create|list`` and ``config task create|list``."""
    config = subparsers.add_parser("config", help="edit config/schema.yaml").add_subparsers(dest="what", required=True)
    provider = config.add_parser("provider", help="providers").add_subparsers(dest="action", required=True)
    p = provider.add_parser("create", parents=parents, help="add a provider")
    p.add_argument("--name")
    p.set_defaults(func=cmd_provider_create)
    p = provider.add_parser("list", parents=parents, help="list providers")
    p.set_defaults(func=cmd_provider_list)
    task = config.add_parser("task", help="tasks").add_subparsers(dest="action", required=True)
    p = task.add_parser("create", parents=parents, help="add a task")
    p.add_argument("--name")
    p.add_argument("--required-fields", help="comma separated, e.g. lang,src ('' for none)")
    p.add_argument("--allowed-values", action="append", help="field=v1,v2 (repeatable)")
    p.set_defaults(func=cmd_task_create)
    p = task.add_parser("list", parents=parents, help="list tasks")
    p.set_defaults(func=cmd_task_list)
