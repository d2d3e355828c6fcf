"""What benchmarks run on: a scratch copy of bench/pit_project (featsync as a local package) on its
own DuckDB file, and a private redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workspace:
    root: Path
    project_dir: Path
    db: Path

    @classmethod
    def create(cls) -> Workspace:
        root = Path(tempfile.mkdtemp(prefix="featsync-bench-"))
        project_dir = root / "pit_project"
        shutil.copytree(ROOT / "bench" / "pit_project", project_dir)
        (project_dir / "packages.yml").write_text(f"packages:\n  - local: {ROOT / 'package'}\n")
        db = root / "bench.duckdb"
        os.environ["FEATSYNC_BENCH_DUCKDB_PATH"] = str(db)
        os.environ.setdefault("DBT_LOG_PATH", str(root / "logs"))
        return cls(root, project_dir, db)

    def entity_project(self, rows: int) -> Project:
        """The project with `bench_entity_features` built over `rows` entities (5 float features,
        one row each, whole-second event times); the other sources are left empty."""
        import duckdb

        from featsync.project import Project

        with duckdb.connect(str(self.db)) as con:
            for table in ("user_rows", "merchant_rows", "spine"):
                con.execute(f"create table {table} (x int)")
            con.execute(f"""create table entity_rows as
                select i::bigint as entity_id, timestamp '2026-01-01' + to_seconds(i % 86400) as event_timestamp,
                       i / 3.0 as f1, i / 7.0 as f2, (i % 1000)::double as f3, sqrt(i) as f4, -i / 11.0 as f5
                from range({rows}) t(i)""")
        project = Project.open(self.project_dir, self.project_dir, "duckdb")
        project.run_dbt(["deps"])
        project.run_dbt(["run", "--select", "bench_entity_features"])
        project.registry()
        return project

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def private_redis(port: int | None = None) -> Iterator[str]:
    """A redis-server of the benchmark's own on loopback (a free port unless given), nothing
    kept on disk, killed at the end; yields its URL once it answers PING."""
    import redis

    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="featsync-bench-redis-")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen([shutil.which("redis-server"), *args], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
