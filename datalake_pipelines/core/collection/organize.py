"""Organizing a folder of loose files into data units of a collection, and validating every unit.

One ``os.scandir`` walk (:mod:`.reading`); each file is stat-ed once (JSON files are not stat-ed at all: they
are read to be validated, and the read gives their size). Files are grouped into units by stem (default), by a
regex with a named group ``unit`` (optionally ``spec``), or by sub-folder per spec (``image/x.jpg`` +
``annotation/x.json``).
"""

from __future__ import annotations

import gc
import os
import re
from pathlib import Path
from stat import S_ISREG

from .config import Collection, CollectionError
from .reading import EUID, check_json, nfc, read_text, readable, split_ext, walk_files
from .units import DataUnit, Organized, UnitFile

GROUP_BY = ("stem", "regex", "folder")


def _extension_map(collection: Collection) -> tuple[dict[str, str], tuple[str, ...]]:
    by_ext: dict[str, str] = {}
    for spec in collection.file_specifications:
        for ext in spec.extensions:
            if ext in by_ext:
                raise CollectionError(
                    f"specs {by_ext[ext]!r} and {spec.name!r} both accept {ext}; group by folder or by a regex "
                    "with a 'spec' group to tell them apart"
                )
            by_ext[ext] = spec.name
    multi = tuple(sorted((e for e in by_ext if e.count(".") > 1), key=len, reverse=True))
    return by_ext, multi


def organize(
    folder: str | os.PathLike,
    collection: Collection,
    group_by: str = "stem",
    pattern: str | None = None,
    skip: list[str | os.PathLike] | None = None,
) -> Organized:
    """Group the files of ``folder`` into units of ``collection`` and validate each unit.

    ``skip`` lists folders never to enter (the upload passes the lake's own base path).
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise CollectionError(f"{folder} is not a folder")
    if group_by not in GROUP_BY:
        raise CollectionError(f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}")
    regex = _compile(pattern) if group_by == "regex" else None
    specs = {s.name: s for s in collection.file_specifications}
    by_ext: dict[str, str] = {}
    multi: tuple[str, ...] = tuple(e for s in specs.values() for e in s.extensions if e.count(".") > 1)
    if group_by == "stem" or (regex is not None and "spec" not in regex.groupindex):
        by_ext, multi = _extension_map(collection)
    json_specs = {name for name, s in specs.items() if s.kind == "json"}
    fast = group_by == "stem" and not multi
    check_perm = EUID != 0
    units: dict[str, DataUnit] = {}
    loose: list[str] = []
    entries = walk_files(folder, frozenset(str(Path(p).resolve()) for p in skip or ()))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # tens of thousands of small objects: collector passes cost ~10% and free nothing
    key: str | None
    try:
        for entry, rel in entries:
            if fast:  # inlined _classify for the default mode: this loop is the hot path
                dot = rel.rfind(".")
                if dot > rel.rfind("/") + 1:
                    key, ext = rel[:dot], rel[dot:].lower()
                else:
                    key, ext = rel, ""
                spec = by_ext.get(ext)
                why = "" if spec else f"extension {ext or '(none)'!r} matches no file specification"
            else:
                spec, key, why = _classify(rel, group_by, regex, specs, by_ext, multi)
                if key is None:
                    loose.append(rel)
                    continue
            if not key.isascii():
                key = nfc(key)
            unit = units.get(key)
            if unit is None:
                unit = units[key] = DataUnit(key)
            if spec is None:
                unit.extra.setdefault("", []).append(UnitFile(entry.path, rel))
                unit.add_problem("unmatched", why, files=[rel])
                continue
            if spec in json_specs:
                if not entry.is_file():
                    unit.add_problem("unreadable", _not_regular(entry), spec, [rel])
                    continue
                item = UnitFile(entry.path, rel)
            else:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    kind = "unreadable" if entry.is_symlink() else "vanished"
                    unit.add_problem(kind, _not_regular(entry), spec, [rel])
                    continue
                except OSError as exc:
                    unit.add_problem("unreadable", f"cannot stat: {exc.strerror or exc}", spec, [rel])
                    continue
                if not S_ISREG(st.st_mode):
                    unit.add_problem("unreadable", _not_regular(entry), spec, [rel])
                    continue
                if check_perm and not readable(st):
                    unit.add_problem("unreadable", "permission denied", spec, [rel])
                    continue
                item = UnitFile(entry.path, rel, st.st_size, st.st_mtime)
            files = unit.files
            if spec in files or spec in unit.extra:
                unit.extra.setdefault(spec, [files.pop(spec)] if spec in files else []).append(item)
            else:
                files[spec] = item
        order = list(specs)
        required = [name for name, s in specs.items() if s.is_required]
        result = []
        for key in sorted(units):
            unit = units[key]
            if (
                not unit.files
                and not any(unit.extra.get(s) for s in specs)
                and all(p["kind"] == "unmatched" for p in unit.problems)
            ):
                loose.extend(f.rel for f in unit.extra.get("", []))
                continue
            _validate(unit, specs, order, required, json_specs)
            result.append(unit)
    finally:
        if gc_was_enabled:
            gc.enable()
    if not result:
        wanted = ", ".join(f"{s.name} ({'/'.join(s.extensions)})" for s in specs.values())
        raise CollectionError(
            f"{folder}: no file matches collection {collection.name!r} (expected {wanted}; grouped by {group_by}); "
            f"{len(entries)} files looked at"
        )
    return Organized(folder, collection, group_by, result, sorted(loose), len(entries))


def _not_regular(entry: os.DirEntry) -> str:
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "broken symlink: its target does not exist"
    if not os.path.lexists(entry.path):
        return "the file disappeared before it could be read"
    return "not a regular file (a pipe, socket, device or folder link) and cannot be read as data"


def _compile(pattern: str | None) -> re.Pattern:
    if not pattern:
        raise CollectionError("grouping by regex needs a pattern with a named group 'unit'")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise CollectionError(f"invalid regex {pattern!r}: {exc}") from None
    if "unit" not in regex.groupindex:
        raise CollectionError(f"regex {pattern!r} needs a named group 'unit', e.g. (?P<unit>sample_\\d+)")
    return regex


def _classify(
    rel: str, group_by: str, regex: re.Pattern | None, specs: dict, by_ext: dict[str, str], multi: tuple[str, ...]
) -> tuple[str | None, str | None, str]:
    """(spec or None, unit key or None, why unmatched) of one file."""
    if group_by == "stem":
        stem, ext = split_ext(rel, multi)
        return by_ext.get(ext), stem, f"extension {ext or '(none)'!r} matches no file specification"
    if group_by == "folder":
        top, sep, rest = rel.partition("/")
        if not sep:
            return None, None, ""
        stem, ext = split_ext(rest, multi)
        spec = specs.get(top)
        if spec is None:
            return None, stem, f"folder {top!r} is not a file specification"
        if ext not in spec.extensions:
            return None, stem, f"extension {ext or '(none)'!r} is not allowed for {top!r}"
        return top, stem, ""
    assert regex is not None  # group_by == "regex": the caller compiled the pattern
    match = regex.search(rel)
    if match is None or not match.group("unit"):
        return None, None, ""
    key = match.group("unit")
    ext = split_ext(rel, multi)[1]
    if "spec" in regex.groupindex:
        spec = specs.get(match.group("spec") or "")
        if spec is None:
            return None, key, f"{match.group('spec')!r} is not a file specification"
        if ext not in spec.extensions:
            return None, key, f"extension {ext or '(none)'!r} is not allowed for {spec.name!r}"
        return spec.name, key, ""
    return by_ext.get(ext), key, f"extension {ext or '(none)'!r} matches no file specification"


def _validate(unit: DataUnit, specs: dict, order: list[str], required: list[str], json_specs: set[str]) -> None:
    files = unit.files
    if len(files) > 1:  # collection order: the first spec's file is the unit's primary file
        unit.files = files = {name: files[name] for name in order if name in files}
    if unit.extra:
        for name, candidates in unit.extra.items():
            if name and candidates:
                unit.add_problem(
                    "duplicate",
                    f"{len(candidates)} files match {name!r}; keep one",
                    name,
                    [f.rel for f in candidates],
                )
    for name in required:
        if name not in files and not unit.extra.get(name):
            if not any(p["spec"] == name for p in unit.problems):
                unit.add_problem("missing_required", f"no {'/'.join(specs[name].extensions)} file for {name!r}", name)
    for name in json_specs:
        item = files.get(name)
        if item is None:
            continue
        try:
            data = read_text(item.path)
            item.size = len(data)
            text = check_json(data)
        except FileNotFoundError:
            unit.add_problem("vanished", "the file disappeared before it could be read", name, [item.rel])
        except OSError as exc:
            unit.add_problem("unreadable", f"cannot read: {exc.strerror or exc}", name, [item.rel])
        except UnicodeDecodeError as exc:
            unit.add_problem("invalid_json", f"not UTF-8 text: {exc}", name, [item.rel])
        except ValueError as exc:
            unit.add_problem("invalid_json", f"not valid JSON: {exc}", name, [item.rel])
        else:
            unit.texts[name] = text
