{{ config(enabled=target.type != 'spark') }}  -- Spark keeps microseconds: tests/test_time_and_types.py runs fv_us and fv_tz there
select * from {{ source('raw', 'rows_s') }}
