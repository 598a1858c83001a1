"""Which columns of an uploaded table hold images: named by the user or resolved, never guessed from looks.

A column is an image column when

1. the user names it (``image_columns=[...]``, ``--image-columns``): then exactly the named columns are, and
   every other column is kept as it is; or, with nothing named,
2. its type says so: an HF ``Image`` struct ``{bytes, path}``, or binary data in a column named like an image
   (``image``, ``img``, ``picture``, ``photo`` in its name); or
3. it holds strings (plain, large or dictionary-encoded, e.g. pandas ``category``) and every value **resolves**:
   it names an existing file, absolute or relative to the source (the Parquet file's folder; the working
   directory for a DataFrame), that Pillow identifies as an image (or whose extension names an image format,
   so a broken image is rejected per row rather than the column silently becoming text). A relative path
   written on Windows (``imgs\\w0.png``) resolves like its forward-slash form. A URL (``scheme://...``) never
   resolves: it is text; the lake does not fetch URLs.

Detection never depends on where in the column the values sit: a column *named like an image* has every distinct
non-null value resolved; any other string column a sample of the first :data:`DETECT_VALUES` non-null values plus
:data:`DETECT_VALUES` evenly spaced over the whole column. Staging then resolves every value of a detected column
and refuses the upload, naming the row, if one does not (name the columns to decide). A column named like an
image whose values resolve only in part is taken as an image column too, so its missing file refuses the upload
by name instead of the column silently becoming text. Every other string column is text, and ``text_columns``
in the staging report says why (the first value that does not resolve, and how many values did).

**Companion columns.** When several resolved columns name the same *file* on every row (``orig_name`` repeating
the image path, perhaps written with ``\\`` or ``./``), the one named like an image is the image column and the
others stay text. When none or more than one of them is named like an image, the upload is refused: name the
image column. Columns that resolve to different files on some row are independent image columns.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ValidationError
from .file_accounting import IMAGE_EXTENSIONS, is_image_file

IMAGE_NAME_HINTS = ("image", "img", "picture", "photo")
DETECT_VALUES = 200
URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

NAMED = "named by the user"
HF_STRUCT = "HF Image struct {bytes, path}"
BYTES = "bytes in a column named like an image"
RESOLVED = "every value resolves to an image file in the source"


@dataclass
class ColumnResolution:
    """Image columns with why each is one, and path-like columns kept as text with why."""

    image_columns: dict[str, str] = field(default_factory=dict)
    text_columns: dict[str, str] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {"image_columns": dict(self.image_columns), "text_columns": dict(self.text_columns)}


def is_url(value: Any) -> bool:
    return isinstance(value, str) and bool(URL_PATTERN.match(value))


def resolve_path(value: Any, base_dir: Path) -> Path | None:
    """The existing file ``value`` names (absolute, or relative to ``base_dir``; ``\\`` read as ``/`` if the
    literal name does not exist), or ``None`` for a URL, a non-string or a name that resolves to no file."""
    if not isinstance(value, str) or not value or is_url(value) or "\x00" in value:
        return None
    if not value.startswith("~"):  # the name as given first, with one stat and no Path built unless it is a file
        path_str = value if os.path.isabs(value) else os.path.join(base_dir, value)
        try:
            if stat.S_ISREG(os.stat(path_str).st_mode):
                return Path(path_str)
        except (OSError, ValueError):
            pass
    candidates = [value] + ([value.replace("\\", "/")] if "\\" in value else [])
    # A name typed or stored in NFC may name a file written in NFD (macOS) or the reverse: try both forms.
    candidates += [unicodedata.normalize(form, c) for c in list(candidates) for form in ("NFC", "NFD")]
    for candidate in dict.fromkeys(candidates):
        path = Path(candidate).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        try:
            if path.is_file():
                return path
        except OSError:  # a name too long for the file system, ...
            continue
    return None


WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")  # C:\... or C:/... or \\server\share


def missing_file_reason(value: Any, base_dir: Path) -> str:
    """Why ``value`` names no file, for a message: the path it was looked up at, or, for an absolute Windows
    path (``C:\\imgs\\a.jpg``, ``\\\\server\\share``), the value as given (it cannot be resolved on this system)."""
    if isinstance(value, str) and WINDOWS_ABSOLUTE.match(value) and os.name != "nt":
        return f"file {value!r} is an absolute Windows path, which cannot be resolved here (use a relative path)"
    return f"file {value!r} does not exist ({base_dir / str(value)})"


def is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def is_hf_image(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"bytes", "path"}


def is_string_like(t: pa.DataType) -> bool:
    """Plain, large or view strings, or a dictionary of them (pandas ``category``)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)


def named_like_image(name: str) -> bool:
    return any(hint in name.lower() for hint in IMAGE_NAME_HINTS)


def resolve_image_columns(table: pa.Table, base_dir: Path, named: list[str] | None = None) -> ColumnResolution:
    """Decide the image columns of ``table`` by the rules of this module; raise :class:`ValidationError` when two
    resolved columns repeat each other and their names do not say which one holds the images."""
    result = ColumnResolution()
    if named is not None:
        result.image_columns = {c: NAMED for c in named}
        return result
    resolved: list[str] = []
    for fld in table.schema:
        if is_hf_image(fld.type):
            result.image_columns[fld.name] = HF_STRUCT
        elif is_binary(fld.type) and named_like_image(fld.name):
            result.image_columns[fld.name] = BYTES
        elif is_string_like(fld.type):
            column = table.column(fld.name)
            named_image = named_like_image(fld.name)
            values = _distinct_values(column) if named_image else _sample_values(column)
            hits, problem = _resolve_values(values, base_dir)
            if hits and (problem is None or (named_image and not problem.startswith("holds URLs"))):
                resolved.append(fld.name)  # a partly resolving image-named column: staging names the bad value
            elif problem:
                if named_image and not hits and not problem.startswith("holds URLs") and _names_image_files(values):
                    # Image-named paths of which none resolves: a wrong base folder or a typo would otherwise
                    # turn every image of the column into text without a word.
                    raise ValidationError(
                        f"column {fld.name!r} is named like an image column and holds image file names, but none "
                        f"resolves ({problem}, relative to {base_dir}); fix the paths, or name the image columns "
                        "with image_columns=[...] (image_columns=[] keeps every column as text)"
                    )
                result.text_columns[fld.name] = f"{problem}: text" + (_hit_rows(column, hits) if hits else "")
    for group in _same_file_groups(table, resolved, base_dir):
        if len(group) == 1:
            result.image_columns[group[0]] = RESOLVED
            continue
        hinted = [c for c in group if named_like_image(c)]
        if len(hinted) != 1:
            raise ValidationError(
                f"columns {group} name the same files on every row, so which one holds the images is "
                "ambiguous; name it with image_columns=[...] (--image-columns)"
            )
        result.image_columns[hinted[0]] = f"{RESOLVED}; named like an image among columns naming the same files"
        for other in group:
            if other != hinted[0]:
                result.text_columns[other] = (
                    f"repeats the values of image column {hinted[0]!r} (the same file on every row): kept as text"
                )
    order = {name: i for i, name in enumerate(table.column_names)}
    result.image_columns = dict(sorted(result.image_columns.items(), key=lambda kv: order[kv[0]]))
    return result


def _sample_values(column: pa.ChunkedArray) -> list[Any]:
    """The first :data:`DETECT_VALUES` non-null values and :data:`DETECT_VALUES` spread evenly over the column."""
    values = column.drop_null()
    n = len(values)
    if n <= 2 * DETECT_VALUES:
        return values.to_pylist()
    step = n / DETECT_VALUES
    spread = [int(k * step) for k in range(DETECT_VALUES)] + [n - 1]
    return values.slice(0, DETECT_VALUES).to_pylist() + values.take(pa.array(spread, pa.int64())).to_pylist()


def _distinct_values(column: pa.ChunkedArray) -> list[Any]:
    """Every distinct non-null value, in first-seen order (dictionary columns by their strings)."""
    return pc.unique(_as_strings(column).drop_null()).to_pylist()


def _hit_rows(column: pa.ChunkedArray, hits: list[str]) -> str:
    """`` (N of M non-null values resolve to image files)``, counted over the whole column."""
    strings = _as_strings(column)
    total = len(strings) - strings.null_count
    rows = pc.sum(pc.is_in(strings, value_set=pa.array(hits, pa.large_string()))).as_py() or 0
    return f" ({rows} of {total} non-null values resolve to image files)"


def _names_image_files(values: list[Any]) -> bool:
    """Whether some value ends in an image file extension Pillow knows (``scan.png``, ``a/b.JPG``)."""
    return any(isinstance(v, str) and os.path.splitext(v)[1].lower() in IMAGE_EXTENSIONS for v in values)


def _resolve_values(values: list[Any], base_dir: Path) -> tuple[list[str], str | None]:
    """The distinct ``values`` that resolve to image files, and why the first other one does not (or ``None``)."""
    urls = [v for v in values if is_url(v)]
    if urls:
        return [], f"holds URLs (e.g. {urls[0]!r}); the lake does not fetch URLs"
    hits: list[str] = []
    problem = None
    for value in dict.fromkeys(values):
        path = resolve_path(value, base_dir)
        try:
            image = path is not None and is_image_file(path)
        except OSError:
            image = False
        if image:
            hits.append(value)
        elif problem is None:
            problem = f"value {value!r} " + ("resolves to no file" if path is None else "is not an image file")
    return hits, problem


def _same_file_groups(table: pa.Table, columns: list[str], base_dir: Path) -> list[list[str]]:
    """``columns`` grouped by naming the same file on every row: values compared after resolution (real path),
    so ``imgs\\a.jpg`` and ``imgs/a.jpg`` are the same file; a value that resolves to nothing compares as
    its text."""
    groups: list[list[str]] = []
    cache: dict[str, str] = {}

    def key(value: str | None) -> str | None:
        if value is None:
            return None
        if value not in cache:
            path = resolve_path(value, base_dir)
            cache[value] = f"file:{path.resolve()}" if path is not None else f"text:{value}"
        return cache[value]

    files = {c: [key(v) for v in _as_strings(table.column(c)).to_pylist()] for c in columns}
    for name in columns:
        for group in groups:
            if files[group[0]] == files[name]:
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def _as_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    t = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    return column.cast(t).cast(pa.large_string())
