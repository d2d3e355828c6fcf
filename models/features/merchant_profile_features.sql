-- Slowly changing merchant attributes from the SCD2 snapshot. A version is valid on
-- the half-open range [event_timestamp, valid_to); valid_to is NULL for the current one.
select
    merchant_id,
    dbt_valid_from as event_timestamp,
    dbt_valid_to as valid_to,
    category,
    risk_tier
from {{ ref('merchants_snapshot') }}
