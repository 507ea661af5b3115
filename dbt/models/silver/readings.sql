{#- Valid, deduplicated readings: exactly one row per (device_id, seq). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    properties={"partitioning": "ARRAY['day(ts)']", "sorted_by": "ARRAY['device_id', 'seq']"},
) }}

with checked as (
    select * from {{ ref('readings_checked') }}
),

final as (
    select
        device_id, tenant, site, seq, ts, metric, value, unit, attrs,
        ingested_at, source, source_topic, source_partition, source_offset, batch_id,
        cast({{ current_run_id() }} as varchar) as run_id
    from checked
    where failed_rule is null
)

select * from final
