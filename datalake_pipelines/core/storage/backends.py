"""Where a lake's bytes live: one interface, a local-folder and an S3 implementation.

Keys are ``/``-separated and relative to the lake's base (``staging/pending/<job>/_metadata.json``,
``assets/provider=P/...``). Both implementations offer the same operations, including an exclusive
create (``O_EXCL`` locally, ``If-None-Match: *`` on S3) that makes claiming a batch exactly-once.
The S3 client comes from the standard AWS environment (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
for MinIO, moto or any S3-compatible store); Parquet goes through ``pyarrow.fs.S3FileSystem``.

This module is the one place that tells an S3 location from a local one (:func:`storage_kind`,
:func:`open_storage`; :func:`~..lake.open.lake_kind` asks it for lakes). boto3 is imported only when an
``S3Storage`` is created or used, so a local lake never loads it.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeGuard
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ...settings import MiB
from ...settings import load as load_settings
from .files import write_bytes_atomic
from .pool import s3_map

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig

S3_SCHEME = "s3://"
NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")
StorageKind = Literal["local", "s3"]


def is_s3_uri(base: object) -> TypeGuard[str]:
    """True for text starting with ``s3://``. Other modules ask :func:`storage_kind` or the object they hold."""
    return isinstance(base, str) and base.startswith(S3_SCHEME)


def storage_kind(location: str | os.PathLike) -> StorageKind:
    """``"s3"`` for an ``s3://`` URI, else ``"local"``: the storage :func:`open_storage` would open, unopened."""
    return "s3" if is_s3_uri(str(location)) else "local"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")`` (prefix may be empty)."""
    if not is_s3_uri(uri):
        raise ValueError(f"not an S3 URI (expected s3://bucket[/prefix]): {uri!r}")
    bucket, _, prefix = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI has no bucket: {uri!r}")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the storage base
    size: int
    modified: datetime
    etag: str = ""  # S3 ETag (quoted hex); empty for local files


class Storage(Protocol):
    uri: str
    kind: StorageKind  # what storage_kind(uri) says

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def list_dirs(self, prefix: str) -> builtins.list[str]: ...  # bare list is the method here
    def exists(self, key: str) -> bool: ...
    def info(self, key: str) -> ObjectInfo: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def create_exclusive(self, key: str, data: bytes) -> bool: ...
    def upload(self, local: Path, key: str) -> None: ...
    def download(self, key: str, local: Path, size: int | None = None) -> None: ...
    def copy(self, src: str, dst: str) -> None: ...
    def delete(self, keys: Iterable[str]) -> None: ...
    def arrow(self) -> tuple[pafs.FileSystem, str]: ...


def _norm(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


class LocalStorage:
    """A lake in a local or NAS folder."""

    kind: StorageKind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.uri = str(self.root)

    def path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"key {key!r} escapes the lake")
        return self.root / key

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.path(prefix.strip("/")) if prefix.strip("/") else self.root
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    st = full.stat()
                    key = full.relative_to(self.root).as_posix()
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list_dirs(self, prefix: str) -> builtins.list[str]:  # bare list is the method here
        base = self.path(prefix.strip("/")) if prefix.strip("/") else self.root
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            return sorted(p.name for p in base.iterdir() if p.is_dir())
        return []

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def info(self, key: str) -> ObjectInfo:
        """Size and mtime of one regular file (``FileNotFoundError`` when absent or not a regular file)."""
        path = self.path(key)
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(f"{path} is not a regular file")
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        write_bytes_atomic(self.path(key), data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def upload(self, local: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    def download(self, key: str, local: Path, size: int | None = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), local)

    def copy(self, src: str, dst: str) -> None:
        self.upload(self.path(src), dst)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.path(key).unlink(missing_ok=True)

    def arrow(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self.root)


@contextlib.contextmanager
def _missing_as_file_not_found(uri: str) -> Iterator[None]:
    """Turn S3's "no such key" error inside the block into ``FileNotFoundError(uri)``."""
    from botocore.exceptions import ClientError  # boto3 only once an S3 storage is used

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
            raise FileNotFoundError(uri) from None
        raise


class S3Storage:
    """A lake under ``s3://bucket/prefix``; keys map to ``prefix/key`` objects."""

    kind: StorageKind = "s3"

    def __init__(self, uri: str, client=None, transfer: TransferConfig | None = None):
        from boto3.s3.transfer import TransferConfig

        from .transfer import s3_client

        self.bucket, self.prefix = split_s3_uri(uri)
        self.uri = f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or s3_client()
        # boto3's managed transfer does multipart above the threshold, concurrent parts, retries.
        # The threshold is ``$DATALAKE_MULTIPART_THRESHOLD_MB`` (default 100); s3transfer grows the part size so an
        # upload never needs more than 10,000 parts.
        threshold = load_settings().multipart_threshold
        self.transfer = transfer or TransferConfig(multipart_threshold=threshold, multipart_chunksize=16 * MiB)

    def _key(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _dir(self, prefix: str) -> str:
        """The full key prefix of a folder-like ``prefix`` ("" = the lake's root), ending in ``/``."""
        return _norm(self._key(prefix)) if prefix.strip("/") else _norm(self.prefix)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._dir(prefix))
        for page in pages:
            for obj in page.get("Contents", []):
                yield ObjectInfo(self._rel(obj["Key"]), obj["Size"], obj["LastModified"], obj.get("ETag", ""))

    def list_dirs(self, prefix: str) -> builtins.list[str]:  # bare list is the method here
        full = self._dir(prefix)
        names = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full, Delimiter="/")
        for page in pages:
            names += [p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except FileNotFoundError:
            return False
        return True

    def info(self, key: str) -> ObjectInfo:
        """Size, LastModified and ETag of one object (``FileNotFoundError`` when absent)."""
        with _missing_as_file_not_found(f"{self.uri}/{key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key, head["ContentLength"], head["LastModified"], head.get("ETag", ""))

    def upload_activity(self, prefix: str) -> datetime | None:
        """When a multipart upload under ``prefix/`` still open last made progress (its start or newest part);
        None when there is none. Such an object is not listed until complete, and then with the start time."""
        newest: datetime | None = None
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._dir(prefix)
        )
        for upload in (u for page in pages for u in page.get("Uploads", [])):
            times = [upload["Initiated"]]
            parts = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            times += [p["LastModified"] for page in parts for p in page.get("Parts", [])]
            newest = max([t for t in (newest, *times) if t is not None])
        return newest

    def read_bytes(self, key: str) -> bytes:
        with _missing_as_file_not_found(f"{self.uri}/{key}"):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def sha256(self, key: str) -> str:
        """SHA-256 of an object, streamed (1 MiB at a time)."""
        digest = hashlib.sha256()
        with _missing_as_file_not_found(f"{self.uri}/{key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        for chunk in body.iter_chunks(MiB):
            digest.update(chunk)
        return digest.hexdigest()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create the object only if absent (S3 conditional write); False if it already existed."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def upload(self, local: Path, key: str) -> None:
        """One PUT below the multipart threshold (a managed transfer costs a thread pool per call), else managed."""
        if os.path.getsize(local) < self.transfer.multipart_threshold:
            with open(local, "rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=fh)
        else:
            self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer)

    def download(self, key: str, local: Path, size: int | None = None) -> None:
        """``FileNotFoundError`` when the object is absent, as a local folder's download raises."""
        local.parent.mkdir(parents=True, exist_ok=True)
        with _missing_as_file_not_found(f"{self.uri}/{key}"):
            if size is not None and size < self.transfer.multipart_threshold:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
                with open(local, "wb") as fh:
                    for chunk in body.iter_chunks(MiB):
                        fh.write(chunk)
            else:
                self.client.download_file(self.bucket, self._key(key), str(local), Config=self.transfer)

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy (managed: multipart copy above the threshold, so objects over 5 GB work)."""
        self.client.copy(
            {"Bucket": self.bucket, "Key": self._key(src)}, self.bucket, self._key(dst), Config=self.transfer
        )

    def delete(self, keys: Iterable[str]) -> None:
        keys = [self._key(k) for k in keys]
        chunks = [[{"Key": k} for k in keys[start : start + 1000]] for start in range(0, len(keys), 1000)]
        s3_map(
            lambda chunk: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}),
            chunks,
        )

    def arrow(self) -> tuple[pafs.FileSystem, str]:
        return s3_filesystem(), f"{self.bucket}/{self.prefix}".rstrip("/")


def s3_filesystem() -> pafs.S3FileSystem:
    """``pyarrow.fs.S3FileSystem`` honouring ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` like boto3 does."""
    settings = load_settings()
    endpoint = settings.aws_endpoint_url
    kwargs = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs = {"endpoint_override": parsed.netloc or parsed.path, "scheme": parsed.scheme or "https"}
    if settings.aws_region:
        kwargs["region"] = settings.aws_region
    return pafs.S3FileSystem(**kwargs)


def is_aws_endpoint(endpoint: str) -> bool:
    """True for AWS's own S3: no endpoint override (``""``), or a host that is or ends in ``.amazonaws.com``;
    False for MinIO, moto or any other S3-compatible store."""
    if not endpoint:
        return True
    host = (urlparse(endpoint if "://" in endpoint else f"https://{endpoint}").hostname or "").lower()
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def endpoint_slug(endpoint: str | None = None) -> str:
    """A folder name for an S3 endpoint: ``aws`` for AWS (or no override), else ``<scheme>_<host>_<port>``.

    ``endpoint`` defaults to ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, as boto3 resolves it.
    """
    endpoint = endpoint or load_settings().aws_endpoint_url
    if is_aws_endpoint(endpoint):
        return "aws"
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = (parsed.hostname or "").lower()
    slug = f"{parsed.scheme}_{host}_{parsed.port or ''}{parsed.path}".rstrip("_/")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in slug)[:100]


def cache_dir_for(base: str, endpoint: str | None = None) -> Path:
    """Local working folder of an S3 lake: ``$DATALAKE_CACHE_DIR`` (default ``~/.cache/datalake``)/
    ``<endpoint>/<bucket>/<prefix>`` (:func:`endpoint_slug`), so two stores with a bucket of the same name
    (MinIO and AWS, or a moto server per test) never share a cache."""
    root = load_settings().cache_dir
    bucket, prefix = split_s3_uri(base)
    return root / endpoint_slug(endpoint) / bucket / (prefix or "_root")


def open_storage(base: str | os.PathLike) -> Storage:
    """The storage at ``base``: ``s3://bucket/prefix`` (``ValueError`` without a bucket) or a local folder."""
    return S3Storage(str(base)) if storage_kind(base) == "s3" else LocalStorage(base)


def upload_tree(storage: Storage, folder: Path, prefix: str, last: str | None = None) -> int:
    """Upload every file under ``folder`` to ``prefix/<relative path>``; the file named ``last`` goes last.

    Returns the number of files uploaded. Writing the completion marker last is what makes a batch
    appear atomically on S3, which has no rename.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    marker = [p for p in files if last and p.relative_to(folder).as_posix() == last]
    rest = [p for p in files if not marker or p != marker[0]]
    s3_map(lambda p: storage.upload(p, f"{prefix}/{p.relative_to(folder).as_posix()}"), rest)
    for p in marker:
        storage.upload(p, f"{prefix}/{last}")
    return len(files)


def download_tree(
    storage: Storage,
    prefix: str,
    folder: Path,
    skip: Callable[[str], bool] | None = None,
    objects: list[ObjectInfo] | None = None,
) -> int:
    """Download every object under ``prefix/`` (``objects``: its listing, when the caller has it) into ``folder``;
    keys that would leave it are skipped, and so are those whose path relative to ``prefix`` ``skip`` accepts.
    Returns how many objects were not skipped."""
    prefix = prefix.strip("/")
    objects = list(storage.list(prefix)) if objects is None else objects
    if skip is not None:
        objects = [o for o in objects if not skip(o.key[len(prefix) + 1 :])]
    root = folder.resolve()

    def fetch(obj: ObjectInfo) -> None:
        target = (folder / obj.key[len(prefix) + 1 :]).resolve()
        if root in target.parents:  # a key with ".." segments is skipped: rows naming it are rejected
            storage.download(obj.key, target, obj.size)

    s3_map(fetch, objects)
    return len(objects)
