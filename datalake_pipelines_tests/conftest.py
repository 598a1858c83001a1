"""Shared fixtures: the shared image corpus, a lake on ``tmp_path``, a client, and a JPEG factory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from datalake_pipelines.client import DatalakeClient
from datalake_pipelines.core.lake.layout import LakeLayout

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ../shared/corpus beside the project; DATALAKE_TEST_CORPUS points elsewhere (e.g. from a git worktree).
CORPUS_ROOT = Path(os.environ.get("DATALAKE_TEST_CORPUS") or PROJECT_ROOT.parent / "shared" / "corpus")


@pytest.fixture
def corpus_dir() -> Path:
    """``../shared/corpus/images`` beside the project root (holds valid/, invalid/, EXPECTED.tsv)."""
    path = CORPUS_ROOT / "images"
    if not (path / "EXPECTED.tsv").is_file():
        pytest.skip(f"shared image corpus not found at {path} (a clone outside the ../shared setup)")
    return path


@pytest.fixture
def fidelity_dir() -> Path:
    """``../shared/corpus/fidelity``: small inputs, each one kind of fault in which data changes (see its README)."""
    path = CORPUS_ROOT / "fidelity"
    if not (path / "README.md").is_file():
        pytest.skip(f"shared fidelity corpus not found at {path} (a clone outside the ../shared setup)")
    return path


@pytest.fixture
def lake(tmp_path: Path) -> LakeLayout:
    return LakeLayout(tmp_path / "lake")


@pytest.fixture
def client(lake: LakeLayout) -> DatalakeClient:
    return DatalakeClient(lake.base, num_proc=2, batch_size=4, progress=False)


@pytest.fixture
def make_jpeg() -> Callable[..., Path]:
    """``make_jpeg(path, size=(64, 48), color=None)``: write a real JPEG and return its path.

    With ``color=None`` the pixels are random noise, so every call yields distinct content; with an
    explicit ``color`` the image is a solid colour, so equal arguments yield identical bytes.
    """

    def make(path: str | os.PathLike, size: tuple[int, int] = (64, 48), color=None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if color is None:
            img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
        else:
            img = Image.new("RGB", size, color)
        img.save(path, "JPEG", quality=90)
        return path

    return make


@pytest.fixture
def read_catalog(lake: LakeLayout) -> Callable[[], list[dict]]:
    """Every catalog row, read the way users read it: a hive-partitioned ``pyarrow.dataset``."""
    import pyarrow.dataset as ds

    def read() -> list[dict]:
        return ds.dataset(lake.catalog_root, partitioning="hive").to_table().to_pylist()

    return read


@pytest.fixture(autouse=True)
def isolated_dagster_home(tmp_path_factory, monkeypatch):
    """Every test gets its own DAGSTER_HOME: nothing touches the project's persistent .dagster_home."""
    home = tmp_path_factory.mktemp("dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def collection(lake):
    """A collection of data units: image (required), annotation .json (required), metadata .xml (optional)."""
    from datalake_pipelines.core.collection.config import create_collection

    return create_collection(
        lake,
        "docs",
        "inhouse",
        "docs",
        [
            {"name": "image", "is_required": True, "extensions": [".jpg", ".png"]},
            {"name": "annotation", "is_required": True, "extensions": [".json"]},
            {"name": "metadata", "is_required": False, "extensions": [".xml"]},
        ],
    )


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3/Glue/Athena HTTP server on 127.0.0.1, one per test session (boto3 reaches it via ``env``)."""
    from datalake_pipelines_tests.support.s3_server import MotoS3

    with MotoS3() as moto:
        yield moto


@pytest.fixture
def s3_lake(moto_s3, monkeypatch, tmp_path) -> str:
    """A fresh bucket on the moto server and the lake base ``s3://<bucket>/lake``; the AWS env points at moto."""
    import uuid

    import boto3

    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATALAKE_CACHE_DIR", str(tmp_path / "lake-cache"))
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"
