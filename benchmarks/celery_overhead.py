"""Per-step dispatch overhead of the production profile's Celery executor against the in-process default.

    python benchmarks/celery_overhead.py [--steps 20] [--rounds 3] [--workers 2]

One job of N independent trivial steps (each returns None through the IO manager), run with ``execute_job`` on a
Postgres instance (a throwaway server, as in the production profile) two ways, rounds alternating:
  in_process  every step in the run's process (the floor: Dagster's own per-step cost, events to Postgres)
  celery      every step a task on a Redis broker, executed by ``--workers`` workers of one process each
              (``celery -A datalake_pipelines.lib.celery_worker worker -c 1``), started here, warmed by one run
Printed: wall seconds per run and per step (median of the rounds) and the difference per step, the cost a chunk
pays for being able to run on any host. Needs PostgreSQL and redis-server (``make services``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = int(os.environ.get("BENCH_STEPS", "20"))  # read at import: the workers rebuild the same job from this file


def _trivial(i: int) -> dg.OpDefinition:
    @dg.op(name=f"step_{i}")
    def step() -> None:
        return None

    return step


def _job(name: str, executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    @dg.job(name=name, executor_def=executor)
    def trivial() -> None:
        for i in range(STEPS):
            _trivial(i)()

    return trivial


def in_process_job() -> dg.JobDefinition:
    return _job("trivial_in_process", dg.in_process_executor)


def celery_job() -> dg.JobDefinition:
    from dagster_celery import celery_executor

    from datalake_pipelines.lib.executor import celery_executor_config

    return _job("trivial_celery", celery_executor.configured(celery_executor_config(), name="bench_celery"))


def timed(fn, instance: dg.DagsterInstance) -> float:
    start = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    result = dg.execute_job(dg.reconstructable(fn), instance, run_config=quiet)
    assert result.success, f"{fn.__name__} failed"
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ["BENCH_STEPS"] = str(args.steps)
    global STEPS
    STEPS = args.steps
    from datalake_pipelines_tests.support.services import postgres_server, redis_server

    root = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    workers: list[subprocess.Popen] = []
    with postgres_server() as pg, redis_server() as redis:
        home = root / "dagster_home"
        home.mkdir()
        shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        os.environ.update(
            DAGSTER_HOME=str(home),
            DAGSTER_POSTGRES_URL=pg.url.replace("postgresql://", "postgresql+psycopg2://", 1),
            DATALAKE_EXECUTOR="celery",
            DATALAKE_CELERY_BROKER=redis.url,
            PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
        )
        try:
            for n in range(args.workers):
                cmd = [sys.executable, "-m", "celery", "-A", "datalake_pipelines.lib.celery_worker", "worker"]
                cmd += [
                    "-c",
                    "1",
                    "-n",
                    f"bench{n}@%h",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ]
                workers.append(subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with dg.DagsterInstance.get() as instance:
                timed(in_process_job, instance)  # warm-up: imports, tables
                timed(celery_job, instance)  # warm-up: the workers' pool processes load the job
                times: dict[str, list[float]] = {"in_process": [], "celery": []}
                for _ in range(args.rounds):
                    times["in_process"].append(timed(in_process_job, instance))
                    times["celery"].append(timed(celery_job, instance))
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            shutil.rmtree(root, ignore_errors=True)
    floor, celery = statistics.median(times["in_process"]), statistics.median(times["celery"])
    print(f"{args.steps} trivial steps, median of {args.rounds} rounds, {args.workers} Celery workers (1 process each)")
    print(f"{'executor':<12}{'run s':>8}{'per step ms':>13}")
    print(f"{'in_process':<12}{floor:>8.2f}{floor / args.steps * 1000:>13.0f}   (floor)")
    print(f"{'celery':<12}{celery:>8.2f}{celery / args.steps * 1000:>13.0f}")
    print(f"Celery dispatch overhead: {(celery - floor) / args.steps * 1000:.0f} ms per step")


if __name__ == "__main__":
    main()
