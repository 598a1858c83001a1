"""Second review of issue 16 on both backends: a deletion's state after GC purged its retained folder, and an
already-deleted batch or row reported as deleted rather than as never there."""

from __future__ import annotations

import json

import pandas as pd

from datalake_pipelines.cli.main import main


def two_batches(client) -> tuple[str, str]:
    _, first = client.upload_raw_data(pd.DataFrame({"text": ["gone"]}), "inhouse", "alpha")
    _, second = client.upload_raw_data(pd.DataFrame({"text": ["kept"]}), "inhouse", "alpha")
    assert {r.status for r in client.process_pending()} == {"done"}
    return first, second


def test_status_and_lineage_say_when_gc_purged_the_retained_folder(client, base, capsys):
    first, _ = two_batches(client)
    done = client.delete(batch=first)
    assert client.lake.status(first)["path"].endswith(done["retained"])
    report = client.gc(grace=0, retention=0)
    assert report["retained_purged"] == [done["deletion_id"]]

    status = client.lake.status(first)
    assert status["state"] == "deleted" and status["path"] is None
    assert "purged by GC at" in status["error"] and "retained at" not in status["error"]
    deletion = client.lineage(first)["batch"]["deletion"]
    assert deletion["retained"] is None and deletion["purged_at"] and deletion["deletion_id"] == done["deletion_id"]
    capsys.readouterr()
    assert main(["--base-path", base, "process", "status", first]) == 0
    out = capsys.readouterr().out
    assert "purged by GC at" in out and "catalog_retained" not in out
    assert main(["--base-path", base, "--json", "process", "status", first]) == 0
    assert json.loads(capsys.readouterr().out)["path"] is None


def test_a_deleted_batch_or_row_is_reported_as_deleted(client, base, capsys):
    import pytest

    from datalake_pipelines.core.errors import ValidationError
    from datalake_pipelines.core.lake.batches import done_job_reused

    _, first = client.upload_raw_data(pd.DataFrame({"text": ["gone"]}), "inhouse", "alpha", job_id="jobA")
    client.upload_raw_data(pd.DataFrame({"text": ["kept"]}), "inhouse", "alpha")
    assert {r.status for r in client.process_pending()} == {"done"}
    row_hash = client.lineage(first)["rows"][0]["row_hash"]
    done = client.delete(batch=first)

    capsys.readouterr()
    assert main(["--base-path", base, "delete", "--batch", first]) == 1
    err = capsys.readouterr().err
    assert f"batch {first} was already deleted by deletion {done['deletion_id']}" in err and done["deleted_at"] in err

    row = client.lineage(row_hash)
    assert row["kind"] == "row" and row["deleted"] and row["rows"][0]["deletion_id"] == done["deletion_id"]
    assert row["rows"][0]["batch"]["status"] == "deleted"
    assert main(["--base-path", base, "lineage", row_hash]) == 0
    assert f"deleted by deletion {done['deletion_id']}" in capsys.readouterr().out

    with pytest.raises(ValidationError, match="its batch was deleted"):
        client.upload_raw_data(pd.DataFrame({"text": ["again"]}), "inhouse", "alpha", job_id="jobA")
    reason = done_job_reused(client.lake.storage, "jobA")
    assert reason is not None and "was deleted" in reason and "is done" not in reason


def test_as_of_given_twice_differently_is_refused_and_empty_means_now(client, base, tmp_path, capsys):
    import pytest

    from datalake_pipelines.core.catalog.query import DuckDBClient
    from datalake_pipelines.core.lifecycle.as_of import AsOfError

    two_batches(client)
    a, b = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
    with pytest.raises(AsOfError, match=f"as_of={b!r}.*as_of={a!r}"):
        client.download({"datasets": ["alpha"], "as_of": a}, "parquet", tmp_path / "dl", as_of=b)
    assert not (tmp_path / "dl").exists()
    same = client.download({"datasets": ["alpha"], "as_of": "  "}, "parquet", tmp_path / "same", as_of="")
    assert same["rows"] == 2 and same["selection"].get("as_of") is None

    with DuckDBClient(client.base_path) as duck:
        assert duck.retrieve_with_existing_cols(as_arrow=True, as_of="").num_rows == 2
    assert client.download({"datasets": ["alpha"]}, "parquet", tmp_path / "py", as_of=" ")["rows"] == 2
    capsys.readouterr()
    assert main(["--base-path", base, "download", "--all", "--as-of", "", "--out", str(tmp_path / "cli")]) == 0
    export = client.create_export(tmp_path / "x", export_all=True, as_of="", wait=True)
    assert export is not None
