"""Validation reports: readable lines for people, JUnit XML for CI systems, JSON-safe values."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from featsync.quality.suites import SUITE_DIR

if TYPE_CHECKING:
    from featsync.quality.validate import ViewValidation


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


def show(value: Any, parameters: dict[str, str] | None = None) -> str:
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        known = (parameters or {}).get(name)
        return f"${name} ({known})" if known else f"${name}"
    if isinstance(value, dict):
        return "(" + ", ".join(show(v) for v in value.values()) + ")"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if value is None:
        return "NULL"
    return repr(value) if isinstance(value, str) else str(value)


def plain(value: Any) -> Any:
    """GE values as plain Python: NaN/NaT -> None, pandas timestamps -> datetime, tuples of rows kept."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ == "NaTType":
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return value.item()
    return value


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)
