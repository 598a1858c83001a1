"""DuckDBClient and the warehouse refresh on an S3 lake (moto's real HTTP server) against an identical local lake."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.catalog.parts import CatalogError
from datalake_pipelines.core.catalog.query import DuckDBClient, UnknownPartitionError
from datalake_pipelines.core.catalog.s3 import S3Catalog, cached_duckdb_file, partition_key
from datalake_pipelines.core.catalog.warehouse import HASH_INDEX_SCHEMA, partition_stats
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.core.storage.backends import S3Storage, upload_tree
from datalake_pipelines_tests.core.catalog.test_query import OCR, OTHER, add_batch, lake  # noqa: F401 - fixture

UTC = timezone.utc


@pytest.fixture
def lakes(lake, s3_lake):
    """(local layout, S3 base) holding the same catalog; the OCR partition gets a second file with two columns
    the first lacks (``reviewer``, and ``pages`` stored as int32 here but int64 in the GLOBEX partition)."""
    add_batch(lake, OCR, "job-e", {"lang": ["en"], "reviewer": ["alice"], "pages": pa.array([2], pa.int32())})
    add_batch(lake, OTHER, "job-f", {"lang": ["ko"], "pages": pa.array([7], pa.int64())})
    upload_tree(S3Storage(s3_lake), lake.catalog_root, "catalog")
    return lake, s3_lake


def rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: json.dumps(r, default=str, sort_keys=True))


def assert_same(local: pa.Table, remote: pa.Table) -> None:
    assert remote.schema == local.schema
    assert rows(remote) == rows(local)


def both(lakes, call):
    """``call(client)`` on the local lake and on the S3 lake."""
    local, base = lakes
    with DuckDBClient(local.base) as a, DuckDBClient(base) as b:
        return call(a), call(b)


RETRIEVALS = [
    {},
    {"providers": "acme"},
    {"providers": "acme", "tasks": ["raw"]},
    {"tasks": "ocr", "where": {"lang": ["en", "ja"]}, "columns": ["lang", "src"]},
    {"providers": "acme", "where": {"lang": "ko"}},
    {"where": {"lang": "en' OR '1'='1"}},
    {"where": {"provider": "globex"}, "columns": ["provider", "pages"]},
    {"providers": []},
]


@pytest.mark.parametrize("kwargs", RETRIEVALS)
def test_retrieve_with_existing_cols_matches_local(lakes, kwargs):
    local, remote = both(lakes, lambda d: d.retrieve_with_existing_cols(**kwargs, as_arrow=True))
    assert_same(local, remote)


def test_retrieve_partitions_matches_local(lakes):
    local, remote = both(lakes, lambda d: d.retrieve_partitions(as_arrow=True))
    assert remote.equals(local)
    by_key = {r["variant"] + r["provider"]: r for r in remote.to_pylist()}
    assert by_key["baseacme"]["files"] == 2 and by_key["baseacme"]["rows"] == 4
    assert by_key["baseacme"]["last_batch"] == "job-e" and by_key["baseacme"]["bytes"] > 0


def test_unified_schema_keeps_columns_of_later_files(lakes):
    _, base = lakes
    with DuckDBClient(base) as duck:
        df = duck.retrieve_with_existing_cols(providers="acme", tasks="ocr", variants="base", as_arrow=True)
        assert df.num_rows == 4 and sorted(df["reviewer"].to_pylist(), key=lambda v: v or "") == [None] * 3 + ["alice"]
        assert df.schema.field("pages").type == pa.int32()
        every = duck.retrieve_with_existing_cols(as_arrow=True)
        assert every.schema.field("pages").type == pa.int64()  # int32 in one file, int64 in another
        catalog = S3Catalog(base)
        files = catalog.files(catalog.select("acme", "invoices", "ocr", "base"))
        assert [f.rsplit("/", 1)[1] for f in files] == ["part-job-a.parquet", "part-job-e.parquet"]
        assert "reviewer" in catalog.schema(catalog.fragments(files)).names


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("ocr_result", "invoice"), {}),
        (("note", "students"), {}),
        (("note", "' OR 1=1 --"), {}),
        (("note", "%"), {}),
        (("ocr_result", "' OR 1=1 --"), {"json_path": "$.words[*].text"}),
        (("ocr_result", "請求"), {"json_path": "$.words[*].text"}),
        (("ocr_result", "total invoice"), {"json_path": "$.lines[*].text"}),
        (("ocr_result", r"\b20\d\d\b"), {"json_path": "$.words[*].text", "mode": "regex"}),
        (("ocr_result", "(?i)invoice"), {"mode": "regex", "providers": "acme", "limit": 5}),
        (("ocr_result", "invoice"), {"columns": ["lang"], "where": {"lang": "en"}}),
    ],
)
def test_search_text_matches_local(lakes, args, kwargs):
    local, remote = both(lakes, lambda d: d.search_text(*args, **kwargs, as_arrow=True))
    assert_same(local, remote)
    assert "matched_snippet" in remote.column_names


def test_injection_strings_are_literal_on_s3(lakes):
    _, base = lakes
    with DuckDBClient(base) as duck:
        hits = duck.search_text("note", "' OR 1=1 --")
        assert len(hits) == 1 and "' OR 1=1 --" in hits["matched_snippet"][0]
        assert len(duck.retrieve_with_existing_cols(where={"lang": "en' OR '1'='1"})) == 0
        with pytest.raises(ValueError, match="unknown column"):
            duck.retrieve_with_existing_cols(where={'lang" OR 1=1 --': "x"})
        with pytest.raises(UnknownPartitionError):
            duck.retrieve_with_existing_cols(providers=["acme' OR '1'='1"])


@pytest.mark.parametrize(
    "kwargs",
    [{"providers": ["nope"]}, {"providers": "acme", "tasks": "ocr", "variants": "xx"}, {"datasets": ["a", "b"]}],
)
def test_unknown_partition_errors_match_local(lakes, kwargs):
    messages = []
    for base in (lakes[0].base, lakes[1]):
        with DuckDBClient(base) as duck, pytest.raises(UnknownPartitionError) as caught:
            duck.retrieve_with_existing_cols(**kwargs)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and "existing" in messages[1]


SQL = [
    ("SELECT * FROM catalog", None),
    ("SELECT count(*) AS n FROM catalog WHERE lang = $lang", {"lang": "en"}),
    ("SELECT provider, variant, sum(pages) AS pages FROM catalog GROUP BY ALL", None),
    ("SELECT * FROM partitions", None),
    ("SELECT row_hash FROM catalog WHERE ingested_at <= $ts AND image_width > 12", {"ts": datetime.now(UTC)}),
    ("SELECT row_hash FROM catalog WHERE ingested_at > $ts OR pages IS NULL", {"ts": datetime(2000, 1, 1, tzinfo=UTC)}),
]


@pytest.mark.parametrize("query, params", SQL)
def test_sql_views_match_local(lakes, query, params):
    local, remote = both(lakes, lambda d: d.sql(query, params, as_arrow=True))
    assert_same(local, remote)


def test_stream_matches_local(lakes):
    def streamed(duck):
        return duck.stream(duck.plan_search("ocr_result", "invoice"), batch_size=1).read_all()

    local, remote = both(lakes, streamed)
    assert_same(local, remote)
    assert remote.num_rows == 2


def test_client_accepts_env_and_duckdb_uri(lakes, monkeypatch):
    _, base = lakes
    monkeypatch.setenv("DATALAKE_BASE_PATH", base)
    with DuckDBClient() as duck:
        assert len(duck.retrieve_with_existing_cols(providers="globex")) == 2
    with DuckDBClient(f"{base}/catalog.duckdb") as duck:
        assert duck.s3.base == base and duck.layout is None


def test_empty_s3_lake(s3_lake):
    with DuckDBClient(base_path=s3_lake) as duck:
        assert len(duck.retrieve_partitions()) == 0
        assert len(duck.retrieve_with_existing_cols()) == 0
        assert len(duck.search_text("x", "y")) == 0
        assert list(duck.sql("SELECT * FROM catalog").columns) == ["provider", "dataset", "task", "variant"]
        assert len(duck.sql("SELECT * FROM hash_index")) == 0
    summary = open_lake(s3_lake).refresh_warehouse()
    assert summary == {**summary, "partitions": 0, "rows": 0, "assets": 0, "files": 0}


def segment(entries: list[dict]) -> bytes:
    defaults = {c: None for c in HASH_INDEX_SCHEMA.names}
    table = pa.Table.from_pylist([{**defaults, **e} for e in entries], schema=HASH_INDEX_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def entry(n: int, created: str, path: str) -> dict:
    return {"sha256": f"{n:064x}", "stored_sha256": f"{n:064x}", "path": path, "size": 10 + n, "kind": "image",
            "provider": "acme", "dataset": "invoices", "first_batch_id": "job-a", "created_at": created}  # fmt: skip


def test_refresh_builds_and_uploads_catalog_duckdb(lakes):
    local, base = lakes
    storage = S3Storage(base)
    storage.write_bytes("index/segments/job-1.parquet", segment([
        entry(1, "2024-01-02T00:00:00+00:00", "assets/late-1.jpg"),
        entry(2, "2024-01-01T00:00:00+00:00", "assets/only-2.jpg"),
    ]))  # fmt: skip
    storage.write_bytes("index/segments/job-2.parquet", segment([
        entry(1, "2024-01-01T00:00:00+00:00", "assets/early-1.jpg"),
        entry(3, "2024-01-03T00:00:00+00:00", "assets/only-3.jpg"),
    ]))  # fmt: skip
    summary = open_lake(base).refresh_warehouse()
    assert summary["partitions"] == 4 and summary["rows"] == 9 and summary["files"] == 6 and summary["assets"] == 3
    cached = cached_duckdb_file(base)
    assert summary["local_path"] == str(cached) and summary["path"] == f"{base}/catalog.duckdb"
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    assert storage.read_bytes("catalog.duckdb") == cached.read_bytes()
    with duckdb.connect(str(cached), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        partitions = con.sql("SELECT * FROM partitions").to_arrow_table()
        hashes = con.execute("SELECT sha256, path, size FROM hash_index ORDER BY sha256").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert partitions.equals(partition_stats(local))
    assert [(int(h, 16), p, s) for h, p, s in hashes] == [
        (1, "assets/early-1.jpg", 11),
        (2, "assets/only-2.jpg", 12),
        (3, "assets/only-3.jpg", 13),
    ]
    assert tables == {"partitions", "hash_index", "s3_refresh_state", "s3_refresh_partitions", "s3_refresh_segments"}
    # a client opens the cached file for partitions/hash_index and still gets its catalog view
    with DuckDBClient(base) as duck:
        assert duck.db_path == cached
        assert int(duck.sql("SELECT count(*) AS n FROM hash_index")["n"][0]) == 3
        assert int(duck.sql("SELECT count(*) AS n FROM catalog")["n"][0]) == 9
    cached.unlink()  # without it: the same tables, built in memory
    with DuckDBClient(base) as duck:
        assert duck.sql("SELECT sha256, path, size FROM hash_index ORDER BY sha256", as_arrow=True).num_rows == 3
        assert duck.sql("SELECT * FROM partitions", as_arrow=True).equals(partitions)


def test_malformed_parquet_on_s3_is_a_catalog_error(lakes):
    local, base = lakes
    open_lake(base).refresh_warehouse()
    before = S3Storage(base).read_bytes("catalog.duckdb")
    bad = f"{partition_key(OTHER)}/part-job-corrupt.parquet"
    S3Storage(base).write_bytes(bad, b"PAR1 this is not parquet")
    with DuckDBClient(base) as duck:
        assert len(duck.retrieve_with_existing_cols(providers="acme", tasks="ocr", variants="base")) == 4
        with pytest.raises(CatalogError, match=f"{base}/{bad}"):
            duck.retrieve_with_existing_cols()
        with pytest.raises(CatalogError, match="part-job-corrupt.parquet"):
            duck.search_text("ocr_result", "invoice")
        with pytest.raises(CatalogError, match="part-job-corrupt.parquet"):
            duck.retrieve_partitions()
    with pytest.raises(CatalogError, match="part-job-corrupt.parquet"):
        open_lake(base).refresh_warehouse()
    assert S3Storage(base).read_bytes("catalog.duckdb") == before


def test_bad_hash_segment_is_named(s3_lake):
    S3Storage(s3_lake).write_bytes("index/segments/job-x.parquet", b"not parquet at all")
    with pytest.raises(CatalogError, match="index/segments/job-x.parquet"):
        open_lake(s3_lake).refresh_warehouse()


def test_duckdb_catalog_asset_on_s3(lakes, monkeypatch):
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from datalake_pipelines.defs.warehouse.assets import duckdb_catalog
    from datalake_pipelines.lib.resources import LakeResource

    _, base = lakes
    monkeypatch.setenv("DATALAKE_BASE_PATH", base)
    resources = {"lake": LakeResource(), "duckdb": DuckDBResource(database=str(cached_duckdb_file(base)))}
    result = dg.materialize([duckdb_catalog], resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("duckdb_catalog")[0].metadata
    assert metadata["partitions"].value == 4 and metadata["dagster/row_count"].value == 9
    assert S3Storage(base).exists("catalog.duckdb")
    wrong = {**resources, "duckdb": DuckDBResource(database=str(lakes[0].duckdb_file))}
    with pytest.raises(dg.Failure, match="not this lake"):
        dg.materialize([duckdb_catalog], resources=wrong)


def test_s3_results_have_catalog_types_and_conflicts_are_refused(lake, s3_lake):
    """float16 and fixed-size binary come back as stored on S3 too; a type conflict names its partitions."""
    from datalake_pipelines.core.arrow.restore import TypeConflictError

    half = pa.array([0.5, 1.5], pa.float16())
    add_batch(lake, OCR, "job-h", {"h": half, "fx": pa.array([b"abcd", b"efgh"], pa.binary(4)), "a": [1, 2]})
    add_batch(lake, OTHER, "job-i", {"a": ["x"]})
    upload_tree(S3Storage(s3_lake), lake.catalog_root, "catalog")
    with DuckDBClient(s3_lake) as duck:
        table = duck.retrieve_with_existing_cols(providers="acme", columns=["h", "fx"], as_arrow=True)
        assert table.schema.field("h").type == pa.float16() and table.schema.field("fx").type == pa.binary(4)
        stored = [(h, fx) for h, fx in zip(table["h"].to_pylist(), table["fx"].to_pylist()) if h is not None]
        assert sorted(stored) == [(0.5, b"abcd"), (1.5, b"efgh")]
        with pytest.raises(TypeConflictError, match="acme/invoices/ocr/base.*globex/receipts/ocr/base"):
            duck.retrieve_with_existing_cols(columns=["a"])
