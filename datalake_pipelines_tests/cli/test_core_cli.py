"""The ``datalake`` command line: flags, prompts (stdin and a real pseudo-terminal), exit codes, output."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.lake.layout import LakeLayout
from datalake_pipelines.core.lake.schema import load_schema

DATALAKE = Path(sys.executable).parent / "datalake"


class TtyInput(io.StringIO):
    """Answers for ``input()`` that claim to come from a terminal."""

    def isatty(self) -> bool:
        return True


class PipeInput(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def run(lake, capsys, monkeypatch):
    """``run(*args, stdin=None, tty=False)`` -> (exit code, stdout, stderr) of ``main``."""

    def invoke(*args, stdin="", tty=False):
        monkeypatch.setattr(sys, "stdin", (TtyInput if tty else PipeInput)(stdin))
        code = main(["--base-path", str(lake.base), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def images_parquet(tmp_path, make_jpeg, n=3):
    folder = tmp_path / "data"
    for i in range(n):
        make_jpeg(folder / "imgs" / f"{i}.jpg")
    pq_path = folder / "data.parquet"
    pd.DataFrame({"image": [f"imgs/{i}.jpg" for i in range(n)], "text": [f"t{i}" for i in range(n)]}).to_parquet(
        pq_path
    )
    return pq_path


# config -------------------------------------------------------------------------------------------------
def test_provider_create_and_list_with_flags(run, lake):
    code, out, _ = run("config", "provider", "create", "--name", "acme")
    assert code == 0 and "acme" in out
    assert "acme" in load_schema(lake).providers
    code, out, _ = run("config", "provider", "list", "--json")
    assert code == 0
    assert json.loads(out) == load_schema(lake).providers
    assert json.loads(out)[-1] == "acme"


def test_provider_duplicate_and_invalid_names_exit_1(run, lake):
    before = lake.schema_file.read_bytes() if lake.schema_file.exists() else None
    code, out, err = run("config", "provider", "create", "--name", "aihub")
    assert code == 1 and "already exists" in err and err.startswith("error: ")
    for bad in ("Bad", "a b", "../x", "dot.ted"):
        code, _, err = run("config", "provider", "create", "--name", bad)
        assert code == 1, bad
        assert "invalid provider name" in err and "Traceback" not in err
    after = load_schema(lake)
    assert after.providers == ["huggingface", "aihub", "inhouse"]
    if before is not None:
        assert lake.schema_file.read_bytes() == before


def test_missing_flag_without_a_terminal_exits_2_naming_the_flag(run, lake):
    code, _, err = run("config", "provider", "create")
    assert code == 2 and "--name" in err
    code, _, err = run("config", "task", "create", "--name", "cap")
    assert code == 2 and "--required-fields" in err
    code, _, err = run("upload", "--type", "raw", "--provider", "inhouse", "--dataset", "d")
    assert code == 2 and "--data" in err
    assert "cap" not in load_schema(lake).tasks


def test_provider_create_prompts_on_a_terminal(run, lake):
    code, out, _ = run("config", "provider", "create", stdin="prompted\n", tty=True)
    assert code == 0
    assert "Provider name" in out
    assert "prompted" in load_schema(lake).providers


def test_task_create_with_flags(run, lake):
    code, _, err = run(
        "config",
        "task",
        "create",
        "--name",
        "caption",
        "--required-fields",
        "lang,src",
        "--allowed-values",
        "lang=ko,en,ja,multi",
        "--allowed-values",
        "src=real,synthetic",
    )
    assert code == 0, err
    spec = load_schema(lake).tasks["caption"]
    assert spec.required_fields == ["lang", "src"]
    assert spec.allowed_values == {"lang": ["ko", "en", "ja", "multi"], "src": ["real", "synthetic"]}
    code, out, _ = run("config", "task", "list", "--json")
    assert json.loads(out)["caption"]["allowed_values"]["src"] == ["real", "synthetic"]
    code, _, err = run("config", "task", "create", "--name", "caption", "--required-fields", "")
    assert code == 1 and "already exists" in err
    code, _, err = run("config", "task", "create", "--name", "Caption!", "--required-fields", "")
    assert code == 1 and "invalid task name" in err
    code, _, err = run("config", "task", "create", "--name", "t2", "--required-fields", "a", "--allowed-values", "a")
    assert code == 1 and "--allowed-values" in err


def test_task_create_prompts_like_the_reference(run, lake):
    answers = "ocr2\nlang, src\nlang=ko,en,ja,multi / src=real,synthetic\n"
    code, out, err = run("config", "task", "create", stdin=answers, tty=True)
    assert code == 0, err
    spec = load_schema(lake).tasks["ocr2"]
    assert spec.required_fields == ["lang", "src"]
    assert spec.allowed_values == {"lang": ["ko", "en", "ja", "multi"], "src": ["real", "synthetic"]}


def test_malformed_schema_is_reported_without_traceback(run, lake):
    lake.schema_file.write_text("providers: [ok, 'Not OK']\n")
    code, out, err = run("config", "provider", "list")
    assert code == 1
    assert str(lake.schema_file) in err and "providers[1]" in err and "Traceback" not in err


# upload and process ---------------------------------------------------------------------------------------
def test_upload_process_status_list_with_flags(run, lake, tmp_path, make_jpeg):
    data = images_parquet(tmp_path, make_jpeg)
    code, out, err = run(
        "upload",
        "--type",
        "task",
        "--data",
        str(data),
        "--provider",
        "aihub",
        "--dataset",
        "docs",
        "--task",
        "ocr",
        "--variant",
        "base_ocr",
        "--meta",
        "lang=ko",
        "--meta",
        "src=real",
        "--json",
        "--job-id",
        "cli-job-1",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc == {
        "job_id": "cli-job-1",
        "staging_dir": str(lake.pending_batch("cli-job-1")),
        **{"images": 3, "other_files": 0, "skipped_count": 0, "skipped": []},  # the staging report's counts
    }
    manifest = json.loads((lake.pending_batch("cli-job-1") / "_metadata.json").read_text())
    assert manifest["meta"] == {"lang": "ko", "src": "real"}

    code, out, _ = run("process", "status", "cli-job-1", "--json")
    assert code == 0 and json.loads(out)["state"] == "pending" and json.loads(out)["rows"] == 3
    code, out, _ = run("process", "list")
    assert "pending" in out and "cli-job-1" in out and "rows=3" in out

    code, out, err = run("process", "start", "--num-proc", "2", "--batch-size", "2")
    assert code == 0, err
    assert "running ingest for aihub/docs/ocr/base_ocr" in out  # through a Dagster run
    [line] = [row for row in out.splitlines() if row.startswith("done")]
    assert "cli-job-1" in line and "aihub/docs/ocr/base_ocr" in line
    assert "added=3" in line and "rejected=0" in line

    code, out, _ = run("process", "status", "cli-job-1", "--json")
    status = json.loads(out)
    assert (status["state"], status["rows"], status["rows_added"], status["rows_rejected"]) == ("done", 3, 3, 0)
    code, out, _ = run("process", "start")
    assert code == 0 and "no pending batches" in out


def test_upload_prompts_for_every_missing_flag(run, lake, tmp_path, make_jpeg):
    data = images_parquet(tmp_path, make_jpeg, n=2)
    answers = f"task\n{data}\naihub\ndocs\nvqa\nv1\nen\nsynthetic\n"
    code, out, err = run("upload", stdin=answers, tty=True)
    assert code == 0, err
    for prompt in ("Data type", "Data path", "Provider", "Dataset", "Task", "Variant", "Meta lang", "Meta src"):
        assert prompt in out
    [job] = [p for p in lake.pending.iterdir()]
    manifest = json.loads((job / "_metadata.json").read_text())
    assert (manifest["provider"], manifest["task"], manifest["variant"], manifest["meta"]) == (
        "aihub",
        "vqa",
        "v1",
        {"lang": "en", "src": "synthetic"},
    )


def test_upload_refuses_bad_meta_unknown_provider_and_reused_job(run, lake, tmp_path, make_jpeg):
    data = images_parquet(tmp_path, make_jpeg, n=1)
    base = ["upload", "--data", str(data), "--dataset", "docs"]
    code, _, err = run(*base, "--type", "raw", "--provider", "nobody")
    assert code == 1 and "unknown provider 'nobody'" in err
    code, _, err = run(
        *base, "--provider", "aihub", "--task", "ocr", "--variant", "v", "--meta", "lang=xx", "--meta", "src=real"
    )
    assert code == 1 and "lang='xx'" in err
    code, _, err = run(*base, "--provider", "aihub", "--task", "ocr", "--variant", "v")
    assert code == 2 and "--meta" in err
    code, _, err = run(*base, "--provider", "aihub", "--task", "ocr", "--variant", "v", "--meta", "lang")
    assert code == 1 and "key=value" in err
    assert list(lake.pending.iterdir()) == []
    assert run(*base, "--type", "raw", "--provider", "aihub", "--job-id", "j1")[0] == 0
    code, _, err = run(*base, "--type", "raw", "--provider", "aihub", "--job-id", "j1")
    assert code == 1 and "already used" in err


def test_process_start_exits_1_when_a_batch_fails(run, lake, tmp_path, make_jpeg, client):
    df = pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]})
    _, good = client.upload_raw_data(df, "inhouse", "scans")
    _, bad = client.upload_raw_data(df, "inhouse", "other")
    (lake.pending_batch(bad) / "data.parquet").write_bytes(b"junk")
    code, out, err = run("process", "start", "--json")
    assert code == 1
    results = {r["job_id"]: r for r in json.loads(out)}
    assert results[good]["state"] == "done" and results[bad]["state"] == "failed"
    assert results[bad]["run_id"], "the batch ran as a Dagster run"
    assert "malformed Parquet" in results[bad]["error"]
    code, out, _ = run("process", "status", bad)
    assert code == 0 and out.startswith("failed") and "malformed Parquet" in out
    code, out, _ = run("process", "list", "--json")
    states = {e["job_id"]: e["state"] for e in json.loads(out)}
    assert states == {good: "done", bad: "failed"}


def test_process_list_and_status_cover_every_state(run, lake, tmp_path, make_jpeg, client):
    imgs = [make_jpeg(tmp_path / f"{i}.jpg") for i in range(3)]
    _, done = client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in imgs]}), "inhouse", "a")
    (lake.pending_batch(done) / "files" / "image" / "00000002.jpg").write_bytes(b"broken")
    client.process_pending(max_reject_ratio=0.5)
    _, pending = client.upload_raw_data(pd.DataFrame({"image": [str(imgs[0])]}), "inhouse", "b")
    _, processing = client.upload_raw_data(pd.DataFrame({"image": [str(imgs[1])]}), "inhouse", "c")
    os.rename(lake.pending_batch(processing), lake.processing_batch(processing))
    lake.pending_temp("half").mkdir()
    code, out, _ = run("process", "list", "--json")
    assert code == 0
    entries = {e["job_id"]: e for e in json.loads(out)}
    assert entries[pending]["state"] == "pending" and entries[pending]["rows"] == 1
    assert entries[processing]["state"] == "queued", "claimed, its Dagster run not started yet"
    assert (entries[done]["state"], entries[done]["rows_added"], entries[done]["rows_rejected"]) == ("done", 2, 1)
    assert entries[f"{done}-rejected"]["state"] == "quarantined" and entries[f"{done}-rejected"]["rows"] == 1
    assert not any("half" in j for j in entries)
    code, out, _ = run("process", "status", processing)
    assert out.startswith("queued")
    code, _, err = run("process", "status", "no-such-job")
    assert code == 1 and "no-such-job" in err


def test_catalog_compact_for_one_partition(run, lake, tmp_path, make_jpeg, client, read_catalog):
    for i in range(2):
        client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / f"{i}.jpg"))]}), "inhouse", "s")
    client.process_pending()
    before = sorted(r["row_hash"] for r in read_catalog())
    code, out, err = run("catalog", "compact", "--partition", "inhouse/s/raw/mixed", "--json")
    assert code == 0, err
    [doc] = json.loads(out)
    assert (doc["files_before"], doc["rows"]) == (2, 2)
    assert sorted(r["row_hash"] for r in read_catalog()) == before
    with duckdb.connect(str(lake.duckdb_file), read_only=True) as con:  # found by review: it was left stale
        assert con.execute("SELECT files, rows FROM partitions WHERE dataset = 's'").fetchall() == [(1, 2)]
    code, _, err = run("catalog", "compact", "--partition", "not-a-key")
    assert code == 1 and "provider/dataset/task/variant" in err
    # a partition the lake does not have: refused as catalog verify refuses it (was exit 0 with 0 files)
    code, out, err = run("catalog", "compact", "--partition", "inhouse/typo/raw/mixed", "--json")
    assert (code, out) == (1, "") and "no partition inhouse/typo/raw/mixed in" in err
    assert run("catalog", "verify", "--partition", "inhouse/typo/raw/mixed")[2] == err


def test_catalog_compact_every_partition(run, lake, tmp_path, make_jpeg, client, read_catalog):
    for ds_name in ("s1", "s2"):
        for i in range(2):
            path = make_jpeg(tmp_path / ds_name / f"{i}.jpg")
            client.upload_raw_data(pd.DataFrame({"image": [str(path)]}), "inhouse", ds_name)
    client.process_pending()
    before = sorted(r["row_hash"] for r in read_catalog())
    code, out, err = run("catalog", "compact", "--json")
    assert code == 0, err
    assert sorted(d["partition"] for d in json.loads(out)) == ["inhouse/s1/raw/mixed", "inhouse/s2/raw/mixed"]
    assert sorted(r["row_hash"] for r in read_catalog()) == before


# the installed console script -------------------------------------------------------------------------------
def _script_env(base):
    env = dict(os.environ)
    env["DATALAKE_BASE_PATH"] = str(base)
    return env


def test_console_script_end_to_end(tmp_path, make_jpeg):
    assert DATALAKE.is_file(), f"console script missing: {DATALAKE}"
    base = tmp_path / "lake"
    folder = tmp_path / "drop"
    for i in range(3):
        make_jpeg(folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    env = _script_env(base)

    def cli(*args, check=0):
        proc = subprocess.run(
            [str(DATALAKE), *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
        )
        assert proc.returncode == check, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    up = json.loads(
        cli(
            "upload",
            "--json",
            "--type",
            "raw",
            "--data",
            str(folder),
            "--provider",
            "inhouse",
            "--dataset",
            "drops",
            "--image-columns",
            "image",
        ).stdout
    )
    assert Path(up["staging_dir"]).is_dir()
    [result] = json.loads(cli("process", "start", "--json").stdout)
    assert (result["state"], result["rows_added"], result["rows_rejected"]) == ("done", 3, 1)
    status = json.loads(cli("process", "status", up["job_id"], "--json").stdout)
    assert status["state"] == "done"
    assert len(list(LakeLayout(base).assets_root.rglob("*.jpg"))) == 3
    err = cli(
        "upload", "--type", "raw", "--data", str(folder), "--provider", "nobody", "--dataset", "x", check=1
    ).stderr
    assert err.startswith("error: unknown provider")
    assert "--name" in cli("config", "provider", "create", check=2).stderr


def test_console_script_prompts_on_a_real_pseudo_terminal(tmp_path):
    base = tmp_path / "lake"
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(DATALAKE), "config", "provider", "create"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=_script_env(base),
        close_fds=True,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 60
    answered = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO once the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"Provider name" in output:
                    os.write(primary, b"from-tty\n")
                    answered = True
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
    assert answered, output
    assert code == 0, output
    assert "from-tty" in load_schema(LakeLayout(base)).providers


def test_meta_values_are_kept_verbatim_one_pair_per_flag(run, lake, tmp_path, make_jpeg):
    """A comma or a space inside a --meta value is data: it is never split into another pair or trimmed."""
    from datalake_pipelines.cli.common import CliError, parse_pairs

    assert parse_pairs(["note=Seoul, Korea", "tag= a=b "], "--meta") == {"note": "Seoul, Korea", "tag": " a=b "}
    with pytest.raises(CliError, match="twice"):
        parse_pairs(["lang=ko", "lang=en"], "--meta")
    data = images_parquet(tmp_path, make_jpeg, n=1)
    base = ["upload", "--type", "task", "--data", str(data), "--provider", "aihub", "--dataset", "docs"]
    code, _, err = run(*base, "--task", "ocr", "--variant", "v", "--meta", "lang=ko,src=real")
    assert code != 0 and "ko,src=real" in err  # one value, refused by the task's allowed values, not split
    assert not any(lake.pending.iterdir())
