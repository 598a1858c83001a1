"""Near-duplicates: pHash at ingest (once per content), the lake-wide report, exclusion in exports and downloads.

The planted set: 45 groups of an original image and three copies (re-encoded as JPEG quality 40, resized to 90 %,
cropped by 2 % of width and height, 1 % a side, saved as PNG), plus 20 unrelated images: 200 images. Originals and
unrelated images are random shapes over coloured low-frequency noise with fine grain (varied structure: flat
colours would all hash alike). Originals go to one partition, copies to another, through the real lake.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import random
import re
from pathlib import Path

import dagster as dg
import duckdb
import imagehash
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from datalake_pipelines import DatalakeClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.catalog.dataset import catalog_dataset
from datalake_pipelines.core.ingest.hash_index import HashIndex
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.core.neardup import phash as phash_module
from datalake_pipelines.core.neardup.clusters import near_pairs
from datalake_pipelines.core.neardup.report import DEFAULT_THRESHOLD, near_duplicate_report

GROUPS, UNRELATED = 45, 20
ORIGINALS, COPIES = "inhouse/originals/raw/mixed", "inhouse/copies/raw/mixed"


def make_image(seed: int) -> Image.Image:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    w, h = rng.randint(200, 320), rng.randint(160, 280)
    cells = nrng.random((rng.randint(2, 9), rng.randint(2, 9), 3)) * 255
    im = Image.fromarray(cells.astype("uint8")).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randint(-w // 4, w), rng.randint(-h // 4, h)
        box = (x0, y0, x0 + rng.randint(10, w // 2), y0 + rng.randint(10, h // 2))
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        kind = rng.choice("erlp")
        if kind == "e":
            draw.ellipse(box, fill=fill)
        elif kind == "r":
            draw.rectangle(box, fill=fill)
        elif kind == "l":
            draw.line(box, fill=fill, width=rng.randint(2, 12))
        else:
            draw.polygon([(rng.randint(0, w), rng.randint(0, h)) for _ in range(rng.randint(3, 6))], fill=fill)
    grain = nrng.random((h, w, 1)) * 40 - 20
    return Image.fromarray(np.clip(np.asarray(im, float) + grain, 0, 255).astype("uint8"))


def copies_of(original: Image.Image) -> dict[str, tuple[Image.Image, str, dict]]:
    w, h = original.size
    dx, dy = round(w * 0.01), round(h * 0.01)
    return {
        "jpeg_q40": (original, "JPEG", {"quality": 40}),
        "resize_90": (original.resize((round(w * 0.9), round(h * 0.9)), Image.Resampling.LANCZOS), "JPEG", {}),
        "crop_2pct": (original.crop((dx, dy, w - dx, h - dy)), "PNG", {}),
    }


def build_set(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder.mkdir(parents=True)
    originals, copies = [], []
    for g in range(GROUPS + UNRELATED):
        original = make_image(1000 + g)
        path = folder / f"o{g:03d}.jpg"
        original.save(path, "JPEG", quality=92)
        originals.append({"image": str(path), "group": g, "kind": "original" if g < GROUPS else "unrelated"})
        if g >= GROUPS:
            continue
        decoded = Image.open(path).convert("RGB")
        for kind, (im, fmt, opts) in copies_of(decoded).items():
            copy = folder / f"c{g:03d}_{kind}.{fmt.lower()}"
            im.save(copy, fmt, **opts)
            copies.append({"image": str(copy), "group": g, "kind": kind})
    return pd.DataFrame(originals), pd.DataFrame(copies)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The 200-image lake (originals ingested first) and ``row_hash -> group``."""
    root = tmp_path_factory.mktemp("neardup")
    originals, copies = build_set(root / "src")
    assert len(originals) + len(copies) == 200
    client = DatalakeClient(root / "lake", num_proc=2, batch_size=64, progress=False)
    client.upload_raw_data(originals, "inhouse", "originals", image_columns=["image"])
    assert [r.status for r in client.process_pending()] == ["done"]
    client.upload_raw_data(copies, "inhouse", "copies", image_columns=["image"])
    assert [r.status for r in client.process_pending()] == ["done"]
    rows = catalog_dataset(root / "lake").to_table(columns=["row_hash", "group", "kind", "image_phash"]).to_pylist()
    assert len(rows) == 200 and all(r["image_phash"] is not None for r in rows)
    return client, {r["row_hash"]: r["group"] for r in rows}


def same_cluster_pairs(report: dict, group_of: dict) -> set[frozenset]:
    pairs = set()
    for cluster in report["clusters"]:
        rows = [m["row_hash"] for m in cluster["members"]]
        pairs |= {frozenset(p) for p in itertools.combinations(rows, 2)}
    return pairs


def test_report_finds_every_planted_pair_and_no_unrelated_pair(planted):
    client, group_of = planted
    truth = {frozenset(p) for p in itertools.combinations(group_of, 2) if group_of[p[0]] == group_of[p[1]]}
    assert len(truth) == GROUPS * 6
    scores = {}
    for threshold in (4, DEFAULT_THRESHOLD, 12, 16):
        found = same_cluster_pairs(client.near_duplicates(threshold), group_of)
        hits = len(found & truth)
        scores[threshold] = (hits / len(found) if found else 1.0, hits / len(truth))
        print(f"threshold {threshold:2d}: precision {scores[threshold][0]:.3f} recall {scores[threshold][1]:.3f} "
              f"({hits} of {len(truth)} planted pairs, {len(found) - hits} unrelated pairs)")  # fmt: skip
    report = client.near_duplicates()
    assert report["threshold"] == DEFAULT_THRESHOLD and report["images"] == 200
    assert scores[DEFAULT_THRESHOLD] == (1.0, 1.0)  # every planted pair, no unrelated pair
    assert report["cluster_count"] == GROUPS and {c["size"] for c in report["clusters"]} == {4}
    for cluster in report["clusters"]:  # the original (ingested first) is the member kept
        kept = cluster["members"][0]
        assert kept["kept"] and kept["partition"] == ORIGINALS and kept["distance"] == 0
        assert {m["partition"] for m in cluster["members"][1:]} == {COPIES}
        assert all(len(m["sha256"]) == 64 and len(m["phash"]) == 16 for m in cluster["members"])


def test_one_partition_against_the_rest_and_the_cli(planted, capsys):
    client, group_of = planted
    scoped = client.near_duplicates(partition=COPIES)
    assert scoped["scope"] == COPIES and scoped["cluster_count"] == GROUPS
    assert all(any(m["partition"] == COPIES for m in c["members"]) for c in scoped["clusters"])
    base = str(client.base_path)
    assert main(["near-dups", "--base-path", base, "--json", "--threshold", "8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cluster_count"] == GROUPS and doc["threshold"] == 8
    assert main(["near-dups", "--base-path", base, "--partition", COPIES]) == 0
    text = capsys.readouterr().out
    assert f"{GROUPS} cluster(s) touching {COPIES}" in text and text.count(" keep ") == GROUPS
    assert main(["near-dups", "--base-path", base, "--threshold", "99"]) == 1
    assert "threshold" in capsys.readouterr().err
    assert main(["near-dups", "--base-path", base, "--partition", "inhouse/nope/raw/mixed"]) == 1


def test_catalog_phash_is_imagehash_phash_and_duckdb_can_compare_it(planted):
    client, _ = planted
    lake = LakeLayout(client.base_path, create=False)
    rows = catalog_dataset(lake.base).to_table(columns=["image", "kind", "image_phash"]).to_pylist()
    png = next(r for r in rows if r["kind"] == "crop_2pct")  # fully decoded: exactly imagehash's own value
    expected = imagehash.phash(Image.open(lake.base / png["image"]))
    assert phash_module.to_hex(png["image_phash"]) == str(expected)
    jpeg = next(r for r in rows if r["kind"] == "original")  # decoded at a reduced DCT scale: a few bits apart
    assert (
        phash_module.hamming(jpeg["image_phash"], int(str(imagehash.phash(Image.open(lake.base / jpeg["image"]))), 16))
        <= 4
    )
    index = HashIndex(lake.hash_index)
    assert all(e.phash is not None for e in index.get_many([r["image"].rsplit("/", 1)[1][:64] for r in rows]).values())
    glob = str(lake.catalog_root / "**" / "*.parquet")
    close = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true) a, read_parquet('{glob}', "
        "hive_partitioning=true) b WHERE a.row_hash < b.row_hash "
        f"AND bit_count(xor(a.image_phash, b.image_phash)) <= {DEFAULT_THRESHOLD}"
    ).fetchall()[0][0]
    assert close == GROUPS * 6  # the SQL way (quadratic; fine for 200) agrees with the report


def test_export_and_download_exclude_near_duplicates(planted, tmp_path, capsys):
    client, group_of = planted
    task = client.create_export(tmp_path / "exports", export_all=True, wait=True, exclude_near_duplicates=8)
    info = client.export_info(task)
    assert info["task_status"] == "done", info
    out = Path(info["export_path"])
    table = pq.read_table(out / "data.parquet")
    manifest = json.loads((out / "export.json").read_text())
    assert table.num_rows == GROUPS + UNRELATED == manifest["rows"]
    assert sorted(table.column("group").to_pylist()) == list(range(GROUPS + UNRELATED))  # one row per group
    assert set(table.column("kind").to_pylist()) == {"original", "unrelated"}  # the earliest ingested is kept
    assert manifest["near_duplicates"]["rows_excluded"] == GROUPS * 3
    assert manifest["near_duplicates"]["clusters"] == GROUPS
    excluded = json.loads((out / "near_duplicates.json").read_text())["excluded"]
    assert len(excluded) == GROUPS * 3
    assert all(group_of[e["row_hash"]] == group_of[e["kept_row_hash"]] for e in excluded)
    assert {e["partition"] for e in excluded} == {COPIES}

    manifest = client.download({"columns": ["image", "group"], "limit": 50}, "parquet", tmp_path / "dl",
                               exclude_near_duplicates=8)  # fmt: skip
    table = pq.read_table(tmp_path / "dl" / "data.parquet")
    assert table.column_names == ["image", "group"] and table.num_rows == 50 == manifest["rows"]
    assert len(set(table.column("group").to_pylist())) == 50  # no two near-duplicates among the rows kept
    assert manifest["near_duplicates"]["rows_excluded"] == GROUPS * 3
    base = str(client.base_path)
    args = ["download", "--base-path", base, "--all", "--out", str(tmp_path / "cli"), "--json"]
    assert main([*args, "--exclude-near-duplicates", "0"]) == 0  # 0 bits: one row per distinct pHash
    distinct = len(set(catalog_dataset(base).to_table(columns=["image_phash"]).column(0).to_pylist()))
    assert GROUPS + UNRELATED < distinct < 200  # re-encoding and resizing often keep every bit
    assert json.loads(capsys.readouterr().out)["rows"] == distinct


def test_near_duplicates_asset_shows_clusters_as_thumbnails(planted):
    from datalake_pipelines.defs.neardup.assets import near_duplicates
    from datalake_pipelines.lib.resources import LakeResource

    client, _ = planted
    result = dg.materialize([near_duplicates], resources={"lake": LakeResource(base_path=str(client.base_path))})
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["clusters"].value == GROUPS and metadata["images"].value == 200
    markdown = metadata["thumbnails"].value
    assert len(markdown) <= 60_000
    uris = re.findall(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert len(uris) >= 12 and len(uris) % 4 == 0  # whole clusters of 4, side by side
    for uri in uris:
        im = Image.open(io.BytesIO(base64.b64decode(uri)))
        im.load()
        assert im.format == "JPEG" and max(im.size) <= 96
    assert "more clusters not shown" in markdown


def test_phash_is_computed_once_per_content(client, lake, tmp_path, monkeypatch, make_jpeg):
    calls = []
    real = imagehash.phash

    def counting(image, *args, **kwargs):
        calls.append(image.size)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(phash_module.imagehash, "phash", counting)
    sources = [make_jpeg(tmp_path / f"s/{i}.jpg", (120, 90)) for i in range(3)]
    png = tmp_path / "s/p.png"
    make_image(7).save(png)
    df = pd.DataFrame({"image": [str(p) for p in [*sources, png]]})

    def ingest(dataset):
        client.upload_raw_data(df, "inhouse", dataset, image_columns=["image"])
        [result] = client.process_pending()
        assert result.status == "done"
        return result

    first = ingest("a")
    assert first.images_new == 4 and len(calls) == 4
    second = ingest("b")  # dedup hits: the index holds the hash
    assert second.images_deduplicated == 4 and len(calls) == 4
    rows = catalog_dataset(lake.base).to_table(columns=["dataset", "image_sha256", "image_phash"]).to_pylist()
    by_sha = {}
    for r in rows:
        by_sha.setdefault(r["image_sha256"], set()).add(r["image_phash"])
    assert len(by_sha) == 4 and all(len(v) == 1 and None not in v for v in by_sha.values())

    monkeypatch.setenv("DATALAKE_PHASH", "0")  # off: new images get no hash
    new = make_jpeg(tmp_path / "s/new.jpg", (120, 90))
    df = pd.DataFrame({"image": [str(new)]})
    ingest("c")
    assert len(calls) == 4
    [entry] = [e for e in HashIndex(lake.hash_index).get_many([r["image_sha256"] for r in catalog_dataset(
        lake.base, datasets="c").to_table().to_pylist()]).values()]  # fmt: skip
    assert entry.phash is None
    monkeypatch.delenv("DATALAKE_PHASH")  # on again: a hit without a hash computes it once and records it
    ingest("d")
    assert len(calls) == 5 and HashIndex(lake.hash_index).get(entry.sha256).phash is not None
    ingest("e")
    assert len(calls) == 5
    rows = catalog_dataset(lake.base, datasets=["c", "d", "e"]).to_table().to_pylist()
    assert [r["image_phash"] is None for r in sorted(rows, key=lambda r: r["dataset"])] == [True, False, False]


def test_s3_lake_records_phash_and_reports_clusters(s3_lake, tmp_path):
    client = DatalakeClient(s3_lake, num_proc=2, batch_size=4, progress=False)
    original = make_image(5)
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.png"]
    original.save(paths[0], "JPEG", quality=92)
    original.save(paths[1], "JPEG", quality=40)
    make_image(6).save(paths[2])
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in paths]}), "inhouse", "s3set",
                           image_columns=["image"])  # fmt: skip
    assert [r.status for r in client.process_pending()] == ["done"]
    report = client.near_duplicates()
    assert report["images"] == 3 and report["cluster_count"] == 1
    [cluster] = report["clusters"]
    assert cluster["size"] == 2 and cluster["max_distance"] <= 4


def test_near_pairs_equal_brute_force_and_scope():
    rng = np.random.default_rng(3)
    base = rng.integers(-(2**63), 2**63 - 1, 400, dtype=np.int64)
    variants = [base]
    for bits in range(1, 14):
        flips = np.zeros(len(base), np.uint64)
        for t in range(len(base)):
            for b in rng.choice(64, bits, replace=False):
                flips[t] |= np.uint64(1) << np.uint64(b)
        variants.append((base.view(np.uint64) ^ flips).view(np.int64))
    hashes = np.unique(np.concatenate(variants))
    u = hashes.view(np.uint64)
    distance = np.bitwise_count(u[:, None] ^ u[None, :])
    scope = rng.random(len(hashes)) < 0.2
    for threshold in (0, 1, 4, 8, 10, 13):
        i, j, d = near_pairs(hashes, threshold)
        bi, bj = np.nonzero(np.triu(distance <= threshold, 1))
        assert set(zip(i.tolist(), j.tolist())) == set(zip(bi.tolist(), bj.tolist()))
        assert (d == distance[i, j]).all()
        i, j, _ = near_pairs(hashes, threshold, scope)
        touching = {(a, b) for a, b in zip(bi.tolist(), bj.tolist()) if scope[a] or scope[b]}
        assert set(zip(i.tolist(), j.tolist())) == touching
    with pytest.raises(ValueError, match="threshold"):
        near_pairs(hashes, 25)
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_report(".", True)
