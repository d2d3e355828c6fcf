"""featsync as a dbt package inside another team's project (tests/integration_project).

The consumer lists featsync's package folder (`package/`, the macros only) and says nothing
else about featsync: installing it, from a local path or from git, must bring the macros and
none of the example's models, seeds, snapshots, exposures or tests. The featsync CLI then
works on the consumer's own feature views.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import PACKAGE, PROJECT_FILES, PROJECT_FOLDERS, ROOT
from featsync.cli import main
from featsync.ondemand.macro import MACRO_FILE
from featsync.project import Project

CONSUMER = ROOT / "tests" / "integration_project"
# Every kind of manifest entry a dbt project can add besides macros (and docs blocks).
PROJECT_RESOURCES = ("nodes", "sources", "exposures", "unit_tests", "metrics", "semantic_models", "saved_queries", "groups")
MACRO_FILES = sorted(path.relative_to(PACKAGE).as_posix() for path in (PACKAGE / "macros").rglob("*.sql"))  # the package's


def consumer_copy(tmp: Path, package: str) -> Path:
    """A copy of the consumer project whose packages.yml lists featsync as `package` (YAML lines)."""
    dest = tmp / "integration_project"
    shutil.copytree(CONSUMER, dest)
    (dest / "packages.yml").write_text(f"packages:\n{package}")
    return dest


def open_consumer(dest: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("FEATSYNC_INTEGRATION_DUCKDB_PATH", str(dest.parent / "integration.duckdb"))
    project = Project.open(dest)
    project.run_dbt(["deps"])
    return project


def assert_only_own_resources(project: Project) -> None:
    """The consumer's manifest (from its `dbt build`) holds its own nodes only; featsync adds macros and nothing else."""
    manifest = json.loads((project.project_dir / "target" / "manifest.json").read_text())
    for kind in PROJECT_RESOURCES:
        foreign = sorted(
            uid for uid, entry in (manifest.get(kind) or {}).items() if entry["package_name"] != "featsync_integration"
        )
        assert foreign == [], f"{kind} from another package: {foreign}"
    macros = {m["name"] for m in manifest["macros"].values() if m["package_name"] == "featsync"}
    assert {"point_in_time_join", "latest_rows", "window_aggregates", "test_unique_combination", "feature_view_index"} <= macros
    assert not macros & {"example_time", "example_raw", "featsync_on_demand_sql"}, "the example's macros leaked"
    own = {m["name"] for m in manifest["macros"].values() if m["package_name"] == "featsync_integration"}
    assert own == {"featsync_on_demand_sql"}  # the consumer's own generated macro


def own_tables(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}


@pytest.fixture(scope="module")
def consumer(tmp_path_factory) -> Iterator[Project]:
    """The consumer with featsync installed from its local package folder, built once (`dbt deps`, `dbt build`)."""
    dest = consumer_copy(tmp_path_factory.mktemp("consumer"), f"  - local: {PACKAGE}\n")
    with pytest.MonkeyPatch.context() as mp:
        project = open_consumer(dest, mp)
        # seeds, the model built with featsync.window_aggregates, its dbt unit test, the
        # featsync.unique_combination generic test and the training set with on-demand features
        project.run_dbt(["build"])
        yield project


def test_local_package_brings_only_the_macros(consumer):
    assert (consumer.project_dir / "dbt_packages" / "featsync").resolve() == PACKAGE
    assert_only_own_resources(consumer)
    db = consumer.project_dir.parent / "integration.duckdb"
    assert own_tables(db) == {"page_views", "visitor_features", "recommender_training_set"}


def test_other_project_uses_featsync_macros(consumer):
    registry = consumer.registry()
    assert list(registry.feature_views) == ["visitor_features"]
    view = registry.feature_view("visitor_features")
    assert view.version == 3 and view.ttl_seconds == 7 * 86400 and view.tags == {"growth": ""}
    service = registry.service("recommender")
    assert [str(r) for r in service.features] == [
        f"visitor_features:{f}"
        for f in ("views_1d", "views_7d", "pricing_share_1d", "pricing_share_7d", "longest_view_1d", "longest_view_7d")
    ]
    with duckdb.connect(str(consumer.project_dir.parent / "integration.duckdb"), read_only=True) as con:
        rows = con.execute("select visitor_id, views_1d, views_7d from visitor_features order by 1, event_timestamp").fetchall()
    # v2 has two views at the same instant: one row for that instant, counting both;
    # its next view is 8 days later, outside the 7d window.
    assert rows == [("v1", 1, 1), ("v1", 2, 2), ("v1", 1, 3), ("v2", 2, 2), ("v2", 1, 1)]


def test_other_project_computes_its_own_on_demand_features(consumer):
    """The consuming project's generated macro (not featsync's example one) feeds the join."""
    checked_in = (CONSUMER / "macros" / MACRO_FILE).read_text()
    service = consumer.registry().service("recommender")
    assert (consumer.project_dir / "macros" / MACRO_FILE).read_text() == checked_in  # current: not rewritten
    with duckdb.connect(str(consumer.project_dir.parent / "integration.duckdb"), read_only=True) as con:
        rows = con.execute(
            "select seconds_on_page, longest_view_7d, longer_than_usual, share_of_longest from recommender_training_set"
            " order by visitor_id, viewed_at, seconds_on_page"
        ).fetchall()
    assert [r[3] for r in rows] == [1.0, 1.0, 0.125, 0.2, 1.0, 1.0]
    longer, share = service.on_demand
    for seconds, longest, got_longer, got_share in rows:
        env = {"seconds_on_page": seconds, "longest_view_7d": longest}
        assert (got_longer, got_share) == (longer.evaluate(env), share.evaluate(env))


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_featsync_cli_in_the_consumer_project(consumer, tmp_path):
    """list, describe, validate, push and training-set see the consumer's views only."""
    where = ["--project-dir", str(consumer.project_dir)]
    listed = json.loads(cli("list", *where, "--json"))
    assert [v["name"] for v in listed["feature_views"]] == ["visitor_features"]
    assert [(s["name"], s["version"]) for s in listed["feature_services"]] == [("recommender", 1), ("recommender", 2)]
    assert [e["name"] for e in listed["entities"]] == ["visitor_id"]
    described = json.loads(cli("describe", "recommender:v2", *where, "--json"))
    assert [f["name"] for f in described["on_demand"]] == ["longer_than_usual", "share_of_longest"]
    (validation,) = json.loads(cli("validate", *where, "--json"))
    assert (validation["feature_view"], validation["status"]) == ("visitor_features", "no_suite")
    (pushed,) = json.loads(cli("push", *where, "--dry-run", "--key-prefix", f"featsync-test-{uuid.uuid4().hex[:8]}", "--json"))
    assert (pushed["feature_view"], pushed["rows_read"], pushed["keys_written"]) == ("visitor_features", 2, 0)
    out = tmp_path / "train.parquet"
    cli(
        "training-set",
        *where,
        "--service",
        "recommender:v2",
        "--spine",
        "page_views",
        "--spine-timestamp",
        "viewed_at",
        "--out",
        str(out),
    )
    table = pq.read_table(out).sort_by(
        [("visitor_id", "ascending"), ("viewed_at", "ascending"), ("seconds_on_page", "ascending")]
    )
    assert table.column("share_of_longest").to_pylist() == [1.0, 1.0, 0.125, 0.2, 1.0, 1.0]


def test_generated_macro_is_written_with_a_note_on_stderr(tmp_path, monkeypatch):
    """featsync writes its generated macro into the consumer's macros/ only with a line on stderr naming the file."""
    dest = consumer_copy(tmp_path, f"  - local: {PACKAGE}\n")
    generated = dest / "macros" / MACRO_FILE
    generated.unlink()
    open_consumer(dest, monkeypatch)
    first = CliRunner().invoke(main, ["list", "--project-dir", str(dest), "--json"])
    assert first.exit_code == 0, first.output
    lines = first.stderr.splitlines()  # one warning line from the featsync logger, in the --log-format
    assert len(lines) == 1 and lines[0].endswith(
        f"WARNING featsync.project: wrote {generated}: the on-demand features' SQL compiled for dbt (generated; check it in)"
    ), lines
    assert generated.read_text() == (CONSUMER / "macros" / MACRO_FILE).read_text()
    again = CliRunner().invoke(main, ["list", "--project-dir", str(dest), "--json"])
    assert again.exit_code == 0 and again.stderr == ""  # current: neither written nor announced


def git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=featsync tests", "-c", "user.email=tests@featsync.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def test_git_install_with_subdirectory_brings_only_the_macros(tmp_path, monkeypatch):
    """`git:` + `revision:` + `subdirectory: package`, from a bare repository holding featsync's whole layout."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to test installing featsync from git")
    work = tmp_path / "featsync"
    work.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, work / name)
    for name in PROJECT_FOLDERS:
        shutil.copytree(ROOT / name, work / name)
    git(work, "init", "--quiet")
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--message", "featsync")
    git(work, "tag", "v0.1.0")
    bare = tmp_path / "featsync.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(work), str(bare))

    spec = f"  - git: {bare.as_uri()}\n    revision: v0.1.0\n    subdirectory: package\n"
    dest = consumer_copy(tmp_path / "consumer", spec)
    project = open_consumer(dest, monkeypatch)
    installed = dest / "dbt_packages" / "featsync"
    assert not installed.is_symlink()
    assert sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()) == [
        "dbt_project.yml",
        *MACRO_FILES,
    ]
    lock = (dest / "package-lock.yml").read_text()
    assert "subdirectory: package" in lock and bare.as_uri() in lock
    project.run_dbt(["build"])
    assert_only_own_resources(project)
    assert own_tables(dest.parent / "integration.duckdb") == {"page_views", "visitor_features", "recommender_training_set"}
