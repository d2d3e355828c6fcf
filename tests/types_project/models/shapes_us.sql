select * from {{ source('raw', 'shape_rows_us') }}
