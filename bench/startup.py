"""Benchmark: whole featsync commands (start-up included), beside Feast 0.67's materialize, in one run.

    .venv/bin/python bench/startup.py                        # 550k entities, Feast if found
    .venv/bin/python bench/startup.py --rows 100000 --runs 3
    .venv/bin/python bench/startup.py --feast-python /path/to/feast-venv/bin/python
    .venv/bin/python bench/startup.py --featsync /path/to/core-venv/bin/featsync --no-feast

Every figure is one whole process, as a user or a cron job runs it (interpreter start,
imports, dbt when it runs, the work), the median of --runs runs:
- `featsync --help`, `featsync list`, `featsync get` of one entity;
- `featsync push` with nothing new (the incremental push a scheduler runs every minute),
  with the compiled SQL cached, and with the cache removed before each run (dbt imported
  and run: what every push paid before the cache);
- `featsync push --full-refresh` of every entity, and Feast 0.67's `feast materialize` of
  the same rows (the view's table as a parquet file, Feast's file offline store) into the
  same Redis: a private redis-server started here, emptied before each writer.

Feast runs from its own venv (its pins clash with featsync's): --feast-python, else
$FEAST_PYTHON, else .venv-feast/bin/python (`make feast-venv`); without one the Feast
line is skipped. --featsync times another install's featsync, e.g. a bare `pip install
featsync` (tests/test_install.py keeps one in .pytest_cache/d/featsync-bare-venv/): with
pandas installed (the quality, snowflake and pandas extras), pyarrow imports it on its first
conversion of Python values, about half a second of CPU that a core install does not pay.
The view is bench/pit_project's bench_entity_features: one row per entity, five float
features, no ttl, no expectation suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import redis

from workspace import ROOT, Workspace, private_redis

VIEW = "bench_entity_features"
FEATSYNC = [str(Path(sys.executable).parent / "featsync")]  # --featsync replaces it


CPU: list[float] = []  # CPU seconds (user + system) of the last timed process


def timed(args: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    """Wall seconds of one process; its CPU seconds go to CPU (on a shared machine the wall
    time includes waiting for a core, the CPU time does not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[:] = [after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime]
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def median(args: list[str], runs: int, before=None) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of `runs` runs."""
    times, cpu = [], []
    for _ in range(runs):
        if before:
            before()
        times.append(timed(args))
        cpu.append(CPU[0])
    return statistics.median(times), statistics.median(cpu)


FEAST_REPO = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
source = FileSource(path={path!r}, timestamp_field="event_timestamp")
bench_entity_features = FeatureView(
    name="bench_entity_features",
    entities=[entity],
    ttl=timedelta(days=3650),
    schema=[Field(name=f"f{{i}}", dtype=Float64) for i in range(1, 6)],
    source=source,
    online=True,
)
"""


def has_pandas() -> bool:
    python = Path(FEATSYNC[0]).parent / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(bool(u.find_spec('pandas')))"],
                           capture_output=True, text=True)  # fmt: skip
    return probe.stdout.strip() == "True"


def feast_python(option: str | None) -> str | None:
    for candidate in (option, os.environ.get("FEAST_PYTHON"), str(ROOT / ".venv-feast" / "bin" / "python")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def feast_materialize(python: str, db: Path, url: str, workdir: Path) -> float:
    """Seconds of one whole `feast materialize` of the view's rows into the Redis at `url`."""
    repo = workdir / "feast_repo"
    repo.mkdir()
    parquet = workdir / "bench_entity_features.parquet"
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute(f"copy (select * from {VIEW}) to '{parquet}' (format parquet)")
    host_port = url.removeprefix("redis://").split("/")[0]
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(f"""\
            project: featsync_bench
            provider: local
            registry: {workdir / "registry.db"}
            online_store:
              type: redis
              connection_string: "{host_port}"
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """)
    )
    (repo / "features.py").write_text(FEAST_REPO.format(path=str(parquet)))
    feast = str(Path(python).parent / "feast")
    env = {**os.environ, "FEAST_USAGE": "False"}
    timed([feast, "-c", str(repo), "apply"], env=env)
    return timed([feast, "-c", str(repo), "materialize", "2025-12-31T00:00:00", "2026-01-03T00:00:00"], env=env)


def precompile() -> None:
    """Byte-compile the featsync package being timed, as `pip install` does: a source checkout run
    with PYTHONDONTWRITEBYTECODE (as in this project's sessions) would otherwise compile every
    featsync module from source in every process, about 0.1 s of CPU that no installed copy pays."""
    import compileall

    import featsync

    compileall.compile_dir(str(Path(featsync.__file__).parent), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=550_000)
    parser.add_argument("--runs", type=int, default=5, help="runs per short command (the median is shown)")
    parser.add_argument("--feast-python", default=None, help="python of a venv with feast[redis]==0.67.*")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast's materialize")
    parser.add_argument("--featsync", default=None, help="the featsync executable to time (default: this venv's)")
    args = parser.parse_args()
    if args.featsync:
        FEATSYNC[:] = [args.featsync]
    else:
        precompile()
    work = Workspace.create()
    try:
        project = work.entity_project(args.rows)
        with private_redis() as url:
            run(project, work, url, args)
    finally:
        work.remove()


def run(project, work: Workspace, url: str, args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(url)
    base = ["--project-dir", str(project.project_dir), "--target", "duckdb"]  # the manifest entity_project parsed
    online = [*base, "--redis-url", url, "--key-prefix", "bench"]
    compiled = project.target_path / "compiled.json"
    n = args.rows

    client.flushall()  # the benchmark's own private server
    compiled.unlink(missing_ok=True)
    cold_full = timed([*FEATSYNC, "push", *online, "--full-refresh"])  # dbt compiles (the manifest is parsed), fills the cache
    cold_cpu = CPU[0]
    client.flushall()
    full = timed([*FEATSYNC, "push", *online, "--full-refresh"])
    full_cpu = CPU[0]
    assert client.dbsize() == n + 1, client.dbsize()  # every entity and the view's push state

    rows = [
        ("featsync --help", median([*FEATSYNC, "--help"], args.runs)),
        ("featsync list", median([*FEATSYNC, "list", *base], args.runs)),
        ("featsync get (one entity)", median([*FEATSYNC, "get", *online, "--features", f"{VIEW}:f1", "--entity", "entity_id=42"],
                                             args.runs)),
        ("featsync push, nothing new (compiled SQL cached)", median([*FEATSYNC, "push", *online], args.runs)),
        (
            "featsync push, nothing new, cache removed (dbt compiles)",
            median([*FEATSYNC, "push", *online], args.runs, before=lambda: compiled.unlink(missing_ok=True)),
        ),
    ]  # fmt: skip
    print(f"{n:,} entities, 5 float features, DuckDB, a private redis-server; whole processes, median of {args.runs}")
    print(f"featsync: {FEATSYNC[0]} (pandas installed: {has_pandas()})")
    print(f"{'command':<62}{'wall s':>8}{'CPU s':>8}")
    for label, (seconds, cpu) in rows:
        print(f"{label:<62}{seconds:>8.2f}{cpu:>8.2f}")
    first = "featsync push --full-refresh, first (dbt compiles)"
    print(f"{first:<62}{cold_full:>8.2f}{cold_cpu:>8.2f}   {n / cold_full:,.0f} rows/s")
    print(f"{'featsync push --full-refresh (compiled SQL cached)':<62}{full:>8.2f}{full_cpu:>8.2f}   {n / full:,.0f} rows/s")

    python = None if args.no_feast else feast_python(args.feast_python)
    if python is None:
        print("Feast: no venv with feast (pass --feast-python or run make feast-venv); skipped")
        return
    client.flushall()
    feast = feast_materialize(python, work.db, url, work.root)
    feast_cpu, written = CPU[0], client.dbsize()
    print(f"{'feast materialize (Feast 0.67, file offline store)':<62}{feast:>8.2f}{feast_cpu:>8.2f}   {n / feast:,.0f} rows/s")
    assert written == n, f"Feast wrote {written:,} keys for {n:,} entities"
    print(
        f"featsync push --full-refresh is {feast / full:.1f}x faster than feast materialize by wall time, "
        f"{feast_cpu / full_cpu:.1f}x by CPU time (the first, compiling, push: {feast / cold_full:.1f}x)"
    )


if __name__ == "__main__":
    main()
