"""The hash index and the row index behave the same on SQLite and on PostgreSQL (``DATALAKE_INDEX_URL``), and a
SQLite index is refused on a network file system (a fake mount table through ``DATALAKE_MOUNT_TABLE``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest.asset_store import StoredFile
from datalake_pipelines.core.ingest.first_store import settle_new, settle_one
from datalake_pipelines.core.ingest.hash_index import HashIndex, IndexEntry
from datalake_pipelines.core.ingest.index_store import existing_hash_index, open_hash_index
from datalake_pipelines.core.ingest.mounts import NetworkFileSystem, mount_of
from datalake_pipelines.core.ingest.pg_index import MissingSchema, PgHashIndex
from datalake_pipelines.core.ingest.pg_rows import PgRowIndex, open_row_index
from datalake_pipelines.core.ingest.processing import ProcessOptions
from datalake_pipelines.core.ingest.s3_index import SegmentCache
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.core.lake.open import open_lake


def entry(n: int, path: str | None = None, phash: int | None = None) -> IndexEntry:
    sha = f"{n:064x}"
    return IndexEntry(
        sha, sha, path or f"assets/provider=p/dataset=d/{sha[:2]}/{sha}.jpg", 100 + n, "image", "JPEG", 64, 48,
        "RGB", "p", "d", "job-1", "2026-12-01T00:00:00Z", 1, phash,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def layout(request, tmp_path, monkeypatch) -> LakeLayout:
    if request.param == "postgres":
        monkeypatch.setenv("DATALAKE_INDEX_URL", request.getfixturevalue("pg_url"))
    return LakeLayout(tmp_path / "lake")


@pytest.fixture
def index(layout):
    opened = open_hash_index(layout)
    yield opened
    opened.close()


def test_the_factory_picks_the_backend(layout, index):
    if isinstance(index, PgHashIndex):
        assert not layout.hash_index.exists()  # nothing in the lake but the schema's name
        assert (layout.index_dir / "pg_schema").read_text().startswith("lake_")
        assert isinstance(open_row_index(index), PgRowIndex)
    else:
        assert layout.hash_index.is_file()
        assert type(open_row_index(index)).__name__ == "RowIndex"


def test_lookups_inserts_and_counts(index):
    assert index.count() == 0 and index.get(entry(1).sha256) is None
    assert index.add_many([entry(i) for i in range(1200)]) == 1200
    assert index.add_many([entry(i) for i in range(1100, 1300)]) == 100  # only the new ones count
    assert index.add_many([entry(5, path="assets/other.jpg")]) == 0  # the first entry stays
    assert index.get(entry(5).sha256) == entry(5)
    asked = [entry(i).sha256 for i in range(0, 1400, 3)] + ["f" * 64]
    found = index.get_many(asked)
    assert set(found) == {entry(i).sha256 for i in range(0, 1300, 3)}  # past the 500-hash chunk of SQLite
    assert found[entry(9).sha256] == entry(9)
    assert index.get_many([]) == {} and index.count() == 1300


def test_phash_is_filled_once(index):
    index.add_many([entry(1), entry(2, phash=-7), entry(3, phash=-(2**63))])
    assert index.get(entry(3).sha256).phash == -(2**63)
    assert index.fill_phash({entry(1).sha256: -(2**63), entry(2).sha256: 5, "0" * 63 + "f": 9}) == 1
    assert index.get(entry(1).sha256).phash == -(2**63)  # the full signed 64-bit range
    assert index.get(entry(2).sha256).phash == -7
    assert index.fill_phash({}) == 0


def test_remove_paths_and_iter_rows(index):
    index.add_many([entry(i) for i in range(10)])
    gone = {entry(i).path for i in (2, 4)} | {"assets/never.jpg"}
    assert index.remove_paths(gone) == 2 and index.remove_paths([]) == 0
    batches = list(index.iter_rows(batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 2]
    rows = [r for b in batches for r in b]
    assert [r[0] for r in rows] == sorted(entry(i).sha256 for i in range(10) if i not in (2, 4))
    assert IndexEntry(*rows[0]) == entry(0)


def test_the_row_index(index):
    rows = open_row_index(index)
    odd = "not a hex digest"
    hashes = [f"{i:064x}" for i in range(700)] + [odd]
    assert rows.record("p/d/t/v", "part-a.parquet", "10:1", hashes[:400]) == 400
    assert rows.record("p/d/t/v", "part-b.parquet", "20:1", hashes[300:]) == 301  # 300-399 already there
    assert rows.parts("p/d/t/v") == {"part-a.parquet": "10:1", "part-b.parquet": "20:1"}
    assert rows.seen("p/d/t/v", [hashes[0], odd, "e" * 64]) == {hashes[0], odd}
    assert rows.seen("p/d/t/v", [hashes[650], hashes[0]], exclude_part="part-b.parquet") == {hashes[0]}
    assert rows.seen("other/d/t/v", hashes) == set()
    assert rows.hashes("p/d/t/v") == set(hashes)
    rows.resign("p/d/t/v", "part-a.parquet", "11:2")
    assert rows.parts("p/d/t/v")["part-a.parquet"] == "11:2"
    # a part gone from the folder: the partition is rebuilt from the parts present
    outcome = rows.reconcile("p/d/t/v", {"part-b.parquet": "20:1"}, lambda name: hashes[300:])
    assert outcome == {"rebuilt": 1, "parts_read": 1}
    assert rows.hashes("p/d/t/v") == set(hashes[300:])
    rows.forget("p/d/t/v")
    assert rows.parts("p/d/t/v") == {} and rows.hashes("p/d/t/v") == set()


def test_two_writers_count_only_their_own_inserts(pg_url, tmp_path):
    """ON CONFLICT DO NOTHING: what add_many reports stays true when two writers insert overlapping entries."""
    schema = "lake_race" + tmp_path.name.replace("-", "").replace("_", "")[-12:]
    indexes = [PgHashIndex(pg_url, schema) for _ in range(2)]
    counts: list[int] = []
    start = threading.Barrier(2)

    def write(index: PgHashIndex, first: int) -> None:
        start.wait()
        counts.append(sum(index.add_many([entry(i) for i in range(k, k + 50)]) for k in range(first, first + 2000, 50)))

    threads = [threading.Thread(target=write, args=(ix, first)) for ix, first in zip(indexes, (0, 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == indexes[0].count() == 3000  # 1000-1999 written by both, counted once
    for ix in indexes:
        ix.close()


def mount_table(tmp_path: Path, *entries: tuple[str, str]) -> Path:
    table = tmp_path / "mounts"
    lines = ["sysfs /sys sysfs rw 0 0", "/dev/sda1 / ext4 rw,relatime 0 0"]
    lines += [f"server:/export {point.replace(' ', chr(92) + '040')} {fstype} rw 0 0" for point, fstype in entries]
    table.write_text("\n".join(lines) + "\n")
    return table


def test_a_sqlite_index_on_nfs_is_refused(tmp_path, monkeypatch):
    share = tmp_path / "nas share"
    layout = LakeLayout(share / "lake")
    monkeypatch.setenv("DATALAKE_MOUNT_TABLE", str(mount_table(tmp_path, (str(share), "nfs4"))))
    with pytest.raises(NetworkFileSystem, match=r"nfs4 mounted at .*nas share.*DATALAKE_INDEX_URL=postgresql://"):
        open_hash_index(layout)
    assert not layout.hash_index.exists()
    # reached through a symlink: the mount of the real path counts
    (tmp_path / "link").symlink_to(share, target_is_directory=True)
    with pytest.raises(NetworkFileSystem):
        HashIndex(tmp_path / "link" / "lake" / "index" / "hash_index.sqlite")
    # the whole ingest refuses before it stores anything
    with pytest.raises(NetworkFileSystem):
        open_lake(share / "lake").process_pending(ProcessOptions())
    # an S3 lake's per-host cache on the share: the fix named is a local cache folder
    with pytest.raises(NetworkFileSystem, match="set DATALAKE_CACHE_DIR to a folder on a local disk"):
        SegmentCache(None, share / "cache" / "index")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fstype", ["fuse.ceph-fuse", "fuse.juicefs", "wekafs", "fuse.glusterfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse"]
)
def test_cluster_and_object_store_mounts_are_network_file_systems(fstype, tmp_path, monkeypatch):
    share = tmp_path / "share"
    monkeypatch.setenv("DATALAKE_MOUNT_TABLE", str(mount_table(tmp_path, (str(share), fstype))))
    with pytest.raises(NetworkFileSystem, match=f"{fstype} mounted at"):
        open_hash_index(LakeLayout(share / "lake"))


def test_a_local_disk_and_a_deeper_local_mount_are_fine(tmp_path, monkeypatch):
    share = tmp_path / "nas"
    local = share / "scratch"  # a local disk mounted inside the share: the longest mount point wins
    table = mount_table(tmp_path, (str(share), "cifs"), (str(local), "ext4"))
    monkeypatch.setenv("DATALAKE_MOUNT_TABLE", str(table))
    index = open_hash_index(LakeLayout(local / "lake"))
    index.add_many([entry(1)])
    assert index.count() == 1
    index.close()
    assert mount_of(local / "lake" / "not yet", table) == (str(local), "ext4")
    assert mount_of(share / "x", table) == (str(share), "cifs")
    assert mount_of(share, tmp_path / "no such table") is None  # not Linux: the guard stays out of the way


def test_the_postgres_index_needs_no_local_file_system(tmp_path, monkeypatch, pg_url):
    share = tmp_path / "nas"
    monkeypatch.setenv("DATALAKE_MOUNT_TABLE", str(mount_table(tmp_path, (str(share), "nfs"))))
    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    layout = LakeLayout(share / "lake")
    index = existing_hash_index(layout)
    assert isinstance(index, PgHashIndex) and index.count() == 0
    index.close()


def test_an_s3_lake_refuses_the_postgres_index(monkeypatch):
    monkeypatch.setenv("DATALAKE_INDEX_URL", "postgresql://u:p@127.0.0.1:1/db")
    with pytest.raises(ValidationError, match="DATALAKE_INDEX_URL is for a lake on a shared folder"):
        open_lake("s3://bucket/lake", client=object())


def test_the_url_must_be_postgres(monkeypatch, tmp_path):
    monkeypatch.setenv("DATALAKE_INDEX_URL", "mysql://x")
    with pytest.raises(ValidationError, match="DATALAKE_INDEX_URL must be a postgresql:// URL"):
        open_hash_index(LakeLayout(tmp_path / "lake"))
    for url in ("mysql://me:S3cret@db/lake", "mysql://db/lake?user=me&password=S3cret"):  # the password is masked
        monkeypatch.setenv("DATALAKE_INDEX_URL", url)
        with pytest.raises(ValidationError) as refused:
            open_hash_index(LakeLayout(tmp_path / "lake"))
        assert "S3cret" not in str(refused.value) and "***" in str(refused.value)


def test_sqlalchemys_url_form_is_accepted(monkeypatch, tmp_path, pg_url):
    """``postgresql+psycopg2://``, the form DAGSTER_POSTGRES_URL takes, works here too."""
    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url.replace("postgresql://", "postgresql+psycopg2://"))
    index = open_hash_index(LakeLayout(tmp_path / "lake"))
    assert isinstance(index, PgHashIndex) and index.count() == 0
    index.close()


def test_a_lost_first_store_takes_the_winners_asset(layout, index):
    """Another writer's entry for the same content won the insert: the loser's row must point at the winner's
    asset, and the loser's own copy (another dataset, another path) goes."""
    won = entry(1, path="assets/provider=p/dataset=a/00/00/w.jpg")
    mine = entry(1, path="assets/provider=p/dataset=b/00/00/m.jpg")
    for e in (won, mine):
        layout.asset_path(e.path).parent.mkdir(parents=True, exist_ok=True)
        layout.asset_path(e.path).write_bytes(b"same bytes")
    index.add_many([won])
    lost = StoredFile(sha256=mine.sha256, entry=mine, new=True, bytes_written=10)
    fresh = StoredFile(sha256=entry(2).sha256, entry=entry(2), new=True, bytes_written=10)
    assert settle_new(layout, index, [lost, None, fresh]) == 1
    assert (lost.entry, lost.new, lost.bytes_written) == (won, False, 0)
    assert fresh.entry == entry(2) and fresh.new
    assert not layout.asset_path(mine.path).exists() and layout.asset_path(won.path).exists()
    # one file (data_file's path): the winner's entry comes back
    other = entry(1, path="assets/provider=p/dataset=c/00/00/c.jpg")
    assert settle_one(layout, index, other, written=False) == won


def test_a_server_that_never_answers_times_out(monkeypatch, tmp_path):
    """A port that accepts connections but never answers: the connect gives up after its timeout, by default or
    the URL's own ``connect_timeout``, instead of hanging every command."""
    import socket
    import time

    from datalake_pipelines.core.ingest import pg_index

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)  # the kernel completes the handshake; nobody ever answers libpq's first message
    port = mute.getsockname()[1]
    outcome: list = []

    def try_open(url: str) -> float:
        def run() -> None:
            try:
                PgHashIndex(url, "lake_mute")
            except Exception as exc:  # noqa: BLE001 - the test asserts on what it is
                outcome.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(20)
        assert not thread.is_alive(), "the connect still hangs"
        return time.monotonic() - started

    monkeypatch.setattr(pg_index, "CONNECT_TIMEOUT", 2)  # libpq's least
    assert try_open(f"postgresql://u:secret@127.0.0.1:{port}/db") < 10
    monkeypatch.setattr(pg_index, "CONNECT_TIMEOUT", 60)
    assert try_open(f"postgresql://u:secret@127.0.0.1:{port}/db?connect_timeout=2") < 10  # the URL's wins
    assert len(outcome) == 2 and all("timeout" in str(exc) for exc in outcome)
    mute.close()


def test_a_one_letter_password_does_not_garble_the_reason(monkeypatch):
    """Masking replaced every "t" of libpq's message when the password was "t" ("connec***ion ***o server")."""
    from datalake_pipelines.core.ingest.pg_index import IndexUnreachable, connect
    from datalake_pipelines_tests.support.s3_server import free_port

    with pytest.raises(IndexUnreachable) as caught:
        connect(f"postgresql://u:t@127.0.0.1:{free_port()}/db")
    assert "connection to server at" in str(caught.value) and "***" not in str(caught.value)


@pytest.mark.parametrize("failure", ["wrong password", "closed port"])
def test_an_unreachable_index_is_one_error_line(failure, pg_url, lake, make_jpeg, tmp_path, monkeypatch, capsys):
    """The CLI reports a refused login or a closed port as one ``error:`` line naming the variable, the host, port
    and database and libpq's reason, never the password (no psycopg2 traceback)."""
    from datalake_pipelines.cli.main import main
    from datalake_pipelines_tests.support.s3_server import free_port

    if failure == "wrong password":
        url, reason = pg_url.replace(":datalake@", ":Wr0ngSecret@"), "password authentication failed"
    else:
        url, reason = f"postgresql://datalake:Wr0ngSecret@127.0.0.1:{free_port()}/datalake", "Connection refused"
    monkeypatch.setenv("DATALAKE_INDEX_URL", url)
    make_jpeg(tmp_path / "data" / "a.jpg")
    pd.DataFrame({"image": ["a.jpg"]}).to_parquet(tmp_path / "data" / "rows.parquet")
    upload = ["upload", "--type", "raw", "--data", str(tmp_path / "data" / "rows.parquet")]
    for command in (["catalog", "verify", "--hashes"], [*upload, "--provider", "inhouse", "--dataset", "d"]):
        capsys.readouterr()
        assert main(["--base-path", str(lake.base), *command]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: cannot connect to the hash index database"), err
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert "DATALAKE_INDEX_URL" in err and f"127.0.0.1:{port}, database datalake" in err and reason in err
        assert "Wr0ngSecret" not in err and "Traceback" not in err


def test_a_lake_whose_schema_is_gone_is_refused(tmp_path, monkeypatch, pg_url):
    """``index/pg_schema`` names a schema the database lacks (dropped, or the URL names another database): the
    index is refused, naming the schema and the database, never recreated empty (it would store every image
    again)."""
    import uuid

    import psycopg2

    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    layout = LakeLayout(tmp_path / "lake")
    index = open_hash_index(layout)
    index.add_many([entry(1)])
    schema = index.schema
    index.close()
    other = f"other_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{other}"')
    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url.rsplit("/", 1)[0] + f"/{other}")  # another database
    with pytest.raises(MissingSchema, match=rf"schema {schema}, but database {other} at 127\.0\.0\.1:\d+ "):
        open_hash_index(layout)
    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    with admin.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")  # dropped
    with pytest.raises(MissingSchema, match="delete the lake's index/pg_schema"):
        existing_hash_index(layout)
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
        assert cur.fetchone() == (0,)  # not recreated
    admin.close()
    (layout.index_dir / "pg_schema").unlink()  # the documented way to start a new index
    index = open_hash_index(layout)
    assert index.schema != schema and index.count() == 0
    index.close()


def test_two_hosts_creating_a_schema_agree_on_one(tmp_path, pg_url, monkeypatch):
    """The loser of the race to publish ``index/pg_schema`` drops its fresh schema and opens the winner's."""
    import psycopg2

    from datalake_pipelines.core.ingest import pg_index

    layout = LakeLayout(tmp_path / "lake")
    winner = pg_index.open_pg_index(pg_url, layout.index_dir, layout.hash_index)
    marker = layout.index_dir / "pg_schema"
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda p: False if p == marker else real_is_file(p))  # saw no marker yet
    created: list[str] = []
    real_init = PgHashIndex.__init__

    def init(self, url, schema, create=True):
        created.append(schema)
        real_init(self, url, schema, create)

    monkeypatch.setattr(PgHashIndex, "__init__", init)
    loser = pg_index.open_pg_index(pg_url, layout.index_dir, layout.hash_index)
    assert loser.schema == winner.schema == created[-1] != created[0]
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (created[0],))
        assert cur.fetchone() == (0,)  # the loser's own schema is gone
    conn.close()
    winner.close()
    loser.close()


def test_hosts_inserting_removing_and_filling_the_same_rows_never_deadlock(pg_url):
    """Four writers on 400 shared keys: inserts, removals and pHash fills of random overlapping sets. Before the
    rows were locked in key order in one statement, PostgreSQL aborted one of two such writers with "deadlock
    detected" within a few hundred calls (seen on every run here)."""
    import random
    import uuid

    schema = f"lake_dl{uuid.uuid4().hex[:12]}"
    PgHashIndex(pg_url, schema).close()
    errors: list[str] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        index = PgHashIndex(pg_url, schema)
        try:
            for _ in range(150):
                keys = rng.sample(range(400), 200)
                action = rng.choice(["add", "remove", "phash"])
                if action == "add":
                    index.add_many(entry(k) for k in keys)
                elif action == "remove":
                    index.remove_paths({entry(k).path for k in keys})
                else:
                    index.fill_phash({entry(k).sha256: rng.randrange(1, 2**40) for k in keys})
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a writer hit
            errors.append(f"{action}: {exc}")
        finally:
            index.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    cleanup = PgHashIndex(pg_url, schema)
    cleanup.drop()
    assert errors == []
