{#- Per device, metric and hour. Sums and sums of squares are kept so that wider
    windows (site days, 24 h features) combine hours exactly. An incremental run
    recomputes only the (device, metric, hour) groups its new silver rows fall in, so a
    late reading costs one hour, not a rebuild. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    on_schema_change='append_new_columns',
    unique_key=['device_id', 'metric', 'hour'],
    meta={'merge_window': {'column': 'hour', 'grain': 'hour'}},
    properties={"partitioning": "ARRAY['month(hour)']"},
) }}

with scoped as (
    {{ readings_of_touched_hours() }}
),

final as (
    select
        device_id,
        -- A device's tenant never changes; its site may (the hour keeps the latest).
        max(tenant) as tenant,
        max_by(site, ts) as site,
        metric,
        hour,
        count(*) as readings,
        min(value) as value_min,
        max(value) as value_max,
        avg(value) as value_avg,
        stddev_samp(value) as value_stddev,
        sum(value) as value_sum,
        sum(value * value) as value_sum_sq,
        min(ts) as first_ts,
        max(ts) as last_ts,
        cast({{ current_run_id() }} as varchar) as run_id
    from scoped
    group by device_id, metric, hour
)

select * from final
