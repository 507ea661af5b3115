{#- Robust z-score of every reading against its device, metric and hour:
        z = 0.6745 * (value - median) / MAD
    (Iglewicz and Hoaglin's modified z-score; MAD is the median absolute deviation).
    When MAD is 0 the mean absolute deviation is used instead, z = (value - median) /
    (1.2533 * meanAD), and z = 0 when that is 0 too. Hours with fewer than 3 readings
    are not scored. is_anomaly: |z| > 3.5. Medians are exact (middle values). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'seq'],
    properties={"partitioning": "ARRAY['day(ts)']"},
) }}

with scoped as (
    {{ readings_of_touched_hours() }}
),

-- Per hour the values are sorted once into an array: exact medians without a window
-- over every reading (which would hold the whole table in memory on a full refresh).
hours as (
    select
        device_id,
        metric,
        hour,
        count(*) as readings_in_hour,
        array_sort(array_agg(value)) as sorted_values
    from scoped
    group by device_id, metric, hour
),

medians as (
    select
        *,
        {{ middle_value('sorted_values', 'readings_in_hour') }} as baseline_median
    from hours
),

spreads as (
    select
        *,
        array_sort(transform(sorted_values, x -> abs(x - baseline_median))) as deviations,
        reduce(sorted_values, 0e0, (total, x) -> total + abs(x - baseline_median), total -> total)
            / readings_in_hour as mean_abs_deviation
    from medians
),

baselines as (
    select
        *,
        {{ middle_value('deviations', 'readings_in_hour') }} as baseline_mad
    from spreads
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
            when b.readings_in_hour < 3 then null
            when b.baseline_mad > 0 then 0.6745e0 * (r.value - b.baseline_median) / b.baseline_mad
            when b.mean_abs_deviation > 0
                then (r.value - b.baseline_median) / (1.2533e0 * b.mean_abs_deviation)
            else 0e0
        end as robust_z
    from scoped as r
    inner join baselines as b
        on b.device_id = r.device_id and b.metric = r.metric and b.hour = r.hour
),

final as (
    select
        *,
        coalesce(abs(robust_z) > 3.5e0, false) as is_anomaly
    from scored
)

select * from final
