select * from {{ source('bench_raw', 'merchant_rows') }}
