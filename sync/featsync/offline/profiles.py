"""The dbt target's connection settings, read without importing dbt when that is exact.

Importing dbt's profile loader costs about 1.2 s, more than a whole incremental push. Most
profiles are plain YAML whose values are literals or ``{{ env_var('NAME'[, 'default']) }}``
(optionally ``| as_number`` / ``| as_text`` / ``| int``), and for DuckDB and PostgreSQL
featsync needs only a few of the target's fields. Such a target is rendered here, with
env_var's own rules (the variable, else the default, else an error left to dbt). Anything
else (other Jinja, other engines, a missing variable or field) returns None, and the caller
uses dbt's own loader: this module never guesses.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import yaml

from featsync.project import Project

_ENV_VAR = re.compile(
    r"""\{\{\s*env_var\(\s*(?P<q>['"])(?P<name>[^'"]+)(?P=q)\s*(?:,\s*(?P<dq>['"])(?P<default>[^'"]*)(?P=dq)\s*)?\)"""
    r"""\s*(?:\|\s*(?P<filter>as_number|as_text|int)\s*)?\}\}"""
)
_JINJA = re.compile(r"\{[{%#]")
# dbt-postgres' defaults (PostgresCredentials) of the options featsync passes on to libpq
# (offline.warehouse.POSTGRES_OPTIONS); tests/test_profiles.py checks them against dbt's.
POSTGRES_DEFAULTS = {
    "sslmode": None, "sslcert": None, "sslkey": None, "sslrootcert": None, "connect_timeout": 10, "application_name": "dbt",
}  # fmt: skip


class _Unsupported(Exception):
    """The profile needs dbt's own renderer."""


@dataclass(frozen=True)
class Target:
    """One output of a dbt profile, its values rendered."""

    profile: str
    name: str
    type: str
    fields: dict[str, Any]


def _render(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v) for v in value]
    if not isinstance(value, str) or not _JINJA.search(value):
        return value
    whole = _ENV_VAR.fullmatch(value.strip())
    if whole:
        return _env_value(whole, convert=True)
    rendered = _ENV_VAR.sub(lambda m: str(_env_value(m, convert=False)), value)
    if _JINJA.search(rendered):
        raise _Unsupported(value)
    return rendered


def _env_value(match: re.Match[str], convert: bool) -> Any:
    name, default, kind = match.group("name"), match.group("default"), match.group("filter")
    if name in os.environ:
        value = os.environ[name]
    elif default is not None:
        value = default
    else:
        raise _Unsupported(name)  # dbt raises its own error for a missing variable
    if convert and kind in ("as_number", "int"):
        try:
            return int(value) if kind == "int" or re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
        except ValueError:
            raise _Unsupported(value) from None
    return value


def read_target(project: Project) -> Target | None:
    """The project's target from profiles.yml, rendered; None when only dbt can render it."""
    path = project.profiles_dir / "profiles.yml"
    try:
        profile_name = _render(project.config.get("profile"))
        if not isinstance(profile_name, str) or not path.is_file():
            return None
        with path.open() as fh:
            profiles = yaml.safe_load(fh) or {}
        profile = profiles.get(profile_name)
        if not isinstance(profile, dict):
            return None
        name = project.target or _render(profile.get("target")) or "default"
        output = (profile.get("outputs") or {}).get(name)
        if not isinstance(output, dict) or not isinstance(output.get("type"), str):
            return None
        fields = _render(output)
    except (_Unsupported, OSError, yaml.YAMLError):
        return None
    return Target(profile_name, str(name), fields["type"], fields)


def target_type(project: Project) -> str | None:
    """The adapter type of the project's target (duckdb, postgres, ...), when readable without dbt."""
    target = read_target(project)
    return target.type if target else None


def light_credentials(project: Project) -> Any | None:
    """The fields featsync's DuckDB or PostgreSQL connection uses, or None (then ask dbt)."""
    target = read_target(project)
    if target is None:
        return None
    f = target.fields
    if target.type == "duckdb":
        settings = f.get("settings") or {}
        if not isinstance(settings, dict):
            return None
        return SimpleNamespace(
            type="duckdb", path=str(f.get("path", ":memory:")), schema=f.get("schema") or "main", settings=settings
        )
    if target.type == "postgres":
        database = f.get("database", f.get("dbname"))
        password = f.get("password", f.get("pass"))
        values = (f.get("host"), f.get("port"), f.get("user"), password, database, f.get("schema"))
        if any(v is None for v in values):
            return None  # dbt reports the missing field
        host, port, user, password, database, schema = values
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
        options = {key: f.get(key, default) for key, default in POSTGRES_DEFAULTS.items()}
        return SimpleNamespace(
            type="postgres", host=str(host), port=port, user=str(user), password=str(password), database=str(database),
            schema=str(schema), **options,
        )  # fmt: skip
    return None
