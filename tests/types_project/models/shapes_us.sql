{{ config(enabled=target.type != 'spark') }}  -- tests/test_data_shapes.py: DuckDB and PostgreSQL
select * from {{ source('raw', 'shape_rows_us') }}
