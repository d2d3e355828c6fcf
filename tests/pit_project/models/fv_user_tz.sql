select * from {{ source('pit_raw', 'user_rows_tz') }}
