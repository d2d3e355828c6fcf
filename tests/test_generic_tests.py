"""featsync's generic dbt tests catch what they claim to, on rows made to be wrong."""

from __future__ import annotations

import duckdb

BAD_SCD2 = """(select * from (values
    ('a', timestamp '2024-01-01', timestamp '2024-01-05'),
    ('a', timestamp '2024-01-04', cast(null as timestamp)),
    ('b', timestamp '2024-01-02', timestamp '2024-01-01'),
    ('c', timestamp '2024-01-01', cast(null as timestamp)),
    ('c', timestamp '2024-01-03', cast(null as timestamp)),
    ('d', timestamp '2024-01-01', timestamp '2024-01-02'),
    ('d', timestamp '2024-01-02', cast(null as timestamp))
) as v(k, valid_from, valid_to))"""


def compiled(build, call: str) -> str:
    return (
        build.project.run_dbt(["compile", "--inline", call], target_path=build.scratch_path).result.results[0].node.compiled_code
    )


def test_scd2_valid_ranges_finds_each_dbt_snapshot_bug(duckdb_build):
    sql = compiled(
        duckdb_build,
        '{{ featsync.test_scd2_valid_ranges(model="'
        + BAD_SCD2
        + '", unique_key="k", valid_from="valid_from", valid_to="valid_to") }}',
    )
    problems = sorted((k, p) for k, _, _, p in duckdb.sql(sql).fetchall())
    assert problems == [
        ("a", "overlaps the next version"),
        ("b", "valid_to is not after valid_from"),
        ("c", "more than one current version"),
        ("c", "overlaps the next version"),
    ]  # 'd' is a correct history: [01-01, 01-02) then current


def test_unique_combination_finds_duplicates(duckdb_build):
    rows = "(select * from (values ('u1', 1), ('u1', 1), ('u1', 2), ('u2', 1)) as v(k, t))"
    sql = compiled(duckdb_build, '{{ featsync.test_unique_combination(model="' + rows + '", columns=["k", "t"]) }}')
    assert duckdb.sql(sql).fetchall() == [("u1", 1, 2)]
