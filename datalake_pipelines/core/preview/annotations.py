"""Annotations found in a catalog row: OCR words, layout regions, KIE fields (boxes or polygons) and VQA pairs.

Known shapes are recognised without configuration, in a column's value or inside its JSON text (a dict or a
list, up to a few levels deep): lists of dicts that carry a geometry key (``bbox``, ``box``, ``polygon``,
``points``, ``quad``, ...) and a text key (``text``, ``label``, ``transcription``, KIE ``key``/``value``, ...).
Geometry is ``[x0, y0, x1, y1]``, a flat ``[x, y, x, y, ...]`` polygon, a list of ``[x, y]`` pairs or
``{x, y}`` dicts, or a ``{x0, y0, x1, y1}`` / ``{x, y, w, h}`` dict; in pixels of the displayed image, or
normalized when every coordinate of the row is within ``[0, 1]``. Other shapes are named per task in
``config/schema.yaml``::

    tasks:
      ocr:
        preview: {annotations: ocr_result.lines, box: quad, text: content, format: polygon}

``annotations`` is a column, optionally followed by a dotted path into its JSON; ``box`` and ``text`` are the
keys of each item; ``format`` is ``auto`` (default), ``xyxy``, ``xywh`` or ``polygon``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GEOMETRY_KEYS = (
    "bbox",
    "box",
    "bounding_box",
    "boundingBox",
    "polygon",
    "poly",
    "points",
    "quad",
    "vertices",
    "coords",
    "coordinates",
    "segmentation",
)
TEXT_KEYS = ("text", "transcription", "word", "value", "label", "category", "class", "name", "type")
QUESTION_KEYS = ("question", "query", "q")
ANSWER_KEYS = ("answer", "answers", "a")
FORMATS = ("auto", "xyxy", "xywh", "polygon")
MAX_DEPTH = 4
MAX_SHAPES = 500  # a page of OCR words; more would only paint the thumbnail over


@dataclass(frozen=True)
class PreviewMapping:
    """A task's ``preview`` setting: where its annotations live and which keys hold geometry and text."""

    annotations: str | None = None
    box: str | None = None
    text: str | None = None
    format: str = "auto"

    @classmethod
    def from_config(cls, doc: Any, where: str = "preview") -> PreviewMapping:
        """Validate a ``preview:`` mapping; raises ``ValueError`` naming the bad key."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ValueError(f"{where!r}: must be a mapping with annotations, box, text, format")
        unknown = set(doc) - {"annotations", "box", "text", "format"}
        if unknown:
            name = f"{where}.{sorted(unknown)[0]}"
            raise ValueError(f"{name!r}: unknown key (expected annotations, box, text, format)")
        for key in ("annotations", "box", "text"):
            if doc.get(key) is not None and not (isinstance(doc[key], str) and doc[key]):
                raise ValueError(f"{where + '.' + key!r}: must be a non-empty string")
        fmt = doc.get("format") or "auto"
        if fmt not in FORMATS:
            raise ValueError(f"{where + '.format'!r}: must be one of {', '.join(FORMATS)}")
        return cls(doc.get("annotations"), doc.get("box"), doc.get("text"), fmt)

    def as_yaml(self) -> dict[str, str]:
        doc = {k: getattr(self, k) for k in ("annotations", "box", "text") if getattr(self, k)}
        if self.format != "auto":
            doc["format"] = self.format
        return doc


@dataclass(frozen=True)
class Shape:
    """A region: ``points`` in image coordinates (a box as its two corners when ``is_box``), and its label."""

    points: tuple[tuple[float, float], ...]
    label: str = ""
    kind: str = "text"  # text (OCR word/line), field (KIE key/value), region (layout label only)
    is_box: bool = True


@dataclass
class RowAnnotations:
    shapes: list[Shape] = field(default_factory=list)
    qa: list[tuple[str, str]] = field(default_factory=list)
    normalized: bool = False
    found: dict[str, int] = field(default_factory=dict)  # shapes found per kind, drawn or not (MAX_SHAPES)

    def __bool__(self) -> bool:
        return bool(self.shapes or self.qa)

    def scaled(self, sx: float, sy: float) -> list[Shape]:
        """Shapes in thumbnail pixels: ``sx``/``sy`` are thumbnail size over displayed image size (or the
        thumbnail size itself when the row's coordinates are normalized)."""
        return [Shape(tuple((x * sx, y * sy) for x, y in s.points), s.label, s.kind, s.is_box) for s in self.shapes]

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for s in self.shapes:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        names = {"text": "text box", "field": "field", "region": "region"}
        parts = []
        for k in dict.fromkeys([*kinds, *self.found]):
            drawn, n = kinds.get(k, 0), max(self.found.get(k, 0), kinds.get(k, 0))
            part = f"{n} {names[k]}{'es' if k == 'text' and n != 1 else 's' if n != 1 else ''}"
            parts.append(part + (f" ({drawn} drawn)" if drawn < n else ""))
        return ", ".join(parts)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_geometry(value: Any, fmt: str = "auto") -> tuple[tuple[tuple[float, float], ...], bool] | None:
    """``value`` as ``(points, is_box)`` or None when it is no geometry this module knows."""
    if isinstance(value, Mapping):
        keys = set(value)
        if {"x0", "y0", "x1", "y1"} <= keys:
            vals = [value[k] for k in ("x0", "y0", "x1", "y1")]
            fmt = "xyxy"
        elif {"x", "y", "w", "h"} <= keys or {"x", "y", "width", "height"} <= keys:
            vals = [value["x"], value["y"], value.get("w", value.get("width")), value.get("h", value.get("height"))]
            fmt = "xywh"
        elif {"left", "top", "width", "height"} <= keys:
            vals, fmt = [value["left"], value["top"], value["width"], value["height"]], "xywh"
        elif {"x", "y"} <= keys:
            return None
        else:
            return None
        if not all(_number(v) for v in vals):
            return None
        value = vals
    if not isinstance(value, (list, tuple)) or not value:
        return None
    if all(_number(v) for v in value):
        nums = [float(v) for v in value]
        if len(nums) == 4 and fmt in ("auto", "xyxy", "xywh"):
            x0, y0, a, b = nums
            x1, y1 = (x0 + a, y0 + b) if fmt == "xywh" else (a, b)
            return ((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), True
        if len(nums) >= 6 and len(nums) % 2 == 0:
            return tuple(zip(nums[0::2], nums[1::2])), False
        return None
    if all(isinstance(p, (list, tuple)) and len(p) >= 2 and _number(p[0]) and _number(p[1]) for p in value):
        pts = tuple((float(p[0]), float(p[1])) for p in value)
    elif all(isinstance(p, Mapping) and _number(p.get("x")) and _number(p.get("y")) for p in value):
        pts = tuple((float(p["x"]), float(p["y"])) for p in value)
    elif len(value) == 1:  # COCO segmentation: [[x, y, x, y, ...]]
        return parse_geometry(value[0], fmt)
    else:
        return None
    if len(pts) == 2:
        (x0, y0), (x1, y1) = pts
        return ((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), True
    return (pts, False) if len(pts) >= 3 else None


def _label(item: Mapping, text_key: str | None) -> tuple[str, str]:
    """``(label, kind)`` of an annotation item."""
    if text_key is not None:
        return _text(item.get(text_key)), "text"
    if "key" in item and "value" in item:  # KIE field
        return f"{_text(item['key'])}: {_text(item['value'])}", "field"
    for key in TEXT_KEYS[:4]:
        if item.get(key) not in (None, ""):
            return _text(item[key]), "field" if key == "value" else "text"
    for key in TEXT_KEYS[4:]:
        if item.get(key) not in (None, ""):
            return _text(item[key]), "region"
    return "", "region"


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _items(items: list, mapping: PreviewMapping) -> list[Shape]:
    shapes = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        keys = [mapping.box] if mapping.box else [k for k in GEOMETRY_KEYS if k in item]
        for key in keys:
            geometry = parse_geometry(item.get(key), mapping.format)
            # a NaN/inf coordinate (JSON NaN/Infinity) drops this shape only, never the row
            if geometry is not None and all(math.isfinite(v) for p in geometry[0] for v in p):
                label, kind = _label(item, mapping.text)
                shapes.append(Shape(geometry[0], label, kind, geometry[1]))
                break
    return shapes


def _walk(value: Any, mapping: PreviewMapping, out: RowAnnotations, depth: int = 0) -> None:
    value = _decoded(value)
    if depth > MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        q = next((value[k] for k in QUESTION_KEYS if isinstance(value.get(k), str)), None)
        a = next((value[k] for k in ANSWER_KEYS if k in value and value[k] is not None), None)
        if q is not None and a is not None:
            out.qa.append((q, _text(a)))
        for child in value.values():
            _walk(child, mapping, out, depth + 1)
    elif isinstance(value, (list, tuple)) and value:
        shapes = _items(list(value), mapping)
        if shapes:
            for shape in shapes:
                out.found[shape.kind] = out.found.get(shape.kind, 0) + 1
            out.shapes.extend(shapes[: max(0, MAX_SHAPES - len(out.shapes))])
            return
        for child in value[:200]:
            if isinstance(child, (Mapping, list, tuple, str)):
                _walk(child, mapping, out, depth + 1)


def _at_path(value: Any, path: Iterable[str]) -> Any:
    for key in path:
        value = _decoded(value)
        if isinstance(value, Mapping):
            value = value.get(key)
        else:
            return None
    return _decoded(value)


def extract_annotations(
    row: Mapping[str, Any], mapping: PreviewMapping | None = None, skip: Iterable[str] = ()
) -> RowAnnotations:
    """Every annotation of ``row`` (a catalog row as a dict). ``skip``: columns never read (paths, hashes...).

    With ``mapping.annotations`` only that column (and dotted path) is read for shapes; Q&A pairs are still
    taken from ``question``/``answer`` columns."""
    mapping = mapping or PreviewMapping()
    out = RowAnnotations()
    skipped = set(skip)
    if mapping.annotations:
        column, *path = mapping.annotations.split(".")
        _walk(_at_path(row.get(column), path), mapping, out)
    else:
        for name, value in row.items():
            if name not in skipped and value is not None and not _number(value):
                _walk(value, mapping, out)
    lowered = {k.lower(): k for k in row}
    q_col = lowered.get("question")  # columns: only the full names (a column named "a" is rarely an answer)
    a_col = lowered.get("answer") or lowered.get("answers")
    if q_col and a_col and row.get(q_col) is not None:
        out.qa.insert(0, (_text(row[q_col]), _text(row.get(a_col))))
    coords = [v for s in out.shapes for p in s.points for v in p]
    out.normalized = bool(coords) and all(0.0 <= v <= 1.0 for v in coords)
    return out
