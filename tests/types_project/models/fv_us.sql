select * from {{ source('raw', 'rows_us') }}
