{#- Per device, metric and hour, the baseline that hour's readings are scored against
    in platinum.anomaly_scores. It is drawn only from the 24 hours before, so a
    published score stands while later readings of its own hour arrive:
    - the hour before, when it holds at least 12 readings (a device reporting every few
      minutes or faster is compared with its last hour);
    - otherwise the sparse hours (fewer than 12 readings) among the 24 before (a device
      reporting hourly or half-hourly is compared with its trailing day, and a burst of
      fast readings never floods it);
    - and when there is no sparse hour either (a fast device back after a silent hour),
      the latest hour among the 24 before.
    No reading in the 24 hours before: an empty baseline (a device's first hour).
    Medians are exact (middle values). An incremental run recomputes what its new rows
    can change: the hours with readings up to 24 hours after each new reading's hour,
    and a new reading's own hour when it has no baseline yet (a baseline never depends
    on its own hour). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'metric', 'hour'],
    meta={'merge_window': {'column': 'hour', 'grain': 'hour'}},
    on_schema_change='append_new_columns',
    properties={"partitioning": "ARRAY['month(hour)']"},
) }}

{%- set dense_hour = 12 %}

with
{% if is_incremental() %}
{%- set earliest, latest = run_hour_bounds() %}
new_hours as (
    select distinct device_id, metric, date_trunc('hour', ts) as hour
    from {{ ref('readings') }}
    where run_id = {{ current_run_id() }}
),

series_hours as (
    select h.device_id, h.metric, h.hour, h.readings
    from {{ ref('fct_device_hourly') }} as h
    inner join (select distinct device_id, metric from new_hours) as s
        on s.device_id = h.device_id and s.metric = h.metric
    {%- if earliest is not none %}
    where h.hour >= {{ ts_literal(earliest) }} - interval '24' hour
      and h.hour <= {{ ts_literal(latest) }} + interval '24' hour
    {%- else %}
    where false
    {%- endif %}
),

target_hours as (
    -- the hours whose baseline a new reading may change
    select c.device_id, c.metric, c.hour
    from series_hours as c
    inner join new_hours as n
        on n.device_id = c.device_id and n.metric = c.metric
        and c.hour > n.hour and c.hour <= n.hour + interval '24' hour
    union
    -- a new reading's own hour, the first time it has readings
    select n.device_id, n.metric, n.hour
    from new_hours as n
    left join {{ this }} as b
        on b.device_id = n.device_id and b.metric = n.metric and b.hour = n.hour
        {%- if earliest is not none %}
        and b.hour >= {{ ts_literal(earliest) }}
        {%- endif %}
    where b.hour is null
),
{% else %}
series_hours as (
    select device_id, metric, hour, readings from {{ ref('fct_device_hourly') }}
),

target_hours as (
    select device_id, metric, hour from series_hours
),
{% endif %}

-- Every hour of the touched series, with its baseline rule when it is a target. Windows
-- over each series' hours, not a join of every hour with the 24 before it: a full
-- rebuild costs the same per hour as a small run.
hour_context as (
    select
        h.device_id,
        h.metric,
        h.hour,
        h.readings,
        t.hour is not null as is_target,
        lag(h.hour) over (partition by h.device_id, h.metric order by h.hour) as prior_hour,
        lag(h.readings) over (partition by h.device_id, h.metric order by h.hour)
            as prior_readings,
        sum(if(h.readings < {{ dense_hour }}, 1, 0)) over (
            partition by h.device_id, h.metric order by {{ hour_number('h.hour') }}
            range between 24 preceding and 1 preceding
        ) as sparse_hours
    from series_hours as h
    left join target_hours as t
        on t.device_id = h.device_id and t.metric = h.metric and t.hour = h.hour
),

rules as (
    select
        *,
        case
            when not is_target or prior_hour is null
                or prior_hour < hour - interval '24' hour then null
            when prior_hour = hour - interval '1' hour and prior_readings >= {{ dense_hour }}
                then 'prior'
            when sparse_hours > 0 then 'sparse'
            -- no sparse hour: the latest hour before, a dense one
            else 'prior'
        end as rule
    from hour_context
),

-- The hours a baseline draws on: the sparse hours up to 24 before a 'sparse' target,
-- and the hour before a 'prior' one.
source_hours as (
    select device_id, metric, hour
    from (
        select
            *,
            lead(rule) over (partition by device_id, metric order by hour) as next_rule,
            max(if(rule = 'sparse', 1)) over (
                partition by device_id, metric order by {{ hour_number('hour') }}
                range between 1 following and 24 following
            ) as sparse_target_after
        from rules
    )
    where next_rule = 'prior' or readings < {{ dense_hour }} and sparse_target_after = 1
),

source_values as (
    select
        r.device_id,
        r.metric,
        s.hour,
        array_sort(array_agg(r.value)) as hour_values
    from {{ ref('readings') }} as r
    inner join source_hours as s
        on s.device_id = r.device_id and s.metric = r.metric
        and s.hour = date_trunc('hour', r.ts)
        -- the same, as bounds on ts that Trino can prune files by
        and r.ts >= s.hour and r.ts < s.hour + interval '1' hour
    {%- if is_incremental() %}
    {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }} - interval '24' hour
      and r.ts < {{ ts_literal(latest) }} + interval '24' hour
    {%- else %}
    where false
    {%- endif %}
    {%- endif %}
    group by r.device_id, r.metric, s.hour
),

-- Sparse hours' values pooled over each target's 24 hours before (at most 11 each).
sparse_pools as (
    select
        h.device_id,
        h.metric,
        h.hour,
        h.rule,
        h.prior_hour,
        h.is_target,
        flatten(array_agg(
            if(
                h.readings < {{ dense_hour }},
                coalesce(v.hour_values, cast(array[] as array(double))),
                cast(array[] as array(double))
            )
        ) over (
            partition by h.device_id, h.metric order by {{ hour_number('h.hour') }}
            range between 24 preceding and 1 preceding
        )) as sparse_values
    from rules as h
    left join source_values as v
        on v.device_id = h.device_id and v.metric = h.metric and v.hour = h.hour
),

pooled as (
    select
        p.device_id,
        p.metric,
        p.hour,
        case p.rule
            when 'prior' then v.hour_values
            when 'sparse' then array_sort(p.sparse_values)
        end as sorted_values
    from sparse_pools as p
    left join source_values as v
        on p.rule = 'prior'
        and v.device_id = p.device_id and v.metric = p.metric and v.hour = p.prior_hour
    where p.is_target
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
        device_id,
        metric,
        hour,
        coalesce(baseline_readings, 0) as baseline_readings,
        baseline_median,
        {{ middle_value('deviations', 'baseline_readings') }} as baseline_mad,
        baseline_mean_abs_deviation,
        cast({{ current_run_id() }} as varchar) as run_id
    from spreads
)

select * from final
