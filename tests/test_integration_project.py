"""featsync as a local dbt package inside another team's project (tests/integration_project)."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent


def test_other_project_uses_featsync_macros(tmp_path, monkeypatch):
    dest = tmp_path / "integration_project"
    shutil.copytree(ROOT / "tests" / "integration_project", dest)
    # Point the local package at this checkout wherever the copy lives.
    (dest / "packages.yml").write_text(f"packages:\n  - local: {ROOT}\n")
    db = tmp_path / "integration.duckdb"
    monkeypatch.setenv("FEATSYNC_INTEGRATION_DUCKDB_PATH", str(db))
    project = Project.open(dest)
    project.run_dbt(["deps"])
    # seeds, the model built with featsync.window_aggregates, its dbt unit test and
    # the featsync.unique_combination generic test; featsync's own examples are disabled.
    project.run_dbt(["build"])

    registry = project.registry()
    assert list(registry.feature_views) == ["visitor_features"]
    view = registry.feature_view("visitor_features")
    assert view.version == 3 and view.ttl_seconds == 7 * 86400 and view.tags == {"growth": ""}
    service = registry.service("recommender")
    assert [str(r) for r in service.features] == [
        f"visitor_features:{f}"
        for f in ("views_1d", "views_7d", "pricing_share_1d", "pricing_share_7d", "longest_view_1d", "longest_view_7d")
    ]
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("select visitor_id, views_1d, views_7d from visitor_features order by 1, event_timestamp").fetchall()
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    # v2 has two views at the same instant: one row for that instant, counting both;
    # its next view is 8 days later, outside the 7d window.
    assert rows == [("v1", 1, 1), ("v1", 2, 2), ("v1", 1, 3), ("v2", 2, 2), ("v2", 1, 1)]
    assert "user_transaction_features" not in tables and "raw_transactions" not in tables


def test_other_project_computes_its_own_on_demand_features(tmp_path, monkeypatch):
    """The consuming project's generated macro (not featsync's example one) feeds the join."""
    dest = tmp_path / "integration_project"
    shutil.copytree(ROOT / "tests" / "integration_project", dest)
    (dest / "packages.yml").write_text(f"packages:\n  - local: {ROOT}\n")
    db = tmp_path / "integration.duckdb"
    monkeypatch.setenv("FEATSYNC_INTEGRATION_DUCKDB_PATH", str(db))
    project = Project.open(dest)
    project.run_dbt(["deps"])
    project.run_dbt(["build", "--select", "+recommender_training_set", "--exclude", "resource_type:unit_test"])
    checked_in = (dest / "macros" / "featsync_on_demand.sql").read_text()
    service = project.registry().service("recommender")
    assert (dest / "macros" / "featsync_on_demand.sql").read_text() == checked_in  # current: not rewritten
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "select seconds_on_page, longest_view_7d, longer_than_usual, share_of_longest from recommender_training_set"
            " order by visitor_id, viewed_at, seconds_on_page"
        ).fetchall()
    assert [r[3] for r in rows] == [1.0, 1.0, 0.125, 0.2, 1.0, 1.0]
    longer, share = service.on_demand
    for seconds, longest, got_longer, got_share in rows:
        env = {"seconds_on_page": seconds, "longest_view_7d": longest}
        assert (got_longer, got_share) == (longer.evaluate(env), share.evaluate(env))
