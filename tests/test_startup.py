"""Start-up cost: what a command imports and whether it runs dbt.

The light commands (`--help`, `list`, `get`) and a push of an unchanged project must not load
dbt or the heavy optional libraries; each is run in a fresh interpreter here, which then
reports the modules it loaded (no timing: the figures are bench/startup.py's). The compiled
SQL cache that makes this possible must never serve SQL of another version of the project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import duckdb
import pytest
import redis

from conftest import copy_project, delete_pushed_keys
from featsync.online.push import Pusher, compile_latest_rows
from featsync.project import Project

HEAVY = {"dbt", "dbt_common", "great_expectations", "scipy", "starlette", "uvicorn", "pandas", "sqlalchemy"}
PROBE = """
import json, sys
from featsync.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}), file=sys.stderr)
"""


def loaded(*args: str) -> tuple[int, set[str], str]:
    """(exit code, heavy top-level modules loaded, stdout) of one featsync command in a fresh interpreter."""
    code, modules, stdout = loaded_modules(*args)
    return code, HEAVY & modules, stdout


def loaded_modules(*args: str) -> tuple[int, set[str], str]:
    """(exit code, every top-level module loaded, stdout) of one featsync command in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, env=os.environ)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), result.stdout


def test_help_loads_nothing_heavy():
    code, heavy, out = loaded("--help")
    assert code == 0 and "training-set" in out and heavy == set()
    code, heavy, out = loaded("push", "-h")
    assert code == 0 and "--select" in out and heavy == set()


@pytest.fixture
def pushed(pit_duckdb, redis_url):
    """The pit project with a few rows pushed once in this process (dbt compiled its SQL then)."""
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        for table in ("user_rows", "pair_rows", "profile_rows"):
            con.execute(f"delete from {table}")
        con.execute("insert into user_rows values ('u1', now()::timestamp, null, 7, 'x'), ('u2', now()::timestamp, null, 8, 'y')")
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    Pusher(pit_duckdb, client, key_prefix=prefix).push()
    # --target duckdb: the target the pit project was built and parsed for (each target has its own manifest)
    project = ["--project-dir", str(pit_duckdb.project_dir), "--target", "duckdb"]
    yield pit_duckdb, [*project, "--redis-url", redis_url, "--key-prefix", prefix]
    delete_pushed_keys(pit_duckdb, client, prefix)


def test_list_get_and_an_unchanged_push_load_no_dbt(pushed):
    project, args = pushed
    code, heavy, out = loaded("list", "--project-dir", str(project.project_dir), "--target", "duckdb", "--json")
    assert code == 0 and "fv_user" in out and heavy == set()
    # pyarrow itself imports pandas, when it is installed, on its first conversion of Python
    # values (every data command makes one); featsync never does, and the core has no pandas.
    code, heavy, out = loaded("get", *args, "--features", "fv_user:amount", "--entity", "user_id=u1", "--json")
    assert code == 0 and json.loads(out)["amount"] == [7] and heavy - {"pandas"} == set()
    # a read decodes with struct: numpy and pyarrow (push's vectorized encoding) are never imported
    code, modules, out = loaded_modules("get", *args, "--features", "fv_user:*", "--entity", "user_id=u1")
    assert code == 0 and "7" in out and {"numpy", "pyarrow", "pandas"} & modules == set()
    code, heavy, out = loaded("push", *args, "--json")
    pushed_views = {r["feature_view"]: r for r in json.loads(out)}
    assert code == 0 and pushed_views["fv_user"]["validation"] == "unchanged" and not pushed_views["fv_user"]["full_refresh"]
    assert heavy - {"pandas"} == set()  # the compiled SQL came from the cache; the profile was read without dbt


def test_compiled_sql_is_reused_only_for_the_same_project(tmp_path, monkeypatch):
    """The cache key is the manifest: a changed macro, model YAML or profile variable means new SQL."""
    root = copy_project(tmp_path / "project")
    project = Project.open(root)
    first = compile_latest_rows(project, ["product_sales_features"])["product_sales_features"]
    assert (project.target_path / "compiled.json").is_file()

    def no_dbt(*args, **kwargs):
        raise AssertionError("dbt ran although the project did not change")

    with monkeypatch.context() as patch:
        patch.setattr(Project, "run_dbt", no_dbt)
        assert compile_latest_rows(Project.open(root), ["product_sales_features"])["product_sales_features"] == first

    macro = root / "package" / "macros" / "latest_rows.sql"
    macro.write_text(macro.read_text().replace("where featsync_pick = 1", "where featsync_pick = 1 -- edited macro"))
    edited = compile_latest_rows(Project.open(root), ["product_sales_features"])["product_sales_features"]
    assert "-- edited macro" in edited

    yml = root / "models" / "features" / "product_sales_features.yml"
    column = "      - name: product_refund_rate_30d\n"
    text = yml.read_text()
    yml.write_text(text[: text.index(column)] + text[text.index(column) :].split("\n", 3)[3])
    narrower = compile_latest_rows(Project.open(root), ["product_sales_features"])["product_sales_features"]
    assert "product_refund_rate_30d" in edited and "product_refund_rate_30d" not in narrower

    monkeypatch.setenv("FEATSYNC_PG_SCHEMA", f"featsync_other_{uuid.uuid4().hex[:6]}")
    postgres = Project.open(root, target="postgres")
    assert os.environ["FEATSYNC_PG_SCHEMA"] in compile_latest_rows(postgres, ["product_sales_features"])["product_sales_features"]
    monkeypatch.setenv("FEATSYNC_PG_SCHEMA", "featsync_third")
    assert (
        "featsync_third"
        in compile_latest_rows(Project.open(root, target="postgres"), ["product_sales_features"])["product_sales_features"]
    )


def test_compiled_sql_is_keyed_by_the_manifest_on_disk(tmp_path, monkeypatch):
    """A Project whose manifest another process re-parsed since it read it (the file no longer
    looks stale) reads the new one: it cached compiled SQL under its old copy's hash, so the
    next process, on the same unchanged project, found no entry and loaded dbt to compile it."""
    root = copy_project(tmp_path / "project")
    long_lived = Project.open(root)
    compile_latest_rows(long_lived, ["product_sales_features"])
    Project.open(root).manifest(refresh=True)  # another process's `dbt parse`: a new manifest.json
    sql = compile_latest_rows(long_lived, ["product_sales_features"])["product_sales_features"]

    def no_dbt(*args, **kwargs):
        raise AssertionError("dbt ran although the project did not change")

    monkeypatch.setattr(Project, "run_dbt", no_dbt)
    assert compile_latest_rows(Project.open(root), ["product_sales_features"])["product_sales_features"] == sql
