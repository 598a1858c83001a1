"""Review of issue 16 on both backends: the freed figure of a delete matches what GC then removes, lineage and
status of a deleted batch, as_of checked before any work starts."""

from __future__ import annotations

from pathlib import Path

from datalake_pipelines.core.lake import keys


def folder(make_jpeg, path: Path, colors) -> Path:
    for i, color in enumerate(colors):
        make_jpeg(path / f"im{i}.jpg", color=color)
    return path


def asset_count(lake) -> int:
    return sum(1 for _ in lake.storage.list(keys.ASSETS))


def test_assets_freed_by_successive_deletions_equal_what_gc_removes(client, make_jpeg, tmp_path):
    """A second deletion in a partition: the retained copy of the first deletion holds its rows too, yet expires
    first, so those assets are freed by the second deletion and must be counted there."""
    lake = client.lake
    batches = []
    for name, colors in (("a", [(1, 1, 1), (2, 2, 2)]), ("b", [(3, 3, 3), (4, 4, 4), (3, 3, 3)]), ("c", [(5, 5, 5)])):
        batches.append(client.upload_raw_data(folder(make_jpeg, tmp_path / name, colors), "inhouse", "alpha")[1])
        assert [r.status for r in client.process_pending()] == ["done"]
    before = asset_count(lake)
    freed = 0
    for batch in batches[:2]:
        plan = client.delete(batch=batch, dry_run=True)
        done = client.delete(batch=batch)
        assert done["assets_freed"] == plan["assets_freed"]
        freed += plan["assets_freed"]
    report = client.gc(grace=0, retention=0)
    assert report["collected"] == before - asset_count(lake)
    assert freed == report["collected"] == 4


def part_exists(lake, uri: str) -> bool:
    assert uri.startswith(f"{lake.storage.uri}/"), uri
    return lake.storage.exists(uri[len(lake.storage.uri) + 1 :])


def test_a_deleted_batch_shows_deleted_and_no_part_file_is_gone(client, make_jpeg, tmp_path):
    lake = client.lake
    _, first = client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1)]), "inhouse", "alpha")
    client.process_pending()
    _, second = client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [(2, 2, 2)]), "inhouse", "alpha")
    client.process_pending()
    done = client.delete(batch=first)  # the second batch's part is compacted into data.parquet

    gone = client.lineage(first)["batch"]
    assert gone["status"] == "deleted" and gone["part_file"] is None
    assert gone["deletion"]["deletion_id"] == done["deletion_id"] and gone["deletion"]["who"] == done["who"]
    assert gone["deletion"]["deleted_at"] == done["deleted_at"]
    status = lake.status(first)
    assert status is not None and status["state"] == "deleted" and len(status) == 11
    assert done["deletion_id"] in status["error"] and done["who"] in status["error"]

    kept = client.lineage(second)["batch"]
    assert kept["status"] == "done" and kept["deletion"] is None and part_exists(lake, kept["part_file"])
    status = lake.status(second)
    assert status is not None and status["state"] == "done" and part_exists(lake, status["path"])

    client.delete(dataset="inhouse/alpha")
    assert lake.status(second)["state"] == "deleted" and client.lineage(second)["batch"]["part_file"] is None


def test_as_of_unparseable_or_in_the_future_is_refused_before_any_work(client, make_jpeg, tmp_path, base, capsys):
    from datetime import datetime, timedelta, timezone

    import pytest

    from datalake_pipelines.cli.main import main
    from datalake_pipelines.core.catalog.query import DuckDBClient
    from datalake_pipelines.core.export.errors import ExportError
    from datalake_pipelines.core.lifecycle.as_of import AsOfError
    from datalake_pipelines.services.runner import get_instance

    client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1)]), "inhouse", "alpha")
    client.process_pending()
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    runs = len(get_instance().get_runs())
    for bad, words in (("not-a-time", "neither an ISO 8601"), (future, "in the future")):
        with pytest.raises(ExportError, match=words) as caught:
            client.create_export(tmp_path / "x", export_all=True, as_of=bad, wait=True)
        assert caught.value.code == "AS_OF_UNAVAILABLE"
        with pytest.raises(ExportError, match=words):
            client.create_export(tmp_path / "x", export_all=True, as_of=bad)
    assert len(get_instance().get_runs()) == runs  # no export task was created
    assert list(client.lake.storage.list("exports")) == [] and not (tmp_path / "x").exists()

    with DuckDBClient(client.base_path) as duck, pytest.raises(AsOfError, match="in the future"):
        duck.retrieve_with_existing_cols(as_arrow=True, as_of=future)
    with pytest.raises(AsOfError, match="in the future"):
        client.download({"datasets": ["alpha"]}, "parquet", tmp_path / "dl", as_of=future)
    capsys.readouterr()
    assert main(["--base-path", base, "download", "--all", "--as-of", future, "--out", str(tmp_path / "c")]) == 1
    assert "in the future" in capsys.readouterr().err
    code = main(["--base-path", base, "export", "create", "--export-all", "--now", "--destination",
                 str(tmp_path / "y"), "--as-of", future])  # fmt: skip
    assert code != 0 and "in the future" in capsys.readouterr().err


def test_gc_batch_size_is_one_to_a_thousand(tmp_path, capsys):
    import pytest

    from datalake_pipelines import DatalakeClient
    from datalake_pipelines.cli.main import main
    from datalake_pipelines.core.lifecycle.gc import collect_garbage

    base = str(tmp_path / "lake")
    for bad in ("0", "1001", "-5", "many"):
        assert main(["--base-path", base, "gc", "--dry-run", "--batch-size", bad]) == 2
        err = capsys.readouterr().err
        assert "--batch-size" in err and ("1..1000" in err or "whole number" in err), err
    for good in ("1", "1000"):
        assert main(["--base-path", base, "gc", "--dry-run", "--batch-size", good]) == 0
    with pytest.raises(ValueError, match="1..1000"):
        collect_garbage(DatalakeClient(base, progress=False).lake, dry_run=True, batch=1001)


def test_a_closed_stdout_ends_the_cli_quietly_with_141(client, make_jpeg, tmp_path):
    import os
    import subprocess
    import sys

    client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1)]), "inhouse", "alpha")
    client.process_pending()
    entry = "import sys; from datalake_pipelines.cli import main; sys.exit(main())"  # the console script's body
    for command in (["--json", "gc", "--dry-run"], ["catalog", "versions"], ["--json", "process", "list"]):
        argv = [sys.executable, "-c", entry, "--base-path", str(client.base_path), *command]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        proc.stdout.close()  # the reader is gone before anything is written, as `| head -0` would be
        err = proc.stderr.read().decode()
        assert proc.wait() == 141, (command, err)
        assert "Traceback" not in err and "Exception ignored" not in err and "Broken pipe" not in err, err


def test_delete_dry_run_warns_of_a_pending_batch_that_re_creates_the_partition(
    client, make_jpeg, tmp_path, base, capsys
):
    from datalake_pipelines.cli.main import main

    client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1)]), "inhouse", "alpha")
    client.process_pending()
    _, waiting = client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [(2, 2, 2)]), "inhouse", "alpha")
    client.upload_raw_data(folder(make_jpeg, tmp_path / "c", [(3, 3, 3)]), "inhouse", "beta")  # not selected
    plan = client.delete(dataset="inhouse/alpha", dry_run=True)
    assert plan["waiting_batches"] == [{"job_id": waiting, "state": "pending", "partition": "inhouse/alpha/raw/image"}]
    capsys.readouterr()
    assert main(["--base-path", base, "delete", "--dataset", "inhouse/alpha", "--dry-run"]) == 0
    assert f"warning: batch {waiting} of inhouse/alpha/raw/image is pending" in capsys.readouterr().out
    client.delete(dataset="inhouse/alpha")
    client.process_pending()  # the pending batch re-creates the partition, as the README says
    assert client.lake.status(waiting)["state"] == "done"
    assert [r.key for r in client.lake.partitions()] == ["inhouse/alpha/raw/image", "inhouse/beta/raw/image"]


def test_delete_job_removes_the_dynamic_partition_keys_of_removed_partitions(client, make_jpeg, tmp_path, base):
    import dagster as dg

    from datalake_pipelines.definitions import defs
    from datalake_pipelines.lib.partitions import LAKE_PARTITIONS
    from datalake_pipelines.lib.resources import LakeResource

    _, first = client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 1, 1)]), "inhouse", "alpha")
    client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [(2, 2, 2)]), "inhouse", "beta")
    client.process_pending()
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(LAKE_PARTITIONS, ["inhouse/alpha/raw/image", "inhouse/beta/raw/image"])
    job, resources = defs.resolve_job_def("delete_job"), {"lake": LakeResource(base_path=base)}

    def run(**selection) -> dict:
        config = {"ops": {"delete_rows": {"config": selection}}}
        result = job.execute_in_process(run_config=config, resources=resources, instance=instance)
        assert result.success
        return result.output_for_node("delete_rows")

    assert "dynamic_partitions_removed" not in run(dataset="inhouse/alpha")  # a dry run changes nothing
    assert instance.get_dynamic_partitions(LAKE_PARTITIONS) == ["inhouse/alpha/raw/image", "inhouse/beta/raw/image"]
    assert run(batch=first, dry_run=False)["dynamic_partitions_removed"] == ["inhouse/alpha/raw/image"]
    assert instance.get_dynamic_partitions(LAKE_PARTITIONS) == ["inhouse/beta/raw/image"]


def test_lineage_of_an_asset_whose_rows_were_all_deleted_names_the_deletion(client, make_jpeg, tmp_path):
    """An asset still stored (GC has not run) whose every row was deleted: lineage says so and names the deletion
    of its first batch, instead of a bare "0 row(s)"."""
    import hashlib

    from datalake_pipelines.core.lifecycle.lineage import lineage_text

    source = folder(make_jpeg, tmp_path / "a", [(9, 9, 9)])
    sha = hashlib.sha256((source / "im0.jpg").read_bytes()).hexdigest()
    _, batch = client.upload_raw_data(source, "inhouse", "alpha")
    client.process_pending()
    assert len(client.lineage(sha)["rows"]) == 1
    done = client.delete(batch=batch)

    doc = client.lineage(sha)
    assert doc["kind"] == "asset" and doc["rows"] == []
    assert doc["first_batch"]["status"] == "deleted"
    assert doc["first_batch"]["deletion"]["deletion_id"] == done["deletion_id"]
    text = lineage_text(doc)
    assert "0 row(s)" not in text
    assert "no catalog row references it" in text and done["deletion_id"] in text and "gc" in text


def test_a_refused_hand_drop_under_a_deleted_id_is_named_by_its_status(client, make_jpeg, tmp_path):
    """A hand drop reusing a deleted batch's id is refused into staging/failed/<id>; ``process status`` keeps saying
    ``deleted`` (the lake's record) and names the refused drop, where it is kept and why."""
    lake = client.lake
    _, batch = client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(4, 5, 6)]), "inhouse", "alpha")
    client.process_pending()
    done = client.delete(batch=batch)
    image = make_jpeg(tmp_path / "new.jpg", color=(7, 7, 7)).read_bytes()
    lake.storage.write_bytes(f"{keys.pending_batch(batch)}/new.jpg", image)
    lake.storage.write_bytes(
        f"{keys.pending_batch(batch)}/_metadata.json", b'{"provider": "inhouse", "dataset": "alpha"}'
    )
    from datalake_pipelines.core.ingest.processing import ProcessOptions

    assert lake.process_pending(ProcessOptions(), quiet_seconds=0) == []  # the drop is complete: no quiet wait
    assert lake.storage.read_bytes(f"{keys.failed_batch(batch)}/new.jpg") == image
    status = lake.status(batch)
    assert status["state"] == "deleted" and len(status) == 11
    assert done["deletion_id"] in status["error"] and "a later hand drop under this id was refused" in status["error"]
    assert keys.failed_batch(batch) in status["error"]


def test_gc_leaves_catalog_duckdb_hash_index_matching_the_index(client, make_jpeg, tmp_path):
    """GC removed index entries but catalog.duckdb's ``hash_index`` table still listed them until a rebuild."""
    import duckdb

    lake = client.lake
    _, batch = client.upload_raw_data(folder(make_jpeg, tmp_path / "a", [(1, 2, 3), (3, 2, 1)]), "inhouse", "alpha")
    client.process_pending()
    client.upload_raw_data(folder(make_jpeg, tmp_path / "b", [(8, 8, 8)]), "inhouse", "beta")
    client.process_pending()
    client.delete(batch=batch)
    report = client.gc(grace=0, retention=0)
    assert report["index_entries_removed"] == 2
    with duckdb.connect(str(lake.duckdb_file), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM hash_index").fetchone()[0] == 1
