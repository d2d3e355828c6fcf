select * from {{ source('raw', 'rows_s') }}
