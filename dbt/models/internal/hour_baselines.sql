{#- Per device, metric and hour, the baseline that hour's readings are scored against
    in platinum.anomaly_scores. It is drawn only from earlier hours, so a published score
    stands while later readings of its own hour arrive:
    - the hour before, when that hour holds at least 12 readings (a device reporting
      every few minutes or faster is compared with its last hour);
    - otherwise the sparse hours (fewer than 12 readings) among the 24 before (a device
      reporting hourly or half-hourly is compared with its trailing day, and a burst of
      fast readings never floods it).
    Medians are exact (middle values). An incremental run recomputes what its new rows
    can change: per touched series, every hour with readings after the first hour of its
    new rows and up to 24 hours after the last, and that first hour if it has no baseline
    yet (a baseline never depends on its own hour). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'metric', 'hour'],
    meta={'merge_window': {'column': 'hour', 'grain': 'hour'}},
    on_schema_change='append_new_columns',
    properties={"partitioning": "ARRAY['month(hour)']"},
) }}

-- depends_on: {{ ref('run_series') }}

{%- set dense_hour = 12 %}

with
{% if is_incremental() %}
{%- set earliest, latest = run_hour_bounds() %}
run_spans as (
    select device_id, metric, min(first_hour) as first_hour, max(last_hour) as last_hour
    from {{ ref('run_series') }}
    where run_id = {{ current_run_id() }}
    group by device_id, metric
),

series_hours as (
    select h.device_id, h.metric, h.hour, h.readings, s.first_hour, s.last_hour
    from {{ ref('fct_device_hourly') }} as h
    inner join run_spans as s on s.device_id = h.device_id and s.metric = h.metric
    {%- if earliest is not none %}
    where h.hour >= {{ ts_literal(earliest) }} - interval '24' hour
      and h.hour <= {{ ts_literal(latest) }} + interval '24' hour
    {%- else %}
    where false
    {%- endif %}
),

target_hours as (
    select c.device_id, c.metric, c.hour
    from series_hours as c
    left join {{ this }} as b
        on b.device_id = c.device_id and b.metric = c.metric and b.hour = c.hour
        {%- if earliest is not none %}
        and b.hour >= {{ ts_literal(earliest) }}
        {%- endif %}
    where c.hour > c.first_hour and c.hour <= c.last_hour + interval '24' hour
       or c.hour = c.first_hour and b.hour is null
),
{% else %}
series_hours as (
    select device_id, metric, hour, readings from {{ ref('fct_device_hourly') }}
),

target_hours as (
    select device_id, metric, hour from series_hours
),
{% endif %}

-- The earlier hours each target hour's baseline is drawn from.
source_hours as (
    select t.device_id, t.metric, t.hour, h.hour as source_hour
    from target_hours as t
    left join series_hours as previous
        on previous.device_id = t.device_id and previous.metric = t.metric
        and previous.hour = t.hour - interval '1' hour
    inner join series_hours as h
        on h.device_id = t.device_id and h.metric = t.metric
        and h.hour >= t.hour - interval '24' hour and h.hour < t.hour
    where if(
        coalesce(previous.readings, 0) >= {{ dense_hour }},
        h.hour = t.hour - interval '1' hour,
        h.readings < {{ dense_hour }}
    )
),

source_values as (
    select r.device_id, r.metric, date_trunc('hour', r.ts) as source_hour,
        array_agg(r.value) as hour_values
    from {{ ref('readings') }} as r
    inner join (select distinct device_id, metric, source_hour from source_hours) as s
        on s.device_id = r.device_id and s.metric = r.metric
        and s.source_hour = date_trunc('hour', r.ts)
    {%- if is_incremental() %}
    {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }} - interval '24' hour
      and r.ts < {{ ts_literal(latest) }} + interval '24' hour
    {%- else %}
    where false
    {%- endif %}
    {%- endif %}
    group by r.device_id, r.metric, date_trunc('hour', r.ts)
),

pooled as (
    select
        s.device_id,
        s.metric,
        s.hour,
        array_sort(flatten(array_agg(v.hour_values))) as sorted_values
    from source_hours as s
    inner join source_values as v
        on v.device_id = s.device_id and v.metric = s.metric and v.source_hour = s.source_hour
    group by s.device_id, s.metric, s.hour
),

medians as (
    select
        *,
        cardinality(sorted_values) as baseline_readings,
        {{ middle_value('sorted_values', 'cardinality(sorted_values)') }} as baseline_median
    from pooled
),

spreads as (
    select
        *,
        array_sort(transform(sorted_values, x -> abs(x - baseline_median))) as deviations,
        reduce(sorted_values, 0e0, (total, x) -> total + abs(x - baseline_median), total -> total)
            / baseline_readings as baseline_mean_abs_deviation
    from medians
),

final as (
    select
        t.device_id,
        t.metric,
        t.hour,
        coalesce(s.baseline_readings, 0) as baseline_readings,
        s.baseline_median,
        {{ middle_value('s.deviations', 's.baseline_readings') }} as baseline_mad,
        s.baseline_mean_abs_deviation,
        cast({{ current_run_id() }} as varchar) as run_id
    from target_hours as t
    left join spreads as s on s.device_id = t.device_id and s.metric = t.metric and s.hour = t.hour
)

select * from final
