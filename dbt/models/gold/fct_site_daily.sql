{#- Daily KPIs per site and metric (UTC days), combined from the device hours.
    `uptime_pct` is the share of the 24 hours in which each reporting device sent the
    metric, averaged over the devices. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    on_schema_change='append_new_columns',
    unique_key=['site', 'metric', 'day'],
    meta={'merge_window': {'column': 'day', 'grain': 'day', 'as_date': true}},
) }}

-- depends_on: {{ ref('readings') }}

with hourly as (
    select * from {{ ref('fct_device_hourly') }}
),

{% if is_incremental() %}
{%- set earliest = run_earliest('day') %}
touched as (
    select distinct site, metric, cast(ts as date) as day
    from {{ ref('readings') }}
    where run_id = {{ current_run_id() }}
),

scoped as (
    select h.*
    from hourly as h
    inner join touched as t
        on t.site = h.site and t.metric = h.metric and t.day = cast(h.hour as date)
    {%- if earliest is not none %}
    where h.hour >= {{ ts_literal(earliest) }}
    {%- else %}
    where false
    {%- endif %}
),
{% else %}
scoped as (
    select * from hourly
),
{% endif %}

final as (
    select
        site,
        tenant,
        metric,
        cast(hour as date) as day,
        sum(readings) as readings,
        count(distinct device_id) as devices_reporting,
        count(*) as device_hours,
        min(value_min) as value_min,
        max(value_max) as value_max,
        sum(value_sum) / sum(readings) as value_avg,
        {{ stddev_from_sums('sum(readings)', 'sum(value_sum)', 'sum(value_sum_sq)') }}
            as value_stddev,
        100e0 * count(*) / (24 * count(distinct device_id)) as uptime_pct,
        cast({{ current_run_id() }} as varchar) as run_id
    from scoped
    group by site, tenant, metric, cast(hour as date)
)

select * from final
