"""The shared image corpus: every valid file ingests as EXPECTED.tsv says; every invalid one is rejected."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

# EXPECTED.tsv was measured by loading frame 0 only. The lake decodes every frame (README "Image checks"), and
# Pillow itself refuses this GIF's frame 2, which grows the canvas to 65635x65635 (4.3 Gpx): a decompression bomb.
WHOLE_FILE_REJECTS = {
    "valid/decompression_bomb_extents.gif": "DecompressionBombError: frame 2 grows the canvas to 65635x65635",
}


def expected(corpus_dir, whole_file: bool = True):
    """Rows of EXPECTED.tsv: (relative file, expect, format, width, height, mode, said).

    ``whole_file=True`` applies :data:`WHOLE_FILE_REJECTS` (what checking every frame decides)."""
    rows = []
    lines = (corpus_dir / "EXPECTED.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["file", "expect", "pillow_13_says"]
    for line in lines[1:]:
        if not line.strip():
            continue
        file, expect, says = line.split("\t")
        if whole_file and file in WHOLE_FILE_REJECTS:
            expect, says = "reject", WHOLE_FILE_REJECTS[file]
        if expect == "ingest":
            tokens = says.split("(")[0].split()
            fmt, size, mode = tokens[0], tokens[1], tokens[-1]
            width, height = (int(v) for v in size.split("x"))
            rows.append((file, expect, fmt, width, height, mode, says))
        else:
            rows.append((file, expect, None, None, None, None, says))
    return rows


def sha_file(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_expected_tsv_lists_every_corpus_file(corpus_dir):
    listed = {row[0] for row in expected(corpus_dir)}
    present = {f"{d}/{p.name}" for d in ("valid", "invalid") for p in (corpus_dir / d).iterdir()}
    assert listed == present
    assert {row[1] for row in expected(corpus_dir, whole_file=False) if row[0].startswith("valid/")} == {"ingest"}
    assert {row[1] for row in expected(corpus_dir) if row[0].startswith("invalid/")} == {"reject"}


def test_every_valid_file_ingests_with_expected_format_size_and_mode(client, lake, corpus_dir, read_catalog):
    valid = [row for row in expected(corpus_dir) if row[1] == "ingest"]
    paths = [corpus_dir / row[0] for row in valid]
    df = pd.DataFrame({"image": [str(p) for p in paths], "name": [row[0] for row in valid]})
    _, job_id = client.upload_raw_data(df, "inhouse", "corpus", image_columns=["image"])
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert result.rejected == []
    rows = {r["name"]: r for r in read_catalog()}
    assert len(rows) == len(valid)
    for (file, _expect, fmt, width, height, mode, _says), path in zip(valid, paths):
        row = rows[file]
        got = (row["image_format"], row["image_width"], row["image_height"], row["image_mode"])
        assert got == (fmt, width, height, mode), file
        assert row["image_sha256"] == sha_file(path), file
        stored = lake.resolve(row["image"])
        assert stored.read_bytes() == path.read_bytes(), file  # bytes never change silently
        assert stored.name.split(".")[0] == row["image_sha256"]


def test_invalid_files_are_rejected_per_file_while_valid_ones_ingest(client, lake, corpus_dir, read_catalog, make_jpeg):
    rows = expected(corpus_dir)
    files = [corpus_dir / row[0] for row in rows]
    df = pd.DataFrame({"image": [str(p) for p in files], "name": [row[0] for row in rows]})
    _, job_id = client.upload_raw_data(df, "inhouse", "mixed_corpus", image_columns=["image"])
    [result] = client.process_pending(max_reject_ratio=0.5)
    assert result.status == "done", result.error
    invalid = {row[0]: row[6] for row in rows if row[1] == "reject"}
    reasons = {r["source"]: r["reason"] for r in result.rejected}
    assert set(reasons) == {str(corpus_dir / f) for f in invalid}
    for file, says in invalid.items():
        reason = reasons[str(corpus_dir / file)]
        kind, _, detail = says.partition(": ")
        if kind == "DecompressionBombError":
            assert "decompression bomb" in reason.lower(), file
        elif kind == "UnidentifiedImageError":
            assert "cannot identify" in reason, file
        else:  # OSError: the same Pillow complaint, e.g. "image file is truncated"
            assert detail.split(" (")[0] in reason, (file, reason)
    catalog = {r["name"] for r in read_catalog()}
    assert catalog == {row[0] for row in rows if row[1] == "ingest"}
    assert result.rows_rejected == len(invalid)

    # The rejected rows and their files are kept, re-submittable, in failed/<job_id>-rejected.
    quarantine = lake.rejected_batch(job_id)
    error = json.loads((quarantine / "error.json").read_text())
    assert len(error["rejected"]) == len(invalid)
    table = pq.read_table(quarantine / "data.parquet")
    assert sorted(table.column("name").to_pylist()) == sorted(invalid)
    for name, rel in zip(table.column("name").to_pylist(), table.column("image").to_pylist()):
        assert (quarantine / rel).read_bytes() == (corpus_dir / name).read_bytes()
    # Fix the files, move the batch to pending, and it processes.
    fixed = {}
    for i, rel in enumerate(table.column("image").to_pylist()):
        fixed[rel] = sha_file(make_jpeg(quarantine / rel, size=(30 + i, 20)))
    (quarantine / "error.json").unlink()
    os.rename(quarantine, lake.pending_batch(quarantine.name))
    [again] = client.process_pending()
    assert again.status == "done", again.error
    assert (again.rows_added, again.rows_rejected) == (len(invalid), 0)
    assert {r["name"] for r in read_catalog()} == {row[0] for row in rows}
    assert {r["image_sha256"] for r in read_catalog() if r["name"] in invalid} == set(fixed.values())


def test_decompression_bomb_is_rejected_fast_with_bounded_memory(corpus_dir, tmp_path):
    """Run in a fresh process so its peak RSS measures only this batch."""
    script = textwrap.dedent(
        """
        import json, resource, sys, time
        import pandas as pd
        from datalake_pipelines.client import DatalakeClient
        corpus, base = sys.argv[1], sys.argv[2]
        client = DatalakeClient(base, num_proc=2, progress=False)
        df = pd.DataFrame({"image": [corpus + "/invalid/decompression_bomb.gif", corpus + "/valid/hopper.jpg"]})
        client.upload_raw_data(df, "inhouse", "bombs", image_columns=["image"])
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        [result] = client.process_pending(max_reject_ratio=0.5)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"seconds": seconds, "base_kb": base_rss, "peak_kb": peak, "result": result.to_json()}))
        """
    )
    bomb = corpus_dir / "invalid" / "decompression_bomb.gif"
    assert bomb.stat().st_size < 1_000_000  # tiny file, >4 Gpx when decoded
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script, str(corpus_dir), str(tmp_path / "lake")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    result = doc["result"]
    assert result["status"] == "done", result["error"]
    assert result["rows_added"] == 1
    [rejected] = result["rejected"]
    assert rejected["source"].endswith("decompression_bomb.gif")
    assert "decompression bomb" in rejected["reason"].lower()
    assert doc["seconds"] < 3.0
    growth_mb = (doc["peak_kb"] - doc["base_kb"]) / 1024
    assert growth_mb < 100, f"processing the bomb grew the peak RSS by {growth_mb:.0f} MB"
    assert time.perf_counter() - started < 60


def test_bomb_limit_is_read_from_the_header_before_decoding(corpus_dir):
    import tracemalloc

    from datalake_pipelines.core.ingest.images import ImageRejected, inspect_image

    data = (corpus_dir / "valid" / "xmp_test.jpg").read_bytes()  # 2000x1072 = 2.1 Mpx, legal
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ImageRejected, match="decompression bomb"):
            inspect_image(data, max_pixels=1_000_000)
        with pytest.raises(ImageRejected, match="decompression bomb"):
            inspect_image(corpus_dir / "invalid" / "decompression_bomb.gif")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * 1024 * 1024
    assert inspect_image(data).width == 2000


def test_uploading_the_corpus_folder_leaves_it_untouched(corpus_dir, client):
    before = {p: sha_file(p) for p in corpus_dir.rglob("*") if p.is_file()}
    client.upload_raw_data(str(corpus_dir / "valid"), "inhouse", "folder", image_columns=["image"])
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert result.rows_added == len(list((corpus_dir / "valid").iterdir())) - len(WHOLE_FILE_REJECTS)
    assert {p: sha_file(p) for p in corpus_dir.rglob("*") if p.is_file()} == before
