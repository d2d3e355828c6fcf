"""A scratch copy of bench/pit_project (featsync as a local package) on its own DuckDB file."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
        (project_dir / "packages.yml").write_text(f"packages:\n  - local: {ROOT}\n")
        db = root / "bench.duckdb"
        os.environ["FEATSYNC_BENCH_DUCKDB_PATH"] = str(db)
        os.environ.setdefault("DBT_LOG_PATH", str(root / "logs"))
        return cls(root, project_dir, db)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
