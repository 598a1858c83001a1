"""Lake layout (folders, partitions, shard paths) and the schema config (loading, validation, editing)."""

from __future__ import annotations

import pytest
import yaml

from datalake_pipelines.core.errors import SchemaConfigError, ValidationError
from datalake_pipelines.core.lake.layout import InvalidNameError, LakeLayout, PartitionRef, check_name
from datalake_pipelines.core.lake.schema import SchemaConfig, load_schema


def test_layout_creates_every_top_level_folder(tmp_path):
    LakeLayout(tmp_path / "fresh")
    for rel in ("staging/pending", "staging/processing", "staging/failed", "catalog", "assets", "config", "logs"):
        assert (tmp_path / "fresh" / rel).is_dir(), rel


def test_base_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(tmp_path / "from-env"))
    assert LakeLayout().base == (tmp_path / "from-env").resolve()
    monkeypatch.delenv("DATALAKE_BASE_PATH")
    monkeypatch.chdir(tmp_path)
    assert LakeLayout().base == (tmp_path / "lake").resolve()


def test_partition_and_asset_paths(lake):
    ref = PartitionRef("aihub", "docs", "ocr", "base_ocr")
    assert lake.partition_dir(ref) == lake.base / "catalog/provider=aihub/dataset=docs/task=ocr/variant=base_ocr"
    sha = "ab" + "cd" + "0" * 60
    assert lake.asset_relpath("aihub", "docs", sha, "jpg") == f"assets/provider=aihub/dataset=docs/ab/cd/{sha}.jpg"
    assert PartitionRef.parse("aihub/docs/ocr/base_ocr") == ref
    with pytest.raises(ValueError):
        lake.asset_relpath("aihub", "docs", "not-a-hash", "jpg")
    with pytest.raises(ValueError):
        lake.resolve("../outside")


def test_list_partitions_finds_every_partition_folder(lake):
    refs = [PartitionRef("aihub", "docs", "ocr", "v1"), PartitionRef("inhouse", "scans", "raw", "image")]
    for ref in refs:
        lake.partition_dir(ref).mkdir(parents=True)
    assert lake.list_partitions() == sorted(refs)


@pytest.mark.parametrize("name", ["Upper", "with space", "dot.name", "../up", "", "-lead", "a/b", "x" * 65])
def test_invalid_names_are_refused(name):
    with pytest.raises(InvalidNameError):
        check_name("provider", name)
    with pytest.raises(InvalidNameError):
        PartitionRef(name, "d", "t", "v")


def test_schema_is_seeded_from_project_config(lake):
    schema = load_schema(lake)
    assert lake.schema_file.is_file()
    assert {"huggingface", "aihub", "inhouse"} <= set(schema.providers)
    for task in ("ocr", "vqa", "kie", "layout"):
        spec = schema.tasks[task]
        assert set(spec.required_fields) == {"lang", "src"}
        assert spec.allowed_values["lang"] == ["ko", "en", "ja", "multi"]
        assert spec.allowed_values["src"] == ["real", "synthetic"]


def test_meta_validation(lake):
    schema = load_schema(lake)
    assert schema.validate_meta("ocr", {"lang": "ko", "src": "real"}) == {"lang": "ko", "src": "real"}
    with pytest.raises(ValidationError, match="missing required field 'src'"):
        schema.validate_meta("ocr", {"lang": "ko"})
    with pytest.raises(ValidationError, match="lang='fr'"):
        schema.validate_meta("ocr", {"lang": "fr", "src": "real"})
    with pytest.raises(ValidationError, match="unknown task"):
        schema.validate_meta("nope", {})
    with pytest.raises(ValidationError, match="unknown provider"):
        schema.check_provider("nobody")


def test_add_provider_and_task_round_trip(lake):
    schema = load_schema(lake)
    schema.add_provider("acme")
    schema.add_task("caption", ["lang"], {"lang": ["ko", "en"]})
    schema.save()
    again = load_schema(lake)
    assert "acme" in again.providers
    assert again.tasks["caption"].required_fields == ["lang"]
    assert again.tasks["caption"].allowed_values == {"lang": ["ko", "en"]}
    with pytest.raises(ValidationError, match="already exists"):
        again.add_provider("acme")
    with pytest.raises(ValidationError, match="already exists"):
        again.add_task("caption", [], {})
    with pytest.raises(InvalidNameError):
        again.add_provider("Bad Name")
    with pytest.raises(ValidationError, match="reserved"):
        again.add_task("raw", [], {})


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("providers: [ok, 'Bad Name']\n", "providers[1]", "invalid provider name"),
        ("providers: ok\n", "providers", "must be a list"),
        ("providers: [a, a]\n", "providers", "twice"),
        ("providers: [a]\ntasks:\n  ocr:\n    required_fields: lang\n", "tasks.ocr.required_fields", "list"),
        (
            "providers: [a]\ntasks:\n  ocr:\n    allowed_values: {lang: []}\n",
            "tasks.ocr.allowed_values.lang",
            "non-empty",
        ),
        ("providers: [a]\ntasks:\n  ocr:\n    colour: red\n", "tasks.ocr.colour", "unknown key"),
        ("provider: [a]\n", "provider", "unknown top-level key"),
        ("- just\n- a list\n", "<root>", "must be a mapping"),
    ],
)
def test_malformed_schema_names_file_key_and_reason(lake, text, key, reason):
    lake.schema_file.write_text(text)
    with pytest.raises(SchemaConfigError) as info:
        load_schema(lake)
    message = str(info.value)
    assert str(lake.schema_file) in message
    assert repr(key) in message
    assert reason in message


def test_schema_that_is_not_yaml_names_the_file(lake):
    lake.schema_file.write_text("providers: [a\n  tasks: {")
    with pytest.raises(SchemaConfigError, match="not valid YAML") as info:
        load_schema(lake)
    assert str(lake.schema_file) in str(info.value)


def test_save_keeps_the_file_valid_yaml(lake):
    schema = load_schema(lake)
    schema.add_provider("zeta")
    schema.save()
    doc = yaml.safe_load(lake.schema_file.read_text())
    assert SchemaConfig.from_dict(doc).providers == schema.providers
