"""A partition's profile: image sizes, formats and modes, file sizes, text lengths and null counts, as figures
(a JSON-able dict computed by DuckDB over the catalog's Parquet files) and as one small PNG (matplotlib, Agg).

Counts are aggregated in DuckDB (``GROUP BY``, ``count``, ``quantile_cont``); histograms use power-of-two bins
(``floor(log2(x))``), so bin ``b`` holds values in ``[2**b, 2**(b+1))`` and bin ``-1`` the zeros. Image file sizes
are not catalog columns: they come from the hash index (one query per 500 distinct hashes).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ..catalog.query_sql import quote_identifier
from ..ingest.hash_index import HashIndex
from .thumbnails import generated_columns, image_columns

TOP_SIZES = 100  # distinct width x height pairs kept (most frequent first); keeps the JSON small
MAX_PNG_BYTES = 40_000
PLOTTED_TEXTS = 4  # text columns drawn in the text-length panel (the rest are counted in its title)
TOP_COLUMNS = 20  # columns kept per figure in the metadata (compact_figures); the CLI's --json has all


def _bins(con: duckdb.DuckDBPyConnection, expr: str, source: str, params: dict) -> dict[str, int]:
    sql = (
        f"SELECT CASE WHEN v <= 0 THEN -1 ELSE floor(log2(v))::INTEGER END AS b, count(*) FROM "
        f"(SELECT ({expr})::DOUBLE AS v FROM {source}) WHERE v IS NOT NULL GROUP BY b ORDER BY b"
    )
    return {str(b): n for b, n in con.execute(sql, params).fetchall()}


def _stats(con: duckdb.DuckDBPyConnection, expr: str, source: str, params: dict) -> dict[str, Any]:
    row = con.execute(
        f"SELECT min(v), quantile_cont(v, 0.5), max(v), avg(v), sum(v), count(v) "
        f"FROM (SELECT ({expr})::DOUBLE AS v FROM {source})",
        params,
    ).fetchall()[0]  # an aggregate has exactly one row
    keys = ("min", "median", "max", "mean", "total", "count")
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in zip(keys, row)}


def _log2_hist(values: np.ndarray, weights: np.ndarray) -> dict[str, int]:
    bins = np.where(values > 0, np.floor(np.log2(np.maximum(values, 1))), -1).astype(int)
    out: dict[str, int] = {}
    for b in np.unique(bins):
        out[str(int(b))] = int(weights[bins == b].sum())
    return out


def profile_files(files: Sequence[Path], index: HashIndex | None = None) -> dict[str, Any]:
    """Figures of the rows in ``files`` (catalog Parquet of one partition). Shape::

        {"rows": int, "columns": int,
         "images": {col: {"count", "width": stats, "height": stats, "sizes": [[w, h, n], ...],
                          "formats": {fmt: n}, "modes": {mode: n},
                          "file_bytes": stats | null, "file_bytes_log2": {bin: n}, "unknown_sizes": int}},
         "files": {col: {"file_bytes": stats, "file_bytes_log2": {bin: n}}},
         "text_lengths": {col: {"chars": stats, "chars_log2": {bin: n}}},
         "nulls": {col: n}}

    ``stats`` is ``{min, median, max, mean, total, count}``. ``index`` gives image file sizes (else null)."""
    if not files:
        return {"rows": 0, "columns": 0, "images": {}, "files": {}, "text_lengths": {}, "nulls": {}}
    con = duckdb.connect()
    params = {"files": [str(f) for f in files]}
    source = "read_parquet($files, union_by_name=true)"
    described = con.execute(f"DESCRIBE SELECT * FROM {source}", params).fetchall()
    types = {name: str(t) for name, t, *_ in described}
    names = list(types)
    q = quote_identifier
    rows = con.execute(f"SELECT count(*) FROM {source}", params).fetchall()[0][0]
    nulls_sql = ", ".join(f"count(*) - count({q(c)})" for c in names)
    nulls = dict(zip(names, con.execute(f"SELECT {nulls_sql} FROM {source}", params).fetchall()[0]))
    doc: dict[str, Any] = {"rows": rows, "columns": len(names), "images": {}, "files": {}, "text_lengths": {}}
    images = image_columns(names)
    for col in images:
        w, h = q(f"{col}_width"), q(f"{col}_height")
        fig: dict[str, Any] = {
            "count": rows - nulls[col],
            "width": _stats(con, w, source, params),
            "height": _stats(con, h, source, params),
            "sizes": [
                list(r)
                for r in con.execute(
                    f"SELECT {w}, {h}, count(*) AS n FROM {source} WHERE {w} IS NOT NULL GROUP BY ALL "
                    f"ORDER BY n DESC, 1, 2 LIMIT {TOP_SIZES}",
                    params,
                ).fetchall()
            ],
        }
        for what in ("format", "mode"):
            if f"{col}_{what}" in types:
                got = con.execute(
                    f"SELECT coalesce({q(f'{col}_{what}')}, '(null)'), count(*) AS n FROM {source} "
                    f"WHERE {q(col)} IS NOT NULL GROUP BY 1 ORDER BY n DESC, 1",
                    params,
                ).fetchall()
                fig[what + "s"] = dict(got)
        fig.update(_image_bytes(con, q(f"{col}_sha256"), source, params, index))
        doc["images"][col] = fig
    for col in names:
        if col not in images and f"{col}_size" in types and f"{col}_sha256" in types:
            size = q(f"{col}_size")
            doc["files"][col] = {
                "file_bytes": _stats(con, size, source, params),
                "file_bytes_log2": _bins(con, size, source, params),
            }
    generated = generated_columns(names)
    texts = [c for c, t in types.items() if c not in generated and t == "VARCHAR"]
    doc["text_lengths"] = _text_lengths(con, texts, source, params)
    doc["nulls"] = nulls
    con.close()
    return doc


def _text_lengths(con: duckdb.DuckDBPyConnection, columns: list[str], source: str, params: dict) -> dict[str, Any]:
    """``{col: {"chars": stats, "chars_log2": {bin: n}}}`` of every text column in ONE scan: the lengths are
    unpivoted into ``(col, len)`` rows and aggregated ``GROUP BY col`` (a query per column made a 2,000-column
    partition take over a minute; one wide SELECT of 8 aggregates per column is slower still to plan)."""
    if not columns:
        return {}
    q = quote_identifier
    lengths = ", ".join(f"length({q(c)}) AS {q(c)}" for c in columns)
    rows = con.execute(
        f"WITH l AS (UNPIVOT (SELECT {lengths} FROM {source}) ON COLUMNS(*) INTO NAME col VALUE len) "
        "SELECT col, min(len), quantile_cont(len, 0.5), max(len), avg(len), sum(len), count(len), "
        "histogram(CASE WHEN len <= 0 THEN -1 ELSE floor(log2(len))::INTEGER END) FROM l GROUP BY col",
        params,
    ).fetchall()
    keys = ("min", "median", "max", "mean", "total", "count")
    found = {
        r[0]: {"chars": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in zip(keys, r[1:7])},
               "chars_log2": {str(b): n for b, n in sorted(r[7].items())}}
        for r in rows
    }  # fmt: skip
    empty = {"chars": dict.fromkeys(keys[:5], None) | {"count": 0}, "chars_log2": {}}  # UNPIVOT drops NULLs
    return {c: found.get(c, empty) for c in columns}


def compact_figures(doc: dict[str, Any], top: int = TOP_COLUMNS) -> dict[str, Any]:
    """``doc`` (:func:`profile_files`) small enough for Dagster metadata (well under 20 KB whatever the column
    count): the ``top`` text columns by longest text and the ``top`` columns by null count, and how many more
    there are (``text_columns_more``, ``null_columns_more``); ``datalake profile --json`` has every figure."""
    out = dict(doc)
    texts = sorted(doc["text_lengths"].items(), key=lambda kv: (-(kv[1]["chars"]["max"] or 0), kv[0]))
    out["text_lengths"] = dict(texts[:top])
    out["text_columns_more"] = max(0, len(texts) - top)
    nulls = sorted(((c, n) for c, n in doc["nulls"].items() if n), key=lambda kv: (-kv[1], kv[0]))
    out["nulls"] = dict(nulls[:top])
    out["null_columns_more"] = max(0, len(nulls) - top)
    out["images"] = dict(list(doc["images"].items())[:top])
    out["files"] = dict(list(doc["files"].items())[:top])
    return out


def _image_bytes(con, sha: str, source: str, params: dict, index: HashIndex | None) -> dict[str, Any]:
    counts = con.execute(f"SELECT {sha}, count(*) FROM {source} WHERE {sha} IS NOT NULL GROUP BY 1", params).fetchall()
    if index is None or not counts:
        return {"file_bytes": None, "file_bytes_log2": {}, "unknown_sizes": sum(n for _, n in counts)}
    entries = index.get_many([h for h, _ in counts])
    known = [(entries[h].size, n) for h, n in counts if h in entries]
    unknown = sum(n for h, n in counts if h not in entries)
    if not known:
        return {"file_bytes": None, "file_bytes_log2": {}, "unknown_sizes": unknown}
    sizes = np.array([s for s, _ in known], dtype=np.float64)
    weights = np.array([n for _, n in known], dtype=np.int64)
    order = np.argsort(sizes)
    cum = np.cumsum(weights[order])
    median = float(sizes[order][np.searchsorted(cum, cum[-1] / 2)])
    stats = {
        "min": int(sizes.min()),
        "median": median,
        "max": int(sizes.max()),
        "mean": round(float((sizes * weights).sum() / weights.sum()), 2),
        "total": int((sizes * weights).sum()),
        "count": int(weights.sum()),
    }
    return {"file_bytes": stats, "file_bytes_log2": _log2_hist(sizes, weights), "unknown_sizes": unknown}


# plotting -----------------------------------------------------------------------------------------------
def _bin_labels(hist: dict[str, int]) -> tuple[list[str], list[int]]:
    def label(b: int) -> str:
        if b < 0:
            return "0"
        v = 2**b
        for unit, div in (("M", 2**20), ("k", 2**10)):
            if v >= div:
                return f"{v // div}{unit}"
        return str(v)

    keys = sorted(int(k) for k in hist)
    return [label(k) for k in keys], [hist[str(k)] for k in keys]


def _no_data(ax, title: str, message: str) -> None:
    """A panel without data: its title and a word why, no axes (empty axes show meaningless 0..1 ticks)."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=7)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes)


def profile_figure(doc: dict[str, Any], title: str = ""):
    """The matplotlib ``Figure`` (6 panels, Agg canvas) of a :func:`profile_files` result. A panel with no data
    says so ("no images", "no text columns", ...) instead of drawing empty axes; the text-length panel shows the
    :data:`PLOTTED_TEXTS` columns with the longest texts and says how many more there are."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no pyplot global state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.6), dpi=72)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    small = {"fontsize": 7}
    img = next(iter(doc["images"].values()), None)
    ax = axes[0]
    if img and img["sizes"]:
        s = np.array(img["sizes"], dtype=float)
        ax.scatter(s[:, 0], s[:, 1], s=8 + 40 * s[:, 2] / s[:, 2].max(), alpha=0.5, color="tab:blue")
        ax.set_title("width x height (px)", **small)
    else:
        _no_data(ax, "width x height (px)", "no images")
    ax = axes[1]
    cats = {f"{k}": v for k, v in (img or {}).get("formats", {}).items()}
    cats.update({f"mode {k}": v for k, v in (img or {}).get("modes", {}).items()})
    if cats:
        ax.barh(list(cats)[:10][::-1], list(cats.values())[:10][::-1], color="tab:orange")
        ax.set_title("formats and modes (rows)", **small)
    else:
        _no_data(ax, "formats and modes (rows)", "no images")
    ax = axes[2]
    no_file: dict[str, Any] = {}
    sizes = (img or {}).get("file_bytes_log2") or next(iter(doc["files"].values()), no_file).get("file_bytes_log2", {})
    if sizes:
        labels, counts = _bin_labels(sizes)
        ax.bar(labels, counts, color="tab:green")
        ax.set_title("file size (bytes, power-of-2 bins)", **small)
    else:
        _no_data(ax, "file size (bytes, power-of-2 bins)", "no file sizes known")
    ax = axes[3]
    ranked = sorted(doc["text_lengths"].items(), key=lambda kv: (-(kv[1]["chars"]["max"] or 0), kv[0]))
    texts = [(c, t) for c, t in ranked if t["chars_log2"]][:PLOTTED_TEXTS]
    more = len(ranked) - len(texts) + doc.get("text_columns_more", 0)
    head = "text length (chars, power-of-2 bins)" + (f"; {more} more columns" if more else "")
    if texts:
        keys = sorted({int(k) for _, t in texts for k in t["chars_log2"]})
        x = np.arange(len(keys))
        for i, (col, t) in enumerate(texts):
            width = 0.8 / len(texts)
            ax.bar(x + i * width, [t["chars_log2"].get(str(k), 0) for k in keys], width, label=col[:16])
        ax.set_xticks(x + 0.4 - 0.4 / len(texts), _bin_labels({str(k): 0 for k in keys})[0])
        ax.legend(fontsize=6)
        ax.set_title(head, **small)
    else:
        _no_data(ax, head, "no text columns" if not ranked else "no text values")
    ax = axes[4]
    all_nulls = sorted(((n, c) for c, n in doc["nulls"].items() if n), reverse=True)
    nulls = all_nulls[:10]
    more = len(all_nulls) - len(nulls) + doc.get("null_columns_more", 0)
    head = f"null counts (of {doc['rows']} rows)" + (f"; {more} more columns" if more else "")
    if nulls:
        ax.barh([c[:18] for _, c in nulls][::-1], [n for n, _ in nulls][::-1], color="tab:red")
        ax.set_title(head, **small)
    else:
        _no_data(ax, head, "no nulls")
    ax = axes[5]
    ax.axis("off")
    lines = [title, f"{doc['rows']} rows, {doc['columns']} columns"]
    if img:
        fb = img.get("file_bytes") or {}
        lines += [
            f"width {img['width']['min']:.0f}-{img['width']['max']:.0f}, "
            f"height {img['height']['min']:.0f}-{img['height']['max']:.0f}",
            f"median file {fb.get('median', 0) / 1024:.1f} KiB" if fb else "file sizes unknown",
        ]
    ax.text(0, 0.9, "\n".join(x for x in lines if x), va="top", fontsize=8)
    for ax in axes[:5]:
        ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.1, right=0.99, top=0.95, bottom=0.07, wspace=0.5, hspace=0.3)  # tight_layout: +0.1 s
    return fig


def profile_png(doc: dict[str, Any], title: str = "", max_bytes: int = MAX_PNG_BYTES) -> bytes:
    """:func:`profile_figure` as PNG, palette-quantized with Pillow (a plot has few colours, so a 64-colour
    palette keeps it sharp at a fraction of the size)."""
    from PIL import Image

    fig = profile_figure(doc, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    for colors in (64, 32, 16):
        out = io.BytesIO()
        png.quantize(colors).save(out, "PNG", optimize=True)
        if out.tell() <= max_bytes:
            break
    return out.getvalue()
