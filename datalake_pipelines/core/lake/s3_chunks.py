"""Chunk steps on an S3 lake (``ingest/chunks.py``): any worker stores a chunk from the bucket into the bucket.

A claimed batch stays in ``staging/pending/<job>/`` on S3, so a chunk step on any host downloads only its own
files into a throwaway work lake, stores them there (:class:`~..ingest.s3_index.TieredHashIndex`: a hit is
confirmed by a HEAD), uploads the new assets (content-addressed keys: a second upload writes the same bytes) and
then writes its record to ``logs/chunks/<job>/<n>.json``. A staged object's identity is its size and ETag, read by
a HEAD before its download; the commit compares it with its own listing of the batch, so an object replaced since
is stored again by the commit. The hash-index segment stays the commit's (one writer per batch).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ingest.chunks import (
    Chunk,
    Identity,
    chunk_summary,
    own_record,
    read_plan,
    recorded_outcomes,
    store_planned,
    write_record,
)
from ..ingest.manifest import load_manifest
from ..ingest.processing import ProcessOptions
from ..ingest.s3_index import TieredHashIndex
from ..storage.backends import ObjectInfo
from ..storage.pool import s3_map
from . import keys
from .keys import BATCH_MANIFEST

if TYPE_CHECKING:
    from ..ingest.asset_store import StoredFile, StoreOptions
    from ..ingest.s3_index import SegmentCache
    from ..storage.backends import S3Storage
    from .layout import LakeLayout


def object_identity(obj: ObjectInfo) -> Identity:
    return [obj.size, obj.etag]


class S3Chunks:
    """Needs ``storage``, ``cache``, ``work_view()``, ``index_cache()`` and ``existing_assets()`` (S3Processing)."""

    storage: S3Storage
    cache: Path

    if TYPE_CHECKING:

        @contextlib.contextmanager
        def work_view(self, name: str) -> Iterator[LakeLayout]: ...
        def index_cache(self) -> SegmentCache: ...
        def existing_assets(self, paths: list[str]) -> dict[str, int]: ...

    def _staged_files(self, job_id: str) -> set[str] | None:
        prefix = keys.pending_batch(job_id)
        names = {o.key[len(prefix) + 1 :] for o in self.storage.list(prefix)}
        return names if BATCH_MANIFEST in names else None

    @contextlib.contextmanager
    def _plan_source(self, job_id: str, files: set[str]) -> Iterator[Path]:
        """The batch's manifest and ``data.parquet`` in a temporary folder."""
        prefix = keys.pending_batch(job_id)
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache, prefix=f"plan-{job_id}-") as tmp:
            folder = Path(tmp)
            for name in {BATCH_MANIFEST, "data.parquet"} & files:
                self.storage.download(f"{prefix}/{name}", folder / name)
            yield folder

    def _identities(self, job_id: str) -> Callable[[list[str]], dict[str, Identity]]:
        """``identity_of`` by HEAD of each staged object (a chunk's own earlier record)."""
        prefix = keys.pending_batch(job_id)

        def identities(rels: list[str]) -> dict[str, Identity]:
            infos = s3_map(lambda rel: _info(self.storage, f"{prefix}/{rel}"), rels)
            return {rel: object_identity(i) for rel, i in zip(rels, infos) if i is not None}

        return identities

    def store_chunk(self, chunk: Chunk, options: ProcessOptions) -> dict[str, Any]:
        """Store one chunk of a claimed batch from the bucket, publish its new assets, record it."""
        store_options = options.store_options()
        files = read_plan(self.storage, chunk)
        done = own_record(self.storage, chunk, store_options, self._identities(chunk.job_id))
        todo = [f for f in files if f not in done]
        prefix = keys.pending_batch(chunk.job_id)
        with self.work_view(f"chunk-{chunk.job_id}-{chunk.n}") as work:
            batch_dir = work.processing_batch(chunk.job_id)
            self.storage.download(f"{prefix}/{BATCH_MANIFEST}", batch_dir / BATCH_MANIFEST)
            manifest = load_manifest(batch_dir, chunk.job_id)
            rels = sorted({rel for _kind, rel in todo})
            heads = zip(rels, s3_map(lambda rel: _info(self.storage, f"{prefix}/{rel}"), rels))
            infos = {rel: info for rel, info in heads if info is not None}  # a missing file: the commit's to reject
            s3_map(lambda rel: self.storage.download(f"{prefix}/{rel}", batch_dir / rel, infos[rel].size), list(infos))
            cache = self.index_cache()
            index = TieredHashIndex(work.index_dir / f"chunk-{chunk.n}.sqlite", cache.index, self.existing_assets)
            outcomes = store_planned(
                work, index, batch_dir, todo, manifest.provider, manifest.dataset, chunk.job_id, store_options,
                options.num_proc,
            )  # fmt: skip
            new = sorted({o.entry.path for o in outcomes if o.new and o.entry and (work.base / o.entry.path).is_file()})
            s3_map(lambda path: self.storage.upload(work.base / path, path), new)  # before the record names them
        kept = [object_identity(infos[rel]) if rel in infos else None for _kind, rel in todo]
        stored = [(f, ident, out) for f, (ident, out) in done.items()] + list(zip(todo, kept, outcomes))
        recorded = write_record(self.storage, chunk, store_options, stored)
        return chunk_summary(chunk, [out for _f, _i, out in stored], recorded)

    def chunk_outcomes(
        self, job_id: str, options: StoreOptions, listing: list[ObjectInfo]
    ) -> dict[tuple[str, str], StoredFile]:
        """What the chunk steps recorded for ``job_id`` and still holds, checked against the commit's listing."""
        prefix = keys.pending_batch(job_id)
        now = {o.key[len(prefix) + 1 :]: object_identity(o) for o in listing}
        return recorded_outcomes(self.storage, job_id, options, lambda rels: {r: now[r] for r in rels if r in now})


def _info(storage: S3Storage, key: str) -> ObjectInfo | None:
    try:
        return storage.info(key)
    except FileNotFoundError:
        return None
