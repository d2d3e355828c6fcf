select * from {{ source('pit_raw', 'profile_rows_tz') }}
