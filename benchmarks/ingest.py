"""Ingest benchmark: ours next to the floor and next to ``dvc add``, on the same files, side by side in one run.

    python benchmarks/ingest.py                     # 10,000 JPEGs of ~50 KB + 500 photos of ~1.5 MB, 3 rounds
    python benchmarks/ingest.py --images 3000 --photos 0 --rounds 3 --scale
    python benchmarks/ingest.py --images 3000 --photos 0 --overhead-files 0 --no-dagster   # core passes only

Every round runs each pass once, in an order that alternates between rounds (the machine is shared: medians of
alternating rounds, never a single run). Passes, each on a fresh target, page cache warm:
  floor      ``hashlib.sha256`` of each file + a copy into ``ab/cd/<sha>.jpg``, single thread, in this process
  hash-only  ``hashlib.sha256`` of each file
  dvc add    ``dvc add data`` in a fresh ``dvc init --no-scm`` repo whose ``data`` holds hard links to the files
             (a subprocess, Python start included); ``$DVC``, else ``dvc`` on PATH or in this venv; skipped, and
             said so, when there is none
  core       ``upload_raw_data`` + ``process_pending`` in a child process (timed inside it; its peak RSS kept)
  dagster    ``upload_raw_data`` + ``datalake process start`` as a subprocess against a warm ``DAGSTER_HOME``;
             its fixed overhead is its ``process start`` wall time minus the core's ``process_pending`` time
  re-ingest  the same files uploaded again into the core lake (new rows, every image already stored)
  overhead   the first ``--overhead-files`` images through ``process_pending`` and through ``process start``:
             the fixed overhead of the Dagster path (images only)
With ``--scale``: ``partition_scale.py``'s local case (a 1,000-row batch into a 2M-row partition vs an empty one).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = {"core": 1.0, "dagster": 0.5, "dvc": 3.0, "reingest": 0.8, "scale": 1.5, "rss_mb": 500, "overhead_s": 4.0}


def _noise_jpeg(rng: random.Random, size: tuple[int, int], quality: int = 80) -> bytes:
    w, h = size
    # Low-resolution noise upscaled: JPEG-friendly enough to be realistic, busy enough to stay large.
    small = Image.frombytes("RGB", (w // 2, h // 2), rng.randbytes((w // 2) * (h // 2) * 3))
    img = small.resize((w, h), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _size_for(kb: int) -> tuple[int, int]:
    """Pick a 4:3 size whose noise JPEG is about ``kb`` KB (calibrated on a few samples)."""
    rng = random.Random(0)
    w, h = 160, 120
    for _ in range(6):
        got = sum(len(_noise_jpeg(rng, (w, h))) for _ in range(3)) / 3
        scale = (kb * 1024 / got) ** 0.5
        w, h = max(16, int(w * scale) // 4 * 4), max(12, int(h * scale) // 4 * 4)
    return w, h


def generate(folder: Path, count: int, kb: int) -> list[Path]:
    """``count`` distinct ~``kb`` KB JPEGs in ``folder`` (cached: reused when already complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:06d}.jpg" for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        size = _size_for(kb)
        print(f"generating {len(missing)} JPEGs of {size[0]}x{size[1]} in {folder} ...", flush=True)
        for i in missing:
            tmp = paths[i].with_suffix(".tmp")
            tmp.write_bytes(_noise_jpeg(random.Random(i + 1), size))
            os.replace(tmp, paths[i])
    return paths


def settle() -> None:
    """Flush earlier passes' dirty pages so one pass's writeback is not billed to the next."""
    os.sync()
    time.sleep(0.3)


def floor_pass(paths: list[Path], dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    settle()
    start = time.perf_counter()
    for p in paths:
        data = p.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        target = dest / sha[:2] / sha[2:4] / f"{sha}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(data)
    seconds = time.perf_counter() - start
    shutil.rmtree(dest, ignore_errors=True)
    return seconds


def hash_pass(paths: list[Path]) -> float:
    start = time.perf_counter()
    for p in paths:
        hashlib.sha256(p.read_bytes()).hexdigest()
    return time.perf_counter() - start


def dvc_pass(dvc: str, paths: list[Path], repo: Path) -> float:
    """``dvc add data`` over hard links to ``paths`` in a fresh repo (the links cost nothing to read)."""
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True)
    for p in paths:
        os.link(p, repo / "data" / p.name)
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=repo, check=True)
    settle()
    start = time.perf_counter()
    subprocess.run([dvc, "add", "-q", "data"], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    shutil.rmtree(repo, ignore_errors=True)
    return seconds


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, out


def worker(args: argparse.Namespace) -> int:
    """Child process: upload ``--folder`` into ``--lake`` and, unless ``--stage-only``, process it; JSON out."""
    import pandas as pd

    from datalake_pipelines.client import DatalakeClient

    paths = sorted(args.folder.glob("*.jpg"))
    client = DatalakeClient(args.lake, num_proc=args.num_proc, progress=False)
    df = pd.DataFrame({"image": [str(p) for p in paths], "run": args.run})
    start = time.perf_counter()
    _, job_id = client.upload_raw_data(df, "inhouse", "bench", image_columns=["image"])
    staged = time.perf_counter() - start
    out = {"upload_s": staged}
    if not args.stage_only:
        start = time.perf_counter()
        results = client.process_pending(full_decode=args.full_decode)
        out["process_s"] = time.perf_counter() - start
        [result] = [r for r in results if r.job_id == job_id]
        if result.status != "done":
            raise SystemExit(f"ingest failed: {result.error}")
        out.update(new=result.images_new, dedup=result.images_deduplicated, bytes_stored=result.bytes_stored)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def _worker_cmd(folder: Path, lake: Path, run: str, num_proc: int, *extra: str) -> list[str]:
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    return [*me, "--folder", str(folder), "--lake", str(lake), "--run", run, "--num-proc", str(num_proc), *extra]


def asset_bytes(lake: Path) -> int:
    return sum(f.stat().st_size for f in (lake / "assets").rglob("*") if f.is_file())


class Bench:
    """One data set's passes; ``times[name]`` collects seconds per round."""

    def __init__(self, name: str, paths: list[Path], args: argparse.Namespace, env: dict[str, str]) -> None:
        self.name, self.paths, self.args, self.env = name, paths, args, env
        self.folder, self.work = paths[0].parent, args.out / f"work-{name}"
        self.n, self.mb = len(paths), sum(p.stat().st_size for p in paths) / 1e6
        self.times: dict[str, list[float]] = {}
        self.rss: dict[str, float] = {}
        self.facts: dict[str, object] = {}
        # $DVC (make bench: a venv of its own, since dvc's antlr4 pin breaks Dagster), else PATH, else this venv
        here = str(Path(sys.executable).parent)
        self.dvc = os.environ.get("DVC") or shutil.which("dvc") or shutil.which("dvc", path=here)

    def add(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def core(self) -> None:
        lake = self.work / "core"
        shutil.rmtree(lake, ignore_errors=True)
        settle()
        decode = ("--full-decode",) if self.args.full_decode_photos and self.name == "photos" else ()
        _, out = run_child(_worker_cmd(self.folder, lake, "first", self.args.num_proc, *decode))
        first = json.loads(out)
        self.add("core", first["upload_s"] + first["process_s"])
        self.add("core_process", first["process_s"])
        self.rss["core"] = max(self.rss.get("core", 0), first["rss_mb"])
        before = asset_bytes(lake)
        settle()
        _, out = run_child(_worker_cmd(self.folder, lake, "second", self.args.num_proc))
        again = json.loads(out)
        self.add("reingest", again["upload_s"] + again["process_s"])
        self.add("reingest_process", again["process_s"])
        self.facts["reingest_new_bytes"] = again["bytes_stored"] + asset_bytes(lake) - before
        self.facts["first_new"] = first["new"]
        shutil.rmtree(lake, ignore_errors=True)

    def dagster(self, folder: Path | None = None, prefix: str = "") -> None:
        lake = self.work / "dagster"
        shutil.rmtree(lake, ignore_errors=True)
        _, out = run_child(_worker_cmd(folder or self.folder, lake, "first", self.args.num_proc, "--stage-only"))
        upload = json.loads(out)["upload_s"]
        settle()
        env = {**self.env, "DATALAKE_BASE_PATH": str(lake)}
        cmd = [sys.executable, "-m", "datalake_pipelines.cli.main", "process", "start", "--num-proc"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        seconds, _ = run_child([*cmd, str(self.args.num_proc)], env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if after > before:  # RUSAGE_CHILDREN keeps the largest child: a new high is this child's own peak
            self.rss["dagster"] = max(self.rss.get("dagster", 0), after / 1024)
        self.add(f"{prefix}dagster", upload + seconds)
        self.add(f"{prefix}process_start", seconds)
        shutil.rmtree(lake, ignore_errors=True)

    def small(self) -> None:
        """Fixed overhead on a batch small enough that the core time hardly matters: the same files through
        ``process_pending`` and through ``process start``, back to back."""
        folder = self.args.out / f"small-{len(self.paths)}-{self.args.overhead_files}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for p in self.paths[: self.args.overhead_files]:
            os.link(p, folder / p.name)
        lake = self.work / "small-core"
        shutil.rmtree(lake, ignore_errors=True)
        _, out = run_child(_worker_cmd(folder, lake, "first", self.args.num_proc))
        self.add("small_core_process", json.loads(out)["process_s"])
        shutil.rmtree(lake, ignore_errors=True)
        self.dagster(folder, "small_")
        shutil.rmtree(folder, ignore_errors=True)

    def round(self, r: int) -> None:
        passes = [
            ("floor", lambda: self.add("floor", floor_pass(self.paths, self.work / "floor"))),
            ("hash", lambda: self.add("hash", hash_pass(self.paths))),
            ("core", self.core),
        ]
        if not self.args.no_dagster:
            passes.append(("dagster", self.dagster))
        if self.name == "images" and self.args.overhead_files and not self.args.no_dagster:
            passes.append(("small", self.small))
        if self.dvc:
            passes.append(("dvc", lambda: self.add("dvc", dvc_pass(self.dvc, self.paths, self.work / "dvc"))))
        for _name, run in passes if r % 2 == 0 else passes[::-1]:
            run()

    def med(self, key: str) -> float:
        return statistics.median(self.times[key])

    def report_dagster(self, line, verdict, floor: float) -> None:
        n = self.n
        dag = (
            verdict(floor / self.med("dagster"), TARGETS["dagster"])
            if n >= 10_000
            else f"{floor / self.med('dagster'):.2f}"
        )
        line(
            "ours Dagster: upload + process st.",
            "dagster",
            f"= {dag} x floor" + ("" if n >= 10_000 else " (target applies at 10,000 files)"),
        )
        overhead = [a - b for a, b in zip(self.times["process_start"], self.times["core_process"])]
        runs = f"[{', '.join(f'{t:.2f}' for t in overhead)}]"
        note = "core ran full decode, process start cannot: not comparable" if self.name == "photos" else ""
        print(f"  {'  process start - core process':<34}{statistics.median(overhead):8.2f} s  {runs}  {note}")
        if "small_process_start" in self.times:
            k = self.args.overhead_files
            fixed = [a - b for a, b in zip(self.times["small_process_start"], self.times["small_core_process"])]
            print(
                f"  {f'fixed overhead, {k}-file batch':<34}{statistics.median(fixed):8.2f} s  "
                f"[{', '.join(f'{t:.2f}' for t in fixed)}]  process start {self.med('small_process_start'):.2f} s"
                f" - core {self.med('small_core_process'):.2f} s = "
                f"{verdict(statistics.median(fixed), TARGETS['overhead_s'], higher=False)} s"
            )

    def report(self) -> list[bool]:
        n, mb, ok = self.n, self.mb, []

        def line(label: str, key: str, note: str = "") -> None:
            s = self.med(key)
            runs = ", ".join(f"{t:.2f}" for t in self.times[key])
            print(f"  {label:<34}{s:8.2f} s {n / s:9.0f} files/s {mb / s:7.1f} MB/s  [{runs}]  {note}")

        def verdict(value: float, target: float, higher: bool = True, strict: bool = False) -> str:
            met = value >= target if higher else (value < target if strict else value <= target)
            ok.append(met)
            sign = ">=" if higher else ("<" if strict else "<=")
            return f"{value:.2f} (target {sign} {target}: {'met' if met else 'MISSED'})"

        floor, hashed = self.med("floor"), self.med("hash")
        print(f"\n{self.name}: {n} files, {mb:.0f} MB ({mb * 1e3 / n:.0f} KB each); medians of {self.args.rounds}")
        line("floor sha256 + sharded copy", "floor")
        line("hash-only sha256", "hash")
        if "dvc" in self.times:
            line("dvc add (subprocess)", "dvc")
        else:
            print("  dvc add                            SKIPPED: no dvc ($DVC, PATH; make bench installs it)")
        line("ours core: upload + process", "core", f"= {verdict(floor / self.med('core'), TARGETS['core'])} x floor")
        line("  of which process_pending", "core_process")
        if "dagster" in self.times:
            self.report_dagster(line, verdict, floor)
        if "dvc" in self.times:
            print(
                f"  {'ours core / dvc add files/s':<34}{verdict(self.med('dvc') / self.med('core'), TARGETS['dvc'])} x"
            )
            if "dagster" in self.times:
                ratio = self.med("dvc") / self.med("dagster")
                print(f"  {'ours Dagster / dvc add':<34}{ratio:.2f} x files/s (no target)")
        new_bytes = self.facts["reingest_new_bytes"]
        line(
            "re-ingest: upload + process",
            "reingest",
            f"= {verdict(hashed / self.med('reingest'), TARGETS['reingest'])} x hash-only",
        )
        line(
            "  of which process_pending",
            "reingest_process",
            f"= {hashed / self.med('reingest_process'):.2f} x hash-only",
        )
        zero = new_bytes == 0
        ok.append(zero)
        print(f"  {'re-ingest new asset bytes':<34}{new_bytes:8d}    (target 0: {'met' if zero else 'MISSED'})")
        for who, rss in self.rss.items():
            under = verdict(rss, TARGETS["rss_mb"], higher=False, strict=True)
            print(f"  {f'peak RSS {who}':<34}{rss:8.0f} MB  = {under} MB")
        return ok


def scale_case(rounds: int) -> bool:
    """``partition_scale.py``'s local case: a 1,000-row batch into a 2M-row partition next to an empty one."""
    import tempfile

    sys.path.insert(0, str(HERE))
    import partition_scale

    work = Path(tempfile.mkdtemp(prefix="partition-scale-"))
    try:
        (work / "local").mkdir()
        r = partition_scale.measure(str(work / "lake"), 2_000_000, 1000, rounds, work / "local")
        partition_scale.report("local", 2_000_000, 1000, r)
        return statistics.median(r["big"]) / statistics.median(r["empty"]) <= TARGETS["scale"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="~50 KB JPEGs (0: skip)")
    parser.add_argument("--kb", type=int, default=50)
    parser.add_argument("--photos", type=int, default=500, help="~1.5 MB photos ingested with full decode (0: skip)")
    parser.add_argument("--photo-kb", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--overhead-files", type=int, default=200, help="batch of the fixed-overhead pass (0: skip)")
    parser.add_argument("--no-dagster", action="store_true", help="skip the Dagster passes (core, floor, re-ingest)")
    parser.add_argument("--scale", action="store_true", help="also the 2M-row partition case (slow: builds 2M rows)")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    # the child process of the core pass
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", default="first", help=argparse.SUPPRESS)
    parser.add_argument("--stage-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full-decode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    args.full_decode_photos = True

    home = args.out / "dagster_home"  # warm: a user's instance exists before their first batch
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", "from datalake_pipelines.services.runner import get_instance; get_instance()"],
        env=env,
        check=True,
        cwd=ROOT,
    )
    benches = []
    if args.images:
        benches.append(
            Bench("images", generate(args.out / f"images-{args.images}-{args.kb}kb", args.images, args.kb), args, env)
        )
    if args.photos:
        folder = args.out / f"photos-{args.photos}-{args.photo_kb}kb"
        benches.append(Bench("photos", generate(folder, args.photos, args.photo_kb), args, env))
    for b in benches:
        hash_pass(b.paths)  # warm the page cache
        if not b.dvc:
            print(f"no dvc ($DVC, PATH, this venv): the dvc add row of {b.name} is skipped (make bench installs it)")
    load = [os.getloadavg()]
    for r in range(args.rounds):
        for b in benches:
            b.round(r)
        load.append(os.getloadavg())
        print(f"round {r + 1}/{args.rounds} done, load average {load[-1][0]:.1f}", flush=True)
    print(
        f"\n{os.cpu_count()} CPUs, num_proc={args.num_proc}; 1-min load average per round: "
        f"{', '.join(f'{x[0]:.1f}' for x in load)}"
    )
    ok = [met for b in benches for met in b.report()]
    if args.scale:
        print()
        ok.append(scale_case(5))
    print(f"\ntargets met: {sum(ok)} of {len(ok)}")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
