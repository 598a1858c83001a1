"""``datalake near-dups --out DIR``: the clusters as a static page, opened from the file system in headless Chromium.

A small planted lake (three originals with a JPEG q40 copy, a 90 % resize and a 2 % crop each, plus four
unrelated images; originals and copies in two partitions, ingested in that order) through the real client.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.catalog.dataset import catalog_dataset
from datalake_pipelines.core.neardup.gallery import THUMB_SIDE, write_near_dups_gallery
from datalake_pipelines.core.neardup.report import near_duplicate_report
from datalake_pipelines.core.preview.gallery import CSP

from .test_near_dups import COPIES, ORIGINALS, copies_of, make_image

GROUPS, UNRELATED = 3, 4


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    """``(base, {row_hash: catalog row})`` of the planted lake."""
    root = tmp_path_factory.mktemp("ndgal")
    src = root / "src"
    src.mkdir()
    originals, copies = [], []
    for g in range(GROUPS + UNRELATED):
        path = src / f"o{g}.jpg"
        make_image(2000 + g).save(path, "JPEG", quality=92)
        kind = "original" if g < GROUPS else "unrelated"
        originals.append({"image": str(path), "doc_id": f"{kind}-{g}", "group": g, "kind": kind})
        if g < GROUPS:
            for kind, (im, fmt, opts) in copies_of(Image.open(path).convert("RGB")).items():
                copy = src / f"c{g}_{kind}.{fmt.lower()}"
                im.save(copy, fmt, **opts)
                copies.append({"image": str(copy), "doc_id": f"{kind}-{g}", "group": g, "kind": kind})
    client = DatalakeClient(root / "lake", num_proc=2, batch_size=16, progress=False)
    client.upload_raw_data(pd.DataFrame(originals), "inhouse", "originals", image_columns=["image"])
    assert [r.status for r in client.process_pending()] == ["done"]
    client.upload_raw_data(pd.DataFrame(copies), "inhouse", "copies", image_columns=["image"])
    assert [r.status for r in client.process_pending()] == ["done"]
    rows = catalog_dataset(root / "lake").to_table().to_pylist()
    assert len(rows) == GROUPS * 4 + UNRELATED
    return root / "lake", {r["row_hash"]: r for r in rows}


def test_near_dups_page_renders_offline_in_chromium(small_lake, tmp_path, capsys, browser):
    base, rows = small_lake
    out = tmp_path / "near_dups"
    assert main(["near-dups", "--base-path", str(base), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cluster_count"] == GROUPS
    page = doc["gallery"]
    assert page["clusters_shown"] == GROUPS and page["thumbnails"] == page["members_shown"] == GROUPS * 4
    assert page["images"] == GROUPS * 4 and page["skipped"] == []

    browser.get(out.joinpath("index.html").as_uri())
    assert browser.title == "near-duplicates (threshold 8)"
    policy = browser.execute_script(
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content"
    )
    assert policy == CSP
    # every thumbnail decoded, at the size of its file (fitted into 192 px)
    imgs = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, "
        "i.naturalHeight])"
    )
    assert len(imgs) == GROUPS * 4
    for src, done, width, height in imgs:
        assert done and width > 0 and (width, height) == Image.open(out / src).size, (src, width, height)
        assert max(width, height) <= THUMB_SIDE

    # each planted cluster is one row holding exactly its four members, the original first and kept
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.cluster')).map(s => Array.from("
        "s.querySelectorAll('figure.member')).map(f => [f.dataset.rowHash, f.dataset.partition, "
        "f.dataset.distance, f.dataset.kept, f.querySelector('figcaption').innerText, "
        "f.getBoundingClientRect().top, f.getBoundingClientRect().left]))"
    )
    assert len(sections) == GROUPS
    groups_seen = set()
    by_hash = {m["row_hash"]: m for c in doc["clusters"] for m in c["members"]}
    for figures in sections:
        members = [rows[f[0]] for f in figures]
        groups = {m["group"] for m in members}
        assert len(groups) == 1 and len(figures) == 4, [m["doc_id"] for m in members]
        groups_seen |= groups
        assert sorted(m["kind"] for m in members) == ["crop_2pct", "jpeg_q40", "original", "resize_90"]
        assert members[0]["kind"] == "original" and figures[0][1] == ORIGINALS and figures[0][3] == "true"
        assert all(f[1] == COPIES and f[3] == "false" for f in figures[1:])
        for (row_hash, partition, distance, _, caption, top, _), row in zip(figures, members):
            assert int(distance) == by_hash[row_hash]["distance"]
            assert row["doc_id"] in caption and partition in caption and row_hash[:16] in caption
            assert ("kept" in caption) == (row["kind"] == "original")
            if row["kind"] != "original":
                assert f"d = {distance} bits" in caption
            assert top == figures[0][5]  # side by side: one line
        assert [f[6] for f in figures] == sorted(f[6] for f in figures)
    assert groups_seen == set(range(GROUPS))
    text = browser.find_element("tag name", "body").text
    assert "unrelated" not in text

    # nothing outside the folder: every src/href is a relative path to a file inside it, and every resource
    # the page loaded is a file inside it (Chromium keeps no resource timing for file:// loads, so any entry
    # here would be a network request)
    refs = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || "
        "e.getAttribute('href'))"
    )
    assert len(refs) == GROUPS * 4 * 3  # thumbnail, its link and the caption's link
    for ref in refs:
        assert "://" not in ref and not ref.startswith(("/", "//", "data:")), ref
        assert (out / ref).resolve().is_file() and out.resolve() in (out / ref).resolve().parents
    for url in browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"):
        parsed = urlparse(url)
        assert parsed.scheme == "file" and out.resolve() in Path(unquote(parsed.path)).resolve().parents, url
    # a thumbnail links to the copy of the full image
    first = sections[0][0][0]
    browser.get(browser.execute_script(f"return document.querySelector('[data-row-hash=\"{first}\"] a').href"))
    assert (
        browser.execute_script("return document.images[0].naturalWidth")
        == Image.open(base / rows[first]["image"]).size[0]
    )


def test_partition_scope_limit_and_existing_folder(small_lake, tmp_path, capsys):
    base, rows = small_lake
    out = tmp_path / "page"
    code = main(["near-dups", "--base-path", str(base), "--partition", COPIES, "--limit", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert f"wrote 2 cluster(s), 8 thumbnails to {out.resolve() / 'index.html'}" in text
    html = (out / "index.html").read_text()
    assert html.count('<section class="cluster"') == 2 and f"touching {COPIES}" in html
    assert "1 more not shown (limit)" in html
    (out / "mine.txt").write_text("keep")
    assert main(["near-dups", "--base-path", str(base), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep"
    assert main(["near-dups", "--base-path", str(base), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and (out / "index.html").read_text().count('<section class="cluster"') == 3
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_an_unreadable_member_is_captioned_not_fatal(small_lake, tmp_path):
    base, _ = small_lake
    report = near_duplicate_report(str(base))
    broken = report["clusters"][0]["members"][1]

    def read(path: str) -> bytes:
        if path == broken["path"]:
            return b"not an image"
        return (base / path).read_bytes()

    page = write_near_dups_gallery(report, read, tmp_path / "p", per_cluster=3)
    assert page["members_shown"] == GROUPS * 3 and page["thumbnails"] == GROUPS * 3 - 1
    assert len(page["skipped"]) == 1 and broken["path"] in page["skipped"][0]
    html = (tmp_path / "p" / "index.html").read_text()
    assert html.count("no preview: UnidentifiedImageError") == 1 and html.count("1 more not shown") == GROUPS
    with pytest.raises(ValueError):
        write_near_dups_gallery(report, read, tmp_path / "q", per_cluster=0)  # limit=0 is allowed: no clusters
    assert not (tmp_path / "q").exists()
