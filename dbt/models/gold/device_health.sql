{#- Health of every registered device, from the hours in which it sent anything.
    uptime_pct: active hours / hours from its first to its last active hour.
    A gap is a run of silent hours between two active ones. -#}
{{ config(materialized='table') }}

with devices as (
    select * from {{ ref('dim_device') }}
),

active_hours as (
    select
        device_id,
        hour,
        sum(readings) as readings,
        min(first_ts) as first_ts,
        max(last_ts) as last_ts
    from {{ ref('fct_device_hourly') }}
    group by device_id, hour
),

steps as (
    select
        *,
        date_diff('hour', lag(hour) over (partition by device_id order by hour), hour) - 1
            as silent_hours_before
    from active_hours
),

per_device as (
    select
        device_id,
        min(first_ts) as first_seen,
        max(last_ts) as last_seen,
        sum(readings) as readings,
        count(*) as active_hours,
        date_diff('hour', min(hour), max(hour)) + 1 as span_hours,
        count_if(silent_hours_before > 0) as gaps,
        coalesce(max(silent_hours_before), 0) as longest_gap_hours
    from steps
    group by device_id
),

final as (
    select
        d.device_id,
        d.tenant,
        d.site,
        d.is_active,
        p.first_seen,
        p.last_seen,
        coalesce(p.readings, 0) as readings,
        coalesce(p.active_hours, 0) as active_hours,
        p.span_hours,
        100e0 * p.active_hours / p.span_hours as uptime_pct,
        coalesce(p.gaps, 0) as gaps,
        coalesce(greatest(p.longest_gap_hours, 0), 0) as longest_gap_hours
    from devices as d
    left join per_device as p on p.device_id = d.device_id
)

select * from final
