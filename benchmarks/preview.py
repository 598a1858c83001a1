"""Preview benchmark: what the contact sheet and profile add to an ingest run, next to the core ingest of that batch.

    python benchmarks/preview.py --images 1500 --kb 36 --rounds 5

Every round ingests the same batch into a fresh lake and measures, in this order:
  (a) core ingest   ``process_pending`` of the batch (the peer: ingest without preview; staging not timed);
  (b) preview       ``partition_preview`` of the part files the run added: contact sheet of up to 24 rows plus
                    the profile of the partition (DuckDB figures + matplotlib PNG), what ``catalog_partition``
                    adds to its materialization (``defs/ingest/preview.py``), in this process (imports warm);
  (c) fresh process the same call in a new interpreter, timed inside it including the imports the preview needs
                    first (PIL, matplotlib, DuckDB): a Dagster run executes its step in a fresh process.
Rounds alternate (a), (b), (c) so load from other work falls on all three; every round is printed, then the best
of each and the preview's share of the ingest run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from ingest import generate  # noqa: E402  (benchmarks/ is not a package)

PARTITION = "inhouse/bench/raw/mixed"
FRESH = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines.core.preview.partition import partition_preview
t1 = time.perf_counter()
lake, ref = LakeLayout(sys.argv[1], create=False), PartitionRef.parse(sys.argv[2])
p = partition_preview(lake, ref, [Path(a) for a in sys.argv[3:]])
t2 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "call": t2 - t1, "total": t2 - t0, "shown": p.sheet.shown}))
"""


def one_round(paths: list[Path], num_proc: int, batch_size: int, work: Path) -> dict[str, float]:
    import pandas as pd

    from datalake_pipelines.client import DatalakeClient
    from datalake_pipelines.core.lake.layout import PartitionRef
    from datalake_pipelines.core.preview.partition import partition_preview

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        client = DatalakeClient(Path(tmp) / "lake", num_proc=num_proc, batch_size=batch_size, progress=False)
        client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in paths]}), "inhouse", "bench",
                               image_columns=["image"])  # fmt: skip
        os.sync()
        start = time.perf_counter()
        results = client.process_pending()
        ingest = time.perf_counter() - start
        if [r.status for r in results] != ["done"] or results[0].rows_added != len(paths):
            raise SystemExit(f"ingest failed: {[(r.status, r.error) for r in results]}")
        added = [Path(r.part_file) for r in results if r.part_file]
        ref = PartitionRef.parse(PARTITION)
        start = time.perf_counter()
        preview = partition_preview(client.layout, ref, added)
        warm = time.perf_counter() - start
        if preview.sheet.shown != 24 or not preview.profile_png:
            raise SystemExit(f"preview incomplete: {preview.sheet.shown} thumbnails, {preview.sheet.skipped[:3]}")
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        out = subprocess.run([sys.executable, "-c", FRESH, str(client.layout.base), PARTITION, *map(str, added)],
                             check=True, capture_output=True, text=True, env=env)  # fmt: skip
        fresh = json.loads(out.stdout.strip().splitlines()[-1])
        return {
            "ingest": ingest,
            "preview": warm,
            "sheet": preview.seconds["contact_sheet"],
            "profile": preview.seconds["profile"],
            "fresh": fresh["total"],
            "fresh_imports": fresh["imports"],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--kb", type=int, default=36, help="approximate JPEG size (36 KB: about 320x240 noise)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args(argv)

    paths = generate(args.out / f"images-{args.images}-{args.kb}kb", args.images, args.kb)
    work = args.out / "preview"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"{len(paths)} images ({sum(p.stat().st_size for p in paths) / 1e6:.1f} MB), num_proc={args.num_proc}, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs")  # fmt: skip
    rounds = []
    for k in range(args.rounds):
        r = one_round(paths, args.num_proc, args.batch_size, work)
        rounds.append(r)
        print(f"  round {k + 1}: (a) core ingest {r['ingest']:.3f} s | (b) preview {r['preview']:.3f} s "
              f"(sheet {r['sheet']:.3f}, profile {r['profile']:.3f}) | (c) fresh process {r['fresh']:.3f} s "
              f"(imports {r['fresh_imports']:.3f})", flush=True)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    best = {key: min(r[key] for r in rounds) for key in rounds[0]}
    print(f"best of {args.rounds}, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}:")
    print(f"  (a) core ingest of the batch       {best['ingest']:.3f} s")
    print(
        f"  (b) preview (sheet + profile)      {best['preview']:.3f} s = {best['preview'] / best['ingest']:.0%} "
        "of the core ingest"
    )
    print(
        f"  (c) preview in a fresh process     {best['fresh']:.3f} s = {best['fresh'] / best['ingest']:.0%} "
        f"of the core ingest (imports {best['fresh_imports']:.3f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
