"""Benchmark: featsync validate on DuckDB (Arrow -> pandas -> Great Expectations), next to
one hand-written DuckDB query computing the same checks, in one run.

    .venv/bin/python bench/validate.py                 # 1M rows, a 10-expectation suite
    .venv/bin/python bench/validate.py --rows 5000000  # above the default sample limit

Prints seconds for: the baseline SQL (every check as one aggregate query, in DuckDB),
featsync validate warm (GE already imported), featsync validate on the documented sample
(--max-rows 200,000), the one-off `import great_expectations`, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import duckdb

from featsync.quality import validate as quality
from workspace import Workspace

NOW = "2026-01-02T00:00:00Z"
SUITE = {
    "name": "bench_entity_features",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "entity_id"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "event_timestamp"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1000, "max_value": 100_000_000}},
        {
            "type": "expect_column_max_to_be_between",
            "kwargs": {"column": "event_timestamp", "min_value": {"$PARAMETER": "now_minus_2d"}},
        },
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["entity_id", "event_timestamp"]}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f1", "min_value": 0}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f2", "min_value": 0}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f3", "min_value": 0, "max_value": 999}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "f4"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f5", "max_value": 0}},
    ],
}
BASELINE = """
select count(*) filter (where entity_id is null), count(*) filter (where event_timestamp is null), count(*),
       max(event_timestamp) >= timestamp '2025-12-31',
       count(*) - count(distinct (entity_id, event_timestamp)),
       count(*) filter (where f1 < 0), count(*) filter (where f2 < 0), count(*) filter (where f3 not between 0 and 999),
       count(*) filter (where f4 is null), count(*) filter (where f5 > 0)
from entity_rows
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Workspace.create()
    try:
        project = work.entity_project(args.rows)
        (work.project_dir / "expectations").mkdir()
        (work.project_dir / "expectations" / "bench_entity_features.json").write_text(json.dumps(SUITE))

        with duckdb.connect(str(work.db), read_only=True) as con:
            start = time.perf_counter()
            con.execute(BASELINE).fetchall()
            baseline_s = time.perf_counter() - start

        start = time.perf_counter()
        import great_expectations  # noqa: F401 - timing the one-off import

        import_s = time.perf_counter() - start
        timings = {}
        for label, max_rows in (("full", quality.DEFAULT_MAX_ROWS), ("sample", 200_000)):
            start = time.perf_counter()
            (result,) = quality.validate(project, ["bench_entity_features"], now=NOW, max_rows=max_rows)
            timings[label] = (time.perf_counter() - start, result)
            assert result.status == "passed", "\n".join(quality.report_lines([result]))
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        full_s, full = timings["full"]
        sample_s, sample = timings["sample"]
        print(f"{args.rows:,} rows x 7 columns, 10 expectations, DuckDB (this machine, shared cores)")
        print(f"{'check':<70}{'seconds':>9}")
        print(f"{'hand-written DuckDB aggregate query (baseline)':<70}{baseline_s:>9.2f}")
        label = f"featsync validate, full table ({full.rows_validated:,} rows via Arrow -> pandas)"
        print(f"{label:<70}{full_s:>9.2f}   {full_s / baseline_s:.1f} x baseline")
        label = f"featsync validate, sample ({sample.rows_validated:,} of {sample.rows_total:,} rows)"
        print(f"{label:<70}{sample_s:>9.2f}   {sample_s / baseline_s:.1f} x baseline")
        print(f"{'one-off import great_expectations':<70}{import_s:>9.2f}")
        print(f"peak RSS: {peak_gb:.2f} GB")
    finally:
        work.remove()


if __name__ == "__main__":
    main()
