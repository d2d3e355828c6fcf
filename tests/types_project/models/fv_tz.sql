select * from {{ source('raw', 'rows_tz') }}
