"""The target's connection settings read without dbt equal what dbt's own profile loader gives."""

from __future__ import annotations

import shutil

import pytest

from conftest import ROOT
from featsync.offline.profiles import light_credentials, read_target
from featsync.offline.warehouse import POSTGRES_OPTIONS, dbt_credentials, profile_credentials
from featsync.project import Project

FIELDS = {
    "duckdb": ("type", "path", "schema", "settings"),
    "postgres": ("type", "host", "port", "user", "password", "database", "schema", *POSTGRES_OPTIONS),
}


def fields(credentials, engine: str) -> dict:
    return {name: getattr(credentials, name) for name in FIELDS[engine]}


@pytest.mark.parametrize(
    ("target", "env"),
    [
        (None, {}),  # the profile's default target: env_var('FEATSYNC_TARGET', 'dev')
        ("dev", {"FEATSYNC_DUCKDB_PATH": "/tmp/featsync-profiles-test.duckdb"}),
        ("postgres", {}),
        ("postgres", {"FEATSYNC_PG_PORT": "5544", "FEATSYNC_PG_PASSWORD": "s3cret", "FEATSYNC_PG_SCHEMA": "other"}),
    ],
)
def test_light_credentials_equal_dbt(monkeypatch, target, env):
    for name in ("FEATSYNC_TARGET", "FEATSYNC_DUCKDB_PATH", "FEATSYNC_PG_PORT", "FEATSYNC_PG_PASSWORD", "FEATSYNC_PG_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    project = Project.open(ROOT, ROOT, target)
    light, full = light_credentials(project), dbt_credentials(project)
    assert light is not None and light.type == full.type
    assert fields(light, full.type) == fields(full, full.type)


def test_anything_else_goes_to_dbt(tmp_path, monkeypatch):
    """Jinja beyond env_var, or a variable without a default that is not set, is dbt's to render."""
    shutil.copy(ROOT / "dbt_project.yml", tmp_path / "dbt_project.yml")
    profile = (ROOT / "profiles.yml").read_text()
    monkeypatch.delenv("FEATSYNC_TARGET", raising=False)
    (tmp_path / "profiles.yml").write_text(profile.replace("schema: main", "schema: \"{{ 'ma' ~ 'in' }}\""))
    project = Project.open(tmp_path, tmp_path, "dev")
    assert read_target(project) is None and light_credentials(project) is None
    assert profile_credentials(project).schema == "main"  # rendered by dbt
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT", raising=False)
    (tmp_path / "profiles.yml").write_text(profile)
    assert light_credentials(Project.open(tmp_path, tmp_path, "snowflake")) is None  # not a light engine
    assert read_target(Project.open(tmp_path, tmp_path, "snowflake")) is None  # a required variable is unset
