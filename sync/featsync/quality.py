"""Quality gates: Great Expectations suites per feature view, validated in (or next to) the warehouse.

Suites live in ``expectations/<feature_view>.json`` (or ``.yml``/``.yaml``) as
``{name, expectations: [{type, kwargs, meta}]}``. Great Expectations drops unknown
expectation types silently when a suite is built from a dict, so every entry is built on
its own (``ExpectationConfiguration(**entry).to_domain_obj()``) and any problem is raised
naming the file and the entry; all problems of all suites are reported at once.

Where the data is validated:
- PostgreSQL: in the warehouse, through Great Expectations' SQL datasource (the metrics
  are SQL queries; no rows leave the database except the sample of bad values).
- DuckDB: Great Expectations' SQLAlchemy path for DuckDB returns empty metrics (it "fails"
  without raising), so featsync streams the table out as Arrow batches into one pandas
  frame. A table of more than ``max_rows`` rows is validated on a documented sample: all
  rows of the entities whose key hash falls in the sample, plus the entity holding the
  newest row (see ``sample_sql``). Whole entities keep uniqueness, null, range and set
  checks exact for the entities sampled, and the newest row keeps freshness exact; row
  count bounds are rescaled by the exact sampled fraction, so they test the full count.

Freshness is relative to a reference time ``now`` (default: the clock; ``FEATSYNC_NOW`` or
``--now`` override it, which is how the tests validate the unshifted 2024 example data).
Suites refer to it through Great Expectations suite parameters, filled at validation
time: ``{"$PARAMETER": "now"}`` and ``{"$PARAMETER": "now_minus_<duration>"}`` (e.g.
``now_minus_2d``; durations as for ttl), as naive UTC timestamps like the warehouse's.

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
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from featsync.errors import DeclarationError, FeatsyncError, NotFoundError, Problem
from featsync.project import Project
from featsync.registry import FeatureView, Registry, parse_duration

SUITE_DIR = "expectations"
SUITE_SUFFIXES = (".json", ".yml", ".yaml")
SUITE_KEYS = {"name", "expectations", "meta", "notes"}
ENTRY_KEYS = {"type", "kwargs", "meta", "notes", "description", "severity"}
NOW_PARAMETER = re.compile(r"^now(?:_minus_(\w+))?$")
DEFAULT_MAX_ROWS = 2_000_000  # DuckDB: above this many rows, validate the documented sample
SAMPLE_VALUES = 5  # distinct bad values shown per failing expectation (from the first 20 bad rows)
ROW_COUNT_EXPECTATIONS = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
_INDEX = "featsync_index"  # meta key locating a result's entry: GE does not keep the suite's order


@dataclass(frozen=True)
class Suite:
    """One feature view's suite, checked entry by entry."""

    feature_view: str
    file: str  # relative to the project
    expectations: tuple[dict[str, Any], ...]  # the entries as written, each already built once by GE
    parameters: frozenset[str]  # the $PARAMETER names used

    def parameter_values(self, now: datetime) -> dict[str, datetime]:
        """The suite parameters' values for a reference time (naive UTC, as stored)."""
        base = now.astimezone(UTC).replace(tzinfo=None)
        values = {}
        for name in self.parameters:
            age = NOW_PARAMETER.match(name).group(1)  # load_suites accepted only these names
            values[name] = base - timedelta(seconds=parse_duration(age) or 0) if age else base
        return values

    def to_gx(self, sampled: Fraction | None = None) -> Any:
        """The Great Expectations suite. On a sample (`sampled` = validated rows / all rows),
        row-count bounds are scaled by that exact fraction and rounded inwards, so the
        sample's count is within them exactly when the full count is within the originals."""
        import great_expectations as gx
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        built = []
        for index, entry in enumerate(self.expectations):
            entry = {**entry, "kwargs": dict(entry.get("kwargs") or {}), "meta": {**(entry.get("meta") or {}), _INDEX: index}}
            if sampled is not None and entry["type"] in ROW_COUNT_EXPECTATIONS:
                kwargs = entry["kwargs"]
                if entry["type"] == "expect_table_row_count_to_equal":
                    entry["type"] = "expect_table_row_count_to_be_between"
                    kwargs["min_value"] = kwargs["max_value"] = kwargs.pop("value")
                if isinstance(kwargs.get("min_value"), int | float):
                    kwargs["min_value"] = math.ceil(Fraction(kwargs["min_value"]) * sampled)
                if isinstance(kwargs.get("max_value"), int | float):
                    kwargs["max_value"] = math.floor(Fraction(kwargs["max_value"]) * sampled)
            built.append(ExpectationConfiguration(**entry).to_domain_obj())
        return gx.ExpectationSuite(name=self.feature_view, expectations=built)


def suite_files(project_dir: Path) -> Iterator[Path]:
    folder = project_dir / SUITE_DIR
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUITE_SUFFIXES)


def load_suites(project: Project, registry: Registry | None = None) -> dict[str, Suite]:
    """Every suite of the project, keyed by feature view; DeclarationError lists every problem."""
    registry = registry or project.registry()
    problems: list[Problem] = []
    suites: dict[str, Suite] = {}
    for path in suite_files(project.project_dir):
        rel = str(path.relative_to(project.project_dir))
        suite = _load_suite(path, rel, registry, problems)
        if suite is None:
            continue
        if suite.feature_view in suites:
            problems.append(
                Problem(
                    rel, "suite", "file", f"a second suite for '{suite.feature_view}' (first: {suites[suite.feature_view].file})"
                )
            )
            continue
        suites[suite.feature_view] = suite
    if problems:
        raise DeclarationError(problems)
    return suites


def _load_suite(path: Path, rel: str, registry: Registry, problems: list[Problem]) -> Suite | None:
    name = path.stem
    try:
        text = path.read_text()
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        problems.append(Problem(rel, "suite", "file", f"cannot parse it: {exc}"))
        return None
    if not isinstance(spec, dict):
        problems.append(Problem(rel, "suite", "file", "must be a mapping with 'name' and 'expectations'"))
        return None
    before = len(problems)
    view = registry.feature_views.get(name)
    if view is None:
        known = ", ".join(sorted(registry.feature_views)) or "none"
        problems.append(Problem(rel, "suite", "file name", f"no feature view named '{name}' (feature views: {known})"))
    for key in sorted(set(spec) - SUITE_KEYS):
        problems.append(Problem(rel, "suite", key, f"unknown key (allowed: {', '.join(sorted(SUITE_KEYS))})"))
    if spec.get("name", name) != name:
        problems.append(Problem(rel, "suite", "name", f"'{spec['name']}' differs from the file's feature view '{name}'"))
    entries = spec.get("expectations")
    if not isinstance(entries, list) or not entries:
        problems.append(Problem(rel, "suite", "expectations", "must be a non-empty list of {type, kwargs, meta}"))
        return None
    parameters: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"expectation #{index + 1}"
        if isinstance(entry, dict) and isinstance(entry.get("type"), str):
            where += f" ({entry['type']})"
        problem = _check_entry(entry, view, parameters)
        if problem:
            key, message = problem
            problems.append(Problem(rel, where, key, message))
    if len(problems) > before:
        return None
    return Suite(name, rel, tuple(entries), frozenset(parameters))


def _check_entry(entry: Any, view: FeatureView | None, parameters: set[str]) -> tuple[str, str] | None:
    """(key, message) of the first problem of one entry, or None; GE builds it to catch typos."""
    if not isinstance(entry, dict):
        return "entry", "must be a mapping {type, kwargs, meta}"
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        return unknown[0], f"unknown key (allowed: {', '.join(sorted(ENTRY_KEYS))})"
    if not isinstance(entry.get("type"), str):
        return "type", "missing: the expectation type, e.g. expect_column_values_to_not_be_null"
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        return "kwargs", "must be a mapping"
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    columns += [c for c in kwargs.get("column_list") or [] if isinstance(c, str)]
    if view is not None:
        declared = [c.name for c in view.columns]
        for column in columns:
            if column not in declared:
                return "kwargs", f"unknown column '{column}' (declared columns: {', '.join(declared)})"
    for value in kwargs.values():
        if isinstance(value, dict) and "$PARAMETER" in value:
            name = value["$PARAMETER"]
            match = NOW_PARAMETER.match(name) if isinstance(name, str) else None
            try:
                ok = match is not None and (match.group(1) is None or parse_duration(match.group(1)) is not None)
            except ValueError:
                ok = False
            if not ok:
                return (
                    "kwargs",
                    f"unknown $PARAMETER {name!r} (featsync fills 'now' and 'now_minus_<duration>', e.g. now_minus_2d)",
                )
            parameters.add(name)
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    try:
        ExpectationConfiguration(**entry).to_domain_obj()
    except Exception as exc:  # noqa: BLE001 - GE raises several types (not found, pydantic, ...)
        message = " ".join(str(exc).split())
        if type(exc).__name__ == "ExpectationNotFoundError":
            message = f"unknown expectation type '{entry['type']}' (Great Expectations would drop it silently)"
        return "type" if "not found" in message or "unknown expectation" in message else "kwargs", message
    return None


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
            text += " " + ", ".join(f"{k}={_show(v, self.parameters)}" for k, v in args.items())
        if self.status == "error":
            return f"{text}: ERROR {self.error}"
        if self.unexpected_count is not None and self.status == "failed":
            percent = f"{self.unexpected_percent:.2f}%" if self.unexpected_percent is not None else "?"
            text += f": {self.unexpected_count:,} unexpected of {self.element_count or 0:,} ({percent})"
            if self.sample_values:
                text += "; e.g. " + ", ".join(_show(v) for v in self.sample_values)
        elif self.observed_value is not None:
            text += f": observed {_show(self.observed_value)}"
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
        return json.loads(json.dumps(data, default=_jsonable))


def resolve_now(now: datetime | str | None = None) -> datetime:
    """The reference time of freshness checks: given, else FEATSYNC_NOW, else the clock (UTC)."""
    now = now or os.environ.get("FEATSYNC_NOW") or None
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, str):
        try:
            now = datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError as exc:
            raise FeatsyncError(f"'{now}' is not an ISO timestamp for now (e.g. 2024-04-30T00:00:00Z)") from exc
    if now.tzinfo is None:
        raise FeatsyncError(f"now ({now.isoformat()}) needs a time zone, e.g. 2024-04-30T00:00:00Z: featsync is UTC end to end")
    return now.astimezone(UTC)


def validate(
    project: Project,
    select: Iterable[str] = (),
    now: datetime | str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> list[ViewValidation]:
    """Run the suite of each selected feature view (default: every view); a view without a suite is 'no_suite'."""
    registry = project.registry()
    select = list(dict.fromkeys(select))
    views = [registry.feature_view(name) for name in select] if select else list(registry.feature_views.values())
    if not views:
        raise NotFoundError("no feature views to validate")
    if not any(suite_file_of(project, v.name) for v in views):
        return [ViewValidation(v.name, "no_suite") for v in views]
    suites = load_suites(project, registry)
    now = resolve_now(now)
    todo = [v for v in views if v.name in suites]
    results = {v.name: ViewValidation(v.name, "no_suite") for v in views if v.name not in suites}
    if todo:
        from featsync.warehouse import profile_credentials

        credentials = profile_credentials(project)
        runner = {"duckdb": _validate_duckdb, "postgres": _validate_postgres}.get(credentials.type)
        if runner is None:
            raise FeatsyncError(f"featsync validate cannot run on a {credentials.type} target yet (supported: duckdb, postgres)")
        context = _gx_context()
        for name, validation in runner(project, credentials, context, [(v, suites[v.name]) for v in todo], now, max_rows):
            results[name] = validation
    return [results[v.name] for v in views]


def suite_file_of(project: Project, view: str) -> Path | None:
    for suffix in SUITE_SUFFIXES:
        path = project.project_dir / SUITE_DIR / f"{view}{suffix}"
        if path.is_file():
            return path
    return None


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
    index = int(config.meta.get(_INDEX, 0))
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
        sample_values=_distinct([_plain(v) for v in samples])[:SAMPLE_VALUES],
        observed_value=_plain(result.get("observed_value")),
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
    """The documented DuckDB sample: every row of the entities whose key hash is 0 modulo
    `modulus`, plus every row of the entity holding the newest event (so freshness stays exact)."""
    keys = ", ".join(view.entities)
    return (
        f"select * from {relation} where hash({keys}) % {modulus} = 0 "
        f"or ({keys}) in (select ({keys}) from {relation} order by {view.timestamp} desc nulls last limit 1)"
    )


def _validate_duckdb(project, credentials, context, work, now, max_rows) -> Iterator[tuple[str, ViewValidation]]:
    import duckdb

    from featsync.warehouse import BATCH_ROWS, connect

    source = context.data_sources.add_pandas("featsync_duckdb")
    with connect(project, credentials) as warehouse:
        for view, suite in work:
            start = time.perf_counter()
            # schema.table only: the manifest's database part is the DuckDB file's name when parsed
            relation = ".".join(f'"{part}"' for part in _split_relation(view.relation)[-2:])
            try:
                ((total,),) = warehouse.con.sql(f"select count(*) from {relation}").fetchall()
                sampled = total > max_rows
                sql = sample_sql(view, relation, math.ceil(total / max_rows)) if sampled else f"select * from {relation}"
                # Streamed out as Arrow record batches, then one pandas frame for GE.
                frame = warehouse.con.sql(sql).to_arrow_reader(BATCH_ROWS).read_all().to_pandas()
            except duckdb.Error as exc:
                raise FeatsyncError(f"cannot read feature view '{view.name}' ({relation}) to validate it: {exc}") from exc
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
                    "duckdb",
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
    from urllib.parse import quote

    password = f":{quote(credentials.password, safe='')}" if credentials.password else ""
    user = quote(credentials.user, safe="")
    url = f"postgresql+psycopg2://{user}{password}@{credentials.host}:{credentials.port}/{credentials.database}"
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


# -- reports -------------------------------------------------------------------


def report_lines(validations: list[ViewValidation]) -> Iterator[str]:
    """The readable report: one line per view, then one per failing expectation."""
    for v in validations:
        if v.status == "no_suite":
            yield f"{v.feature_view}: no suite (add {SUITE_DIR}/{v.feature_view}.json)"
            continue
        passed = sum(r.success for r in v.results)
        rows = f"{v.rows_validated:,} of {v.rows_total:,} rows (sample)" if v.sampled else f"{v.rows_total or 0:,} rows"
        yield (
            f"{v.feature_view}: {v.status.upper()} {passed}/{len(v.results)} expectations, {rows}, "
            f"{v.engine}, {v.seconds:.2f}s ({v.suite_file})"
        )
        for r in v.failures:
            yield f"  {'ERROR' if r.status == 'error' else 'FAIL '} {r.describe()}"


def junit_xml(validations: list[ViewValidation]) -> str:
    """JUnit XML: one testsuite per feature view, one testcase per expectation."""
    root = ET.Element("testsuites", name="featsync validate")
    for v in validations:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=v.feature_view,
            tests=str(max(len(v.results), 1)),
            failures=str(sum(r.status == "failed" for r in v.results)),
            errors=str(sum(r.status == "error" for r in v.results)),
            skipped=str(int(v.status == "no_suite")),
            time=f"{v.seconds:.3f}",
        )
        if v.status == "no_suite":
            case = ET.SubElement(suite, "testcase", classname=f"featsync.{v.feature_view}", name="suite")
            ET.SubElement(case, "skipped", message=f"no suite in {SUITE_DIR}/")
        for r in v.results:
            name = f"#{r.index} {r.expectation}" + (f" [{r.column}]" if r.column else "")
            case = ET.SubElement(suite, "testcase", classname=f"featsync.{v.feature_view}", name=name)
            if r.status != "passed":
                ET.SubElement(case, "failure" if r.status == "failed" else "error", message=r.describe()).text = r.describe()
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _show(value: Any, parameters: dict[str, str] | None = None) -> str:
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        known = (parameters or {}).get(name)
        return f"${name} ({known})" if known else f"${name}"
    if isinstance(value, dict):
        return "(" + ", ".join(_show(v) for v in value.values()) + ")"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if value is None:
        return "NULL"
    return repr(value) if isinstance(value, str) else str(value)


def _plain(value: Any) -> Any:
    """GE values as plain Python: NaN/NaT -> None, pandas timestamps -> datetime, tuples of rows kept."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ == "NaTType":
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return value.item()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


# -- the push gate -------------------------------------------------------------


@dataclass
class GatedPush:
    """What `featsync push` did behind its quality gate."""

    skip_validation: bool
    validations: dict[str, ViewValidation]  # empty when validation was skipped
    pushed: list[Any]  # featsync.push.PushStats of the views pushed
    blocked: list[str]  # views not pushed because their suite failed (or, with fail-fast, another's did)
    stopped: bool = False  # --fail-fast stopped everything

    @property
    def success(self) -> bool:
        return not self.blocked

    def as_dicts(self) -> list[dict[str, Any]]:
        """One dict per view: the push stats (if pushed) with 'pushed' and 'validation' added."""
        rows = []
        for stats in self.pushed:
            rows.append({**stats.as_dict(), "pushed": True, "validation": self.status_of(stats.feature_view)})
        for name in self.blocked:
            validation = self.validations.get(name)
            rows.append(
                {
                    "feature_view": name,
                    "pushed": False,
                    "validation": self.status_of(name),
                    "failures": [r.describe() for r in validation.failures] if validation else [],
                }
            )
        return rows

    def status_of(self, view: str) -> str:
        if self.skip_validation:
            return "skipped"
        validation = self.validations.get(view)
        return validation.status if validation else "not run"


def gated_push(
    pusher: Any,
    select: Iterable[str] = (),
    *,
    skip_validation: bool = False,
    fail_fast: bool = False,
    now: datetime | str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    **push_options: Any,
) -> GatedPush:
    """Validate the selected online views, then push only those that pass.

    A failing view is not pushed at all (its rows are never read for Redis, its watermark
    does not move); the others still are, unless fail_fast, which pushes nothing. The
    gate checks the table as it is when validated: a dbt run between the two steps is not
    covered, as with any check-then-act.
    """
    views = [v.name for v in pusher.views(select)]  # checks the selection (unknown, not online)
    if not views:
        raise NotFoundError("no online feature views to push")
    if skip_validation:
        return GatedPush(True, {}, pusher.push(views, **push_options), [])
    validations = {v.feature_view: v for v in validate(pusher.project, views, now=now, max_rows=max_rows)}
    failed = [name for name in views if not validations[name].success]
    if failed and fail_fast:
        return GatedPush(False, validations, [], views, stopped=True)
    passing = [name for name in views if name not in failed]
    pushed = pusher.push(passing, **push_options) if passing else []
    return GatedPush(False, validations, pushed, failed)
