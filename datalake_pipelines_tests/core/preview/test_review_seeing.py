"""Issue 18 review: the profile of wide partitions, metadata sizes, Markdown escaping, empty panels, thumbnails
(JPEG encode, fonts, bad coordinates, box counts, extreme aspect ratios, every image column)."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq

from datalake_pipelines.core.preview.partition import PartitionPreview
from datalake_pipelines.core.preview.profile import compact_figures, profile_figure, profile_files
from datalake_pipelines.core.preview.thumbnails import ContactSheet
from datalake_pipelines.defs.ingest.assets import _md_table


def wide_file(tmp_path, columns=1000, rows=60):
    data = {f"col_{i:04d}": pa.array([None if (r + i) % 5 == 0 else "x" * ((r * i) % 40) for r in range(rows)])
            for i in range(columns)}  # fmt: skip
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table(data), path)
    return path, data


def test_a_1000_column_profile_is_one_scan_and_its_metadata_stays_small(tmp_path):
    path, data = wide_file(tmp_path)
    started = time.perf_counter()
    doc = profile_files([path])
    seconds = time.perf_counter() - started
    assert seconds < 5, seconds  # a query per column took ~35 s here
    assert len(doc["text_lengths"]) == 1000 and len(doc["nulls"]) == 1000  # the CLI's --json keeps every figure
    lengths = [len(s) for s in data["col_0007"].to_pylist() if s is not None]
    assert doc["text_lengths"]["col_0007"]["chars"]["max"] == max(lengths)
    assert doc["text_lengths"]["col_0007"]["chars"]["count"] == len(lengths)
    assert doc["nulls"]["col_0007"] == 12
    small = compact_figures(doc)
    size = len(json.dumps(small, default=str))
    assert size < 20_000, size
    assert len(small["text_lengths"]) == 20 and small["text_columns_more"] == 980
    assert len(small["nulls"]) == 20 and small["null_columns_more"] == 980
    rows = pq.read_table(path).slice(0, 5).to_pylist()
    table = _md_table(rows, list(data))
    assert len(table) < 5_000 and table.splitlines()[0].count("col\\_") == 12
    assert "988 more columns not shown" in table


def test_the_preview_table_escapes_markdown_in_user_data():
    rows = [{"caption": "![t](http://e.x/t.png) [a](js:x) <img> **b** a|b\nnext"}]
    table = _md_table(rows, ["caption"])
    cell = table.splitlines()[2]
    assert "![" not in cell.replace("\\!\\[", "") and "](" not in cell.replace("\\](", "")
    assert "<img" not in cell.replace("\\<", "") and "**" not in cell.replace("\\*\\*", "") and "next" in cell
    assert cell.count("|") - cell.count("\\|") == 2  # the pipe in the text does not open a column


def test_a_text_only_profile_png_hides_empty_panels_and_counts_more_text_columns(tmp_path):
    data = {f"t{i}": pa.array(["a" * (i + 1) * 10, None, "b"]) for i in range(7)}
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table(data), path)
    fig = profile_figure(profile_files([path]), "text only")
    axes = fig.axes
    for ax in axes[:3]:
        assert not ax.axison and [t.get_text() for t in ax.texts] in (["no images"], ["no file sizes known"])
    assert axes[3].axison and "3 more columns" in axes[3].get_title()
    assert [t.get_text() for t in axes[3].get_legend().get_texts()] == ["t6", "t5", "t4", "t3"]  # longest first


def test_a_run_that_added_no_rows_says_so():
    empty = ContactSheet("", 0, 0, 128, 70, 0)
    preview = PartitionPreview(empty, "added", {}, b"", {})
    assert preview.sheet_text() == "no rows added by this run"
    no_images = PartitionPreview(ContactSheet("", 0, 3, 128, 70, 0), "added", {}, b"", {})
    assert no_images.sheet_text() == "no images among rows this run added"


