{#- Per device, metric and hour. Sums and sums of squares are kept so that wider
    windows (site days, 24 h features) combine hours exactly. An incremental run
    recomputes only the (device, metric, hour) groups its new silver rows fall in, so a
    late reading costs one hour, not a rebuild. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'metric', 'hour'],
    properties={"partitioning": "ARRAY['month(hour)']"},
) }}

with readings as (
    select * from {{ ref('readings') }}
),

{% if is_incremental() %}
{%- set earliest = scalar(
    "select min(date_trunc('hour', ts)) from " ~ ref('readings')
    ~ " where run_id = " ~ current_run_id()
) %}
touched as (
    select distinct device_id, metric, date_trunc('hour', ts) as hour
    from readings
    where run_id = {{ current_run_id() }}
),

scoped as (
    select r.*
    from readings as r
    inner join touched as t
        on t.device_id = r.device_id
        and t.metric = r.metric
        and t.hour = date_trunc('hour', r.ts)
    {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }}
    {%- else %}
    where false
    {%- endif %}
),
{% else %}
scoped as (
    select * from readings
),
{% endif %}

final as (
    select
        device_id,
        -- A device's tenant never changes; its site may (the hour keeps the latest).
        max(tenant) as tenant,
        max_by(site, ts) as site,
        metric,
        date_trunc('hour', ts) as hour,
        count(*) as readings,
        min(value) as value_min,
        max(value) as value_max,
        avg(value) as value_avg,
        stddev_samp(value) as value_stddev,
        sum(value) as value_sum,
        sum(value * value) as value_sum_sq,
        min(ts) as first_ts,
        max(ts) as last_ts
    from scoped
    group by device_id, metric, date_trunc('hour', ts)
)

select * from final
