{#- Robust z-score of every reading against the baseline of its device, metric and
    hour in internal.hour_baselines, drawn only from the 24 hours before: the hour
    before when it holds at least 12 readings, otherwise the sparse hours (fewer than
    12 readings) among them, otherwise the latest of them (see that model). A score is
    never recomputed because later readings of its own hour arrive, so each run writes
    its new readings and, only when a reading lands in an earlier hour, the readings of
    the later hours whose baselines it changes.
        z = 0.6745 * (value - median) / greatest(MAD, floor)
    (Iglewicz and Hoaglin's modified z-score; MAD is the median absolute deviation,
    floor the metric's noise floor from the seed metric_noise_floors, 0 for a metric
    not listed there). When both are 0 the mean absolute deviation is used instead,
    z = (value - median) / (1.2533 * meanAD), and z = 0 when that is 0 too. A reading
    whose baseline holds fewer than 3 readings is not scored. is_anomaly: |z| > 3.5,
    and only on a baseline of at least 8 readings; below that it is null, with
    unflagged_reason 'small_baseline' (a few readings give a median and a MAD that
    ordinary noise departs from). A device's first hour has an empty baseline. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'seq'],
    meta={'merge_window': {'column': 'ts', 'grain': 'hour', 'first_is_new': true}},
    on_schema_change='sync_all_columns',
    properties={"partitioning": "ARRAY['day(ts)']", "sorted_by": "ARRAY['device_id', 'seq']"},
) }}

{%- set min_flag_baseline = 8 %}

with
{% if is_incremental() %}
{%- set earliest, latest = run_hour_bounds() %}
-- The run's new readings, and the older readings of every hour whose baseline the run
-- recomputed; the older readings of a new reading's own hour keep their scores. Two
-- scans, so that each prunes files by its own bounds (a run's own files by run_id).
rebaselined as (
    select device_id, metric, hour
    from {{ ref('hour_baselines') }}
    where run_id = {{ current_run_id() }}
),

scoped as (
    select r.*, date_trunc('hour', r.ts) as hour
    from {{ ref('readings') }} as r
    {%- if earliest is not none %}
    where r.run_id = {{ current_run_id() }}
      and r.ts >= {{ ts_literal(earliest) }}
      and r.ts < {{ ts_literal(latest) }} + interval '1' hour
    union all
    -- A recomputed hour that held no reading before the run holds only new ones, so
    -- these are all after the run's first hour.
    select r.*, date_trunc('hour', r.ts) as hour
    from {{ ref('readings') }} as r
    inner join rebaselined as b
        on b.device_id = r.device_id and b.metric = r.metric
        and b.hour = date_trunc('hour', r.ts)
        and r.ts >= b.hour and r.ts < b.hour + interval '1' hour
    where r.ts >= {{ ts_literal(earliest) }} + interval '1' hour
      and r.ts < {{ ts_literal(latest) }} + interval '25' hour
      and (r.run_id is null or r.run_id <> {{ current_run_id() }})
    {%- else %}
    where false
    {%- endif %}
),
{% else %}
scoped as (
    select *, date_trunc('hour', ts) as hour from {{ ref('readings') }}
),
{% endif %}

baselines as (
    select b.*, coalesce(f.noise_floor, 0e0) as noise_floor
    from {{ ref('hour_baselines') }} as b
    left join {{ ref('metric_noise_floors') }} as f on f.metric = b.metric
    {%- if is_incremental() %}
    {%- if earliest is not none %}
    where b.hour >= {{ ts_literal(earliest) }}
      and b.hour <= {{ ts_literal(latest) }} + interval '24' hour
    {%- else %}
    where false
    {%- endif %}
    {%- endif %}
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
        b.baseline_median,
        b.baseline_mad,
        case
            when coalesce(b.baseline_readings, 0) < 3 then null
            when greatest(b.baseline_mad, b.noise_floor) > 0
                then 0.6745e0 * (r.value - b.baseline_median)
                    / greatest(b.baseline_mad, b.noise_floor)
            when b.baseline_mean_abs_deviation > 0
                then (r.value - b.baseline_median) / (1.2533e0 * b.baseline_mean_abs_deviation)
            else 0e0
        end as robust_z,
        coalesce(b.baseline_readings, 0) as baseline_readings
    from scoped as r
    left join baselines as b
        on b.device_id = r.device_id and b.metric = r.metric and b.hour = r.hour
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
