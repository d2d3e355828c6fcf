"""featsync validate: run each feature view's suite in (or next to) the warehouse.

Where the data is validated (``RUNNERS``, one entry per dbt adapter type):
- PostgreSQL: in the warehouse, through Great Expectations' SQL datasource (the metrics
  are SQL queries; no rows leave the database except the sample of bad values).
- DuckDB, Snowflake and Spark: the table is streamed out through featsync's own warehouse
  connection (featsync.offline.warehouse, the reader push uses) as Arrow batches into one
  pandas frame. On DuckDB, Great Expectations' SQLAlchemy path returns empty metrics (it
  "fails" without raising). On Snowflake, GX's SQL datasource would need
  snowflake-sqlalchemy and a URL rebuilt from the profile (every authentication method
  again), and could not be tested against the emulator, which speaks the connector's
  protocol; the Arrow path uses exactly dbt's credentials and is what the tests prove.
  On Spark, GX's Spark datasource would tie featsync to GX's pyspark support.
  A table of more than ``max_rows`` rows is validated on a documented sample: all rows of
  the entities whose key hash falls in the sample, plus the entity holding the newest row
  (see ``sample_sql``). Whole entities keep uniqueness, null, range and set checks exact
  for the entities sampled, and the newest row keeps freshness exact; row count bounds
  are rescaled by the exact sampled fraction, so they test the full count.

Freshness is relative to a reference time ``now`` (default: the clock; ``FEATSYNC_NOW``
overrides it, which is how the tests validate the unshifted 2024 example data).

``import great_expectations`` costs about 2.3 s, so it is imported only when a suite is
actually loaded or run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from featsync.errors import FeatsyncError, NotFoundError
from featsync.offline.sql import identifier
from featsync.progress import Progress, silent
from featsync.project import Project
from featsync.quality.report import jsonable, plain, show
from featsync.quality.suites import INDEX_META, ROW_COUNT_EXPECTATIONS, Suite, load_suites, suite_file_of
from featsync.registry import FeatureView
from featsync.results import about, save_result
from featsync.times import is_aware, parse_time

DEFAULT_MAX_ROWS = 2_000_000  # Arrow engines: above this many rows, validate the documented sample
SAMPLE_VALUES = 5  # distinct bad values shown per failing expectation (from the first 20 bad rows)


# -- results -------------------------------------------------------------------


@dataclass
class ExpectationResult:
    """One expectation's outcome, with what a person needs to fix the data."""

    index: int  # position in the suite, 1-based
    expectation: str
    column: str | None  # the column, "a, b" for several, None for table-level expectations
    kwargs: dict[str, Any]
    status: str  # passed | failed | error
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    sample_values: list[Any] = field(default_factory=list)
    observed_value: Any = None
    error: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)  # the suite parameters' values used

    @property
    def success(self) -> bool:
        return self.status == "passed"

    def describe(self) -> str:
        """One readable line: what was expected and what was found."""
        what = self.expectation.removeprefix("expect_")
        where = f" [{self.column}]" if self.column else ""
        args = {k: v for k, v in self.kwargs.items() if k not in ("column", "column_list", "column_A", "column_B")}
        text = f"#{self.index} {what}{where}"
        if args:
            text += " " + ", ".join(f"{k}={show(v, self.parameters)}" for k, v in args.items())
        if self.status == "error":
            return f"{text}: ERROR {self.error}"
        if self.unexpected_count is not None and self.status == "failed":
            percent = f"{self.unexpected_percent:.2f}%" if self.unexpected_percent is not None else "?"
            text += f": {self.unexpected_count:,} unexpected of {self.element_count or 0:,} ({percent})"
            if self.sample_values:
                text += "; e.g. " + ", ".join(show(v) for v in self.sample_values)
        elif self.observed_value is not None:
            text += f": observed {show(self.observed_value)}"
        return text


@dataclass
class ViewValidation:
    """A feature view's suite run."""

    feature_view: str
    status: str  # passed | failed | error | no_suite
    suite_file: str | None = None
    engine: str | None = None
    rows_total: int | None = None
    rows_validated: int | None = None
    sampled: bool = False
    now: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    results: list[ExpectationResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return self.status in ("passed", "no_suite")

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["success"] = self.success
        return json.loads(json.dumps(data, default=jsonable))


def resolve_now(now: datetime | str | None = None) -> datetime:
    """The reference time of freshness checks: given, else FEATSYNC_NOW, else the clock (UTC)."""
    now = now or os.environ.get("FEATSYNC_NOW") or None
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, str):  # --now, FEATSYNC_NOW: the one rule for a time given as text (featsync.times)
        return parse_time(now, "now (--now / FEATSYNC_NOW)")
    if not is_aware(now):
        raise FeatsyncError(f"now ({now.isoformat()}) needs a time zone, e.g. 2024-04-30T00:00:00Z: featsync is UTC end to end")
    return now.astimezone(UTC)


def validate(
    project: Project,
    select: Iterable[str] = (),
    now: datetime | str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: Progress = silent,
) -> list[ViewValidation]:
    """Run the suite of each selected feature view (default: every view); a view without a suite is 'no_suite'."""
    registry = project.registry()
    views = registry.select(select)
    if not views:
        raise NotFoundError("no feature views to validate")
    if not any(suite_file_of(project, v.name) for v in views):
        return _recorded(project, [ViewValidation(v.name, "no_suite") for v in views])
    progress("loading the suites (Great Expectations)", None, None)
    suites = load_suites(project, registry)
    now = resolve_now(now)
    todo = [v for v in views if v.name in suites]
    results = {v.name: ViewValidation(v.name, "no_suite") for v in views if v.name not in suites}
    if todo:
        from featsync.offline.warehouse import profile_credentials

        credentials = profile_credentials(project)
        runner = RUNNERS.get(credentials.type)
        if runner is None:
            supported = ", ".join(sorted(RUNNERS))
            raise FeatsyncError(f"featsync validate cannot run on a {credentials.type} target yet (supported: {supported})")
        context = _gx_context()
        progress(f"validating {todo[0].name}", 0, len(todo))
        work = [(v, suites[v.name]) for v in todo]
        for done, (name, validation) in enumerate(runner(project, credentials, context, work, now, max_rows), 1):
            results[name] = validation
            progress(f"validating {todo[done].name}" if done < len(todo) else "validated", done, len(todo))
    return _recorded(project, [results[v.name] for v in views])


def _recorded(project: Project, validations: list[ViewValidation]) -> list[ViewValidation]:
    """Keep each view's result where the UI and /metrics read it (featsync.results)."""
    registry = project.registry()
    abouts = {v.feature_view: about(registry.feature_view(v.feature_view)) for v in validations}
    save_result(project, "validate", {v.feature_view: v.as_dict() for v in validations}, abouts=abouts)
    return validations


def _gx_context() -> Any:
    """An ephemeral Great Expectations context (writes no files) without progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GE sets this module's logger to INFO itself ("Created temporary directory ... for ephemeral docs site").
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _run(
    batch: Any, view: FeatureView, suite: Suite, now: datetime, sampled: Fraction | None = None
) -> tuple[str, list[ExpectationResult], dict]:
    parameters = suite.parameter_values(now)
    outcome = batch.validate(
        suite.to_gx(sampled),
        expectation_parameters=parameters,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 4 * SAMPLE_VALUES},
    )
    shown = {k: v.isoformat(sep=" ") for k, v in parameters.items()}
    results = sorted((_result(r, suite, shown) for r in outcome.results), key=lambda r: r.index)
    status = "error" if any(r.status == "error" for r in results) else "passed" if all(r.success for r in results) else "failed"
    return status, results, shown


def _result(gx_result: Any, suite: Suite, parameters: dict[str, str]) -> ExpectationResult:
    """Our result from GE's; an errored expectation is 'error', never a pass or a fail."""
    config = gx_result.expectation_config
    index = int(config.meta.get(INDEX_META, 0))
    entry = suite.expectations[index]  # the kwargs as written (not rescaled, not parameter-filled)
    kwargs = dict(entry.get("kwargs") or {})
    column = kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or None
    if "column_A" in kwargs:
        column = f"{kwargs['column_A']}, {kwargs['column_B']}"
    result = dict(gx_result.result or {})
    error = _exception_message(gx_result.exception_info)
    status = "error" if error else "passed" if gx_result.success else "failed"
    samples = result.get("partial_unexpected_list") or []
    return ExpectationResult(
        index=index + 1,
        expectation=entry["type"],
        column=column,
        kwargs=kwargs,
        status=status,
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=result.get("unexpected_percent"),
        element_count=result.get("element_count"),
        sample_values=_distinct([plain(v) for v in samples])[:SAMPLE_VALUES],
        observed_value=plain(result.get("observed_value")),
        error=error,
        parameters={k: v for k, v in parameters.items() if any(_uses(x, k) for x in kwargs.values())},
    )


def _distinct(values: list[Any]) -> list[Any]:
    """Distinct values in first-seen order (GE's sample repeats a bad value once per row)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(repr(value), value)
    return list(seen.values())


def _uses(value: Any, parameter: str) -> bool:
    return isinstance(value, dict) and value.get("$PARAMETER") == parameter


def _exception_message(info: Any) -> str | None:
    """GE's exception_info is flat ({raised_exception, exception_message}) or keyed by metric."""
    if not info:
        return None
    if "raised_exception" in info:
        return (info.get("exception_message") or "raised an exception") if info.get("raised_exception") else None
    messages = [
        v.get("exception_message") or "raised an exception"
        for v in info.values()
        if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


# -- engines -------------------------------------------------------------------


def _split_relation(relation: str) -> list[str]:
    """'"db"."schema"."table"' -> ['db', 'schema', 'table'] (quoted or bare identifiers)."""
    return [q.replace('""', '"') if q else bare for q, bare in re.findall(r'"((?:[^"]|"")*)"|([^."]+)', relation)]


def sample_sql(view: FeatureView, relation: str, modulus: int) -> str:
    """The documented sample: every row of the entities whose key hash is 0 modulo `modulus`,
    plus every row of the entity holding the newest event (so freshness stays exact).

    The same SQL on DuckDB, Snowflake and Spark (all have a multi-argument `hash`; Spark's is
    signed, and a negative multiple of `modulus` still leaves 0); the hash functions differ,
    so the entities picked differ between engines, not the rule."""
    names = [identifier(k) for k in view.entities]
    keys = ", ".join(names)
    newest = " and ".join(f"featsync_newest.{k} is not distinct from featsync_sampled.{k}" for k in names)
    return (
        f"select * from {relation} as featsync_sampled where hash({keys}) % {int(modulus)} = 0 "
        f"or exists (select 1 from (select {keys} from {relation} order by {identifier(view.timestamp)} desc nulls last "
        f"limit 1) as featsync_newest where {newest})"
    )


def _arrow_relation(view: FeatureView, adapter_type: str) -> str:
    if adapter_type == "duckdb":  # schema.table only: the manifest's database part is the DuckDB file's name when parsed
        return ".".join(f'"{part}"' for part in _split_relation(view.relation)[-2:])
    return view.relation  # as dbt renders it for the target (Snowflake: unquoted, folded to upper case)


def _validate_arrow(project, credentials, context, work, now, max_rows) -> Iterator[tuple[str, ViewValidation]]:
    """Out of the warehouse as Arrow record batches (featsync's own reader), then one pandas frame for GE."""
    from featsync.offline.warehouse import connect, reading

    source = context.data_sources.add_pandas(f"featsync_{credentials.type}")
    with connect(project, credentials) as warehouse:
        for view, suite in work:
            start = time.perf_counter()
            relation = _arrow_relation(view, credentials.type)
            with reading(view):
                total = warehouse.fetch_arrow(f"select count(*) as featsync_rows from {relation}").column(0)[0].as_py()
                sampled = total > max_rows
                sql = sample_sql(view, relation, math.ceil(total / max_rows)) if sampled else f"select * from {relation}"
                frame = warehouse.fetch_arrow(sql).to_pandas()
            fraction = Fraction(len(frame), total) if sampled and total else None
            asset = source.add_dataframe_asset(view.name)
            batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
            status, results, params = _run(batch, view, suite, now, fraction)
            if sampled:  # report the full count the rescaled bounds were checked against
                for r in results:
                    if r.expectation in ROW_COUNT_EXPECTATIONS:
                        r.observed_value = total
            yield (
                view.name,
                ViewValidation(
                    view.name,
                    status,
                    suite.file,
                    credentials.type,
                    total,
                    len(frame),
                    sampled,
                    now.isoformat(),
                    params,
                    results,
                    time.perf_counter() - start,
                ),
            )


def _validate_postgres(project, credentials, context, work, now, max_rows) -> Iterator[tuple[str, ViewValidation]]:
    """In the warehouse: GE's SQL datasource turns every metric into a query."""
    from featsync.offline.warehouse import postgres_sqlalchemy_url

    url = postgres_sqlalchemy_url(credentials).render_as_string(hide_password=False)
    source = context.data_sources.add_postgres("featsync_postgres", connection_string=url)
    for view, suite in work:
        start = time.perf_counter()
        *_, schema, table = _split_relation(view.relation)
        try:
            with warnings.catch_warnings():  # schema_name is "deprecated" for a per-datasource search path; views may differ
                warnings.simplefilter("ignore", DeprecationWarning)
                asset = source.add_table_asset(view.name, table_name=table, schema_name=schema)
            batch = asset.add_batch_definition_whole_table("all").get_batch()
        except Exception as exc:  # noqa: BLE001 - GE wraps SQLAlchemy's errors in several types
            raise FeatsyncError(f"cannot read feature view '{view.name}' ({view.relation}) to validate it: {exc}") from exc
        status, results, params = _run(batch, view, suite, now)
        rows = next((r.observed_value for r in results if r.expectation in ROW_COUNT_EXPECTATIONS), None)
        yield (
            view.name,
            ViewValidation(
                view.name,
                status,
                suite.file,
                "postgres",
                rows,
                rows,
                False,
                now.isoformat(),
                params,
                results,
                time.perf_counter() - start,
            ),
        )


# dbt adapter type -> the runner that validates its tables.
RUNNERS = {"duckdb": _validate_arrow, "snowflake": _validate_arrow, "spark": _validate_arrow, "postgres": _validate_postgres}
