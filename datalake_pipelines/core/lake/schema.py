"""The lake's ``config/schema.yaml``: providers and tasks, loaded with validation and edited safely."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SchemaConfigError, ValidationError
from ..preview.annotations import PreviewMapping
from ..storage.files import write_bytes_atomic
from .layout import RAW_TASK, InvalidNameError, LakeLayout, check_name

PROJECT_SCHEMA = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"
MINIMAL_SCHEMA: dict[str, Any] = {"providers": [], "tasks": {}}


@dataclass
class TaskSpec:
    name: str
    required_fields: list[str] = field(default_factory=list)
    allowed_values: dict[str, list[str]] = field(default_factory=dict)
    preview: dict[str, str] = field(default_factory=dict)  # optional, see core/preview/annotations.py

    def validate_meta(self, meta: dict[str, Any] | None) -> dict[str, Any]:
        """Return ``meta`` if it has every required field with an allowed value, else raise."""
        meta = dict(meta or {})
        problems = []
        for name in self.required_fields:
            if name not in meta or meta[name] in (None, ""):
                problems.append(f"missing required field {name!r}")
        for name, allowed in self.allowed_values.items():
            if name in meta and meta[name] not in allowed:
                problems.append(f"{name}={meta[name]!r} is not one of {allowed}")
        if problems:
            raise ValidationError(f"meta for task {self.name!r} is invalid: " + "; ".join(problems))
        return meta

    def as_yaml(self) -> dict[str, Any]:
        doc = {"required_fields": list(self.required_fields), "allowed_values": dict(self.allowed_values)}
        return {**doc, "preview": dict(self.preview)} if self.preview else doc


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class SchemaConfig:
    providers: list[str]
    tasks: dict[str, TaskSpec]
    path: Path | None = None

    # loading -----------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> SchemaConfig:
        try:
            # libyaml's safe loader where PyYAML has it: the pure-Python one took ~20 ms a load, once per batch
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
        except FileNotFoundError as exc:
            raise SchemaConfigError(f"{path}: schema file not found") from exc
        except yaml.YAMLError as exc:
            raise SchemaConfigError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(doc, path)

    @classmethod
    def from_dict(cls, doc: Any, path: Path | None = None) -> SchemaConfig:
        where = str(path) if path else "<schema>"

        def fail(key: str, reason: str) -> SchemaConfigError:
            return SchemaConfigError(f"{where}: key {key!r}: {reason}")

        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise fail("<root>", "the file must be a mapping with 'providers' and 'tasks'")
        unknown = set(doc) - {"providers", "tasks", "collections"}
        if unknown:
            raise fail(sorted(unknown)[0], "unknown top-level key (expected providers, tasks, collections)")
        providers = doc.get("providers") or []
        if not isinstance(providers, list):
            raise fail("providers", "must be a list of names")
        for i, name in enumerate(providers):
            try:
                check_name("provider", name)
            except InvalidNameError as exc:
                raise fail(f"providers[{i}]", str(exc)) from None
        if len(set(providers)) != len(providers):
            raise fail("providers", "lists a provider twice")
        tasks_doc = doc.get("tasks") or {}
        if not isinstance(tasks_doc, dict):
            raise fail("tasks", "must be a mapping of task name to its spec")
        tasks: dict[str, TaskSpec] = {}
        for name, spec in tasks_doc.items():
            key = f"tasks.{name}"
            try:
                check_name("task", name)
            except InvalidNameError as exc:
                raise fail(key, str(exc)) from None
            if name == RAW_TASK:
                raise fail(key, "'raw' is reserved for raw data and cannot be declared as a task")
            spec = spec or {}
            if not isinstance(spec, dict):
                raise fail(key, "must be a mapping with required_fields and allowed_values")
            extra = set(spec) - {"required_fields", "allowed_values", "description", "preview"}
            if extra:
                raise fail(
                    f"{key}.{sorted(extra)[0]}", "unknown key (expected required_fields, allowed_values, preview)"
                )
            try:
                preview = PreviewMapping.from_config(spec.get("preview"), f"{key}.preview").as_yaml()
            except ValueError as exc:
                raise SchemaConfigError(f"{where}: key {exc}") from None
            required = spec.get("required_fields") or []
            if not isinstance(required, list) or not all(isinstance(f, str) and f for f in required):
                raise fail(f"{key}.required_fields", "must be a list of field names")
            allowed = spec.get("allowed_values") or {}
            if not isinstance(allowed, dict):
                raise fail(f"{key}.allowed_values", "must be a mapping of field to a list of values")
            for fname, values in allowed.items():
                if not isinstance(values, list) or not values:
                    raise fail(f"{key}.allowed_values.{fname}", "must be a non-empty list of values")
            tasks[name] = TaskSpec(name, list(required), {k: list(v) for k, v in allowed.items()}, preview)
        return cls(list(providers), tasks, path)

    def as_yaml_dict(self) -> dict[str, Any]:
        return {"providers": list(self.providers), "tasks": {n: t.as_yaml() for n, t in self.tasks.items()}}

    def save(self, path: Path | None = None) -> None:
        target = path or self.path
        if target is None:
            raise SchemaConfigError("no path to save the schema to")
        existing: dict[str, Any] = {}
        if target.exists():
            existing = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
        doc = self.as_yaml_dict()
        if isinstance(existing, dict) and "collections" in existing:
            doc["collections"] = existing["collections"]
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        write_bytes_atomic(target, text.encode("utf-8"))

    # validation ----------------------------------------------------------------
    def check_provider(self, provider: str) -> str:
        check_name("provider", provider)
        if provider not in self.providers:
            raise ValidationError(
                f"unknown provider {provider!r}; known providers: {', '.join(self.providers) or '(none)'}. "
                "Add it with `datalake config provider create --name ...`"
            )
        return provider

    def task_spec(self, task: str) -> TaskSpec:
        check_name("task", task)
        if task not in self.tasks:
            raise ValidationError(
                f"unknown task {task!r}; known tasks: {', '.join(sorted(self.tasks)) or '(none)'}. "
                "Add it with `datalake config task create --name ...`"
            )
        return self.tasks[task]

    def validate_meta(self, task: str, meta: dict[str, Any] | None) -> dict[str, Any]:
        if task == RAW_TASK:
            return dict(meta or {})
        return self.task_spec(task).validate_meta(meta)

    # editing -------------------------------------------------------------------
    def add_provider(self, name: str) -> None:
        check_name("provider", name)
        if name in self.providers:
            raise ValidationError(f"provider {name!r} already exists")
        self.providers.append(name)

    def add_task(self, name: str, required_fields: list[str], allowed_values: dict[str, list[str]]) -> TaskSpec:
        check_name("task", name)
        if name == RAW_TASK:
            raise ValidationError("'raw' is reserved for raw data")
        if name in self.tasks:
            raise ValidationError(f"task {name!r} already exists")
        spec = self.from_dict(
            {"tasks": {name: {"required_fields": required_fields, "allowed_values": allowed_values}}}
        ).tasks[name]
        self.tasks[name] = spec
        return spec


def schema_path(layout: LakeLayout) -> Path:
    """The lake's schema file, seeded from the project's ``config/schema.yaml`` on first use."""
    path = layout.schema_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if PROJECT_SCHEMA.exists():
            shutil.copyfile(PROJECT_SCHEMA, path)
        else:
            write_bytes_atomic(path, yaml.safe_dump(MINIMAL_SCHEMA).encode("utf-8"))
    return path


def load_schema(layout: LakeLayout) -> SchemaConfig:
    return SchemaConfig.load(schema_path(layout))
