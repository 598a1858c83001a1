"""Time travel against a model, on both backends: random sequences of ingests, deletions (of a batch or a
dataset), compactions and GC purges, with ``as_of`` points in between. At every point the rows ``as_of`` returns
are exactly the rows the model held then, or (once GC purged a deletion made after the point) the query is
refused; never a different set of rows."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import datetime, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lifecycle.as_of import AsOfTooOldError

DATASETS = ("alpha", "beta")
OPS = st.one_of(
    st.tuples(st.just("ingest"), st.sampled_from(DATASETS), st.integers(1, 3)),
    st.tuples(st.just("delete_batch"), st.integers(0, 9)),
    st.tuples(st.just("delete_dataset"), st.sampled_from(DATASETS)),
    st.tuples(st.just("compact"), st.sampled_from(DATASETS)),
    st.tuples(st.just("gc")),
)


def texts(client, as_of) -> set[str]:
    with DuckDBClient(client.base_path) as duck:
        table = duck.retrieve_with_existing_cols(as_arrow=True, as_of=as_of)
    return set(table.column("text").to_pylist()) if table.num_rows else set()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=2, max_size=7))
# two deletions after one point in one partition: the earlier one's retained files hold the rows of both
@example(ops=[("ingest", "alpha", 2), ("ingest", "alpha", 1), ("delete_batch", 0), ("delete_batch", 0)])
# a compaction between batches keeps each row's ingested_at; a deletion and a new batch after it
@example(ops=[("ingest", "alpha", 1), ("ingest", "alpha", 2), ("compact", "alpha"), ("delete_batch", 1),
              ("ingest", "alpha", 1)])  # fmt: skip
# GC purges a deletion: points before it are refused, points after it still answered
@example(ops=[("ingest", "alpha", 2), ("ingest", "beta", 1), ("delete_dataset", "alpha"), ("gc",),
              ("ingest", "beta", 1)])  # fmt: skip
def test_as_of_matches_the_model(base, ops):
    client = DatalakeClient(f"{base}-{uuid.uuid4().hex[:8]}", progress=False)
    counter = itertools.count()
    live: dict[str, tuple[str, set[str]]] = {}  # batch id -> (dataset, its rows)
    points: list[tuple[datetime, set[str]]] = []  # as_of point -> the rows the model held then
    purged_through: datetime | None = None
    deletions: list[datetime] = []  # when each deletion started (rows it removed are retained from then)
    for op in ops:
        if op[0] == "ingest":
            rows = {f"row-{next(counter)}" for _ in range(op[2])}
            _, job_id = client.upload_raw_data(pd.DataFrame({"text": sorted(rows)}), "inhouse", op[1])
            assert [r.status for r in client.process_pending()] == ["done"]
            live[job_id] = (op[1], rows)
        elif op[0] == "delete_batch" and live:
            job_id = sorted(live)[op[1] % len(live)]
            deletions.append(datetime.now(timezone.utc))
            client.delete(batch=job_id)
            del live[job_id]
        elif op[0] == "delete_dataset" and any(d == op[1] for d, _ in live.values()):
            deletions.append(datetime.now(timezone.utc))
            client.delete(dataset=f"inhouse/{op[1]}")
            live = {j: v for j, v in live.items() if v[0] != op[1]}
        elif op[0] == "compact" and any(d == op[1] for d, _ in live.values()):
            client.lake.rebuild_partition(PartitionRef("inhouse", op[1], "raw", "mixed"), 2)
        elif op[0] == "gc":
            client.gc(grace="24h", retention=0)
            purged_through = max(deletions, default=purged_through)
        time.sleep(0.01)
        points.append((datetime.now(timezone.utc), {r for _, rows in live.values() for r in rows}))
        time.sleep(0.01)
    assert texts(client, None) == points[-1][1]
    for at, expected in points:
        if purged_through is not None and at < purged_through:
            with pytest.raises(AsOfTooOldError, match="oldest time available"):
                texts(client, at)
        else:
            assert texts(client, at) == expected, (at, ops)
