"""The staging queue is visible: the staging sensor observes ``staging_queue`` and says what it waits for.

Run on a local folder and on S3 (moto's HTTP server) through the real sensor and ``Lake.queue_snapshot``.
"""

from __future__ import annotations

import json
import time

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.core.lake.protocol import ClaimOptions
from datalake_pipelines.core.lake.queue_view import QueueEntry, QueueSnapshot, failed_entry, short_reason
from datalake_pipelines.defs.ingest import sensors
from datalake_pipelines.defs.ingest.queue_asset import STAGING_QUEUE
from datalake_pipelines_tests.support.s3_pipeline import tick

QUIET = 5.0  # S3's LastModified has one-second resolution, and a loaded machine slows ticks: a wide margin


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    return request.getfixturevalue("s3_lake") if request.param == "s3" else str(tmp_path / "lake")


def observations(result: dg.SensorResult) -> list[dg.AssetObservation]:
    return [e for e in result.asset_events if isinstance(e, dg.AssetObservation) and e.asset_key == STAGING_QUEUE]


def rows(observation: dg.AssetObservation) -> dict[str, dict]:
    return {r.data["job_id"]: r.data for r in observation.metadata["batches"].value.records}


def test_observation_and_skip_reason_list_waiting_refused_and_claimed_batches(base, make_jpeg, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", QUIET)
    monkeypatch.setattr(sensors, "RECOVERY_AGE_SECONDS", 600.0)  # no daemon here: the claim's run is not re-issued
    lake = open_lake(base)
    client = DatalakeClient(base, progress=False)
    jpeg = make_jpeg(tmp_path / "a.jpg").read_bytes()

    def drop(job_id: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            lake.storage.write_bytes(f"{keys.pending_batch(job_id)}/{name}", data)

    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(tmp_path / "a.jpg")]}), "aihub", "receipts")

    with dg.instance_for_test() as instance:
        claimed = tick(instance, base)
        assert [r.run_key for r in claimed.run_requests] == [job]  # the client's batch is complete: claimed at once
        assert claimed.skip_reason is None and rows(observations(claimed)[0])[job]["state"] == "queued"
        drop("acme_drop", {"a.jpg": jpeg, "_metadata.json": json.dumps({"provider": "acme", "dataset": "x"}).encode()})
        drop(
            "scans", {"_metadata.json": json.dumps({"provider": "inhouse", "dataset": "scans"}).encode(), "a.jpg": jpeg}
        )
        first = tick(instance, base, claimed.cursor)
        assert first.run_requests == []
        [seen] = observations(first)
        assert {k: rows(seen)[k]["state"] for k in ("acme_drop", "scans", job)} == {
            "acme_drop": "waiting",
            "scans": "waiting",
            job: "queued",
        }
        time.sleep(QUIET + 0.5)
        drop("scans", {"b.jpg": make_jpeg(tmp_path / "b.jpg").read_bytes()})  # still being copied
        second = tick(instance, base, first.cursor)

        assert second.run_requests == []
        reason = second.skip_reason.skip_message
        assert "1 batch waiting for quiet (" in reason and " s left)" in reason, reason
        assert "1 refused: unknown provider 'acme'" in reason, reason
        assert "1 batch claimed (1 queued, 0 running)" in reason, reason
        [observed] = observations(second)  # the tick that refused the drop reports it
        table = rows(observed)
        assert table["acme_drop"]["state"] == "refused" and table["acme_drop"]["reason"] == "unknown provider 'acme'"
        assert table["acme_drop"]["path"].endswith(f"{keys.FAILED}/acme_drop")
        assert table["scans"]["state"] == "waiting" and 0 < table["scans"]["seconds_left"] <= QUIET
        assert "unchanged" in table["scans"]["reason"] or "old" in table["scans"]["reason"]
        assert table[job]["state"] == "queued" and table[job]["partition"] == "aihub/receipts/raw/mixed"
        counts = {s: observed.metadata[s].value for s in ("waiting", "refused", "queued", "failed", "pending")}
        assert counts == {"waiting": 1, "refused": 1, "queued": 1, "failed": 0, "pending": 0}
        assert json.loads(lake.storage.read_bytes(f"{keys.FAILED}/acme_drop/{keys.ERROR_FILE}"))["refused"] is True

        drop("scans", {"b.jpg": make_jpeg(tmp_path / "b.jpg").read_bytes()})  # the copy goes on
        third = tick(instance, base, second.cursor)  # nothing changed state: no new event
        assert observations(third) == [], [rows(o) for o in observations(third)]
        assert "1 refused" in third.skip_reason.skip_message


def test_snapshot_without_a_cursor_estimates_quiet_from_the_files(base, tmp_path):
    """The CLI's view (no sensor cursor): a hand drop's quiet time comes from its files' newest time."""
    lake = open_lake(base)
    lake.storage.write_bytes(f"{keys.pending_batch('drop')}/_metadata.json", b'{"provider": "inhouse", "dataset": "d"}')
    lake.storage.write_bytes(f"{keys.pending_batch('drop')}/x.txt", b"x")
    snapshot = lake.queue_snapshot(ClaimOptions(quiet_seconds=600))
    [entry] = snapshot.entries
    assert (entry.job_id, entry.state, entry.partition) == ("drop", "waiting", "inhouse/d/raw/image")
    assert 590 < entry.seconds_left <= 600
    assert lake.queue_snapshot(ClaimOptions(quiet_seconds=0)).entries[0].state == "pending"


def test_summary_and_failed_classification():
    assert short_reason("unknown provider 'acme'; known providers: aihub. Add it with ...") == "unknown provider 'acme'"
    assert len(short_reason("x" * 500)) == 100
    refused = failed_entry("a", {"job_id": "a", "error": "bad name", "failed_at": "2024"}, "p")
    failed = failed_entry("b", {"error": "boom", "run_id": "r1", "attempts": 2, "failed_at": "2025"}, "p")
    marked = failed_entry("c", {"error": "x", "refused": True, "run_id": None}, "p")
    quarantined = failed_entry("d-rejected", {"error": "2 rows were rejected"}, "p")
    assert [e.state for e in (refused, failed, marked, quarantined)] == ["refused", "failed", "refused", "quarantined"]
    snapshot = QueueSnapshot(
        [
            QueueEntry("w1", "waiting", seconds_left=8.2),
            QueueEntry("w2", "waiting", seconds_left=30.0),
            failed_entry("acme", {"error": "unknown provider 'acme'; known: a", "refused": True}, "p"),
        ]
    )
    assert snapshot.summary() == "2 batches waiting for quiet (8 s left); 1 refused: unknown provider 'acme'"
    assert QueueSnapshot().summary() == "staging/pending is empty"
    moved = QueueSnapshot([QueueEntry("w1", "waiting", seconds_left=1.0), *snapshot.entries[1:]])
    assert moved.fingerprint() == snapshot.fingerprint()  # time passing is not a change
    assert QueueSnapshot(snapshot.entries[1:]).fingerprint() != snapshot.fingerprint()
