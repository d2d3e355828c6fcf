select * from {{ source('pit_raw', 'pair_rows_tz') }}
