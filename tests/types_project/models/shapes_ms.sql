select * from {{ source('raw', 'shape_rows_ms') }}
