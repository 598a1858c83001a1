"""``datalake config provider|task create|list``: edit the lake's ``config/schema.yaml``.

On an S3 lake the schema is edited in a local copy (the lake's cache folder) and saved back to S3.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .common import ask, emit, layout_of, parse_allowed_values, s3_base, split_list, stdin_is_tty


def lake_schema(args: argparse.Namespace) -> tuple[Any, Callable[[], None], str]:
    """(schema, save, where) of the lake's ``config/schema.yaml``; on S3, a local copy saved back to S3."""
    from ..core.lake.s3 import S3Lake
    from ..core.lake.schema import load_schema

    base = s3_base(args)
    if base is None:
        schema = load_schema(layout_of(args))
        return schema, schema.save, str(schema.path)
    s3_lake = S3Lake(base)
    schema = load_schema(s3_lake.scratch_layout())
    local_copy = schema.path
    assert local_copy is not None  # a schema loaded from a layout knows its file

    def save() -> None:
        schema.save()
        s3_lake.put_schema(local_copy)

    return schema, save, s3_lake.uri_of("config/schema.yaml")


def cmd_provider_create(args: argparse.Namespace) -> int:
    schema, save, where = lake_schema(args)
    name = ask(args.name, "--name", "Provider name")
    schema.add_provider(name)
    save()
    emit(args, {"provider": name, "schema": where}, f"provider {name!r} created in {where}")
    return 0


def cmd_provider_list(args: argparse.Namespace) -> int:
    schema, _save, _where = lake_schema(args)
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
    from ..core.lake.schema import load_schema

    schema = load_schema(layout_of(args))
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
