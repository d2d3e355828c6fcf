select * from {{ source('raw', 'rows_ms') }}
