{{ config(enabled=target.type == 'duckdb') }}  -- PostgreSQL and Spark have no nanoseconds
select * from {{ source('raw', 'rows_ns') }}
