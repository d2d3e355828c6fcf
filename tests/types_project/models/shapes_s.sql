select * from {{ source('raw', 'shape_rows_s') }}
