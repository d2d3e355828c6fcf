"""Great Expectations suites, one per feature view, loaded strictly from ``expectations/``.

Suites live in ``expectations/<feature_view>.json`` (or ``.yml``/``.yaml``) as
``{name, expectations: [{type, kwargs, meta}]}``, or exactly as Great Expectations exports
one (``ExpectationSuite.to_json_dict()``: ids, ``meta`` with the GX version, notes, each
expectation's ``severity`` and cached ``rendered_content``). Any key that GX would not
write is a typo and an error. Great Expectations drops unknown expectation types silently
when a suite is built from a dict, so every entry is built on its own
(``ExpectationConfiguration(**entry).to_domain_obj()``) and any problem is raised naming
the file and the entry; all problems of all suites are reported at once.

Freshness is relative to a reference time ``now``; suites refer to it through Great
Expectations suite parameters, filled at validation time: ``{"$PARAMETER": "now"}`` and
``{"$PARAMETER": "now_minus_<duration>"}`` (e.g. ``now_minus_2d``; durations as for ttl),
as naive UTC timestamps like the warehouse's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from featsync.errors import DeclarationError, Problem
from featsync.project import Project
from featsync.registry import FeatureView, Registry, parse_duration

SUITE_DIR = "expectations"
SUITE_SUFFIXES = (".json", ".yml", ".yaml")
# The keys of Great Expectations' own suite format: the fields of GX 1.24's ExpectationSuiteSchema
# and ExpectationConfigurationSchema (tests/test_quality.py checks they still are).
SUITE_KEYS = {"name", "id", "expectations", "suite_parameters", "meta", "notes"}
ENTRY_KEYS = {"type", "kwargs", "meta", "notes", "id", "expectation_context", "rendered_content", "description", "severity"}
# GX's bookkeeping in an exported entry, left out when featsync builds the suite: the store's id
# (GX refuses an expectation that has one into another suite) and the rendering cache (rebuilt).
GX_BOOKKEEPING = {"id", "rendered_content"}
NOW_PARAMETER = re.compile(r"^now(?:_minus_(\w+))?$")
ROW_COUNT_EXPECTATIONS = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
INDEX_META = "featsync_index"  # meta key locating a result's entry: GE does not keep the suite's order


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
            entry = {**entry, "kwargs": dict(entry.get("kwargs") or {}), "meta": {**(entry.get("meta") or {}), INDEX_META: index}}
            if sampled is not None and entry["type"] in ROW_COUNT_EXPECTATIONS:
                kwargs = entry["kwargs"]
                if entry["type"] == "expect_table_row_count_to_equal":
                    entry["type"] = "expect_table_row_count_to_be_between"
                    kwargs["min_value"] = kwargs["max_value"] = kwargs.pop("value")
                if isinstance(kwargs.get("min_value"), int | float):
                    kwargs["min_value"] = math.ceil(Fraction(kwargs["min_value"]) * sampled)
                if isinstance(kwargs.get("max_value"), int | float):
                    kwargs["max_value"] = math.floor(Fraction(kwargs["max_value"]) * sampled)
            built.append(ExpectationConfiguration(**buildable(entry)).to_domain_obj())
        return gx.ExpectationSuite(name=self.feature_view, expectations=built)


def buildable(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as ExpectationConfiguration takes it: without GX's bookkeeping keys."""
    return {key: value for key, value in entry.items() if key not in GX_BOOKKEEPING}


def suite_files(project_dir: Path) -> Iterator[Path]:
    folder = project_dir / SUITE_DIR
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUITE_SUFFIXES)


def stray_files(project_dir: Path) -> list[Problem]:
    """Every file under expectations/ that featsync would not read as a suite (a '.JSON' or
    '.jsn' suffix, a file in a subfolder): refused, since the view it meant to gate would
    otherwise be validated as 'no suite' and pushed ungated. Only documentation (``*.md``) and
    hidden files (git's, the OS's, an editor's) may sit next to the suites. Cheap (no GX), so the paths that
    skip loading when a view has no suite check it too."""
    folder = project_dir / SUITE_DIR
    if not folder.is_dir():
        return []
    problems = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # hidden: git's and the OS's files, an editor's swap file (.x.json.swp)
        if path.parent == folder and (path.suffix in SUITE_SUFFIXES or path.suffix.lower() == ".md"):
            continue
        suffix = path.suffix.lower() if path.suffix.lower() in SUITE_SUFFIXES else ".json"
        should = f"{SUITE_DIR}/{path.name.split('.', 1)[0]}{suffix}"
        problems.append(
            Problem(
                str(path.relative_to(project_dir)),
                "suite",
                "file name",
                f"not read as a suite: suites are {SUITE_DIR}/<feature_view>.json (or .yml, .yaml; lower case, "
                f"directly in {SUITE_DIR}/); rename it (e.g. to {should}) or move it out of {SUITE_DIR}/",
            )
        )
    return problems


def refuse_stray_files(project_dir: Path) -> None:
    problems = stray_files(project_dir)
    if problems:
        raise DeclarationError(problems)


def load_suites(project: Project, registry: Registry | None = None) -> dict[str, Suite]:
    """Every suite of the project, keyed by feature view; DeclarationError lists every problem."""
    registry = registry or project.registry()
    require_gx()
    problems: list[Problem] = stray_files(project.project_dir)
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


def require_gx() -> None:
    """Import Great Expectations (about 2.3 s, so only when a suite is loaded), or say which
    extra brings it."""
    from featsync.extras import needs

    with needs("quality", "validating expectation suites"):
        import great_expectations  # noqa: F401


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
    if spec.get("suite_parameters"):
        problems.append(
            Problem(rel, "suite", "suite_parameters", "featsync fills the suite parameters itself (now, now_minus_<duration>)")
        )
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
        ExpectationConfiguration(**buildable(entry)).to_domain_obj()
    except Exception as exc:  # noqa: BLE001 - GE raises several types (not found, pydantic, ...)
        message = " ".join(str(exc).split())
        if type(exc).__name__ == "ExpectationNotFoundError":
            message = f"unknown expectation type '{entry['type']}' (Great Expectations would drop it silently)"
        return "type" if "not found" in message or "unknown expectation" in message else "kwargs", message
    return None


def suite_file_of(project: Project, view: str) -> Path | None:
    """The view's suite file, or None; a stray file in expectations/ is refused first (it may be
    this view's suite misnamed, so 'no suite' would be a lie)."""
    refuse_stray_files(project.project_dir)
    for suffix in SUITE_SUFFIXES:
        path = project.project_dir / SUITE_DIR / f"{view}{suffix}"
        if path.is_file():
            return path
    return None
