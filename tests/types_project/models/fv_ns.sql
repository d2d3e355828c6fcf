{{ config(enabled=target.type == 'duckdb') }}  -- PostgreSQL has no nanoseconds
select * from {{ source('raw', 'rows_ns') }}
