"""Athena/Glue tables of an S3 lake and ``AthenaClient``, against moto's real HTTP server (Glue, Athena, S3)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import datetime, timezone

import boto3
import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp

from datalake_pipelines import AthenaClient
from datalake_pipelines.core.athena.client import AthenaQueryError
from datalake_pipelines.core.athena.tables import (
    Column,
    TableSpec,
    add_partition_ddl,
    athena_ddl,
    create_table_ddl,
    ddl_statements,
    plan_tables,
    sync_athena_tables,
)
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.storage.backends import s3_filesystem, split_s3_uri
from datalake_pipelines.defs.athena.assets import athena_tables
from datalake_pipelines.defs.athena.resources import AthenaSettings
from datalake_pipelines.lib.resources import LakeResource

INJECTION = "' OR 1=1 --"
CORE_RAW = {
    "image": "string",
    "image_sha256": "string",
    "image_width": "int",
    "image_height": "int",
    "image_format": "string",
    "image_mode": "string",
}
CORE_TAIL = {"batch_id": "string", "ingested_at": "timestamp", "row_hash": "string"}


def rows(job: str, n: int = 2, **extra: pa.Array) -> pa.Table:
    """Catalog rows shaped like ``_catalog_rows`` writes them: image facts, extra columns, then the core columns."""
    columns = {
        "image": pa.array([f"assets/provider=p/dataset=d/ab/cd/{job}{i}.jpg" for i in range(n)]),
        "image_sha256": pa.array([f"{i:064x}" for i in range(n)]),
        "image_width": pa.array([64] * n, pa.int32()),
        "image_height": pa.array([48] * n, pa.int32()),
        "image_format": pa.array(["JPEG"] * n),
        "image_mode": pa.array(["RGB"] * n),
        **extra,
        "batch_id": pa.array([job] * n),
        "ingested_at": pa.array([datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "row_hash": pa.array([f"{job}-{i}" for i in range(n)]),
    }
    return pa.table(columns)


def partition_path(key: str) -> str:
    return "/".join(f"{level}={value}" for level, value in PartitionRef.parse(key).as_dict().items())


def write_part(base: str, key: str, name: str, table: pa.Table) -> None:
    bucket, prefix = split_s3_uri(base)
    folder = f"{bucket}/{prefix}/catalog/{partition_path(key)}"
    pq.write_table(table, f"{folder}/{name}", filesystem=s3_filesystem())
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"{prefix}/catalog/{partition_path(key)}/_metadata.json", Body=b"{}"
    )


def build_lake(base: str) -> None:
    """Two task families (raw, ocr) plus a hyphenated task, differing columns, one conflicting type (``page``)."""
    write_part(base, "aihub/receipts/raw/image", "part-job1.parquet", rows("job1", caption=pa.array(["a", "b"])))
    tags = pa.array([["x", "y"], []], pa.list_(pa.string()))
    meta = pa.array(
        [{"source": "s", "score": 0.5}, None], pa.struct([("source", pa.string()), ("score", pa.float64())])
    )
    write_part(base, "huggingface/coco-2017/raw/mixed", "data.parquet", rows("job2", tags=tags, meta=meta))
    write_part(base, "huggingface/coco-2017/raw/mixed", "part-job2b.parquet", rows("job2b", tags=tags))
    ocr = pa.array(['{"words": [{"text": "Invoice"}]}', '{"words": []}'])
    lang = pa.array(["ko", "ko"])
    page = pa.array([1, 2], pa.int64())
    write_part(
        base, "aihub/receipts/ocr/base_ocr", "part-job3.parquet", rows("job3", ocr_result=ocr, lang=lang, page=page)
    )
    write_part(
        base,
        "inhouse/docs/ocr/word",
        "part-job4.parquet",
        rows("job4", ocr_result=ocr, lang=lang, page=pa.array(["1", "2"]), score=pa.array([0.1, 0.2])),
    )
    write_part(base, "inhouse/forms/key-value/v1", "part-job5.parquet", rows("job5", fields=pa.array(["{}", "{}"])))
    # a partition folder without Parquet files is not registered
    bucket, prefix = split_s3_uri(base)
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"{prefix}/catalog/{partition_path('inhouse/docs/ocr/line')}/_metadata.json", Body=b"{}"
    )


@pytest.fixture
def database() -> str:
    return f"lake_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def glue(s3_lake):
    return boto3.client("glue")


def glue_partitions(glue, database: str, table: str) -> dict[tuple[str, ...], str]:
    parts = glue.get_partitions(DatabaseName=database, TableName=table)["Partitions"]
    return {tuple(p["Values"]): p["StorageDescriptor"]["Location"] for p in parts}


def test_sync_registers_database_tables_columns_and_partitions(s3_lake, glue, database):
    build_lake(s3_lake)
    result = sync_athena_tables(s3_lake, database)

    assert glue.get_database(Name=database)["Database"]["Name"] == database
    assert sorted(result.tables_created) == ["catalog_key_value", "catalog_ocr", "catalog_raw"]
    assert result.tables_updated == []
    location = f"{s3_lake}/catalog/"

    raw = glue.get_table(DatabaseName=database, Name="catalog_raw")["Table"]
    assert raw["TableType"] == "EXTERNAL_TABLE"
    assert [k["Name"] for k in raw["PartitionKeys"]] == ["provider", "dataset", "task", "variant"]
    assert {k["Type"] for k in raw["PartitionKeys"]} == {"string"}
    sd = raw["StorageDescriptor"]
    assert sd["Location"] == location
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"].endswith("MapredParquetInputFormat")
    assert {c["Name"]: c["Type"] for c in sd["Columns"]} == {
        **CORE_RAW,
        "caption": "string",
        **CORE_TAIL,
        "tags": "array<string>",
        "meta": "struct<source:string,score:double>",
    }
    assert glue_partitions(glue, database, "catalog_raw") == {
        ("aihub", "receipts", "raw", "image"): f"{location}provider=aihub/dataset=receipts/task=raw/variant=image/",
        ("huggingface", "coco-2017", "raw", "mixed"): (
            f"{location}provider=huggingface/dataset=coco-2017/task=raw/variant=mixed/"
        ),
    }

    ocr = glue.get_table(DatabaseName=database, Name="catalog_ocr")["Table"]
    ocr_columns = {c["Name"]: c["Type"] for c in ocr["StorageDescriptor"]["Columns"]}
    assert ocr_columns == {**CORE_RAW, "ocr_result": "string", "lang": "string", **CORE_TAIL, "score": "double"}
    assert set(glue_partitions(glue, database, "catalog_ocr")) == {
        ("aihub", "receipts", "ocr", "base_ocr"),
        ("inhouse", "docs", "ocr", "word"),
    }  # inhouse/docs/ocr/line has no Parquet file
    assert set(glue_partitions(glue, database, "catalog_key_value")) == {("inhouse", "forms", "key-value", "v1")}

    [skipped] = result.skipped_columns
    assert (skipped.table, skipped.column) == ("catalog_ocr", "page")
    assert "bigint in aihub/receipts/ocr/base_ocr" in skipped.reason
    assert "string in inhouse/docs/ocr/word" in skipped.reason
    assert result.partitions_added_count == 5


def test_second_run_adds_nothing_and_a_new_partition_adds_one(s3_lake, glue, database):
    build_lake(s3_lake)
    sync_athena_tables(s3_lake, database)
    again = sync_athena_tables(s3_lake, database)
    assert (again.tables_created, again.tables_updated, again.partitions_added) == ([], [], {})

    write_part(s3_lake, "aihub/forms/ocr/line", "part-job6.parquet", rows("job6", ocr_result=pa.array(["x", "y"])))
    third = sync_athena_tables(s3_lake, database)
    assert third.partitions_added == {"catalog_ocr": ["aihub/forms/ocr/line"]}
    assert third.tables_updated == []  # same columns: the table is left alone
    assert len(glue_partitions(glue, database, "catalog_ocr")) == 3

    write_part(s3_lake, "aihub/forms/raw/scan", "part-job7.parquet", rows("job7", dpi=pa.array([300, 600])))
    fourth = sync_athena_tables(s3_lake, database)
    assert fourth.partitions_added == {"catalog_raw": ["aihub/forms/raw/scan"]}
    assert fourth.tables_updated == ["catalog_raw"]
    columns = glue.get_table(DatabaseName=database, Name="catalog_raw")["Table"]["StorageDescriptor"]["Columns"]
    assert {"Name": "dpi", "Type": "bigint"} in columns


def test_many_partitions_are_batched(s3_lake, glue, database, monkeypatch):
    import datalake_pipelines.core.athena.tables as athena

    monkeypatch.setattr(athena, "GLUE_BATCH", 2)
    for i in range(5):
        write_part(s3_lake, f"aihub/set{i}/raw/image", "part-j.parquet", rows(f"j{i}"))
    calls = []
    client = boto3.client("glue")
    client.meta.events.register(
        "before-parameter-build.glue.BatchCreatePartition", lambda params, **kw: calls.append(params)
    )
    result = sync_athena_tables(s3_lake, database, glue=client)
    assert [len(c["PartitionInputList"]) for c in calls] == [2, 2, 1]
    assert result.partitions_added_count == 5 == len(glue_partitions(glue, database, "catalog_raw"))


def test_ddl_statements_parse_with_the_athena_dialect(s3_lake, database):
    build_lake(s3_lake)
    statements = athena_ddl(s3_lake, database)
    creates = [s for s in statements if s.startswith("CREATE")]
    alters = [s for s in statements if s.startswith("ALTER")]
    assert len(creates) == 3 and len(alters) == 5
    for sql in statements:
        assert len(sqlglot.parse(sql, read="athena")) == 1
        sqlglot.parse_one(sql, read="athena")
    create = sqlglot.parse_one(next(s for s in creates if "`catalog_raw`" in s), read="athena")
    assert isinstance(create, exp.Create)
    names = [c.name for c in create.find_all(exp.ColumnDef)]
    assert names[:2] == ["image", "image_sha256"] and {"tags", "meta", "provider", "variant"} <= set(names)
    assert f"LOCATION '{s3_lake}/catalog/'" in creates[0]
    assert "PARTITIONED BY (`provider` string, `dataset` string, `task` string, `variant` string)" in creates[0]
    alter = next(s for s in alters if "coco-2017" in s)
    assert "`dataset`='coco-2017'" in alter
    assert alter.endswith(
        f"LOCATION '{s3_lake}/catalog/provider=huggingface/dataset=coco-2017/task=raw/variant=mixed/'"
    )


def test_ddl_escapes_hostile_names_and_locations():
    ref = PartitionRef("a-b", "d", "t", "v")
    location = "s3://bucket/it's\\'; DROP TABLE x; --/catalog/"
    spec = TableSpec("catalog_`x", location, [Column("we`ird", "string")], {ref: location + "p/"})
    statements = [create_table_ddl(spec, "db`; DROP"), add_partition_ddl(spec, "db`; DROP", ref)]
    for sql in statements:
        [tree] = sqlglot.parse(sql, read="athena")
        identifiers = {i.name for i in tree.find_all(exp.Identifier)}
        assert {"db`; DROP", "catalog_`x"} <= identifiers
        literals = {lit.this for lit in tree.find_all(exp.Literal) if lit.is_string}
        assert location in literals or location + "p/" in literals
        assert not tree.find(exp.Drop)
    assert "a-b" in {lit.this for lit in sqlglot.parse_one(statements[1], read="athena").find_all(exp.Literal)}
    assert ddl_statements([spec], "db", {"catalog_`x": []}) == [statements[0].replace("`db``; DROP`", "`db`")]


def test_plan_refuses_a_local_lake(tmp_path):
    with pytest.raises(ValueError, match="Athena needs an s3:// lake"):
        plan_tables(str(tmp_path))


# AthenaClient ---------------------------------------------------------------------------------------------------
@pytest.fixture
def synced(s3_lake, database):
    build_lake(s3_lake)
    sync_athena_tables(s3_lake, database)
    return s3_lake


@pytest.fixture
def workgroup(s3_lake) -> str:
    name = f"wg-{uuid.uuid4().hex[:8]}"
    boto3.client("athena").create_work_group(Name=name, Configuration={}, Description="tests")
    return name


def moto_api(moto_s3, path: str, body: dict) -> None:
    request = urllib.request.Request(
        f"{moto_s3.endpoint_url}/moto-api/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        assert response.status in (200, 201)


def executions(workgroup: str) -> list[dict]:
    athena = boto3.client("athena")
    ids = athena.list_query_executions(WorkGroup=workgroup)["QueryExecutionIds"]
    return [athena.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]


def make_client(synced: str, database: str, workgroup: str, **kwargs) -> AthenaClient:
    return AthenaClient(database, f"{synced}/athena-results/", workgroup=workgroup, poll_interval=0.01, **kwargs)


def test_client_sends_quoted_sql_and_execution_parameters(synced, database, workgroup):
    client = make_client(synced, database, workgroup)
    frame = client.retrieve_with_existing_cols(providers=["aihub", "inhouse"], variants="word", tasks=["ocr"])
    assert isinstance(frame, pd.DataFrame) and frame.empty
    [execution] = executions(workgroup)
    sql = execution["Query"]
    assert sql.startswith('SELECT "provider", "dataset", "task", "variant", "image", ')
    assert f'FROM "{database}"."catalog_ocr"' in sql
    assert sql.endswith('WHERE "provider" IN (?, ?) AND "task" IN (?) AND "variant" IN (?)')
    assert execution["ExecutionParameters"] == ["'aihub'", "'inhouse'", "'ocr'", "'word'"]
    assert execution["QueryExecutionContext"]["Database"] == database
    assert execution["ResultConfiguration"]["OutputLocation"].startswith(f"{synced}/athena-results/")
    assert execution["WorkGroup"] == workgroup
    sqlglot.parse_one(sql, read="athena")

    client.retrieve_partitions("catalog_raw")
    assert executions(workgroup)[-1]["Query"] == (
        f'SELECT * FROM (SELECT "provider", "dataset", "task", "variant" FROM "{database}"."catalog_raw$partitions") '
        "ORDER BY 1, 2, 3, 4"
    )
    assert "ExecutionParameters" not in executions(workgroup)[-1]

    client.retrieve_with_existing_cols(datasets="receipts", limit=5)
    last = executions(workgroup)[-3:]  # no tasks: one query per catalog table
    assert [e["Query"].split(" FROM ")[1] for e in last] == [
        f'"{database}"."{table}" WHERE "dataset" IN (?) LIMIT 5'
        for table in ("catalog_key_value", "catalog_ocr", "catalog_raw")
    ]
    assert all(e["ExecutionParameters"] == ["'receipts'"] for e in last)
    for execution in executions(workgroup):
        assert len(sqlglot.parse(execution["Query"], read="athena")) == 1


def test_where_and_unknown_identifiers(synced, database, workgroup):
    client = make_client(synced, database, workgroup)
    client.retrieve_with_existing_cols(tasks="ocr", where={"lang": ["ko", "en"], "score": None}, limit=5)
    [execution] = executions(workgroup)
    assert execution["Query"].endswith('WHERE "task" IN (?) AND "lang" IN (?, ?) AND "score" IS NULL LIMIT 5')
    assert execution["ExecutionParameters"] == ["'ocr'", "'ko'", "'en'"]
    with pytest.raises(ValueError, match="unknown column"):
        client.retrieve_with_existing_cols(tasks="ocr", columns=['lang" FROM x; --'])
    with pytest.raises(ValueError, match="invalid column name"):
        client.search_text_in_content("catalog_ocr", 'ocr_result"--', "x")
    with pytest.raises(ValueError, match="invalid table name"):
        client.retrieve_partitions('catalog_raw"; DROP TABLE x; --')
    with pytest.raises(ValueError, match="no table 'catalog_vqa'"):
        client.retrieve_partitions("catalog_vqa")
    with pytest.raises(ValueError, match="limit"):
        client.retrieve_with_existing_cols(tasks="ocr", limit="1; DROP")  # type: ignore[arg-type]
    assert len(executions(workgroup)) == 1  # nothing invalid reached Athena


def test_search_text_is_only_ever_a_parameter(synced, database, workgroup):
    client = make_client(synced, database, workgroup)
    client.search_text_in_content("catalog_ocr", "ocr_result", INJECTION, variants="word")
    [execution] = executions(workgroup)
    sql, params = execution["Query"], execution["ExecutionParameters"]
    assert "OR 1=1" not in sql and "--" not in sql
    assert sql.endswith('WHERE "variant" IN (?) AND strpos(lower("ocr_result"), ?) > 0')
    assert params == ["'word'", "''' or 1=1 --'"]
    literal = sqlglot.parse_one(params[1], read="athena")
    assert isinstance(literal, exp.Literal) and literal.this == INJECTION.lower()
    assert len(sqlglot.parse(sql, read="athena")) == 1

    client.search_text_in_content("catalog_raw", "meta", "Src", case_sensitive=True)
    last = executions(workgroup)[-1]
    assert last["Query"].endswith('WHERE strpos(json_format(CAST("meta" AS JSON)), ?) > 0')
    assert last["ExecutionParameters"] == ["'Src'"]


def test_search_catalog_alias_uses_every_table_with_the_column(synced, database, workgroup):
    client = make_client(synced, database, workgroup)
    client.search_text_in_content(table="catalog", column="ocr_result", search_text="invoice", variants="word")
    [execution] = executions(workgroup)
    assert f'FROM "{database}"."catalog_ocr"' in execution["Query"]
    with pytest.raises(ValueError, match="no catalog table"):
        client.search_text_in_content("catalog", "no_such_column", "x")


def seed_results(moto_s3, columns: list[tuple[str, str]], data: list[list[str | None]]) -> None:
    header = {"Data": [{"VarCharValue": name} for name, _ in columns]}
    body_rows = [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in data]
    column_info = [{"Name": name, "Label": name, "Type": kind} for name, kind in columns]
    moto_api(
        moto_s3,
        "static/athena/query-results",
        {"results": [{"rows": [header, *body_rows], "column_info": column_info}]},
    )


def test_search_returns_a_typed_dataframe_from_athena_results(synced, database, workgroup, moto_s3):
    columns = [
        ("provider", "varchar"),
        ("dataset", "varchar"),
        ("task", "varchar"),
        ("variant", "varchar"),
        ("ocr_result", "varchar"),
        ("image_width", "integer"),
        ("score", "double"),
        ("lang", "varchar"),
        ("ingested_at", "timestamp"),
    ]
    seed_results(
        moto_s3,
        columns,
        [
            [
                "inhouse",
                "docs",
                "ocr",
                "word",
                '{"words": [{"text": "Invoice"}]}',
                "64",
                "0.5",
                None,
                "2026-01-02 03:04:05.000",
            ],
            ["inhouse", "docs", "ocr", "word", "invoice 2", None, "1.25", None, "2026-01-02 03:04:06.000"],
        ],
    )
    client = make_client(synced, database, workgroup)
    frame = client.search_text_in_content("catalog_ocr", "ocr_result", "invoice", variants=["word"])
    assert list(frame.columns) == [name for name, _ in columns if name != "lang"]  # all-null column dropped
    assert len(frame) == 2
    assert frame["ocr_result"].tolist() == ['{"words": [{"text": "Invoice"}]}', "invoice 2"]
    assert frame["image_width"].dtype == "Int64" and frame["image_width"].tolist()[0] == 64
    assert pd.isna(frame["image_width"].iloc[1])
    assert frame["score"].tolist() == [0.5, 1.25]
    assert frame["ingested_at"].iloc[0] == pd.Timestamp("2026-01-02 03:04:05", tz="UTC")


@pytest.fixture
def slow_athena(moto_s3):
    """Make moto's Athena executions advance one state every ``times`` status polls (QUEUED -> RUNNING -> ...)."""

    def set_times(times: int) -> None:
        moto_api(
            moto_s3,
            "state-manager/set-transition",
            {"model_name": "athena::execution", "transition": {"progression": "manual", "times": times}},
        )

    yield set_times
    moto_api(moto_s3, "state-manager/unset-transition", {"model_name": "athena::execution"})


def test_client_polls_until_the_query_finishes(synced, database, workgroup, slow_athena):
    slow_athena(3)
    client = make_client(synced, database, workgroup)
    polls = []
    client.athena.meta.events.register("before-call.athena.GetQueryExecution", lambda **kw: polls.append(1))
    client.retrieve_partitions("catalog_ocr")
    assert len(polls) == 6  # 3 polls QUEUED -> RUNNING, 3 more RUNNING -> SUCCEEDED


def test_cancelled_and_timed_out_queries_raise(synced, database, workgroup, slow_athena):
    slow_athena(10_000)
    client = make_client(synced, database, workgroup)
    query_id = client.start_query('SELECT 1 FROM "x" WHERE "a" = ?', ["b"])
    boto3.client("athena").stop_query_execution(QueryExecutionId=query_id)
    with pytest.raises(AthenaQueryError, match=f"Athena query {query_id} CANCELLED"):
        client.wait(query_id)

    impatient = make_client(synced, database, workgroup, timeout=0.2)
    with pytest.raises(AthenaQueryError, match="still QUEUED after 0.2 s; stopped it"):
        impatient.retrieve_partitions("catalog_raw")
    last = executions(workgroup)[-1]
    assert last["Status"]["State"] == "CANCELLED"
    # moto never reports FAILED (its executions only go QUEUED -> RUNNING -> SUCCEEDED, or CANCELLED when stopped);
    # FAILED takes the same path as CANCELLED in AthenaClient.wait.


# Dagster asset --------------------------------------------------------------------------------------------------
def test_materialize_athena_tables(s3_lake, glue, database):
    build_lake(s3_lake)
    resources = {"lake": LakeResource(base_path=s3_lake), "athena": AthenaSettings(database=database)}
    result = dg.materialize([athena_tables], resources=resources)
    assert result.success
    [materialization] = result.asset_materializations_for_node("athena_tables")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["database"] == database
    assert metadata["athena_output"] == f"{s3_lake}/athena-results/"
    assert metadata["tables"]["catalog_ocr"] == {"columns": 12, "partitions": 2}
    assert sorted(metadata["tables_created"]) == ["catalog_key_value", "catalog_ocr", "catalog_raw"]
    assert metadata["partitions_added"] == 5
    assert metadata["partitions_added_keys"]["catalog_raw"] == [
        "aihub/receipts/raw/image",
        "huggingface/coco-2017/raw/mixed",
    ]
    assert metadata["skipped_columns"] == [
        {"table": "catalog_ocr", "column": "page", "reason": metadata["skipped_columns"][0]["reason"]}
    ]
    assert "CREATE EXTERNAL TABLE IF NOT EXISTS" in metadata["ddl"] and "ADD IF NOT EXISTS PARTITION" in metadata["ddl"]
    assert glue.get_table(DatabaseName=database, Name="catalog_ocr")["Table"]["Name"] == "catalog_ocr"

    again = dg.materialize([athena_tables], resources=resources)
    [materialization] = again.asset_materializations_for_node("athena_tables")
    assert materialization.metadata["partitions_added"].value == 0


def test_materialize_refuses_a_local_lake(tmp_path):
    resources = {"lake": LakeResource(base_path=str(tmp_path / "lake")), "athena": AthenaSettings()}
    with pytest.raises(dg.Failure, match="Athena needs an s3:// lake"):
        dg.materialize([athena_tables], resources=resources)
