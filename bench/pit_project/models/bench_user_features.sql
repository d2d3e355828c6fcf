select * from {{ source('bench_raw', 'user_rows') }}
