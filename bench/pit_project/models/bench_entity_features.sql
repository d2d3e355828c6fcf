select * from {{ source('bench_raw', 'entity_rows') }}
