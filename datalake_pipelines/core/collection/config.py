"""Data collections: what one sample ("data unit") of a dataset consists of, kept in ``config/collections.yaml``.

A collection belongs to a provider/dataset (task ``raw`` and variant = the collection name unless given) and
lists ``file_specifications``: ``{name, is_required, extensions, description}``. Each spec becomes one catalog
column: image specs (every extension an image format) are image columns, ``.json``-only specs hold the JSON
text, any other spec is a content-addressed file column. Collections may also be declared by hand under a
top-level ``collections:`` key of ``config/schema.yaml``; both files are read, names must be unique.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..catalog.parts import RESERVED_COLUMNS, file_fields, image_fields
from ..errors import DatalakeError, ValidationError
from ..ingest.file_accounting import IMAGE_EXTENSIONS
from ..lake.layout import RAW_TASK, InvalidNameError, LakeLayout, check_name
from ..lake.locks import exclusive_lock
from ..lake.schema import SchemaConfig, load_schema
from ..storage.files import utc_now_iso, write_bytes_atomic

COLLECTIONS_FILE = "collections.yaml"
UNIT_META_COLUMNS = ("origin_file_stem", "origin_file_extension", "file_size")
SPEC_KEYS = {"name", "is_required", "extensions", "description"}
COLLECTION_KEYS = {"id", "name", "description", "project", "file_specifications", "created_at"}
PROJECT_KEYS = {"provider", "dataset", "task", "variant", "meta"}


class CollectionError(DatalakeError):
    """A collection is malformed or unknown; the message names the file, key and reason."""


@dataclass(frozen=True)
class FileSpec:
    name: str
    is_required: bool
    extensions: tuple[str, ...]
    description: str = ""

    @property
    def kind(self) -> str:
        """``image``, ``json`` (kept as JSON text) or ``file`` (stored content-addressed)."""
        if all(e in IMAGE_EXTENSIONS for e in self.extensions):
            return "image"
        if all(e == ".json" for e in self.extensions):
            return "json"
        return "file"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "is_required": self.is_required,
            "extensions": list(self.extensions),
            "description": self.description,
        }


@dataclass
class Collection:
    id: str
    name: str
    provider: str
    dataset: str
    file_specifications: list[FileSpec]
    description: str = ""
    task: str = RAW_TASK
    variant: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now_iso)

    def __post_init__(self) -> None:
        self.variant = self.variant or self.name

    @property
    def data_type(self) -> str:
        return "raw" if self.task == RAW_TASK else "task"

    def spec(self, name: str) -> FileSpec:
        for spec in self.file_specifications:
            if spec.name == name:
                return spec
        raise CollectionError(f"collection {self.name!r} has no file specification {name!r}")

    def columns_of(self, kind: str) -> list[str]:
        return [s.name for s in self.file_specifications if s.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """The reference client's shape: id, name, description, file_specifications, project, created_at."""
        project: dict[str, Any] = {
            "provider": self.provider,
            "dataset": self.dataset,
            "task": self.task,
            "variant": self.variant,
        }
        if self.meta:
            project["meta"] = dict(self.meta)
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "file_specifications": [s.to_dict() for s in self.file_specifications],
            "project": project,
            "created_at": self.created_at,
        }


def normalize_extension(ext: Any) -> str:
    if not isinstance(ext, str) or not ext.strip(". ") or any(c in ext for c in "/\\ "):
        raise ValueError(f"{ext!r} is not a file extension like .jpg")
    return "." + ext.strip().lstrip(".").lower()


def parse_spec(doc: Any, where: str) -> FileSpec:
    if not isinstance(doc, dict):
        raise CollectionError(f"{where}: must be a mapping with name, is_required, extensions, description")
    unknown = set(doc) - SPEC_KEYS
    if unknown:
        raise CollectionError(f"{where}.{sorted(unknown)[0]}: unknown key (expected {', '.join(sorted(SPEC_KEYS))})")
    try:
        name = check_name("file specification", doc.get("name"))
    except InvalidNameError as exc:
        raise CollectionError(f"{where}.name: {exc}") from None
    required = doc.get("is_required", False)
    if not isinstance(required, bool):
        raise CollectionError(f"{where}.is_required: must be true or false, not {required!r}")
    exts = doc.get("extensions")
    if isinstance(exts, str):
        exts = [e for e in exts.split(",") if e.strip()]
    if not isinstance(exts, list) or not exts:
        raise CollectionError(f"{where}.extensions: must be a non-empty list of extensions like .jpg")
    try:
        extensions = tuple(dict.fromkeys(normalize_extension(e) for e in exts))
    except ValueError as exc:
        raise CollectionError(f"{where}.extensions: {exc}") from None
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise CollectionError(f"{where}.description: must be text")
    return FileSpec(name, required, extensions, description)


def check_columns(specs: list[FileSpec], meta: dict[str, Any], where: str) -> None:
    """Spec names become catalog columns: they must not clash with each other or with reserved names."""
    taken: dict[str, str] = {c: "a reserved catalog column" for c in RESERVED_COLUMNS}
    taken.update({c: "a data unit meta column" for c in UNIT_META_COLUMNS})
    taken.update({c: "a meta field of the collection" for c in meta})
    for spec in specs:
        fields = image_fields if spec.kind == "image" else file_fields if spec.kind == "file" else None
        names = [f.name for f in fields(spec.name)] if fields else [spec.name]
        for col in names:
            if col in taken:
                raise CollectionError(f"{where}: spec {spec.name!r} gives column {col!r}, which is {taken[col]}")
            taken[col] = f"a column of spec {spec.name!r}"
    if not any(s.is_required for s in specs):
        raise CollectionError(f"{where}: at least one file specification must be required")


def parse_collection(doc: Any, where: str) -> Collection:
    """One collection from its YAML mapping, or a :class:`CollectionError` naming the key and reason."""
    if not isinstance(doc, dict):
        raise CollectionError(f"{where}: must be a mapping")
    unknown = set(doc) - COLLECTION_KEYS
    if unknown:
        raise CollectionError(f"{where}.{sorted(unknown)[0]}: unknown key")
    project = doc.get("project")
    if not isinstance(project, dict):
        raise CollectionError(f"{where}.project: must be a mapping with provider and dataset")
    unknown = set(project) - PROJECT_KEYS
    if unknown:
        raise CollectionError(f"{where}.project.{sorted(unknown)[0]}: unknown key")
    values: dict[str, Any] = {}
    for key, kind, source in (
        ("name", "collection", doc),
        ("provider", "provider", project),
        ("dataset", "dataset", project),
        ("task", "task", project),
        ("variant", "variant", project),
    ):
        value = source.get(key)
        if value is None and key in ("task", "variant"):
            continue
        try:
            values[key] = check_name(kind, value)
        except InvalidNameError as exc:
            prefix = "" if source is doc else "project."
            raise CollectionError(f"{where}.{prefix}{key}: {exc}") from None
    meta = project.get("meta") or {}
    if not isinstance(meta, dict):
        raise CollectionError(f"{where}.project.meta: must be a mapping of field to value")
    specs_doc = doc.get("file_specifications")
    if not isinstance(specs_doc, list) or not specs_doc:
        raise CollectionError(f"{where}.file_specifications: must be a non-empty list")
    specs = [parse_spec(s, f"{where}.file_specifications[{i}]") for i, s in enumerate(specs_doc)]
    if len({s.name for s in specs}) != len(specs):
        raise CollectionError(f"{where}.file_specifications: a spec name is used twice")
    check_columns(specs, meta, f"{where}.file_specifications")
    cid = doc.get("id") if doc.get("id") is not None else values["name"]
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise CollectionError(f"{where}.description: must be text")
    return Collection(
        id=str(cid),
        description=description,
        file_specifications=specs,
        meta=dict(meta),
        created_at=str(doc.get("created_at") or ""),
        **values,
    )


def collections_path(layout: LakeLayout) -> Path:
    return layout.config_dir / COLLECTIONS_FILE


def _read_list(path: Path, key: str = "collections") -> list[Any]:
    if not path.exists():
        return []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CollectionError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectionError(f"{path}: cannot read: {exc}") from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get(key) or [], list):
        raise CollectionError(f"{path}: key {key!r}: must be a list of collections")
    return list(doc.get(key) or [])


def load_collections(layout: LakeLayout) -> list[Collection]:
    """Every collection of the lake (``collections.yaml`` then ``schema.yaml``'s ``collections:``)."""
    found: list[Collection] = []
    for path in (collections_path(layout), layout.schema_file):
        for i, doc in enumerate(_read_list(path)):
            found.append(parse_collection(doc, f"{path}: key 'collections[{i}]'"))
    seen: set[str] = set()
    for c in found:
        for key in {c.id, c.name}:
            if key in seen:
                raise CollectionError(f"collection id or name {key!r} is declared twice")
            seen.add(key)
    return found


def list_data_collection(layout: LakeLayout) -> list[dict[str, Any]]:
    return [c.to_dict() for c in load_collections(layout)]


def find_collection(layout: LakeLayout, id_or_name: str | int) -> Collection:
    key = str(id_or_name)
    collections = load_collections(layout)
    for c in collections:
        if c.id == key:
            return c
    for c in collections:
        if c.name == key:
            return c
    known = ", ".join(c.name for c in collections) or "(none)"
    raise CollectionError(f"unknown collection {key!r}; known collections: {known}")


def get_data_collection(layout: LakeLayout, id_or_name: str | int) -> dict[str, Any]:
    return find_collection(layout, id_or_name).to_dict()


def validate_against_schema(collection: Collection, schema: SchemaConfig) -> None:
    """Provider, task and meta of the collection must be known to ``schema.yaml``."""
    schema.check_provider(collection.provider)
    collection.meta = schema.validate_meta(collection.task, collection.meta)


def create_collection(
    layout: LakeLayout,
    name: str,
    provider: str,
    dataset: str,
    file_specifications: list[dict[str, Any] | FileSpec],
    description: str = "",
    task: str | None = None,
    variant: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Collection:
    """Declare a collection in ``config/collections.yaml`` (validated against the schema) and return it."""
    specs = [s.to_dict() if isinstance(s, FileSpec) else s for s in file_specifications]
    project: dict[str, Any] = {
        "provider": provider,
        "dataset": dataset,
        "task": task or RAW_TASK,
        "variant": variant or name,
    }
    if meta:
        project["meta"] = meta
    doc = {
        "id": uuid.uuid4().hex[:8],
        "name": name,
        "description": description,
        "project": project,
        "file_specifications": specs,
        "created_at": utc_now_iso(),
    }
    collection = parse_collection(doc, "new collection")
    validate_against_schema(collection, load_schema(layout))
    path = collections_path(layout)
    with exclusive_lock(layout.index_dir / "locks" / "collections.lock", timeout=60):
        if any(name in (c.name, c.id) for c in load_collections(layout)):
            raise ValidationError(f"collection {name!r} already exists")
        docs = _read_list(path) + [collection.to_dict()]
        text = yaml.safe_dump({"collections": docs}, sort_keys=False, allow_unicode=True)
        write_bytes_atomic(path, text.encode("utf-8"))
    return collection
