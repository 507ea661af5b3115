{#- Robust z-score of every reading against a baseline of its own device and metric:
    - a device reporting at least 12 times in the reading's hour is compared with the
      readings of that hour;
    - a slower one is compared with a trailing day: the readings of its hour and the 23
      before it, counting only hours with fewer than 12 readings (so a device reporting
      hourly or half-hourly is scored, and a burst of fast readings never floods it).
        z = 0.6745 * (value - median) / greatest(MAD, floor)
    (Iglewicz and Hoaglin's modified z-score; MAD is the median absolute deviation,
    floor the metric's noise floor from the seed metric_noise_floors, 0 for a metric
    not listed there). When both are 0 the mean absolute deviation is used instead,
    z = (value - median) / (1.2533 * meanAD), and z = 0 when that is 0 too. A reading
    whose baseline holds fewer than 3 readings is not scored. is_anomaly: |z| > 3.5,
    and only on a baseline of at least 8 readings; below that it is null, with
    unflagged_reason 'small_baseline' (a few readings give a median and a MAD that
    ordinary noise departs from). Medians are exact (middle values). An incremental
    run rescores the touched series from the hour of their first new reading to 23
    hours after their last; of the 23 hours before, it reads only the sparse ones
    (gold.fct_device_hourly counts them), the only ones a later hour's baseline holds. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'seq'],
    meta={'merge_window': {'column': 'ts', 'grain': 'hour'}},
    on_schema_change='append_new_columns',
    properties={"partitioning": "ARRAY['day(ts)']", "sorted_by": "ARRAY['device_id', 'seq']"},
) }}

-- depends_on: {{ ref('fct_device_hourly') }}

{%- set dense_hour = 12 %}
{%- set min_flag_baseline = 8 %}

with
{% if is_incremental() %}
{%- set earliest, latest = run_hour_bounds() %}
touched_series as (
    {{ touched_series() }}
),

-- Before the first rescored hour only sparse hours count (a dense hour is its own
-- baseline and enters no other): a fast device's day is not read again every run.
sparse_hours_before as (
    select h.device_id, h.metric, h.hour
    from {{ ref('fct_device_hourly') }} as h
    inner join touched_series as t on t.device_id = h.device_id and t.metric = h.metric
    {%- if earliest is not none %}
    where h.readings < {{ dense_hour }}
      and h.hour >= {{ ts_literal(earliest) }} - interval '23' hour
      and h.hour < {{ ts_literal(earliest) }}
    {%- else %}
    where false
    {%- endif %}
),

scoped as (
    select r.*, date_trunc('hour', r.ts) as hour
    from {{ ref('readings') }} as r
    inner join touched_series as t on t.device_id = r.device_id and t.metric = r.metric
    {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }}
      and r.ts < {{ ts_literal(latest) }} + interval '24' hour
    {%- else %}
    where false
    {%- endif %}
    union all
    select r.*, date_trunc('hour', r.ts) as hour
    from {{ ref('readings') }} as r
    inner join sparse_hours_before as s
        on s.device_id = r.device_id and s.metric = r.metric
        and s.hour = date_trunc('hour', r.ts)
    {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }} - interval '23' hour
      and r.ts < {{ ts_literal(earliest) }}
    {%- else %}
    where false
    {%- endif %}
),
{% else %}
scoped as (
    select *, date_trunc('hour', ts) as hour from {{ ref('readings') }}
),
{% endif %}

-- Per hour the values are sorted once into an array: exact medians without a window
-- over every reading (which would hold the whole table in memory on a full refresh).
hours as (
    select
        device_id,
        metric,
        hour,
        count(*) as readings_in_hour,
        array_sort(array_agg(value)) as hour_values
    from scoped
    group by device_id, metric, hour
),

trailing_days as (
    select
        *,
        flatten(array_agg(
            if(readings_in_hour < {{ dense_hour }}, hour_values, cast(array[] as array(double)))
        ) over (
            partition by device_id, metric order by {{ hour_number('hour') }}
            range between 23 preceding and current row
        )) as sparse_day_values
    from hours
),

baseline_values as (
    select
        device_id,
        metric,
        hour,
        readings_in_hour,
        if(
            readings_in_hour >= {{ dense_hour }}, hour_values, array_sort(sparse_day_values)
        ) as sorted_values
    from trailing_days
),

medians as (
    select
        *,
        cardinality(sorted_values) as baseline_readings,
        {{ middle_value('sorted_values', 'cardinality(sorted_values)') }} as baseline_median
    from baseline_values
),

spreads as (
    select
        *,
        array_sort(transform(sorted_values, x -> abs(x - baseline_median))) as deviations,
        reduce(sorted_values, 0e0, (total, x) -> total + abs(x - baseline_median), total -> total)
            / baseline_readings as mean_abs_deviation
    from medians
),

baselines as (
    select
        s.*,
        {{ middle_value('s.deviations', 's.baseline_readings') }} as baseline_mad,
        coalesce(f.noise_floor, 0e0) as noise_floor
    from spreads as s
    left join {{ ref('metric_noise_floors') }} as f on f.metric = s.metric
),

scored as (
    select
        r.device_id,
        r.tenant,
        r.site,
        r.seq,
        r.metric,
        r.ts,
        r.hour,
        r.value,
        b.readings_in_hour,
        b.baseline_median,
        b.baseline_mad,
        case
            when b.baseline_readings < 3 then null
            when greatest(b.baseline_mad, b.noise_floor) > 0
                then 0.6745e0 * (r.value - b.baseline_median)
                    / greatest(b.baseline_mad, b.noise_floor)
            when b.mean_abs_deviation > 0
                then (r.value - b.baseline_median) / (1.2533e0 * b.mean_abs_deviation)
            else 0e0
        end as robust_z,
        b.baseline_readings
    from scoped as r
    inner join baselines as b
        on b.device_id = r.device_id and b.metric = r.metric and b.hour = r.hour
    {%- if is_incremental() and earliest is not none %}
    where r.hour >= {{ ts_literal(earliest) }}
    {%- endif %}
),

final as (
    select
        device_id,
        tenant,
        site,
        seq,
        metric,
        ts,
        hour,
        value,
        readings_in_hour,
        baseline_median,
        baseline_mad,
        robust_z,
        if(baseline_readings >= {{ min_flag_baseline }}, abs(robust_z) > 3.5e0) as is_anomaly,
        if(baseline_readings < {{ min_flag_baseline }}, 'small_baseline') as unflagged_reason,
        baseline_readings,
        cast({{ current_run_id() }} as varchar) as run_id
    from scored
)

select * from final
