"""Collections in ``config/collections.yaml``: create, list, get, validation of malformed files, CLI."""

from __future__ import annotations

import json

import pytest
import yaml

from datalake_pipelines.cli.collection import parse_spec_flag
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.collection.config import (
    CollectionError,
    collections_path,
    create_collection,
    find_collection,
    get_data_collection,
    list_data_collection,
)
from datalake_pipelines.core.errors import DatalakeError, ValidationError
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.core.lake.schema import schema_path

SPECS = [
    {"name": "image", "is_required": True, "extensions": [".jpg", ".PNG"], "description": "the picture"},
    {"name": "annotation", "is_required": True, "extensions": ["json"]},
    {"name": "metadata", "is_required": False, "extensions": [".xml"]},
]


def test_create_list_get_in_reference_shape(lake: LakeLayout):
    c = create_collection(lake, "receipts", "inhouse", "receipts", SPECS, "scanned receipts")
    assert collections_path(lake).is_file()
    [listed] = list_data_collection(lake)
    assert set(listed) == {"id", "name", "description", "file_specifications", "project", "created_at"}
    assert listed["project"] == {"provider": "inhouse", "dataset": "receipts", "task": "raw", "variant": "receipts"}
    assert listed["file_specifications"][0] == {
        "name": "image",
        "is_required": True,
        "extensions": [".jpg", ".png"],
        "description": "the picture",
    }
    assert [s.kind for s in c.file_specifications] == ["image", "json", "file"]
    assert get_data_collection(lake, c.id) == listed == get_data_collection(lake, "receipts")
    with pytest.raises(CollectionError, match="unknown collection 'nope'"):
        get_data_collection(lake, "nope")


def test_create_validates_against_schema(lake: LakeLayout):
    with pytest.raises(ValidationError, match="unknown provider"):
        create_collection(lake, "c1", "nobody", "d", SPECS)
    with pytest.raises(ValidationError, match="missing required field 'lang'"):
        create_collection(lake, "c1", "inhouse", "d", SPECS, task="ocr")
    meta = {"lang": "ko", "src": "real"}
    c = create_collection(lake, "c1", "inhouse", "d", SPECS, task="ocr", variant="v1", meta=meta)
    assert (c.task, c.variant, c.data_type) == ("ocr", "v1", "task")
    with pytest.raises(ValidationError, match="already exists"):
        create_collection(lake, "c1", "inhouse", "d", SPECS)


@pytest.mark.parametrize(
    "specs, message",
    [
        ([{"name": "Image", "is_required": True, "extensions": [".jpg"]}], "file_specifications\\[0\\].name"),
        ([{"name": "image", "is_required": "yes", "extensions": [".jpg"]}], "is_required: must be true or false"),
        ([{"name": "image", "is_required": True, "extensions": []}], "extensions: must be a non-empty list"),
        ([{"name": "image", "is_required": True, "extensions": [".jpg"], "color": 1}], "color: unknown key"),
        ([{"name": "batch_id", "is_required": True, "extensions": [".jpg"]}], "reserved catalog column"),
        ([{"name": "file", "is_required": True, "extensions": [".xml"]}], "data unit meta column"),
        ([{"name": "image", "is_required": False, "extensions": [".jpg"]}], "at least one file specification"),
        ([{"name": "a", "is_required": True, "extensions": [".jpg"]}] * 2, "used twice"),
    ],
)
def test_bad_specifications_name_the_key(lake: LakeLayout, specs, message):
    with pytest.raises(CollectionError, match=message):
        create_collection(lake, "c1", "inhouse", "d", specs)


def test_malformed_file_names_file_key_and_reason(lake: LakeLayout):
    path = collections_path(lake)
    path.write_text("collections: [", encoding="utf-8")
    with pytest.raises(CollectionError, match="collections.yaml: not valid YAML"):
        list_data_collection(lake)
    doc = {
        "collections": [
            {
                "name": "c1",
                "project": {"provider": "inhouse", "dataset": "d"},
                "file_specifications": [{"name": "image", "is_required": True, "extensions": 3}],
            }
        ]
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(CollectionError) as err:
        list_data_collection(lake)
    assert str(path) in str(err.value)
    assert "collections[0]'.file_specifications[0].extensions" in str(err.value)
    doc["collections"][0]["file_specifications"][0]["extensions"] = [".jpg"]
    doc["collections"][0]["project"] = {"dataset": "d"}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(CollectionError, match="project.provider: invalid provider name None"):
        list_data_collection(lake)


def test_collections_in_schema_yaml_are_read_too(lake: LakeLayout):
    path = schema_path(lake)
    doc = yaml.safe_load(path.read_text())
    doc["collections"] = [
        {
            "name": "hand",
            "project": {"provider": "inhouse", "dataset": "d"},
            "file_specifications": [{"name": "image", "is_required": True, "extensions": [".jpg"]}],
        }
    ]
    path.write_text(yaml.safe_dump(doc))
    assert find_collection(lake, "hand").id == "hand"
    with pytest.raises(ValidationError, match="already exists"):
        create_collection(lake, "hand", "inhouse", "d", SPECS)


def test_parse_spec_flag():
    assert parse_spec_flag("image:required:.jpg,.png") == {
        "name": "image",
        "is_required": True,
        "extensions": [".jpg", ".png"],
        "description": "",
    }
    assert parse_spec_flag("metadata:optional:.xml:extra facts")["description"] == "extra facts"
    with pytest.raises(DatalakeError, match="--spec expects"):
        parse_spec_flag("image:maybe:.jpg")


def test_cli_create_list_show(lake: LakeLayout, capsys):
    base = ["--base-path", str(lake.base)]
    assert (
        main(
            base
            + [
                "collection",
                "create",
                "--name",
                "docs",
                "--provider",
                "inhouse",
                "--dataset",
                "docs",
                "--spec",
                "image:required:.jpg,.png",
                "--spec",
                "annotation:required:.json",
                "--spec",
                "metadata:optional:.xml",
            ]
        )
        == 0
    )
    assert "created collection" in capsys.readouterr().out
    assert main(base + ["--json", "collection", "list"]) == 0
    [doc] = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in doc["file_specifications"]] == ["image", "annotation", "metadata"]
    assert main(base + ["collection", "show", doc["id"]]) == 0
    assert "annotation: required .json" in capsys.readouterr().out
