"""Delete and GC on both backends: shared assets survive, unshared ones go after GC's grace and retention, dry
runs change nothing and predict the real run, a run holding a partition refuses both, index entries go too."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.catalog.verify import verify_lake
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.locks import PartitionBusy, exclusive_lock
from datalake_pipelines.core.lake.protocol import ClaimOptions
from datalake_pipelines.core.lifecycle.gc import LakeBusy, parse_duration

SHARED = [(10, 20, 30), (40, 50, 60)]
ALPHA = PartitionRef("inhouse", "alpha", "raw", "image")
BETA = PartitionRef("inhouse", "beta", "raw", "image")


def folder(make_jpeg, path: Path, colors) -> Path:
    for i, color in enumerate(colors):
        make_jpeg(path / f"im{i}.jpg", color=color)
    return path


def listing(lake, prefix: str) -> dict[str, int]:
    return {o.key: o.size for o in lake.storage.list(prefix)}


def asset_paths(client, ref: PartitionRef) -> set[str]:
    with client.lake.partition_view(ref) as view:
        table = pq.read_table(next(view.partition_dir(ref).glob("*.parquet")))
    return set(table.column("image").to_pylist())


@pytest.fixture
def two_datasets(client, make_jpeg, tmp_path):
    """alpha: two images shared with beta and two of its own; beta: the shared two and one of its own."""
    client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [*SHARED, (1, 1, 1), (2, 2, 2)]), "inhouse", "alpha")
    client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [*SHARED, (3, 3, 3)]), "inhouse", "beta")
    assert [r.status for r in client.process_pending()] == ["done", "done"]
    return client


def beta_download(client, out: Path) -> tuple[bytes, dict[str, bytes]]:
    client.download({"datasets": ["beta"]}, "parquet", out)
    data = (out / "data.parquet").read_bytes()
    paths = pq.read_table(out / "data.parquet").column("image").to_pylist()
    return data, {p: client.lake.storage.read_bytes(p) for p in paths}


def test_delete_dataset_keeps_shared_assets_and_gc_collects_the_rest(two_datasets, tmp_path):
    client, lake = two_datasets, two_datasets.lake
    alpha_assets, beta_assets = asset_paths(client, ALPHA), asset_paths(client, BETA)
    shared, unshared = alpha_assets & beta_assets, alpha_assets - beta_assets
    assert len(shared) == 2 and len(unshared) == 2
    before = beta_download(client, tmp_path / "before")
    catalog, assets = listing(lake, keys.CATALOG), listing(lake, keys.ASSETS)

    plan = client.delete(dataset="inhouse/alpha", dry_run=True)
    assert (plan["rows"], plan["partitions_removed"], plan["assets_freed"]) == (4, 1, 2)
    assert plan["bytes_freed"] == sum(assets[p] for p in unshared)
    assert listing(lake, keys.CATALOG) == catalog and listing(lake, keys.ASSETS) == assets
    assert listing(lake, keys.RETAINED) == {} and listing(lake, keys.LIFECYCLE) == {}

    done = client.delete(dataset="inhouse/alpha")
    for key in ("rows", "partitions", "partitions_removed", "assets_freed", "bytes_freed"):
        assert done[key] == plan[key], key
    assert lake.partitions() == [BETA]
    assert listing(lake, keys.ASSETS) == assets  # delete never touches assets
    retained = listing(lake, keys.retained(done["deletion_id"]))
    assert keys.deletion_record(done["deletion_id"]) in retained and any(k.endswith(".parquet") for k in retained)
    record = json.loads(lake.storage.read_bytes(keys.lifecycle_record(done["deletion_id"])))
    assert record["action"] == "delete" and "@" in record["who"] and record["rows"] == 4
    assert beta_download(client, tmp_path / "after") == before

    # retained catalog files keep their assets referenced, whatever the grace
    kept = client.gc(grace=0)
    assert (kept["collected"], kept["retained_purged"]) == (0, [])
    assert all(lake.storage.exists(p) for p in alpha_assets)
    # the retention passed: the unshared assets are garbage, but within the grace period they stay
    young = client.gc(grace="24h", retention=0)
    assert young["collected"] == 0 and young["within_grace"] == 2 and young["retained_purged"] == [done["deletion_id"]]
    assert listing(lake, keys.RETAINED) == {}
    dry = client.gc(grace=0, retention=0, dry_run=True)
    assert all(lake.storage.exists(p) for p in alpha_assets)
    swept = client.gc(grace=0, retention=0)
    for key in ("collected", "bytes", "index_entries_removed"):
        assert swept[key] == dry[key], key
    assert (swept["collected"], swept["bytes"], swept["index_entries_removed"]) == (2, plan["bytes_freed"], 2)
    assert not any(lake.storage.exists(p) for p in unshared)
    assert all(lake.storage.exists(p) for p in shared | beta_assets)
    assert beta_download(client, tmp_path / "after-gc") == before
    assert verify_lake(client.base_path)["ok"]
    assert client.gc(grace=0, retention=0)["collected"] == 0  # a second run finds nothing


def test_collected_content_is_stored_again_on_upload(two_datasets, make_jpeg, tmp_path):
    client, lake = two_datasets, two_datasets.lake
    unshared = asset_paths(client, ALPHA) - asset_paths(client, BETA)
    client.delete(dataset="inhouse/alpha")
    client.gc(grace=0, retention=0)
    shas = {Path(p).name.split(".")[0] for p in unshared}
    with lake.hash_index() as index:
        assert index is not None and index.get_many(sorted(shas)) == {}
    client.upload_raw_data(folder(make_jpeg, tmp_path / "again", [(1, 1, 1)]), "inhouse", "gamma")
    assert [r.status for r in client.process_pending()] == ["done"]
    (path,) = asset_paths(client, PartitionRef("inhouse", "gamma", "raw", "image"))
    assert path.startswith("assets/provider=inhouse/dataset=gamma/") and lake.storage.exists(path)
    assert Path(path).name.split(".")[0] in shas
    with lake.hash_index() as index:
        assert index is not None and index.get(Path(path).name.split(".")[0]) is not None
    assert verify_lake(client.base_path)["ok"]


def test_delete_one_batch_keeps_the_partition_compacted(client, make_jpeg, tmp_path):
    lake = client.lake
    _, first = client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1), (2, 2, 2)]), "inhouse", "alpha")
    client.process_pending()
    _, second = client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [(3, 3, 3)]), "inhouse", "alpha")
    client.process_pending()
    assert client.delete(batch=first, dry_run=True)["rows"] == 2
    done = client.delete(batch=first)
    assert (done["rows"], done["partitions_removed"], done["assets_freed"]) == (2, 0, 2)
    names = sorted(k.rsplit("/", 1)[-1] for k in listing(lake, keys.partition(ALPHA)))
    assert names == [keys.PARTITION_METADATA, keys.COMPACTED_PART]
    meta = json.loads(lake.storage.read_bytes(keys.partition_metadata(ALPHA)))
    assert [b["job_id"] for b in meta["batches"]] == [second] and meta["row_count"] == 1
    assert meta["deletions"][0]["deletion_id"] == done["deletion_id"]
    with lake.partition_view(ALPHA) as view:
        table = pq.read_table(view.compacted_file(ALPHA))
    assert table.column("batch_id").to_pylist() == [second]
    assert done["warehouse"]["rows"] == 1  # catalog.duckdb refreshed
    with pytest.raises(ValueError, match=f"batch {first} was already deleted by deletion {done['deletion_id']}"):
        client.delete(batch=first)
    client.delete(batch=second)  # the last batch: the partition goes
    assert lake.partitions() == [] and listing(lake, keys.partition(ALPHA)) == {}


def test_delete_and_gc_are_refused_while_a_batch_of_the_partition_is_claimed(two_datasets, make_jpeg, tmp_path):
    client, lake = two_datasets, two_datasets.lake
    client.delete(dataset="inhouse/beta")
    client.upload_raw_data(folder(make_jpeg, tmp_path / "c", [(9, 9, 9)]), "inhouse", "alpha")
    claimed = lake.claim_ready({}, ClaimOptions(quiet_seconds=0))
    assert list(claimed.groups) == [ALPHA]
    catalog = listing(lake, keys.CATALOG)
    with pytest.raises(PartitionBusy, match="inhouse/alpha/raw/image is held by batch"):
        client.delete(dataset="inhouse/alpha")
    with pytest.raises(LakeBusy):
        client.gc(grace=0, retention=0)
    assert listing(lake, keys.CATALOG) == catalog
    assert client.delete(dataset="inhouse/alpha", dry_run=True)["rows"] == 4  # a dry run is never refused
    assert client.gc(grace=0, retention=0, dry_run=True)["collected"] == 1  # beta's own image


def test_delete_is_refused_while_a_local_run_holds_the_partition_lock(tmp_path, make_jpeg):
    from datalake_pipelines import DatalakeClient

    client = DatalakeClient(tmp_path / "lake", progress=False)
    client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1)]), "inhouse", "alpha")
    client.process_pending()
    with exclusive_lock(client.layout.partition_lock(ALPHA)):
        with pytest.raises(PartitionBusy, match="locked by a run"):
            client.delete(partition=ALPHA.key)
    assert client.lake.partitions() == [ALPHA]
    assert client.delete(partition=ALPHA.key)["rows"] == 1


def test_selection_and_durations_are_checked():
    from datalake_pipelines.core.lifecycle.delete import DeleteSelection

    with pytest.raises(ValueError, match="exactly one"):
        DeleteSelection(batch="b", provider="p")
    with pytest.raises(ValueError, match="provider/dataset"):
        DeleteSelection(dataset="alpha")
    assert parse_duration("24h") == 86400 and parse_duration("7d") == 7 * 86400 and parse_duration("0") == 0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_data_files_are_roots_and_gc_never_takes_them(client, tmp_path):
    source = tmp_path / "notes.bin"
    source.write_bytes(b"a data file no row references")
    doc = client.create_data_file(source)
    report = client.gc(grace=0, retention=0)
    assert report["collected"] == 0 and report["referenced"] == 1
    assert client.lake.storage.read_bytes(doc["path"]) == source.read_bytes()


def test_compaction_dropping_every_row_leaves_no_temporary_file(tmp_path):
    import pandas as pd

    from datalake_pipelines import DatalakeClient
    from datalake_pipelines.core.catalog.parts import compact_partition

    client = DatalakeClient(tmp_path / "lake", progress=False)
    _, job = client.upload_raw_data(pd.DataFrame({"text": ["a", "b"]}), "inhouse", "alpha")
    client.process_pending()
    ref = PartitionRef("inhouse", "alpha", "raw", "mixed")
    result = compact_partition(client.layout, ref, drop_batches=frozenset([job]))
    assert (result.rows, result.rows_deleted, result.path) == (0, 2, None)
    assert sorted(p.name for p in client.layout.partition_dir(ref).iterdir()) == [keys.PARTITION_METADATA]


def test_gc_marks_again_when_a_compaction_replaces_a_part_it_listed(client, make_jpeg, tmp_path, monkeypatch):
    from datalake_pipelines.core.lifecycle import refs

    for name, color in (("a", (1, 1, 1)), ("b", (2, 2, 2))):
        client.upload_raw_data(folder(make_jpeg, tmp_path / name, [color]), "inhouse", "alpha")
        client.process_pending()
    lake = client.lake
    assert len(list(refs.parquet_objects(lake.storage, keys.partition(ALPHA)))) == 2
    real, compacted = refs.part_references, []

    def compact_first(storage, key, drop=None):
        if not compacted:  # another process compacts right after GC listed the part files
            compacted.append(lake.rebuild_partition(ALPHA, 1000))
        return real(storage, key, drop)

    monkeypatch.setattr(refs, "part_references", compact_first)
    report = client.gc(grace=0, retention=0)
    assert compacted and report["collected"] == 0 and report["referenced"] == 2
    assert verify_lake(client.base_path)["ok"]


def test_deleted_rows_uploaded_again_are_added_again(client, make_jpeg, tmp_path):
    """The row-hash index (core/ingest/row_index.py, s3_rows.py) must forget what a delete removed: the same
    rows uploaded again are new rows, not duplicates, after a batch delete and after a whole-partition delete."""
    colors = [(1, 1, 1), (2, 2, 2)]
    _, first = client.upload_raw_data(folder(make_jpeg, tmp_path / "a", colors), "inhouse", "alpha")
    client.process_pending()
    _, second = client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [(3, 3, 3)]), "inhouse", "alpha")
    client.process_pending()
    client.delete(batch=first)  # the partition stays, compacted without first's rows
    _, again = client.upload_raw_data(folder(make_jpeg, tmp_path / "a2", colors), "inhouse", "alpha")
    [result] = client.process_pending()
    assert (result.rows_added, result.rows_duplicate) == (2, 0)
    client.delete(partition=ALPHA.key)  # the partition goes
    _, last = client.upload_raw_data(folder(make_jpeg, tmp_path / "a3", colors), "inhouse", "alpha")
    [result] = client.process_pending()
    assert (result.rows_added, result.rows_duplicate) == (2, 0)
    with client.lake.partition_view(ALPHA) as view:
        rows = [r for f in sorted(view.partition_dir(ALPHA).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["batch_id"] for r in rows) == [last, last]
    assert verify_lake(client.base_path)["ok"]
